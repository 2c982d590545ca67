#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The local `duraclaw up` driven as a client: a login that ends — by
//! logout, by `duraclaw user passwd` or `duraclaw user remove` run in
//! another process — closes that login's open session sockets at once
//! (4401 `login ended`) and a command sent after it is refused and starts
//! no turn; the Origin rule accepts only the bound address and `localhost`,
//! whatever `Host` a DNS-rebinding page sends; the UI carries its security
//! headers. The checks shared with the Cloudflare host are in
//! `support/both_hosts.rs`.

use std::path::Path;
use std::process::Stdio;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use duraclaw_testkit::both_hosts;
use duraclaw_testkit::local as support;

use support::{DEADLINE, PASSWORD, add_user, client, create_session, duraclaw, login, login_with};

const NEW_PASSWORD: &str = "a brand new passphrase";

/// `duraclaw user ARGS --data-dir DATA` with `stdin`; panics unless it
/// succeeds.
async fn user(data: &Path, args: &[&str], stdin: &str) {
    let mut child = duraclaw("warn")
        .arg("user")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "user {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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
async fn an_ended_login_closes_its_open_sockets_and_refuses_their_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_up, base, id) = up_with_session(dir.path()).await;

    // Logout ends that login's sockets, not another login's of the same
    // user.
    let (_, laptop) = login(&base, "alice").await;
    let (_, phone) = login(&base, "alice").await;
    let (mut laptop_ws, _) = both_hosts::open(&base, &laptop, &id).await;
    let (mut laptop_ws2, _) = both_hosts::open(&base, &laptop, &id).await;
    let (mut phone_ws, _) = both_hosts::open(&base, &phone, &id).await;
    let out = client()
        .post(format!("{base}/api/logout"))
        .header("origin", &base)
        .header("cookie", &laptop)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    both_hosts::assert_closes(&mut laptop_ws2).await;
    both_hosts::assert_login_ended(&mut laptop_ws, "after-logout", "sent after logout").await;

    // `duraclaw user passwd`, another process on the same database.
    let (mut phone_ws2, _) = both_hosts::open(&base, &phone, &id).await;
    user(
        &data,
        &["passwd", "alice", "--password-stdin"],
        &format!("{NEW_PASSWORD}\n"),
    )
    .await;
    both_hosts::assert_closes(&mut phone_ws2).await;
    both_hosts::assert_login_ended(&mut phone_ws, "after-passwd", "sent after passwd").await;

    // `duraclaw user remove`.
    let c = client();
    let fresh = login_with(&c, &base, "alice", NEW_PASSWORD).await.unwrap();
    let (mut fresh_ws, _) = both_hosts::open(&base, &fresh, &id).await;
    let (mut fresh_ws2, _) = both_hosts::open(&base, &fresh, &id).await;
    user(&data, &["remove", "alice"], "").await;
    both_hosts::assert_closes(&mut fresh_ws2).await;
    both_hosts::assert_login_ended(&mut fresh_ws, "after-remove", "sent after remove").await;
    assert_eq!(
        c.get(format!("{base}/api/me"))
            .header("cookie", &fresh)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Alice again (her sessions stayed): none of the refused commands ran.
    user(
        &data,
        &["add", "alice", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    )
    .await;
    let (_, again) = login(&base, "alice").await;
    for text in [
        "sent after logout",
        "sent after passwd",
        "sent after remove",
    ] {
        both_hosts::assert_never_ran(&base, &again, &id, text).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_carry_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let script = support::write_script(dir.path(), json!([]));
    let (_up, base, _) = support::up_demo(&data, &script, &["--gateway-bind", "127.0.0.1:0"]).await;
    both_hosts::assert_ui_headers(&client(), &base).await;
}
