//! The Durable Object path under `wrangler dev`, each figure against a raw
//! baseline through the same session object in the same run.
//!
//! Builds the bench worker (`crates/duraclaw-cf/bench-worker`: the product's
//! Worker and `SessionHost`, plus bench-only raw routes) and runs it under
//! `wrangler dev`, with an in-process gateway stand-in that speaks the
//! gateway protocol on `CC_GATEWAY_URL` (hello, worktrees, command results,
//! pongs; it numbers events and reads acks). A user is created and logged in
//! through the real auth routes, and a session created through the real
//! `POST /api/sessions`, so the object dials the stand-in exactly as it
//! dials a gateway.
//!
//! 1. **Append + ack**: one event (a token delta of the mix) sent on the
//!    object's gateway link every 10 ms, timed to its `ack` (stored, published, acked)
//!    and to its arrival at a browser WebSocket (through the Worker, with its
//!    cookie). Baseline: the same frame echoed by the same object over an
//!    outbound WebSocket it opened to the stand-in the way it opens the
//!    gateway link (`/bench/<id>/echo`): one round trip, no decode, no
//!    storage. Two more echoes break the gap down: each frame stored
//!    first with one autocommit `INSERT` (`store=write`: the commit and
//!    the output gate that any durable ack waits for), and with an
//!    append's statements in one `transactionSync`, a read back and a send
//!    to the object's browser sockets (`store=txn`). The SQL statements and transactions the object ran
//!    per append are counted (`/bench/<id>/sql`). Rounds alternate the
//!    order of ours and the echoes.
//! 2. **Ingest burst**: `FILL` events of the mix sent back to back, timed to
//!    the last ack; baseline: the same frames through the echo. Each with
//!    the CPU time of wrangler's process group per event.
//! 3. **Replay**: a browser WebSocket opened with `after=0` on the session
//!    now holding `FILL` events, timed from the connect to the last event
//!    frame. Baselines: `/bench/<id>/raw-replay` (one raw DO SQL scan of the
//!    same rows, each row framed and sent on a plain socket, as the replay
//!    does before answering the upgrade) and `/bench/<id>/scan` (the raw scan
//!    alone, behind one HTTP round trip). Rounds alternate. Each round
//!    also replays compacted (the default), and compacted and compressed
//!    as the UI asks (`compress=deflate-raw`), each read as a browser
//!    reads it, with the CPU of wrangler's process group for each of ours:
//!    the last two differ by what compressing costs the object.
//!
//! `DO_PATH_WORKER=<dir>` runs a worker built before (a `worker-build`
//! output directory, e.g. another checkout's) instead of building one.
//!
//! Prints one JSON summary. `QUICK=1` (or `cargo test --bench do_path`) runs
//! 20 latency rounds, 1,000 events and one replay round; the worker build is
//! the same either way. The Cloudflare tools missing fail the run with the
//! install hint, as the Cloudflare tests do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
// The handshake callback's error type is tungstenite's, not ours.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duraclaw_benches::mix;
use duraclaw_core::backend::web::deflate;
use duraclaw_core::protocol::{
    Event, FromGateway, Hello, Role, ToGateway, ToolResult, decode_frame, encode_frame,
};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use duraclaw_testkit::wrangler as support;
use support::{
    Tools, admin_user_login, build_worker_crate, free_port, start_wrangler_logged, wait_until_ready,
};

const GATEWAY_SECRET: &str = "bench-gateway-secret-0123456789ab";
const COOKIE_SECRET: &str = "bench-cookie-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
const USER: &str = "bench";
const PASSWORD: &str = "correct horse battery staple 42";
const WORKTREE: &str = "/srv/bench";
/// How long any one expected thing may take.
const DEADLINE: Duration = Duration::from_secs(120);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type ServerWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    std::env::var_os("QUICK").is_some_and(|v| !v.is_empty() && v != "0")
        || !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test")
}

/// The session's gateway link, as the stand-in sees it.
struct Link {
    /// Frames to send to the object.
    out: mpsc::UnboundedSender<String>,
    /// Every ack's gseq, with when it arrived.
    acks: mpsc::UnboundedReceiver<(u64, Instant)>,
}

/// The gateway stand-in: the session link once the object sends a
/// command on it, and the echo links.
struct Gateway {
    port: u16,
    /// Gateway-protocol connections greeted so far.
    hellos: Arc<AtomicUsize>,
    links: mpsc::UnboundedReceiver<Link>,
    echoes: mpsc::UnboundedReceiver<ServerWs>,
}

async fn start_gateway() -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (link_tx, links) = mpsc::unbounded_channel();
    let (echo_tx, echoes) = mpsc::unbounded_channel();
    let hellos = Arc::new(AtomicUsize::new(0));
    let counter = hellos.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let (link_tx, echo_tx) = (link_tx.clone(), echo_tx.clone());
            let counter = counter.clone();
            tokio::spawn(async move {
                let path = Arc::new(Mutex::new(String::new()));
                let seen = path.clone();
                let callback = move |req: &Request, resp: Response| {
                    *seen.lock().unwrap() = req.uri().path().to_owned();
                    Ok(resp)
                };
                let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                let path = path.lock().unwrap().clone();
                if path == "/echo" {
                    let _ = echo_tx.send(ws);
                } else {
                    serve_link(ws, link_tx, counter).await;
                }
            });
        }
    });
    Gateway {
        port,
        hellos,
        links,
        echoes,
    }
}

/// One gateway-protocol connection from the object.
async fn serve_link(ws: ServerWs, link_tx: mpsc::UnboundedSender<Link>, hellos: Arc<AtomicUsize>) {
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
    // Feeds every queued frame, then flushes: a burst is one write.
    tokio::spawn(async move {
        while let Some(first) = out_rx.recv().await {
            if sink.feed(Message::text(first)).await.is_err() {
                return;
            }
            while let Ok(next) = out_rx.try_recv() {
                if sink.feed(Message::text(next)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let (ack_tx, acks) = mpsc::unbounded_channel();
    let mut acks = Some(acks);
    let send = |frame: &FromGateway| {
        let _ = out.send(encode_frame(frame).unwrap());
    };
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(frame) = decode_frame::<ToGateway>(text.as_str(), "bench link frame") else {
            continue;
        };
        match frame {
            ToGateway::Hello(_) => {
                hellos.fetch_add(1, Ordering::SeqCst);
                send(&FromGateway::Hello(Hello::new(Role::Gateway)));
            }
            ToGateway::ListWorktrees { id } => {
                let list = json!({"type": "worktrees", "id": id,
                    "worktrees": [{"path": WORKTREE, "repo": WORKTREE}]});
                let _ = out.send(list.to_string());
            }
            ToGateway::Command(env) => {
                let result = json!({"type": "command_result", "id": env.id, "ok": true});
                let _ = out.send(result.to_string());
                if let Some(acks) = acks.take() {
                    let _ = link_tx.send(Link {
                        out: out.clone(),
                        acks,
                    });
                }
            }
            ToGateway::Ack { gseq, .. } => {
                let _ = ack_tx.send((gseq, Instant::now()));
            }
            ToGateway::Ping { nonce } => send(&FromGateway::Pong { nonce }),
            _ => {}
        }
    }
}

fn event_frame(session: &str, gseq: u64, event: Event) -> String {
    encode_frame(&FromGateway::Event {
        session_id: session.to_owned(),
        gseq,
        event,
    })
    .unwrap()
}

/// Waits for the ack of `gseq` (or a later one).
async fn acked(link: &mut Link, gseq: u64) -> Instant {
    loop {
        let (g, at) = tokio::time::timeout(DEADLINE, link.acks.recv())
            .await
            .expect("an ack in time")
            .expect("the link is up");
        if g >= gseq {
            return at;
        }
    }
}

/// The seq of an event frame (`{"type":"event","seq":N,…`), else `None`:
/// the same cheap look for both replays.
fn event_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("{\"type\":\"event\",\"seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

/// The next message, within [`DEADLINE`], from a socket that stays open.
async fn next_message<S>(ws: &mut S) -> Message
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("a frame in time")
        .expect("the socket is open")
        .expect("a readable frame")
}

async fn next_text<S>(ws: &mut S) -> String
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match next_message(ws).await {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Close(c) => panic!("the server closed the socket: {c:?}"),
            _ => continue,
        }
    }
}

async fn connect(url: &str, cookie: Option<(&str, &str)>) -> Ws {
    let mut req = url.into_client_request().unwrap();
    if let Some((cookie, origin)) = cookie {
        req.headers_mut().insert("Cookie", cookie.parse().unwrap());
        req.headers_mut().insert("Origin", origin.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(req))
        .await
        .expect("connected in time")
        .unwrap_or_else(|e| panic!("WebSocket {url}: {e}"));
    ws
}

/// Reads until the event with seq `last`; the event frames counted.
async fn read_replay(ws: &mut Ws, last: u64) -> u64 {
    let mut events = 0;
    loop {
        let text = next_text(ws).await;
        if let Some(seq) = event_seq(&text) {
            events += 1;
            if seq >= last {
                return events;
            }
        }
    }
}

/// Reads a compacted replay, compressed (`compress=deflate-raw`) or not,
/// as a browser does, binary frames inflated and split, until the frame
/// that covers seq `last`. Returns the seqs covered (each once, or the run
/// fails) and the bytes on the wire.
async fn read_compressed_replay(ws: &mut Ws, last: u64) -> (u64, u64) {
    let (mut next, mut wire) = (1u64, 0u64);
    loop {
        let frames = match next_message(ws).await {
            Message::Binary(b) => {
                wire += b.len() as u64;
                deflate::inflate(&b, usize::MAX).expect("a replay batch inflates")
            }
            Message::Text(t) => {
                wire += t.len() as u64;
                vec![t.as_str().to_owned()]
            }
            Message::Close(c) => panic!("the server closed the socket: {c:?}"),
            _ => continue,
        };
        for frame in frames {
            let v: Value = serde_json::from_str(&frame).expect("a JSON frame");
            let (first, end) = match v["type"].as_str() {
                Some("event") => (v["seq"].as_u64(), v["seq"].as_u64()),
                Some("compacted") => (v["first"].as_u64(), v["last"].as_u64()),
                _ => continue,
            };
            let (first, end) = (first.expect("a seq"), end.expect("a seq"));
            assert_eq!(first, next, "the replay goes on at the seq after the last");
            next = end + 1;
            if end >= last {
                return (next - 1, wire);
            }
        }
    }
}

/// A browser WebSocket with a 4 KiB receive buffer that is not read until
/// the caller polls it, after its replay up to `last`.
async fn stalled_browser(
    port: u16,
    cookie: &str,
    origin: &str,
    id: &str,
    last: u64,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}/api/sessions/{id}/ws?after={last}&compact=0");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Cookie", cookie.parse().unwrap());
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    let (mut ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("connected in time")
        .unwrap();
    // hello and snapshot, then nothing until the caller reads.
    next_text(&mut ws).await;
    next_text(&mut ws).await;
    ws
}

/// Creates the user through the admin route and logs in; the cookie.
async fn login(http: &reqwest::Client, base: &str) -> String {
    admin_user_login(http, base, base, ADMIN_TOKEN, USER, PASSWORD).await
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 and p99 of `xs`, in microseconds.
fn summary(xs: &[Duration]) -> Value {
    let mut us: Vec<f64> = xs.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    json!({"n": us.len(), "p50_us": percentile(&us, 0.5).round(),
        "p99_us": percentile(&us, 0.99).round()})
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// Copies the files of `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let quick = quick();
    let (rounds, fill, replay_rounds) = if quick {
        (20, 1_000u64, 1)
    } else {
        (500, 10_000u64, 7)
    };
    let warmup = 5;
    let tools = Tools::find();
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = support::repo_root().join("crates/duraclaw-cf/bench-worker");
    let t = Instant::now();
    match std::env::var_os("DO_PATH_WORKER") {
        // A worker built before (another checkout's), to compare builds
        // run after run without rebuilding.
        Some(prebuilt) => copy_dir(prebuilt.as_ref(), &dir.path().join("build")),
        None => build_worker_crate(&tools, &crate_dir, &dir.path().join("build")),
    }
    let built = t.elapsed();
    std::fs::copy(
        crate_dir.join("wrangler.toml"),
        dir.path().join("wrangler.toml"),
    )
    .unwrap();

    let mut gateway = start_gateway().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ws_base = base.replace("http://", "ws://");
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port);
    let vars = [
        ("CC_GATEWAY_URL", gateway_url.as_str()),
        ("CC_GATEWAY_SECRET", GATEWAY_SECRET),
        ("DURACLAW_COOKIE_SECRET", COOKIE_SECRET),
        ("DURACLAW_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let t = Instant::now();
    let mut wrangler = start_wrangler_logged(
        &tools,
        dir.path(),
        port,
        &vars,
        &dir.path().join("wrangler.log"),
    );
    let http = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap();
    wait_until_ready(&mut wrangler, &http, &format!("{base}/api/health"), |t| {
        t.contains("\"ok\":true")
    })
    .await;
    let ready = t.elapsed();

    // A user and a session, through the product's routes.
    let cookie = login(&http, &base).await;
    let r = http
        .post(format!("{base}/api/sessions"))
        .header("Cookie", &cookie)
        .header("Origin", &base)
        .json(&json!({"worktree": WORKTREE, "prompt": "bench"}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let meta: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status,
        201,
        "creating the session: {meta}\n{}",
        wrangler.log_tail()
    );
    let id = meta["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let mut link = tokio::time::timeout(DEADLINE, gateway.links.recv())
        .await
        .expect("the session's link in time")
        .expect("the stand-in runs");

    // The echoes through the same object: raw, after one durable write,
    // after an append's statements in one transaction.
    let mut echoes = Vec::new();
    for store in ["raw", "write", "txn"] {
        let r = http
            .get(format!(
                "{base}/bench/{id}/echo?url={gateway_url}/echo&store={store}"
            ))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "echo {store}: {}", r.status());
        echoes.push(
            tokio::time::timeout(DEADLINE, gateway.echoes.recv())
                .await
                .expect("the echo link in time")
                .expect("the stand-in runs"),
        );
    }
    let mut echo_txn = echoes.pop().unwrap();
    let mut echo_write = echoes.pop().unwrap();
    let mut echo = echoes.pop().unwrap();
    let sql_counts = |http: reqwest::Client, url: String| async move {
        let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        (
            v["statements"].as_u64().unwrap(),
            v["transactions"].as_u64().unwrap(),
        )
    };

    // A browser on the session, its event arrivals timed by a reader task
    // once it has replayed what the log holds (the user's turn).
    let scan = |http: reqwest::Client, url: String| async move {
        let t0 = Instant::now();
        let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        (t0.elapsed(), v)
    };
    let (_, head) = scan(http.clone(), format!("{base}/bench/{id}/scan")).await;
    let mut last_seen = head["rows"].as_u64().expect("a row count");
    let mut browser = connect(
        &format!("{ws_base}/api/sessions/{id}/ws?after=0&compact=0"),
        Some((&cookie, &base)),
    )
    .await;
    let hello = next_text(&mut browser).await;
    assert!(hello.contains("\"hello\""), "{hello}");
    if last_seen > 0 {
        read_replay(&mut browser, last_seen).await;
    }
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<(u64, Instant)>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = browser.next().await {
            if let Some(seq) = event_seq(t.as_str()) {
                let _ = seen_tx.send((seq, Instant::now()));
            }
        }
    });

    // 1. Append + ack, alternating with the echo.
    let (mut ack, mut delivered, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let (mut written, mut txn) = (Vec::new(), Vec::new());
    let (mut ours_sql, mut ours_txns) = (0, 0);
    let mut gseq = 0u64;
    // Rounds start 10 ms apart, as a streamed turn's events come (tens a
    // second): each round times a lone event; the burst below times a
    // stream sent back to back.
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for round in 0..warmup + rounds {
        pace.tick().await;
        gseq += 1;
        let frame = event_frame(&id, gseq, mix::delta(gseq));
        let mut ours = async |frame: &str| {
            let t0 = Instant::now();
            link.out.send(frame.to_owned()).unwrap();
            let at = acked(&mut link, gseq).await;
            let (seq, got) = tokio::time::timeout(DEADLINE, seen.recv())
                .await
                .expect("the browser got the event in time")
                .expect("the browser is open");
            assert_eq!(seq, last_seen + 1, "the browser's events run on");
            last_seen = seq;
            (at - t0, got - t0)
        };
        async fn echoed(ws: &mut ServerWs, frame: &str) -> Duration {
            let t0 = Instant::now();
            ws.send(Message::text(frame.to_owned())).await.unwrap();
            let back = next_text(ws).await;
            assert_eq!(back.len(), frame.len());
            t0.elapsed()
        }
        // Ours counted alone: the SQL the isolate ran for this append.
        let sql_url = format!("{base}/bench/{id}/sql");
        let before = sql_counts(http.clone(), sql_url.clone()).await;
        let ((a, b), r, w, x) = if round % 2 == 0 {
            let o = ours(&frame).await;
            let r = echoed(&mut echo, &frame).await;
            let w = echoed(&mut echo_write, &frame).await;
            (o, r, w, echoed(&mut echo_txn, &frame).await)
        } else {
            let x = echoed(&mut echo_txn, &frame).await;
            let w = echoed(&mut echo_write, &frame).await;
            let r = echoed(&mut echo, &frame).await;
            (ours(&frame).await, r, w, x)
        };
        let after = sql_counts(http.clone(), sql_url).await;
        if round >= warmup {
            ack.push(a);
            delivered.push(b);
            raw.push(r);
            written.push(w);
            txn.push(x);
            // The echoes' statements: one, and four in one transaction.
            ours_sql += after.0 - before.0 - 1 - 4;
            ours_txns += after.1 - before.1 - 1;
        }
    }
    reader.abort();
    let p50 = |xs: &[Duration]| {
        let mut v: Vec<Duration> = xs.to_vec();
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let latency = json!({
        "append_ack": summary(&ack),
        "browser_delivery": summary(&delivered),
        "raw_echo": summary(&raw),
        "echo_after_one_write": summary(&written),
        "echo_after_append_statements": summary(&txn),
        "ratio_ack_p50": (p50(&ack) / p50(&raw) * 100.0).round() / 100.0,
        "ratio_ack_p50_vs_echo_after_one_write": (p50(&ack) / p50(&written) * 100.0).round() / 100.0,
        "ratio_echo_after_one_write_p50": (p50(&written) / p50(&raw) * 100.0).round() / 100.0,
        "ratio_echo_after_append_statements_p50": (p50(&txn) / p50(&raw) * 100.0).round() / 100.0,
        "sql_statements_per_append": (ours_sql as f64 / rounds as f64 * 100.0).round() / 100.0,
        "sql_transactions_per_append": (ours_txns as f64 / rounds as f64 * 100.0).round() / 100.0,
        "ratio_browser_p50": (p50(&delivered) / p50(&raw) * 100.0).round() / 100.0,
    });

    // 2. The burst that fills the log, then the same frames echoed.
    let frames: Vec<String> = (0..fill)
        .map(|i| event_frame(&id, gseq + 1 + i, mix::event(i)))
        .collect();
    let bytes: usize = frames.iter().map(String::len).sum();
    let cpu0 = wrangler.group_cpu();
    let t0 = Instant::now();
    for f in &frames {
        link.out.send(f.clone()).unwrap();
    }
    acked(&mut link, gseq + fill).await;
    let burst = t0.elapsed();
    let cpu1 = wrangler.group_cpu();
    gseq += fill;
    let (mut echo_tx, mut echo_rx) = echo.split();
    let t0 = Instant::now();
    let sender = async {
        for f in &frames {
            echo_tx.feed(Message::text(f.clone())).await.unwrap();
        }
        echo_tx.flush().await.unwrap();
    };
    let receiver = async {
        for _ in 0..fill {
            next_text(&mut echo_rx).await;
        }
    };
    futures::join!(sender, receiver);
    let burst_raw = t0.elapsed();
    let cpu2 = wrangler.group_cpu();
    // CPU of wrangler's process group (workerd and its proxy) per event.
    let per_event = |a: Option<Duration>, b: Option<Duration>| {
        a.zip(b)
            .map(|(a, b)| ((b.saturating_sub(a)).as_secs_f64() * 1e6 / fill as f64).round())
    };
    let ingest = json!({
        "events": fill, "bytes": bytes,
        "ours_ms": ms(burst), "raw_echo_ms": ms(burst_raw),
        "ours_events_per_s": (fill as f64 / burst.as_secs_f64()).round(),
        "ratio": (burst.as_secs_f64() / burst_raw.as_secs_f64() * 100.0).round() / 100.0,
        "cpu_us_per_event": per_event(cpu0, cpu1),
        "raw_echo_cpu_us_per_event": per_event(cpu1, cpu2),
    });

    // 3. Replays of the whole log, alternating ours and the raw ones.
    let (_, counted) = scan(http.clone(), format!("{base}/bench/{id}/scan")).await;
    let rows = counted["rows"].as_u64().expect("a row count");
    assert!(rows >= gseq, "{rows} rows for {gseq} gateway events");
    let (mut ours_t, mut raw_t, mut scan_t, mut ratios) = (vec![], vec![], vec![], vec![]);
    // The replay the UI asks for (compacted and compressed), with the CPU
    // of wrangler's process group for it and for ours above.
    let (mut zipped_t, mut ours_cpu, mut zipped_cpu, mut zipped_wire) = (vec![], vec![], vec![], 0);
    let (mut compact_t, mut compact_cpu, mut compact_wire) = (vec![], vec![], 0);
    for round in 0..replay_rounds {
        let ours = async {
            let t0 = Instant::now();
            let mut ws = connect(
                &format!("{ws_base}/api/sessions/{id}/ws?after=0&compact=0"),
                Some((&cookie, &base)),
            )
            .await;
            let n = read_replay(&mut ws, rows).await;
            assert_eq!(n, rows, "ours replayed every event once");
            t0.elapsed()
        };
        let raw = async {
            let t0 = Instant::now();
            let mut ws = connect(&format!("{ws_base}/bench/{id}/raw-replay"), None).await;
            let n = read_replay(&mut ws, rows).await;
            assert_eq!(n, rows, "the raw replay sent every row");
            t0.elapsed()
        };
        let timed_ours = async {
            let c0 = wrangler.group_cpu();
            let o = ours.await;
            ours_cpu.extend(
                c0.zip(wrangler.group_cpu())
                    .map(|(a, b)| ms(b.saturating_sub(a))),
            );
            o
        };
        let (o, r) = if round % 2 == 0 {
            let o = timed_ours.await;
            (o, raw.await)
        } else {
            let r = raw.await;
            (timed_ours.await, r)
        };
        // Compacted, then compacted and compressed: the difference is what
        // compressing costs.
        for compress in [round % 2 == 0, round % 2 != 0] {
            let c0 = wrangler.group_cpu();
            let t0 = Instant::now();
            let query = if compress {
                "&compress=deflate-raw"
            } else {
                ""
            };
            let mut ws = connect(
                &format!("{ws_base}/api/sessions/{id}/ws?after=0{query}"),
                Some((&cookie, &base)),
            )
            .await;
            let (covered, wire) = read_compressed_replay(&mut ws, rows).await;
            assert_eq!(covered, rows, "the compacted replay covered every seq once");
            let cpu = c0
                .zip(wrangler.group_cpu())
                .map(|(a, b)| ms(b.saturating_sub(a)));
            if compress {
                zipped_t.push(ms(t0.elapsed()));
                zipped_cpu.extend(cpu);
                zipped_wire = wire;
            } else {
                compact_t.push(ms(t0.elapsed()));
                compact_cpu.extend(cpu);
                compact_wire = wire;
            }
        }
        let (s, v) = scan(http.clone(), format!("{base}/bench/{id}/scan")).await;
        assert_eq!(v["rows"].as_u64(), Some(rows));
        ratios.push(o.as_secs_f64() / r.as_secs_f64());
        ours_t.push(ms(o));
        raw_t.push(ms(r));
        scan_t.push(ms(s));
    }
    let replay = json!({
        "events": rows, "bytes": counted["bytes"], "rounds": replay_rounds,
        "ours_ms": median(&ours_t), "raw_replay_ms": median(&raw_t), "raw_scan_ms": median(&scan_t),
        "ratio_vs_raw_replay": (median(&ratios) * 100.0).round() / 100.0,
        "ratio_vs_raw_scan": (median(&ours_t) / median(&scan_t) * 10.0).round() / 10.0,
        "ours_rounds_ms": ours_t, "raw_rounds_ms": raw_t,
        "compacted_ms": median(&compact_t), "compacted_wire_bytes": compact_wire,
        "cpu_ms_compacted": (!compact_cpu.is_empty()).then(|| median(&compact_cpu)),
        "compressed_ms": median(&zipped_t), "compressed_wire_bytes": zipped_wire,
        "cpu_ms_ours": (!ours_cpu.is_empty()).then(|| median(&ours_cpu)),
        "cpu_ms_compressed": (!zipped_cpu.is_empty()).then(|| median(&zipped_cpu)),
    });

    // 4. A browser that stops reading while the session writes 40 MB: the
    // object closes it (4000, lagged) once its queue passes 16 MiB instead
    // of buffering without bound; it then resumes with after=<its last seq>.
    let mut slow = stalled_browser(port, &cookie, &base, &id, rows).await;
    let n = 200u64;
    let t0 = Instant::now();
    for i in 0..n {
        let event = Event::ToolResult(ToolResult {
            tool_use_id: format!("toolu_lagged_{i}"),
            content: Value::String(mix::text(i, 200_000)),
            is_error: false,
        });
        link.out
            .send(event_frame(&id, gseq + 1 + i, event))
            .unwrap();
    }
    acked(&mut link, gseq + n).await;
    let lagged_ms = ms(t0.elapsed());
    let (mut got, mut last) = (0u64, rows);
    let code = loop {
        let msg = tokio::time::timeout(DEADLINE, slow.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a readable frame");
        match msg {
            Message::Text(t) => {
                if let Some(seq) = event_seq(t.as_str()) {
                    got += 1;
                    last = seq;
                }
            }
            Message::Close(c) => break c.map(|c| u16::from(c.code)),
            _ => {}
        }
    };
    // How many frames reach the browser before the close varies: under
    // `wrangler dev` a local proxy between the browser and workerd buffers
    // what workerd sent (121, 146 and all 200 in three runs). What the
    // object promises is the close, and the resume.
    assert_eq!(code, Some(4000), "a stalled browser is closed as lagged");
    assert!(got <= n, "the stalled browser got {got} of {n} events");
    let mut resumed = connect(
        &format!("{ws_base}/api/sessions/{id}/ws?after={last}&compact=0"),
        Some((&cookie, &base)),
    )
    .await;
    let caught_up = if last < rows + n {
        read_replay(&mut resumed, rows + n).await
    } else {
        0
    };
    assert_eq!(
        last + caught_up,
        rows + n,
        "the resumed browser gets the rest"
    );
    let lagged = json!({"events": n, "bytes_sent": n * 200_000, "before_close": got,
        "resumed_with": caught_up, "ms": lagged_ms});

    // 5. GET /api/status, polled by every open UI: one gateway probe per
    // isolate per 3 s, whatever the number of calls.
    let before = gateway.hellos.load(Ordering::SeqCst);
    let mut status_ms = Vec::new();
    let t_all = Instant::now();
    for _ in 0..10 {
        let t0 = Instant::now();
        let r = http
            .get(format!("{base}/api/status"))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        let st: Value = r.json().await.unwrap();
        assert_eq!(st["gateway"]["connected"], true, "{st}");
        status_ms.push(ms(t0.elapsed()));
    }
    let probes = gateway.hellos.load(Ordering::SeqCst) - before;
    if t_all.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            probes, 1,
            "ten status calls within 3 s probe the gateway once"
        );
    }
    let status = json!({"calls": 10, "gateway_probes": probes,
        "first_ms": status_ms[0], "cached_median_ms": median(&status_ms[1..])});

    let cpu = wrangler.group_cpu().map(ms);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "bench": "do_path",
            "quick": quick,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "worker_build_s": built.as_secs(),
            "wrangler_ready_s": ready.as_secs_f64(),
            "latency": latency,
            "ingest_burst": ingest,
            "replay": replay,
            "stalled_browser": lagged,
            "status": status,
            "wrangler_cpu_ms": cpu,
        }))
        .unwrap()
    );
    drop(wrangler);
}
