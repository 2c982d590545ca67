//! The fault run's shared parts: a seeded random generator, the cutting
//! proxy (cuts, stalls and half-closes at seeded byte offsets), the
//! scripted clients (driver, observer, stale, slow reader) that reconnect
//! with `after=<seq>` and resend unconfirmed commands, and the checks of
//! every client's stream and every log. Used by `faults.rs` (the local
//! deployment) and `cloudflare_faults.rs` (the Durable Object under
//! `wrangler dev`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---------------------------------------------------------------- rng

/// xorshift64*: small, seeded, good enough to pick faults.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }
}

// ---------------------------------------------------------------- proxy

#[derive(Default)]
pub struct ProxyStats {
    pub conns: AtomicU64,
    pub cuts: AtomicU64,
    pub stalls: AtomicU64,
    pub half_closes: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Fault {
    Cut,
    Stall(u64),
    HalfClose,
}

/// One connection's faults: the next one fires once `at` bytes have gone
/// through (either way); a stall is followed by another roll further on.
pub struct Plan {
    pub rng: Rng,
    pub at: u64,
    pub max_offset: u64,
    pub moved: u64,
}

impl Plan {
    pub fn roll(&mut self) -> Option<Fault> {
        match self.rng.below(100) {
            0..25 => None,
            25..60 => Some(Fault::Cut),
            60..85 => Some(Fault::Stall(self.rng.range(50, 400))),
            _ => Some(Fault::HalfClose),
        }
    }
}

/// A TCP proxy that, while `active`, gives most connections one fault at a
/// random byte offset: a cut, a stall, or a half-close of one direction.
pub struct Proxy {
    pub addr: SocketAddr,
    pub target: Arc<Mutex<SocketAddr>>,
    pub active: Arc<AtomicBool>,
    pub stats: Arc<ProxyStats>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(target: SocketAddr, seed: u64, max_offset: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let active = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let (t, a, s) = (target.clone(), active.clone(), stats.clone());
        let task = tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                s.conns.fetch_add(1, Ordering::Relaxed);
                let mut prng = Rng::new(rng.next_u64());
                let plan = Arc::new(Mutex::new(Plan {
                    at: prng.below(max_offset),
                    rng: prng,
                    max_offset,
                    moved: 0,
                }));
                let target = *t.lock().unwrap();
                let (a, s) = (a.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(Ok(outbound)) =
                        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target))
                            .await
                    else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    let mut up = tokio::spawn(pump(ir, ow, plan.clone(), a.clone(), s.clone()));
                    let mut down = tokio::spawn(pump(or, iw, plan, a, s));
                    // A cut on either side ends both; otherwise each
                    // direction ends on its own EOF. After a half-close the
                    // other direction gets at most 2 s to wind down.
                    let first = tokio::select! {
                        r = &mut up => (r, true),
                        r = &mut down => (r, false),
                    };
                    let rest = if first.1 { &mut down } else { &mut up };
                    match first.0 {
                        Ok(End::Cut) | Err(_) => rest.abort(),
                        Ok(End::Eof) => {
                            if tokio::time::timeout(Duration::from_secs(30), &mut *rest)
                                .await
                                .is_err()
                            {
                                rest.abort();
                            }
                        }
                        Ok(End::HalfClosed) => {
                            if tokio::time::timeout(Duration::from_secs(2), &mut *rest)
                                .await
                                .is_err()
                            {
                                rest.abort();
                            }
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            target,
            active,
            stats,
            task,
        }
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }
}

pub enum End {
    Eof,
    Cut,
    HalfClosed,
}

pub async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    plan: Arc<Mutex<Plan>>,
    active: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
) -> End {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
        };
        let fault = {
            let mut p = plan.lock().unwrap();
            p.moved += n as u64;
            if p.moved >= p.at && active.load(Ordering::Relaxed) {
                let max = p.max_offset;
                p.at = p.moved + 1 + p.rng.below(max);
                p.roll()
            } else {
                None
            }
        };
        if let Some(fault) = fault {
            // Forward part of the chunk, then fail: the peer sees a frame
            // cut in the middle.
            let part = n / 2;
            match fault {
                Fault::Cut => {
                    let _ = w.write_all(&buf[..part]).await;
                    stats.cuts.fetch_add(1, Ordering::Relaxed);
                    return End::Cut;
                }
                Fault::HalfClose => {
                    let _ = w.write_all(&buf[..part]).await;
                    let _ = w.shutdown().await;
                    stats.half_closes.fetch_add(1, Ordering::Relaxed);
                    return End::HalfClosed;
                }
                Fault::Stall(ms) => {
                    stats.stalls.fetch_add(1, Ordering::Relaxed);
                    let _ = w.write_all(&buf[..part]).await;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if w.write_all(&buf[part..n]).await.is_err() {
                        return End::Eof;
                    }
                    continue;
                }
            }
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return End::Eof;
        }
    }
}

// ---------------------------------------------------------------- clients

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Role {
    Driver,
    Observer,
    Stale,
    Slow,
}

#[derive(Default, Debug)]
pub struct Conn {
    /// What the client had when it connected.
    pub have: u64,
    pub events: Vec<(u64, Value)>,
}

#[derive(Default, Debug)]
pub struct ClientLog {
    pub conns: Vec<Conn>,
    pub last: u64,
    pub lagged: u64,
    pub stale_reconnects: u64,
    pub failed_commands: Vec<Value>,
    pub answered: u64,
    pub answered_after_reconnect: u64,
}

/// Shared by all clients.
pub struct Ctx {
    pub browser: SocketAddr,
    pub direct: Arc<Mutex<String>>,
    pub cookie: String,
    /// The `Origin` clients on `browser` send: the configured public
    /// origin, or `None` for the server's own (`direct`; the local server
    /// accepts only its bound address, and the proxy is transparent).
    pub origin: Option<String>,
    /// Faults are on: drivers keep starting turns.
    pub chaos: AtomicBool,
    pub deadline: Instant,
    pub max_turns: u64,
}

/// What the driver tells the main task.
#[derive(Default)]
pub struct DriverState {
    pub sent: AtomicU64,
    pub ended: AtomicU64,
    pub outstanding: AtomicU64,
}

/// Opens the session stream; `small_buffer` shrinks the socket's receive
/// buffer so that a slow reader's backlog builds up on the server, not in
/// the kernel.
pub async fn connect(
    addr: &str,
    origin: &str,
    cookie: &str,
    session: &str,
    after: u64,
    small_buffer: bool,
) -> Option<Ws> {
    let url = format!("ws://{addr}/api/sessions/{session}/ws?after={after}&compact=0");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let open = async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        if small_buffer {
            socket.set_recv_buffer_size(4096).ok()?;
        }
        let stream = socket.connect(addr.parse().ok()?).await.ok()?;
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (w, _) = tokio_tungstenite::client_async(req, stream).await.ok()?;
        Some(w)
    };
    tokio::time::timeout(Duration::from_secs(3), open)
        .await
        .ok()
        .flatten()
}

pub fn answer_for(q: &Value) -> Value {
    let id = q["question_id"].clone();
    if q["kind"] == "ask_user" {
        let mut answers = serde_json::Map::new();
        for one in q["questions"].as_array().into_iter().flatten() {
            answers.insert(
                one["question"].as_str().unwrap().to_owned(),
                one["options"][0]["label"].clone(),
            );
        }
        json!({"type": "answer", "question_id": id, "decision": "answered", "answers": answers})
    } else {
        json!({"type": "answer", "question_id": id, "decision": "allow"})
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn client(
    ctx: Arc<Ctx>,
    session: String,
    role: Role,
    seed: u64,
    mut done: watch::Receiver<Option<u64>>,
    driver: Arc<DriverState>,
) -> ClientLog {
    let mut rng = Rng::new(seed);
    let mut log = ClientLog::default();
    let mut outstanding: BTreeMap<String, Value> = BTreeMap::new();
    let mut seen_questions: HashSet<String> = HashSet::new();
    let mut backoff = 10u64;
    loop {
        if done.borrow().is_some_and(|t| log.last >= t) || Instant::now() > ctx.deadline {
            return log;
        }
        let mut after = log.last;
        if role == Role::Stale && log.last > 0 && !log.conns.is_empty() && rng.below(2) == 0 {
            after = log.last - 1 - rng.below(log.last.min(30));
            log.stale_reconnects += 1;
        }
        // The slow reader talks to the orchestrator directly so that its
        // backlog is the server's, not the proxy's.
        let addr = if role == Role::Slow {
            ctx.direct.lock().unwrap().clone()
        } else {
            ctx.browser.to_string()
        };
        let origin = match &ctx.origin {
            Some(public) if role != Role::Slow => public.clone(),
            _ => format!("http://{}", ctx.direct.lock().unwrap()),
        };
        let Some(mut ws) = connect(
            &addr,
            &origin,
            &ctx.cookie,
            &session,
            after,
            role == Role::Slow,
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            backoff = (backoff * 2).min(300);
            continue;
        };
        backoff = 10;
        let reconnected = !log.conns.is_empty();
        log.conns.push(Conn {
            have: log.last,
            events: Vec::new(),
        });
        // Resend what was never confirmed (same ids: applied once).
        let mut broken = false;
        for (id, cmd) in &outstanding {
            let f = json!({"type": "command", "id": id, "command": cmd}).to_string();
            if ws.send(Message::text(f)).await.is_err() {
                broken = true;
            }
        }
        let mut quiet_since = Instant::now();
        while !broken {
            if done.borrow().is_some_and(|t| log.last >= t) {
                return log;
            }
            if role == Role::Slow && ctx.chaos.load(Ordering::Relaxed) {
                // Reads far slower than the session writes: now and then
                // it stops reading for a while.
                let pause = if rng.below(100) == 0 { 1500 } else { 80 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = done.changed() => continue,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    // Once the run is draining, a connection that says
                    // nothing for 3 s (a stalled half-closed link) is
                    // replaced.
                    if done.borrow().is_some() && quiet_since.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                    continue;
                }
            };
            quiet_since = Instant::now();
            let text = match frame {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(Some(c)))) => {
                    if u16::from(c.code) == 4000 {
                        log.lagged += 1;
                    }
                    break;
                }
                Some(Ok(_)) => continue,
                _ => break,
            };
            let f: Value = serde_json::from_str(text.as_str()).unwrap();
            let mut to_send = Vec::new();
            match f["type"].as_str() {
                Some("snapshot") if role == Role::Driver => {
                    for q in f["pending"].as_array().into_iter().flatten() {
                        let qid = q["question_id"].as_str().unwrap().to_owned();
                        if seen_questions.insert(qid.clone()) || reconnected {
                            to_send.push((format!("ans-{qid}"), answer_for(q)));
                            if reconnected {
                                log.answered_after_reconnect += 1;
                            }
                        }
                    }
                }
                Some("event") => {
                    let seq = f["seq"].as_u64().unwrap();
                    log.conns
                        .last_mut()
                        .unwrap()
                        .events
                        .push((seq, f["event"].clone()));
                    if seq > log.last {
                        log.last = seq;
                        let e = &f["event"];
                        if role == Role::Driver {
                            match e["type"].as_str() {
                                Some("user_question") => {
                                    let qid = e["question_id"].as_str().unwrap().to_owned();
                                    if seen_questions.insert(qid.clone()) {
                                        to_send.push((format!("ans-{qid}"), answer_for(e)));
                                    }
                                }
                                Some("result") | Some("error") => {
                                    let ended = driver.ended.fetch_add(1, Ordering::Relaxed) + 1;
                                    if ctx.chaos.load(Ordering::Relaxed)
                                        && ended < ctx.max_turns
                                        && driver.sent.load(Ordering::Relaxed) <= ended
                                    {
                                        driver.sent.fetch_add(1, Ordering::Relaxed);
                                        to_send.push((
                                            format!("msg-{ended}"),
                                            json!({"type": "message", "text": format!("go on ({ended})")}),
                                        ));
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                Some("command_result") => {
                    let id = f["id"].as_str().unwrap_or_default();
                    if outstanding.remove(id).is_some() {
                        if id.starts_with("ans-") {
                            log.answered += 1;
                        }
                        if f["ok"] == false && f["error"]["code"] != "already_decided" {
                            log.failed_commands.push(f.clone());
                        }
                    }
                }
                _ => {}
            }
            for (id, cmd) in to_send {
                outstanding.insert(id.clone(), cmd.clone());
                let f = json!({"type": "command", "id": id, "command": cmd}).to_string();
                if ws.send(Message::text(f)).await.is_err() {
                    broken = true;
                }
            }
            driver
                .outstanding
                .store(outstanding.len() as u64, Ordering::Relaxed);
        }
        driver
            .outstanding
            .store(outstanding.len() as u64, Ordering::Relaxed);
    }
}

/// Reads a session's whole log from a fresh client (directly, no faults):
/// the snapshot, then every event up to its `last_seq`.
pub async fn full_log(base: &str, cookie: &str, session: &str) -> (Value, Vec<Value>) {
    full_log_via(base.trim_start_matches("http://"), base, cookie, session).await
}

/// [`full_log`] from `addr`, sending `origin` as the `Origin`.
pub async fn full_log_via(
    addr: &str,
    origin: &str,
    cookie: &str,
    session: &str,
) -> (Value, Vec<Value>) {
    let mut ws = connect(addr, origin, cookie, session, 0, false)
        .await
        .expect("a direct connection");
    let mut snapshot = Value::Null;
    let mut events = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("the full log in time")
            .expect("open")
            .expect("no error");
        let Message::Text(t) = m else { continue };
        let f: Value = serde_json::from_str(t.as_str()).unwrap();
        match f["type"].as_str() {
            Some("snapshot") => snapshot = f,
            Some("event") => {
                assert_eq!(
                    f["seq"].as_u64().unwrap(),
                    events.len() as u64 + 1,
                    "the full log is dense"
                );
                events.push(f["event"].clone());
            }
            _ => {}
        }
        if !snapshot.is_null() && events.len() as u64 >= snapshot["last_seq"].as_u64().unwrap() {
            return (snapshot, events);
        }
    }
}

#[derive(Default, Debug)]
pub struct Counts {
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub mismatched: u64,
    pub stale_replayed: u64,
    pub delivered: u64,
}

/// Compares one client's connections with the log.
pub fn check(log: &[Value], c: &ClientLog, counts: &mut Counts) {
    let mut seen: HashSet<u64> = HashSet::new();
    for conn in &c.conns {
        // The first event of a connection follows `after`, which is `have`
        // except for stale reconnects (lower, and then replays are asked).
        let mut prev: Option<u64> = None;
        for (seq, event) in &conn.events {
            counts.delivered += 1;
            if let Some(p) = prev {
                if *seq <= p {
                    counts.reordered += 1;
                } else if *seq > p + 1 {
                    counts.lost += seq - p - 1;
                }
            } else if *seq > conn.have + 1 {
                counts.lost += seq - conn.have - 1;
            }
            prev = Some(prev.map_or(*seq, |p| p.max(*seq)));
            match log.get(*seq as usize - 1) {
                Some(e) if e == event => {}
                _ => counts.mismatched += 1,
            }
            if *seq <= conn.have {
                counts.stale_replayed += 1;
            } else if !seen.insert(*seq) {
                counts.duplicated += 1;
            }
        }
    }
    let missing = (1..=log.len() as u64).filter(|s| !seen.contains(s)).count();
    counts.lost += missing as u64;
}

/// What the executors produced, checked in the log: every streamed message
/// whose final text arrived has deltas that add up to it, every question is
/// resolved, every user message is followed by the end of its turn.
/// What one session's log shows, beyond its own checks.
#[derive(Debug, Default)]
pub struct LogFigures {
    /// Turns started by a `user.message` that ended.
    pub turns: u64,
    /// Questions asked.
    pub questions: u64,
    /// The last turn never ended.
    pub open_turn: bool,
    /// Commands a restarted gateway ran again (its `notice` events).
    pub reruns: u64,
    /// Turns a gateway restart ended with `gateway_restarted`.
    pub restart_errors: u64,
    /// The agent's work logged while the session's state read `paused idle`.
    pub work_while_idle: u64,
    /// The log around the first such event, to show when the run fails.
    pub idle_context: Option<String>,
}

/// Checks one log: deltas add up to their final message, every question is
/// resolved; and counts its turns and what gateway restarts did to it.
pub fn check_log(log: &[Value]) -> LogFigures {
    let mut deltas: HashMap<String, String> = HashMap::new();
    let mut questions: BTreeMap<String, bool> = BTreeMap::new();
    let mut f = LogFigures::default();
    let mut idle = false;
    for (i, e) in log.iter().enumerate() {
        match e["type"].as_str() {
            Some("assistant") => {
                let id = e["message_id"].as_str().unwrap().to_owned();
                let text = e["text"].as_str().unwrap();
                if e["phase"] == "delta" {
                    deltas.entry(id).or_default().push_str(text);
                } else if let Some(d) = deltas.get(&id) {
                    assert_eq!(d, text, "deltas add up to the final message {id}");
                }
            }
            Some("user_question") => {
                questions.insert(e["question_id"].as_str().unwrap().to_owned(), false);
            }
            Some("question.resolved") => {
                questions.insert(e["question_id"].as_str().unwrap().to_owned(), true);
            }
            Some("user.message") => f.open_turn = true,
            Some("result") | Some("error") => {
                if f.open_turn {
                    f.turns += 1;
                }
                f.open_turn = false;
                if e["code"] == "gateway_restarted" {
                    f.restart_errors += 1;
                }
            }
            Some("session.state") => idle = e["state"] == "paused" && e["reason"] == "idle",
            Some("notice") if e["code"] == "rerun_after_restart" => f.reruns += 1,
            _ => {}
        }
        if idle
            && matches!(
                e["type"].as_str(),
                Some("assistant" | "tool_use" | "tool_result" | "user_question")
            )
        {
            f.work_while_idle += 1;
            if f.idle_context.is_none() {
                let lines: Vec<String> = log[i.saturating_sub(40)..=i]
                    .iter()
                    .zip(i.saturating_sub(40) + 1..)
                    .filter(|(e, _)| e["phase"] != "delta")
                    .map(|(e, seq)| {
                        format!("    {seq} {} {} {}", e["type"], e["state"], e["reason"])
                    })
                    .collect();
                f.idle_context = Some(lines.join("\n"));
            }
        }
    }
    let unresolved: Vec<_> = questions.iter().filter(|(_, r)| !**r).collect();
    assert!(
        unresolved.is_empty(),
        "unresolved questions: {unresolved:?}"
    );
    f.questions = questions.len() as u64;
    f
}

// ---------------------------------------------------------------- the run, on any host

/// The clients of a fault run, spawned by [`spawn_clients`].
pub struct Clients {
    /// Per session: the length of its final log, once it is known.
    pub done: Vec<watch::Sender<Option<u64>>>,
    /// Per session: its driver's counters.
    pub drivers: Vec<Arc<DriverState>>,
    /// `(session index, role, task)` of every client.
    pub tasks: Vec<(usize, Role, tokio::task::JoinHandle<ClientLog>)>,
    /// How many clients watch session 0.
    pub crowd: usize,
}

/// Spawns the clients of sessions `ids`: a driver, an observer and a stale
/// client each, and on session 0 `crowd - 3` more observers (and the slow
/// reader when `slow`). Each takes its seed from `rng`, in that order.
pub fn spawn_clients(
    ctx: &Arc<Ctx>,
    ids: &[String],
    rng: &mut Rng,
    crowd: usize,
    slow: bool,
) -> Clients {
    let mut c = Clients {
        done: Vec::new(),
        drivers: Vec::new(),
        tasks: Vec::new(),
        crowd: 0,
    };
    for (i, id) in ids.iter().enumerate() {
        let (tx, rx) = watch::channel(None::<u64>);
        c.done.push(tx);
        let state = Arc::new(DriverState {
            sent: AtomicU64::new(1),
            ..DriverState::default()
        });
        c.drivers.push(state.clone());
        let mut roles = vec![Role::Driver, Role::Observer, Role::Stale];
        if i == 0 {
            if slow {
                roles.push(Role::Slow);
            }
            roles.extend(std::iter::repeat_n(Role::Observer, crowd.saturating_sub(3)));
        }
        for role in roles {
            let s = if role == Role::Driver {
                state.clone()
            } else {
                Arc::new(DriverState::default())
            };
            c.tasks.push((
                i,
                role,
                tokio::spawn(client(
                    ctx.clone(),
                    id.clone(),
                    role,
                    rng.next_u64(),
                    rx.clone(),
                    s,
                )),
            ));
        }
    }
    c.crowd = c.tasks.iter().filter(|(i, _, _)| *i == 0).count();
    c
}

/// What every client and every log of a fault run showed.
#[derive(Default, Debug)]
pub struct Outcome {
    pub counts: Counts,
    pub clients: usize,
    pub lagged: u64,
    pub stale: u64,
    pub answered: u64,
    pub answered_late: u64,
    /// Commands answered `ok: false`.
    pub failed: Vec<Value>,
    /// Clients that never got to the end of their session's log.
    pub short: Vec<String>,
    pub turns: u64,
    pub questions: u64,
    pub open_turns: u64,
    pub reruns: u64,
    pub restart_errors: u64,
    pub work_while_idle: u64,
    /// The log around the agent's work while idle, per session that had it.
    pub idle_contexts: Vec<String>,
    /// Events in every log.
    pub events: usize,
}

/// Waits (within `within` each) for every client to drain up to its
/// session's final log in `logs` (the caller has sent each length on
/// [`Clients::done`]), and checks each client's stream and each log.
pub async fn drain_and_check(
    tasks: Vec<(usize, Role, tokio::task::JoinHandle<ClientLog>)>,
    logs: &[Vec<Value>],
    within: Duration,
) -> Outcome {
    let mut o = Outcome::default();
    for (i, role, task) in tasks {
        let c = tokio::time::timeout(within, task)
            .await
            .expect("every client drains in time")
            .unwrap();
        o.clients += 1;
        if c.last < logs[i].len() as u64 {
            o.short.push(format!(
                "session {i} {role:?}: has {} of {}",
                c.last,
                logs[i].len()
            ));
        }
        check(&logs[i], &c, &mut o.counts);
        o.lagged += c.lagged;
        o.stale += c.stale_reconnects;
        o.answered += c.answered;
        o.answered_late += c.answered_after_reconnect;
        o.failed.extend(c.failed_commands);
    }
    for (i, log) in logs.iter().enumerate() {
        let f = check_log(log);
        o.turns += f.turns;
        o.questions += f.questions;
        o.open_turns += u64::from(f.open_turn);
        o.reruns += f.reruns;
        o.restart_errors += f.restart_errors;
        o.work_while_idle += f.work_while_idle;
        if let Some(c) = f.idle_context {
            o.idle_contexts.push(format!("session {i}:\n{c}"));
        }
    }
    o.events = logs.iter().map(Vec::len).sum();
    o
}

impl Outcome {
    /// Prints the losses and fails the run unless every client got every
    /// event once, in order, every command succeeded, and the agent never
    /// worked while a session read idle.
    pub fn assert_nothing_lost(&self, seed: u64) {
        let c = &self.counts;
        println!(
            "lost {}, duplicated {}, reordered {}, mismatched {}",
            c.lost, c.duplicated, c.reordered, c.mismatched
        );
        assert_eq!(
            self.work_while_idle,
            0,
            "seed {seed}: the agent worked while the session read idle:\n{}",
            self.idle_contexts.join("\n")
        );
        assert!(
            self.short.is_empty(),
            "seed {seed}: clients short of the log: {:?}",
            self.short
        );
        assert!(
            self.failed.is_empty(),
            "seed {seed}: failed commands: {:?}",
            self.failed
        );
        assert_eq!(
            (c.lost, c.duplicated, c.reordered, c.mismatched),
            (0, 0, 0, 0),
            "seed {seed}"
        );
    }
}

/// A proxy's connections, cuts, stalls and half-closes so far.
pub fn proxy_figures(s: &ProxyStats) -> (u64, u64, u64, u64) {
    (
        s.conns.load(Ordering::Relaxed),
        s.cuts.load(Ordering::Relaxed),
        s.stalls.load(Ordering::Relaxed),
        s.half_closes.load(Ordering::Relaxed),
    )
}
