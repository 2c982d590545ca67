//! Worktree discovery: which git worktrees the gateway may run sessions in.
//!
//! The operator lists directories with `WORKTREE_PATTERNS`, comma-separated
//! absolute globs such as `/data/projects/app*`. Every matching directory
//! that is a git repository contributes itself and its linked worktrees.
//! [`WorktreeIndex::resolve`] is the only way a requested path becomes a
//! working directory: it accepts exactly the root of a discovered worktree
//! and refuses everything else with [`Error::Invalid`].
//!
//! Globs: `*` matches any run of characters and `?` one character, within
//! one path component. A wildcard does not match a name starting with `.`
//! unless the pattern component starts with `.` too (as in a shell), so
//! `/data/*` never picks up `/data/.cache`. The components before the first
//! wildcard may pass through symlinks (the operator wrote them); entries
//! matched below that must be real directories, so a symlink dropped into a
//! project directory cannot widen the set to somewhere else.
//!
//! ```no_run
//! use duraclaw_gateway::worktree::WorktreeIndex;
//!
//! # fn main() -> duraclaw_core::Result<()> {
//! let index = WorktreeIndex::from_env_value("/data/projects/app*, /srv/site")?;
//! for wt in index.discover()? {
//!     println!("{} {:?} dirty={}", wt.path, wt.branch, wt.dirty);
//! }
//! let cwd = index.resolve("/data/projects/app1")?;
//! # let _ = cwd;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use duraclaw_core::protocol::Worktree;
use duraclaw_core::{Error, Result};
use git2::{Repository, RepositoryOpenFlags, StatusOptions};

use duraclaw_approval::glob_match;

/// The environment variable holding the patterns.
pub const WORKTREE_PATTERNS_ENV: &str = "WORKTREE_PATTERNS";

/// Longest path [`WorktreeIndex::resolve`] looks at, in bytes (Linux's
/// `PATH_MAX`); longer input is refused before touching the file system.
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// The set of worktrees the gateway may use, found from glob patterns.
///
/// Holds only the patterns: every [`discover`](Self::discover) and
/// [`resolve`](Self::resolve) looks at the file system afresh, so a worktree
/// added or removed with `git worktree` shows up without a restart.
/// [`discover`](Self::discover) opens every repository the patterns cover;
/// [`resolve`](Self::resolve) opens only the one it is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeIndex {
    patterns: Vec<String>,
    /// Where new worktrees go ([`crate::fresh`]); none: not offered.
    root: Option<PathBuf>,
}

/// A worktree found on disk, before its status is read.
#[derive(Debug, Clone)]
struct Found {
    /// Canonical path of the worktree's root.
    path: PathBuf,
    /// The main repository's path (its work directory, or the bare
    /// repository's directory).
    repo: PathBuf,
}

impl WorktreeIndex {
    /// An index over `patterns`, each an absolute path that may contain `*`
    /// and `?`. Refuses relative patterns (including `~/…`: `~` is not
    /// expanded), patterns with `.` or `..` components and patterns
    /// containing a NUL byte, naming the offending pattern.
    pub fn new(patterns: Vec<String>) -> Result<Self> {
        for p in &patterns {
            check_pattern(p)?;
        }
        Ok(WorktreeIndex {
            patterns,
            root: None,
        })
    }

    /// The same index, making new worktrees for sessions under `root`
    /// (created when first needed). A worktree made there is a linked
    /// worktree of a discovered repository, so discovery lists it.
    #[must_use]
    pub fn with_new_worktree_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Where new worktrees go, when they are offered.
    pub fn new_worktree_root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    /// Parses the value of `WORKTREE_PATTERNS`: comma-separated patterns,
    /// surrounding whitespace trimmed, empty entries skipped. See
    /// [`WorktreeIndex::new`] for what is refused.
    pub fn from_env_value(value: &str) -> Result<Self> {
        Self::new(
            value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Every worktree: each matching repository and its linked worktrees,
    /// with branch (`None` when HEAD is detached), HEAD commit and whether
    /// tracked files changed or untracked files exist (ignored files do not
    /// count). Sorted by path, one entry per canonical path.
    ///
    /// A directory that is not a repository, or a repository libgit2 cannot
    /// open, is skipped with a warning; a worktree whose status cannot be
    /// read is reported dirty, since nobody can vouch that it is clean.
    pub fn discover(&self) -> Result<Vec<Worktree>> {
        Ok(self
            .find()
            .into_values()
            .filter_map(|found| describe(&found))
            .collect())
    }

    /// The canonical path of the discovered worktree `requested` names.
    ///
    /// `requested` must be absolute, free of `..` components and NUL bytes,
    /// and after canonicalisation equal the root of a discovered worktree (a
    /// symlink to such a root resolves to the root). Everything else, a
    /// directory inside a worktree, a symlink leading outside, a path no
    /// pattern covers, is [`Error::Invalid`] with the reason.
    ///
    /// It decides the same as looking the path up in [`discover`](Self::discover)'s
    /// list, without building the list: it opens the requested path's
    /// repository and checks only the few directories that could have
    /// contributed it against the patterns (the same matching rule and the
    /// same per-repository rule discovery uses). An accepted path costs one
    /// repository open plus reading that repository's linked worktrees,
    /// whatever the number of repositories the patterns cover; a refused one
    /// also looks at each ancestor directory, to say whether it lies inside
    /// a worktree.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf> {
        let shown = shown(requested);
        if requested.contains('\0') {
            return Err(Error::Invalid(format!(
                "worktree path {shown} contains a NUL byte"
            )));
        }
        if requested.len() > MAX_PATH_BYTES {
            return Err(Error::Invalid(format!(
                "worktree path is {} bytes, longer than the {MAX_PATH_BYTES} a path may be",
                requested.len()
            )));
        }
        let path = Path::new(requested);
        if !path.is_absolute() {
            return Err(Error::Invalid(format!(
                "worktree path {shown} is relative; give the absolute path of a worktree"
            )));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(Error::Invalid(format!(
                "worktree path {shown} contains `..`; give the worktree's own path"
            )));
        }
        let canonical = std::fs::canonicalize(path).map_err(|e| {
            Error::Invalid(format!(
                "worktree path {shown} is not a discovered worktree: {e}"
            ))
        })?;
        let patterns: Vec<Pattern<'_>> = self
            .patterns
            .iter()
            .filter_map(|p| Pattern::new(p))
            .collect();
        if is_discovered(&patterns, &canonical) {
            return Ok(canonical);
        }
        // The outermost one, as a search of the sorted listing finds first.
        if let Some(root) = canonical
            .ancestors()
            .skip(1)
            .filter(|a| is_discovered(&patterns, a))
            .last()
        {
            return Err(Error::Invalid(format!(
                "worktree path {shown} is inside worktree {}, not its root; \
                 sessions start at a worktree's root",
                root.display()
            )));
        }
        if canonical != path {
            return Err(Error::Invalid(format!(
                "worktree path {shown} leads to {}, which is not a discovered worktree",
                canonical.display()
            )));
        }
        Err(Error::Invalid(format!(
            "worktree path {shown} is not a discovered worktree; \
             {WORKTREE_PATTERNS_ENV} decides which repositories are offered"
        )))
    }

    /// Worktrees by canonical path (as a string, the order the UI shows).
    fn find(&self) -> BTreeMap<String, Found> {
        let mut out = BTreeMap::new();
        for pattern in &self.patterns {
            for dir in expand(pattern) {
                for found in worktrees_of(&dir) {
                    match found.path.to_str() {
                        Some(key) => {
                            out.entry(key.to_owned()).or_insert(found);
                        }
                        None => tracing::warn!(
                            path = %found.path.display(),
                            "worktree path is not UTF-8; skipped"
                        ),
                    }
                }
            }
        }
        out
    }
}

/// Refuses what a pattern must not be.
fn check_pattern(pattern: &str) -> Result<()> {
    let shown = shown(pattern);
    if pattern.contains('\0') {
        return Err(Error::Invalid(format!(
            "{WORKTREE_PATTERNS_ENV}: pattern {shown} contains a NUL byte"
        )));
    }
    if pattern.starts_with('~') {
        return Err(Error::Invalid(format!(
            "{WORKTREE_PATTERNS_ENV}: pattern {shown} starts with `~`, which is not expanded; \
             write the absolute path, e.g. /home/me/projects/*"
        )));
    }
    if !pattern.starts_with('/') {
        return Err(Error::Invalid(format!(
            "{WORKTREE_PATTERNS_ENV}: pattern {shown} is relative; patterns must be absolute paths"
        )));
    }
    if pattern.split('/').any(|c| c == "." || c == "..") {
        return Err(Error::Invalid(format!(
            "{WORKTREE_PATTERNS_ENV}: pattern {shown} contains a `.` or `..` component; \
             write the path it means"
        )));
    }
    Ok(())
}

/// A user-supplied string for an error message: quoted, escaped, shortened.
fn shown(s: &str) -> String {
    const MAX_CHARS: usize = 200;
    if s.chars().count() > MAX_CHARS {
        let head: String = s.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    } else {
        format!("{s:?}")
    }
}

fn has_wildcard(component: &str) -> bool {
    component.contains(['*', '?'])
}

/// A pattern made ready to match: its literal head (the components before
/// the first wildcard, which may pass through symlinks: the operator wrote
/// them) canonicalised, and the components from the first wildcard on.
struct Pattern<'a> {
    head: PathBuf,
    rest: Vec<&'a str>,
}

impl<'a> Pattern<'a> {
    /// `None` when the head does not exist: the pattern matches nothing.
    fn new(pattern: &'a str) -> Option<Self> {
        let components: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
        let literal = components
            .iter()
            .position(|c| has_wildcard(c))
            .unwrap_or(components.len());
        let mut head = PathBuf::from("/");
        head.extend(&components[..literal]);
        let head = std::fs::canonicalize(&head).ok()?;
        Some(Pattern {
            head,
            rest: components[literal..].to_vec(),
        })
    }

    /// Whether [`expand`] lists `path`, a canonical path, for this pattern,
    /// decided from the path alone: it lies below the head by exactly one
    /// name per remaining component, each name matching its component
    /// ([`component_matches`]), and is a real directory. A canonical path
    /// has no symlink in it, so the directories on the way are real too.
    fn covers(&self, path: &Path) -> bool {
        let Ok(tail) = path.strip_prefix(&self.head) else {
            return false;
        };
        let mut names = tail.components();
        for component in &self.rest {
            let name = match names.next() {
                Some(Component::Normal(name)) => name.to_str(),
                _ => None,
            };
            if !name.is_some_and(|name| component_matches(component, name)) {
                return false;
            }
        }
        names.next().is_none() && (self.rest.is_empty() || is_real_dir(path))
    }
}

/// Whether the directory entry `name` matches the pattern component
/// `component`: the one rule [`expand`] and [`Pattern::covers`] share. A
/// literal component matches itself only; a wildcard one matches as a glob,
/// but not a hidden name unless the component starts with `.` too.
fn component_matches(component: &str, name: &str) -> bool {
    if has_wildcard(component) {
        (!name.starts_with('.') || component.starts_with('.')) && glob_match(component, name)
    } else {
        name == component
    }
}

/// The directories a pattern matches, canonical.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let Some(pattern) = Pattern::new(pattern) else {
        return Vec::new();
    };
    let mut current = vec![pattern.head];
    for component in &pattern.rest {
        let mut next = Vec::new();
        for dir in &current {
            if has_wildcard(component) {
                let entries = match std::fs::read_dir(dir) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot list a directory a worktree pattern covers");
                        continue;
                    }
                };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if component_matches(component, name) && is_real_dir(&entry.path()) {
                        next.push(entry.path());
                    }
                }
            } else {
                // The one name `component_matches` accepts: no listing needed.
                let candidate = dir.join(component);
                if is_real_dir(&candidate) {
                    next.push(candidate);
                }
            }
        }
        current = next;
    }
    current.sort();
    current
}

/// Whether discovery lists `path`, a canonical path: some directory a
/// pattern matches contributes it ([`worktrees_of`], the rule discovery
/// uses). Only the directories that can contribute `path` are looked at:
/// `path` itself, its git directory, its repository's common directory and
/// that repository's main worktree. The cost is opening `path`'s repository
/// and, for each of those few directories a pattern matches, what
/// [`worktrees_of`] reads of it (that one repository and its linked
/// worktrees), whatever the number of repositories the patterns cover.
fn is_discovered(patterns: &[Pattern<'_>], path: &Path) -> bool {
    // Discovery skips worktrees whose path is not UTF-8.
    if path.to_str().is_none() {
        return false;
    }
    let Ok(repo) = Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr])
    else {
        return false;
    };
    let mut candidates = vec![
        path.to_path_buf(),
        repo.path().to_path_buf(),
        repo.commondir().to_path_buf(),
        main_repo_path(&repo),
    ];
    if let Ok(main) = Repository::open_ext(
        repo.commondir(),
        RepositoryOpenFlags::NO_SEARCH,
        &[] as &[&OsStr],
    ) && let Some(workdir) = main.workdir()
    {
        candidates.push(workdir.to_path_buf());
    }
    let mut candidates: Vec<PathBuf> = candidates
        .into_iter()
        .filter_map(|c| std::fs::canonicalize(c).ok())
        .collect();
    candidates.sort();
    candidates.dedup();
    candidates
        .iter()
        .filter(|dir| patterns.iter().any(|p| p.covers(dir)))
        .any(|dir| worktrees_of(dir).iter().any(|f| f.path == path))
}

/// A directory, not a symlink to one.
fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The worktrees a matched directory contributes: a repository gives itself
/// (unless bare) and its valid linked worktrees; a linked worktree gives
/// itself only, so matching it does not pull in a main repository the
/// patterns do not cover.
fn worktrees_of(dir: &Path) -> Vec<Found> {
    // NO_SEARCH: a plain directory inside some repository is not that repository.
    let repo = match Repository::open_ext(dir, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr]) {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot open repository; skipped");
            return Vec::new();
        }
    };
    let main = main_repo_path(&repo);
    let mut out = Vec::new();
    if let Some(workdir) = repo.workdir()
        && let Ok(path) = std::fs::canonicalize(workdir)
    {
        out.push(Found {
            path,
            repo: main.clone(),
        });
    }
    if repo.is_worktree() {
        return out;
    }
    let names = match repo.worktrees() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(repo = %main.display(), error = %e, "cannot list linked worktrees");
            return out;
        }
    };
    // Names that are not UTF-8 cannot be looked up by `find_worktree`.
    for name in names.iter().filter_map(|n| n.ok().flatten()) {
        let linked = match repo.find_worktree(name) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(repo = %main.display(), worktree = name, error = %e, "cannot open linked worktree");
                continue;
            }
        };
        // A worktree whose directory was deleted is prunable, not usable.
        if linked.validate().is_err() {
            continue;
        }
        if let Ok(path) = std::fs::canonicalize(linked.path()) {
            out.push(Found {
                path,
                repo: main.clone(),
            });
        }
    }
    out
}

/// The main repository's path: the work directory owning the common `.git`
/// directory, or the bare repository itself.
fn main_repo_path(repo: &Repository) -> PathBuf {
    let common = repo.commondir();
    let common = std::fs::canonicalize(common).unwrap_or_else(|_| common.to_path_buf());
    match (
        common.file_name().and_then(OsStr::to_str),
        common.parent(),
        repo.is_bare(),
    ) {
        (Some(".git"), Some(parent), _) => parent.to_path_buf(),
        _ => common,
    }
}

/// Reads a worktree's branch, HEAD and status.
fn describe(found: &Found) -> Option<Worktree> {
    let path = found.path.to_str()?.to_owned();
    let repo_path = found.repo.to_string_lossy().into_owned();
    let repo = match Repository::open_ext(
        &found.path,
        RepositoryOpenFlags::NO_SEARCH,
        &[] as &[&OsStr],
    ) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %path, error = %e, "worktree vanished or cannot be opened; skipped");
            return None;
        }
    };
    let (branch, head) = head_of(&repo);
    Some(Worktree {
        path,
        repo: repo_path,
        branch,
        head,
        dirty: is_dirty(&repo, &found.path),
        busy_session: None,
        new_worktree: false,
    })
}

/// What a session started in the existing worktree `path` records: its
/// branch and HEAD (the base of the session's diff).
pub fn session_worktree(path: &Path) -> duraclaw_core::protocol::SessionWorktree {
    let (branch, base) = match Repository::open_ext(
        path,
        RepositoryOpenFlags::NO_SEARCH,
        &[] as &[&OsStr],
    ) {
        Ok(repo) => head_of(&repo),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the worktree's HEAD");
            (None, None)
        }
    };
    duraclaw_core::protocol::SessionWorktree {
        path: path.display().to_string(),
        branch,
        base,
        created: false,
        origin: None,
    }
}

/// The checked-out branch (`None` when detached) and HEAD commit id (`None`
/// before the first commit).
fn head_of(repo: &Repository) -> (Option<String>, Option<String>) {
    match repo.head() {
        Ok(head) => {
            let commit = head.peel_to_commit().ok().map(|c| c.id().to_string());
            let branch = if repo.head_detached().unwrap_or(false) {
                None
            } else {
                head.shorthand().ok().map(str::to_owned)
            };
            (branch, commit)
        }
        // An unborn branch: HEAD names it, no commit yet.
        Err(_) => {
            let branch = repo
                .find_reference("HEAD")
                .ok()
                .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_owned))
                .map(|t| t.strip_prefix("refs/heads/").unwrap_or(&t).to_owned());
            (branch, None)
        }
    }
}

/// Any change to tracked files, or any untracked file; ignored files and the
/// inside of untracked or ignored directories are not walked.
fn is_dirty(repo: &Repository, path: &Path) -> bool {
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .recurse_ignored_dirs(false)
        .include_unmodified(false);
    match repo.statuses(Some(&mut options)) {
        Ok(statuses) => !statuses.is_empty(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read worktree status; reporting it dirty");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_checked() {
        assert!(WorktreeIndex::from_env_value("/data/projects/app*, /srv/x").is_ok());
        assert_eq!(
            WorktreeIndex::from_env_value(" /a , ,/b* ,")
                .map(|i| i.patterns().to_vec())
                .ok(),
            Some(vec!["/a".to_owned(), "/b*".to_owned()])
        );
        assert!(WorktreeIndex::from_env_value("").is_ok_and(|i| i.patterns().is_empty()));
        for bad in [
            "projects/*",
            "~/projects/*",
            "/a/../b",
            "/a/./b",
            "/a\0b",
            "./x",
        ] {
            let err = WorktreeIndex::from_env_value(bad)
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains(WORKTREE_PATTERNS_ENV)),
                "{bad:?} gave {err:?}"
            );
        }
        let tilde = WorktreeIndex::from_env_value("~/x")
            .err()
            .map(|e| e.to_string());
        assert!(tilde.is_some_and(|e| e.contains("not expanded")));
    }

    #[test]
    fn shown_is_bounded_and_escaped() {
        assert_eq!(shown("a\0b"), "\"a\\0b\"");
        assert!(shown(&"x".repeat(10_000)).len() < 300);
    }
}
