//! Test support shared by Duraclaw's crates (not published). Tests and
//! benches depend on it as a dev-dependency instead of including each
//! other's files.
//!
//! - [`local`]: the `duraclaw` binary's processes (`up`, `gateway`,
//!   `user add`), HTTP and WebSocket clients with bounded waits, the
//!   browser suite's `node --test` runner;
//! - [`wrangler`]: the Cloudflare toolchain, worker builds and
//!   `wrangler dev`;
//! - [`gateway`]: the scripted gateway a `wrangler dev` deployment links to;
//! - [`host`]: a deployment under test behind one trait, local or on
//!   Cloudflare; [`api`]: the API suite written once against it, from the
//!   checks of [`contract`] and [`both_hosts`];
//! - [`browser`]: a client on a session's WebSocket checking the order of
//!   what it gets;
//! - [`browser_suite`]: the browser suite's harness (tools, the fake model,
//!   the control endpoint, `node --test`) both hosts' runs use;
//! - [`notify`]: notification action tokens minted as a host mints them;
//! - [`acp_client`]: a minimal Agent Client Protocol client that drives a
//!   real agent over its stdio; [`agents`]: the agents suite's checks;
//!   [`real_agents`]: the pinned real ACP agents set up against the fakes
//!   of their model APIs; [`acp_e2e`]: those agents through the gateway;
//! - [`faults`]: the fault run's proxy, clients and checks;
//!   [`fault_run`]: the fault run written once against [`host::Host`];
//! - [`ports`]: ports for the hosts tests start, kept per process.
//!
//! Helpers panic with a message that says what went wrong: they are for
//! tests only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};

pub mod acp_client;
pub mod acp_e2e;
pub mod agents;
pub mod api;
pub mod both_hosts;
pub mod browser;
pub mod browser_suite;
pub mod contract;
pub mod evict;
pub mod fault_run;
pub mod faults;
pub mod fork;
pub mod gateway;
pub mod host;
pub mod inbox;
pub mod local;
pub mod modes;
pub mod notify;
pub mod ports;
pub mod push_service;
pub mod push_suite;
pub mod real_agents;
pub mod replay;
pub mod rules;
pub mod wrangler;

/// The workspace's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory cargo builds the running test or bench binary into
/// (`target/<profile>`): the test binary lives in its `deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary inside target/<profile>/deps")
        .to_owned()
}

/// The `duraclaw` binary cargo built for the running test or bench
/// (what `CARGO_BIN_EXE_duraclaw` names inside `duraclaw-full`'s tests).
/// Panics when it is not there: only `duraclaw-full`'s tests build it.
pub fn duraclaw_bin() -> PathBuf {
    let bin = profile_dir().join(format!("duraclaw{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: the tests of duraclaw-full build it",
        bin.display()
    );
    bin
}

/// The in-repo scripted ACP agent (`duraclaw-acp-script`, a binary of
/// `duraclaw-gateway`) beside the running test: `cargo test --workspace`
/// builds it; panics naming how to build it when it is not there.
pub fn acp_script_bin() -> PathBuf {
    let bin = profile_dir().join(format!(
        "duraclaw-acp-script{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build -p duraclaw-gateway --bin duraclaw-acp-script` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A scratch directory for tests that outlives a run (cargo's
/// `CARGO_TARGET_TMPDIR`, `target/tmp`).
pub fn target_tmpdir() -> PathBuf {
    let dir = profile_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .join("tmp");
    std::fs::create_dir_all(&dir).expect("create target/tmp");
    dir
}

/// A port free on 127.0.0.1 now and kept for this test process: outside
/// the kernel's ephemeral range and reserved against other test processes
/// (see [`ports`]), so a host restarted on it finds it free.
pub fn free_port() -> u16 {
    ports::reserve()
}

/// A whole log file (empty if unreadable).
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The last few KB of a log file.
pub fn log_tail(path: &Path) -> String {
    let log = read_log(path);
    let start = log.len().saturating_sub(6000);
    let start = (start..log.len())
        .find(|&i| log.is_char_boundary(i))
        .unwrap_or(log.len());
    log[start..].to_owned()
}
