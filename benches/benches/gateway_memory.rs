//! The gateway's memory and start time with many sessions in its store.
//!
//! An in-process gateway (SQLite outbox, the scripted executor, its idle
//! bound at 50 ms) runs sessions one after another: each runs one turn
//! (three deltas and a result), is closed, and its events are
//! acknowledged, as an attached orchestrator does. The resident set size
//! (`/proc/self/statm`) is read once 10 sessions ran and ended, and again
//! once 10,000 did, each time after the gateway put the idle ones away;
//! the goal is a ratio ≤ 1.2. Then the gateway is dropped and a new one
//! started on the same database: the start time (goal ≤ 1 s) and the
//! sessions it loaded. For comparison, the same start with every session
//! marked as not put away (what a store of an earlier version looks like:
//! each one is loaded and checked at start).
//!
//! The started gateway then takes what a host sends when its link opens
//! and when a rule changes: over the real link, an `attach` of every
//! session after its last event and a `rules` frame for each. The sessions
//! in memory after that (goal: none loaded) and the RSS.
//!
//! Prints a JSON summary. `QUICK=1` (or `cargo test --benches`) runs 200
//! sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_benches::executor::init_repo;
use duraclaw_benches::{quick, rss, runtime};
use duraclaw_core::protocol::{Close, Command, CommandEnvelope, Event, Execute};
use duraclaw_core::store::SessionDirectory;
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;
use serde_json::json;

async fn gateway(root: &Path, idle: Duration) -> Gateway {
    let script = Script {
        turns: vec![vec![Step::Text {
            text: "Done, all of it.".into(),
            chunks: 3,
            delay_ms: 0,
        }]],
    };
    let gw = Gateway::new(GatewayOptions {
        // As the gateway opens its store.
        directory: Arc::new(
            SqliteDirectory::open_with(
                root.join("gateway.db"),
                duraclaw_gateway::cmd::store_options(),
            )
            .await
            .unwrap(),
        ),
        executor: Arc::new(ScriptedExecutor::new(script)),
        worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())]).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap();
    gw.set_evict_idle(idle);
    gw
}

/// Runs session `id` to its turn's end, closes it and acknowledges its
/// events.
async fn run_one(gw: &Gateway, worktree: &str, id: &str) {
    let env = |suffix: &str, command: Command| CommandEnvelope {
        id: format!("{id}/{suffix}"),
        session_id: id.to_owned(),
        command,
    };
    let started = gw
        .apply(env("x", Command::Execute(Execute::new(worktree, "go"))))
        .await;
    assert!(started.ok, "{started:?}");
    let session = gw.session(id).await.unwrap();
    let mut sub = session.log().subscribe(0);
    while let Some(e) = sub.next().await {
        if matches!(e.unwrap().event(), Ok(Event::Result(_))) {
            break;
        }
    }
    drop(sub);
    let closed = gw.apply(env("c", Command::Close(Close {}))).await;
    assert!(closed.ok, "{closed:?}");
    let head = session.log().store().head().await.unwrap().last_seq;
    drop(session);
    gw.acked(id, head).await;
}

const SECRET: &str = "bench-secret-0123456789abcdef";

/// What a host sends `gw` over a new link, as when the link opens and a
/// rule changes: an attach of each session after `heads` and its rules,
/// then a ping; returns once the pong is back (the link handles frames in
/// order).
async fn reconnect_and_push_rules(gw: &Gateway, heads: &[(String, u64)]) {
    use duraclaw_core::protocol::{
        FromGateway, Hello, Role, RuleAction, RuleEntry, RuleScope, ToGateway, decode_frame,
        encode_frame,
    };
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(duraclaw_gateway::link::serve(
        listener,
        gw.clone(),
        duraclaw_gateway::link::Secret::new(SECRET).unwrap(),
    ));
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let frame = |f: &ToGateway| Message::text(encode_frame(f).unwrap());
    ws.send(frame(&ToGateway::Hello(Hello::new(Role::Orchestrator))))
        .await
        .unwrap();
    let rules = vec![RuleEntry {
        id: Some("r1".into()),
        scope: RuleScope::User,
        rule: "Read".into(),
        action: RuleAction::Allow,
    }];
    for (id, head) in heads {
        ws.feed(frame(&ToGateway::Attach {
            session_id: id.clone(),
            after_gseq: *head,
        }))
        .await
        .unwrap();
        ws.feed(frame(&ToGateway::Rules {
            session_id: id.clone(),
            rules: rules.clone(),
        }))
        .await
        .unwrap();
    }
    ws.send(frame(&ToGateway::Ping { nonce: 1 })).await.unwrap();
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg.unwrap()
            && let Ok(FromGateway::Pong { nonce: 1 }) = decode_frame(t.as_str(), "bench frame")
        {
            break;
        }
    }
    task.abort();
}

/// Waits until the gateway holds no session in memory (bounded).
async fn until_all_put_away(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while gw.loaded_count().await > 0 {
        assert!(Instant::now() < deadline, "sessions were never put away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let quick = quick();
    let sessions: usize = if quick { 200 } else { 10_000 };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    init_repo(&root.join("projects/app"));
    let wt = root.join("projects/app").display().to_string();
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let report = rt.block_on(async {
        let gw = gateway(&root, Duration::from_millis(50)).await;
        let run = Instant::now();
        for i in 0..10 {
            run_one(&gw, &wt, &format!("s{i:05}")).await;
        }
        until_all_put_away(&gw).await;
        let after_10 = rss();
        // RSS as the sessions that ran and ended grow, each time after the
        // idle ones were put away.
        let mut curve = vec![json!({"sessions": 10, "rss_mib": mib(after_10)})];
        let marks = [100, 1_000, 2_500, 5_000, 7_500];
        for i in 10..sessions {
            run_one(&gw, &wt, &format!("s{i:05}")).await;
            if marks.contains(&(i + 1)) {
                until_all_put_away(&gw).await;
                curve.push(json!({"sessions": i + 1, "rss_mib": mib(rss())}));
            }
        }
        until_all_put_away(&gw).await;
        let run_s = run.elapsed().as_secs_f64();
        let after_all = rss();
        drop(gw);
        // What the host has of each session (read after the measurement:
        // 10,000 ids held during the run would count in it).
        let dir = SqliteDirectory::open(root.join("gateway.db"))
            .await
            .unwrap();
        let mut heads = Vec::with_capacity(sessions);
        for meta in dir.list_all().await.unwrap() {
            let store = dir.open(&meta.session_id).await.unwrap();
            heads.push((meta.session_id, store.head().await.unwrap().last_seq));
        }
        drop(dir);

        // A start with every session in the store put away.
        let t = Instant::now();
        let again = gateway(&root, Duration::from_secs(60)).await;
        let start_ms = t.elapsed().as_secs_f64() * 1000.0;
        let loaded_at_start = again.loaded_count().await;
        let rss_at_start = rss();
        // The host's link opens (every session attached) and a rule
        // change reaches every session.
        let t = Instant::now();
        reconnect_and_push_rules(&again, &heads).await;
        let reconnect_ms = t.elapsed().as_secs_f64() * 1000.0;
        let loaded_after_reconnect = again.loaded_count().await;
        let rss_after_reconnect = rss();
        drop(again);

        // The same store as an earlier version left it: nothing marked put
        // away, so each session is loaded and checked at start.
        let dir = SqliteDirectory::open(root.join("gateway.db"))
            .await
            .unwrap();
        for mut meta in dir.list_all().await.unwrap() {
            meta.parked = None;
            dir.open(&meta.session_id)
                .await
                .unwrap()
                .put_meta(&meta)
                .await
                .unwrap();
        }
        drop(dir);
        let t = Instant::now();
        let eager = gateway(&root, Duration::from_secs(60)).await;
        let eager_start_ms = t.elapsed().as_secs_f64() * 1000.0;
        let loaded_eagerly = eager.loaded_count().await;
        drop(eager);

        json!({
            "bench": "gateway_memory",
            "quick": quick,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "sessions": sessions,
            "run_s": run_s,
            "rss_after_10_mib": mib(after_10),
            "rss_after_all_mib": mib(after_all),
            "rss_ratio": after_all as f64 / after_10 as f64,
            "rss_curve": curve,
            "start_ms": start_ms,
            "loaded_at_start": loaded_at_start,
            "rss_at_start_mib": mib(rss_at_start),
            "reconnect_and_rules_ms": reconnect_ms,
            "loaded_after_reconnect_and_rules": loaded_after_reconnect,
            "rss_after_reconnect_and_rules_mib": mib(rss_after_reconnect),
            "start_without_parked_ms": eager_start_ms,
            "loaded_without_parked": loaded_eagerly,
        })
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
