//! `duraclaw verify`: a smoke check of a running deployment (this local one
//! or a Cloudflare one) through the same HTTP and WebSocket API the browser
//! uses (`docs/api.md`).
//!
//! Each step prints `PASS <step> (<ms> ms)` or `FAIL <step>: <why>`; the
//! check stops at the first failure and the command then exits non-zero.
//! The steps: `preflight` (the server answers `/api/health`), `login`,
//! `gateway` (the orchestrator's link to the gateway is up and the executor
//! available), `worktrees` (one to use), `session` (created with a short
//! prompt), `turn` (the session runs the prompt to its `result` and is idle
//! with the assistant's text logged; the check answers every question the
//! session asks, since it created the session itself) and `replay` (a
//! reconnect with `after=<seq>` gets exactly the later events, in order,
//! once, and `after=0` gets the whole log as it was seen live).
//!
//! This build speaks plain HTTP only: an `https://` URL is refused with a
//! message saying so (reach a TLS deployment through a tunnel to its
//! `http://` side, or use a build with TLS support).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use clap::Args;
use duraclaw_core::{Error, Result};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The prompt of the session the check creates.
pub const DEFAULT_PROMPT: &str = "Reply with the single word: pong";
/// The environment variable the password is read from (without
/// `--password-stdin`).
pub const PASSWORD_ENV: &str = "DURACLAW_VERIFY_PASSWORD";
/// The session cookie's name.
const COOKIE: &str = "duraclaw_session";
/// The longest password read from stdin.
const MAX_PASSWORD_BYTES: u64 = 4096;
/// How long the orchestrator may take to (re)connect to its gateway.
const GATEWAY_WAIT: Duration = Duration::from_secs(15);
/// How often the status is polled while waiting for it.
const POLL: Duration = Duration::from_millis(200);

/// `duraclaw verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The deployment's URL (only its origin is used; `http://` only in
    /// this build).
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The user to log in as.
    #[arg(long)]
    user: String,
    /// Read the password from the first line of stdin (otherwise from
    /// $DURACLAW_VERIFY_PASSWORD, otherwise it is asked on the terminal).
    #[arg(long)]
    password_stdin: bool,
    /// The worktree to run the check's session in (default: the first one
    /// no session is busy in).
    #[arg(long)]
    worktree: Option<String>,
    /// The prompt of the check's session.
    #[arg(long, default_value = DEFAULT_PROMPT)]
    prompt: String,
    /// The bound on each step, in seconds.
    #[arg(long, default_value = "120")]
    timeout_secs: u64,
}

/// Runs the check; `Err` when a step failed (its `FAIL` line is printed).
pub async fn run(args: VerifyArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let failed = |step: &str| Error::Invalid(format!("the check failed at `{step}`"));

    let mut v = step("preflight", timeout, async {
        let v = Verifier::new(&args.url, timeout)?;
        let detail = v.preflight().await?;
        Ok((v, detail))
    })
    .await
    .ok_or_else(|| failed("preflight"))?;
    // After the preflight: a server that is down is reported without
    // asking for a password first.
    let password = read_password(args.password_stdin, &args.user).await?;
    step("login", timeout, v.login(&args.user, &password))
        .await
        .ok_or_else(|| failed("login"))?;
    let result = v.checks(&args, timeout).await;
    // Best effort: the check's login token is not left valid.
    let _ = tokio::time::timeout(Duration::from_secs(5), v.post("/api/logout", json!({}))).await;
    result
}

/// Runs `check` within `timeout` and prints its `PASS` or `FAIL` line.
async fn step<T>(
    name: &str,
    timeout: Duration,
    check: impl Future<Output = Step<(T, String)>>,
) -> Option<T> {
    let start = Instant::now();
    let outcome = tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no outcome within {} s (--timeout-secs)",
                timeout.as_secs()
            ))
        });
    let ms = start.elapsed().as_millis();
    match outcome {
        Ok((value, detail)) => {
            if detail.is_empty() {
                println!("PASS {name} ({ms} ms)");
            } else {
                println!("PASS {name} ({ms} ms): {detail}");
            }
            Some(value)
        }
        Err(why) => {
            println!("FAIL {name}: {why}");
            None
        }
    }
}

/// A step's outcome: a value and a detail to print, or why it failed.
type Step<T> = std::result::Result<T, String>;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One logged event as the stream delivered it.
type Logged = (u64, Value);

/// An HTTP answer.
struct Answer {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    /// `"<what> answered <status>: <error>"`.
    fn unexpected(&self, what: &str) -> String {
        let why = match &self.body {
            Value::Object(o) => o
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| self.body.to_string()),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut s = format!("{what} answered {}", self.status);
        if !why.trim().is_empty() {
            let _ = write!(s, ": {}", clip(why.trim(), 300));
        }
        if self.status.is_redirection()
            && let Some(to) = self.headers.get("location")
        {
            let _ = write!(s, " (redirected to {})", to.to_str().unwrap_or("?"));
        }
        s
    }
}

struct Verifier {
    http: reqwest::Client,
    /// `scheme://host:port`, sent as `Origin`.
    origin: String,
    /// The same for WebSocket URLs.
    ws_base: String,
    /// `duraclaw_session=…`, once logged in.
    cookie: Option<String>,
    next_command: u64,
    next_nonce: u64,
}

impl Verifier {
    fn new(url: &str, timeout: Duration) -> Step<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        match parsed.scheme() {
            "http" => {}
            "https" => {
                return Err(format!(
                    "`{url}` is an https URL, and this duraclaw was built without TLS support: \
                     check the deployment through its http:// side (e.g. an SSH tunnel to it), \
                     or use a build with TLS"
                ));
            }
            other => {
                return Err(format!(
                    "`{url}`: unsupported scheme `{other}` (use http://)"
                ));
            }
        }
        if parsed.host_str().is_none() {
            return Err(format!("`{url}` names no host"));
        }
        let origin = parsed.origin().ascii_serialization();
        let ws_base = format!("ws{}", origin.trim_start_matches("http"));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {}", describe(&e)))?;
        Ok(Verifier {
            http,
            origin,
            ws_base,
            cookie: None,
            next_command: 1,
            next_nonce: 1,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Step<Answer> {
        let mut req = req.header("origin", &self.origin);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{what}: cannot reach {}: {}", self.origin, describe(&e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{what}: the answer was cut: {}", describe(&e)))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn get(&self, path: &str) -> Step<Answer> {
        let url = format!("{}{path}", self.origin);
        self.send(self.http.get(url), &format!("GET {path}")).await
    }

    async fn post(&self, path: &str, body: Value) -> Step<Answer> {
        let url = format!("{}{path}", self.origin);
        self.send(self.http.post(url).json(&body), &format!("POST {path}"))
            .await
    }

    /// `GET /api/health` answers `{"ok":true}`.
    async fn preflight(&self) -> Step<String> {
        let a = self.get("/api/health").await?;
        if a.status != reqwest::StatusCode::OK || a.body["ok"] != json!(true) {
            return Err(format!(
                "{} (is this a Duraclaw orchestrator?)",
                a.unexpected("GET /api/health")
            ));
        }
        Ok(match a.body["version"].as_str() {
            Some(v) => format!("{} version {v}", self.origin),
            None => self.origin.clone(),
        })
    }

    async fn login(&mut self, user: &str, password: &str) -> Step<((), String)> {
        let a = self
            .post(
                "/api/login",
                json!({"username": user, "password": password}),
            )
            .await?;
        match a.status.as_u16() {
            200 => {}
            401 => return Err(format!("wrong user name or password for `{user}` (401)")),
            429 => {
                return Err(format!(
                    "too many login attempts: retry in {} s (429)",
                    a.body["retry_after_secs"]
                ));
            }
            _ => return Err(a.unexpected("POST /api/login")),
        }
        let cookie = a
            .headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|c| c.starts_with(&format!("{COOKIE}=")))
            .map(str::to_owned)
            .ok_or_else(|| format!("the login answer set no `{COOKIE}` cookie"))?;
        self.cookie = Some(cookie);
        Ok((
            (),
            format!("as {}", a.body["user"]["name"].as_str().unwrap_or(user)),
        ))
    }

    /// The steps after the login.
    async fn checks(&mut self, args: &VerifyArgs, timeout: Duration) -> Result<()> {
        let failed = |step: &str| Error::Invalid(format!("the check failed at `{step}`"));
        step("gateway", timeout, self.gateway(timeout))
            .await
            .ok_or_else(|| failed("gateway"))?;
        let worktree = step(
            "worktrees",
            timeout,
            self.worktrees(args.worktree.as_deref()),
        )
        .await
        .ok_or_else(|| failed("worktrees"))?;
        let session = step("session", timeout, self.create(&worktree, &args.prompt))
            .await
            .ok_or_else(|| failed("session"))?;
        let (live_ws, live) = step("turn", timeout, self.turn(&session, timeout))
            .await
            .ok_or_else(|| failed("turn"))?;
        step("replay", timeout, self.replay(&session, live_ws, live))
            .await
            .ok_or_else(|| failed("replay"))?;
        println!("all checks passed (the check's session {session} stays in the session list)");
        Ok(())
    }

    /// `GET /api/status`: the orchestrator is connected to its gateway, and
    /// the executor is available.
    async fn gateway(&self, timeout: Duration) -> Step<((), String)> {
        let deadline = Instant::now() + timeout.min(GATEWAY_WAIT);
        loop {
            let a = self.get("/api/status").await?;
            match a.status.as_u16() {
                200 => {}
                401 => return Err("the session cookie was refused (401)".into()),
                _ => return Err(a.unexpected("GET /api/status")),
            }
            let gw = &a.body["gateway"];
            let url = gw["url"].as_str().unwrap_or("?");
            if let Some(e) = gw["executor_error"].as_str() {
                return Err(format!("the executor is unavailable: {e}"));
            }
            if gw["connected"] == json!(true) {
                let executor = gw["executor"].as_str().unwrap_or("unknown");
                return Ok(((), format!("connected to {url}, executor {executor}")));
            }
            if Instant::now() >= deadline {
                let why = gw["error"].as_str().unwrap_or("no error reported");
                return Err(format!(
                    "the orchestrator is not connected to its gateway at {url} after {} s: {why}",
                    timeout.min(GATEWAY_WAIT).as_secs()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET /api/worktrees`: `wanted`, or the first one not busy.
    async fn worktrees(&self, wanted: Option<&str>) -> Step<(String, String)> {
        let a = self.get("/api/worktrees").await?;
        if a.status != reqwest::StatusCode::OK {
            return Err(a.unexpected("GET /api/worktrees"));
        }
        let list = a.body.as_array().ok_or_else(|| {
            format!(
                "GET /api/worktrees answered no list: {}",
                clip(&a.body.to_string(), 200)
            )
        })?;
        if list.is_empty() {
            return Err("the gateway lists no worktrees (set its worktree patterns)".into());
        }
        let path = |w: &Value| w["path"].as_str().unwrap_or_default().to_owned();
        let busy = |w: &Value| w["busy_session"].as_str().map(str::to_owned);
        let chosen = match wanted {
            Some(want) => {
                let w = list
                    .iter()
                    .find(|w| path(w) == want.trim_end_matches('/'))
                    .ok_or_else(|| {
                        let names: Vec<String> = list.iter().take(10).map(path).collect();
                        format!(
                            "no worktree {want}; the gateway lists: {}",
                            names.join(", ")
                        )
                    })?;
                if let Some(s) = busy(w) {
                    return Err(format!("the worktree {want} is busy with session {s}"));
                }
                w
            }
            None => list.iter().find(|w| busy(w).is_none()).ok_or_else(|| {
                format!(
                    "all {} worktrees are busy with a session; pass --worktree",
                    list.len()
                )
            })?,
        };
        let p = path(chosen);
        if p.is_empty() {
            return Err(format!("a worktree without a path: {chosen}"));
        }
        let branch = chosen["branch"]
            .as_str()
            .map(|b| format!(" ({b})"))
            .unwrap_or_default();
        Ok((
            p.clone(),
            format!("{} listed; using {p}{branch}", list.len()),
        ))
    }

    /// `POST /api/sessions`.
    async fn create(&self, worktree: &str, prompt: &str) -> Step<(String, String)> {
        let a = self
            .post(
                "/api/sessions",
                json!({"worktree": worktree, "prompt": prompt}),
            )
            .await?;
        if a.status != reqwest::StatusCode::CREATED {
            return Err(a.unexpected("POST /api/sessions"));
        }
        let id = a.body["session_id"]
            .as_str()
            .ok_or_else(|| {
                format!(
                    "the new session has no id: {}",
                    clip(&a.body.to_string(), 200)
                )
            })?
            .to_owned();
        Ok((id.clone(), id))
    }

    /// Opens the session's stream after `after`; returns it with the
    /// snapshot's `last_seq`.
    async fn connect(&self, session: &str, after: u64) -> Step<(Ws, u64)> {
        let url = format!(
            "{}/api/sessions/{session}/ws?after={after}&compact=0",
            self.ws_base
        );
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| format!("bad WebSocket URL {url}: {e}"))?;
        let headers = req.headers_mut();
        let origin = self.origin.parse().map_err(|_| "bad origin".to_owned())?;
        headers.insert("origin", origin);
        if let Some(c) = &self.cookie {
            headers.insert("cookie", c.parse().map_err(|_| "bad cookie".to_owned())?);
        }
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) => format!(
                    "the session stream (after={after}) was refused with {}",
                    r.status()
                ),
                e => format!("cannot open the session stream (after={after}): {e}"),
            })?;
        let hello = next_frame(&mut ws).await?;
        if hello["type"] != "hello" {
            return Err(format!(
                "the stream began with {} instead of hello",
                clip(&hello.to_string(), 200)
            ));
        }
        let snapshot = next_frame(&mut ws).await?;
        if snapshot["type"] != "snapshot" {
            return Err(format!(
                "a {} frame instead of the snapshot",
                snapshot["type"]
            ));
        }
        let last = snapshot["last_seq"]
            .as_u64()
            .ok_or_else(|| "the snapshot has no last_seq".to_owned())?;
        Ok((ws, last))
    }

    /// Watches the new session from its first event to its `result`,
    /// answering its questions; checks that it is idle afterwards with the
    /// assistant's text logged.
    async fn turn(
        &mut self,
        session: &str,
        timeout: Duration,
    ) -> Step<((Ws, Vec<Logged>), String)> {
        let (mut ws, _) = self.connect(session, 0).await?;
        let mut live: Vec<Logged> = Vec::new();
        let mut answered = HashSet::new();
        let result = loop {
            let f = next_frame(&mut ws).await?;
            match f["type"].as_str() {
                Some("event") => {}
                Some("command_result") => {
                    check_command_result(&f)?;
                    continue;
                }
                Some("error") => return Err(format!("the server sent an error: {}", f["error"])),
                _ => continue,
            }
            let (seq, event) = push_event(&mut live, &f)?;
            match event["type"].as_str() {
                Some("user_question") => {
                    let qid = event["question_id"].as_str().unwrap_or_default().to_owned();
                    if answered.insert(qid.clone()) {
                        let command = answer_for(&event, &qid);
                        self.command(&mut ws, command).await?;
                    }
                }
                Some("error") => {
                    return Err(format!(
                        "the session logged an error (seq {seq}): {}",
                        error_text(&event)
                    ));
                }
                Some("session.state") if event["state"] == "terminated" => {
                    return Err(format!(
                        "the session terminated (seq {seq}): {}",
                        clip(&event.to_string(), 300)
                    ));
                }
                // It would wait for the gateway to come back: say so now.
                Some("session.state") if event["reason"] == "gateway_unreachable" => {
                    return Err(format!(
                        "the orchestrator lost its gateway during the turn (seq {seq})"
                    ));
                }
                Some("result") => break event,
                _ => {}
            }
        };
        if result["is_error"] == json!(true) {
            return Err(format!(
                "the turn ended in error: {}",
                clip(&result.to_string(), 300)
            ));
        }
        let reply = live
            .iter()
            .rev()
            .find(|(_, e)| e["type"] == "assistant" && e["phase"] == "final")
            .and_then(|(_, e)| e["text"].as_str())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| "the turn ended without a final assistant text in the log".to_owned())?
            .to_owned();
        // The session is idle.
        let deadline = Instant::now() + timeout.min(GATEWAY_WAIT);
        loop {
            let a = self.get(&format!("/api/sessions/{session}")).await?;
            if a.status != reqwest::StatusCode::OK {
                return Err(a.unexpected("GET /api/sessions/{id}"));
            }
            if a.body["state"] == "paused" && a.body["reason"] == "idle" {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "after its result the session is {} ({}) instead of idle",
                    a.body["state"], a.body["reason"]
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        let mut detail = format!(
            "{} events, {} question(s) answered, reply {:?}",
            live.len(),
            answered.len(),
            clip(reply.trim(), 80)
        );
        if let Some(cost) = result["cost_usd"].as_f64() {
            let _ = write!(detail, ", cost ${cost:.4}");
        }
        Ok(((ws, live), detail))
    }

    /// Sends `command`; its `command_result` is checked when it arrives.
    async fn command(&mut self, ws: &mut Ws, command: Value) -> Step<()> {
        let id = format!("verify-{}", self.next_command);
        self.next_command += 1;
        let frame = json!({"type": "command", "id": id, "command": command});
        ws.send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("cannot send a command: {e}"))
    }

    /// A ping; returns its nonce.
    async fn ping(&mut self, ws: &mut Ws) -> Step<u64> {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        ws.send(Message::text(
            json!({"type": "ping", "nonce": nonce}).to_string(),
        ))
        .await
        .map_err(|e| format!("cannot send a ping: {e}"))?;
        Ok(nonce)
    }

    /// Reads events from `ws` into `log` until its pong for a fresh ping.
    async fn drain(&mut self, ws: &mut Ws, log: &mut Vec<Logged>) -> Step<()> {
        let nonce = self.ping(ws).await?;
        loop {
            let f = next_frame(ws).await?;
            match f["type"].as_str() {
                Some("event") => {
                    push_event(log, &f)?;
                }
                Some("pong") if f["nonce"] == json!(nonce) => return Ok(()),
                Some("command_result") => check_command_result(&f)?,
                _ => {}
            }
        }
    }

    /// Reconnects after a seq in the middle, then from 0: each gets exactly
    /// the later events, once, in order, equal to what was seen live.
    async fn replay(
        &mut self,
        session: &str,
        mut live_ws: Ws,
        mut live: Vec<Logged>,
    ) -> Step<((), String)> {
        // Whatever was logged after the result (e.g. the state change).
        self.drain(&mut live_ws, &mut live).await?;
        let seen = live.last().map(|(s, _)| *s).unwrap_or(0);
        let middle = (seen / 2).max(1).min(seen);
        let mut detail = String::new();
        for after in [middle, 0] {
            let (mut ws, last) = self.connect(session, after).await?;
            let mut got: Vec<Logged> = Vec::new();
            let mut expect = after + 1;
            while expect <= last {
                let f = next_frame(&mut ws).await?;
                if f["type"] != "event" {
                    continue;
                }
                let seq = f["seq"].as_u64().ok_or("an event without a seq")?;
                if seq != expect {
                    return Err(format!(
                        "after={after}: got seq {seq} where {expect} was due (snapshot last_seq {last})"
                    ));
                }
                got.push((seq, f["event"].clone()));
                expect += 1;
            }
            // Nothing repeated or out of order behind them.
            let mut rest: Vec<Logged> = got.clone();
            self.drain(&mut ws, &mut rest).await?;
            let _ = ws.close(None).await;
            // The live stream must have everything the replay has.
            let newest = rest.last().map(|(s, _)| *s).unwrap_or(after);
            while live.last().map(|(s, _)| *s).unwrap_or(0) < newest {
                let f = next_frame(&mut live_ws).await?;
                if f["type"] == "event" {
                    push_event(&mut live, &f)?;
                }
            }
            for (seq, event) in rest.iter() {
                let index = usize::try_from(*seq - 1).map_err(|e| e.to_string())?;
                let seen_live = &live[index].1;
                if seen_live != event {
                    return Err(format!(
                        "after={after}: event {seq} differs from the one seen live:\n  live:   {}\n  replay: {}",
                        clip(&seen_live.to_string(), 300),
                        clip(&event.to_string(), 300)
                    ));
                }
            }
            if after == 0 {
                if rest.len() != live.len() {
                    return Err(format!(
                        "after=0 replayed {} events, {} were seen live",
                        rest.len(),
                        live.len()
                    ));
                }
                let _ = write!(detail, "; after=0: all {} events", rest.len());
            } else {
                detail = format!("after={after}: events {}..={newest}", after + 1);
            }
        }
        let _ = live_ws.close(None).await;
        Ok(((), detail))
    }
}

/// The next text frame as JSON.
async fn next_frame(ws: &mut Ws) -> Step<Value> {
    loop {
        let m = ws
            .next()
            .await
            .ok_or_else(|| "the session stream ended".to_owned())?
            .map_err(|e| format!("the session stream failed: {e}"))?;
        match m {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).map_err(|e| {
                    format!("a frame that is not JSON ({e}): {}", clip(t.as_str(), 200))
                });
            }
            Message::Close(c) => {
                return Err(match c {
                    Some(c) => format!("the server closed the stream: {} {}", c.code, c.reason),
                    None => "the server closed the stream".to_owned(),
                });
            }
            _ => {}
        }
    }
}

/// Appends an `event` frame to `log`, which must stay dense from 1.
fn push_event(log: &mut Vec<Logged>, frame: &Value) -> Step<Logged> {
    let seq = frame["seq"]
        .as_u64()
        .ok_or_else(|| format!("an event without a seq: {}", clip(&frame.to_string(), 200)))?;
    let expect = log.last().map(|(s, _)| s + 1).unwrap_or(1);
    if seq != expect {
        return Err(format!(
            "the stream skipped or repeated: seq {seq} where {expect} was due"
        ));
    }
    let entry = (seq, frame["event"].clone());
    log.push(entry.clone());
    Ok(entry)
}

/// A refused command fails the check, unless someone answered first.
fn check_command_result(frame: &Value) -> Step<()> {
    if frame["ok"] == json!(true) || frame["error"]["code"] == "already_decided" {
        return Ok(());
    }
    Err(format!(
        "command {} was refused: {}",
        frame["id"],
        frame["error"]["message"]
            .as_str()
            .unwrap_or("no reason given")
    ))
}

/// Allow a permission question; answer an AskUserQuestion with the first
/// option of each of its questions.
fn answer_for(event: &Value, question_id: &str) -> Value {
    if event["kind"] == "ask_user" {
        let mut answers = serde_json::Map::new();
        for q in event["questions"].as_array().into_iter().flatten() {
            let Some(text) = q["question"].as_str() else {
                continue;
            };
            let first = q["options"][0]["label"].as_str().unwrap_or("yes");
            answers.insert(text.to_owned(), json!(first));
        }
        json!({"type": "answer", "question_id": question_id, "decision": "answered", "answers": answers})
    } else {
        json!({"type": "answer", "question_id": question_id, "decision": "allow"})
    }
}

/// An `error` event as one readable line (with its exit status and stderr).
fn error_text(event: &Value) -> String {
    let mut s = event["message"].as_str().unwrap_or("?").to_owned();
    if let Some(code) = event["code"].as_str() {
        let _ = write!(s, " [{code}]");
    }
    if let Some(status) = event["exit_status"].as_i64() {
        let _ = write!(s, " exit status {status}");
    }
    if let Some(tail) = event["stderr_tail"].as_str() {
        let _ = write!(s, "; stderr: {}", clip(tail.trim(), 600));
    }
    s
}

/// `s`, cut to about `max` bytes (on a char boundary).
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// An error with its sources: reqwest's own message rarely says why.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let more = c.to_string();
        if !s.contains(&more) {
            let _ = write!(s, ": {more}");
        }
        source = c.source();
    }
    s
}

/// The password: stdin's first line with `--password-stdin`, else
/// `$DURACLAW_VERIFY_PASSWORD`, else typed on the terminal.
async fn read_password(from_stdin: bool, user: &str) -> Result<String> {
    let user = user.to_owned();
    tokio::task::spawn_blocking(move || {
        if from_stdin {
            use std::io::{BufRead, Read};
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(MAX_PASSWORD_BYTES)
                .read_line(&mut line)
                .map_err(|e| Error::other("cannot read the password from stdin", e))?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                return Err(Error::Invalid(
                    "no password on stdin: --password-stdin reads it from the first line".into(),
                ));
            }
            return Ok(line.to_owned());
        }
        if let Ok(p) = std::env::var(PASSWORD_ENV)
            && !p.is_empty()
        {
            return Ok(p);
        }
        rpassword::prompt_password(format!("Password for {user}: ")).map_err(|e| {
            Error::Invalid(format!(
                "cannot read a password from the terminal ({e}); pass --password-stdin \
                 or set {PASSWORD_ENV}"
            ))
        })
    })
    .await
    .map_err(|e| Error::other("cannot read the password", e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_get_the_first_option_or_allow() {
        let ask = json!({"kind": "ask_user", "questions": [
            {"question": "Which?", "options": [{"label": "A"}, {"label": "B"}]},
            {"question": "Free?", "options": []}
        ]});
        assert_eq!(
            answer_for(&ask, "q1"),
            json!({"type": "answer", "question_id": "q1", "decision": "answered",
                   "answers": {"Which?": "A", "Free?": "yes"}})
        );
        assert_eq!(
            answer_for(&json!({"kind": "permission"}), "q2")["decision"],
            "allow"
        );
    }

    #[test]
    fn events_must_be_dense() {
        let mut log = Vec::new();
        assert!(push_event(&mut log, &json!({"seq": 1, "event": {}})).is_ok());
        assert!(push_event(&mut log, &json!({"seq": 3, "event": {}})).is_err());
        assert!(push_event(&mut log, &json!({"seq": 1, "event": {}})).is_err());
        assert!(push_event(&mut log, &json!({"seq": 2, "event": {}})).is_ok());
    }

    #[test]
    fn urls_are_checked() {
        let t = Duration::from_secs(1);
        let v = Verifier::new("http://127.0.0.1:8787/some/page", t)
            .ok()
            .map(|v| (v.origin, v.ws_base));
        assert_eq!(
            v,
            Some(("http://127.0.0.1:8787".into(), "ws://127.0.0.1:8787".into()))
        );
        let https = Verifier::new("https://claw.example.com", t)
            .err()
            .unwrap_or_default();
        assert!(https.contains("without TLS"), "{https}");
        assert!(Verifier::new("ftp://x", t).is_err());
        assert!(Verifier::new("not a url", t).is_err());
    }
}
