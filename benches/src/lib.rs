//! Shared helpers for Duraclaw's benchmarks.
//!
//! Every benchmark compares a real Duraclaw path with a raw baseline built
//! from the same parts (rusqlite, tokio-tungstenite) and measured in the
//! same run, so only ratios matter; see `docs/PERFORMANCE.md`.
//!
//! - [`mix`]: the event mix, ~200-byte events plus a few large tool results;
//! - [`ws`]: loopback WebSocket pairs and a client that counts what arrives;
//! - [`raw`]: raw rusqlite connections set up as the SQLite store sets up
//!   its own;
//! - [`quick`]: whether this is a quick (CI) run.

// A benchmark that cannot set itself up has nothing to measure: it stops
// with the reason.
#![allow(clippy::expect_used, clippy::panic)]

pub mod mix;
pub mod raw;
pub mod ws;

/// Whether to run small and once: under `cargo test --benches`, under
/// `cargo bench -- --test`, or with `QUICK=1`. A full run is `cargo bench`,
/// which passes `--bench`.
pub fn quick() -> bool {
    let args: Vec<String> = std::env::args().collect();
    std::env::var_os("QUICK").is_some_and(|v| !v.is_empty() && v != "0")
        || !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test")
}

/// A multi-threaded tokio runtime with two workers, as on the target
/// machine (two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
