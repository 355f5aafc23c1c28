//! tlsserver end to end: it listens itself (IPv4, IPv6, both on `::`), and every
//! connection runs tlsd's session in a fork of the server. Real clients (the suite's Rust
//! client for half-close, openssl s_client, curl); integrity by hash both ways; the TCP
//! variables as prog sees them; the `-c` and `-C` limits; a stalled handshake blocking no
//! one; SIGTERM with a session open; no zombies; certificate rotation and a broken
//! replacement; socket activation; a fresh random state in every connection; configuration
//! errors at start; the app's credentials.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use stls_tests::client::{self, ClientOpts, End, TlsClient};
use stls_tests::listener::{free_port, pid_listens};
use stls_tests::payload::{self, MIB};
use stls_tests::peers::{self, one_fatal_line, Tls};
use stls_tests::tlsserver::{base_command, Server};
use stls_tests::{bins, jobs, pki, proc, require, scratch, skip};

const WAIT: Duration = Duration::from_secs(30);

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn connect(addr: SocketAddr) -> TlsClient {
    client::connect(addr, &ClientOpts::default())
        .unwrap_or_else(|e| panic!("TLS client to {addr}: {e}"))
}

/// The pids of `pid`'s children, as /proc lists them.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

// ------------------------------------------------------------------ data and peers

#[test]
fn hash_both_ways_with_half_close_over_ipv4_and_ipv6() {
    let dir = scratch("hash-both-ways");
    let (down, down_hash) = payload::file(&dir, "down", 11, 3 * MIB + 17);
    // prog reads everything (until the client's half-close), says what it got, then sends
    // the file: both directions cross the half-close.
    let script = format!("sha256sum | cut -c1-64; exec cat '{}'", down.display());
    let srv = Server::start(&[], "::", &sh(&script));
    for (i, addr) in [srv.addr(), srv.addr6()].into_iter().enumerate() {
        let up = payload::bytes(20 + i as u64, 5 * MIB + 3);
        let mut c = connect(addr);
        c.write_chunked(&up, 100_000).expect("upload");
        c.half_close().expect("half-close");
        let (got, end) = c.read_to_end();
        assert_eq!(end, End::CloseNotify, "{addr}");
        assert!(got.len() > 65, "{addr}: {} bytes", got.len());
        assert_eq!(
            String::from_utf8_lossy(&got[..64]),
            payload::sha256_hex(&up),
            "{addr}: upload"
        );
        assert_eq!(
            payload::sha256_hex(&got[65..]),
            down_hash,
            "{addr}: download"
        );
    }
    assert_eq!(srv.stop(), 0);
}

#[test]
fn openssl_s_client_and_curl() {
    if !require("openssl") || !require("curl") {
        return;
    }
    let srv = Server::start(
        &[],
        "127.0.0.1",
        &sh("read l; printf 'HTTP/1.0 200 OK\\r\\nContent-Length: 6\\r\\n\\r\\nhello\\n'"),
    );
    for tls in Tls::both() {
        let o = peers::s_client(srv.port, tls, &[], b"GET / HTTP/1.0\r\n\r\n");
        assert!(
            o.stdout_str().ends_with("\r\n\r\nhello\n"),
            "s_client {tls:?}: {} / {}",
            o.stdout_str(),
            o.stderr_str()
        );
        let o = peers::curl(srv.port, tls);
        assert_eq!(o.code(), 0, "curl {tls:?}: {}", o.stderr_str());
        assert_eq!(o.stdout_str(), "hello\n", "curl {tls:?}");
    }
    assert_eq!(srv.stop(), 0);
}

#[test]
fn fifty_concurrent_connections_each_intact() {
    // One address: -C 0 lifts the per-address default, as for clients behind one NAT.
    let srv = Server::start(&["-c", "60", "-C", "0"], "127.0.0.1", &["cat"]);
    let addr = srv.addr();
    let r = jobs::run(50, 50, |i| {
        let data = payload::bytes(1000 + i as u64, 256 * 1024 + i);
        let mut c = match client::connect(addr, &ClientOpts::default()) {
            Ok(c) => c,
            Err(e) => return Some(format!("{i}: {e}")),
        };
        // Everyone connected before anyone sends: the sessions overlap.
        thread::sleep(Duration::from_millis(300));
        if let Err(e) = c.write_all(&data) {
            return Some(format!("{i}: write: {e}"));
        }
        if let Err(e) = c.half_close() {
            return Some(format!("{i}: {e}"));
        }
        let (got, end) = c.read_to_end();
        if end != End::CloseNotify || payload::sha256_hex(&got) != payload::sha256_hex(&data) {
            return Some(format!("{i}: {} bytes back, end {end:?}", got.len()));
        }
        None
    });
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(r.peak >= 25, "only {} at once", r.peak);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn tcp_and_ssl_variables_as_prog_sees_them() {
    let srv = Server::start(&[], "::", &["env"]);
    for addr in [srv.addr(), srv.addr6()] {
        let mut c = connect(addr);
        let local = c.stream.get_ref().local_addr().expect("local addr");
        let (out, end) = c.read_to_end();
        assert_eq!(end, End::CloseNotify);
        let env = parse_env(&String::from_utf8_lossy(&out));
        let ip = addr.ip().to_string();
        assert_eq!(env.get("PROTO").map(String::as_str), Some("TCP"));
        assert_eq!(env.get("TCPLOCALIP"), Some(&ip), "{env:?}");
        assert_eq!(env.get("TCPLOCALPORT"), Some(&srv.port.to_string()));
        assert_eq!(env.get("TCPREMOTEIP"), Some(&ip), "{env:?}");
        assert_eq!(env.get("TCPREMOTEPORT"), Some(&local.port().to_string()));
        assert_eq!(env.get("TCPCONNNUM").map(String::as_str), Some("1"));
        assert_eq!(env.get("SSL_PROTOCOL").map(String::as_str), Some("TLSv1.3"));
        assert!(env.contains_key("SSL_CIPHER"), "{env:?}");
        assert!(!env.contains_key("CERTFILE") && !env.contains_key("KEYFILE"));
        assert!(!env.contains_key("LISTEN_FDS"));
    }
    assert_eq!(srv.stop(), 0);
}

// ------------------------------------------------------------------ limits

/// A TLS handshake in a thread: its result arrives on the channel.
fn handshake_later(addr: SocketAddr) -> mpsc::Receiver<Result<TlsClient, String>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(client::connect(addr, &ClientOpts::default()));
    });
    rx
}

#[test]
fn maxconn_default_40_holds_the_41st_until_one_ends() {
    // Forty established sessions from one address: -C 0 lifts the per-address default.
    let srv = Server::start(&["-C", "0"], "127.0.0.1", &["cat"]);
    // Each one echoed once: in TLS 1.3 the client is done before the server has read its
    // Finished, and until then the server may still end that connection to make room.
    let mut open: Vec<TlsClient> = (0..40)
        .map(|_| {
            let mut c = connect(srv.addr());
            c.write_all(b"up\n").expect("write");
            assert_eq!(c.read_exact(3).expect("echo"), b"up\n");
            c
        })
        .collect();
    let rx = handshake_later(srv.addr());
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a 41st connection was served while 40 were open"
    );
    let mut first = open.remove(0);
    first.half_close().expect("half-close");
    let _ = first.read_to_end();
    let mut late = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the 41st is served once one ends")
        .expect("the 41st handshake");
    late.write_all(b"late\n").expect("write");
    late.half_close().expect("half-close");
    assert_eq!(late.read_to_end().0, b"late\n");
    drop(open);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn maxconn_per_ip_closes_the_extra_one_with_a_warning() {
    let srv = Server::start(&["-C", "2"], "::", &["cat"]);
    // An echo proves each session established on the server's side too (a TLS 1.3 client
    // is done before the server has read its Finished): until then the server may end it
    // to make room for the third.
    let held: Vec<TlsClient> = (0..2)
        .map(|_| {
            let mut c = connect(srv.addr());
            c.write_all(b"up\n").expect("write");
            assert_eq!(c.read_exact(3).expect("echo"), b"up\n");
            c
        })
        .collect();
    let t0 = Instant::now();
    let third = client::connect(srv.addr(), &ClientOpts::default());
    assert!(
        third.is_err(),
        "a third connection from 127.0.0.1 was served"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "closed at once");
    // Another address is not limited by 127.0.0.1's count.
    let mut other = connect(srv.addr6());
    other.write_all(b"v6\n").expect("write");
    other.half_close().expect("half-close");
    assert_eq!(other.read_to_end().0, b"v6\n");
    let log = srv.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("tlsserver: warning: connection from 127.0.0.1 closed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    drop(held);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn a_stalled_handshake_blocks_no_other_client() {
    let srv = Server::start(&["-K", "20s"], "127.0.0.1", &["cat"]);
    // Connected, says nothing: its handshake waits in its own process.
    let _silent = TcpStream::connect(srv.addr()).expect("connect");
    let t0 = Instant::now();
    let mut c = connect(srv.addr());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    c.write_all(b"ok\n").expect("write");
    c.half_close().expect("half-close");
    assert_eq!(c.read_to_end().0, b"ok\n");
    assert_eq!(srv.stop(), 0);
}

// ------------------------------------------------------------------ signals and processes

#[test]
fn sigterm_ends_the_server_while_an_open_session_completes() {
    let srv = Server::start(&[], "127.0.0.1", &["cat"]);
    let addr = srv.addr();
    let mut c = connect(addr);
    c.write_all(b"before\n").expect("write");
    assert_eq!(c.read_exact(7).expect("echo"), b"before\n");
    assert_eq!(srv.stop(), 0, "tlsserver's exit code after SIGTERM");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "still accepting after SIGTERM"
    );
    let data = payload::bytes(5, 2 * MIB);
    c.write_all(&data).expect("write after SIGTERM");
    c.half_close().expect("half-close");
    let (got, end) = c.read_to_end();
    assert_eq!(end, End::CloseNotify);
    assert_eq!(payload::sha256_hex(&got), payload::sha256_hex(&data));
}

#[test]
fn no_zombies_after_many_connections() {
    let srv = Server::start(&[], "127.0.0.1", &["echo", "hi"]);
    for i in 0..40 {
        let (out, end) = connect(srv.addr()).read_to_end();
        assert_eq!(
            (out.as_slice(), &end),
            (&b"hi\n"[..], &End::CloseNotify),
            "{i}"
        );
    }
    let pid = srv.pid();
    let reaped = proc::wait_for(Duration::from_secs(10), || children(pid).is_empty());
    let left: Vec<(u32, bool)> = children(pid)
        .into_iter()
        .map(|c| (c, !proc::alive(c)))
        .collect();
    assert!(reaped, "children left (pid, zombie): {left:?}");
    assert_eq!(srv.stop(), 0);
}

#[test]
fn every_connection_has_its_own_random_state() {
    if !require("openssl") {
        return;
    }
    let srv = Server::start(&[], "127.0.0.1", &["echo", "hi"]);
    // The server's key share in each ServerHello: a fork that kept the parent's random
    // state would send the same one twice.
    let share = || -> String {
        let o = peers::s_client(srv.port, Tls::V13, &["-msg", "-groups", "X25519"], b"");
        let text = o.stdout_str();
        let hello = text
            .split("ServerHello\n")
            .nth(1)
            .unwrap_or_else(|| panic!("no ServerHello in: {text}"));
        let hex: String = hello
            .lines()
            .take_while(|l| l.starts_with("    "))
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .collect();
        let marker = "00330024001d0020";
        let at = hex
            .find(marker)
            .unwrap_or_else(|| panic!("no X25519 key share in {hex}"));
        hex[at + marker.len()..at + marker.len() + 64].to_string()
    };
    let (a, b) = (share(), share());
    assert_eq!(a.len(), 64);
    assert_ne!(a, b, "two connections sent the same key share");
    // And the server randoms, through the suite's client.
    let random = || {
        let c = connect(srv.addr());
        let mut r = [0u8; 32];
        c.stream.ssl().server_random(&mut r);
        r
    };
    assert_ne!(random(), random());
    assert_eq!(srv.stop(), 0);
}

// ------------------------------------------------------------------ certificates

fn served_hash(addr: SocketAddr) -> Option<String> {
    let c = client::connect(addr, &ClientOpts::default()).ok()?;
    let der = c.peer_cert()?.to_der().ok()?;
    let d = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &der).ok()?;
    Some(format!("SHA256:{}", payload::hex(&d)))
}

#[test]
fn certificate_rotation_and_a_broken_replacement() {
    let dir = scratch("rotation");
    let (ec, rsa) = (&pki().ec, &pki().rsa);
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    fs::copy(&ec.cert, &cert).expect("copy");
    fs::copy(&ec.key, &key).expect("copy");
    fs::copy(&rsa.cert, dir.join("new.pem")).expect("copy");
    fs::copy(&rsa.key, dir.join("new.key")).expect("copy");
    let srv = Server::start_env(
        &[],
        "127.0.0.1",
        &sh("read l; echo ok"),
        &[("CERTFILE", &cert), ("KEYFILE", &key)],
    );
    assert_eq!(served_hash(srv.addr()).as_ref(), Some(&ec.hash));

    // The renewal as tlsserver(1) shows it: both files beside the old ones, renamed over.
    let mut renew = proc::sh(
        "cp new.pem server.pem.new && cp new.key server.key.new &&\n\
         mv server.key.new server.key && mv server.pem.new server.pem",
    );
    renew.current_dir(&dir);
    assert_eq!(proc::run(&mut renew, None, WAIT).code(), 0);
    let rotated = proc::wait_for(Duration::from_secs(5), || {
        served_hash(srv.addr()).as_ref() == Some(&rsa.hash)
    });
    assert!(rotated, "still not the new certificate: {}", srv.log());
    assert!(!srv.log().contains("warning"), "{}", srv.log());

    // A broken replacement: one warning, and the RSA pair keeps serving.
    fs::write(dir.join("broken.new"), b"not a certificate\n").expect("write");
    fs::rename(dir.join("broken.new"), &cert).expect("rename");
    thread::sleep(Duration::from_millis(3500));
    assert_eq!(served_hash(srv.addr()).as_ref(), Some(&rsa.hash));
    let log = srv.log();
    let warned = log
        .lines()
        .filter(|l| l.starts_with("tlsserver: warning: unable to reload the certificates"))
        .count();
    assert_eq!(warned, 1, "{log}");
    assert!(
        log.contains("server.pem"),
        "the warning names the file: {log}"
    );

    // SIGHUP: checked at once; a good pair back in place is served again.
    fs::copy(&ec.cert, dir.join("ec.new")).expect("copy");
    fs::copy(&ec.key, dir.join("eck.new")).expect("copy");
    fs::rename(dir.join("eck.new"), &key).expect("rename");
    fs::rename(dir.join("ec.new"), &cert).expect("rename");
    srv.signal(libc::SIGHUP);
    let back = proc::wait_for(Duration::from_secs(5), || {
        served_hash(srv.addr()).as_ref() == Some(&ec.hash)
    });
    assert!(back, "{}", srv.log());
    assert_eq!(srv.stop(), 0);
}

// ------------------------------------------------------------------ socket activation

#[test]
fn socket_activation_with_systemd_socket_activate() {
    if !require("systemd-socket-activate") {
        return;
    }
    let p = &pki().ec;
    for _ in 0..5 {
        let port = free_port("127.0.0.1");
        // As in tlsserver(1): `systemd-socket-activate -l 127.0.0.1:PORT -E CERTFILE
        // -E KEYFILE tlsserver cat` (it passes on only the variables -E names).
        let mut c = base_command(Path::new("systemd-socket-activate"));
        c.arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .args(["-E", "CERTFILE", "-E", "KEYFILE"])
            .arg(bins::bin("tlsserver"))
            .arg("cat")
            .env("CERTFILE", &p.cert)
            .env("KEYFILE", &p.key)
            .stdin(Stdio::null());
        let run = proc::Running::start(&mut c);
        let pid = run.pid();
        if !proc::wait_for(Duration::from_secs(10), || pid_listens(pid, port)) {
            let o = run.kill();
            eprintln!("retrying: {}", o.stderr_str());
            continue;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for i in 0..3 {
            let data = payload::bytes(300 + i, MIB);
            let mut c = connect(addr);
            c.write_all(&data).expect("write");
            c.half_close().expect("half-close");
            let (got, end) = c.read_to_end();
            assert_eq!(end, End::CloseNotify, "{i}");
            assert_eq!(payload::sha256_hex(&got), payload::sha256_hex(&data), "{i}");
        }
        // One tlsserver took every connection (Accept=no), the one systemd-socket-activate
        // became: it is the process that listens.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("tlsserver"),
            "{}",
            String::from_utf8_lossy(&cmdline)
        );
        assert!(
            proc::wait_for(Duration::from_secs(5), || children(pid).is_empty()),
            "connections' processes left: {:?}",
            children(pid)
        );
        let o = run.kill();
        assert!(!o.stderr_str().contains("fatal"), "{}", o.stderr_str());
        return;
    }
    panic!("systemd-socket-activate never listened");
}

#[test]
fn listen_fds_of_another_process_are_not_taken() {
    // LISTEN_PID names someone else: tlsserver must bind ADDR PORT itself.
    let p = &pki().ec;
    let srv = Server::start_env(
        &[],
        "127.0.0.1",
        &["echo", "bound"],
        &[
            ("CERTFILE", &p.cert),
            ("KEYFILE", &p.key),
            ("LISTEN_PID", Path::new("1")),
            ("LISTEN_FDS", Path::new("1")),
        ],
    );
    assert_eq!(connect(srv.addr()).read_to_end().0, b"bound\n");
    assert_eq!(srv.stop(), 0);
}

// ------------------------------------------------------------------ errors at start

/// tlsserver with `env`, expected to exit at once: its outcome and whether anything
/// listened on the port meanwhile.
fn start_fails(args: &[&str], env: &[(&str, &OsStr)]) -> (proc::Outcome, bool) {
    let port = free_port("127.0.0.1");
    let mut c = base_command(&bins::bin("tlsserver"));
    let port_s = port.to_string();
    let mut argv: Vec<&str> = Vec::new();
    for a in args {
        argv.push(if *a == "PORT" { &port_s } else { a });
    }
    c.args(&argv);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = proc::run(&mut c, None, WAIT);
    let listened = TcpStream::connect(("127.0.0.1", port)).is_ok();
    (o, listened)
}

/// Arguments, environment, the exit code expected, a word of the fatal line.
type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a OsStr)>, i32, &'a str);

#[test]
fn configuration_errors_end_it_at_start_before_listening() {
    let (ec, rsa) = (&pki().ec, &pki().rsa);
    let cases: Vec<Case> = vec![
        (
            vec!["127.0.0.1", "PORT", "cat"],
            vec![
                ("CERTFILE", ec.cert.as_os_str()),
                ("KEYFILE", rsa.key.as_os_str()),
            ],
            96,
            "does not match",
        ),
        (
            vec!["127.0.0.1", "PORT", "cat"],
            vec![
                ("CERTFILE", OsStr::new("/no/such.pem")),
                ("KEYFILE", ec.key.as_os_str()),
            ],
            96,
            "/no/such.pem",
        ),
        (vec!["127.0.0.1", "PORT", "cat"], vec![], 100, "CERTFILE"),
        (
            vec!["127.0.0.1", "PORT", "no-such-program-here"],
            vec![
                ("CERTFILE", ec.cert.as_os_str()),
                ("KEYFILE", ec.key.as_os_str()),
            ],
            127,
            "no-such-program-here",
        ),
        (
            vec!["127.0.0.1", "PORT"],
            vec![
                ("CERTFILE", ec.cert.as_os_str()),
                ("KEYFILE", ec.key.as_os_str()),
            ],
            100,
            "no program",
        ),
        (
            vec!["localhost", "PORT", "cat"],
            vec![
                ("CERTFILE", ec.cert.as_os_str()),
                ("KEYFILE", ec.key.as_os_str()),
            ],
            100,
            "invalid address: localhost",
        ),
        (
            vec!["-c", "0", "127.0.0.1", "PORT", "cat"],
            vec![
                ("CERTFILE", ec.cert.as_os_str()),
                ("KEYFILE", ec.key.as_os_str()),
            ],
            100,
            "maxconn",
        ),
        (
            vec!["-U", "127.0.0.1", "PORT", "cat"],
            vec![
                ("CERTFILE", ec.cert.as_os_str()),
                ("KEYFILE", ec.key.as_os_str()),
            ],
            100,
            "UID",
        ),
    ];
    for (args, env, code, what) in cases {
        let (o, listened) = start_fails(&args, &env);
        let err = o.stderr_str();
        assert_eq!(o.code(), code, "{args:?}: {err}");
        assert!(one_fatal_line(&err, "tlsserver"), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(!listened, "{args:?}: something listened");
    }
}

#[test]
fn an_address_in_use_is_111() {
    let srv = Server::start(&[], "127.0.0.1", &["cat"]);
    let p = &pki().ec;
    let port = srv.port.to_string();
    let mut c = base_command(&bins::bin("tlsserver"));
    c.args(["127.0.0.1", &port, "cat"])
        .env("CERTFILE", &p.cert)
        .env("KEYFILE", &p.key);
    let o = proc::run(&mut c, None, WAIT);
    assert_eq!(o.code(), 111, "{}", o.stderr_str());
    assert!(one_fatal_line(&o.stderr_str(), "tlsserver"));
    assert!(
        o.stderr_str().contains("unable to bind"),
        "{}",
        o.stderr_str()
    );
    assert_eq!(srv.stop(), 0);
}

// ------------------------------------------------------------------ credentials

#[test]
fn the_apps_ids_with_u_g_and_uid_from_env() {
    if !bins::is_root() {
        skip("needs root to change ids");
        return;
    }
    // The command line of tlsserver(1)'s first example, on a free port.
    let srv = Server::start(
        &["-c", "100", "-C", "10", "-u", "33", "-g", "33"],
        "::",
        &sh("echo $(id -u) $(id -g) $(id -G)"),
    );
    assert_eq!(connect(srv.addr()).read_to_end().0, b"33 33 33\n");
    assert_eq!(srv.stop(), 0);

    let p = &pki().ec;
    let srv = Server::start_env(
        &["-U"],
        "127.0.0.1",
        &sh("echo $(id -u) $(id -g) $(id -G)"),
        &[
            ("CERTFILE", &p.cert),
            ("KEYFILE", &p.key),
            ("UID", Path::new("65534")),
            ("GID", Path::new("65534")),
            ("GIDLIST", Path::new("65534,33")),
        ],
    );
    let out = connect(srv.addr()).read_to_end().0;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("65534 65534 "), "{out}");
    assert!(out.contains(" 33"), "{out}");
    assert_eq!(srv.stop(), 0);

    // With the engine's drop (TLS_UID/TLS_GID) and no -u/-g, the app keeps the server's
    // ids: its launcher is forked before the drop, not spawned by the dropped engine.
    let srv = Server::start_env(
        &[],
        "127.0.0.1",
        &sh("echo $(id -u) $(id -g)"),
        &[
            ("CERTFILE", &p.cert),
            ("KEYFILE", &p.key),
            ("TLS_UID", Path::new("65534")),
            ("TLS_GID", Path::new("65534")),
        ],
    );
    assert_eq!(connect(srv.addr()).read_to_end().0, b"0 0\n");
    assert_eq!(srv.stop(), 0);
}

#[test]
fn verbose_log_lines_for_a_connection() {
    let srv = Server::start(&["-v", "2"], "127.0.0.1", &["echo", "hi"]);
    assert_eq!(connect(srv.addr()).read_to_end().0, b"hi\n");
    let ended = proc::wait_for(Duration::from_secs(5), || srv.log().contains(" exit 0 "));
    let log = srv.log();
    assert!(ended, "{log}");
    assert!(
        log.contains("tlsserver: info: listening on 127.0.0.1:"),
        "{log}"
    );
    assert!(log.contains("tlsserver: info: TLSv1.3 "), "{log}");
    assert_eq!(srv.stop(), 0);
}

#[test]
fn python_ssl_client_both_versions() {
    if !require("python3") {
        return;
    }
    let srv = Server::start(
        &[],
        "127.0.0.1",
        &sh("read l; echo \"got $l $SSL_PROTOCOL\""),
    );
    for tls in Tls::both() {
        let o = peers::python_client(srv.port, tls, b"py\n");
        assert_eq!(o.code(), 0, "{tls:?}: {}", o.stderr_str());
        assert_eq!(
            o.stdout_str(),
            format!("got py {}\n", tls.name()),
            "{tls:?}"
        );
    }
    assert_eq!(srv.stop(), 0);
}

#[test]
fn sigint_ends_it_too_and_b_sets_the_listen_queue() {
    let srv = Server::start(&["-b", "7"], "127.0.0.1", &["cat"]);
    if require("ss") {
        let filter = format!("sport = :{}", srv.port);
        let o = proc::run(Command::new("ss").args(["-ltnH", &filter]), None, WAIT);
        // LISTEN, Recv-Q, then Send-Q: the backlog of a listening socket.
        let cols: Vec<String> = o
            .stdout_str()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        assert_eq!(
            cols.get(2).map(String::as_str),
            Some("7"),
            "{}",
            o.stdout_str()
        );
    }
    let addr = srv.addr();
    let mut srv = srv;
    srv.signal(libc::SIGINT);
    let st = proc::wait_or_kill(&mut srv.child, WAIT, "tlsserver after SIGINT");
    assert_eq!(proc::exit_code(st), 0);
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

#[test]
fn sni_pairs_and_client_certificates_from_the_one_context() {
    let (ec, a, cl) = (&pki().ec, &pki().a, &pki().client);
    let srv = Server::start_env(
        &["--sni", "-y"],
        "127.0.0.1",
        &sh("echo \"$SSL_TLS_SNI_SERVERNAME $SSL_PEER_CERT_HASH\""),
        &[
            ("CERTFILE", &ec.cert),
            ("KEYFILE", &ec.key),
            ("CERTFILE:a.test", &a.cert),
            ("KEYFILE:a.test", &a.key),
            ("CAFILE", &pki().ca),
        ],
    );
    for (name, served) in [("a.test", &a.hash), ("localhost", &ec.hash)] {
        let mut o = ClientOpts::default().with_cert(cl);
        o.sni = Some(name.into());
        o.verify_name = Some(name.into());
        let mut c = client::connect(srv.addr(), &o).unwrap_or_else(|e| panic!("{name}: {e}"));
        let der = c
            .peer_cert()
            .and_then(|x| x.to_der().ok())
            .unwrap_or_default();
        let d = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), &der).expect("hash");
        assert_eq!(&format!("SHA256:{}", payload::hex(&d)), served, "{name}");
        let (out, _) = c.read_to_end();
        assert_eq!(
            String::from_utf8_lossy(&out),
            format!("{name} {}\n", cl.hash)
        );
    }
    // No client certificate under -y: that connection fails, the server goes on.
    assert!(client::connect(srv.addr(), &ClientOpts::default())
        .and_then(|mut c| match c.read_some(&mut [0u8; 16]) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{e:?}")),
        })
        .is_err());
    assert_eq!(srv.stop(), 0);
}

#[test]
fn socket_activation_errors_are_100() {
    use std::os::fd::AsRawFd;
    let dir = scratch("activation-errors");
    let unix = std::os::unix::net::UnixListener::bind(dir.join("sock")).expect("unix listener");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp listener");
    let p = &pki().ec;
    for (fd, count, what) in [
        (unix.as_raw_fd(), "1", "fd 3 is not a TCP socket"),
        (tcp.as_raw_fd(), "2", "LISTEN_FDS=2"),
    ] {
        // LISTEN_PID must be tlsserver's own pid: the shell sets it, then becomes tlsserver.
        let mut c = proc::sh(&format!(
            "LISTEN_PID=$$ LISTEN_FDS={count} exec '{}' cat",
            bins::bin("tlsserver").display()
        ));
        c.env("CERTFILE", &p.cert).env("KEYFILE", &p.key);
        proc::map_fds(&mut c, &[(fd, 3)]);
        let o = proc::run(&mut c, None, WAIT);
        assert_eq!(o.code(), 100, "{what}: {}", o.stderr_str());
        assert!(
            one_fatal_line(&o.stderr_str(), "tlsserver"),
            "{}",
            o.stderr_str()
        );
        assert!(o.stderr_str().contains(what), "{}", o.stderr_str());
    }
}
