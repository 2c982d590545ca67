//! Core's conformance suite against the DO-SQL store in real Durable
//! Objects: builds the test worker (`tests-worker/`) with worker-build,
//! starts `wrangler dev` on a free local port with its state in a temporary
//! directory, calls `GET /conformance` and requires every case of
//! `STORE_CASES` and `SQL_CASES`, and the worker's Durable Object cases, to
//! answer "ok".
//!
//! The tools and the wrangler process: see `duraclaw_testkit::wrangler`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use duraclaw_core::conformance::{SQL_CASES, STORE_CASES};
use duraclaw_testkit::wrangler::{
    Tools, build_worker, free_port, start_wrangler, wait_ready, worker_dir,
};

/// How long the whole suite may take inside the Durable Objects.
const SUITE_WITHIN: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_passes_in_a_durable_object() {
    let tools = Tools::find();
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        worker_dir().join("wrangler.toml"),
        dir.path().join("wrangler.toml"),
    )
    .unwrap();

    let t = Instant::now();
    build_worker(&tools, &dir.path().join("build"));
    let built = t.elapsed();

    let t = Instant::now();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut wrangler = start_wrangler(&tools, dir.path(), port);
    let http = reqwest::Client::builder()
        .timeout(SUITE_WITHIN)
        .build()
        .unwrap();
    wait_ready(&mut wrangler, &http, &base).await;
    let ready = t.elapsed();

    let t = Instant::now();
    let run = format!("run-{}", std::process::id());
    let response = http
        .get(format!("{base}/conformance?run={run}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /conformance failed: {e}\n{}", wrangler.log_tail()));
    let status = response.status();
    let body = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "GET /conformance answered {status}: {body}\n{}",
        wrangler.log_tail()
    );
    let results: BTreeMap<String, String> = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET /conformance answered no case map ({e}): {body}"));
    let suite = t.elapsed();
    eprintln!(
        "DO conformance: worker-build {built:.1?}, wrangler ready {ready:.1?}, {} cases {suite:.1?}",
        results.len()
    );

    // Every core case, and the worker's own Durable Object cases.
    let mut failures: Vec<String> = STORE_CASES
        .iter()
        .chain(SQL_CASES)
        .filter(|case| !results.contains_key(**case))
        .map(|case| format!("{case}: not run"))
        .collect();
    failures.extend(
        results
            .iter()
            .filter(|(_, outcome)| *outcome != "ok")
            .map(|(case, outcome)| format!("{case}: {outcome}")),
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed in a Durable Object:\n{}\n\nwrangler's log:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n"),
        wrangler.log_tail()
    );
}
