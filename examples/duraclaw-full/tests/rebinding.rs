#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The local `duraclaw up`'s Origin rule: it accepts only the bound address
//! and `localhost`, whatever `Host` a DNS-rebinding page sends. Local only:
//! a Worker has no bound address, it checks its configured public origin
//! (`crates/duraclaw-cf/tests/d1_auth.rs`). What a login that ends does to
//! its sockets, and the UI's security headers, are cases of the API suite
//! (`api.rs`, `cloudflare_api.rs`).

use std::path::Path;

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use duraclaw_testkit::local as support;

use support::{PASSWORD, add_user, create_session, login};

/// `duraclaw up --demo` with alice, and a session of hers: the child, the
/// base URL and the session id.
async fn up_with_session(dir: &Path) -> (tokio::process::Child, String, String) {
    let data = dir.join("data");
    let script = support::write_script(
        dir,
        json!([[{"step": "text", "text": "hello", "chunks": 1}]]),
    );
    add_user(&data, "alice").await;
    let (child, base, _) =
        support::up_demo(&data, &script, &["--gateway-bind", "127.0.0.1:0"]).await;
    let (c, _) = login(&base, "alice").await;
    support::wait_gateway(&base, &c, true).await;
    let wt = support::worktree(&base, &c).await;
    let id = create_session(&c, &base, None, &wt, "first").await;
    (child, base, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused_and_the_servers_own_origins_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, base, id) = up_with_session(dir.path()).await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let (_, cookie) = login(&base, "alice").await;
    let login_from = |host: String, origin: String| {
        let base = base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/api/login"))
                .header("host", host)
                .header("origin", origin)
                .json(&json!({"username": "alice", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let upgrade_from = |host: String, origin: String| {
        let url = format!("{}/api/sessions/{id}/ws", base.replace("http://", "ws://"));
        let cookie = cookie.clone();
        async move {
            let mut req = url.into_client_request().unwrap();
            req.headers_mut().insert("host", host.parse().unwrap());
            req.headers_mut().insert("origin", origin.parse().unwrap());
            req.headers_mut().insert("cookie", cookie.parse().unwrap());
            match tokio_tungstenite::connect_async(req).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("upgrade: {e}"),
            }
        }
    };
    // DNS rebinding: the page's name resolves to 127.0.0.1, and the
    // browser sends it as Host and Origin alike.
    let rebound = format!("rebind.example:{port}");
    let rebound_origin = format!("http://{rebound}");
    assert_eq!(
        login_from(rebound.clone(), rebound_origin.clone()).await,
        403
    );
    assert_eq!(upgrade_from(rebound, rebound_origin).await, 403);
    // The bound address and localhost, with the bound port.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let origin = format!("http://{host}");
        assert_eq!(
            login_from(host.clone(), origin.clone()).await,
            200,
            "{host}"
        );
        assert_eq!(upgrade_from(host.clone(), origin).await, 101, "{host}");
    }
    // Another port of localhost is another origin.
    let other = format!("localhost:{}", support::free_port());
    assert_eq!(
        login_from(other.clone(), format!("http://{other}")).await,
        403
    );
}
