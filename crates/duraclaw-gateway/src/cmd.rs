//! Running a gateway from its serve options: what the `duraclaw-gateway`
//! binary parses, as a library so other binaries (the `duraclaw`
//! all-in-one) can run the same gateway.
//!
//! With the `cli` feature (on by default) the options are also
//! `clap::Args` and `init_logging` installs a tracing subscriber;
//! without it the crate depends on neither `clap` nor
//! `tracing-subscriber`, and a program fills [`ServeArgs`] itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use duraclaw_core::executor::DynExecutor;
use duraclaw_store::{SqliteDirectory, SqliteOptions};
use tokio::net::TcpListener;

use crate::claude::{ClaudeConfig, ClaudeExecutor};
use crate::link::{Secret, check_bind, serve};
use crate::scripted::{Script, ScriptedExecutor};
use crate::server::{Gateway, GatewayOptions};
use crate::worktree::WorktreeIndex;
use duraclaw_approval::{AuditTee, JsonlAudit, TracingAudit};

/// Which executor runs sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ExecutorKind {
    /// The Claude Code CLI.
    Claude,
    /// A deterministic script (demos and tests).
    Scripted,
}

/// Options of `duraclaw-gateway serve`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address is refused without
    /// --allow-public-bind.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "CC_GATEWAY_BIND", default_value = "127.0.0.1:9877")
    )]
    pub bind: SocketAddr,
    /// Allow a non-loopback --bind (prefer a tunnel).
    #[cfg_attr(feature = "cli", arg(long))]
    pub allow_public_bind: bool,
    /// Where the gateway keeps its outbox database.
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_GATEWAY_DATA_DIR"))]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated globs of worktrees sessions may run in, e.g.
    /// `/data/projects/app*`.
    #[cfg_attr(
        feature = "cli",
        arg(long = "worktrees", env = "WORKTREE_PATTERNS", default_value = "")
    )]
    pub worktree_patterns: String,
    /// Where new worktrees for sessions are made (`<data dir>/worktrees`
    /// when absent).
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_WORKTREE_ROOT"))]
    pub worktree_root: Option<PathBuf>,
    /// What runs sessions.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DURACLAW_EXECUTOR", value_enum, default_value = "claude")
    )]
    pub executor: ExecutorKind,
    /// A JSON script for the scripted executor (the built-in demo if absent).
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_SCRIPT"))]
    pub script: Option<PathBuf>,
    /// The `claude` binary (default: `claude` on PATH).
    #[cfg_attr(feature = "cli", arg(long, env = "CLAUDE_BIN"))]
    pub claude_bin: Option<PathBuf>,
    /// Model for sessions that name none.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "DURACLAW_MODEL", default_value = "sonnet")
    )]
    pub model: String,
    /// Permission mode for sessions that name none.
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_PERMISSION_MODE"))]
    pub permission_mode: Option<String>,
    /// The CLI's config directory (its transcripts live there).
    #[cfg_attr(feature = "cli", arg(long, env = "CLAUDE_CONFIG_DIR"))]
    pub claude_config_dir: Option<PathBuf>,
    /// Resolve approvals nobody answered within this many seconds as
    /// `expired` (never as denied). Unset: wait for a human forever.
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_APPROVAL_TIMEOUT_SECS"))]
    pub approval_timeout_secs: Option<u64>,
    /// Keep a session with nothing live (executor ended, nothing pending,
    /// every event acknowledged) in memory this many ms after its last use,
    /// then load it from the store when a command needs it (default 60000).
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_EVICT_IDLE_MS"))]
    pub evict_idle_ms: Option<u64>,
    /// Stop an executor (e.g. the Claude Code CLI) that has sat with no turn
    /// running, no question open and no turn waiting for this many ms; the
    /// next message resumes it (default 1800000, 30 minutes; 0: never).
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_EXECUTOR_IDLE_MS"))]
    pub executor_idle_ms: Option<u64>,
    /// Read the bearer secret from this file instead of CC_GATEWAY_SECRET.
    #[cfg_attr(feature = "cli", arg(long, env = "CC_GATEWAY_SECRET_FILE"))]
    pub secret_file: Option<PathBuf>,
    /// A JSON file of Agent Client Protocol agents sessions may choose
    /// besides the built-in one (`{"agents": [{"name", "command", …}]}`).
    #[cfg_attr(feature = "cli", arg(long, env = "DURACLAW_AGENTS"))]
    pub agents: Option<PathBuf>,
}

/// The page cache of each of the gateway's SQLite connections, in KiB. Its
/// reads are a session's newest events and single rows, which a small cache
/// holds; SQLite's default (about 2 MiB per connection) would let memory
/// grow with the database rather than with live work.
pub const STORE_CACHE_KIB: u32 = 256;

/// How the gateway opens its store (`gateway.db`).
pub fn store_options() -> SqliteOptions {
    SqliteOptions::default().page_cache_kib(STORE_CACHE_KIB)
}

/// The default data directory: `$XDG_DATA_HOME/duraclaw/gateway`, else
/// `~/.local/share/duraclaw/gateway`.
pub fn default_data_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(
            std::env::var_os("HOME")
                .ok_or_else(|| Error::Invalid("set --data-dir or HOME".into()))?,
        )
        .join(".local/share"),
    };
    Ok(base.join("duraclaw").join("gateway"))
}

/// The bearer secret: the file's first line, or `CC_GATEWAY_SECRET`.
pub fn load_secret(file: Option<&Path>) -> Result<Secret> {
    let raw = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the secret file {}: {e}",
                path.display()
            ))
        })?,
        None => std::env::var("CC_GATEWAY_SECRET").unwrap_or_default(),
    };
    Secret::new(raw.lines().next().unwrap_or("").trim())
}

/// `claude` on PATH, if there is one.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl ServeArgs {
    /// The executor these options ask for.
    pub fn executor(&self) -> Result<DynExecutor> {
        match self.executor {
            ExecutorKind::Scripted => {
                let script = match &self.script {
                    Some(path) => {
                        let text = std::fs::read_to_string(path).map_err(|e| {
                            Error::Invalid(format!(
                                "cannot read the script {}: {e}",
                                path.display()
                            ))
                        })?;
                        serde_json::from_str(&text).map_err(|e| {
                            Error::Invalid(format!(
                                "the script {} is not valid: {e}",
                                path.display()
                            ))
                        })?
                    }
                    None => Script::demo(),
                };
                Ok(Arc::new(ScriptedExecutor::new(script)))
            }
            ExecutorKind::Claude => {
                let bin = self
                    .claude_bin
                    .clone()
                    .or_else(|| find_on_path("claude"))
                    .or_else(crate::cli::launch::bin_path)
                    .unwrap_or_else(|| PathBuf::from("claude"));
                let mut config = ClaudeConfig::new(bin);
                config.model.clone_from(&self.model);
                config.permission_mode.clone_from(&self.permission_mode);
                config.config_dir.clone_from(&self.claude_config_dir);
                let exec = ClaudeExecutor::new(config);
                if let Err(e) = exec.check() {
                    // Not fatal: the gateway starts and reports it per session.
                    tracing::warn!(error = %e, "Claude Code CLI not available");
                }
                Ok(Arc::new(exec))
            }
        }
    }

    /// The agents these options offer: the built-in executor, and those of
    /// the agents file.
    pub fn agents(&self) -> Result<crate::agents::Agents> {
        let builtin = self.executor()?;
        let agents = match &self.agents {
            Some(path) => {
                crate::agents::Agents::with_file(builtin, crate::agents::AgentsFile::load(path)?)
            }
            None => crate::agents::Agents::new(builtin),
        };
        Ok(match self.executor {
            ExecutorKind::Claude => agents,
            // The demo's built-in agent is not Claude: the list says so.
            ExecutorKind::Scripted => agents.with_builtin_title("Scripted demo"),
        })
    }

    /// The worktree index these options describe.
    pub fn worktrees(&self) -> Result<WorktreeIndex> {
        WorktreeIndex::from_env_value(&self.worktree_patterns)
    }
}

/// A bound, ready gateway; [`RunningGateway::serve`] runs it.
#[derive(Debug)]
pub struct RunningGateway {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The gateway.
    pub gateway: Gateway,
    listener: TcpListener,
    secret: Secret,
}

impl RunningGateway {
    /// Validates everything and binds, so errors surface before serving.
    pub async fn bind(args: &ServeArgs, secret: Secret) -> Result<Self> {
        check_bind(args.bind, args.allow_public_bind)?;
        let data_dir = match &args.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()?,
        };
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            Error::Invalid(format!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let db_path = data_dir.join("gateway.db");
        let directory = Arc::new(
            SqliteDirectory::open_with(&db_path, store_options())
                .await
                .map_err(|e| match e {
                    // The only open error that does not name the file by itself.
                    Error::SchemaTooNew { .. } => {
                        Error::Invalid(format!("{}: {e}", db_path.display()))
                    }
                    other => other,
                })?,
        );
        let audit_path = data_dir.join("audit.jsonl");
        let file = JsonlAudit::open(&audit_path).map_err(|e| {
            Error::Invalid(format!(
                "cannot open the audit log {}: {e}",
                audit_path.display()
            ))
        })?;
        let audit = Arc::new(AuditTee(vec![Arc::new(file), Arc::new(TracingAudit)]));
        let agents = args.agents()?;
        let gateway = Gateway::with_agents(
            GatewayOptions {
                directory,
                executor: agents.builtin().clone(),
                worktrees: args.worktrees()?.with_new_worktree_root(
                    args.worktree_root
                        .clone()
                        .unwrap_or_else(|| data_dir.join("worktrees")),
                ),
                approval_timeout: args.approval_timeout_secs.map(Duration::from_secs),
            },
            audit,
            agents,
        )
        .await?;
        if let Some(ms) = args.evict_idle_ms {
            gateway.set_evict_idle(Duration::from_millis(ms));
        }
        if let Some(ms) = args.executor_idle_ms {
            gateway.set_executor_idle(Duration::from_millis(ms));
        }
        let listener = TcpListener::bind(args.bind)
            .await
            .map_err(|e| Error::other(format!("cannot listen on {}", args.bind), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::other("no local address", e))?;
        Ok(RunningGateway {
            addr,
            gateway,
            listener,
            secret,
        })
    }

    /// Serves until `shutdown` resolves, then stops every session's executor.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        tracing::info!(addr = %self.addr, "gateway listening");
        let gateway = self.gateway.clone();
        tokio::select! {
            () = serve(self.listener, self.gateway, self.secret) => {}
            () = shutdown => {}
        }
        tracing::info!("gateway stopping");
        gateway.shutdown().await;
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default info).
#[cfg(feature = "cli")]
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
