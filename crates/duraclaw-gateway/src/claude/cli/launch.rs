//! How to start the CLI: its arguments, which inherited environment
//! variables to drop, and where the pinned binary is installed. Pure
//! functions; spawning is the executor's job.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// The CLI version this module was verified against.
pub const CLI_VERSION: &str = "2.1.332";

/// The oldest CLI version sessions may run on. Older CLIs ignore the
/// PreToolUse hook's "ask" (before 2.1.85) and run tools they allow by
/// themselves without a question; before 2.1.88 an abort reads as a normal
/// end. Every scenario the tests run (allow, deny, questions, abort,
/// kill -9 then resume) holds from this version on; the tests run on it
/// too (`CLAUDE_MIN_BIN`).
pub const MIN_CLI_VERSION: &str = "2.1.88";

/// The environment variable that names the CLI binary explicitly.
pub const CLAUDE_BIN_ENV: &str = "CLAUDE_BIN";

/// What the CLI is started with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchSpec {
    /// `--model`.
    pub model: String,
    /// `--permission-mode`; `default` when `None`.
    pub permission_mode: Option<String>,
    /// `--system-prompt`.
    pub system_prompt: Option<String>,
    /// `--resume <session_id>`.
    pub resume: Option<String>,
    /// With `resume`: `--fork-session --resume-session-at <message uuid>`,
    /// a new CLI session with the conversation up to that message.
    pub fork_at: Option<String>,
}

impl LaunchSpec {
    /// A spec for `model` with everything else default.
    pub fn new(model: impl Into<String>) -> Self {
        LaunchSpec {
            model: model.into(),
            ..LaunchSpec::default()
        }
    }

    /// The command-line arguments: stream-json both ways, partial messages,
    /// permission prompts over stdio, no settings files.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--output-format",
            "stream-json",
            "--verbose",
            "--input-format",
            "stream-json",
            "--include-partial-messages",
            "--permission-prompt-tool",
            "stdio",
            "--permission-mode",
            self.permission_mode.as_deref().unwrap_or("default"),
            "--model",
            &self.model,
            "--setting-sources",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(p) = &self.system_prompt {
            args.push("--system-prompt".to_owned());
            args.push(p.clone());
        }
        if let Some(r) = &self.resume {
            args.push("--resume".to_owned());
            args.push(r.clone());
            if let Some(at) = &self.fork_at {
                args.push("--fork-session".to_owned());
                args.push("--resume-session-at".to_owned());
                args.push(at.clone());
            }
        }
        args
    }
}

/// Whether an inherited variable must not reach the CLI.
///
/// `CLAUDECODE*` always goes (a CLI that sees it thinks it runs nested in
/// another Claude Code), and so does `CC_GATEWAY_SECRET*`: the CLI's tools
/// run whatever commands a session asks for, and an `env` there would put
/// the gateway's bearer secret into the transcript. With `isolated`
/// (tests), `CLAUDE_CODE_*` and `ANTHROPIC_*` go too, so that only what the
/// caller sets is in effect.
pub fn drop_inherited(name: &OsStr, isolated: bool) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name.starts_with("CLAUDECODE")
        || name.starts_with("CC_GATEWAY_SECRET")
        || (isolated && (name.starts_with("CLAUDE_CODE_") || name.starts_with("ANTHROPIC_")))
}

/// The inherited environment minus what [`drop_inherited`] removes.
pub fn filtered_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    isolated: bool,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(k, _)| !drop_inherited(k, isolated))
        .collect()
}

/// Where `scripts/install-tools.sh claude` puts the pinned binary:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/duraclaw/claude-code-<version>/…/claude`.
/// `None` when neither variable is set.
pub fn cached_bin_path() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(
        cache
            .join("duraclaw")
            .join(format!("claude-code-{CLI_VERSION}"))
            .join("node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
    )
}

/// The CLI binary: `$CLAUDE_BIN` when set, else [`cached_bin_path`].
/// Whether the file exists is for the caller to check.
pub fn bin_path() -> Option<PathBuf> {
    match std::env::var_os(CLAUDE_BIN_ENV) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => cached_bin_path(),
    }
}

/// A CLI version as numbers: the first `x.y.z` in `text` (e.g. the
/// output of `claude --version`, `2.1.332 (Claude Code)`).
pub fn parse_version(text: &str) -> Option<(u64, u64, u64)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find_map(|word| {
            let mut parts = word.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            let patch = parts.next()?.parse().ok()?;
            Some((major, minor, patch))
        })
}

/// `Ok(version)` when `version_output` (what `claude --version` printed)
/// names [`MIN_CLI_VERSION`] or later; otherwise the message that says what
/// was found, what is needed, and what to do.
pub fn check_version(version_output: &str) -> Result<String, String> {
    let found = version_output.lines().next().unwrap_or("").trim();
    let min = parse_version(MIN_CLI_VERSION);
    match parse_version(found) {
        Some(v) if Some(v) >= min => Ok(format!("{}.{}.{}", v.0, v.1, v.2)),
        Some(v) => Err(format!(
            "unsupported Claude Code CLI: version {}.{}.{} found, {MIN_CLI_VERSION} or later \
             needed (older versions run tools without asking for approval); update it: \
             npm install -g @anthropic-ai/claude-code@latest",
            v.0, v.1, v.2
        )),
        None => Err(format!(
            "unsupported Claude Code CLI: its version could not be read (`--version` printed \
             {found:?}), {MIN_CLI_VERSION} or later needed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_below_the_minimum_are_refused_with_both_numbers() {
        assert_eq!(parse_version("2.1.332 (Claude Code)"), Some((2, 1, 332)));
        assert_eq!(parse_version("v2.0.77"), Some((2, 0, 77)));
        assert_eq!(parse_version("Claude Code"), None);
        assert_eq!(
            check_version("2.1.332 (Claude Code)\n"),
            Ok("2.1.332".into())
        );
        assert_eq!(check_version(MIN_CLI_VERSION), Ok(MIN_CLI_VERSION.into()));
        // 2.1.100 is newer than 2.1.88: numbers, not strings, compare.
        assert_eq!(check_version("2.1.100 (Claude Code)"), Ok("2.1.100".into()));
        let old = check_version("2.1.84 (Claude Code)").unwrap_err();
        assert!(
            old.contains("2.1.84") && old.contains(MIN_CLI_VERSION),
            "{old}"
        );
        assert!(check_version("1.0.200").is_err());
        assert!(check_version("3.0.0").is_ok());
        let garbage = check_version("command not found").unwrap_err();
        assert!(garbage.contains("could not be read"), "{garbage}");
    }

    #[test]
    fn args_follow_the_verified_launch_line() {
        let mut spec = LaunchSpec::new("claude-sonnet-4-5");
        assert_eq!(
            spec.args().join(" "),
            "--output-format stream-json --verbose --input-format stream-json \
             --include-partial-messages --permission-prompt-tool stdio \
             --permission-mode default --model claude-sonnet-4-5 --setting-sources "
        );
        spec.system_prompt = Some("be brief".into());
        spec.resume = Some("abc".into());
        spec.permission_mode = Some("plan".into());
        let args = spec.args();
        assert!(args.ends_with(&[
            "--system-prompt".into(),
            "be brief".into(),
            "--resume".into(),
            "abc".into()
        ]));
        assert!(args.windows(2).any(|w| w == ["--permission-mode", "plan"]));
    }

    #[test]
    fn strips_nested_claude_test_variables_and_the_gateway_secret() {
        let vars = [
            ("PATH", "/bin"),
            ("CLAUDECODE", "1"),
            ("CLAUDECODE_X", "1"),
            ("CLAUDE_CODE_ENTRYPOINT", "cli"),
            ("ANTHROPIC_API_KEY", "k"),
            ("CLAUDE_CONFIG_DIR", "/x"),
            ("CC_GATEWAY_SECRET", "the-bearer-secret-0123456789"),
            ("CC_GATEWAY_SECRET_FILE", "/etc/duraclaw/secret"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let names = |isolated| {
            filtered_env(vars.clone(), isolated)
                .into_iter()
                .map(|(k, _)| k.into_string().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(false),
            [
                "PATH",
                "CLAUDE_CODE_ENTRYPOINT",
                "ANTHROPIC_API_KEY",
                "CLAUDE_CONFIG_DIR"
            ]
        );
        assert_eq!(names(true), ["PATH", "CLAUDE_CONFIG_DIR"]);
    }
}
