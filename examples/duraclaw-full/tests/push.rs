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

/// Without the stand-in's CA the orchestrator's TLS client refuses its
/// certificate: nothing reaches it, and the delivery records why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_service_whose_certificate_is_not_trusted_gets_nothing() {
    use duraclaw_testkit::api::PASSWORD;
    use duraclaw_testkit::host::{create_session, http, login};
    use serde_json::{Value, json};
    use std::time::{Duration, Instant};

    let push = PushService::start().await;
    let host = LocalHost::start().await;
    host.add_user("untrusting", PASSWORD).await;
    let cookie = login(&host, "untrusting", PASSWORD).await;
    let sub = push.subscriber();
    let r = http()
        .post(format!("{}/api/push/subscriptions", host.base()))
        .header("cookie", &cookie)
        .header("origin", host.origin())
        .json(&sub.body("phone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    create_session(&host, &cookie, "flow", "build it").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let list: Value = http()
            .get(format!("{}/api/push/deliveries", host.base()))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list[0]["attempts"].as_u64().unwrap_or(0) >= 1 {
            break list[0].clone();
        }
        assert!(Instant::now() < deadline, "no attempt recorded: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["status"], "retrying", "{record}");
    assert_eq!(record["http_status"], json!(null), "{record}");
    let why = record["error"].as_str().unwrap();
    assert!(
        why.contains("certificate") || why.contains("Issuer"),
        "{why}"
    );
    assert!(push.all_arrivals().is_empty(), "{:?}", push.all_arrivals());
}

/// `--no-push` turns it off: every push route answers 503 saying so, and
/// no key is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_push_answers_503_and_makes_no_key() {
    use duraclaw_testkit::api::PASSWORD;
    use duraclaw_testkit::host::{http, login};
    use serde_json::Value;

    let host = LocalHost::start_with(Options {
        orchestrator_args: vec!["--no-push".into()],
        ..Options::default()
    })
    .await;
    host.add_user("nopush", PASSWORD).await;
    let cookie = login(&host, "nopush", PASSWORD).await;
    for path in [
        "/api/push/key",
        "/api/push/subscriptions",
        "/api/push/settings",
    ] {
        let r = http()
            .get(format!("{}{path}", host.base()))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("turned off"),
            "{body}"
        );
    }
    // A notification's action too: nothing checks tokens without a key.
    let r = http()
        .post(format!("{}/api/push/act", host.base()))
        .header("cookie", &cookie)
        .header("origin", host.origin())
        .json(&serde_json::json!({"token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "/api/push/act");
    assert!(!host.root().join("data").join("vapid.key").exists());
}
