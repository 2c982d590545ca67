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
//! - [`executor`]: a stand-in executor that hands the bench each gateway
//!   session's event sink, and the git worktree a session needs;
//! - [`lanes`]: the per-session ingest lanes of the orchestrator's gateway
//!   link read loop (`duraclaw_orchestrator::lanes`, re-exported);
//! - [`quick`]: whether this is a quick (CI) run; [`rss`]: this process's
//!   resident set size.

// A benchmark that cannot set itself up has nothing to measure: it stops
// with the reason.
#![allow(clippy::expect_used, clippy::panic)]

pub mod executor;
pub use duraclaw_orchestrator::lanes;
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

/// Resident set size of this process, in bytes (Linux: `/proc/self/statm`).
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("the resident field of statm");
    pages * 4096
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    use duraclaw_core::clock::{Clock, SystemClock};
    SystemClock.now_ms()
}

/// A ratio of two paths measured in interleaved rounds.
///
/// Criterion measures each path on its own, one after the other; on a
/// shared machine the load can change between the two. [`interleaved`]
/// runs them in turn (ours, raw, raw, ours, …) and takes the median of
/// the per-round ratios, which load that changes slowly cancels out of.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// What was compared.
    pub name: String,
    /// Rounds run (one run of each path per round).
    pub rounds: usize,
    /// Median of ours / raw over the rounds.
    pub median: f64,
    /// Lowest round ratio.
    pub min: f64,
    /// First quartile of the round ratios.
    pub q1: f64,
    /// Third quartile of the round ratios.
    pub q3: f64,
    /// Highest round ratio.
    pub max: f64,
    /// Median time of one run of ours, in microseconds.
    pub ours_us: f64,
    /// Median time of one run of the baseline, in microseconds.
    pub raw_us: f64,
}

impl Ratio {
    /// One line of JSON, prefixed `RATIO `, for collecting from the output.
    pub fn line(&self) -> String {
        format!(
            "RATIO {{\"name\":\"{}\",\"rounds\":{},\"ratio\":{:.3},\"q1\":{:.3},\"q3\":{:.3},\"min\":{:.3},\"max\":{:.3},\"ours_us\":{:.1},\"raw_us\":{:.1}}}",
            self.name,
            self.rounds,
            self.median,
            self.q1,
            self.q3,
            self.min,
            self.max,
            self.ours_us,
            self.raw_us
        )
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs `ours` and `raw` in turn for `rounds` rounds (alternating which
/// goes first), each call timing one run, prints the [`Ratio`] line and
/// returns it.
pub fn interleaved(
    name: &str,
    rounds: usize,
    ours: &mut dyn FnMut() -> std::time::Duration,
    raw: &mut dyn FnMut() -> std::time::Duration,
) -> Ratio {
    let mut o = Vec::with_capacity(rounds);
    let mut r = Vec::with_capacity(rounds);
    for i in 0..rounds.max(1) {
        let (a, b) = if i % 2 == 0 {
            let a = ours();
            (a, raw())
        } else {
            let b = raw();
            (ours(), b)
        };
        o.push(a.as_secs_f64() * 1e6);
        r.push(b.as_secs_f64() * 1e6);
    }
    let mut ratios: Vec<f64> = o.iter().zip(&r).map(|(a, b)| a / b.max(1e-9)).collect();
    let ratio = Ratio {
        name: name.to_owned(),
        rounds: o.len(),
        median: median(&mut ratios),
        q1: quantile(&ratios, 0.25),
        q3: quantile(&ratios, 0.75),
        min: ratios.first().copied().unwrap_or(0.0),
        max: ratios.last().copied().unwrap_or(0.0),
        ours_us: median(&mut o),
        raw_us: median(&mut r),
    };
    println!("{}", ratio.line());
    ratio
}

/// Times `iters` runs of `one` (for criterion's `iter_custom`).
pub fn repeat(iters: u64, one: &mut dyn FnMut() -> std::time::Duration) -> std::time::Duration {
    (0..iters).map(|_| one()).sum()
}

/// A session's actor over `store` as `duraclaw_orchestrator::Orchestrator::actor`
/// opens it: its log sends a gateway's events to subscribers while they
/// commit.
pub async fn orchestrator_actor(
    store: duraclaw_core::store::DynSessionStore,
) -> duraclaw_core::Result<duraclaw_core::backend::actor::SessionActor> {
    let log = duraclaw_core::backend::actor::SessionLog::open(store)
        .await?
        .publishing_before_commit();
    duraclaw_core::backend::actor::SessionActor::with_log(
        log,
        duraclaw_core::clock::SystemClock::shared(),
    )
    .await
}
