//! A stand-in executor for the benches that run the real gateway: it
//! starts nothing and hands each session's event sink to the bench, which
//! then emits the events itself; and the git worktree a gateway session
//! needs.

use std::path::Path;

use async_trait::async_trait;
use duraclaw_core::Result;
use duraclaw_core::approval::DynApprovalGate;
use duraclaw_core::executor::{DynEventSink, Executor, ExecutorSession, StartSpec};
use tokio::sync::mpsc;

/// An executor that sends each started session's event sink on its
/// channel.
#[derive(Debug)]
pub struct Grab(pub mpsc::UnboundedSender<DynEventSink>);

/// A session that is always running and does nothing.
#[derive(Debug)]
struct Idle;

#[async_trait]
impl ExecutorSession for Idle {
    async fn send_message(&self, _text: &str) -> Result<()> {
        Ok(())
    }
    async fn interrupt(&self) -> Result<()> {
        Ok(())
    }
    async fn shutdown(&self) -> Result<()> {
        Ok(())
    }
    fn is_running(&self) -> bool {
        true
    }
}

#[async_trait]
impl Executor for Grab {
    async fn start(
        &self,
        _spec: StartSpec,
        _gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>> {
        // The bench may have stopped listening; the session still starts.
        let _ = self.0.send(sink);
        Ok(Box::new(Idle))
    }
}

/// A git repository at `path` with one commit: a worktree a gateway
/// session can run in.
pub fn init_repo(path: &Path) {
    std::fs::create_dir_all(path).expect("create the repository's directory");
    let repo = git2::Repository::init(path).expect("git init");
    std::fs::write(path.join("README.md"), "bench\n").expect("write a file");
    let mut index = repo.index().expect("the index");
    index.add_path(Path::new("README.md")).expect("git add");
    let tree = repo
        .find_tree(index.write_tree().expect("write the tree"))
        .expect("the tree");
    let sig = git2::Signature::now("bench", "bench@example.com").expect("a signature");
    repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[])
        .expect("git commit");
}
