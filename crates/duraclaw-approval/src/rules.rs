//! Approval rules a user sets: `Tool` or `Tool(pattern)` → allow, ask or
//! deny, at the user, worktree or session scope. Pure: no I/O, no clock;
//! the gateway evaluates, the hosts validate with the same code.
//!
//! Precedence: a matching deny at any scope wins; otherwise the most
//! specific scope with a matching rule (session, then worktree, then user)
//! decides, and within that scope an ask beats an allow; no matching rule
//! asks a person.
//!
//! What a pattern matches, per tool (see `docs/approvals.md`):
//!
//! - `Bash`: the `command`. A pattern with a wildcard allows only a single
//!   simple command: one containing none of `; & | < > ( ) { } $ \``,
//!   a backslash, a newline or another control character. Deny and ask
//!   rules match the whole command or any part of it between those
//!   characters, so `Bash(rm *)` catches `ls; rm -rf /`. A pattern without
//!   a wildcard matches exactly that command.
//! - `Read`, `Edit`, `Write`, `MultiEdit` (`file_path`), `NotebookEdit`
//!   (`notebook_path`), `Glob`, `Grep`, `LS` (`path`, the worktree when
//!   absent): the path, resolved against the worktree with `.` and `..`
//!   applied, never escaping it. A relative pattern (`src/**`) matches
//!   paths inside the worktree, an absolute one (`/etc/**`) absolute paths.
//! - `WebFetch`: the `url`; `WebSearch`: the `query`.
//! - Any other tool takes the bare form only.
//!
//! Wildcards: `*` any run of characters (within one path segment for
//! paths), `**` any number of whole path segments, `?` one character;
//! `\` makes the next character literal.

use std::fmt;

use duraclaw_core::protocol::{RuleAction, RuleEntry, RuleScope};
use serde_json::Value;

/// The longest rule text accepted.
pub const MAX_RULE_CHARS: usize = 1024;

/// Tools whose input a pattern can match, and the field it matches.
const PATTERN_TOOLS: &[(&str, &str)] = &[
    ("Bash", "command"),
    ("Read", "file_path"),
    ("Edit", "file_path"),
    ("Write", "file_path"),
    ("MultiEdit", "file_path"),
    ("NotebookEdit", "notebook_path"),
    ("Glob", "path"),
    ("Grep", "path"),
    ("LS", "path"),
    ("WebFetch", "url"),
    ("WebSearch", "query"),
];

/// How a tool's pattern is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Path,
    Text,
}

fn tool_field(tool: &str) -> Option<(&'static str, Kind)> {
    PATTERN_TOOLS
        .iter()
        .find(|(t, _)| *t == tool)
        .map(|(t, f)| {
            let kind = match *t {
                "Bash" => Kind::Command,
                "WebFetch" | "WebSearch" => Kind::Text,
                _ => Kind::Path,
            };
            (*f, kind)
        })
}

/// Why a rule's text is not a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// A parsed rule: a tool name and, for the tools that take one, a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    tool: String,
    pattern: Option<String>,
}

impl Rule {
    /// Parses `Tool` or `Tool(pattern)`.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let bad = |why: &str| Err(RuleError(format!("invalid rule {text:?}: {why}")));
        if text.chars().count() > MAX_RULE_CHARS {
            return Err(RuleError(format!(
                "invalid rule: longer than {MAX_RULE_CHARS} characters"
            )));
        }
        if text.chars().any(char::is_control) {
            return bad("it contains a control character (a newline, a tab, …)");
        }
        if text.chars().any(is_invisible) {
            return bad("it contains an invisible or text-direction character");
        }
        let (tool, pattern) = match text.find('(') {
            None => (text, None),
            Some(open) => {
                let Some(inner) = text[open + 1..].strip_suffix(')') else {
                    return bad("a pattern must end with `)`, as in `Bash(git status*)`");
                };
                (&text[..open], Some(inner))
            }
        };
        if tool.is_empty() {
            return bad("it names no tool; write `Tool` or `Tool(pattern)`, e.g. `Read`");
        }
        if !tool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return bad(
                "a tool name is letters, digits, `_`, `-` and `.`, e.g. `Read` or `mcp__github__get_issue`",
            );
        }
        let Some(pattern) = pattern else {
            return Ok(Rule {
                tool: tool.to_owned(),
                pattern: None,
            });
        };
        let Some((_, kind)) = tool_field(tool) else {
            let known: Vec<&str> = PATTERN_TOOLS.iter().map(|(t, _)| *t).collect();
            return bad(&format!(
                "{tool} takes no pattern; write `{tool}` alone (patterns work for {})",
                known.join(", ")
            ));
        };
        if pattern.trim().is_empty() {
            return bad("the pattern is empty; write the tool alone to match every call");
        }
        if pattern.ends_with('\\') && !pattern.ends_with("\\\\") {
            return bad("the pattern ends with a lone `\\`");
        }
        if kind == Kind::Path && pattern.split('/').any(|seg| seg == "..") {
            return bad("a path pattern cannot contain `..`");
        }
        Ok(Rule {
            tool: tool.to_owned(),
            pattern: Some(pattern.to_owned()),
        })
    }

    /// The tool it is about.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// Its pattern, if any.
    pub fn pattern(&self) -> Option<&str> {
        self.pattern.as_deref()
    }

    /// Whether this rule, acting as `action`, matches the call `tool` with
    /// `input` in `worktree`.
    pub fn matches(&self, action: RuleAction, worktree: &str, tool: &str, input: &Value) -> bool {
        if self.tool != tool {
            return false;
        }
        let Some(pattern) = &self.pattern else {
            return true;
        };
        let Some((field, kind)) = tool_field(tool) else {
            return false;
        };
        match kind {
            Kind::Command => {
                let Some(command) = input.get(field).and_then(Value::as_str) else {
                    return false;
                };
                command_matches(pattern, command, action)
            }
            Kind::Text => input
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|s| glob(pattern, s, false)),
            Kind::Path => {
                let raw = match input.get(field) {
                    None | Some(Value::Null) => ".",
                    Some(Value::String(s)) => s.as_str(),
                    Some(_) => return false,
                };
                match resolve_path(worktree, raw) {
                    Some(Resolved::Inside(rel)) => {
                        !pattern.starts_with('/') && glob(pattern, &rel, true)
                    }
                    Some(Resolved::Outside(abs)) => {
                        pattern.starts_with('/') && glob(pattern, &abs, true)
                    }
                    None => false,
                }
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pattern {
            Some(p) => write!(f, "{}({p})", self.tool),
            None => f.write_str(&self.tool),
        }
    }
}

/// Characters that change how text looks without showing themselves
/// (zero-width, direction overrides, soft hyphen, BOM): a rule must read
/// as what it is.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Characters that make a shell command more than one simple command (or
/// redirect, substitute or expand).
fn is_shell_special(c: char) -> bool {
    matches!(
        c,
        ';' | '&' | '|' | '<' | '>' | '(' | ')' | '{' | '}' | '$' | '`' | '\\'
    ) || c.is_control()
}

fn has_wildcard(pattern: &str) -> bool {
    let mut escaped = false;
    for c in pattern.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '*' || c == '?' {
            return true;
        }
    }
    false
}

fn command_matches(pattern: &str, command: &str, action: RuleAction) -> bool {
    match action {
        RuleAction::Allow => {
            if has_wildcard(pattern) && command.chars().any(is_shell_special) {
                return false;
            }
            glob(pattern, command.trim(), false)
        }
        // The cautious side: the whole command, or any piece of it.
        RuleAction::Ask | RuleAction::Deny => {
            glob(pattern, command.trim(), false)
                || command
                    .split(is_shell_special)
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .any(|piece| glob(pattern, piece, false))
        }
    }
}

enum Resolved {
    /// Relative to the worktree, `/`-separated, no `.` or `..`; `` for the
    /// worktree itself.
    Inside(String),
    /// An absolute path outside it, normalised.
    Outside(String),
}

/// Normalises `path` against `worktree` lexically (`.` and `..` applied;
/// `..` at the root stays at the root).
fn resolve_path(worktree: &str, path: &str) -> Option<Resolved> {
    if path.chars().any(|c| c.is_control()) {
        return None;
    }
    let full = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{}/{path}", worktree.trim_end_matches('/'))
    };
    let mut parts: Vec<&str> = Vec::new();
    for seg in full.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let root: Vec<&str> = worktree
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if worktree.starts_with('/') && parts.len() >= root.len() && parts[..root.len()] == root[..] {
        Some(Resolved::Inside(parts[root.len()..].join("/")))
    } else {
        Some(Resolved::Outside(format!("/{}", parts.join("/"))))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    One,
    /// `**` as a whole path segment.
    Segments,
}

fn tokens(pattern: &str, path: bool) -> Vec<Tok> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                out.push(Tok::Lit(chars[i + 1]));
                i += 2;
                continue;
            }
            '*' if path && chars.get(i + 1) == Some(&'*') => {
                let starts = i == 0 || chars[i - 1] == '/';
                let ends = i + 2 == chars.len() || chars[i + 2] == '/';
                if starts && ends {
                    out.push(Tok::Segments);
                    // `**/` also matches no segment at all.
                    i += if i + 2 < chars.len() { 3 } else { 2 };
                    continue;
                }
                out.push(Tok::Any);
                i += 2;
                continue;
            }
            '*' => out.push(Tok::Any),
            '?' => out.push(Tok::One),
            c => out.push(Tok::Lit(c)),
        }
        i += 1;
    }
    out
}

/// Matches `text` against a rule pattern. With `path`, `*` and `?` stop at
/// `/` and `**` spans whole segments. Dynamic programming over (token,
/// char): linear memory, no recursion, bounded time for hostile input.
fn glob(pattern: &str, text: &str, path: bool) -> bool {
    // `dir/**` also matches `dir` itself.
    if path
        && let Some(dir) = pattern.strip_suffix("/**")
        && !dir.is_empty()
        && glob_once(dir, text, true)
    {
        return true;
    }
    glob_once(pattern, text, path)
}

fn glob_once(pattern: &str, text: &str, path: bool) -> bool {
    let toks = tokens(pattern, path);
    let t: Vec<char> = text.chars().collect();
    // at[j]: the tokens so far match t[..j].
    let mut at = vec![false; t.len() + 1];
    at[0] = true;
    for tok in &toks {
        let mut next = vec![false; t.len() + 1];
        match tok {
            Tok::Lit(c) => {
                for j in 0..t.len() {
                    if at[j] && t[j] == *c {
                        next[j + 1] = true;
                    }
                }
            }
            Tok::One => {
                for j in 0..t.len() {
                    if at[j] && !(path && t[j] == '/') {
                        next[j + 1] = true;
                    }
                }
            }
            Tok::Any => {
                let mut run = false;
                for j in 0..=t.len() {
                    run = at[j] || (run && j > 0 && !(path && t[j - 1] == '/'));
                    next[j] = run;
                }
            }
            Tok::Segments => {
                // Zero or more whole segments, each followed by `/` (or
                // everything to the end).
                let mut run = false;
                for j in 0..=t.len() {
                    let seg_start = j == 0 || t[j - 1] == '/';
                    run = run || at[j];
                    next[j] = at[j] || (run && (seg_start || j == t.len()));
                }
            }
        }
        at = next;
    }
    at[t.len()]
}

/// A rule in force for a session, parsed, with its scope and action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedRule {
    /// The host's id for it.
    pub id: Option<String>,
    /// Where it applies.
    pub scope: RuleScope,
    /// The rule.
    pub rule: Rule,
    /// What it does.
    pub action: RuleAction,
}

impl ScopedRule {
    /// Parses a rule entry from the wire.
    pub fn from_entry(entry: &RuleEntry) -> Result<ScopedRule, RuleError> {
        Ok(ScopedRule {
            id: entry.id.clone(),
            scope: entry.scope,
            rule: Rule::parse(&entry.rule)?,
            action: entry.action,
        })
    }

    /// Its wire form.
    pub fn entry(&self) -> RuleEntry {
        RuleEntry {
            id: self.id.clone(),
            scope: self.scope,
            rule: self.rule.to_string(),
            action: self.action,
        }
    }
}

/// The rule that decided a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleVerdict {
    /// What it decided.
    pub action: RuleAction,
    /// The rule that decided, as text.
    pub rule: String,
    /// Its scope.
    pub scope: RuleScope,
    /// Its id, if it has one.
    pub id: Option<String>,
}

impl RuleVerdict {
    fn of(r: &ScopedRule) -> Self {
        RuleVerdict {
            action: r.action,
            rule: r.rule.to_string(),
            scope: r.scope,
            id: r.id.clone(),
        }
    }

    /// How a person reads it: `allowed by rule Read (user scope)`.
    pub fn describe(&self) -> String {
        let verb = match self.action {
            RuleAction::Allow => "allowed",
            RuleAction::Deny => "denied",
            RuleAction::Ask => "asked",
        };
        format!("{verb} by rule {} ({} scope)", self.rule, self.scope.name())
    }
}

/// The rules in force for one session in one worktree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    worktree: String,
    rules: Vec<ScopedRule>,
}

impl RuleSet {
    /// `rules` for a session running in `worktree` (an absolute path).
    pub fn new(worktree: impl Into<String>, rules: Vec<ScopedRule>) -> Self {
        RuleSet {
            worktree: worktree.into(),
            rules,
        }
    }

    /// From wire entries; an entry that does not parse is skipped (and
    /// logged): a rule that cannot be read decides nothing.
    pub fn from_entries(worktree: impl Into<String>, entries: &[RuleEntry]) -> Self {
        let rules = entries
            .iter()
            .filter_map(|e| match ScopedRule::from_entry(e) {
                Ok(r) => Some(r),
                Err(err) => {
                    tracing::warn!(rule = %e.rule, error = %err, "approval rule skipped");
                    None
                }
            })
            .collect();
        RuleSet::new(worktree, rules)
    }

    /// The rules.
    pub fn rules(&self) -> &[ScopedRule] {
        &self.rules
    }

    /// The worktree it resolves paths against.
    pub fn worktree(&self) -> &str {
        &self.worktree
    }

    /// The rule that decides `tool` with `input`, if any (`None`: ask a
    /// person, no rule says anything). See the module docs for precedence.
    pub fn evaluate(&self, tool: &str, input: &Value) -> Option<RuleVerdict> {
        let matching: Vec<&ScopedRule> = self
            .rules
            .iter()
            .filter(|r| r.rule.matches(r.action, &self.worktree, tool, input))
            .collect();
        if let Some(deny) = matching
            .iter()
            .filter(|r| r.action == RuleAction::Deny)
            .max_by_key(|r| r.scope)
        {
            return Some(RuleVerdict::of(deny));
        }
        let top = matching.iter().map(|r| r.scope).max()?;
        let at_top = || matching.iter().filter(move |r| r.scope == top);
        at_top()
            .find(|r| r.action == RuleAction::Ask)
            .or_else(|| at_top().next())
            .map(|r| RuleVerdict::of(r))
    }
}

/// The rule that allows exactly this call and nothing more, as the
/// approval prompt shows it for "always allow for this worktree": the
/// tool with its command, path (relative to the worktree when inside it),
/// URL or query, wildcards escaped; the bare tool name for tools that take
/// no pattern. `None` when the input has no usable field.
pub fn exact_rule(worktree: &str, tool: &str, input: &Value) -> Option<String> {
    let Some((field, kind)) = tool_field(tool) else {
        return Rule::parse(tool).ok().map(|r| r.to_string());
    };
    let value = input.get(field).and_then(Value::as_str);
    let subject = match kind {
        Kind::Path => match resolve_path(worktree, value.unwrap_or("."))? {
            Resolved::Inside(rel) if rel.is_empty() => return Some(tool.to_owned()),
            Resolved::Inside(rel) => rel,
            Resolved::Outside(abs) => abs,
        },
        _ => value?.trim().to_owned(),
    };
    if subject.is_empty() {
        return None;
    }
    let mut escaped = String::with_capacity(subject.len());
    for c in subject.chars() {
        if matches!(c, '*' | '?' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    let text = format!("{tool}({escaped})");
    Rule::parse(&text).ok().map(|r| r.to_string())
}

/// A named starting set of user-scope rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Its id, e.g. `reads_free`.
    pub id: &'static str,
    /// What a person reads.
    pub title: &'static str,
    /// Its rules, as (rule, action).
    pub rules: &'static [(&'static str, RuleAction)],
}

/// The presets a user starts from.
pub const PRESETS: &[Preset] = &[
    Preset {
        id: "ask_everything",
        title: "Ask for everything",
        rules: &[],
    },
    Preset {
        id: "reads_free",
        title: "Reads are free",
        rules: &[
            ("Read", RuleAction::Allow),
            ("Glob", RuleAction::Allow),
            ("Grep", RuleAction::Allow),
            ("LS", RuleAction::Allow),
        ],
    },
    Preset {
        id: "reads_and_git_status",
        title: "Reads and read-only git are free",
        rules: &[
            ("Read", RuleAction::Allow),
            ("Glob", RuleAction::Allow),
            ("Grep", RuleAction::Allow),
            ("LS", RuleAction::Allow),
            ("Bash(git status*)", RuleAction::Allow),
            ("Bash(git diff*)", RuleAction::Allow),
            ("Bash(git log*)", RuleAction::Allow),
        ],
    },
    Preset {
        id: "no_destructive_shell",
        title: "Never delete or force-push from the shell",
        rules: &[
            ("Bash(rm *)", RuleAction::Deny),
            ("Bash(git push --force*)", RuleAction::Deny),
            ("Bash(git reset --hard*)", RuleAction::Deny),
        ],
    },
];

/// The preset `id`.
pub fn preset(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}

#[cfg(test)]
mod tests;
