//! Scale: many sessions streaming at once through one gateway and one
//! orchestrator, on loopback, in one process.
//!
//! The path is the relay bench's, times `SESSIONS`: the real
//! `duraclaw_gateway` server (one SQLite outbox for every session), one
//! link, the orchestrator's link read loop (re-assembled from library
//! parts as `duraclaw-full`'s is: take what has arrived, one batch per
//! session, each handed to its session's ingest lane, an ack each), a `SessionActor`
//! per session over one SQLite directory, and one browser WebSocket per
//! session fed by the log's subscription. Persist before forward on both
//! tiers.
//!
//! - **burst**: every session's executor emits `EVENTS` events of the mix
//!   back to back, all sessions at once; the time until every browser has
//!   every event gives the aggregate events/s. Baseline: the same
//!   topology with both stores in memory (everything but persistence),
//!   measured in the same run.
//! - **steady**: every session emits one event every 10 ms (100 events/s
//!   per session, 10,000/s in all: a fast token stream), and each event's
//!   latency from `emit` to its browser is recorded: p50, p99, p99.9.
//! - **orchestrator alone** (`orchestrator_alone`): both phases again with
//!   the orchestrator alone on the two cores, as deployed (the gateway runs
//!   on its own machine): a stand-in gateway writes the link frames the
//!   gateway would send, made before the clock starts, to the same link;
//!   everything from the link's socket to the browsers is the same.
//!
//! Prints a JSON summary. `QUICK=1` (or `cargo test --benches`) runs 10
//! sessions and a few events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_benches::executor::{Grab, init_repo};
use duraclaw_benches::lanes::{LANE_IDLE, Lanes};
use duraclaw_benches::ws::{pair, spawn_writer};
use duraclaw_benches::{mix, now_ms, orchestrator_actor, quick, runtime};
use duraclaw_core::backend::actor::SessionActor;
use duraclaw_core::executor::DynEventSink;
use duraclaw_core::protocol::{
    Command, CommandEnvelope, Execute, FromGateway, Hello, Role, ToGateway, browser_event_frame,
    decode_frame, encode_frame, gateway_event_frame,
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
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "bench-secret-0123456789abcdef";
/// As `duraclaw-full`: frames per read batch at most, the browser queue,
/// the link queue.
const MAX_BATCH: usize = 1024;
const BROWSER_QUEUE: usize = 256;
const LINK_QUEUE: usize = 4096;

type Job = (usize, oneshot::Sender<Vec<Instant>>);

/// What marks a frame carrying a notice of the gateway's (the mix never has one).
const GATEWAY_NOTICE: &str = r#""type":"notice""#;

/// A browser: reads text frames and, per job, answers with the arrival
/// time of each of the next `n`.
#[derive(Clone)]
struct Browser {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Browser {
    fn spawn<S>(mut client: S) -> Self
    where
        S: futures::Stream<
                Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>,
            > + Unpin
            + Send
            + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some((want, reply)) = rx.recv().await {
                let mut times = Vec::with_capacity(want);
                while times.len() < want {
                    match client.next().await {
                        // The gateway's own notices (a session's worktree, at
                        // its start) are not events the executor emitted: the
                        // times pair with emits by position.
                        Some(Ok(Message::Text(t))) if t.contains(GATEWAY_NOTICE) => {}
                        Some(Ok(Message::Text(_))) => times.push(Instant::now()),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => panic!("the browser's socket failed: {e}"),
                        None => panic!("the orchestrator closed the socket"),
                    }
                }
                let _ = reply.send(times);
            }
        });
        Browser { jobs: tx }
    }

    fn expect(&self, n: usize) -> oneshot::Receiver<Vec<Instant>> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send((n, tx)).unwrap();
        rx
    }
}

/// Where a session's events enter.
#[derive(Clone)]
enum Source {
    /// The real gateway: the executor's event sink.
    Gateway(DynEventSink),
    /// A stand-in for a gateway on another machine: the session's events,
    /// framed as the gateway frames them, written to the link as they are.
    Link {
        link: mpsc::Sender<String>,
        session_id: String,
    },
}

impl Source {
    /// The link frame of event `i` of the mix, as gseq `i + 1`.
    fn frame(session_id: &str, i: u64) -> String {
        let json = mix::unasked(i).to_json().unwrap();
        gateway_event_frame(session_id, i + 1, &json).unwrap()
    }

    /// What is sent ahead of time for events `from..to` (the stand-in's
    /// frames are made before the clock starts: the work of a gateway on
    /// another machine is not this one's).
    fn prepare(&self, from: u64, to: u64) -> Vec<String> {
        match self {
            Source::Gateway(_) => Vec::new(),
            Source::Link { session_id, .. } => {
                (from..to).map(|i| Source::frame(session_id, i)).collect()
            }
        }
    }

    /// Sends event `i` of the mix, or its prepared frame.
    async fn emit(&self, i: u64, prepared: Option<String>) {
        match self {
            Source::Gateway(sink) => sink.emit(mix::unasked(i)).await.unwrap(),
            Source::Link { link, session_id } => {
                let frame = prepared.unwrap_or_else(|| Source::frame(session_id, i));
                link.send(frame).await.unwrap();
            }
        }
    }
}

/// What runs on the bench's two cores.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// The gateway (with its SQLite outbox) and the orchestrator.
    Both,
    /// The orchestrator alone, its gateway a stand-in that writes
    /// prepared frames to the link (as a gateway on another machine).
    Orchestrator,
}

struct Session {
    source: Source,
    browser: Browser,
    /// Events emitted so far (the next one's index in the mix).
    next: u64,
}

struct Stack {
    sessions: Vec<Session>,
    orchestrator: Option<SqliteDirectory>,
    _gateway: Option<tokio::task::JoinHandle<()>>,
}

/// The orchestrator's link read loop, mirroring `duraclaw-full`'s: take
/// what has arrived, one batch per session, each handed to its session's
/// ingest lane (the same `Lanes`), which ingests and acks while the loop
/// reads on.
async fn read_loop<S>(mut stream: S, actors: Arc<Vec<SessionActor>>, acks: mpsc::Sender<String>)
where
    S: futures::Stream<Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    let mut lanes = Lanes::new(LANE_IDLE, move |session_id: String, batch| {
        let actors = actors.clone();
        let acks = acks.clone();
        async move {
            let i: usize = session_id.trim_start_matches("scale-").parse().unwrap();
            let out = actors[i].ingest_raw(batch).await.unwrap();
            assert!(out.gap_at.is_none());
            for frame in link::after_ingest(&session_id, &out) {
                let _ = acks.try_send(encode_frame(&frame).unwrap());
            }
        }
    });
    loop {
        let Some(first) = stream.next().await else {
            return;
        };
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
        let inputs = link::Link::<()>::new().route(link::decode(texts.iter().map(|t| t.as_str())));
        for input in inputs {
            if let Input::Events { session_id, events } = input {
                lanes.dispatch(session_id, events).await;
            }
        }
    }
}

/// The orchestrator alone: its link to a gateway stand-in, `n` sessions
/// and their browsers; its store a SQLite file under `root`, or in memory.
async fn orchestrator_stack(root: &Path, n: usize, on_sqlite: bool) -> Stack {
    std::fs::create_dir_all(root).unwrap();
    let (orch_dir, orchestrator): (DynSessionDirectory, _) = if on_sqlite {
        let o = SqliteDirectory::open(root.join("orchestrator.db"))
            .await
            .unwrap();
        (Arc::new(o.clone()), Some(o))
    } else {
        (Arc::new(MemoryDirectory::new()), None)
    };
    // The stand-in's end writes frames as the gateway's link writer does
    // (and reads the acks); the orchestrator's end dials with no Nagle.
    let (gateway_end, orchestrator_end) = pair(true).await;
    let link = spawn_writer(gateway_end, LINK_QUEUE);
    let (sink, stream) = orchestrator_end.split();
    let mut actors = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("scale-{i}");
        let store = orch_dir
            .create(SessionMeta::new(&id, "bench", now_ms()))
            .await
            .unwrap();
        actors.push(orchestrator_actor(store).await.unwrap());
        sources.push(Source::Link {
            link: link.clone(),
            session_id: id,
        });
    }
    let sessions = attach_browsers(actors, sources, sink, stream).await;
    Stack {
        sessions,
        orchestrator,
        _gateway: None,
    }
}

/// The gateway, the orchestrator's link, `n` sessions and their browsers;
/// both stores SQLite files under `root`, or both in memory.
async fn stack(root: &Path, n: usize, on_sqlite: bool, tier: Tier) -> Stack {
    if tier == Tier::Orchestrator {
        return orchestrator_stack(root, n, on_sqlite).await;
    }
    std::fs::create_dir_all(root).unwrap();
    let (gateway_dir, orch_dir, orchestrator): (DynSessionDirectory, DynSessionDirectory, _) =
        if on_sqlite {
            let g = SqliteDirectory::open(root.join("gateway.db"))
                .await
                .unwrap();
            let o = SqliteDirectory::open(root.join("orchestrator.db"))
                .await
                .unwrap();
            (Arc::new(g), Arc::new(o.clone()), Some(o))
        } else {
            (
                Arc::new(MemoryDirectory::new()),
                Arc::new(MemoryDirectory::new()),
                None,
            )
        };
    // A worktree per session: a worktree runs one session at a time.
    for i in 0..n {
        init_repo(&root.join(format!("projects/app{i}")));
    }
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
    let gateway_task = tokio::spawn(serve(listener, gateway, Secret::new(SECRET).unwrap()));

    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true)
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let frame = |f: &ToGateway| Message::text(encode_frame(f).unwrap());
    sink.send(frame(&ToGateway::Hello(Hello::new(Role::Orchestrator))))
        .await
        .unwrap();

    let mut sinks = Vec::with_capacity(n);
    let mut actors = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("scale-{i}");
        sink.send(frame(&ToGateway::Command(CommandEnvelope {
            id: format!("execute-{i}"),
            session_id: id.clone(),
            command: Command::Execute(Execute {
                worktree: root.join(format!("projects/app{i}")).display().to_string(),
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
        sinks.push(Source::Gateway(sink_rx.recv().await.unwrap()));
        let store = orch_dir
            .create(SessionMeta::new(&id, "bench", now_ms()))
            .await
            .unwrap();
        actors.push(orchestrator_actor(store).await.unwrap());
        ids.push(id);
    }
    // Attached once every session runs: an attached session's first event
    // (the gateway's `worktree` notice) would otherwise arrive while a later
    // `execute` waits for its result, before the read loop runs.
    for id in ids {
        sink.send(frame(&ToGateway::Attach {
            session_id: id,
            after_gseq: 0,
        }))
        .await
        .unwrap();
    }
    let sessions = attach_browsers(actors, sinks, sink, stream).await;
    Stack {
        sessions,
        orchestrator,
        _gateway: Some(gateway_task),
    }
}

/// The orchestrator's side of the link (the ack writer and the read loop
/// over the session actors) and a browser per session.
async fn attach_browsers<K, S>(
    actors: Vec<SessionActor>,
    sources: Vec<Source>,
    mut sink: K,
    stream: S,
) -> Vec<Session>
where
    K: futures::Sink<Message> + Unpin + Send + 'static,
    S: futures::Stream<Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin
        + Send
        + 'static,
{
    // The link writer: acks, fed and flushed in batches as the product's.
    let (link_tx, mut link_rx) = mpsc::channel::<String>(LINK_QUEUE);
    tokio::spawn(async move {
        while let Some(text) = link_rx.recv().await {
            if sink.feed(Message::text(text)).await.is_err() {
                return;
            }
            while let Ok(text) = link_rx.try_recv() {
                if sink.feed(Message::text(text)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let actors = Arc::new(actors);
    tokio::spawn(read_loop(stream, actors.clone(), link_tx));

    // A browser per session: subscribe, forward into the queue, the writer
    // sends.
    let mut sessions = Vec::with_capacity(actors.len());
    for (actor, source) in actors.iter().zip(sources) {
        let (server, client) = pair(false).await;
        let queue = spawn_writer(server, BROWSER_QUEUE);
        let mut sub = actor.log().subscribe(0);
        tokio::spawn(async move {
            while let Some(item) = sub.next().await {
                let e = item.unwrap();
                if queue
                    .send(browser_event_frame(e.seq, &e.json))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        sessions.push(Session {
            source,
            browser: Browser::spawn(client),
            next: 0,
        });
    }
    sessions
}

/// Every session emits `per_session` events of the mix back to back, all
/// at once; the time until every browser has them all.
async fn burst(stack: &mut Stack, per_session: u64) -> Duration {
    let prepared: Vec<Vec<String>> = stack
        .sessions
        .iter()
        .map(|s| s.source.prepare(s.next, s.next + per_session))
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (s, frames) in stack.sessions.iter_mut().zip(prepared) {
        let done = s.browser.expect(per_session as usize);
        let source = s.source.clone();
        let from = s.next;
        s.next += per_session;
        tasks.push(tokio::spawn(async move {
            let mut frames = frames.into_iter();
            for i in from..from + per_session {
                source.emit(i, frames.next()).await;
            }
            done.await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().len(), per_session as usize);
    }
    start.elapsed()
}

/// Every session emits one event of the mix every `every`, `count` times;
/// the latency of each (emit to browser), in nanoseconds. Large events
/// are left out of the figures (counted apart in the relay bench).
async fn steady(stack: &mut Stack, count: u64, every: Duration) -> Vec<u64> {
    let n = stack.sessions.len() as u32;
    let mut tasks = Vec::new();
    for (k, s) in stack.sessions.iter_mut().enumerate() {
        let done = s.browser.expect(count as usize);
        let source = s.source.clone();
        let from = s.next;
        s.next += count;
        // Sessions start spread over one period, as independent streams.
        let offset = every / n * k as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = Vec::with_capacity(count as usize);
            for i in from..from + count {
                tick.tick().await;
                sent.push((Instant::now(), mix::is_large(i)));
                source.emit(i, None).await;
            }
            let got = done.await.unwrap();
            sent.iter()
                .zip(&got)
                .filter(|((_, large), _)| !large)
                .map(|((t0, _), t1)| u64::try_from(t1.duration_since(*t0).as_nanos()).unwrap())
                .collect::<Vec<u64>>()
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn latency(sorted: &[u64]) -> serde_json::Value {
    json!({
        "events": sorted.len(),
        "p50_us": pct(sorted, 0.50),
        "p99_us": pct(sorted, 0.99),
        "p99_9_us": pct(sorted, 0.999),
        "max_us": pct(sorted, 1.0),
    })
}

/// The burst and steady phases of one tier, ours (SQLite) against the
/// same topology with memory stores, in the same run.
async fn measure(
    root: &Path,
    tier: Tier,
    sessions: usize,
    per_session: u64,
    steady_count: u64,
) -> serde_json::Value {
    let every = Duration::from_millis(10);
    let mut ours = stack(&root.join("sqlite"), sessions, true, tier).await;
    let mut mem = stack(&root.join("memory"), sessions, false, tier).await;
    // Warm up: connections, caches, prepared statements.
    burst(&mut ours, 20).await;
    burst(&mut mem, 20).await;

    let orch = ours.orchestrator.clone().unwrap();
    let before = orch.stats();
    let ours_burst = burst(&mut ours, per_session).await;
    let after = orch.stats();
    let mem_burst = burst(&mut mem, per_session).await;
    // Once more each, the other way round, against load drifting.
    let mem_burst2 = burst(&mut mem, per_session).await;
    let ours_burst2 = burst(&mut ours, per_session).await;
    let total = (sessions as u64 * per_session) as f64;
    let ours_rate = total / ours_burst.min(ours_burst2).as_secs_f64();
    let mem_rate = total / mem_burst.min(mem_burst2).as_secs_f64();

    let ours_lat = steady(&mut ours, steady_count, every).await;
    let mem_lat = steady(&mut mem, steady_count, every).await;
    let per_1000 = |tx: u64, ev: u64| tx as f64 * 1000.0 / ev.max(1) as f64;
    json!({
        "burst": {
            "events_per_session": per_session,
            "ours_events_per_s": ours_rate,
            "memory_stores_events_per_s": mem_rate,
            "ratio_ours_to_memory": ours_rate / mem_rate,
            "orchestrator_transactions_per_1000": per_1000(
                after.transactions - before.transactions,
                after.events_written - before.events_written),
        },
        "steady": {
            "events_per_s_offered": sessions as f64 / every.as_secs_f64(),
            "ours": latency(&ours_lat),
            "memory_stores": latency(&mem_lat),
        },
    })
}

fn main() {
    let quick = quick();
    let (sessions, per_session, steady_count) = if quick {
        (10usize, 50u64, 20u64)
    } else {
        (100, 1_000, 300)
    };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let report = rt.block_on(async {
        let both = measure(
            &root.join("both"),
            Tier::Both,
            sessions,
            per_session,
            steady_count,
        )
        .await;
        let alone = measure(
            &root.join("alone"),
            Tier::Orchestrator,
            sessions,
            per_session,
            steady_count,
        )
        .await;
        json!({
            "bench": "scale",
            "quick": quick,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "sessions": sessions,
            "burst": both["burst"],
            "steady": both["steady"],
            "orchestrator_alone": alone,
        })
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
