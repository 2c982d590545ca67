#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Worktree discovery and resolution against real repositories built with
//! git2 in a temporary directory.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use duraclaw_core::Error;
use duraclaw_core::protocol::Worktree;
use duraclaw_gateway::worktree::WorktreeIndex;
use git2::{Repository, RepositoryInitOptions, Signature};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The layout every test uses:
///
/// ```text
/// base/app1              repo on `main`, one commit, .gitignore'd target/
/// base/app1-feature      linked worktree of app1 on `feature`, an untracked file
/// elsewhere/app1-detached linked worktree of app1, detached HEAD
/// base/app2              repo on `main`, clean
/// base/app3-notgit       plain directory
/// base/app4-link         symlink to outside/repo (a repo no pattern covers)
/// base/app5-empty        repo with no commit yet
/// base/app1/sub          a directory inside app1
/// base/app1/escape       symlink to outside/
/// outside/repo           repo no pattern covers
/// outside/link-to-app1   symlink to base/app1
/// ```
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    head1: String,
}

impl Fixture {
    fn base(&self) -> PathBuf {
        self.root.join("base")
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn s(&self, rel: &str) -> String {
        self.p(rel).to_str().unwrap().to_owned()
    }

    fn index(&self) -> WorktreeIndex {
        WorktreeIndex::new(vec![format!("{}/app*", self.base().display())]).unwrap()
    }
}

fn init(path: &Path) -> Repository {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head("main");
    Repository::init_opts(path, &opts).unwrap()
}

fn commit_all(repo: &Repository, message: &str) -> String {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("test", "test@example.invalid").unwrap();
    let parents: Vec<git2::Commit<'_>> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    let base = root.join("base");
    fs::create_dir_all(&base).unwrap();
    fs::create_dir_all(root.join("elsewhere")).unwrap();
    fs::create_dir_all(root.join("outside")).unwrap();

    let app1 = init(&base.join("app1"));
    fs::write(base.join("app1/README.md"), "app1\n").unwrap();
    fs::write(base.join("app1/.gitignore"), "target/\n*.log\n/escape\n").unwrap();
    commit_all(&app1, "first");
    // Ignored content never makes a worktree dirty.
    fs::create_dir_all(base.join("app1/target/debug")).unwrap();
    fs::write(base.join("app1/target/debug/out"), "x").unwrap();
    fs::write(base.join("app1/build.log"), "x").unwrap();
    // Tracked, so app1 stays clean.
    fs::create_dir_all(base.join("app1/sub")).unwrap();
    fs::write(base.join("app1/sub/.gitkeep"), "").unwrap();
    let head1 = commit_all(&app1, "sub");

    app1.worktree("feature", &base.join("app1-feature"), None)
        .unwrap();
    fs::write(base.join("app1-feature/new.txt"), "untracked\n").unwrap();

    app1.worktree("detached", &root.join("elsewhere/app1-detached"), None)
        .unwrap();
    let detached = Repository::open(root.join("elsewhere/app1-detached")).unwrap();
    detached
        .set_head_detached(git2::Oid::from_str(&head1).unwrap())
        .unwrap();

    let app2 = init(&base.join("app2"));
    fs::write(base.join("app2/main.rs"), "fn main() {}\n").unwrap();
    commit_all(&app2, "first");

    fs::create_dir_all(base.join("app3-notgit/src")).unwrap();

    let outside = init(&root.join("outside/repo"));
    fs::write(root.join("outside/repo/secret"), "s\n").unwrap();
    commit_all(&outside, "first");
    symlink(root.join("outside/repo"), base.join("app4-link")).unwrap();
    symlink(root.join("outside"), base.join("app1/escape")).unwrap();
    symlink(base.join("app1"), root.join("outside/link-to-app1")).unwrap();

    init(&base.join("app5-empty"));

    Fixture {
        _dir: dir,
        root,
        head1,
    }
}

fn invalid_message(result: duraclaw_core::Result<PathBuf>) -> String {
    match result {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn discovers_repos_and_linked_worktrees() {
    let f = fixture();
    let found = f.index().discover().unwrap();
    let app1 = f.s("base/app1");
    let expected = vec![
        Worktree {
            path: f.s("base/app1"),
            repo: app1.clone(),
            branch: Some("main".into()),
            head: Some(f.head1.clone()),
            dirty: false,
            busy_session: None,
            new_worktree: false,
        },
        Worktree {
            path: f.s("base/app1-feature"),
            repo: app1.clone(),
            branch: Some("feature".into()),
            head: Some(f.head1.clone()),
            dirty: true,
            busy_session: None,
            new_worktree: false,
        },
        Worktree {
            path: f.s("base/app2"),
            repo: f.s("base/app2"),
            branch: Some("main".into()),
            head: found
                .iter()
                .find(|w| w.path == f.s("base/app2"))
                .and_then(|w| w.head.clone()),
            dirty: false,
            busy_session: None,
            new_worktree: false,
        },
        Worktree {
            path: f.s("base/app5-empty"),
            repo: f.s("base/app5-empty"),
            branch: Some("main".into()),
            head: None,
            dirty: false,
            busy_session: None,
            new_worktree: false,
        },
        Worktree {
            path: f.s("elsewhere/app1-detached"),
            repo: app1,
            branch: None,
            head: Some(f.head1.clone()),
            dirty: false,
            busy_session: None,
            new_worktree: false,
        },
    ];
    assert_eq!(found, expected);
    let app2_head = found[2].head.as_deref().unwrap();
    assert_eq!(app2_head.len(), 40);
}

#[test]
fn duplicate_and_overlapping_patterns_list_each_worktree_once() {
    let f = fixture();
    let base = f.base();
    let index = WorktreeIndex::new(vec![
        format!("{}/app*", base.display()),
        format!("{}/app1", base.display()),
        format!("{}/app?", base.display()),
        format!("{}/*-feature", base.display()),
    ])
    .unwrap();
    let paths: Vec<String> = index
        .discover()
        .unwrap()
        .into_iter()
        .map(|w| w.path)
        .collect();
    assert_eq!(
        paths,
        vec![
            f.s("base/app1"),
            f.s("base/app1-feature"),
            f.s("base/app2"),
            f.s("base/app5-empty"),
            f.s("elsewhere/app1-detached"),
        ]
    );
}

#[test]
fn a_matched_linked_worktree_does_not_pull_in_its_main_repository() {
    let f = fixture();
    let index = WorktreeIndex::new(vec![format!("{}/*-feature", f.base().display())]).unwrap();
    let found = index.discover().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, f.s("base/app1-feature"));
    assert_eq!(found[0].repo, f.s("base/app1"));
    assert_eq!(found[0].branch.as_deref(), Some("feature"));
}

#[test]
fn a_pattern_through_a_symlinked_prefix_matches() {
    let f = fixture();
    symlink(f.base(), f.p("base-link")).unwrap();
    let index = WorktreeIndex::new(vec![format!("{}/app2", f.p("base-link").display())]).unwrap();
    let found = index.discover().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, f.s("base/app2"));
}

#[test]
fn dirty_follows_tracked_and_untracked_changes_not_ignored_ones() {
    let f = fixture();
    let index = WorktreeIndex::new(vec![f.s("base/app2")]).unwrap();
    let dirty = || index.discover().unwrap()[0].dirty;
    assert!(!dirty());
    fs::write(f.p("base/app2/ignored.log"), "x").unwrap();
    assert!(dirty(), "app2 has no .gitignore: a new file is untracked");
    fs::write(f.p("base/app2/.gitignore"), "*.log\n").unwrap();
    let repo = Repository::open(f.p("base/app2")).unwrap();
    commit_all(&repo, "ignore logs");
    assert!(!dirty(), "ignored files do not count");
    fs::write(f.p("base/app2/main.rs"), "fn main() { println!() }\n").unwrap();
    assert!(dirty(), "a changed tracked file counts");
    fs::write(f.p("base/app2/main.rs"), "fn main() {}\n").unwrap();
    assert!(!dirty());
    fs::create_dir_all(f.p("base/app2/new/deep/er")).unwrap();
    fs::write(f.p("base/app2/new/deep/er/file"), "x").unwrap();
    assert!(dirty(), "an untracked directory with a file counts");
}

#[test]
fn a_deleted_linked_worktree_is_not_listed() {
    let f = fixture();
    fs::remove_dir_all(f.p("elsewhere/app1-detached")).unwrap();
    let paths: Vec<String> = f
        .index()
        .discover()
        .unwrap()
        .into_iter()
        .map(|w| w.path)
        .collect();
    assert!(!paths.contains(&f.s("elsewhere/app1-detached")));
    assert!(paths.contains(&f.s("base/app1-feature")));
}

#[test]
fn non_repositories_and_symlinks_out_of_the_pattern_are_not_listed() {
    let f = fixture();
    let paths: BTreeSet<String> = f
        .index()
        .discover()
        .unwrap()
        .into_iter()
        .map(|w| w.path)
        .collect();
    assert!(!paths.contains(&f.s("base/app3-notgit")));
    assert!(!paths.contains(&f.s("base/app4-link")));
    assert!(!paths.contains(&f.s("outside/repo")));
    // A plain directory inside a repository is not that repository.
    let inside = WorktreeIndex::new(vec![f.s("base/app1/sub")]).unwrap();
    assert!(inside.discover().unwrap().is_empty());
    // No match at all is an empty list, not an error.
    let none = WorktreeIndex::new(vec![f.s("nothing/here/*")]).unwrap();
    assert!(none.discover().unwrap().is_empty());
}

#[test]
fn wildcards_skip_hidden_names_unless_asked() {
    let f = fixture();
    let hidden = init(&f.p("base/.hidden"));
    drop(hidden);
    let star = WorktreeIndex::new(vec![format!("{}/*", f.base().display())]).unwrap();
    assert!(
        !star
            .discover()
            .unwrap()
            .iter()
            .any(|w| w.path == f.s("base/.hidden"))
    );
    let dot = WorktreeIndex::new(vec![format!("{}/.h*", f.base().display())]).unwrap();
    assert_eq!(dot.discover().unwrap()[0].path, f.s("base/.hidden"));
}

#[test]
fn resolve_accepts_worktree_roots() {
    let f = fixture();
    let index = f.index();
    for rel in [
        "base/app1",
        "base/app1-feature",
        "base/app2",
        "elsewhere/app1-detached",
    ] {
        assert_eq!(index.resolve(&f.s(rel)).unwrap(), f.p(rel), "{rel}");
    }
    // Spelled with a trailing slash or `.`, it is still the root.
    assert_eq!(
        index.resolve(&format!("{}/", f.s("base/app1"))).unwrap(),
        f.p("base/app1")
    );
    assert_eq!(
        index.resolve(&format!("{}/.", f.s("base/app1"))).unwrap(),
        f.p("base/app1")
    );
}

#[test]
fn a_symlink_to_a_worktree_resolves_to_the_worktree_itself() {
    let f = fixture();
    assert_eq!(
        f.index().resolve(&f.s("outside/link-to-app1")).unwrap(),
        f.p("base/app1")
    );
}

#[test]
fn resolve_refuses_everything_else() {
    let f = fixture();
    let index = f.index();
    let base = f.base();
    let cases: Vec<(String, &str)> = vec![
        (format!("{}/app1/../app2", base.display()), "`..`"),
        (format!("{}/app1/..", base.display()), "`..`"),
        (
            format!("{}/app1/../../outside/repo", base.display()),
            "`..`",
        ),
        ("app1".into(), "relative"),
        ("base/app1".into(), "relative"),
        ("".into(), "relative"),
        ("~/app1".into(), "relative"),
        ("/etc".into(), "not a discovered worktree"),
        ("/".into(), "not a discovered worktree"),
        (format!("{}/app1\0", base.display()), "NUL"),
        ("\0".into(), "NUL"),
        (f.s("base/app1/sub"), "inside worktree"),
        (f.s("base/app1/README.md"), "inside worktree"),
        (f.s("base/app1/.git"), "inside worktree"),
        (f.s("base/app1/escape"), "leads to"),
        (f.s("base/app4-link"), "leads to"),
        (f.s("base/app3-notgit"), "not a discovered worktree"),
        (f.s("outside/repo"), "not a discovered worktree"),
        (f.s("base/does-not-exist"), "not a discovered worktree"),
        (format!("/{}", "a".repeat(5000)), "longer than"),
    ];
    for (requested, why) in cases {
        let message = invalid_message(index.resolve(&requested));
        assert!(
            message.contains(why),
            "{requested:?}: {message:?} does not say {why:?}"
        );
    }
}

#[test]
fn an_empty_index_resolves_nothing() {
    let f = fixture();
    let index = WorktreeIndex::from_env_value("").unwrap();
    assert!(index.discover().unwrap().is_empty());
    invalid_message(index.resolve(&f.s("base/app1")));
}

#[test]
fn resolve_never_panics_and_returns_only_discovered_worktrees() {
    let f = fixture();
    let index = f.index();
    let allowed: BTreeSet<PathBuf> = index
        .discover()
        .unwrap()
        .into_iter()
        .map(|w| PathBuf::from(w.path))
        .collect();
    assert_eq!(allowed.len(), 5);

    let segment = prop::sample::select(vec![
        "app1",
        "app1-feature",
        "app2",
        "app3-notgit",
        "app4-link",
        "app5-empty",
        "base",
        "elsewhere",
        "app1-detached",
        "outside",
        "link-to-app1",
        "repo",
        "escape",
        "sub",
        ".git",
        "..",
        ".",
        "",
        "\0",
        "*",
        "app?",
        "~",
    ]);
    let root = f.root.to_str().unwrap().to_owned();
    let prefix = prop::sample::select(vec![
        String::new(),
        "/".to_owned(),
        root.clone(),
        format!("{root}/base"),
        format!("{root}/base/"),
    ]);
    let built = (prefix, prop::collection::vec(segment, 0..6))
        .prop_map(|(prefix, segs)| format!("{prefix}/{}", segs.join("/")));
    let exact = (
        prop::sample::select(allowed.iter().cloned().collect::<Vec<_>>()),
        prop::sample::select(vec!["", "/", "/.", "//", "/./", "/..", "/sub", "/.git"]),
    )
        .prop_map(|(path, suffix)| format!("{}{suffix}", path.display()));
    let strategy = prop_oneof![any::<String>(), "[/.a-z0-9\\x00~*-]{0,40}", built, exact,];
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::cell::Cell::new(0usize);
    runner
        .run(&strategy, |requested| {
            if let Ok(path) = index.resolve(&requested) {
                prop_assert!(
                    allowed.contains(&path),
                    "{requested:?} resolved to {path:?}"
                );
                accepted.set(accepted.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // The generator reaches the accepting branch too, not only refusals.
    assert!(accepted.get() > 0);
}

/// Every directory, file and symlink under `dir`, symlinks not followed.
fn every_path(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            every_path(&path, out);
        }
    }
}

/// `resolve` checks one path without listing every worktree; whatever the
/// patterns, it must accept exactly the paths whose canonical form the
/// listing holds.
#[test]
fn resolve_accepts_exactly_what_discovery_lists() {
    let f = fixture();
    // More shapes than the fixture: a bare repository with a linked
    // worktree, a repository nested in a worktree, a linked worktree inside
    // its main worktree, a hidden repository, a symlink to a prefix.
    let bare = Repository::init_bare(f.p("bare.git")).unwrap();
    let seed = init(&f.p("seed"));
    fs::write(f.p("seed/x"), "x\n").unwrap();
    let seed_head = commit_all(&seed, "first");
    let mut remote = seed.remote_anonymous(f.s("bare.git").as_str()).unwrap();
    remote
        .push(&["refs/heads/main:refs/heads/main"], None)
        .unwrap();
    drop(remote);
    bare.set_head("refs/heads/main").unwrap();
    bare.worktree("from-bare", &f.p("elsewhere/from-bare"), None)
        .unwrap();
    let nested = init(&f.p("base/app2/vendor"));
    fs::write(f.p("base/app2/vendor/lib.rs"), "\n").unwrap();
    commit_all(&nested, "vendored");
    let app2 = Repository::open(f.p("base/app2")).unwrap();
    app2.worktree("inner", &f.p("base/app2/wt-inner"), None)
        .unwrap();
    init(&f.p("base/.hidden"));
    symlink(f.base(), f.p("base-link")).unwrap();
    assert_eq!(seed_head.len(), 40);

    let mut paths = vec![f.root.clone()];
    every_path(&f.root, &mut paths);
    let root = f.root.display();
    let pattern_sets: Vec<Vec<String>> = vec![
        vec![format!("{root}/base/app*")],
        vec![format!("{root}/base/*")],
        vec![format!("{root}/base/.h*")],
        vec![format!("{root}/base/app1")],
        vec![format!("{root}/base/app1/.git")],
        vec![format!("{root}/*/*")],
        vec![format!("{root}/*")],
        vec![format!("{root}/elsewhere/*")],
        vec![format!("{root}/base-link/app?")],
        vec![format!("{root}/bare*")],
        vec![format!("{root}/base/app2/*")],
        vec![format!("{root}/base/*/vendor"), format!("{root}/seed")],
        vec![],
    ];
    let mut accepted = 0;
    for patterns in pattern_sets {
        let index = WorktreeIndex::new(patterns.clone()).unwrap();
        let listed: BTreeSet<PathBuf> = index
            .discover()
            .unwrap()
            .into_iter()
            .map(|w| PathBuf::from(w.path))
            .collect();
        for path in &paths {
            let requested = path.to_str().unwrap();
            let expected = fs::canonicalize(path).ok().filter(|c| listed.contains(c));
            match (index.resolve(requested), expected) {
                (Ok(got), Some(want)) => {
                    assert_eq!(got, want, "{patterns:?}: {requested}");
                    accepted += 1;
                }
                (Err(Error::Invalid(_)), None) => {}
                (got, want) => {
                    panic!(
                        "{patterns:?}: {requested} resolved to {got:?}, the listing says {want:?}"
                    )
                }
            }
        }
    }
    // Both answers are reached, for many patterns.
    assert!(accepted > 20, "{accepted}");
}

#[test]
fn resolve_through_a_symlinked_pattern_prefix() {
    let f = fixture();
    symlink(f.base(), f.p("base-link")).unwrap();
    let index = WorktreeIndex::new(vec![format!("{}/app?", f.p("base-link").display())]).unwrap();
    assert_eq!(
        index.resolve(&f.s("base-link/app2")).unwrap(),
        f.p("base/app2")
    );
    assert_eq!(index.resolve(&f.s("base/app2")).unwrap(), f.p("base/app2"));
    // `app?` covers app1 and app2 only.
    let message = invalid_message(index.resolve(&f.s("base/app5-empty")));
    assert!(message.contains("not a discovered worktree"), "{message}");
}

#[test]
fn resolve_a_linked_worktree_by_its_own_pattern_or_its_main_repositorys() {
    let f = fixture();
    // Matched itself: accepted, and its main repository is not.
    let own = WorktreeIndex::new(vec![f.s("elsewhere/*")]).unwrap();
    assert_eq!(
        own.resolve(&f.s("elsewhere/app1-detached")).unwrap(),
        f.p("elsewhere/app1-detached")
    );
    let message = invalid_message(own.resolve(&f.s("base/app1")));
    assert!(message.contains("not a discovered worktree"), "{message}");
    // Not matched, but its main repository is: accepted (as listed).
    let main = WorktreeIndex::new(vec![f.s("base/app1")]).unwrap();
    assert_eq!(
        main.resolve(&f.s("elsewhere/app1-detached")).unwrap(),
        f.p("elsewhere/app1-detached")
    );
    // Deleted, and pruned from nothing: refused.
    fs::remove_dir_all(f.p("elsewhere/app1-detached")).unwrap();
    let message = invalid_message(main.resolve(&f.s("elsewhere/app1-detached")));
    assert!(message.contains("not a discovered worktree"), "{message}");
}

#[test]
fn resolve_refuses_a_repository_the_patterns_do_not_match() {
    let f = fixture();
    init(&f.p("base/other"));
    let message = invalid_message(f.index().resolve(&f.s("base/other")));
    assert!(message.contains("not a discovered worktree"), "{message}");
    // A repository nested in a worktree is inside that worktree.
    init(&f.p("base/app2/vendor"));
    let message = invalid_message(f.index().resolve(&f.s("base/app2/vendor")));
    assert!(
        message.contains(&format!("inside worktree {}", f.s("base/app2"))),
        "{message}"
    );
    // Its `.git` directory is not a worktree root either.
    let message = invalid_message(f.index().resolve(&f.s("base/app2/.git")));
    assert!(message.contains("inside worktree"), "{message}");
}
