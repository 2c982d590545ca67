//! Relay: one event from the gateway's executor to a browser, through the
//! real path with persist-before-forward, on loopback, in one process.
//!
//! Ours: an executor's `EventSink` (the gateway's outbox sink: the event is
//! appended to the gateway's SQLite outbox) → the gateway's attach
//! forwarder and link writer → WebSocket → the orchestrator's link read
//! loop (batching what has arrived, as `duraclaw-full`'s link does) →
//! `SessionActor::ingest_raw` (the orchestrator's SQLite log) → the log's live
//! subscription → the browser forwarder and its queue → WebSocket → the
//! browser. The gateway is the real `duraclaw_gateway` server (bearer,
//! hello, execute, attach); the orchestrator's link is re-assembled from
//! library parts because it lives in the `duraclaw-full` binary.
//!
//! Baseline: the same two WebSocket hops with no persistence: the event is
//! framed for the gateway link, sent, read by a relay task as the
//! orchestrator reads it (the event kept as text), framed for the browser,
//! sent, received.
//!
//! Latency is measured closed-loop (emit one event, wait until the browser
//! has it), interleaving blocks of ours and baseline. A burst of token
//! deltas (emitted back to back) measures throughput and the
//! orchestrator's transactions per 1,000 deltas. Prints a JSON summary.
//! `QUICK=1` (or `cargo test --benches`) runs a few hundred events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_benches::executor::{Grab, init_repo};
use duraclaw_benches::lanes::{LANE_IDLE, Lanes};
use duraclaw_benches::ws::{Counter, STALL, nanos_since, pair, spawn_writer};
use duraclaw_benches::{mix, now_ms, orchestrator_actor, quick, runtime};
use duraclaw_core::executor::DynEventSink;
use duraclaw_core::protocol::{
    Command, CommandEnvelope, Event, Execute, FromGateway, GatewayFrame, Hello, Role, ToGateway,
    browser_event_frame, decode_frame, decode_gateway_frame, encode_frame, gateway_event_frame,
};
use duraclaw_core::store::{DynSessionDirectory, SessionMeta};
use duraclaw_gateway::link::{Secret, serve, ws_config};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_host::link::{self, Input};
use duraclaw_store::{MemoryDirectory, SqliteDirectory};
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "bench-secret-0123456789abcdef";
const SESSION: &str = "relay-session";
/// As `duraclaw-full`: frames per ingest at most, the browser queue, the
/// link queue.
const MAX_BATCH: usize = 1024;
const BROWSER_QUEUE: usize = 256;
const LINK_QUEUE: usize = 4096;

/// How events enter a path, and where the browser counts them.
struct Path2 {
    emit: Emit,
    browser: Counter,
}

enum Emit {
    /// The gateway executor's sink.
    Sink(DynEventSink),
    /// The baseline's first hop: frame and queue for the link writer.
    Raw(mpsc::Sender<String>),
}

impl Path2 {
    async fn emit(&self, gseq: u64, event: Event) {
        match &self.emit {
            Emit::Sink(sink) => sink.emit(event).await.unwrap(),
            Emit::Raw(tx) => {
                let json = event.to_json().unwrap();
                let frame = gateway_event_frame(SESSION, gseq, &json).unwrap();
                tx.send(frame).await.unwrap();
            }
        }
    }
}

/// Where the latest event was last seen, in nanoseconds since [`epoch`]
/// (closed loop: one event in flight): the gateway's log published it, the
/// orchestrator's read loop read it, its ingest returned, the browser
/// forwarder got it from the log. With `HOPS=1` (an extra subscriber on
/// the gateway's log, a few atomic stores) the summary's `slowest_hops`
/// gives them for the slowest events.
static HOPS: [std::sync::atomic::AtomicU64; 4] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 4];
const HOP_GATEWAY: usize = 0;
const HOP_READ: usize = 1;
const HOP_INGESTED: usize = 2;
const HOP_FORWARDER: usize = 3;

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn hop(i: usize) {
    HOPS[i].store(nanos_since(epoch()), std::sync::atomic::Ordering::Relaxed);
}

/// How many bytes the two paths' `seq` numbers may differ by in total.
const SEQ_DIGIT_SLACK: usize = 8;

struct Ours {
    path: Path2,
    /// The SQLite directories (gateway, orchestrator), when on SQLite.
    sqlite: Option<(SqliteDirectory, SqliteDirectory)>,
    _gateway_task: tokio::task::JoinHandle<()>,
}

/// The real gateway, the orchestrator's link and actor, and a browser;
/// both stores SQLite files under `root`, or both in memory.
async fn ours(root: &Path, on_sqlite: bool) -> Ours {
    let probe = on_sqlite && std::env::var_os("HOPS").is_some_and(|v| v == "1");
    std::fs::create_dir_all(root).unwrap();
    init_repo(&root.join("projects/app"));
    let worktree = root.join("projects/app").display().to_string();
    let sqlite = if on_sqlite {
        Some((
            SqliteDirectory::open(root.join("gateway.db"))
                .await
                .unwrap(),
            SqliteDirectory::open(root.join("orchestrator.db"))
                .await
                .unwrap(),
        ))
    } else {
        None
    };
    let (gateway_dir, orch_dir): (DynSessionDirectory, DynSessionDirectory) = match &sqlite {
        Some((g, o)) => (Arc::new(g.clone()), Arc::new(o.clone())),
        None => (
            Arc::new(MemoryDirectory::new()),
            Arc::new(MemoryDirectory::new()),
        ),
    };
    let (sink_tx, mut sink_rx) = mpsc::unbounded_channel();
    let gateway = Gateway::new(GatewayOptions {
        directory: gateway_dir,
        executor: Arc::new(Grab(sink_tx)),
        worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())]).unwrap(),
        approval_timeout: None,
    })
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gateway_task = tokio::spawn(serve(
        listener,
        gateway.clone(),
        Secret::new(SECRET).unwrap(),
    ));

    // The orchestrator: its store and the session's actor.
    let store = orch_dir
        .create(SessionMeta::new(SESSION, "bench", now_ms()))
        .await
        .unwrap();
    let actor = orchestrator_actor(store).await.unwrap();

    // Its link: dial with the bearer, hello, execute, attach.
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true)
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let send = |f: &ToGateway| Message::text(encode_frame(f).unwrap());
    sink.send(send(&ToGateway::Hello(Hello::new(Role::Orchestrator))))
        .await
        .unwrap();
    sink.send(send(&ToGateway::Command(CommandEnvelope {
        id: "execute-1".into(),
        session_id: SESSION.into(),
        command: Command::Execute(Execute {
            worktree,
            prompt: "bench".into(),
            model: None,
            permission_mode: None,
            system_prompt: None,
            rules: None,
            new_worktree: None,
            fork: None,
            agent: None,
        }),
    })))
    .await
    .unwrap();
    loop {
        let Some(Ok(Message::Text(t))) = stream.next().await else {
            panic!("the gateway closed the link")
        };
        match decode_frame::<FromGateway>(t.as_str(), "frame").unwrap() {
            FromGateway::CommandResult(r) => {
                assert!(r.ok, "execute refused: {r:?}");
                break;
            }
            FromGateway::Hello(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    sink.send(send(&ToGateway::Attach {
        session_id: SESSION.into(),
        after_gseq: 0,
    }))
    .await
    .unwrap();
    let (link_tx, mut link_rx) = mpsc::channel::<String>(LINK_QUEUE);
    tokio::spawn(async move {
        while let Some(text) = link_rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    // The read loop, mirroring `duraclaw-full`'s: take what has arrived and
    // hand it to the session's ingest lane (the same `Lanes`), which ingests
    // it as one batch and acks while the loop reads on.
    let ingest_actor = actor.clone();
    tokio::spawn(async move {
        let mut lanes = Lanes::new(LANE_IDLE, move |session_id: String, batch| {
            let (actor, link_tx) = (ingest_actor.clone(), link_tx.clone());
            async move {
                let out = actor.ingest_raw(batch).await.unwrap();
                if probe {
                    hop(HOP_INGESTED);
                }
                assert!(out.gap_at.is_none());
                for frame in link::after_ingest(&session_id, &out) {
                    let _ = link_tx.try_send(encode_frame(&frame).unwrap());
                }
            }
        });
        loop {
            let Some(first) = stream.next().await else {
                return;
            };
            if probe {
                hop(HOP_READ);
            }
            let mut frames = vec![first];
            while frames.len() < MAX_BATCH {
                match stream.next().now_or_never() {
                    Some(Some(m)) => frames.push(m),
                    _ => break,
                }
            }
            let texts: Vec<_> = frames
                .into_iter()
                .filter_map(|m| match m {
                    Ok(Message::Text(t)) => Some(t),
                    _ => None,
                })
                .collect();
            let inputs =
                link::Link::<()>::new().route(link::decode(texts.iter().map(|t| t.as_str())));
            for input in inputs {
                if let Input::Events { session_id, events } = input {
                    lanes.dispatch(session_id, events).await;
                }
            }
        }
    });

    // The browser: subscribe, forward into the queue, the writer sends.
    let (server, client) = pair(false).await;
    let queue = spawn_writer(server, BROWSER_QUEUE);
    let mut sub = actor.log().subscribe(0);
    tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            let e = item.unwrap();
            if probe {
                hop(HOP_FORWARDER);
            }
            if queue
                .send(browser_event_frame(e.seq, &e.json))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let emit = sink_rx.recv().await.unwrap();
    if probe {
        let gw_log = gateway.session(SESSION).await.unwrap().log().clone();
        let head = gw_log.store().head().await.unwrap().last_seq;
        let mut gw_sub = gw_log.subscribe(head);
        tokio::spawn(async move {
            while let Some(Ok(_)) = gw_sub.next().await {
                hop(HOP_GATEWAY);
            }
        });
    }
    // The events the session logged before the first measured one (the
    // gateway's worktree notice) reach the browser too: read them here, or
    // each closed-loop wait below would end on the frame of the event
    // before its own, one event always in flight.
    let gateway_head = gateway
        .session(SESSION)
        .await
        .unwrap()
        .log()
        .store()
        .head()
        .await
        .unwrap()
        .last_seq;
    let deadline = Instant::now() + STALL;
    let opening = loop {
        let head = actor.log().store().head().await.unwrap();
        if head.highest_gseq >= gateway_head {
            break head.last_seq;
        }
        assert!(
            Instant::now() < deadline,
            "the orchestrator did not log the session's opening events"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let browser = Counter::spawn(client);
    let got = browser.expect(opening as usize).await.unwrap();
    assert_eq!(got.frames as u64, opening);
    Ours {
        path: Path2 {
            emit: Emit::Sink(emit),
            browser,
        },
        sqlite,
        _gateway_task: gateway_task,
    }
}

/// The same two hops, no persistence: frame, send, decode, re-frame, send.
async fn baseline() -> Path2 {
    let (gw_server, orch_client) = pair(true).await;
    let link = spawn_writer(gw_server, LINK_QUEUE);
    let (server, browser) = pair(false).await;
    let queue = spawn_writer(server, BROWSER_QUEUE);
    let (_orch_sink, mut orch_stream) = orch_client.split();
    tokio::spawn(async move {
        let _keep = _orch_sink;
        while let Some(Ok(msg)) = orch_stream.next().await {
            let Message::Text(t) = msg else { continue };
            // Read as the orchestrator reads it (the event kept as text).
            if let Ok(GatewayFrame::Event { gseq, event, .. }) = decode_gateway_frame(t.as_str())
                && queue
                    .send(browser_event_frame(gseq, event.json()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    });
    Path2 {
        emit: Emit::Raw(link),
        browser: Counter::spawn(browser),
    }
}

/// Event `k` of the relay mix: the ~200-byte mix, with one large tool
/// result (50–200 KB) in every 1,000.
fn relay_event(k: u64) -> (Event, bool) {
    if k % 1000 == 999 {
        return (mix::unasked(mix::LARGE_EVERY * (k / 1000 % 4) + 999), true);
    }
    let i = if mix::is_large(k) { k + 1 } else { k };
    (mix::unasked(i), false)
}

#[derive(Default)]
struct Samples {
    small: Vec<u64>,
    large: Vec<u64>,
    bytes: usize,
    /// Ours' small events: total and hop times since emit.
    hops: Vec<(u64, [u64; 4])>,
}

/// Emits events `from..to` one at a time, each timed until the browser has it.
async fn closed_loop(path: &Path2, from: u64, to: u64, out: &mut Samples) {
    for k in from..to {
        let (event, large) = relay_event(k);
        let done = path.browser.expect(1);
        let start = Instant::now();
        let start_epoch = nanos_since(epoch());
        path.emit(k + 1, event).await;
        let got = done.await.unwrap();
        let t = nanos_since(start);
        out.bytes += got.bytes;
        // The frame that ended the wait is this event's: a large event's
        // frame is large, a small one's small (a frame of another event
        // would time the wrong thing).
        assert_eq!(
            got.bytes > 10_000,
            large,
            "event {k}'s wait ended on a frame of {} bytes",
            got.bytes
        );
        if large {
            out.large.push(t);
        } else {
            out.small.push(t);
            if matches!(path.emit, Emit::Sink(_)) {
                let h = std::array::from_fn(|i| {
                    HOPS[i]
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .saturating_sub(start_epoch)
                });
                out.hops.push((t, h));
            }
        }
    }
}

/// Emits `n` deltas back to back; the time until the browser has them all.
async fn burst(path: &Path2, from: u64, n: u64) -> Duration {
    let done = path.browser.expect(n as usize);
    let start = Instant::now();
    for k in from..from + n {
        path.emit(k + 1, mix::delta(k)).await;
    }
    let got = done.await.unwrap();
    assert_eq!(got.frames, n as usize);
    start.elapsed()
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// The slowest 0.2% of ours' small events, each as the time from emit to
/// each hop and to the browser (µs), with the median event's for
/// comparison.
fn hops(h: &mut [(u64, [u64; 4])]) -> serde_json::Value {
    if h.is_empty() {
        return json!(null);
    }
    h.sort_unstable_by_key(|(t, _)| *t);
    let us = |(t, h): &(u64, [u64; 4])| {
        json!([
            h[HOP_GATEWAY] / 1000,
            h[HOP_READ] / 1000,
            h[HOP_INGESTED] / 1000,
            h[HOP_FORWARDER] / 1000,
            t / 1000
        ])
    };
    let n = h.len();
    json!({
        "columns": ["gateway_published", "orchestrator_read", "ingested", "forwarder", "browser"],
        "median": us(&h[n / 2]),
        "slowest": h[n - (n / 500).max(1)..].iter().map(us).collect::<Vec<_>>(),
    })
}

fn summary(s: &mut Samples) -> serde_json::Value {
    s.small.sort_unstable();
    s.large.sort_unstable();
    let mean = s.small.iter().sum::<u64>() as f64 / s.small.len().max(1) as f64 / 1000.0;
    json!({
        "events": s.small.len(),
        "p50_us": pct(&s.small, 0.50),
        "p99_us": pct(&s.small, 0.99),
        "p99_9_us": pct(&s.small, 0.999),
        "max_us": pct(&s.small, 1.0),
        "mean_us": mean,
        "large_events": s.large.len(),
        "large_p50_us": pct(&s.large, 0.50),
        "large_max_us": pct(&s.large, 1.0),
    })
}

fn main() {
    let quick = quick();
    let (blocks, per_block, warm, burst_n) = if quick {
        (2u64, 100u64, 20u64, 500u64)
    } else {
        (5, 2_000, 500, 10_000)
    };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let report = rt.block_on(async {
        let ours_mem = ours(&root.join("memory"), false).await;
        let ours = ours(&root.join("sqlite"), true).await;
        let base = baseline().await;
        let mut next_ours = 0;
        let mut next_mem = 0;
        let mut next_base = 0;
        // Warm the paths up (connections, caches, prepared statements).
        let mut scratch = Samples::default();
        closed_loop(&ours.path, 0, warm, &mut scratch).await;
        closed_loop(&ours_mem.path, 0, warm, &mut scratch).await;
        closed_loop(&base, 0, warm, &mut scratch).await;
        next_ours += warm;
        next_mem += warm;
        next_base += warm;

        let mut o = Samples::default();
        let mut m = Samples::default();
        let mut b = Samples::default();
        for _ in 0..blocks {
            closed_loop(&base, next_base, next_base + per_block, &mut b).await;
            next_base += per_block;
            closed_loop(&ours.path, next_ours, next_ours + per_block, &mut o).await;
            next_ours += per_block;
            closed_loop(&ours_mem.path, next_mem, next_mem + per_block, &mut m).await;
            next_mem += per_block;
        }
        // The same events, byte for byte but for their `seq` numbers: ours
        // are numbered after what the gateway logs first (the `worktree`
        // notice), so a few cross a power of ten at another point.
        assert!(
            o.bytes.abs_diff(b.bytes) <= SEQ_DIGIT_SLACK,
            "both paths deliver the same bytes: {} vs {}",
            o.bytes,
            b.bytes
        );
        assert!(
            m.bytes.abs_diff(b.bytes) <= SEQ_DIGIT_SLACK,
            "both paths deliver the same bytes: {} vs {}",
            m.bytes,
            b.bytes
        );

        let (gw_dir, orch_dir) = ours.sqlite.clone().unwrap();
        let orch_before = orch_dir.stats();
        let gw_before = gw_dir.stats();
        let base_burst = burst(&base, next_base, burst_n).await;
        let ours_burst = burst(&ours.path, next_ours, burst_n).await;
        let orch = orch_dir.stats();
        let gw = gw_dir.stats();
        let mem_burst = burst(&ours_mem.path, next_mem, burst_n).await;
        let per_1000 = |tx: u64, ev: u64| tx as f64 * 1000.0 / ev.max(1) as f64;
        let slowest = if std::env::var_os("HOPS").is_some_and(|v| v == "1") {
            hops(&mut o.hops)
        } else {
            json!(null)
        };
        let (so, sm, sb) = (summary(&mut o), summary(&mut m), summary(&mut b));
        let ratio = |k: &str| so[k].as_f64().unwrap() / sb[k].as_f64().unwrap().max(1e-9);
        json!({
            "bench": "relay",
            "quick": quick,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "ours": so,
            "ours_memory_stores": sm,
            "baseline": sb,
            "slowest_hops": slowest,
            "ratio": { "p50": ratio("p50_us"), "p99": ratio("p99_us"), "p99_9": ratio("p99_9_us") },
            "burst": {
                "deltas": burst_n,
                "ours_events_per_s": burst_n as f64 / ours_burst.as_secs_f64(),
                "baseline_events_per_s": burst_n as f64 / base_burst.as_secs_f64(),
                "ours_memory_stores_events_per_s": burst_n as f64 / mem_burst.as_secs_f64(),
                "orchestrator_transactions_per_1000": per_1000(
                    orch.transactions - orch_before.transactions,
                    orch.events_written - orch_before.events_written),
                "gateway_transactions_per_1000": per_1000(
                    gw.transactions - gw_before.transactions,
                    gw.events_written - gw_before.events_written),
            },
        })
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
