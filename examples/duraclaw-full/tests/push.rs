//! The Web Push suite (`duraclaw_testkit::push_suite`) on the local host:
//! the orchestrator trusts the HTTPS push-service stand-in's test CA
//! (`--push-ca`), so its real TLS client path runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use duraclaw_testkit::host::{Host, LocalHost, Options};
use duraclaw_testkit::push_service::PushService;
use duraclaw_testkit::push_suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_suite_on_the_local_host() {
    let push = PushService::start().await;
    let host = LocalHost::start_with(Options {
        worktrees: push_suite::WORKTREES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        push_ca: Some(push.ca_file().to_owned()),
        ..Options::default()
    })
    .await;
    push_suite::run(&host, &push, &push_suite::cases()).await;

    // The VAPID key was made in the data directory, readable by its owner
    // only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let key = host.root().join("data").join("vapid.key");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{} is {mode:o}", key.display());
    }
}
