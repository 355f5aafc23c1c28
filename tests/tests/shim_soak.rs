//! Soak of the shim's host program under load: one long-lived C program with
//! `libautossl.so` preloaded makes many short connections, each upgraded to TLS by the
//! library (a tlsc helper per connection) to tlsd under `tcpserver` on 127.0.0.1. The
//! host's own descriptors and resident memory must not grow, and it must be left with no
//! child, no zombie and no SIGCHLD; every helper must end with its connection.
//!
//! The count is `STLS_SHIM_SOAK_CONNECTIONS` (default 10000; tests/README.md gives the time
//! it takes here).

use std::process::Command;
use std::time::{Duration, Instant};

use stls_tests::listener::TcpServer;
use stls_tests::proc;
use stls_tests::shim::{self, library, namespaces, quiet, shim_vars, Marker, NAME};
use stls_tests::{pki, require, scratch};

/// The host. `host NAME PORT WARMUP TOTAL THREADS SECONDS`: THREADS threads take
/// connection numbers from one counter; after WARMUP connections they all wait while the
/// descriptors and VmRSS are sampled, then go on to TOTAL (WARMUP included). Each
/// connection: resolve NAME (getaddrinfo, IPv4), a socket with 30 s send and receive
/// timeouts, connect (blocking for even numbers; non-blocking for odd ones: EINPROGRESS,
/// poll for writing, SO_ERROR 0, then blocking again), send `n=<i>\n`, read to EOF, expect exactly
/// `n=<i> proto=TLSv1.3\n` (the proto only tlsd can add), close. Past SECONDS no new
/// connection starts (a failure). Prints one `key=value ...` line.
const HOST: &str = include_str!("../apps/shim/soak-host.c");

/// The value of `key=` in the host's report line.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the host's report: {out}"))
}

fn pair(out: &str, key: &str) -> (i64, i64) {
    let v = field(out, key);
    let (a, b) = v.split_once(',').unwrap_or_else(|| panic!("{key}={v}"));
    (
        a.parse().unwrap_or_else(|_| panic!("{key}={v}")),
        b.parse().unwrap_or_else(|_| panic!("{key}={v}")),
    )
}

/// The size of the library's table of upgraded sockets (`SLOTS` in
/// autossl-shim/src/socks.rs). The table is static memory, and each new connection takes a
/// never-used entry (one more touched page every ten or so connections) until all are
/// used; from then on entries of closed sockets are reused. So the host's VmRSS rises by up
/// to the table's size (about 360 KiB) over the first SLOTS connections, then stays flat:
/// the warm-up has to go past it.
fn socket_table_slots() -> u64 {
    let p = stls_tests::bins::workspace().join("autossl-shim/src/socks.rs");
    let src = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    src.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const SLOTS: usize = ")?
                .strip_suffix(';')?
                .replace('_', "")
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `pub const SLOTS: usize = N;` in {}", p.display()))
}

/// STLS_SHIM_SOAK_CONNECTIONS short upgraded connections (default 10000) from one host
/// process with the library preloaded, 2 threads, against `tlsd -- sh` (the reply names
/// the TLS version, which only tlsd knows) under `tcpserver`. The host samples its own
/// open descriptors and VmRSS after a warm-up that fills the library's socket table
/// ([`socket_table_slots`] + 100 connections) and again at the end. Zero failures; the
/// same descriptors; VmRSS within 256 KiB (measured here: 0 to 24 KiB after the warm-up,
/// whatever the count; 256 KiB over 10,000 connections is a leak of 27 bytes each); no
/// child, zombie or SIGCHLD in the host; no tlsc helper left afterwards.
#[test]
fn host_program_soak_no_fd_or_rss_growth() {
    let _ = library();
    if !(require("cc") && require("tcpserver") && namespaces()) {
        return;
    }
    let total: u64 = std::env::var("STLS_SHIM_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let warmup = socket_table_slots() + 100;
    const THREADS: u32 = 2;
    // Far above the measured time (tests/README.md), still a bound.
    let limit = Duration::from_secs(120 + total / 10);

    let dir = scratch("shim-soak");
    let src = dir.join("host.c");
    std::fs::write(&src, HOST).expect("host source");
    let exe = dir.join("host");
    let o = proc::run(
        Command::new("cc")
            .args(["-O2", "-pthread", "-o"])
            .arg(&exe)
            .arg(&src),
        None,
        Duration::from_secs(120),
    );
    assert_eq!(o.code(), 0, "cc: {}", o.stderr_str());

    let p = pki();
    let ts = TcpServer::start(
        40,
        &[
            stls_tests::tlsd().into_os_string(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            "read -r l && printf '%s proto=%s\\n' \"$l\" \"$SSL_PROTOCOL\"".into(),
        ],
        &[
            ("CERTFILE", p.ec.cert.as_path()),
            ("KEYFILE", p.ec.key.as_path()),
        ],
    );
    let port = ts.port.to_string();
    let marker = Marker::new("SHIM_SOAK_MARK", "soak", ts.port);
    let vars = marker.on(quiet(shim_vars(&port)));

    let total_s = (warmup + total).to_string();
    let t0 = Instant::now();
    let o = proc::run(
        &mut shim::namespaced(
            &[
                exe.to_str().expect("utf-8"),
                NAME,
                &port,
                &warmup.to_string(),
                &total_s,
                &THREADS.to_string(),
                &limit.as_secs().to_string(),
            ],
            &vars,
        ),
        None,
        limit + Duration::from_secs(60),
    );
    let took = t0.elapsed();
    let out = o.stdout_str();
    let err = o.stderr_str();
    eprintln!("shim soak: {total} connections after {warmup} warm-up, {took:?} in all: {out}");
    assert_eq!(o.code(), 0, "host: stdout: {out}\nstderr: {err}");
    assert!(!err.contains("cannot be preloaded"), "{err}");
    assert_eq!(
        field(&out, "failures"),
        "0",
        "failed connections: {out}\nstderr: {err}"
    );
    assert_eq!(field(&out, "ok"), total_s, "{out}");
    let (fd0, fd1) = pair(&out, "fds");
    assert!(
        fd0 > 0 && fd0 == fd1,
        "the host's descriptors changed: {out}"
    );
    let (rss0, rss1) = pair(&out, "rss");
    assert!(
        rss0 > 0 && rss1 <= rss0 + 256,
        "the host's VmRSS grew by more than 256 KiB: {out}"
    );
    assert_eq!(field(&out, "children"), "0", "{out}");
    assert_eq!(field(&out, "wait"), "none", "{out}");
    assert_eq!(field(&out, "sigchld"), "0", "{out}");
    // Every helper ends with its connection.
    marker.assert_gone("tlsc helpers still running");
    let stderr = ts.stop();
    assert!(!stderr.contains("tlsd"), "tlsd reported problems: {stderr}");
}
