#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! A fresh worktree per session, on real git repositories in a temporary
//! directory and a real SQLite outbox: ten sessions from one repository
//! each get their own worktree and run at once; taken names get a suffix;
//! a failed creation leaves nothing behind; removal takes a clean worktree
//! and refuses a dirty one unless forced; the session's diff equals
//! `git diff <base>`.

use std::path::{Path, PathBuf};
use std::process::Command as Cli;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duraclaw_core::protocol::{
    Command, CommandEnvelope, Event, Execute, GatewayRequest, NOTICE_WORKTREE, NewWorktree,
    SessionDiff, SessionWorktree,
};
use duraclaw_gateway::diff::{DiffLimits, session_diff};
use duraclaw_gateway::scripted::{Script, ScriptedExecutor, Step};
use duraclaw_gateway::server::{Gateway, GatewayOptions};
use duraclaw_gateway::worktree::WorktreeIndex;
use duraclaw_store::SqliteDirectory;

mod support;
use support::init_repo;

const DEADLINE: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    gateway: Gateway,
}

impl Fixture {
    fn repo(&self) -> PathBuf {
        self.root.join("projects/app")
    }
    fn wt_root(&self) -> PathBuf {
        self.root.join("wt")
    }
}

/// A gateway over `projects/*` making new worktrees under `wt/`, whose
/// sessions stall (they run until stopped).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    init_repo(&root.join("projects/app"));
    let directory = Arc::new(SqliteDirectory::open(&root.join("gw.db")).await.unwrap());
    let script = Script {
        turns: vec![vec![Step::Stall]],
    };
    let gateway = Gateway::new(GatewayOptions {
        directory,
        executor: Arc::new(ScriptedExecutor::new(script)),
        worktrees: WorktreeIndex::new(vec![format!("{}/projects/*", root.display())])
            .unwrap()
            .with_new_worktree_root(root.join("wt")),
        approval_timeout: None,
    })
    .await
    .unwrap();
    Fixture {
        _dir: dir,
        root,
        gateway,
    }
}

fn new_session(repo: &Path, base: Option<&str>) -> Command {
    Command::Execute(Execute {
        new_worktree: Some(NewWorktree {
            base: base.map(str::to_owned),
        }),
        ..Execute::new(repo.display().to_string(), "go")
    })
}

async fn start(f: &Fixture, session: &str, command: Command) -> Result<(), String> {
    let r = f
        .gateway
        .apply(CommandEnvelope {
            id: format!("x-{session}"),
            session_id: session.into(),
            command,
        })
        .await;
    match r.error {
        None if r.ok => Ok(()),
        e => Err(format!("{e:?}")),
    }
}

/// The worktree session `id`'s first event records.
async fn recorded(f: &Fixture, id: &str) -> SessionWorktree {
    let s = f.gateway.session(id).await.unwrap();
    let first = s.log().store().read_after(0, 1).await.unwrap();
    match first[0].event().unwrap() {
        Event::Notice(n) if n.code == NOTICE_WORKTREE => *n.worktree.unwrap(),
        other => panic!("first event {other:?}"),
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Cli::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn branches(repo: &Path) -> Vec<String> {
    let repo = git2::Repository::open(repo).unwrap();
    repo.branches(Some(git2::BranchType::Local))
        .unwrap()
        .map(|b| b.unwrap().0.name().unwrap().unwrap().to_owned())
        .collect()
}

fn worktree_names(repo: &Path) -> Vec<String> {
    let repo = git2::Repository::open(repo).unwrap();
    repo.worktrees()
        .unwrap()
        .iter()
        .flatten()
        .flatten()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sessions_from_one_repository_each_get_their_own_worktree_and_run_at_once() {
    let f = fixture().await;
    let status_before = git(&f.repo(), &["status", "--porcelain"]);
    let mut paths = Vec::new();
    for i in 0..10 {
        let id = format!("01SESSION0000000000000{i:04}");
        start(&f, &id, new_session(&f.repo(), None)).await.unwrap();
        let w = recorded(&f, &id).await;
        assert!(w.created, "{w:?}");
        assert!(
            w.branch.as_deref().unwrap().starts_with("duraclaw/"),
            "{w:?}"
        );
        assert!(Path::new(&w.path).starts_with(f.wt_root().canonicalize().unwrap()));
        paths.push((id, w.path));
    }
    let distinct: std::collections::BTreeSet<_> = paths.iter().map(|p| &p.1).collect();
    assert_eq!(distinct.len(), 10, "{paths:?}");
    // All ten run at once, each holding its own worktree.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = f.gateway.worktrees().await.unwrap();
        let busy: Vec<_> = paths
            .iter()
            .filter(|(id, p)| {
                list.iter()
                    .any(|w| &w.path == p && w.busy_session.as_deref() == Some(id))
            })
            .collect();
        if busy.len() == 10 {
            assert!(list.iter().all(|w| w.new_worktree));
            break;
        }
        assert!(Instant::now() < deadline, "busy: {busy:?} of {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, _) in &paths {
        assert!(f.gateway.session(id).await.unwrap().is_running().await);
    }
    // The requested repository is untouched and free.
    assert_eq!(git(&f.repo(), &["status", "--porcelain"]), status_before);
}

#[tokio::test]
async fn taken_names_get_a_suffix_and_nothing_is_overwritten() {
    let f = fixture().await;
    let id = "01SESSIONAAAAAAAAAAAAAAAAAAAAAAAAA";
    // Someone else's branch and directory of the names it would take.
    git(&f.repo(), &["branch", "duraclaw/aaaaaaaa"]);
    std::fs::create_dir_all(f.wt_root().join("app-aaaaaaaa-2")).unwrap();
    std::fs::write(f.wt_root().join("app-aaaaaaaa-2/mine.txt"), "keep me").unwrap();
    start(&f, id, new_session(&f.repo(), None)).await.unwrap();
    let w = recorded(&f, id).await;
    assert_eq!(w.branch.as_deref(), Some("duraclaw/aaaaaaaa-3"), "{w:?}");
    assert!(w.path.ends_with("app-aaaaaaaa-3"), "{w:?}");
    assert_eq!(
        std::fs::read_to_string(f.wt_root().join("app-aaaaaaaa-2/mine.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(
        git(&f.repo(), &["rev-parse", "duraclaw/aaaaaaaa"]),
        git(&f.repo(), &["rev-parse", "HEAD"])
    );
}

#[tokio::test]
async fn a_failed_creation_leaves_nothing_behind() {
    let f = fixture().await;
    let before = (branches(&f.repo()), worktree_names(&f.repo()));
    // A base that does not exist: refused before anything is made.
    let e = start(
        &f,
        "01SESSIONBBBBBBBB",
        new_session(&f.repo(), Some("no-such-branch")),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("no branch or commit \\\"no-such-branch\\\""),
        "{e}"
    );
    // A stray file where the worktree's entry would go: the branch is made,
    // then the worktree fails, and the branch and directory are undone.
    let admin = f.repo().join(".git/worktrees");
    std::fs::create_dir_all(&admin).unwrap();
    std::fs::write(admin.join("duraclaw-cccccccc"), "not a worktree").unwrap();
    let e = start(&f, "01SESSIONCCCCCCCC", new_session(&f.repo(), None))
        .await
        .unwrap_err();
    assert!(e.contains("cannot create a worktree"), "{e}");
    assert_eq!((branches(&f.repo()), worktree_names(&f.repo())), before);
    let left: Vec<_> = std::fs::read_dir(f.wt_root())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // No session exists for either.
    assert!(f.gateway.session("01SESSIONBBBBBBBB").await.is_err());
    assert!(f.gateway.session("01SESSIONCCCCCCCC").await.is_err());
}

#[tokio::test]
async fn remove_takes_a_clean_worktree_and_refuses_a_dirty_one_unless_forced() {
    let f = fixture().await;
    let remove = |id: &str, force| GatewayRequest::RemoveWorktree {
        session_id: id.into(),
        force,
    };
    // Clean: removed, and its branch (no commits of its own) deleted.
    start(&f, "01SESSIONDDDDDDDD", new_session(&f.repo(), None))
        .await
        .unwrap();
    let clean = recorded(&f, "01SESSIONDDDDDDDD").await;
    let out = f
        .gateway
        .request(remove("01SESSIONDDDDDDDD", false))
        .await
        .unwrap();
    assert_eq!(out["branch_deleted"], true, "{out}");
    assert!(!Path::new(&clean.path).exists());
    assert!(
        !worktree_names(&f.repo())
            .iter()
            .any(|n| n.ends_with("dddddddd"))
    );
    assert!(
        !f.gateway
            .session("01SESSIONDDDDDDDD")
            .await
            .unwrap()
            .is_running()
            .await
    );

    // Dirty: refused, the session and its files untouched; forced: removed,
    // the branch kept since it has a commit of its own.
    start(&f, "01SESSIONEEEEEEEE", new_session(&f.repo(), None))
        .await
        .unwrap();
    let dirty = recorded(&f, "01SESSIONEEEEEEEE").await;
    let wt = PathBuf::from(&dirty.path);
    std::fs::write(wt.join("work.txt"), "one\n").unwrap();
    git(&wt, &["add", "work.txt"]);
    git(
        &wt,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "work",
        ],
    );
    std::fs::write(wt.join("notes.txt"), "uncommitted\n").unwrap();
    let refused = f
        .gateway
        .request(remove("01SESSIONEEEEEEEE", false))
        .await
        .unwrap_err();
    assert_eq!(refused.code, "worktree_dirty", "{refused:?}");
    assert!(refused.message.contains("notes.txt"), "{refused:?}");
    assert!(wt.join("notes.txt").exists());
    let deadline = Instant::now() + DEADLINE;
    while !f
        .gateway
        .session("01SESSIONEEEEEEEE")
        .await
        .unwrap()
        .is_running()
        .await
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = f
        .gateway
        .request(remove("01SESSIONEEEEEEEE", true))
        .await
        .unwrap();
    assert_eq!(out["branch_deleted"], false, "{out}");
    assert!(!wt.exists());
    assert!(branches(&f.repo()).contains(dirty.branch.as_ref().unwrap()));

    // A worktree the gateway did not make is never removed.
    start(
        &f,
        "01SESSIONFFFFFFFF",
        Command::Execute(Execute::new(f.repo().display().to_string(), "go")),
    )
    .await
    .unwrap();
    let e = f
        .gateway
        .request(remove("01SESSIONFFFFFFFF", true))
        .await
        .unwrap_err();
    assert_eq!(e.code, "worktree_not_created", "{e:?}");
    assert!(f.repo().join("README.md").exists());
}

#[tokio::test]
async fn the_diff_equals_git_diff_of_the_base_and_truncates_past_the_limits() {
    let f = fixture().await;
    start(&f, "01SESSIONGGGGGGGG", new_session(&f.repo(), None))
        .await
        .unwrap();
    let w = recorded(&f, "01SESSIONGGGGGGGG").await;
    let wt = PathBuf::from(&w.path);
    let base = w.base.clone().unwrap();
    assert_eq!(git(&wt, &["rev-parse", "HEAD"]).trim(), base);
    // A committed change and an uncommitted one to tracked files.
    std::fs::write(wt.join("lib.rs"), "pub fn a() {}\n").unwrap();
    git(&wt, &["add", "lib.rs"]);
    git(
        &wt,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "lib",
        ],
    );
    std::fs::write(wt.join("README.md"), "hello\nworld <script>x</script>\n").unwrap();
    let value = f
        .gateway
        .request(GatewayRequest::Diff {
            session_id: "01SESSIONGGGGGGGG".into(),
        })
        .await
        .unwrap();
    let diff: SessionDiff = serde_json::from_value(value).unwrap();
    assert_eq!(diff.base.as_deref(), Some(base.as_str()));
    assert_eq!(diff.patch(), git(&wt, &["diff", &base]));
    let readme = diff.files.iter().find(|f| f.path == "README.md").unwrap();
    assert_eq!(
        (readme.additions, readme.deletions, readme.status.as_str()),
        (1, 0, "modified")
    );
    let lib = diff.files.iter().find(|f| f.path == "lib.rs").unwrap();
    assert_eq!(lib.status, "added");

    // Untracked files count as new; a binary file is marked; a file over
    // the per-file limit keeps its stats and is truncated.
    std::fs::write(wt.join("new.txt"), "fresh\n").unwrap();
    std::fs::write(wt.join("blob.bin"), [0u8, 1, 2, 0, 255]).unwrap();
    let big: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(wt.join("big.txt"), &big).unwrap();
    let limits = DiffLimits {
        max_file_bytes: 4096,
        ..DiffLimits::default()
    };
    let diff = session_diff(&wt, Some(&base), limits).unwrap();
    let by = |p: &str| diff.files.iter().find(|f| f.path == p).unwrap().clone();
    assert_eq!(by("new.txt").status, "added");
    assert!(by("new.txt").patch.contains("+fresh"));
    assert!(by("blob.bin").binary);
    let big = by("big.txt");
    assert!(
        big.truncated && big.patch.is_empty() && big.additions == 2000,
        "{big:?}"
    );
    assert!(diff.truncated);
    // The total limit: files past it keep their stats only.
    let tight = DiffLimits {
        max_total_bytes: 300,
        ..DiffLimits::default()
    };
    let diff = session_diff(&wt, Some(&base), tight).unwrap();
    let total: usize = diff.files.iter().map(|f| f.patch.len()).sum();
    assert!(total <= 300 && diff.truncated, "{total}");
    assert!(diff.files.iter().any(|f| f.truncated && f.additions > 0));
    // Control characters grow sixfold as JSON: the reply still fits.
    let controls: String = (0..3000).map(|_| "\u{1}\u{2}\u{3}\n").collect();
    std::fs::write(wt.join("controls.txt"), &controls).unwrap();
    let json = DiffLimits {
        max_json_bytes: 20_000,
        ..DiffLimits::default()
    };
    let diff = session_diff(&wt, Some(&base), json).unwrap();
    assert!(serde_json::to_string(&diff).unwrap().len() <= 20_000);
    assert!(
        diff.files
            .iter()
            .any(|f| f.path == "controls.txt" && f.truncated)
    );
    assert!(
        diff.files
            .iter()
            .any(|f| f.path == "README.md" && !f.patch.is_empty())
    );
}
