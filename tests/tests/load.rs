//! Load: 500 connections, at most 100 at once, through tlsd under `tcpserver -c
//! 100` with seeded random sizes and hash checks; a soak of short connections with no
//! growth of descriptors or resident memory in the long-lived tcpserver.
//!
//! The soak's count is `STLS_SOAK_CONNECTIONS` (default 10000; tests/README.md gives the
//! time it takes here).

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use stls_tests::client::{self, ClientOpts, End};
use stls_tests::faults::{children, fd_count, vm_rss_kib};
use stls_tests::listener::TcpServer;
use stls_tests::payload::{self, XorShift, KIB, MIB};
use stls_tests::{jobs, pki, proc, require};

const SEED: u64 = 0x6c6f_6164; // "load"

fn ec_env() -> Vec<(&'static str, &'static Path)> {
    let p = pki();
    vec![
        ("CERTFILE", p.ec.cert.as_path()),
        ("KEYFILE", p.ec.key.as_path()),
    ]
}

fn tlsd_prog(args: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![stls_tests::tlsd().into()];
    v.extend(args.iter().map(OsString::from));
    v
}

/// Wait (bounded) until tcpserver has no children left.
fn wait_children_gone(pid: u32, timeout: Duration) -> bool {
    proc::wait_for(timeout, || children(pid).is_empty())
}

/// 500 connections through `tlsd -- cat` under `tcpserver -c 100`, 100 client threads
/// (so at most 100 at once), each connection a seeded random size (0 to 512 KiB, every
/// 25th 2 MiB) sent and echoed in full duplex, with a half-close; every echo is checked
/// by hash and must end with close_notify. Zero failures.
#[test]
fn five_hundred_connections_hundred_at_once_hash_checked() {
    if !require("tcpserver") {
        return;
    }
    const CONNS: usize = 500;
    const THREADS: usize = 100;
    let mut rng = XorShift::new(SEED);
    let sizes: Vec<usize> = (0..CONNS)
        .map(|i| {
            if i % 25 == 7 {
                2 * MIB
            } else {
                rng.range(0, 512 * KIB as u64) as usize
            }
        })
        .collect();
    let ts = TcpServer::start(100, &tlsd_prog(&["--", "/bin/cat"]), &ec_env());
    let addr = ts.addr();
    let t0 = Instant::now();
    let report = jobs::run(CONNS, THREADS, |i| {
        let data = payload::bytes(SEED + i as u64, sizes[i]);
        let r = client::connect(addr, &ClientOpts::default()).map(|mut c| {
            let (h, end) = c.duplex(&data, true, Duration::from_secs(180));
            (h.hex(), end)
        });
        match r {
            Err(e) => Some(format!("connection {i}: {e}")),
            Ok((_, end)) if end != End::CloseNotify => Some(format!(
                "connection {i} ({} bytes): ended {end:?}",
                sizes[i]
            )),
            Ok((h, _)) if h != payload::sha256_hex(&data) => {
                Some(format!("connection {i} ({} bytes): hash differs", sizes[i]))
            }
            Ok(_) => None,
        }
    });
    let took = t0.elapsed();
    let pid = ts.run.pid();
    let drained = wait_children_gone(pid, Duration::from_secs(30));
    let stderr = ts.stop();
    let failures = &report.failures;
    let total: usize = sizes.iter().sum();
    eprintln!(
        "500 connections, {} MiB each way, peak {} at once: {took:?}",
        total / MIB,
        report.peak
    );
    assert!(
        failures.is_empty(),
        "{} of {CONNS} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(report.peak <= 100);
    assert!(
        drained,
        "tlsd processes still running after the clients ended"
    );
    assert!(
        !stderr.contains("tlsd"),
        "tlsd reported problems under load: {stderr}"
    );
}

/// Short connections (`tlsd -- echo ok`), 4 client threads, against one long-lived
/// tcpserver: after a warm-up, its open descriptors and VmRSS are sampled, then again
/// after the soak (once every connection's process has ended). No growth beyond a small
/// slack; zero failed connections.
#[test]
fn soak_short_connections_no_fd_or_rss_growth() {
    if !require("tcpserver") {
        return;
    }
    let total: usize = std::env::var("STLS_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    const THREADS: usize = 4;
    const WARMUP: usize = 200;
    let ts = TcpServer::start(40, &tlsd_prog(&["--", "/bin/echo", "ok"]), &ec_env());
    let addr = ts.addr();
    let pid = ts.run.pid();
    let run = |count: usize| -> Vec<String> {
        jobs::run(count, THREADS, |i| {
            let r = client::connect(addr, &ClientOpts::default()).map(|mut c| c.read_to_end());
            match r {
                Err(e) => Some(format!("connection {i}: {e}")),
                Ok((got, end)) if got != b"ok\n" || end != End::CloseNotify => {
                    Some(format!("connection {i}: got {got:?}, ended {end:?}"))
                }
                Ok(_) => None,
            }
        })
        .failures
    };
    let warm = run(WARMUP);
    assert!(warm.is_empty(), "warm-up failures: {warm:#?}");
    assert!(wait_children_gone(pid, Duration::from_secs(30)));
    let (fds0, rss0) = (fd_count(pid), vm_rss_kib(pid));
    let t0 = Instant::now();
    let failures = run(total);
    let took = t0.elapsed();
    assert!(
        wait_children_gone(pid, Duration::from_secs(60)),
        "tlsd processes still running after the soak"
    );
    let (fds1, rss1) = (fd_count(pid), vm_rss_kib(pid));
    let stderr = ts.stop();
    eprintln!(
        "soak: {total} connections in {took:?}; tcpserver fds {fds0} -> {fds1}, VmRSS {rss0} -> {rss1} KiB"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
    assert!(
        fds1 <= fds0,
        "tcpserver's descriptors grew: {fds0} -> {fds1}"
    );
    assert!(
        rss1 <= rss0 + 256,
        "tcpserver's VmRSS grew: {rss0} -> {rss1} KiB"
    );
    assert!(!stderr.contains("tlsd"), "tlsd reported problems: {stderr}");
}
