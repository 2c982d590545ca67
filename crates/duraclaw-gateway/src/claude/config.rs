//! How to run the CLI, and which versions of it are supported.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use duraclaw_core::Result;
use duraclaw_core::error::Error;
use tokio::process::Command;

use super::ClaudeExecutor;
use crate::cli::launch::filtered_env;

/// How to run the CLI.
#[derive(Clone)]
pub struct ClaudeConfig {
    /// The `claude` binary.
    pub bin: PathBuf,
    /// Model when a session names none.
    pub model: String,
    /// Permission mode when a session names none (`default`).
    pub permission_mode: Option<String>,
    /// `CLAUDE_CONFIG_DIR` for the CLI (its transcripts live there, which
    /// resume needs); the user's own when `None`.
    pub config_dir: Option<PathBuf>,
    /// Extra environment for the CLI (e.g. `ANTHROPIC_BASE_URL`). Values
    /// are passed through the environment, never as arguments.
    pub env: Vec<(OsString, OsString)>,
    /// Drop inherited `CLAUDE_CODE_*` and `ANTHROPIC_*` too (tests).
    pub isolated: bool,
    /// A private directory for the CLI's temporary files and sockets.
    pub private_tmp: Option<PathBuf>,
    /// How long the CLI may take to answer `initialize`.
    pub init_timeout: Duration,
    /// How long an interrupt may take to be acknowledged.
    pub interrupt_timeout: Duration,
    /// How long a turn may go without a line from the CLI while nothing
    /// waits for a human.
    pub idle_timeout: Duration,
    /// How long a stopping CLI gets after stdin closes, and after SIGTERM.
    pub stop_grace: Duration,
}

impl std::fmt::Debug for ClaudeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `env` may carry an API key: names only.
        let names: Vec<_> = self.env.iter().map(|(k, _)| k.clone()).collect();
        f.debug_struct("ClaudeConfig")
            .field("bin", &self.bin)
            .field("model", &self.model)
            .field("permission_mode", &self.permission_mode)
            .field("config_dir", &self.config_dir)
            .field("env_names", &names)
            .field("isolated", &self.isolated)
            .finish_non_exhaustive()
    }
}

impl ClaudeConfig {
    /// Defaults for `bin`: model `sonnet`, generous timeouts.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        ClaudeConfig {
            bin: bin.into(),
            model: "sonnet".into(),
            permission_mode: None,
            config_dir: None,
            env: Vec::new(),
            isolated: false,
            private_tmp: None,
            init_timeout: Duration::from_secs(60),
            interrupt_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15 * 60),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// How long `claude --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// What `--version` said about one state of the binary file.
#[derive(Debug, Clone)]
pub(super) struct VersionProbe {
    /// The file's modification time and length when it was probed.
    stamp: (Option<std::time::SystemTime>, u64),
    /// The version, or why it is not supported.
    verdict: std::result::Result<String, String>,
}

impl ClaudeExecutor {
    /// The CLI's version when it is [`launch::MIN_CLI_VERSION`] or later;
    /// otherwise [`Error::ExecutorUnsupported`] naming the version found
    /// and the one needed. Runs `claude --version` once per state of the
    /// binary file (an upgrade in place is seen).
    ///
    /// [`launch::MIN_CLI_VERSION`]: crate::cli::launch::MIN_CLI_VERSION
    pub async fn check_version(&self) -> Result<String> {
        self.check()?;
        let cfg = &self.config;
        let meta = std::fs::metadata(&cfg.bin).map_err(|e| {
            Error::executor_from(format_args!("cannot read {}", cfg.bin.display()), e)
        })?;
        let stamp = (meta.modified().ok(), meta.len());
        let mut cached = self.version.lock().await;
        if let Some(probe) = cached.as_ref().filter(|p| p.stamp == stamp) {
            return probe.verdict.clone().map_err(Error::ExecutorUnsupported);
        }
        let mut cmd = Command::new(&cfg.bin);
        cmd.arg("--version")
            .env_clear()
            .envs(filtered_env(std::env::vars_os(), cfg.isolated))
            .envs(cfg.env.iter().cloned())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(VERSION_TIMEOUT, cmd.output())
            .await
            .map_err(|_| Error::Timeout {
                what: "`claude --version`",
                ms: u64::try_from(VERSION_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
            })?
            .map_err(|e| {
                Error::executor_from(
                    format_args!("cannot run {} --version", cfg.bin.display()),
                    e,
                )
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let verdict = crate::cli::launch::check_version(&text);
        match &verdict {
            Ok(v) => tracing::info!(bin = %cfg.bin.display(), version = %v, "Claude Code CLI"),
            Err(e) => {
                tracing::warn!(bin = %cfg.bin.display(), error = %e, "Claude Code CLI not supported")
            }
        }
        *cached = Some(VersionProbe {
            stamp,
            verdict: verdict.clone(),
        });
        verdict.map_err(Error::ExecutorUnsupported)
    }

    /// Whether the configured binary exists, with a message that says what
    /// to do when it does not.
    pub fn check(&self) -> Result<()> {
        if self.config.bin.is_file() {
            Ok(())
        } else {
            Err(Error::executor(format!(
                "the Claude Code CLI was not found at {}: install it (npm install -g \
                 @anthropic-ai/claude-code) or set CLAUDE_BIN",
                self.config.bin.display()
            )))
        }
    }
}
