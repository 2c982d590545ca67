//! [`Executor`]: runs an agent in a worktree.
//!
//! An executor starts or resumes a session and reports what happens as
//! [`Event`]s to an [`EventSink`]; it asks the [`ApprovalGate`] before every
//! tool call. The shape fits Claude Code's CLI, a scripted executor, and ACP
//! or Codex agents later: nothing here is Claude-specific.
//!
//! [`ApprovalGate`]: crate::approval::ApprovalGate

use std::sync::Arc;

use async_trait::async_trait;

use crate::approval::DynApprovalGate;
use crate::error::Result;
use crate::protocol::Event;
use crate::{SendOutsideWasm, SyncOutsideWasm};

/// How to start a session.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSpec {
    /// The Duraclaw session id.
    pub session_id: String,
    /// The worktree to run in (already validated).
    pub worktree: String,
    /// The first prompt, if any.
    pub prompt: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Permission mode.
    pub permission_mode: Option<String>,
    /// Extra system prompt.
    pub system_prompt: Option<String>,
    /// Resume this executor session instead of starting a new one.
    pub resume: Option<String>,
}

/// Where an executor reports its events, in order.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait EventSink: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Records one event; returns once it is durable (or queued durably).
    async fn emit(&self, event: Event) -> Result<()>;
}

/// A shared, dynamically typed sink.
pub type DynEventSink = Arc<dyn EventSink>;

/// A running session of an executor.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait ExecutorSession: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Sends a follow-up user turn.
    async fn send_message(&self, text: &str) -> Result<()>;

    /// Interrupts the running turn; the session stays usable.
    async fn interrupt(&self) -> Result<()>;

    /// Ends the session and its process.
    async fn shutdown(&self) -> Result<()>;

    /// Ends the session's process at once, giving it no time to finish
    /// anything (it ran a tool nobody allowed). An executor that cannot
    /// do better shuts down.
    async fn kill(&self) -> Result<()> {
        self.shutdown().await
    }

    /// Whether the session's process is still running.
    fn is_running(&self) -> bool;
}

/// Starts agent sessions.
#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait)]
pub trait Executor: std::fmt::Debug + SendOutsideWasm + SyncOutsideWasm {
    /// Whether sessions can start here; the error says why not (e.g.
    /// [`Error::ExecutorUnsupported`](crate::Error::ExecutorUnsupported)
    /// for a CLI older than the minimum). Checked when a gateway starts
    /// and before every session start.
    async fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Starts (or resumes) a session; its events go to `sink`, its tool calls
    /// through `gate`.
    async fn start(
        &self,
        spec: StartSpec,
        gate: DynApprovalGate,
        sink: DynEventSink,
    ) -> Result<Box<dyn ExecutorSession>>;
}

/// A shared, dynamically typed executor.
pub type DynExecutor = Arc<dyn Executor>;
