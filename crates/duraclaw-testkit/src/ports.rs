//! Ports for the hosts tests start, kept for the whole test process.
//!
//! A port a test picks and lets go of before its server binds it (or
//! between two runs of a server it restarts) must not go to anyone else
//! meanwhile. Two things could take it: the kernel, which hands out ports
//! of its ephemeral range to every outgoing connection and every
//! `bind(0)`, and another test process picking at the same moment. So the
//! ports come from outside the ephemeral range, and each one is reserved
//! across processes by an exclusive `flock` on a file named after it,
//! held until the process exits (the kernel drops the lock then, whatever
//! way it ends).

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

/// The lowest port handed out (below it are many well-known services).
const LOWEST: u16 = 20_000;

/// The locks of this process's ports, held until it exits.
static HELD: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

/// A port free on 127.0.0.1 now and reserved for this process: no other
/// test process gets it, and it is outside the kernel's ephemeral range,
/// so no outgoing connection or `bind(0)` takes it while a host that
/// listens on it restarts.
pub fn reserve() -> u16 {
    let Some(range) = outside_ephemeral(ephemeral_range()) else {
        return kernel_pick();
    };
    let dir = std::env::temp_dir().join("duraclaw-test-ports");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let (low, high) = (u32::from(*range.start()), u32::from(*range.end()));
    let span = high - low + 1;
    let start = seed() % span;
    for i in 0..span {
        let port = u16::try_from(low + (start + i) % span).expect("a port");
        if let Some(lock) = try_reserve(&dir, port) {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free port in {range:?}: every one is reserved or bound");
}

/// The lock on `port`'s file, if no other process holds it and the port
/// is free to bind now.
fn try_reserve(dir: &std::path::Path, port: u16) -> Option<Flock<File>> {
    let path: PathBuf = dir.join(port.to_string());
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ok()?;
    // A lock is per open file: one this process already holds on the
    // port's file (through another open) refuses this one too.
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
    TcpListener::bind(("127.0.0.1", port))
        .is_ok()
        .then_some(lock)
}

/// The kernel's ephemeral port range (Linux's default when unreadable).
fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>());
            Some(it.next()?.ok()?..=it.next()?.ok()?)
        })
        .unwrap_or(32_768..=60_999)
}

/// The larger of the spans outside `ephemeral` (and above [`LOWEST`]), if
/// it holds a thousand ports or more.
fn outside_ephemeral(ephemeral: RangeInclusive<u16>) -> Option<RangeInclusive<u16>> {
    let below = (*ephemeral.start() > LOWEST).then(|| LOWEST..=*ephemeral.start() - 1);
    let above =
        (*ephemeral.end() < u16::MAX).then(|| (*ephemeral.end()).max(LOWEST) + 1..=u16::MAX);
    [below, above]
        .into_iter()
        .flatten()
        .filter(|r| r.end() >= r.start() && r.end() - r.start() >= 1000)
        .max_by_key(|r| r.end() - r.start())
}

/// A port the kernel says is free now (from its ephemeral range).
fn kernel_pick() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Where a process starts looking, so that concurrent processes spread.
fn seed() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().wrapping_mul(2_654_435_761)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() {
        let ephemeral = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| reserve()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port handed out twice: {ports:?}"
        );
        if outside_ephemeral(ephemeral.clone()).is_some() {
            assert!(
                ports.iter().all(|p| !ephemeral.contains(p)),
                "a port from the ephemeral range {ephemeral:?}: {ports:?}"
            );
        }
    }

    #[test]
    fn a_reserved_port_is_locked_against_other_processes() {
        let port = reserve();
        let path = std::env::temp_dir()
            .join("duraclaw-test-ports")
            .join(port.to_string());
        // Another open file description is what another process has.
        let other = OpenOptions::new().write(true).open(&path).unwrap();
        assert!(
            Flock::lock(other, FlockArg::LockExclusiveNonblock).is_err(),
            "port {port}'s lock could be taken again"
        );
    }

    #[test]
    fn the_span_outside_is_the_larger_one() {
        assert_eq!(outside_ephemeral(32_768..=60_999), Some(LOWEST..=32_767));
        assert_eq!(outside_ephemeral(1_024..=40_000), Some(40_001..=u16::MAX));
        assert_eq!(outside_ephemeral(1_024..=65_000), None);
    }
}
