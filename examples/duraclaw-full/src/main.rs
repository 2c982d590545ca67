//! `duraclaw`: the whole Duraclaw on one machine — the orchestrator with the
//! browser UI on 127.0.0.1:8787 and the gateway on 127.0.0.1:9877, on
//! SQLite in a local data directory.
//!
//! ```text
//! duraclaw up [--demo]            everything in one process
//! duraclaw orchestrator           the orchestrator and UI alone
//! duraclaw gateway                the gateway alone (as duraclaw-gateway)
//! duraclaw user add NAME          create a user
//! duraclaw user passwd NAME       change a password (logs the user out)
//! duraclaw user remove NAME       remove a user (logs them out)
//! duraclaw verify --user NAME     smoke-check a running deployment
//! ```

mod demo;
mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_gateway::cmd::{
    ExecutorKind, RunningGateway, ServeArgs, find_on_path, shutdown_signal,
};
use duraclaw_gateway::link::Secret;
use duraclaw_store::SqliteDirectory;

use duraclaw_orchestrator::gateway::GatewayLink;
use duraclaw_orchestrator::{
    AppState, Authenticator, Orchestrator, action, assets, auth, naming_file, push,
};

#[derive(Parser)]
#[command(
    name = "duraclaw",
    version,
    about = "Run Claude Code on a server; watch and approve it from any browser."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the orchestrator, the UI and the gateway in one process.
    Up(Box<UpArgs>),
    /// Run the orchestrator and the UI, dialling a gateway elsewhere.
    Orchestrator(OrchestratorArgs),
    /// Run the gateway alone.
    Gateway(Box<ServeArgs>),
    /// Smoke-check a running deployment through its HTTP and WebSocket API.
    Verify(verify::VerifyArgs),
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user.
    Add {
        /// The user name.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Data directory.
        #[arg(long, env = "DURACLAW_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Change a user's password and log them out everywhere.
    Passwd {
        /// The user name.
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Data directory.
        #[arg(long, env = "DURACLAW_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Remove a user and log them out everywhere (their sessions' logs stay).
    Remove {
        /// The user name.
        name: String,
        /// Data directory.
        #[arg(long, env = "DURACLAW_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// Where a password comes from (never the command line itself); the
/// terminal, typed twice without echo, when neither flag is given.
#[derive(Args)]
struct PasswordArgs {
    /// Read the password from the first line of stdin.
    #[arg(long)]
    password_stdin: bool,
    /// Read the password from this environment variable (give its name).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
}

impl PasswordArgs {
    fn source(self) -> Result<auth::PasswordSource> {
        auth::PasswordSource::from_flags(self.password_stdin, self.password_env)
    }
}

#[derive(Args, Clone)]
struct WebArgs {
    /// Where the orchestrator listens. A non-loopback address is refused
    /// without --allow-public-bind: put a TLS proxy in front instead.
    #[arg(long, env = "DURACLAW_BIND", default_value = "127.0.0.1:8787")]
    bind: SocketAddr,
    /// Allow a non-loopback --bind (logins would travel unencrypted unless
    /// a TLS proxy terminates in front).
    #[arg(long)]
    allow_public_bind: bool,
    /// Data directory (sessions, users, gateway outbox).
    #[arg(long, env = "DURACLAW_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The origin browsers use when they reach the server by a name (a proxy
    /// in front, e.g. `https://claw.example.com`). Without it only the bound
    /// address and `localhost` with its port are this server's origin.
    #[arg(long, env = "DURACLAW_PUBLIC_ORIGIN")]
    public_origin: Option<String>,
    /// Mark cookies Secure (set this when serving over TLS).
    #[arg(long, env = "DURACLAW_SECURE_COOKIES")]
    secure_cookies: bool,
    /// Believe `X-Forwarded-Proto: https` from a proxy you run in front.
    #[arg(long, env = "DURACLAW_TRUST_FORWARDED_PROTO")]
    trust_forwarded_proto: bool,
    /// Rate-limit logins by the last `X-Forwarded-For` address (set it
    /// behind a proxy you run, or every client shares the proxy's limit).
    #[arg(long, env = "DURACLAW_TRUST_FORWARDED_FOR")]
    trust_forwarded_for: bool,
    /// Seconds an unwatched session actor stays awake.
    #[arg(long, default_value = "60")]
    evict_after_secs: u64,
    /// Events queued per live client (in the session's fan-out, and up to
    /// as many frames again in its socket writer, at most 256); a client that
    /// falls further behind is cut from the live stream and caught up from
    /// the log.
    #[arg(long, env = "DURACLAW_LIVE_QUEUE", default_value_t = duraclaw_core::backend::actor::DEFAULT_LIVE_QUEUE)]
    live_queue: usize,
    /// The kernel send buffer of each client connection, in bytes (default:
    /// the kernel's, which grows to megabytes for a slow reader).
    #[arg(long, env = "DURACLAW_CLIENT_SEND_BUFFER")]
    client_send_buffer: Option<u32>,
    /// Milliseconds an idle per-session ingest lane of the gateway link
    /// lives (tests shorten it).
    #[arg(long, env = "DURACLAW_INGEST_LANE_IDLE_MS", hide = true)]
    ingest_lane_idle_ms: Option<u64>,
    /// A PEM file of CA certificates to trust for Web Push services besides
    /// the system's roots (a push service behind a private CA).
    #[arg(long, env = "DURACLAW_PUSH_CA", value_name = "PEM")]
    push_ca: Option<PathBuf>,
    /// The contact push services see in the VAPID token (`mailto:` or
    /// `https:`), so they can reach the operator.
    #[arg(long, env = "DURACLAW_PUSH_CONTACT")]
    push_contact: Option<String>,
    /// Turn Web Push off: nothing is sent and the /api/push/ routes answer
    /// 503.
    #[arg(long, env = "DURACLAW_NO_PUSH")]
    no_push: bool,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    web: WebArgs,
    /// Run sessions with the scripted demo executor (no Claude account needed).
    #[arg(long)]
    demo: bool,
    /// With --demo: play this JSON script instead of the built-in one.
    #[arg(long, requires = "demo")]
    script: Option<PathBuf>,
    /// Where the gateway listens.
    #[arg(long, env = "CC_GATEWAY_BIND", default_value = "127.0.0.1:9877")]
    gateway_bind: SocketAddr,
    /// Comma-separated globs of worktrees (default: the current directory
    /// when it is a git repository; a demo repository with --demo).
    #[arg(long = "worktrees", env = "WORKTREE_PATTERNS")]
    worktrees: Option<String>,
    /// The `claude` binary (default: `claude` on PATH).
    #[arg(long, env = "CLAUDE_BIN")]
    claude_bin: Option<PathBuf>,
    /// Default model.
    #[arg(long, env = "DURACLAW_MODEL", default_value = "sonnet")]
    model: String,
    /// Resolve approvals nobody answered within this many seconds as expired.
    #[arg(long, env = "DURACLAW_APPROVAL_TIMEOUT_SECS")]
    approval_timeout_secs: Option<u64>,
    /// A JSON file of Agent Client Protocol agents sessions may choose
    /// besides Claude (docs/agents.md).
    #[arg(long, env = "DURACLAW_AGENTS")]
    agents: Option<PathBuf>,
}

#[derive(Args)]
struct OrchestratorArgs {
    #[command(flatten)]
    web: WebArgs,
    /// The gateway's WebSocket URL.
    #[arg(long, env = "CC_GATEWAY_URL", default_value = "ws://127.0.0.1:9877")]
    gateway_url: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    duraclaw_gateway::cmd::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Up(args) => up(*args).await,
        Cmd::Orchestrator(args) => orchestrator_only(args).await,
        Cmd::Gateway(args) => gateway_only(*args).await,
        Cmd::Verify(args) => verify::run(args).await,
        Cmd::User { command } => user(command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duraclaw: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn user(command: UserCmd) -> Result<()> {
    match command {
        UserCmd::Add {
            name,
            password,
            data_dir,
        } => {
            let dir = data_dir_or_default(data_dir)?;
            auth::add_user_command(&dir, &name, password.source()?).await
        }
        UserCmd::Passwd {
            name,
            password,
            data_dir,
        } => {
            let dir = data_dir_or_default(data_dir)?;
            auth::passwd_command(&dir, &name, password.source()?).await
        }
        UserCmd::Remove { name, data_dir } => {
            let dir = data_dir_or_default(data_dir)?;
            auth::remove_command(&dir, &name).await
        }
    }
}

fn data_dir_or_default(dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let base = match std::env::var_os("XDG_DATA_HOME") {
                Some(x) if !x.is_empty() => PathBuf::from(x),
                _ => PathBuf::from(
                    std::env::var_os("HOME")
                        .ok_or_else(|| Error::Invalid("set --data-dir or HOME".into()))?,
                )
                .join(".local/share"),
            };
            base.join("duraclaw")
        }
    };
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        // Session logs hold code and tool output: only this user may read them.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot create the data directory {}: {e}",
                    dir.display()
                ))
            })?;
    }
    Ok(dir)
}

/// The file in the data directory that holds the gateway secret `duraclaw
/// up` generated.
const SECRET_FILE: &str = "gateway-secret";

/// `CC_GATEWAY_SECRET`, when set.
fn env_secret() -> Result<Option<Secret>> {
    match std::env::var("CC_GATEWAY_SECRET") {
        Ok(s) if !s.trim().is_empty() => Secret::new(s.trim()).map(Some),
        _ => Ok(None),
    }
}

/// `CC_GATEWAY_SECRET` when set, else the secret `duraclaw up` keeps in
/// `data_dir`, if it is there.
fn existing_secret(data_dir: &Path) -> Result<Option<Secret>> {
    if let Some(secret) = env_secret()? {
        return Ok(Some(secret));
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Secret::new(s.trim())
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Invalid(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// The gateway secret: `CC_GATEWAY_SECRET`, or one generated on first run
/// and kept (mode 0600) in the data directory.
fn gateway_secret(data_dir: &Path) -> Result<Secret> {
    if let Some(secret) = existing_secret(data_dir)? {
        return Ok(secret);
    }
    let path = data_dir.join(SECRET_FILE);
    let secret = auth::random_token()?;
    write_private(&path, &secret)?;
    tracing::info!(path = %path.display(), "generated the gateway secret");
    Secret::new(&secret)
}

/// The key notification action tokens are made and checked under: the
/// action key of the VAPID key kept (mode 0600) in the data directory,
/// generated on first run (`duraclaw_host::push::VapidKey::action_key`).
fn push_action_key(data_dir: &Path) -> Result<action::ActionKey> {
    let key = push::load_or_create_key(data_dir)?;
    Ok(action::ActionKey::new(key.action_key()))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))
}

/// How often the server looks for logins ended by another process.
const REVOCATION_POLL: Duration = Duration::from_millis(250);

async fn serve_web(
    web: &WebArgs,
    data_dir: &Path,
    gateway_url: String,
    secret: &Secret,
    executor: Option<String>,
    executor_error: Option<String>,
) -> Result<()> {
    let sessions_db = data_dir.join("sessions.db");
    let directory = Arc::new(
        SqliteDirectory::open(&sessions_db)
            .await
            .map_err(|e| naming_file(&sessions_db, e))?,
    );
    duraclaw_gateway::link::check_bind(web.bind, web.allow_public_bind)?;
    let listener = listen(web.bind, web.client_send_buffer)
        .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", web.bind)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let auth_db = data_dir.join("auth.db");
    let auth = auth::Auth::open(
        &auth_db,
        auth::AuthOptions {
            secure_cookies: web.secure_cookies,
            public_origin: web.public_origin.clone(),
            // The Origin rule needs the address actually bound (port 0
            // picks one).
            bound_addr: Some(addr),
            trust_forwarded_proto: web.trust_forwarded_proto,
            trust_forwarded_for: web.trust_forwarded_for,
            ..auth::AuthOptions::default()
        },
    )
    .await
    .map_err(|e| naming_file(&auth_db, e))?;
    let link = match web.ingest_lane_idle_ms {
        Some(ms) => GatewayLink::with_lane_idle(
            &gateway_url,
            secret.expose(),
            Duration::from_millis(ms.max(1)),
        ),
        None => GatewayLink::new(&gateway_url, secret.expose()),
    };
    let orch = Orchestrator::with_live_queue(
        directory,
        link.clone(),
        Duration::from_secs(web.evict_after_secs.max(1)),
        web.live_queue,
    );
    // Approval rules live in the auth database.
    orch.set_rule_store(auth.clone());
    orch.rebuild_inbox().await?;
    let push_ca = match &web.push_ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the push CA file {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let push = if web.no_push {
        None
    } else {
        let push = push::PushService::open(
            &auth_db,
            push::PushOptions {
                data_dir: data_dir.to_owned(),
                extra_ca_pem: push_ca,
                contact: web.push_contact.clone(),
            },
        )
        .await
        .map_err(|e| naming_file(&auth_db, e))?;
        orch.set_push(push.clone());
        Some(push)
    };
    let _pusher = push.as_ref().map(|p| p.spawn());
    let _dialler = link.spawn(Arc::downgrade(&orch));
    let _evictor = orch.spawn_evictor();
    // `duraclaw user passwd|remove` run in another process: their
    // revocations close open sockets within this.
    let _revocations = auth.watch_other_processes(REVOCATION_POLL).await?;
    let state = AppState {
        auth: Authenticator::new(auth.clone()),
        orchestrator: orch,
        public_origin: web.public_origin.clone(),
        executor,
        executor_error,
    };
    // No push, no key: `--no-push` makes no VAPID key.
    let action_key = if web.no_push {
        None
    } else {
        Some(push_action_key(data_dir)?)
    };
    let app = duraclaw_orchestrator::api::routes()
        .merge(action::routes(action_key))
        .with_state(state)
        .merge(auth::routes().with_state(auth.clone()))
        .merge(push::routes().with_state(push::PushState {
            auth: Authenticator::new(auth.clone()),
            push,
        }))
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth::origin_guard,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            duraclaw_core::backend::web::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::map_response(
            duraclaw_orchestrator::api::json_errors,
        ))
        .merge(assets::router());
    println!("duraclaw listening on http://{addr}");
    if !auth.has_users().await? {
        println!("no users yet: create one with `duraclaw user add NAME`");
    }
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| Error::Invalid(format!("server error: {e}")))
}

/// Listens on `addr`; with `send_buffer`, every accepted connection's
/// kernel send buffer is that many bytes (accepted sockets inherit it), so a
/// client that reads slowly backs up into the bounded live queue soon
/// instead of into up to megabytes of kernel memory.
fn listen(addr: SocketAddr, send_buffer: Option<u32>) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn up(args: UpArgs) -> Result<()> {
    let data_dir = data_dir_or_default(args.web.data_dir.clone())?;
    let secret = gateway_secret(&data_dir)?;
    let worktrees = match (&args.worktrees, args.demo) {
        (Some(w), _) => w.clone(),
        (None, true) => demo::demo_worktrees(&data_dir)?,
        (None, false) => std::env::current_dir()
            .ok()
            .filter(|d| d.join(".git").exists())
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
    };
    if worktrees.is_empty() {
        println!(
            "no worktrees configured: pass --worktrees '/path/to/projects/*' (or run in a git repository)"
        );
    }
    let serve = ServeArgs {
        bind: args.gateway_bind,
        allow_public_bind: false,
        data_dir: Some(data_dir.join("gateway")),
        worktree_patterns: worktrees,
        worktree_root: None,
        executor: if args.demo {
            ExecutorKind::Scripted
        } else {
            ExecutorKind::Claude
        },
        script: args.script.clone(),
        claude_bin: args.claude_bin.clone(),
        model: args.model.clone(),
        permission_mode: None,
        claude_config_dir: None,
        approval_timeout_secs: args.approval_timeout_secs,
        evict_idle_ms: None,
        executor_idle_ms: None,
        secret_file: None,
        agents: args.agents.clone(),
    };
    let (executor, executor_error) = if args.demo {
        (Some("scripted".to_owned()), None)
    } else {
        let bin = args
            .claude_bin
            .clone()
            .or_else(|| find_on_path("claude"))
            .or_else(duraclaw_gateway::cli::launch::bin_path);
        let error = match &bin {
            Some(b) if b.is_file() => None,
            _ => Some(
                "the Claude Code CLI was not found on the gateway: install it \
                 (npm install -g @anthropic-ai/claude-code), log in with `claude`, or set CLAUDE_BIN; \
                 `duraclaw up --demo` runs without it"
                    .to_owned(),
            ),
        };
        (Some("claude".to_owned()), error)
    };
    let gw = RunningGateway::bind(&serve, secret.clone()).await?;
    let gateway_url = format!("ws://{}", gw.addr);
    println!("gateway listening on {gateway_url}");
    let gw_task = tokio::spawn(gw.serve(shutdown_signal()));
    if args.demo {
        demo::ensure_demo_user(&data_dir).await?;
    }
    let result = serve_web(
        &args.web,
        &data_dir,
        gateway_url,
        &secret,
        executor,
        executor_error,
    )
    .await;
    if result.is_err() {
        // The web side could not start: stop the gateway too rather than
        // wait for a signal with half a system up.
        gw_task.abort();
    }
    let _ = gw_task.await;
    result
}

async fn orchestrator_only(args: OrchestratorArgs) -> Result<()> {
    let data_dir = data_dir_or_default(args.web.data_dir.clone())?;
    let secret = existing_secret(&data_dir)?.ok_or_else(|| {
        Error::Invalid(format!(
            "no gateway secret: the orchestrator needs the gateway's; set CC_GATEWAY_SECRET, \
             or run `duraclaw up` once in this data directory ({}) to generate {SECRET_FILE}",
            data_dir.display()
        ))
    })?;
    serve_web(&args.web, &data_dir, args.gateway_url, &secret, None, None).await
}

/// The gateway's secret: `--secret-file`, `CC_GATEWAY_SECRET`, or the one
/// `duraclaw up` generated in the data directory that holds the gateway's
/// own (`<data>/gateway` next to `<data>/gateway-secret`, the layout `up`
/// uses and the default).
fn gateway_only_secret(args: &ServeArgs) -> Result<Secret> {
    if args.secret_file.is_some() {
        return duraclaw_gateway::cmd::load_secret(args.secret_file.as_deref());
    }
    let gateway_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => duraclaw_gateway::cmd::default_data_dir()?,
    };
    let data_dir = gateway_dir
        .parent()
        .filter(|_| gateway_dir.file_name().is_some_and(|n| n == "gateway"));
    let found = match data_dir {
        Some(dir) => existing_secret(dir)?,
        None => env_secret()?,
    };
    found.ok_or_else(|| {
        let up_file = data_dir.map_or_else(
            || "no data directory laid out by `duraclaw up` holds this gateway's data".to_owned(),
            |d| format!("{} does not exist", d.join(SECRET_FILE).display()),
        );
        Error::Invalid(format!(
            "no gateway secret: set CC_GATEWAY_SECRET or --secret-file, or run `duraclaw up` \
             once in the data directory ({up_file})"
        ))
    })
}

async fn gateway_only(args: ServeArgs) -> Result<()> {
    let secret = gateway_only_secret(&args)?;
    let gw = RunningGateway::bind(&args, secret).await?;
    println!("gateway listening on ws://{}", gw.addr);
    gw.serve(shutdown_signal()).await;
    Ok(())
}
