//! The API contract of `tests/support/contract.rs` (run locally by
//! `abuse.rs`) on Cloudflare: the full example's worker under
//! `wrangler dev`, its Durable Object and D1, against the real gateway
//! (`duraclaw gateway`, scripted, asking for an approval). Malformed
//! requests get JSON errors and create nothing (the D1 index included), the
//! session socket refuses oversized and binary frames and a client ahead of
//! the log with an error frame and a close code, a retried answer gets its
//! first result, and racing starts leave only the sessions that started.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use duraclaw_testkit::contract;
use duraclaw_testkit::gateway as cf_gateway;
use duraclaw_testkit::wrangler as support;
use support::{
    Tools, admin_user_login, build_full_example, free_port, start_wrangler_logged, wait_until_ready,
};

const GATEWAY_SECRET: &str = "cf-api-gateway-secret-0123456789";
const COOKIE_SECRET: &str = "cf-api-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "cf-api-admin-token-0123456789abcdef";
const PASSWORD: &str = "correct horse battery staple 42";
const DEADLINE: Duration = Duration::from_secs(60);

fn init_repo(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    let repo = git2::Repository::init(path).unwrap();
    let mut index = repo.index().unwrap();
    std::fs::write(path.join("README.md"), "# app\n").unwrap();
    index.add_path(Path::new("README.md")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.com").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_contract_holds_on_cloudflare() {
    let tools = Tools::find();
    // Kept after the run (wrangler's and the gateway's logs for a failure),
    // replaced by the next one.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloudflare-api");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let root = root.canonicalize().unwrap();
    eprintln!("logs and state in {}", root.display());
    init_repo(&root.join("projects/app"));
    init_repo(&root.join("projects/race"));
    std::fs::write(
        root.join("script.json"),
        r#"{"turns":[[{"step":"text","text":"checking","chunks":2},
            {"step":"tool","name":"Bash","input":{"command":"make"},"result":"built"},
            {"step":"text","text":"done","chunks":1}]]}"#,
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
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    let mut wrangler = start_wrangler_logged(&tools, &dir, port, &vars, &root.join("wrangler.log"));
    wait_until_ready(&mut wrangler, &http, &format!("{base}/api/health"), |t| {
        t.contains("\"ok\":true")
    })
    .await;

    let cookie = admin_user_login(&http, &base, &base, ADMIN_TOKEN, "alice", PASSWORD).await;
    let host = contract::Host {
        base: base.clone(),
        cookie,
        worktree: root.join("projects/app").display().to_string(),
    };
    let (status, s) = host
        .create(json!({"worktree": host.worktree, "prompt": "build it"}))
        .await;
    assert_eq!(status, 201, "{s}\n{}", wrangler.log_tail());
    let id = s["session_id"].as_str().unwrap().to_owned();

    contract::retried_answer_gets_its_first_result(&host, &id).await;
    contract::websocket_refusals(&host, &id).await;
    contract::malformed_requests_get_json_errors(&host, &id).await;
    contract::busy_worktree_says_what_to_do(&host, &id).await;
    let race = root.join("projects/race").display().to_string();
    contract::racing_starts_leave_only_started_sessions(&host, &race).await;
    drop(wrangler);
}
