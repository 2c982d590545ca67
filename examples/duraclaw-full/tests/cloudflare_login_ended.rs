//! The Cloudflare host (the full example's worker under `wrangler dev`,
//! against the real gateway with the scripted executor) driven as a client:
//! a login that ends — by logout, by an admin password change or removal —
//! closes that login's open session sockets at once (4401 `login ended`)
//! and a command sent after it is refused and starts no turn (also when
//! no notice reached the session object); the UI's
//! pages and assets carry the same security headers as the local server's.
//! The checks are the ones the local host runs (`support/both_hosts.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use duraclaw_testkit::both_hosts;
use duraclaw_testkit::gateway as cf_gateway;
use duraclaw_testkit::wrangler as support;
use support::{
    Tools, admin_user_login, build_full_example, free_port, login, start_wrangler_logged,
    wait_until_ready,
};

const GATEWAY_SECRET: &str = "cf-login-ended-gateway-secret-0123";
const COOKIE_SECRET: &str = "cf-login-ended-cookie-secret-0123456789";
const ADMIN_TOKEN: &str = "cf-login-ended-admin-token-0123456789";
const PASSWORD: &str = "correct horse battery staple 42";
const NEW_PASSWORD: &str = "a brand new passphrase 42";
const DEADLINE: Duration = Duration::from_secs(60);

fn init_repo(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    let repo = git2::Repository::init(path).unwrap();
    let mut index = repo.index().unwrap();
    std::fs::write(path.join("README.md"), "# app\n").unwrap();
    index.add_path(Path::new("README.md")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@duraclaw.invalid").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();
}

async fn admin(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> u16 {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if !body.is_null() {
        req = req.json(&body);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_login_closes_its_sockets_and_the_ui_has_its_headers_on_cloudflare() {
    let tools = Tools::find();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloudflare-login-ended");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    eprintln!("logs and state in {}", root.display());
    init_repo(&root.join("projects/app"));
    std::fs::write(
        root.join("script.json"),
        r#"{"turns":[[{"step":"text","text":"hello","chunks":1}]]}"#,
    )
    .unwrap();
    let dir = root.join("cf");
    build_full_example(&tools, &dir);

    let gateway_port = free_port();
    let _gateway = cf_gateway::start(
        &root,
        gateway_port,
        GATEWAY_SECRET,
        &root.join("gateway.log"),
        DEADLINE,
    )
    .await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let vars = [
        ("CC_GATEWAY_URL", gateway_url.as_str()),
        ("CC_GATEWAY_SECRET", GATEWAY_SECRET),
        ("DURACLAW_COOKIE_SECRET", COOKIE_SECRET),
        ("DURACLAW_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut wrangler = start_wrangler_logged(&tools, &dir, port, &vars, &root.join("wrangler.log"));
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    wait_until_ready(&mut wrangler, &http, &format!("{base}/api/health"), |t| {
        t.contains("\"ok\":true")
    })
    .await;

    // E: the same security headers as the local server.
    both_hosts::assert_ui_headers(&http, &base).await;

    // A session of alice's.
    let laptop = admin_user_login(&http, &base, &base, ADMIN_TOKEN, "alice", PASSWORD).await;
    let phone = login(&http, &base, &base, "alice", PASSWORD).await;
    let app = root.join("projects/app").display().to_string();
    let created = http
        .post(format!("{base}/api/sessions"))
        .header("Cookie", &laptop)
        .header("Origin", &base)
        .json(&json!({"worktree": app, "prompt": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Logout ends that login's sockets, not the other login's.
    let (mut laptop_ws, _) = both_hosts::open(&base, &laptop, &id).await;
    let (mut laptop_ws2, _) = both_hosts::open(&base, &laptop, &id).await;
    let (mut phone_ws, _) = both_hosts::open(&base, &phone, &id).await;
    let out = http
        .post(format!("{base}/api/logout"))
        .header("Cookie", &laptop)
        .header("Origin", &base)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    both_hosts::assert_closes(&mut laptop_ws2).await;
    both_hosts::assert_login_ended(&mut laptop_ws, "after-logout", "sent after logout").await;

    // An admin password change ends every login of alice's.
    let (mut phone_ws2, _) = both_hosts::open(&base, &phone, &id).await;
    let changed = admin(
        &http,
        &base,
        reqwest::Method::PUT,
        "/api/admin/users/alice/password",
        json!({"password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(changed, 200);
    both_hosts::assert_closes(&mut phone_ws2).await;
    both_hosts::assert_login_ended(&mut phone_ws, "after-passwd", "sent after passwd").await;

    // So does removing her.
    let fresh = login(&http, &base, &base, "alice", NEW_PASSWORD).await;
    let (mut fresh_ws, _) = both_hosts::open(&base, &fresh, &id).await;
    let (mut fresh_ws2, _) = both_hosts::open(&base, &fresh, &id).await;
    let removed = admin(
        &http,
        &base,
        reqwest::Method::DELETE,
        "/api/admin/users/alice",
        Value::Null,
    )
    .await;
    assert_eq!(removed, 204);
    both_hosts::assert_closes(&mut fresh_ws2).await;
    both_hosts::assert_login_ended(&mut fresh_ws, "after-remove", "sent after remove").await;

    // Alice again (her sessions stay indexed): none of the refused
    // commands ran.
    let again = admin_user_login(&http, &base, &base, ADMIN_TOKEN, "alice", PASSWORD).await;
    for text in [
        "sent after logout",
        "sent after passwd",
        "sent after remove",
    ] {
        both_hosts::assert_never_ran(&base, &again, &id, text).await;
    }

    // A login that ends with no notice reaching the object (its D1 row
    // deleted behind the Worker's back, as a missed or late notice would
    // leave it): the object's check before the command refuses it.
    let (mut unnoticed, _) = both_hosts::open(&base, &again, &id).await;
    let deleted = std::process::Command::new(&tools.wrangler)
        .args(["d1", "execute", "duraclaw", "--local", "--persist-to"])
        .arg(dir.join("state"))
        .args([
            "--command",
            "DELETE FROM login_sessions WHERE user_name = 'alice'",
        ])
        .current_dir(&dir)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("WRANGLER_HIDE_BANNER", "true")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        deleted.status.success(),
        "wrangler d1 execute: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    both_hosts::assert_login_ended(&mut unnoticed, "after-row-gone", "sent after the row went")
        .await;
    let last = login(&http, &base, &base, "alice", PASSWORD).await;
    both_hosts::assert_never_ran(&base, &last, &id, "sent after the row went").await;
}
