//! A session's diff: its worktree's changes since the base commit, as
//! `git diff <base>` shows them, untracked files included as new ones,
//! within size limits.

use std::ffi::OsStr;
use std::path::Path;

use duraclaw_core::protocol::{FileDiff, SessionDiff};
use duraclaw_core::{Error, Result};
use git2::{Delta, DiffFindOptions, DiffOptions, Oid, Patch, Repository, RepositoryOpenFlags};

/// Size limits of a [`SessionDiff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffLimits {
    /// A file whose patch is longer than this is listed with its stats
    /// only (`truncated`).
    pub max_file_bytes: usize,
    /// The files' patches together stay within this; the files past it are
    /// listed with their stats only.
    pub max_total_bytes: usize,
    /// At most this many files are listed; the diff is `truncated` past it.
    pub max_files: usize,
    /// Files larger than this are not read (listed as binary).
    pub max_read_bytes: u64,
    /// The diff as JSON stays within this (control characters take six
    /// bytes escaped): the largest patches are dropped until it does.
    pub max_json_bytes: usize,
}

impl Default for DiffLimits {
    /// 64 KiB a file, 384 KiB in all (the reply stays within one link
    /// frame), 1,000 files, files up to 8 MiB read.
    fn default() -> Self {
        DiffLimits {
            max_file_bytes: 64 * 1024,
            max_total_bytes: 384 * 1024,
            max_files: 1000,
            max_read_bytes: 8 * 1024 * 1024,
            max_json_bytes: 768 * 1024,
        }
    }
}

fn git_err(what: &str, e: git2::Error) -> Error {
    Error::other(what.to_owned(), e)
}

fn status_name(delta: Delta) -> &'static str {
    match delta {
        Delta::Added | Delta::Untracked => "added",
        Delta::Deleted => "deleted",
        Delta::Renamed => "renamed",
        Delta::Copied => "copied",
        Delta::Typechange => "typechange",
        _ => "modified",
    }
}

/// The changes of the worktree at `path` since `base` (every file new when
/// `None`), within `limits`.
pub fn session_diff(path: &Path, base: Option<&str>, limits: DiffLimits) -> Result<SessionDiff> {
    let repo = Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, &[] as &[&OsStr])
        .map_err(|e| git_err("cannot open the worktree", e))?;
    let tree = match base {
        Some(b) => {
            let oid = Oid::from_str(b).map_err(|e| git_err("bad base commit id", e))?;
            let commit = repo
                .find_commit(oid)
                .map_err(|e| git_err("cannot find the base commit", e))?;
            Some(
                commit
                    .tree()
                    .map_err(|e| git_err("cannot read the base tree", e))?,
            )
        }
        None => None,
    };
    let mut opts = DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true)
        .include_typechange(true)
        .max_size(i64::try_from(limits.max_read_bytes).unwrap_or(i64::MAX));
    let mut diff = repo
        .diff_tree_to_workdir_with_index(tree.as_ref(), Some(&mut opts))
        .map_err(|e| git_err("cannot compute the diff", e))?;
    let mut find = DiffFindOptions::new();
    find.renames(true);
    diff.find_similar(Some(&mut find))
        .map_err(|e| git_err("cannot find renames", e))?;
    let mut out = SessionDiff {
        base: base.map(str::to_owned),
        worktree: path.display().to_string(),
        files: Vec::new(),
        truncated: false,
    };
    let mut total = 0usize;
    for (idx, delta) in diff.deltas().enumerate() {
        if out.files.len() >= limits.max_files {
            out.truncated = true;
            break;
        }
        let new_path = delta
            .new_file()
            .path()
            .or_else(|| delta.old_file().path())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old_path = delta
            .old_file()
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| *p != new_path);
        let mut file = FileDiff {
            path: new_path,
            old_path,
            status: status_name(delta.status()).to_owned(),
            ..FileDiff::default()
        };
        let patch = Patch::from_diff(&diff, idx).map_err(|e| git_err("cannot read a patch", e))?;
        file.binary = delta.flags().is_binary();
        if let Some(mut patch) = patch {
            let (_, additions, deletions) = patch
                .line_stats()
                .map_err(|e| git_err("cannot count a patch's lines", e))?;
            file.additions = additions as u64;
            file.deletions = deletions as u64;
            file.binary |= delta.flags().is_binary();
            let text = patch
                .to_buf()
                .map_err(|e| git_err("cannot print a patch", e))?;
            let text = String::from_utf8_lossy(&text).into_owned();
            if text.len() > limits.max_file_bytes || total + text.len() > limits.max_total_bytes {
                file.truncated = true;
                out.truncated = true;
            } else {
                total += text.len();
                file.patch = text;
            }
        }
        out.files.push(file);
    }
    fit(&mut out, limits.max_json_bytes);
    Ok(out)
}

/// Drops the largest patches (the file stays, `truncated`) until the diff
/// as JSON is within `max_json_bytes`.
fn fit(diff: &mut SessionDiff, max_json_bytes: usize) {
    let json_len = |d: &SessionDiff| serde_json::to_string(d).map_or(usize::MAX, |t| t.len());
    while json_len(diff) > max_json_bytes {
        let Some(largest) = diff
            .files
            .iter_mut()
            .filter(|f| !f.patch.is_empty())
            .max_by_key(|f| f.patch.len())
        else {
            break;
        };
        largest.patch.clear();
        largest.truncated = true;
        diff.truncated = true;
    }
}
