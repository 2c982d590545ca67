//! A fresh linked worktree per session, and its removal.
//!
//! [`create`] makes, under the gateway's worktree root, a linked worktree
//! of a discovered repository on a new branch `duraclaw/<short id>` at a
//! base branch or commit. A taken branch, directory or worktree name gets
//! a suffix (`-2`, `-3`, …): nothing existing is ever overwritten. A
//! creation that fails part-way undoes what it did (the branch, the
//! directory, the worktree entry) before it answers.
//!
//! [`remove`] deletes such a worktree's directory and entry, refusing one
//! with uncommitted changes unless forced. The branch stays unless it
//! still points at the commit it was made at: committed work is never lost.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use duraclaw_core::{Error, Result};
use git2::{BranchType, Repository, RepositoryOpenFlags, StatusOptions, WorktreeAddOptions};

/// The prefix of the branches the gateway makes.
pub const BRANCH_PREFIX: &str = "duraclaw/";

/// How many suffixed names are tried before giving up.
const MAX_ATTEMPTS: u32 = 100;

/// A worktree [`create`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Its canonical path.
    pub path: PathBuf,
    /// Its new branch, e.g. `duraclaw/01hx2k9a`.
    pub branch: String,
    /// The commit the branch starts at.
    pub base: String,
}

/// What [`remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The branch was deleted (it had no commit of its own).
    pub branch_deleted: bool,
}

/// A removal refused because the worktree has uncommitted changes.
pub fn is_dirty_refusal(e: &Error) -> bool {
    matches!(e, Error::Invalid(m) if m.starts_with("worktree has uncommitted changes"))
}

fn git_err(what: &str, e: git2::Error) -> Error {
    Error::other(what.to_owned(), e)
}

/// `s` reduced to what a branch and directory name may hold: ASCII
/// letters, digits, `-` and `_` (anything else becomes `-`), lower case.
fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let out = out.trim_matches('-').to_owned();
    if out.is_empty() { "repo".into() } else { out }
}

/// The last eight characters of a session id (ULIDs: the random part).
pub fn short_id(session_id: &str) -> String {
    let s = slug(session_id);
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(8)).collect()
}

/// Opens the main repository of the worktree at `path`.
fn main_repo(path: &Path) -> Result<Repository> {
    let repo = Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr])
        .map_err(|e| git_err("cannot open the repository", e))?;
    if repo.is_worktree() {
        Repository::open(repo.commondir()).map_err(|e| git_err("cannot open the repository", e))
    } else {
        Ok(repo)
    }
}

/// Makes a linked worktree of `from`'s repository under `root` for
/// session `session_id`, on a new branch at `base` (a branch, else any
/// revision; `from`'s HEAD when `None`).
pub fn create(from: &Path, base: Option<&str>, root: &Path, session_id: &str) -> Result<Created> {
    let repo = main_repo(from)?;
    let base_commit = match base {
        Some(b) if b.starts_with('-') || b.contains(['\0', '\n']) => {
            return Err(Error::Invalid(format!("{b:?} is not a branch name")));
        }
        Some(b) => match repo.find_branch(b, BranchType::Local) {
            Ok(branch) => branch.get().peel_to_commit(),
            Err(_) => repo.revparse_single(b).and_then(|o| o.peel_to_commit()),
        }
        .map_err(|_| {
            Error::Invalid(format!(
                "no branch or commit {b:?} in the repository of {}",
                from.display()
            ))
        })?,
        None => {
            let at = Repository::open_ext(from, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr])
                .and_then(|r| r.head().and_then(|h| h.peel_to_commit()).map(|c| c.id()))
                .map_err(|_| {
                    Error::Invalid(format!(
                        "{} has no commit to start a new worktree from",
                        from.display()
                    ))
                })?;
            repo.find_commit(at)
                .map_err(|e| git_err("cannot read the base commit", e))?
        }
    };
    std::fs::create_dir_all(root).map_err(|e| {
        Error::Invalid(format!(
            "cannot create the worktree root {}: {e}",
            root.display()
        ))
    })?;
    let root = std::fs::canonicalize(root)
        .map_err(|e| Error::other(format!("cannot resolve {}", root.display()), e))?;
    let repo_name = repo
        .workdir()
        .unwrap_or_else(|| repo.path())
        .file_name()
        .and_then(OsStr::to_str)
        .map(slug)
        .unwrap_or_else(|| "repo".into());
    let short = short_id(session_id);
    for attempt in 1..=MAX_ATTEMPTS {
        let suffix = if attempt == 1 {
            String::new()
        } else {
            format!("-{attempt}")
        };
        let branch = format!("{BRANCH_PREFIX}{short}{suffix}");
        let name = format!("duraclaw-{short}{suffix}");
        let path = root.join(format!("{repo_name}-{short}{suffix}"));
        let taken = repo.find_branch(&branch, BranchType::Local).is_ok()
            || repo.find_worktree(&name).is_ok()
            || std::fs::symlink_metadata(&path).is_ok();
        if taken {
            continue;
        }
        return add(&repo, &base_commit, &branch, &name, &path);
    }
    Err(Error::Invalid(format!(
        "no free worktree name for session {session_id} under {} after {MAX_ATTEMPTS} tries",
        root.display()
    )))
}

/// Creates the branch and the worktree; undoes both on failure.
fn add(
    repo: &Repository,
    base: &git2::Commit<'_>,
    branch: &str,
    name: &str,
    path: &Path,
) -> Result<Created> {
    // `force: false`: a branch made in the meantime is not overwritten.
    let mut made = repo
        .branch(branch, base, false)
        .map_err(|e| git_err("cannot create the session's branch", e))?;
    let undo = |made: &mut git2::Branch<'_>, why: Error| -> Error {
        // Only what this call made: the directory did not exist before.
        if std::fs::symlink_metadata(path).is_ok()
            && let Err(e) = std::fs::remove_dir_all(path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a half-made worktree");
        }
        if let Ok(wt) = repo.find_worktree(name) {
            let mut opts = git2::WorktreePruneOptions::new();
            opts.valid(true).locked(true);
            if let Err(e) = wt.prune(Some(&mut opts)) {
                tracing::warn!(worktree = name, error = %e, "cannot prune a half-made worktree");
            }
        }
        if let Err(e) = made.delete() {
            tracing::warn!(branch, error = %e, "cannot delete a half-made branch");
        }
        why
    };
    let reference = made.get().name().map(str::to_owned);
    let added = match reference {
        Ok(r) => repo.find_reference(&r).and_then(|reference| {
            let mut opts = WorktreeAddOptions::new();
            opts.reference(Some(&reference));
            repo.worktree(name, path, Some(&opts))
        }),
        Err(e) => Err(e),
    };
    if let Err(e) = added {
        return Err(undo(
            &mut made,
            Error::Invalid(format!(
                "cannot create a worktree at {}: {}",
                path.display(),
                e.message()
            )),
        ));
    }
    match std::fs::canonicalize(path) {
        Ok(canonical) => {
            tracing::info!(path = %canonical.display(), branch, base = %base.id(), "created a worktree");
            Ok(Created {
                path: canonical,
                branch: branch.to_owned(),
                base: base.id().to_string(),
            })
        }
        Err(e) => Err(undo(
            &mut made,
            Error::other(format!("cannot resolve {}", path.display()), e),
        )),
    }
}

/// The files with uncommitted changes (untracked included), at most a few.
pub fn uncommitted(path: &Path) -> Result<Vec<String>> {
    let repo = Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr])
        .map_err(|e| git_err("cannot open the worktree", e))?;
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|e| git_err("cannot read the worktree's status", e))?;
    Ok(statuses
        .iter()
        .filter_map(|s| s.path().ok().map(str::to_owned))
        .collect())
}

/// Removes the linked worktree at `path` (on `branch`, made at `base`).
/// Refused while it has uncommitted changes unless `force`.
pub fn remove(path: &Path, branch: &str, base: &str, force: bool) -> Result<Removed> {
    let dirty = uncommitted(path)?;
    if !dirty.is_empty() && !force {
        let shown: Vec<&str> = dirty.iter().take(5).map(String::as_str).collect();
        let more = dirty.len().saturating_sub(shown.len());
        return Err(Error::Invalid(format!(
            "worktree has uncommitted changes: {}{}; commit them, keep the worktree, or remove it with force",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )));
    }
    let repo = main_repo(path)?;
    let names = repo
        .worktrees()
        .map_err(|e| git_err("cannot list the repository's worktrees", e))?;
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let linked = names
        .iter()
        .flatten()
        .flatten()
        .filter_map(|n| repo.find_worktree(n).ok())
        .find(|w| std::fs::canonicalize(w.path()).is_ok_and(|p| p == target))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{} is not a linked worktree of its repository",
                path.display()
            ))
        })?;
    std::fs::remove_dir_all(&target)
        .map_err(|e| Error::other(format!("cannot remove {}", target.display()), e))?;
    let mut opts = git2::WorktreePruneOptions::new();
    opts.valid(true).locked(true);
    linked
        .prune(Some(&mut opts))
        .map_err(|e| git_err("cannot prune the worktree entry", e))?;
    let mut branch_deleted = false;
    if let Ok(mut b) = repo.find_branch(branch, BranchType::Local)
        && b.get().target().map(|t| t.to_string()).as_deref() == Some(base)
    {
        match b.delete() {
            Ok(()) => branch_deleted = true,
            Err(e) => tracing::warn!(branch, error = %e, "cannot delete the session's branch"),
        }
    }
    tracing::info!(path = %target.display(), branch, branch_deleted, "removed a worktree");
    Ok(Removed { branch_deleted })
}
