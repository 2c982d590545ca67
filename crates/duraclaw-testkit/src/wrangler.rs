//! Running a worker under `wrangler dev`: the Cloudflare toolchain's paths,
//! a worker-build of a worker crate (the test worker by default), a
//! `wrangler dev` process stopped when dropped, and logging in through the
//! Worker's routes.
//!
//! The tools come from `$WORKER_BUILD_BIN`, `$WASM_BINDGEN_BIN`,
//! `$ESBUILD_BIN` and `$WRANGLER_BIN`, else from the per-user cache that
//! `scripts/install-tools.sh` fills. Without them a test fails and says
//! what to install; it never skips. The build skips wasm-opt: it changes no
//! behaviour the tests check and costs most of an incremental build.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::target_tmpdir;
pub use crate::{free_port, log_tail, read_log, repo_root};

pub const INSTALL_HINT: &str = "run scripts/install-tools.sh node22 wrangler wasm-bindgen worker-build \
     (scripts/test.sh installs them too)";

/// How long wrangler may take to answer `/health` on a busy machine.
pub const READY_WITHIN: Duration = Duration::from_secs(180);

/// The conformance test worker (`crates/duraclaw-cf/tests-worker`).
pub fn worker_dir() -> PathBuf {
    repo_root().join("crates/duraclaw-cf/tests-worker")
}

/// The Cloudflare toolchain's paths.
pub struct Tools {
    pub worker_build: PathBuf,
    pub wasm_bindgen: PathBuf,
    pub esbuild: PathBuf,
    pub wrangler: PathBuf,
}

impl Tools {
    /// From the environment, else from what scripts/tool-env.sh prints for
    /// the per-user cache. Panics with the install command when missing.
    pub fn find() -> Tools {
        let cached = cached_tool_env();
        let get = |name: &str| -> Option<PathBuf> {
            std::env::var_os(name)
                .map(PathBuf::from)
                .or_else(|| cached.get(name).map(PathBuf::from))
                .filter(|p| p.exists())
        };
        let required = [
            "WORKER_BUILD_BIN",
            "WASM_BINDGEN_BIN",
            "ESBUILD_BIN",
            "WRANGLER_BIN",
        ];
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|n| get(n).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "the Cloudflare toolchain is missing ({}): {INSTALL_HINT}",
            missing.join(", ")
        );
        Tools {
            worker_build: get("WORKER_BUILD_BIN").unwrap(),
            wasm_bindgen: get("WASM_BINDGEN_BIN").unwrap(),
            esbuild: get("ESBUILD_BIN").unwrap(),
            wrangler: get("WRANGLER_BIN").unwrap(),
        }
    }
}

/// `NAME -> path` from `scripts/tool-env.sh`, which lists the installed tools
/// of the per-user cache (empty when bash or the script is unavailable).
pub fn cached_tool_env() -> BTreeMap<String, String> {
    let Ok(out) = Command::new("bash")
        .arg(repo_root().join("scripts/tool-env.sh"))
        .stderr(Stdio::inherit())
        .output()
    else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace('\\', "")))
        .collect()
}

/// A `wrangler dev` in its own process group, stopped (SIGINT, then SIGKILL)
/// when dropped, so a failing assertion never leaves it running.
pub struct Wrangler {
    pub child: Child,
    pub log: PathBuf,
}

impl Wrangler {
    /// CPU time (user + system) used so far by every process of this
    /// wrangler's group — wrangler and workerd, which runs the worker and
    /// its local D1 — read from `/proc`; `None` where that is unavailable.
    pub fn group_cpu(&self) -> Option<Duration> {
        let ticks_per_sec: u64 = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .filter(|t| *t > 0)?;
        let group = self.child.id();
        let mut ticks = 0u64;
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised command name: state ppid pgrp …
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(group) {
                continue;
            }
            let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
            ticks += field(11).unwrap_or(0) + field(12).unwrap_or(0);
        }
        Some(Duration::from_millis(ticks * 1000 / ticks_per_sec))
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Wrangler {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // workerd may outlive wrangler in the group.
                let _ = killpg(group, Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Builds the test worker into `out` with worker-build: the release profile a
/// deployment uses, without wasm-opt.
pub fn build_worker(tools: &Tools, out: &Path) {
    build_worker_crate(tools, &worker_dir(), out);
}

/// Builds the worker crate in `crate_dir` into `out`, as [`build_worker`].
pub fn build_worker_crate(tools: &Tools, crate_dir: &Path, out: &Path) {
    // A target directory of its own, inside this build's, so the nested cargo
    // never waits for the lock of the `cargo test` that runs this test.
    let target = target_tmpdir().join("duraclaw-cf-worker");
    let mut cmd = Command::new(&tools.worker_build);
    cmd.args(["--release", "--no-opt", "--out-dir"])
        .arg(out)
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("WASM_BINDGEN_BIN", &tools.wasm_bindgen)
        .env("ESBUILD_BIN", &tools.esbuild);
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tools.worker_build.display()));
    assert!(
        status.success(),
        "worker-build failed ({status}); see its output above"
    );
}

/// The full example's deployable worker (`examples/duraclaw-full/cloudflare`)
/// built into `dir/build`, with its own wrangler.toml in `dir`, the real UI
/// (`ui/dist`) as its assets.
pub fn build_full_example(tools: &Tools, dir: &Path) {
    let crate_dir = repo_root().join("examples/duraclaw-full/cloudflare");
    fs::create_dir_all(dir).unwrap();
    build_worker_crate(tools, &crate_dir, &dir.join("build"));
    let dist = repo_root().join("examples/duraclaw-full/ui/dist");
    let toml = fs::read_to_string(crate_dir.join("wrangler.toml")).unwrap();
    let assets = format!("directory = {:?}", dist.display().to_string());
    let toml = toml.replace("directory = \"../ui/dist\"", &assets);
    assert!(
        toml.contains(&assets),
        "the assets directory of wrangler.toml"
    );
    fs::write(dir.join("wrangler.toml"), toml).unwrap();
}

/// `wrangler dev`'s arguments: on `port`, its state in `dir/state`. The
/// inspector's port too: left to wrangler, every instance takes 9229 when
/// it looks free, and two starting together collide ("Address already in
/// use (socket \"direct:1:default\")", miniflare's name for the inspector
/// proxy's socket).
fn dev_args(dir: &Path, port: u16) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["dev", "--ip", "127.0.0.1", "--port"]
        .into_iter()
        .map(Into::into)
        .collect();
    args.push(port.to_string().into());
    args.push("--inspector-port".into());
    args.push(free_port().to_string().into());
    args.push("--persist-to".into());
    args.push(dir.join("state").into());
    args.push("--show-interactive-dev-session=false".into());
    args
}

pub fn start_wrangler(tools: &Tools, dir: &Path, port: u16) -> Wrangler {
    start_wrangler_logged(tools, dir, port, &[], &dir.join("wrangler.log"))
}

/// Starts `wrangler dev` in `dir` (which holds wrangler.toml) on `port`, its
/// state in `dir/state`, its output in `log`, with `vars` as
/// `--var KEY:VALUE` (on the command line: test values only).
pub fn start_wrangler_logged(
    tools: &Tools,
    dir: &Path,
    port: u16,
    vars: &[(&str, &str)],
    log: &Path,
) -> Wrangler {
    start_wrangler_env(tools, dir, port, vars, &[], log)
}

/// [`start_wrangler_logged`] with `env` set for `wrangler dev` (e.g.
/// `NODE_EXTRA_CA_CERTS`).
pub fn start_wrangler_env(
    tools: &Tools,
    dir: &Path,
    port: u16,
    vars: &[(&str, &str)],
    env: &[(&str, &Path)],
    log: &Path,
) -> Wrangler {
    use std::os::unix::process::CommandExt;
    let out = fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(&tools.wrangler);
    cmd.args(dev_args(dir, port));
    for (k, v) in vars {
        cmd.arg("--var").arg(format!("{k}:{v}"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .current_dir(dir)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("WRANGLER_SEND_ERROR_REPORTS", "false")
        .env("WRANGLER_HIDE_BANNER", "true")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", tools.wrangler.display()));
    Wrangler {
        child,
        log: log.to_owned(),
    }
}

pub async fn wait_ready(wrangler: &mut Wrangler, http: &reqwest::Client, base: &str) {
    wait_until_ready(wrangler, http, &format!("{base}/health"), |t| t == "ok").await;
}

/// Waits until `GET url` answers 2xx with a body `ready` accepts.
pub async fn wait_until_ready(
    wrangler: &mut Wrangler,
    http: &reqwest::Client,
    url: &str,
    ready: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
            && r.text().await.is_ok_and(|t| ready(&t))
        {
            return;
        }
        if let Ok(Some(status)) = wrangler.child.try_wait() {
            panic!(
                "wrangler dev exited ({status}) before it was ready:\n{}",
                wrangler.log_tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "wrangler dev did not answer {url} within {READY_WITHIN:?}:\n{}",
            wrangler.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates the user `name` through the Worker's admin route (bearer
/// `admin_token`) and logs in from `origin`; the session cookie
/// (`duraclaw_session=…`).
pub async fn admin_user_login(
    http: &reqwest::Client,
    base: &str,
    origin: &str,
    admin_token: &str,
    name: &str,
    password: &str,
) -> String {
    let account = serde_json::json!({"username": name, "password": password});
    let r = http
        .post(format!("{base}/api/admin/users"))
        .bearer_auth(admin_token)
        .json(&account)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "creating {name}: {status} {}",
        r.text().await.unwrap_or_default()
    );
    login(http, base, origin, name, password).await
}

/// Logs `name` in from `origin`; the session cookie (`duraclaw_session=…`).
pub async fn login(
    http: &reqwest::Client,
    base: &str,
    origin: &str,
    name: &str,
    password: &str,
) -> String {
    let r = http
        .post(format!("{base}/api/login"))
        .header("Origin", origin)
        .json(&serde_json::json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login {name}");
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()
                .filter(|kv| kv.starts_with("duraclaw_session="))
        })
        .expect("a session cookie")
        .to_owned()
}

/// The pids of process group `group`, from `/proc`.
pub fn group_pids(group: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if rest.split_whitespace().nth(2).and_then(|g| g.parse().ok()) == Some(group) {
            pids.push(pid);
        }
    }
    pids
}

/// A process's command line, its arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `wrangler dev` gets an inspector port of its own, reserved
    /// like the Worker's: two started at once never both take 9229.
    #[test]
    fn every_wrangler_dev_has_an_inspector_port_of_its_own() {
        let inspector = |args: &[std::ffi::OsString]| -> u16 {
            let at = args
                .iter()
                .position(|a| a == "--inspector-port")
                .expect("an --inspector-port argument");
            args[at + 1].to_str().unwrap().parse().unwrap()
        };
        let dir = Path::new("/nonexistent");
        let (a, b) = (dev_args(dir, free_port()), dev_args(dir, free_port()));
        let (a, b) = (inspector(&a), inspector(&b));
        assert_ne!(a, b, "two instances share an inspector port");
        assert_ne!(a, 9229);
        assert_ne!(b, 9229);
    }
}
