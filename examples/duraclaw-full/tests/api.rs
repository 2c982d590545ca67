//! The API suite (`duraclaw_testkit::api`, shared with `cloudflare_api.rs`)
//! on the local host: `duraclaw up --demo` with the scripted executor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duraclaw_testkit::api;
use duraclaw_testkit::host::LocalHost;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_suite_on_the_local_host() {
    let host = LocalHost::start().await;
    api::run(&host, &api::cases()).await;
}
