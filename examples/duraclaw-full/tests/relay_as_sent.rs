//! Both hosts store and relay a gateway event's text as the gateway sent it
//! — fields this build does not know, escapes, spacing, key order, event
//! types it has never heard of — and ack it: nothing is decoded and encoded
//! again on the way to a browser. A stand-in gateway (it speaks the link
//! protocol, serves one worktree, confirms every command and answers an
//! attach with its events) feeds the local orchestrator, then the
//! Cloudflare Worker under `wrangler dev`; the same check runs on each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duraclaw_core::protocol::{FromGateway, Hello, Role, ToGateway, decode_frame, encode_frame};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use duraclaw_testkit::both_hosts;
use duraclaw_testkit::local as support;
use duraclaw_testkit::wrangler as cf;

const SECRET: &str = "relay-as-sent-gateway-secret-0123456789";
const WORKTREE: &str = "/srv/app";
/// The session's events as the stand-in sends them; none is what encoding
/// its decoded form would give.
const EVENTS: [&str; 4] = [
    r#"{"type":"assistant","message_id":"m1","phase":"delta","text":"caf\u00e9 \"q\"","newer_field":{"b":1,"a":2}}"#,
    r#"{ "type": "tool_result", "tool_use_id": "t1", "content": {"z": 1.50, "a": [true, null]}, "is_error": false }"#,
    r#"{"type":"brand_new_kind","payload":{"z":1,"a":2}}"#,
    r#"{"type":"assistant","message_id":"m1","phase":"final","text":"caf\u00e9"}"#,
];

/// The stand-in gateway: its port, and the highest ack per session.
struct StandIn {
    port: u16,
    acks: Arc<Mutex<HashMap<String, u64>>>,
}

async fn stand_in() -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acks = Arc::new(Mutex::new(HashMap::new()));
    let seen = acks.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acks = seen.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
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
                            json!({"type": "worktrees", "id": id,
                                "worktrees": [{"path": WORKTREE, "repo": WORKTREE}]})
                            .to_string(),
                        ),
                        ToGateway::Command(env) => out.push(
                            json!({"type": "command_result", "id": env.id, "ok": true}).to_string(),
                        ),
                        ToGateway::Attach {
                            session_id,
                            after_gseq,
                        } => {
                            for (i, event) in EVENTS.iter().enumerate().skip(after_gseq as usize) {
                                out.push(format!(
                                    r#"{{"type":"event","session_id":"{session_id}","gseq":{},"event":{event}}}"#,
                                    i + 1
                                ));
                            }
                        }
                        ToGateway::Ack { session_id, gseq } => {
                            let mut acks = acks.lock().unwrap();
                            let a = acks.entry(session_id).or_insert(0);
                            *a = (*a).max(gseq);
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
    StandIn { port, acks }
}

/// Creates a session on `base` as the owner of `cookie`, then checks that a
/// browser gets every gateway event once, in order, byte for byte as the
/// gateway sent it, and that the gateway got the ack of the last.
async fn check(base: &str, cookie: &str, gateway: &StandIn) {
    let http = support::client();
    let id = support::create_session(&http, base, Some(cookie), WORKTREE, "go").await;
    let (mut ws, _) = both_hosts::open(base, cookie, &id).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut relayed: Vec<String> = Vec::new();
    while !relayed.iter().any(|e| e == EVENTS[3]) {
        let text = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("not every event reached the browser in time; got {relayed:#?}"),
            Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_owned(),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the socket ended: {other:?}"),
        };
        // `{"type":"event","seq":N,"event":<the event's text>}`
        let Some(rest) = text.strip_prefix(r#"{"type":"event","seq":"#) else {
            continue;
        };
        let event = rest
            .split_once(r#","event":"#)
            .and_then(|(_, e)| e.strip_suffix('}'))
            .unwrap_or_else(|| panic!("not an event frame: {text}"));
        relayed.push(event.to_owned());
    }
    let from_gateway: Vec<&String> = relayed
        .iter()
        .filter(|e| EVENTS.contains(&e.as_str()))
        .collect();
    assert_eq!(from_gateway, EVENTS, "relayed: {relayed:#?}");
    loop {
        if gateway.acks.lock().unwrap().get(&id) == Some(&(EVENTS.len() as u64)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never got the ack of gseq {}: {:?}",
            EVENTS.len(),
            gateway.acks.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_host_relays_events_as_the_gateway_sent_them() {
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
async fn the_cloudflare_host_relays_events_as_the_gateway_sent_them() {
    const COOKIE_SECRET: &str = "relay-as-sent-cookie-secret-0123456789";
    const ADMIN_TOKEN: &str = "relay-as-sent-admin-token-0123456789";
    let tools = cf::Tools::find();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("relay-as-sent");
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
