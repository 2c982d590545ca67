//! The fault run, written once and run against any [`Host`]: scripted
//! sessions with cutting proxies on both links (browsers → host, host →
//! gateway), drivers, observers, stale clients, a crowd on one session
//! (and a slow reader where the host has a live queue to overflow), while
//! the gateway is SIGKILLed, the host is restarted with a session parked
//! on an approval (still pending after it, then answered) and the host is
//! crashed. Where the plan asks, one of the sessions is run by an ACP
//! agent (the in-repo `duraclaw-acp-script`), which is also SIGKILLed on
//! its own. Then every session settles, is closed, and every client's
//! stream is checked against the log: lost, duplicated, reordered and
//! mismatched all 0, every question resolved, every turn ended.
//!
//! `DURACLAW_FAULT_SEED=N` picks the seed (printed); `DURACLAW_SOAK_SECS=N`
//! makes the faults last N seconds (the host restarted in the first cycle
//! only) and reports the host's memory growth where it has a process of
//! its own.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::faults::{
    Ctx, Proxy, Rng, answer_for, check_log, connect, drain_and_check, full_log_via, proxy_figures,
    spawn_clients,
};
use crate::free_port;
use crate::host::{DEADLINE, Host, Options, http, login};

const PASSWORD: &str = "fault run password 0123456789";

/// What differs between hosts' runs: sizes and bounds, never the steps.
pub struct Plan {
    /// The seed unless `DURACLAW_FAULT_SEED` says otherwise.
    pub default_seed: u64,
    /// Sessions driven through the faults.
    pub sessions: usize,
    /// Clients on session 0.
    pub crowd: usize,
    /// How long faults last at least (a cycle of process faults, and 4 s
    /// after the last one).
    pub chaos: Duration,
    /// A client that reads far slower than the session writes, straight
    /// to the host, whose catch-ups by replay the host counts in
    /// `/api/status` (`stats.slow_client_catch_ups`).
    pub slow_reader: bool,
    /// How long the sessions may take to settle once faults stop.
    pub settle: Duration,
    /// More `duraclaw orchestrator` arguments (local only).
    pub orchestrator_args: Vec<String>,
    /// One more driven session, run by the ACP agent `acp` (the in-repo
    /// scripted agent playing the run's turns), and a fault that SIGKILLs
    /// that agent.
    pub acp_session: bool,
}

/// The worktree of the ACP session.
const ACP_WORKTREE: &str = "faultacp";

/// [`script`]'s turns for the scripted ACP agent (its step names), its
/// state (turn count, sessions) kept in `state_dir` so that a restarted
/// agent loads its session and goes on.
fn acp_script(state_dir: &std::path::Path) -> String {
    let turn = |n: usize| {
        json!([
            {"do": "text", "text": format!("Turn {n}: looking at the project, piece by piece, so that the stream has many small deltas."), "chunks": 24},
            {"do": "tool", "title": "Bash", "kind": "execute", "input": {"command": format!("ls {n}")}, "result": "README.md\nsrc"},
            {"do": "ask", "question": "Which change?", "options": ["Add a test", "Fix a typo"]},
            {"do": "text", "text": format!("Turn {n} done."), "chunks": 4}
        ])
    };
    json!({
        "load_session": true,
        "state_dir": state_dir,
        "turns": (0..30).map(turn).collect::<Vec<_>>(),
    })
    .to_string()
}

/// The agents file naming the scripted ACP agent `acp` (its script and
/// state under `dir`, which marks its processes).
fn acp_agents(dir: &std::path::Path) -> String {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let script = dir.join("script.json");
    std::fs::write(&script, acp_script(&state)).unwrap();
    json!({"agents": [{
        "name": "acp",
        "title": "Scripted ACP agent",
        "command": crate::acp_script_bin(),
        "args": [script],
        "supports": {"resume": true},
    }]})
    .to_string()
}

/// SIGKILLs every process whose command line names `marker`; how many.
fn kill_marked(marker: &str) -> usize {
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if crate::wrangler::cmdline(pid).is_some_and(|c| c.contains(marker)) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            killed += 1;
        }
    }
    killed
}

/// Turns that stream many small deltas, ask for a tool approval and ask a
/// question; prompts past the script (and a resumed session's) get short
/// echo turns.
fn script() -> String {
    let turn = |n: usize| {
        json!([
            {"step": "text", "text": format!("Turn {n}: looking at the project, piece by piece, so that the stream has many small deltas."), "chunks": 24, "delay_ms": 8},
            {"step": "tool", "name": "Bash", "input": {"command": format!("ls {n}")}, "result": "README.md\nsrc"},
            {"step": "ask", "questions": [{"question": "Which change?", "header": "Change", "options": [{"label": "Add a test"}, {"label": "Fix a typo"}], "multiSelect": false}]},
            {"step": "text", "text": format!("Turn {n} done."), "chunks": 4, "delay_ms": 10}
        ])
    };
    json!({"turns": (0..30).map(turn).collect::<Vec<_>>()}).to_string()
}

/// The worktree of driven session `i`.
fn session_worktree(i: usize) -> String {
    format!("fault{i}")
}

/// A worktree the run leaves unused, for a host's own phase after it.
pub const SPARE_WORKTREE: &str = "spare";
const PARKED_WORKTREE: &str = "parked";

/// A finished run: its host (still up), its user's login and sessions.
pub struct Run<H> {
    pub host: H,
    pub seed: u64,
    /// The login of `alice`, who owns every session of the run.
    pub cookie: String,
    /// The driven sessions, all closed.
    pub ids: Vec<String>,
    /// The proxies stay (inactive) while the host does: its gateway link
    /// goes through one.
    _proxies: (Proxy, Proxy),
    /// The ACP agent's script and state.
    _acp: Option<tempfile::TempDir>,
}

impl<H: Host> Run<H> {
    /// The path of [`SPARE_WORKTREE`].
    pub fn spare_worktree(&self) -> String {
        worktree(&self.host, SPARE_WORKTREE)
    }
}

fn worktree(h: &dyn Host, name: &str) -> String {
    h.root().join("projects").join(name).display().to_string()
}

/// `GET path` on the host with `cookie`: the JSON body, or `Null` when the
/// host does not answer.
async fn get(h: &dyn Host, cookie: &str, path: &str) -> Value {
    let r = http()
        .get(format!("{}{path}", h.base()))
        .header("cookie", cookie)
        .send()
        .await;
    match r {
        Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Creates a session in worktree `name`; a refusal while the gateway link
/// is cut (a 5xx) is tried again, within [`DEADLINE`]. The id and how many
/// tries were refused.
async fn create(h: &dyn Host, cookie: &str, name: &str, prompt: &str) -> (String, u64) {
    create_for(h, cookie, name, prompt, None).await
}

/// [`create`], run by `agent` (the built-in one when `None`).
async fn create_for(
    h: &dyn Host,
    cookie: &str,
    name: &str,
    prompt: &str,
    agent: Option<&str>,
) -> (String, u64) {
    let until = Instant::now() + DEADLINE;
    let mut refused = 0;
    let mut body = json!({"worktree": worktree(h, name), "prompt": prompt});
    if let Some(agent) = agent {
        body["agent"] = json!(agent);
    }
    loop {
        let r = http()
            .post(format!("{}/api/sessions", h.base()))
            .header("origin", h.origin())
            .header("cookie", cookie)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status == 201 {
            return (body["session_id"].as_str().unwrap().to_owned(), refused);
        }
        assert!(
            status >= 500 && Instant::now() < until,
            "creating a session in {name}: {status} {body}\n{}",
            h.log_tails()
        );
        refused += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Closes session `id` and reads its whole log from a fresh client: the
/// session ended (terminated) with nothing pending.
async fn close_and_read(h: &dyn Host, cookie: &str, id: &str) -> Vec<Value> {
    let r = http()
        .post(format!("{}/api/sessions/{id}/close", h.base()))
        .header("origin", h.origin())
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "closing {id}");
    let (snapshot, log) = full_log(h, cookie, id).await;
    assert_eq!(snapshot["state"], "terminated", "{snapshot}");
    assert_eq!(snapshot["pending"], json!([]), "{snapshot}");
    log
}

async fn full_log(h: &dyn Host, cookie: &str, id: &str) -> (Value, Vec<Value>) {
    full_log_via(
        h.base().trim_start_matches("http://"),
        h.origin(),
        cookie,
        id,
    )
    .await
}

/// Answers every pending and new question of session `id` (allow, first
/// option) until its turn's `result`; how many questions it answered.
pub async fn finish_turn(h: &dyn Host, cookie: &str, id: &str) -> u64 {
    let addr = h.base().trim_start_matches("http://");
    let mut ws = connect(addr, h.origin(), cookie, id, 0, false)
        .await
        .expect("a connection to finish the turn");
    let until = Instant::now() + DEADLINE;
    let mut answered = std::collections::HashSet::new();
    loop {
        let m = tokio::time::timeout_at(until, ws.next())
            .await
            .unwrap_or_else(|_| panic!("the turn of {id} never ended"))
            .expect("open")
            .expect("no error");
        let Message::Text(t) = m else { continue };
        let f: Value = serde_json::from_str(t.as_str()).unwrap();
        let questions: Vec<Value> = match f["type"].as_str() {
            Some("snapshot") => f["pending"].as_array().cloned().unwrap_or_default(),
            Some("event") if f["event"]["type"] == "user_question" => vec![f["event"].clone()],
            Some("event") if f["event"]["type"] == "result" => break,
            _ => continue,
        };
        for q in questions {
            let qid = q["question_id"].as_str().unwrap().to_owned();
            if answered.insert(qid.clone()) {
                let cmd =
                    json!({"type": "command", "id": format!("a-{qid}"), "command": answer_for(&q)});
                ws.send(Message::text(cmd.to_string())).await.unwrap();
            }
        }
    }
    answered.len() as u64
}

/// The process faults of one cycle, each after a seeded pause.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The host stopped and started (with a session parked on an approval
    /// in the first cycle).
    Restart,
    /// The gateway SIGKILLed and started again.
    GatewayKill,
    /// The host crashed and started again.
    Crash,
    /// The ACP session's agent SIGKILLed (alone: the gateway stays).
    AgentKill,
}

/// Runs the fault run on the host `start` brings up with the run's
/// [`Options`] (fixed ports, both links through the run's proxies, the
/// run's script and worktrees); panics on anything lost, duplicated or
/// reordered. Returns the host, still up, for a phase of its own.
pub async fn run<H, S, F>(plan: Plan, start: S) -> Run<H>
where
    H: Host,
    S: FnOnce(Options) -> F,
    F: Future<Output = H>,
{
    let soak: Option<u64> = std::env::var("DURACLAW_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    let seed: u64 = std::env::var("DURACLAW_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(plan.default_seed);
    let chaos = soak.map_or(plan.chaos, Duration::from_secs);
    let mut rng = Rng::new(seed);
    let started = Instant::now();

    // Both links through a cutting proxy; the host on fixed ports behind
    // them, so a restarted host is where the proxies point.
    let (port, gateway_port) = (free_port(), free_port());
    let gw_proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], gateway_port)),
        rng.next_u64(),
        16 * 1024,
    )
    .await;
    let browser_proxy = Proxy::start(
        SocketAddr::from(([127, 0, 0, 1], port)),
        rng.next_u64(),
        8 * 1024,
    )
    .await;
    let mut worktrees: Vec<String> = (0..plan.sessions).map(session_worktree).collect();
    worktrees.extend([PARKED_WORKTREE.to_owned(), SPARE_WORKTREE.to_owned()]);
    // The ACP agent's script and state, whose path marks its processes.
    let acp_dir = plan.acp_session.then(|| tempfile::tempdir().unwrap());
    let acp_marker = acp_dir.as_ref().map(|d| d.path().display().to_string());
    if plan.acp_session {
        worktrees.push(ACP_WORKTREE.to_owned());
    }
    let h = start(Options {
        script: Some(script()),
        worktrees,
        port: Some(port),
        gateway_port: Some(gateway_port),
        gateway_via: Some(gw_proxy.addr),
        public_origin: Some(format!("http://{}", browser_proxy.addr)),
        orchestrator_args: plan.orchestrator_args.clone(),
        log: Some("error".into()),
        push_ca: None,
        agents: acp_dir.as_ref().map(|d| acp_agents(d.path())),
    })
    .await;
    let name = h.name();
    println!("{name} fault run: seed {seed}, faults for {chaos:.0?} at least");
    let ready = started.elapsed();

    h.add_user("alice", PASSWORD).await;
    let cookie = login(&h, "alice", PASSWORD).await;
    let until = Instant::now() + DEADLINE;
    while get(&h, &cookie, "/api/status").await["gateway"]["connected"] != true {
        assert!(Instant::now() < until, "the gateway never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ids = Vec::new();
    for i in 0..plan.sessions {
        ids.push(
            create(&h, &cookie, &session_worktree(i), "look around")
                .await
                .0,
        );
    }
    if plan.acp_session {
        let (id, _) = create_for(&h, &cookie, ACP_WORKTREE, "look around", Some("acp")).await;
        ids.push(id);
    }

    let ctx = Arc::new(Ctx {
        browser: browser_proxy.addr,
        direct: Arc::new(Mutex::new(
            h.base().trim_start_matches("http://").to_owned(),
        )),
        cookie: cookie.clone(),
        origin: Some(h.origin().to_owned()),
        chaos: AtomicBool::new(true),
        deadline: Instant::now() + chaos + Duration::from_secs(240),
        max_turns: u64::MAX,
    });
    let clients = spawn_clients(&ctx, &ids, &mut rng, plan.crowd, plan.slow_reader);
    let (done_txs, drivers, crowd) = (clients.done, clients.drivers, clients.crowd);

    browser_proxy.active.store(true, Ordering::Relaxed);
    gw_proxy.active.store(true, Ordering::Relaxed);
    let chaos_start = Instant::now();
    let chaos_end = chaos_start + chaos;
    let progress = |what: &str| {
        let ended: u64 = drivers
            .iter()
            .map(|d| d.ended.load(Ordering::Relaxed))
            .sum();
        eprintln!(
            "{:>5.1} s: {what} (turns ended so far {ended})",
            chaos_start.elapsed().as_secs_f64()
        );
    };
    let (mut gw_kills, mut restarts, mut crashes, mut agent_kills) = (0u64, 0u64, 0u64, 0u64);
    let mut acp_killed_at: Option<usize> = None;
    let (mut parked, mut parked_refused, mut parked_answers) = (String::new(), 0u64, 0u64);
    let mut pending_at_restart = 0u64;
    // The host's counter goes with a restart: kept before each.
    let mut catch_ups = 0u64;
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let mut cycle = 0u64;
    'chaos: loop {
        // The restart comes before any gateway SIGKILL: until the first
        // one every turn follows the script (a restarted gateway resumes
        // sessions, which get echo turns), so the parked session asks for
        // approval. Before both, the ACP agent dies, while its session has
        // run steadily since it started (the agent surely up).
        let mut faults = Vec::new();
        if acp_marker.is_some() {
            faults.push((rng.range(800, 1_500), Fault::AgentKill));
        }
        faults.extend([
            (rng.range(1_000, 2_500), Fault::Restart),
            (rng.range(1_500, 3_000), Fault::GatewayKill),
            (rng.range(1_500, 3_000), Fault::Crash),
            (rng.range(1_500, 3_000), Fault::GatewayKill),
        ]);
        for (ms, fault) in faults {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if cycle > 0 && Instant::now() >= chaos_end {
                break 'chaos;
            }
            // In a soak the host restarts in the first cycle only, so that
            // its memory growth is measured over the rest.
            if soak.is_some()
                && cycle > 0
                && !matches!(fault, Fault::GatewayKill | Fault::AgentKill)
            {
                continue;
            }
            progress(&format!("{fault:?}"));
            match fault {
                Fault::GatewayKill => {
                    h.kill_gateway().await;
                    gw_kills += 1;
                    h.start_gateway().await;
                }
                Fault::AgentKill => {
                    // Where the ACP session's log was when its agent died.
                    let acp_id = ids.last().unwrap();
                    let at = full_log(&h, &cookie, acp_id).await.1.len();
                    let marker = acp_marker.as_deref().unwrap_or_default();
                    if kill_marked(marker) > 0 {
                        agent_kills += 1;
                        acp_killed_at.get_or_insert(at);
                    }
                }
                Fault::Restart | Fault::Crash => {
                    if matches!(fault, Fault::Restart) && cycle == 0 {
                        // A session parked on an approval, with no browser:
                        // it must come back from the restart still
                        // waiting, and be answerable.
                        let (id, refused) = create(&h, &cookie, PARKED_WORKTREE, "park").await;
                        (parked, parked_refused) = (id, refused);
                        let until = Instant::now() + DEADLINE;
                        let path = format!("/api/sessions/{parked}");
                        while get(&h, &cookie, &path).await["pending_questions"] != 1 {
                            assert!(Instant::now() < until, "the parked session never asked");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        // Every approval and question pending now (the
                        // parked one and the drivers') must survive the
                        // restart and be answered after it (the logs say).
                        let list = get(&h, &cookie, "/api/sessions").await;
                        pending_at_restart += list
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| s["pending_questions"].as_u64().unwrap_or(0))
                            .sum::<u64>();
                    }
                    let st = get(&h, &cookie, "/api/status").await;
                    catch_ups += st["stats"]["slow_client_catch_ups"].as_u64().unwrap_or(0);
                    let t = Instant::now();
                    if matches!(fault, Fault::Restart) {
                        h.restart_host().await;
                        restarts += 1;
                    } else {
                        h.crash_host().await;
                        crashes += 1;
                    }
                    rss.clear();
                    progress(&format!("the host is back after {:.1?}", t.elapsed()));
                    if matches!(fault, Fault::Restart) && cycle == 0 {
                        // Still pending throughout; waiting for it again
                        // once the gateway link is back (through its cuts).
                        let until = Instant::now() + DEADLINE;
                        loop {
                            let m = get(&h, &cookie, &format!("/api/sessions/{parked}")).await;
                            assert_eq!(
                                (&m["state"], &m["pending_questions"]),
                                (&json!("paused"), &json!(1)),
                                "the parked approval after the restart: {m}"
                            );
                            if m["reason"] == "awaiting_approval" {
                                break;
                            }
                            assert!(
                                m["reason"] == "gateway_unreachable" && Instant::now() < until,
                                "the parked approval after the restart: {m}"
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        // Answered now, before a gateway SIGKILL withdraws
                        // it: its turn goes on to its end.
                        parked_answers = finish_turn(&h, &cookie, &parked).await;
                        progress("the parked approval answered, its turn ended");
                        assert!(parked_answers >= 2, "the parked approval and the question");
                    }
                }
            }
            if let Some(kib) = h.rss_kib() {
                rss.push((started.elapsed().as_secs_f64(), kib));
            }
        }
        cycle += 1;
        // One cycle, unless a soak asks for more.
        if soak.is_none() || Instant::now() >= chaos_end {
            break;
        }
    }
    // The last fault's effects play out under faults too.
    tokio::time::sleep_until(chaos_end.max(Instant::now() + Duration::from_secs(4))).await;
    progress("faults end");
    let chaos_secs = chaos_start.elapsed().as_secs_f64();
    ctx.chaos.store(false, Ordering::Relaxed);
    browser_proxy.active.store(false, Ordering::Relaxed);
    gw_proxy.active.store(false, Ordering::Relaxed);

    // Settle: the gateway is back, every driver has seen the end of every
    // turn it started and has nothing unconfirmed, and every session is
    // idle with no open question. A session whose turn started but never
    // ended (state `active`, nothing unconfirmed, nothing pending) without
    // faults is a stuck turn: printed with its log's tail, it fails the run.
    let until = Instant::now() + plan.settle;
    let mut stuck: Vec<String> = Vec::new();
    loop {
        let connected = get(&h, &cookie, "/api/status").await["gateway"]["connected"] == true;
        let mut unsettled = Vec::new();
        let mut all_stuck = connected;
        for (d, id) in drivers.iter().zip(&ids) {
            let m = get(&h, &cookie, &format!("/api/sessions/{id}")).await;
            let (sent, ended, out) = (
                d.sent.load(Ordering::Relaxed),
                d.ended.load(Ordering::Relaxed),
                d.outstanding.load(Ordering::Relaxed),
            );
            let settled = ended >= sent
                && out == 0
                && m["state"] == "paused"
                && m["reason"] == "idle"
                && m["pending_questions"] == 0;
            if !settled {
                all_stuck &= out == 0
                    && ended < sent
                    && (m["state"] == "active" || m["reason"] == "idle")
                    && m["pending_questions"] == 0;
                unsettled.push((
                    id.clone(),
                    format!(
                        "{id}: sent {sent} ended {ended} outstanding {out} state {} {} pending {}",
                        m["state"], m["reason"], m["pending_questions"]
                    ),
                ));
            }
        }
        if connected && unsettled.is_empty() {
            break;
        }
        if Instant::now() > until {
            if all_stuck {
                for (id, w) in unsettled {
                    let (_, log) = full_log(&h, &cookie, &id).await;
                    let end = log
                        .iter()
                        .rposition(|e| e["type"] == "result" || e["type"] == "error")
                        .unwrap_or(0);
                    let tail: Vec<String> = log
                        .iter()
                        .enumerate()
                        .skip(end)
                        .filter(|(_, e)| e["phase"] != "delta")
                        .map(|(i, e)| {
                            format!("    {} {} {} {}", i + 1, e["type"], e["state"], e["reason"])
                        })
                        .collect();
                    stuck.push(format!("{w}\n{}", tail.join("\n")));
                }
                break;
            }
            let mut why: Vec<String> = unsettled.into_iter().map(|(_, w)| w).collect();
            for id in &ids {
                let (snap, log) = full_log(&h, &cookie, id).await;
                let tail: Vec<String> = log
                    .iter()
                    .enumerate()
                    .skip(log.len().saturating_sub(14))
                    .filter(|(_, e)| e["phase"] != "delta")
                    .map(|(i, e)| format!("  {} {}", i + 1, e))
                    .collect();
                why.push(format!("{id} {snap}\n{}", tail.join("\n")));
            }
            panic!(
                "seed {seed}: the sessions never settled:\n{}\n{}",
                why.join("\n"),
                h.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settled_after = chaos_start.elapsed().as_secs_f64() - chaos_secs;

    // The parked session, whose turn ended, is closed and checked.
    let parked_log = close_and_read(&h, &cookie, &parked).await;
    let parked_figures = check_log(&parked_log);
    assert!(
        !parked_figures.open_turn && parked_figures.turns == 1,
        "the parked session's turn ended"
    );

    // Every session is closed (a legal end: terminated), then its whole log
    // is read from a fresh client and every client drains up to it.
    let mut logs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let log = close_and_read(&h, &cookie, id).await;
        done_txs[i].send(Some(log.len() as u64)).unwrap();
        logs.push(log);
    }
    let o = drain_and_check(clients.tasks, &logs, DEADLINE).await;
    // The ACP session (the last): its agent's death was logged (an error
    // after where its log was at the kill), and turns ran after it (a
    // message started the agent again, which loaded its session).
    let acp_turns = plan.acp_session.then(|| {
        let log = logs.last().unwrap();
        let from = acp_killed_at.unwrap_or(log.len()).min(log.len());
        let died = log[from..]
            .iter()
            .position(|e| e["type"] == "error")
            .map(|i| from + i);
        let after = died.map_or(0, |at| {
            log[at..].iter().filter(|e| e["type"] == "result").count()
        });
        let turns = log.iter().filter(|e| e["type"] == "result").count();
        let errors: Vec<&Value> = log.iter().filter(|e| e["type"] == "error").collect();
        assert!(
            died.is_some() && after > 0,
            "seed {seed}: the ACP session: agent death logged {}, turns after it {after}; its errors: {errors:?}",
            died.is_some()
        );
        let code = died.map(|at| log[at]["code"].clone()).unwrap_or_default();
        (turns, after, code)
    });
    for (i, id) in ids.iter().enumerate() {
        let (_, again) = full_log(&h, &cookie, id).await;
        assert_eq!(
            again, logs[i],
            "the log of session {i} changed after it ended"
        );
    }
    let st = get(&h, &cookie, "/api/status").await;
    catch_ups += st["stats"]["slow_client_catch_ups"].as_u64().unwrap_or(0);
    if let Some(kib) = h.rss_kib() {
        rss.push((started.elapsed().as_secs_f64(), kib));
    }

    let (bc, bcut, bstall, bhalf) = proxy_figures(&browser_proxy.stats);
    let (gc, gcut, gstall, ghalf) = proxy_figures(&gw_proxy.stats);
    println!(
        "seed {seed}: host ready {:.1} s, chaos {chaos_secs:.1} s, settled {settled_after:.1} s later, total {:.1} s",
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "sessions {} (+1 parked on an approval across the host restart, {parked_answers} questions answered after it, under faults; its create refused {parked_refused} times), clients {} ({crowd} on session 0), turns {}, questions {} (answered {}, {} after a reconnect; {pending_at_restart} pending across the host restart), events {}, delivered {}",
        ids.len(),
        o.clients,
        o.turns,
        o.questions,
        o.answered,
        o.answered_late,
        o.events,
        o.counts.delivered
    );
    println!(
        "faults: browser link {bc} connections: {bcut} cuts, {bstall} stalls, {bhalf} half-closes; gateway link {gc} connections: {gcut} cuts, {gstall} stalls, {ghalf} half-closes; stale reconnects {} ({} events replayed and matched); lagged closes {}",
        o.stale, o.counts.stale_replayed, o.lagged
    );
    println!(
        "faults by kind: cut {}, stall {}, half-close {}, gateway SIGKILL {gw_kills}, ACP agent SIGKILL {agent_kills}, host restart {restarts}, host crash {crashes}, stale reconnect {}, slow-reader catch-up by replay {catch_ups}; total {}",
        bcut + gcut,
        bstall + gstall,
        bhalf + ghalf,
        o.stale,
        bcut + gcut
            + bstall
            + gstall
            + bhalf
            + ghalf
            + gw_kills
            + agent_kills
            + restarts
            + crashes
            + o.stale
            + catch_ups
    );
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        println!(
            "host RSS: {} KiB at {:.0} s, {} KiB at {:.0} s ({:+} KiB)",
            first.1,
            first.0,
            last.1,
            last.0,
            last.1 as i64 - first.1 as i64
        );
    }
    if let Some((turns, after, code)) = acp_turns {
        println!(
            "the ACP session: {turns} turns, {after} after its agent was SIGKILLed (logged as an error {code})"
        );
    }
    println!(
        "gateway restarts: {} taken commands run again, {} turns ended (gateway_restarted); agent events logged while the state read idle: {}",
        o.reruns, o.restart_errors, o.work_while_idle
    );
    o.assert_nothing_lost(seed);
    println!(
        "turns that never ended: {}{}",
        o.open_turns,
        stuck.iter().map(|w| format!("\n  {w}")).collect::<String>()
    );
    assert_eq!(
        o.open_turns,
        stuck.len() as u64,
        "seed {seed}: a turn left open in a session that settled"
    );
    assert!(stuck.is_empty(), "seed {seed}: stuck turns: {stuck:?}");
    assert!(
        gw_kills >= 2 && restarts >= 1 && crashes >= 1,
        "seed {seed}: process faults {gw_kills} {restarts} {crashes}"
    );
    assert!(
        !plan.acp_session || agent_kills >= 1,
        "seed {seed}: the ACP agent was never running to be killed"
    );
    assert!(
        bcut + gcut > 0 && o.stale > 0,
        "seed {seed}: no cut or no stale reconnect"
    );
    assert!(
        o.turns > ids.len() as u64,
        "seed {seed}: the sessions barely ran"
    );
    if plan.slow_reader {
        // The slow reader fell behind its live queue and was caught up by
        // replay (and, as checked above, still got every event once, in
        // order).
        assert!(
            catch_ups > 0,
            "seed {seed}: the slow reader never overflowed its live queue"
        );
    }
    Run {
        host: h,
        seed,
        cookie,
        ids,
        _proxies: (browser_proxy, gw_proxy),
        _acp: acp_dir,
    }
}
