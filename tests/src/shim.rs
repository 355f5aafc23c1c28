//! Support for the autossl-shim tests: building the library (`cargo test` does not build a
//! cdylib), a TLS server (tlsd under the suite's listener, on 127.0.0.1 and ::1 with the
//! same port) wrapping a small responder that reports the TLS session it got, and running
//! unmodified clients with the library preloaded and a test host name (`tls.test`) mapped in
//! a private mount namespace.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::bins::{self, which};
use crate::listener::{Spawn, TinyListener};
use crate::pki::{pki, run_dir, Pair};
use crate::proc::{self, Outcome};

/// The test host name: 127.0.0.1 and ::1 in the namespace's /etc/hosts.
pub const NAME: &str = "tls.test";
/// A name that maps to 127.0.0.1 only (for clients that try one address only).
pub const NAME4: &str = "tls4.test";
/// Virtual hosts on one address (127.0.0.1 only), each with its own certificate (DNS
/// names only) in [`vhost_server`]: pki's `a.test`, `b.test` and `*.wild.test`.
pub const VHOSTS: [&str; 3] = ["a.test", "b.test", "c.wild.test"];

static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Build the library, tlsc and tlsd (release, the suite's target directory) once per test
/// binary; the path of `libautossl.so`.
pub fn library() -> PathBuf {
    let r = BUILT.get_or_init(|| {
        let _l = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // Another build under test (STLS_BIN_DIR, the vendored one): built by make, with
        // tlsc beside the library, which is where the library looks first.
        if std::env::var_os(bins::BIN_DIR).is_some_and(|d| !d.is_empty()) {
            let lib = bins::bin_dir().join("libautossl.so");
            return if lib.is_file() {
                Ok(lib)
            } else {
                Err(format!("{} missing: make build-vendored", lib.display()))
            };
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "autossl-shim",
                "-p",
                "tlsc",
                "-p",
                "tlsd",
            ])
            .current_dir(bins::workspace())
            .env("CARGO_TARGET_DIR", bins::target_dir())
            .output()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let lib = bins::target_dir().join("release").join("libautossl.so");
        if lib.is_file() {
            Ok(lib)
        } else {
            Err(format!("{} missing after the build", lib.display()))
        }
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Python for the responder and the Python clients (Debian's, without a pyenv shim).
pub fn python() -> PathBuf {
    let p = PathBuf::from("/usr/bin/python3");
    if p.is_file() {
        return p;
    }
    which("python3").unwrap_or_else(|| PathBuf::from("python3"))
}

/// The responder tlsd runs per connection. It answers, depending on the first line:
/// `GET`/`HEAD` (HTTP/1.0, one request, files under argv[1] or a hello body), `*` (RESP:
/// `+PONG ...` per command), `ECHO` (reads to EOF, then answers with the length and the
/// bytes: a half-close test). Every answer carries `sni=<SSL_TLS_SNI_SERVERNAME>
/// proto=<SSL_PROTOCOL>`: proof that the connection really was TLS, and which name it sent.
pub const RESPONDER: &str = r#"
import os, sys
sni = os.environ.get("SSL_TLS_SNI_SERVERNAME", "")
proto = os.environ.get("SSL_PROTOCOL", "")
root = sys.argv[1] if len(sys.argv) > 1 else None
inp = sys.stdin.buffer
out = sys.stdout.buffer
tag = ("sni=%s proto=%s" % (sni, proto)).encode()
line = inp.readline()
if line.startswith(b"*"):
    while line.startswith(b"*"):
        n = int(line[1:].strip() or b"0")
        for _ in range(n):
            inp.readline(); inp.readline()
        out.write(b"+PONG " + tag + b"\r\n"); out.flush()
        line = inp.readline()
elif line.startswith(b"GET") or line.startswith(b"HEAD"):
    parts = line.split()
    path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
    while True:
        h = inp.readline()
        if h in (b"\r\n", b"\n", b""):
            break
    status, body = b"200 OK", b"hello " + tag + b"\n"
    if root and path != "/":
        f = os.path.normpath(os.path.join(root, path.split("?")[0].lstrip("/")))
        if f.startswith(root) and os.path.isfile(f):
            body = open(f, "rb").read()
        else:
            status, body = b"404 Not Found", b"not found\n"
    out.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    if not line.startswith(b"HEAD"):
        out.write(body)
elif line.startswith(b"ECHO"):
    data = inp.read()
    out.write(tag + b" len=%d\n" % len(data) + data)
else:
    out.write(b"? " + tag + b"\n")
out.flush()
"#;

fn responder() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = run_dir().join("responder.py");
        std::fs::write(&p, RESPONDER).expect("writing the responder");
        p
    })
    .clone()
}

/// A server on 127.0.0.1:port and [::1]:port (the same port).
pub struct Server {
    pub v4: TinyListener,
    pub v6: TinyListener,
    pub port: u16,
}

impl Server {
    /// The shim's variables for upgrading this server's port ([`shim_vars`]).
    pub fn vars(&self) -> Vec<(String, String)> {
        shim_vars(&self.port.to_string())
    }

    /// `http://name:port/` for this server.
    pub fn url(&self, name: &str) -> String {
        url(name, self.port)
    }

    /// Run `cmd` under the shim with [`Server::vars`], nothing on stdin.
    pub fn run(&self, cmd: &[&str]) -> Outcome {
        run(cmd, &self.vars(), None)
    }

    /// Run `cmd` under the shim with [`Server::vars`] and check it went through TLS with
    /// `sni` ([`assert_tls`]); the outcome, for more checks.
    pub fn expect_tls(&self, what: &str, cmd: &[&str], sni: &str) -> Outcome {
        let o = self.run(cmd);
        assert_tls(&o, what, sni);
        o
    }

    /// Every session that ended within `timeout` after the last one (bounded).
    pub fn sessions(&self, timeout: Duration) -> Vec<crate::listener::Session> {
        let mut v = Vec::new();
        for l in [&self.v4, &self.v6] {
            while let Some(s) = l.try_session(timeout) {
                v.push(s);
            }
        }
        v
    }
}

/// What one listener runs: `tlsd -- python3 responder ROOT` with `pair`, or the responder
/// alone (plain) when `pair` is None.
pub fn spawn_for(pair: Option<&'static Pair>, root: Option<&Path>) -> Spawn {
    let mut args: Vec<OsString> = vec![python().into(), "-S".into(), responder().into()];
    if let Some(r) = root {
        args.push(r.into());
    }
    match pair {
        Some(p) => {
            let mut a: Vec<OsString> = vec!["--".into()];
            a.extend(args);
            Spawn::tlsd(&a, &[("CERTFILE", &p.cert), ("KEYFILE", &p.key)])
        }
        None => Spawn {
            program: args.remove(0).into(),
            args,
            env: Vec::new(),
            groups: None,
            timeout: Duration::from_secs(120),
        },
    }
}

/// Start the server on both loopback addresses with one port.
///
/// The port is taken below the kernel's ephemeral range: a port from `127.0.0.1:0` is in
/// that range, and between the check that `[::1]:port` is free and the second listener's
/// bind, any connect() on the machine (parallel tests, other builds) could be given
/// `[::1]:port` as its automatic local address.
pub fn server(pair: Option<&'static Pair>, root: Option<&Path>) -> Server {
    listen_pair(|| spawn_for(pair, root))
}

/// Listeners on 127.0.0.1 and ::1 with one port, each running `spawn()`. Other test
/// processes on the machine pick ports too: one taken between the check and the bind is
/// given up for the next (bounded).
fn listen_pair(spawn: impl Fn() -> Spawn) -> Server {
    for _ in 0..20 {
        let port = free_pair_port();
        let start = |ip: &str| {
            let bind = format!("{ip}:{port}");
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                TinyListener::start_on(&bind, spawn())
            }))
            .ok()
        };
        if let (Some(v4), Some(v6)) = (start("127.0.0.1"), start("[::1]")) {
            return Server { v4, v6, port };
        }
    }
    panic!("no port could be bound on both 127.0.0.1 and ::1 after 20 tries");
}

/// A port free on both 127.0.0.1 and ::1 (see [`server`]).
fn free_pair_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (first, span) = if low > 12_000 {
        (10_000u64, u64::from(low) - 10_000)
    } else {
        (u64::from(u16::MAX) - 10_000, 10_000)
    };
    // Tests start servers at the same moment from many threads: each call takes the next
    // port of one sequence (7919 is prime to the span: no repeat before `span` calls), from
    // a place that depends on the process.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = u64::from(std::process::id()).wrapping_mul(2_654_435_761) % span;
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (first + (base + n * 7_919) % span) as u16;
        let free = |ip: &str| TcpListener::bind((ip, port)).is_ok();
        if free("127.0.0.1") && free("::1") {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1 after 200 tries");
}

/// A server for the [`VHOSTS`]: tlsd `-k 2` (only the named pairs: a client that sends no
/// name, or another one, fails the handshake), on both loopback addresses.
pub fn vhost_server() -> Server {
    let p = pki();
    let mut a: Vec<OsString> = vec!["-k".into(), "2".into(), "--".into()];
    a.extend([python().into(), "-S".into(), responder().into()]);
    let env: Vec<(String, &Path)> = [("a.test", &p.a), ("b.test", &p.b), ("*.wild.test", &p.wild)]
        .iter()
        .flat_map(|(n, pair)| {
            [
                (format!("CERTFILE:{n}"), pair.cert.as_path()),
                (format!("KEYFILE:{n}"), pair.key.as_path()),
            ]
        })
        .collect();
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    listen_pair(|| Spawn::tlsd(&a, &env))
}

/// What happened to each request of a client that fetched `names` (in that order) from the
/// [`VHOSTS`] server, read from `out`: the name the server saw for each answer. Fails if
/// any answer came from another virtual host than its request named, or if a request that
/// got no answer has no failure message naming the address check; returns how many were
/// answered.
pub fn assert_right_hosts(
    what: &str,
    answers: &[Option<String>],
    names: &[&str],
    err: &str,
) -> usize {
    let mut ok = 0;
    for (i, want) in names.iter().enumerate() {
        match answers.get(i).cloned().flatten() {
            Some(sni) => {
                assert_eq!(
                    sni, *want,
                    "{what}: request {i} for {want} reached the virtual host {sni}\nstderr: {err}"
                );
                ok += 1;
            }
            None => assert!(
                (err.contains("the certificate was checked against the address")
                    || err.contains("several names gave this address"))
                    && err.contains("AUTOSSL_NAMES"),
                "{what}: request {i} for {want} failed without the documented message\nstderr: {err}"
            ),
        }
    }
    ok
}

/// [`assert_right_hosts`], and every request answered: names sharing an address are told
/// apart by each request's own `Host`.
pub fn assert_every_host(what: &str, answers: &[Option<String>], names: &[&str], err: &str) {
    let ok = assert_right_hosts(what, answers, names, err);
    assert_eq!(
        ok,
        names.len(),
        "{what}: {ok} of {} requests answered: {answers:?}\nstderr: {err}",
        names.len()
    );
}

/// The SNI in a responder's answer (`sni=NAME proto=...`), if the text holds one.
pub fn sni_of(text: &str) -> Option<String> {
    let i = text.find("sni=")?;
    let rest = &text[i + 4..];
    let name = rest.split_whitespace().next().unwrap_or("");
    (!name.is_empty() && rest.contains(TLS_TAG)).then(|| name.to_string())
}

/// Build the library, check the `peers` a test needs and the namespace; false: skipped.
pub fn ready(peers: &[&str]) -> bool {
    let _ = library();
    peers.iter().all(|p| crate::require(p)) && namespaces()
}

/// The start of most client tests: [`ready`], then a TLS server with `pair`. None:
/// skipped.
pub fn tls_server(peers: &[&str], pair: &'static Pair) -> Option<Server> {
    ready(peers).then(|| server(Some(pair), None))
}

/// `http://name:port/`.
pub fn url(name: &str, port: u16) -> String {
    format!("http://{name}:{port}/")
}

/// What the responder adds to its answers over TLS 1.3.
pub const TLS_TAG: &str = "proto=TLSv1.3";

/// What the responder adds to its answers over TLS 1.3 with `name` as SNI.
pub fn tag(name: &str) -> String {
    format!("sni={name} {TLS_TAG}")
}

/// The client succeeded through the shim, the server saw TLS with `sni`, and the library
/// reported an upgrade.
pub fn assert_tls(o: &Outcome, what: &str, sni: &str) {
    let out = o.stdout_str();
    let err = o.stderr_str();
    assert_eq!(
        o.code(),
        0,
        "{what}: exit {}\nstdout: {out}\nstderr: {err}",
        o.code()
    );
    assert!(
        out.contains(&tag(sni)),
        "{what}: the server did not report TLS with SNI {sni:?}\nstdout: {out}\nstderr: {err}"
    );
    assert!(!err.contains("cannot be preloaded"), "{what}: {err}");
    assert!(
        !upgraded_lines(o).is_empty(),
        "{what}: no upgrade reported by the library\nstderr: {err}"
    );
}

/// Python's path as an argument.
pub fn python_arg() -> String {
    python().to_str().expect("python path").to_string()
}

/// `vars` without `AUTOSSL_VERBOSE` (the library's default: quiet).
pub fn quiet(mut vars: Vec<(String, String)>) -> Vec<(String, String)> {
    vars.retain(|(k, _)| k != "AUTOSSL_VERBOSE");
    vars
}

/// `vars` with `k=v` added.
pub fn with(mut vars: Vec<(String, String)>, k: &str, v: &str) -> Vec<(String, String)> {
    vars.push((k.into(), v.into()));
    vars
}

/// A variable that marks one test's client, so that its helpers (which inherit the
/// client's environment) can be found in /proc and checked gone.
pub struct Marker {
    pub key: String,
    pub value: String,
}

impl Marker {
    /// `key=what-PID-PORT`: unique to this test process and server.
    pub fn new(key: &str, what: &str, port: u16) -> Marker {
        Marker {
            key: key.into(),
            value: format!("{what}-{}-{port}", std::process::id()),
        }
    }

    /// `vars` with the marker added.
    pub fn on(&self, vars: Vec<(String, String)>) -> Vec<(String, String)> {
        with(vars, &self.key, &self.value)
    }

    /// `KEY=VALUE`.
    pub fn entry(&self) -> String {
        format!("{}={}", self.key, self.value)
    }

    /// The live processes that carry the marker.
    pub fn processes(&self) -> Vec<u32> {
        processes_with(&self.entry())
    }

    /// Waits (up to 60 s) until no process carries the marker; else fails with `what`.
    pub fn assert_gone(&self, what: &str) {
        assert_helpers_gone(&self.entry(), what);
    }
}

/// [`OTHER_NAMES`] names `n0.test`... on other loopback addresses: enough lookups to make
/// the shim forget older names.
fn others() -> String {
    (0..OTHER_NAMES)
        .map(|i| format!("127.1.{}.{} n{i}.test\n", i / 250, 1 + i % 250))
        .collect()
}

/// How many filler names the namespace's hosts file has.
pub const OTHER_NAMES: usize = 640;

/// The hosts file of the namespace.
fn hosts() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = run_dir().join("hosts");
        std::fs::write(
            &p,
            format!(
                "127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.0.1 {NAME}\n::1 {NAME}\n127.0.0.1 {NAME4}\n127.0.0.1 {}\n{}",
                VHOSTS.join(" "),
                others()
            ),
        )
        .expect("writing the hosts file");
        p
    })
    .clone()
}

/// Can we make a private mount namespace (root, unshare)? Skips (fails under CI) if not.
pub fn namespaces() -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        if !bins::is_root() {
            return Err("not root: cannot bind-mount a hosts file".into());
        }
        if which("unshare").is_none() {
            return Err("unshare not installed (util-linux)".into());
        }
        let o = proc::run(
            &mut namespaced(&["true"], &[]),
            None,
            Duration::from_secs(20),
        );
        if o.code() != 0 {
            return Err(format!("unshare -m failed: {}", o.stderr_str().trim()));
        }
        Ok(())
    });
    match r {
        Ok(()) => true,
        Err(e) => bins::skip(e),
    }
}

/// `unshare -m sh -c 'mount --bind "$0" /etc/hosts && exec env "$@"' HOSTS VARS... CMD...`:
/// the variables (the preload among them) apply to the client only.
pub fn namespaced(cmd: &[&str], vars: &[(String, String)]) -> Command {
    let mut c = Command::new("unshare");
    c.arg("-m")
        .arg("/bin/sh")
        .arg("-c")
        .arg("mount --bind \"$0\" /etc/hosts && exec env \"$@\"");
    c.arg(hosts());
    for (k, v) in vars {
        c.arg(format!("{k}={v}"));
    }
    c.args(cmd);
    for k in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "LD_PRELOAD",
    ] {
        c.env_remove(k);
    }
    c
}

/// The shim's variables for upgrading `ports`, trusting the test CA.
pub fn shim_vars(ports: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("LD_PRELOAD".into(), library().display().to_string()),
        ("AUTOSSL_UPGRADE_PORTS".into(), ports.into()),
        ("AUTOSSL_VERBOSE".into(), "1".into()),
        ("CAFILE".into(), pki().ca.display().to_string()),
    ];
    // `make test` runs the shim's tests a second time with AUTOSSL_HELPER=0: every
    // client then gets a tlsc of its own per connection.
    if let Ok(h) = std::env::var("AUTOSSL_HELPER") {
        v.push(("AUTOSSL_HELPER".into(), h));
    }
    v
}

/// Run a client under the shim in the namespace (bounded), with `input` on stdin.
pub fn run(cmd: &[&str], vars: &[(String, String)], input: Option<&[u8]>) -> Outcome {
    proc::run(&mut namespaced(cmd, vars), input, Duration::from_secs(90))
}

/// The `autossl:` lines a client printed that say a connection was upgraded.
pub fn upgraded_lines(o: &Outcome) -> Vec<String> {
    o.stderr_str()
        .lines()
        .filter(|l| {
            l.starts_with("autossl: fd ")
                && (l.contains(": TLSv1") || l.contains(": the name its request gives"))
        })
        .map(str::to_string)
        .collect()
}

/// Processes (other than zombies) whose environment holds `marker` (`K=V`).
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        // The pre-started helper (`tlsc --serve`) stays until it idles out, by design;
        // the processes it forks per connection are what must end with them.
        if is_pre_started_helper(pid) {
            continue;
        }
        if env.split(|&b| b == 0).any(|x| x == marker.as_bytes()) && proc::alive(pid) {
            v.push(pid);
        }
    }
    v
}

/// The pre-started helper itself (`tlsc --serve`, the leader of its own session), not one
/// of the connections it forked.
pub fn is_pre_started_helper(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline
        .split(|&b| b == 0)
        .any(|a| a.starts_with(b"--serve="))
    {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state, ppid, pgrp, session.
    let session = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(3))
        .and_then(|s| s.parse::<u32>().ok());
    session == Some(pid)
}

/// Waits (up to 60 s) until no process with `marker` in its environment remains; else fails
/// with `what` and the ones still there.
pub fn assert_helpers_gone(marker: &str, what: &str) {
    let gone = proc::wait_for(Duration::from_secs(60), || {
        processes_with(marker).is_empty()
    });
    assert!(gone, "{what}: {:?}", processes_with(marker));
}

/// A listener whose accept queue is full (`listen(0)` with a connection waiting): the
/// kernel drops further SYNs to it, as a blackholed address does, so a connect to it only
/// ends at the client's own timeout.
pub struct Blackhole {
    _listener: TcpListener,
    _queued: Vec<std::net::TcpStream>,
    pub port: u16,
}

impl Blackhole {
    /// On `ip` (`127.0.0.1`, `::1`), at `port` (0: any free one); None if it is taken.
    pub fn on(ip: &str, port: u16) -> Option<Blackhole> {
        use std::os::fd::AsRawFd;
        let l = TcpListener::bind((ip, port)).ok()?;
        // SAFETY: listen(2) on our own listening socket: only its backlog changes.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0, "listen(0)");
        let addr = l.local_addr().expect("local address");
        let mut queued = Vec::new();
        // The first connection fills the queue; the next ones' SYNs are dropped already.
        for _ in 0..3 {
            if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                queued.push(s);
            }
        }
        assert!(!queued.is_empty(), "nothing reached the blackhole's queue");
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
            "the blackhole at {addr} accepts"
        );
        Some(Blackhole {
            _listener: l,
            _queued: queued,
            port: addr.port(),
        })
    }
}
