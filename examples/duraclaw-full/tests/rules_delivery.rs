//! Both hosts deliver a session's approval rules to the gateway: with the
//! `execute` that starts it, in a `rules` frame when the user changes one,
//! and again each time the link opens (a restarted gateway has none) —
//! before the session's `attach`, and only the rules that apply to that
//! session. A stand-in gateway (it speaks the link protocol, serves two
//! worktrees, confirms every command and records what it is sent) feeds the
//! local orchestrator, then the Cloudflare Worker under `wrangler dev`; it
//! drops every link on demand, as a restart does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duraclaw_core::protocol::{
    Command, FromGateway, Hello, Role, RuleEntry, ToGateway, decode_frame, encode_frame,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use duraclaw_testkit::local as support;
use duraclaw_testkit::wrangler as cf;

const SECRET: &str = "rules-delivery-gateway-secret-0123456789";
const WORKTREE: &str = "/srv/app";
const OTHER_WORKTREE: &str = "/srv/other";
const DEADLINE: Duration = Duration::from_secs(60);

/// What the stand-in was sent that concerns rules, in order: (link number,
/// what, session, rule texts).
type Seen = Arc<Mutex<Vec<(u64, &'static str, String, Vec<String>)>>>;

struct StandIn {
    port: u16,
    seen: Seen,
    /// Bumped to drop every open link.
    drop_links: watch::Sender<u64>,
}

fn texts(rules: &[RuleEntry]) -> Vec<String> {
    rules.iter().map(|r| r.rule.clone()).collect()
}

async fn stand_in() -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let (drop_links, dropped) = watch::channel(0u64);
    let record = seen.clone();
    tokio::spawn(async move {
        let mut links = 0u64;
        while let Ok((tcp, _)) = listener.accept().await {
            links += 1;
            let link = links;
            let seen = record.clone();
            let mut dropped = dropped.clone();
            dropped.mark_unchanged();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                loop {
                    let msg = tokio::select! {
                        _ = dropped.changed() => return,
                        msg = ws.next() => msg,
                    };
                    let Some(Ok(msg)) = msg else { return };
                    let Message::Text(text) = msg else { continue };
                    let Ok(frame) = decode_frame::<ToGateway>(text.as_str(), "link frame") else {
                        continue;
                    };
                    let mut out: Vec<String> = Vec::new();
                    match frame {
                        ToGateway::Hello(_) => out.push(
                            encode_frame(&FromGateway::Hello(Hello::new(Role::Gateway))).unwrap(),
                        ),
                        ToGateway::ListWorktrees { id } => out.push(
                            json!({"type": "worktrees", "id": id, "worktrees": [
                                {"path": WORKTREE, "repo": WORKTREE},
                                {"path": OTHER_WORKTREE, "repo": OTHER_WORKTREE}]})
                            .to_string(),
                        ),
                        ToGateway::Command(env) => {
                            if let Command::Execute(x) = &env.command {
                                let session = env.id.split('/').next().unwrap().to_owned();
                                seen.lock().unwrap().push((
                                    link,
                                    "execute",
                                    session,
                                    texts(x.rules.as_deref().unwrap_or_default()),
                                ));
                            }
                            out.push(
                                json!({"type": "command_result", "id": env.id, "ok": true})
                                    .to_string(),
                            );
                        }
                        ToGateway::Rules { session_id, rules } => {
                            seen.lock()
                                .unwrap()
                                .push((link, "rules", session_id, texts(&rules)));
                        }
                        ToGateway::Attach { session_id, .. } => {
                            seen.lock()
                                .unwrap()
                                .push((link, "attach", session_id, vec![]));
                        }
                        ToGateway::Ping { nonce } => {
                            out.push(encode_frame(&FromGateway::Pong { nonce }).unwrap());
                        }
                        _ => {}
                    }
                    for text in out {
                        if ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    StandIn {
        port,
        seen,
        drop_links,
    }
}

impl StandIn {
    /// Waits until what was seen satisfies `done` (bounded); returns it.
    async fn until(
        &self,
        what: &str,
        done: impl Fn(&[(u64, &'static str, String, Vec<String>)]) -> bool,
    ) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if done(&seen) {
                    return;
                }
                assert!(Instant::now() < deadline, "never saw {what}: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn post(c: &reqwest::Client, base: &str, cookie: &str, path: &str, body: Value) -> Value {
    let r = c
        .post(format!("{base}{path}"))
        .header("origin", base)
        .header("cookie", cookie)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "POST {path}");
    r.json().await.unwrap()
}

/// The checks, on a host at `base` where `cookie` is alice's login.
async fn check(base: &str, cookie: &str, gateway: &StandIn) {
    let http = support::client();
    post(
        &http,
        base,
        cookie,
        "/api/rules",
        json!({"scope": "user", "rule": "Read", "action": "allow"}),
    )
    .await;
    post(
        &http,
        base,
        cookie,
        "/api/rules",
        json!({"scope": "worktree", "worktree": OTHER_WORKTREE, "rule": "Bash", "action": "allow"}),
    )
    .await;
    // The execute carries the rules that apply: not the other worktree's.
    let id = support::create_session(&http, base, Some(cookie), WORKTREE, "go").await;
    let sid = id.clone();
    gateway
        .until("the execute with its rules", |seen| {
            seen.iter()
                .any(|(_, what, s, r)| *what == "execute" && *s == sid && *r == ["Read"])
        })
        .await;

    // A new rule reaches the running session.
    post(
        &http,
        base,
        cookie,
        "/api/rules",
        json!({"scope": "session", "session_id": id, "rule": "Bash(rm *)", "action": "deny"}),
    )
    .await;
    let sid = id.clone();
    gateway
        .until("the changed rules", |seen| {
            seen.iter().any(|(_, what, s, r)| {
                *what == "rules" && *s == sid && *r == ["Read", "Bash(rm *)"]
            })
        })
        .await;

    // Every link drops (the gateway restarted): the next link gets the
    // session's rules again, before its attach.
    let before = gateway
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(l, ..)| *l)
        .max()
        .unwrap();
    gateway.drop_links.send_modify(|n| *n += 1);
    let sid = id.clone();
    gateway
        .until("the rules again on a new link, before the attach", |seen| {
            let on_new = |what: &str| {
                seen.iter().position(|(l, w, s, r)| {
                    *l > before
                        && *w == what
                        && *s == sid
                        && (what != "rules" || *r == ["Read", "Bash(rm *)"])
                })
            };
            matches!((on_new("rules"), on_new("attach")), (Some(r), Some(a)) if r < a)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_host_delivers_rules_with_execute_on_change_and_on_each_link() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    support::add_user(&data, "alice").await;
    let gateway = stand_in().await;
    let mut c = support::duraclaw("warn");
    c.env("CC_GATEWAY_SECRET", SECRET)
        .args(["orchestrator", "--bind", "127.0.0.1:0", "--gateway-url"])
        .arg(format!("ws://127.0.0.1:{}", gateway.port))
        .arg("--data-dir")
        .arg(&data);
    let (_orchestrator, base) = support::spawn_reading(c, "duraclaw listening on ").await;
    let (http, cookie) = support::login(&base, "alice").await;
    support::wait_gateway(&base, &http, true).await;
    check(&base, &cookie, &gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudflare_host_delivers_rules_with_execute_on_change_and_on_each_link() {
    const COOKIE_SECRET: &str = "rules-delivery-cookie-secret-0123456789";
    const ADMIN_TOKEN: &str = "rules-delivery-admin-token-0123456789";
    let tools = cf::Tools::find();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rules-delivery");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    eprintln!("logs and state in {}", root.display());
    let dir = root.join("cf");
    cf::build_full_example(&tools, &dir);
    let gateway = stand_in().await;
    let port = duraclaw_testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port);
    let vars = [
        ("CC_GATEWAY_URL", gateway_url.as_str()),
        ("CC_GATEWAY_SECRET", SECRET),
        ("DURACLAW_COOKIE_SECRET", COOKIE_SECRET),
        ("DURACLAW_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut wrangler =
        cf::start_wrangler_logged(&tools, &dir, port, &vars, &root.join("wrangler.log"));
    let http = reqwest::Client::new();
    cf::wait_until_ready(&mut wrangler, &http, &format!("{base}/api/health"), |t| {
        t.contains("\"ok\":true")
    })
    .await;
    let cookie =
        cf::admin_user_login(&http, &base, &base, ADMIN_TOKEN, "alice", support::PASSWORD).await;
    check(&base, &cookie, &gateway).await;
}
