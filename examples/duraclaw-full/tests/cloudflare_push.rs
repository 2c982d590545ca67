//! The Web Push suite (`duraclaw_testkit::push_suite`, shared with
//! `push.rs`) on Cloudflare: the full example's Worker under `wrangler
//! dev`, its per-user `PushObject` sending with `fetch` to the HTTPS
//! push-service stand-in, whose test CA workerd trusts through
//! `NODE_EXTRA_CA_CERTS` (Miniflare hands it to workerd's outbound TLS as
//! trusted certificates).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duraclaw_testkit::host::{CloudflareHost, Options};
use duraclaw_testkit::push_service::PushService;
use duraclaw_testkit::push_suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_suite_on_cloudflare() {
    let push = PushService::start().await;
    let host = CloudflareHost::start_with(
        "cloudflare-push",
        Options {
            worktrees: push_suite::WORKTREES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            push_ca: Some(push.ca_file().to_owned()),
            ..Options::default()
        },
    )
    .await;
    push_suite::run(&host, &push, &push_suite::cases()).await;
}
