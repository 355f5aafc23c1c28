//! TICKETKEYFILE: tlsd processes sharing one key file resume each other's sessions
//! (openssl s_client `-sess_out` against one, `-sess_in` against another, and Python
//! ssl sessions; TLS 1.3 and 1.2), prog sees SSL_SESSION_RESUMED=1; rotation [new, old] still resumes an old
//! ticket and [new] alone gives a full handshake; the lifetime bounds resumption; exactly
//! one TLS 1.3 ticket per connection, resumed or not, none without the file; a bad file is 96 at start;
//! a root-only file works with TLS_UID/TLS_GID; HAProxy round robin over two servers
//! sharing the file (the README's example) resumes every reconnection. The same for two
//! tlsserver instances, directly and behind HAProxy; tlsserver keeps its ticket keys
//! across a certificate reload and re-reads a replaced key file.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use stls_tests::bins::is_root;
use stls_tests::listener::{serve_on_free_port, Spawn, TcpServer, TinyListener};
use stls_tests::peers::{self, one_fatal_line, Tls};
use stls_tests::proc::{self, Outcome, Running};
use stls_tests::tlsserver::Server;
use stls_tests::{pki, require, scratch, skip};

const WAIT: Duration = Duration::from_secs(60);

/// prog: whether the session was resumed, and whether the key file's name leaked.
const REPORT: &str = "echo \"tag=${TAG-} resumed=${SSL_SESSION_RESUMED-no} \
     keyfile=${TICKETKEYFILE-unset} lifetime=${TICKETLIFETIME-unset}\"";

fn key_file(dir: &Path, name: &str, keys: &[Vec<u8>]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, keys.concat()).expect("write the key file");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

fn key(seed: u64) -> Vec<u8> {
    stls_tests::payload::bytes(seed, 80)
}

fn tlsd_args(opts: &[&str], script: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![stls_tests::tlsd().into()];
    v.extend(opts.iter().map(OsString::from));
    v.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    v
}

/// `tcpserver ... tlsd opts -- sh -c REPORT` with the test pair and `env`.
fn server(opts: &[&str], env: &[(&str, &Path)]) -> TcpServer {
    let p = pki();
    let mut all: Vec<(&str, &Path)> = vec![
        ("CERTFILE", p.ec.cert.as_path()),
        ("KEYFILE", p.ec.key.as_path()),
    ];
    all.extend_from_slice(env);
    TcpServer::start(20, &tlsd_args(opts, REPORT), &all)
}

/// `openssl s_client` verifying `localhost`, without `-quiet` (its session summary is
/// wanted), reading until the server closes; `-sess_in`/`-sess_out` and `-msg` (the
/// handshake messages, to count tickets) as asked.
fn s_client(port: u16, tls: Tls, sess_in: Option<&Path>, sess_out: Option<&Path>) -> Outcome {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(&pki().ca)
        .args([
            "-verify_return_error",
            "-ign_eof",
            "-msg",
            tls.openssl_flag(),
        ]);
    if let Some(p) = sess_in {
        c.arg("-sess_in").arg(p);
    }
    if let Some(p) = sess_out {
        c.arg("-sess_out").arg(p);
    }
    c.env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
    );
    let o = proc::run(&mut c, Some(b""), WAIT);
    assert_eq!(o.code(), 0, "s_client {tls:?}: {}", o.stderr_str());
    o
}

/// What s_client and prog said of one connection.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    reused: bool,
    prog_resumed: bool,
    tickets: usize,
    tag: String,
}

fn seen(o: &Outcome, tls: Tls) -> Seen {
    let out = o.stdout_str();
    let reused = out.contains(&format!("Reused, {}, Cipher is", tls.name()));
    let new = out.contains(&format!("New, {}, Cipher is", tls.name()));
    assert!(reused != new, "neither New nor Reused: {out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("tag="))
        .unwrap_or_else(|| panic!("prog's line missing: {out}"));
    assert!(
        line.ends_with(" keyfile=unset lifetime=unset"),
        "the ticket variables reached prog: {line}"
    );
    let prog_resumed = line.contains(" resumed=1 ");
    assert!(prog_resumed || line.contains(" resumed=no "), "{line}");
    Seen {
        reused,
        prog_resumed,
        // TLS 1.3: each NewSessionTicket message; TLS 1.2: the ticket in the summary.
        tickets: match tls {
            Tls::V13 => out.matches(", NewSessionTicket").count(),
            Tls::V12 => out.matches("TLS session ticket:").count(),
        },
        tag: line
            .trim_start_matches("tag=")
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

fn ready() -> bool {
    require("tcpserver") && require("openssl")
}

/// A session made by one tlsd process resumes in another that shares the key file, for
/// TLS 1.3 and TLS 1.2; prog sees SSL_SESSION_RESUMED=1 then, and not the key file's
/// name; one TLS 1.3 ticket per connection.
#[test]
fn two_processes_sharing_the_key_file_resume_each_others_sessions() {
    if !ready() {
        return;
    }
    let dir = scratch("tickets-shared");
    let keys = key_file(&dir, "tickets.key", &[key(1)]);
    let env = [("TICKETKEYFILE", keys.as_path())];
    let (a, b) = (server(&[], &env), server(&[], &env));
    for tls in Tls::both() {
        let sess = dir.join(format!("{tls:?}.pem"));
        let first = seen(&s_client(a.port, tls, None, Some(&sess)), tls);
        assert!(!first.reused && !first.prog_resumed, "{tls:?}: {first:?}");
        assert_eq!(first.tickets, 1, "{tls:?}: one ticket per connection");
        for port in [b.port, a.port] {
            let again = seen(&s_client(port, tls, Some(&sess), None), tls);
            assert!(again.reused && again.prog_resumed, "{tls:?}: {again:?}");
        }
    }
    let log = a.stop() + &b.stop();
    assert!(!log.contains("fatal") && !log.contains("warning"), "{log}");
}

/// A resumed connection gets a new ticket too (TLS 1.3: one NewSessionTicket, as after a
/// full handshake), so a client that uses each ticket once (TLS 1.3's advice) resumes
/// every connection: each one's ticket, saved with `-sess_out`, resumes the next. (TLS 1.2
/// resumes with the ticket it was given, which the server may renew: s_client keeps the
/// session it had.)
#[test]
fn a_resumed_connection_gets_a_new_ticket() {
    if !ready() {
        return;
    }
    let dir = scratch("tickets-renewed");
    let keys = key_file(&dir, "tickets.key", &[key(7)]);
    let srv = server(&[], &[("TICKETKEYFILE", keys.as_path())]);
    for tls in [Tls::V13] {
        let sess = |n: usize| dir.join(format!("{tls:?}-{n}.pem"));
        let first = seen(&s_client(srv.port, tls, None, Some(&sess(0))), tls);
        assert!(!first.reused, "{tls:?}: {first:?}");
        assert_eq!(first.tickets, 1, "{tls:?}: the full handshake's ticket");
        for n in 1..4 {
            let again = seen(
                &s_client(srv.port, tls, Some(&sess(n - 1)), Some(&sess(n))),
                tls,
            );
            assert!(again.reused && again.prog_resumed, "{tls:?} {n}: {again:?}");
            assert_eq!(
                again.tickets, 1,
                "{tls:?} {n}: a resumed session's new ticket"
            );
        }
    }
    let log = srv.stop();
    assert!(!log.contains("fatal") && !log.contains("warning"), "{log}");
}

/// Python's ssl module, a client of another TLS library's making than s_client: the
/// session of a connection to one tlsd process resumes with another (`session=`), for
/// TLS 1.3 and 1.2.
#[test]
fn python_ssl_sessions_resume_across_processes() {
    if !ready() || !require("python3") {
        return;
    }
    let dir = scratch("tickets-python");
    let keys = key_file(&dir, "tickets.key", &[key(51)]);
    let env = [("TICKETKEYFILE", keys.as_path())];
    let (a, b) = (server(&[], &env), server(&[], &env));
    let script = r#"
import socket, ssl, sys
ca, pa, pb, ver = sys.argv[1:]
ctx = ssl.create_default_context(cafile=ca)
v = getattr(ssl.TLSVersion, ver)
ctx.minimum_version = v
ctx.maximum_version = v
def conn(port, sess):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
    t = ctx.wrap_socket(s, server_hostname="localhost", session=sess)
    data = b""
    while True:
        d = t.recv(4096)
        if not d:
            break
        data += d
    r = (t.session_reused, data.decode().strip(), t.session)
    t.close()
    return r
r1 = conn(pa, None)
r2 = conn(pb, r1[2])
print(r1[0], r1[1])
print(r2[0], r2[1])
"#;
    for tls in Tls::both() {
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(script)
            .arg(&pki().ca)
            .arg(a.port.to_string())
            .arg(b.port.to_string())
            .arg(tls.python());
        let o = proc::run(&mut c, None, WAIT);
        assert_eq!(o.code(), 0, "{tls:?}: {}", o.stderr_str());
        let lines = o.stdout_str();
        let lines: Vec<&str> = lines.lines().collect();
        let want = [
            "False tag= resumed=no keyfile=unset lifetime=unset",
            "True tag= resumed=1 keyfile=unset lifetime=unset",
        ];
        assert_eq!(lines, want, "{tls:?}");
    }
    let log = a.stop() + &b.stop();
    assert!(!log.contains("fatal"), "{log}");
}

/// Without TICKETKEYFILE: no ticket of either version, and nothing resumes.
#[test]
fn without_the_key_file_no_ticket_and_no_resumption() {
    if !ready() {
        return;
    }
    let dir = scratch("tickets-none");
    let srv = server(&[], &[]);
    for tls in Tls::both() {
        let sess = dir.join(format!("{tls:?}.pem"));
        let first = seen(&s_client(srv.port, tls, None, Some(&sess)), tls);
        assert_eq!(first.tickets, 0, "{tls:?}: {first:?}");
        if sess.exists() {
            let again = seen(&s_client(srv.port, tls, Some(&sess), None), tls);
            assert!(!again.reused && !again.prog_resumed, "{tls:?}: {again:?}");
        }
    }
    srv.stop();
}

/// The first key made by the README's command, then the rotation of tlsd(1)'s example,
/// both run as they are shown (in a scratch directory): the file becomes [new, old]; a ticket of the old key still resumes (and gets a new ticket
/// under the new key); with [new] alone, the old ticket gives a full handshake, never a
/// failure, and the new key's ticket resumes. Each connection reads the file, so no
/// restart is needed.
#[test]
fn rotation_keeps_old_tickets_until_their_key_goes() {
    if !ready() {
        return;
    }
    let dir = scratch("tickets-rotation");
    let keys = dir.join("tickets.key");
    let srv = server(&[], &[("TICKETKEYFILE", keys.as_path())]);
    let readme = std::fs::read_to_string(stls_tests::bins::workspace().join("README.md"))
        .expect("README.md");
    let first_key = "(umask 077; openssl rand 80 > /etc/stls/tickets.key)";
    assert!(readme.contains(first_key), "the README's first key command");
    for tls in Tls::both() {
        // The README's command for the first key.
        let _ = std::fs::remove_file(&keys);
        let cmd = first_key.replace("/etc/stls", &dir.display().to_string());
        let o = proc::run(&mut proc::sh(&cmd), None, WAIT);
        assert_eq!(o.code(), 0, "first key: {}", o.stderr_str());
        let first = std::fs::read(&keys).expect("the first key");
        assert_eq!(first.len(), 80, "{tls:?}: one key");
        let old = dir.join(format!("old-{tls:?}.pem"));
        assert!(!seen(&s_client(srv.port, tls, None, Some(&old)), tls).reused);

        // The man page's cron script, with its directory replaced.
        let man = std::fs::read_to_string(stls_tests::bins::workspace().join("man/tlsd.1"))
            .expect("tlsd.1");
        let script = cron_script(&man).replace("/etc/stls", &dir.display().to_string());
        let o = proc::run(&mut proc::sh(&script), None, WAIT);
        assert_eq!(o.code(), 0, "rotation: {}", o.stderr_str());
        let rotated = std::fs::read(&keys).expect("rotated file");
        assert_eq!(rotated.len(), 160, "{tls:?}: [new, old]");
        assert_eq!(&rotated[80..], &first[..], "{tls:?}: the old key second");
        assert_eq!(
            std::fs::metadata(&keys).expect("stat").permissions().mode() & 0o077,
            0,
            "{tls:?}: the rotated file is private"
        );

        // A ticket of the old key resumes, and is replaced by one of the new key (s_client
        // saves the replacement of a TLS 1.3 session only: for TLS 1.2 the message shows).
        let renewed = dir.join(format!("renewed-{tls:?}.pem"));
        let o = s_client(srv.port, tls, Some(&old), Some(&renewed));
        let s = seen(&o, tls);
        assert!(s.reused && s.prog_resumed, "{tls:?} [new, old]: {s:?}");
        assert_eq!(
            o.stdout_str().matches(", NewSessionTicket").count(),
            1,
            "{tls:?}: renewed"
        );
        let fresh = dir.join(format!("fresh-{tls:?}.pem"));
        assert!(!seen(&s_client(srv.port, tls, None, Some(&fresh)), tls).reused);

        std::fs::write(&keys, &rotated[..80]).expect("[new]");
        let s = seen(&s_client(srv.port, tls, Some(&old), None), tls);
        assert!(
            !s.reused && !s.prog_resumed,
            "{tls:?} [new]: old ticket {s:?}"
        );
        let mut new_tickets = vec![fresh];
        if tls == Tls::V13 {
            new_tickets.push(renewed);
        }
        for t in &new_tickets {
            let s = seen(&s_client(srv.port, tls, Some(t), None), tls);
            assert!(
                s.reused && s.prog_resumed,
                "{tls:?} [new]: {} {s:?}",
                t.display()
            );
        }
    }
    let log = srv.stop();
    assert!(!log.contains("fatal"), "{log}");
}

/// The shell script of tlsd(1)'s EXAMPLES that rotates the keys (from `#!/bin/sh` to
/// the `mv`), with roff's escapes undone.
fn cron_script(man: &str) -> String {
    let start = man
        .find("# /etc/cron.daily/stls\\-tickets")
        .expect("the rotation script in tlsd.1");
    let body = &man[start..];
    let end = body.find(".EE").expect("its end");
    body[..end].replace("\\-", "-")
}

/// TICKETLIFETIME is the tickets' lifetime hint, and a session older than it is not
/// resumed (TLS 1.2: the client offers the ticket anyway, tlsd refuses it).
#[test]
fn lifetime_bounds_resumption() {
    if !ready() {
        return;
    }
    let dir = scratch("tickets-lifetime");
    let keys = key_file(&dir, "tickets.key", &[key(21)]);
    let srv = server(
        &[],
        &[
            ("TICKETKEYFILE", keys.as_path()),
            ("TICKETLIFETIME", Path::new("2")),
        ],
    );
    for tls in Tls::both() {
        let sess = dir.join(format!("{tls:?}.pem"));
        let o = s_client(srv.port, tls, None, Some(&sess));
        assert!(
            o.stdout_str()
                .contains("TLS session ticket lifetime hint: 2 (seconds)"),
            "{tls:?}: {}",
            o.stdout_str()
        );
        let s = seen(&s_client(srv.port, tls, Some(&sess), None), tls);
        assert!(s.reused, "{tls:?}: within its lifetime: {s:?}");
        std::thread::sleep(Duration::from_millis(3100));
        let s = seen(&s_client(srv.port, tls, Some(&sess), None), tls);
        assert!(!s.reused && !s.prog_resumed, "{tls:?}: expired: {s:?}");
    }
    srv.stop();
}

/// A key file of the wrong size, a missing one or a bad lifetime: 96 at start, one line
/// naming the variable, prog never runs. A key file every user can read: a warning.
#[test]
fn bad_key_files_are_96_at_start() {
    let dir = scratch("tickets-bad");
    let marker = peers::marker(&dir);
    let p = pki();
    let script = format!("touch {}", marker.display());
    let spawn = |env: &[(&str, &Path)]| {
        let mut all: Vec<(&str, &Path)> = vec![
            ("CERTFILE", p.ec.cert.as_path()),
            ("KEYFILE", p.ec.key.as_path()),
        ];
        all.extend_from_slice(env);
        let args: Vec<OsString> = tlsd_args(&[], &script)[1..].to_vec();
        let mut s = Spawn::tlsd(&args, &all);
        s.timeout = WAIT;
        TinyListener::start(s)
    };
    let short = key_file(&dir, "short.key", &[key(1)[..79].to_vec()]);
    let long = key_file(&dir, "long.key", &[key(1), vec![0; 8]]);
    let empty = key_file(&dir, "empty.key", &[]);
    let good = key_file(&dir, "good.key", &[key(1)]);
    let missing = dir.join("missing.key");
    for (what, env, words) in [
        (
            "79 bytes",
            vec![("TICKETKEYFILE", short.as_path())],
            "79 bytes",
        ),
        (
            "88 bytes",
            vec![("TICKETKEYFILE", long.as_path())],
            "88 bytes",
        ),
        ("empty", vec![("TICKETKEYFILE", empty.as_path())], "0 bytes"),
        (
            "missing",
            vec![("TICKETKEYFILE", missing.as_path())],
            "unable to read TICKETKEYFILE",
        ),
        (
            "lifetime",
            vec![
                ("TICKETKEYFILE", good.as_path()),
                ("TICKETLIFETIME", Path::new("9d")),
            ],
            "TICKETLIFETIME",
        ),
    ] {
        let l = spawn(&env);
        let _ = l.connect();
        let s = l.next_session(WAIT);
        let err = s.stderr_str();
        assert_eq!(s.code(), 96, "{what}: {err}");
        assert!(one_fatal_line(&err, "tlsd"), "{what}: {err:?}");
        assert!(
            err.contains(words) && (what == "lifetime" || err.contains("TICKETKEYFILE")),
            "{what}: {err}"
        );
        assert!(!marker.exists(), "{what}: prog ran");
    }

    let open = key_file(&dir, "open.key", &[key(1)]);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    for (path, warned) in [(&open, true), (&good, false)] {
        let l = spawn(&[("TICKETKEYFILE", path.as_path())]);
        let mut c = stls_tests::client::connect(l.addr, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, end) = c.read_to_end();
        assert_eq!(end, stls_tests::client::End::CloseNotify);
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 0, "{}", s.stderr_str());
        assert_eq!(
            s.stderr_str()
                .contains("is readable by every user: make it mode 0600"),
            warned,
            "{}: {}",
            path.display(),
            s.stderr_str()
        );
    }
}

/// A key file only root can read (0400 in a 0700 directory, shown unreadable by uid 65534)
/// still works with TLS_UID/TLS_GID: it is read before the privilege drop.
#[test]
fn root_only_key_file_works_with_tls_uid() {
    if !is_root() {
        skip("needs root (privilege drop)");
        return;
    }
    if !ready() {
        return;
    }
    let dir = scratch("tickets-root");
    let private = dir.join("private");
    std::fs::create_dir(&private).expect("mkdir");
    let keys = key_file(&private, "tickets.key", &[key(31)]);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut c = Command::new("/bin/cat");
    c.arg(&keys).uid(65534).gid(65534).stdout(Stdio::null());
    assert_ne!(
        proc::run(&mut c, None, WAIT).code(),
        0,
        "uid 65534 reads it"
    );
    let env = [
        ("TICKETKEYFILE", keys.as_path()),
        ("TLS_UID", Path::new("65534")),
        ("TLS_GID", Path::new("65534")),
    ];
    let srv = server(&[], &env);
    for tls in Tls::both() {
        let sess = dir.join(format!("{tls:?}.pem"));
        assert_eq!(
            seen(&s_client(srv.port, tls, None, Some(&sess)), tls).tickets,
            1
        );
        let s = seen(&s_client(srv.port, tls, Some(&sess), None), tls);
        assert!(s.reused && s.prog_resumed, "{tls:?}: {s:?}");
    }
    let log = srv.stop();
    assert!(!log.contains("fatal"), "{log}");
}

/// `haproxy -db -f CONF`: round robin over two servers, with `send-proxy-v2`.
fn haproxy(backends: [u16; 2]) -> (Running, u16) {
    let dir = scratch("haproxy-rr");
    serve_on_free_port("haproxy", "127.0.0.1", |port| {
        let conf = dir.join(format!("haproxy-{port}.cfg"));
        let text = format!(
            "global\n    maxconn 100\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend https\n    mode tcp\n    bind 127.0.0.1:{port}\n    default_backend tlsd\n\
             backend tlsd\n    mode tcp\n    balance roundrobin\n\
             \x20   server s1 127.0.0.1:{} send-proxy-v2\n    server s2 127.0.0.1:{} send-proxy-v2\n",
            backends[0], backends[1]
        );
        std::fs::write(&conf, text).expect("write haproxy.cfg");
        let mut c = Command::new("haproxy");
        c.arg("-db").arg("-f").arg(&conf);
        c
    })
}

/// The README's "Behind a load balancer": HAProxy round robin in front of two
/// `tcpserver -c 100 -RHl0 ... tlsd -L` sharing TICKETKEYFILE: the first connection is a
/// full handshake, every reconnection resumes, on either server.
#[test]
fn haproxy_round_robin_over_two_servers_resumes_every_reconnection() {
    if !ready() || !require("haproxy") {
        return;
    }
    let dir = scratch("tickets-haproxy");
    let keys = key_file(&dir, "tickets.key", &[key(41)]);
    let s1 = server(
        &["-L"],
        &[("TICKETKEYFILE", keys.as_path()), ("TAG", Path::new("s1"))],
    );
    let s2 = server(
        &["-L"],
        &[("TICKETKEYFILE", keys.as_path()), ("TAG", Path::new("s2"))],
    );
    let (hap, port) = haproxy([s1.port, s2.port]);
    every_reconnection_resumes(port, &dir);
    drop(hap);
    let log = s1.stop() + &s2.stop();
    assert!(!log.contains("fatal"), "{log}");
}

/// Through the balancer on `port` (round robin over servers tagged s1 and s2), TLS 1.3 and
/// 1.2: a first full handshake, then four reconnections with the last session, each
/// resumed with prog told so, and both servers reached.
fn every_reconnection_resumes(port: u16, dir: &Path) {
    for tls in Tls::both() {
        let mut sess = dir.join(format!("{tls:?}-0.pem"));
        let first = seen(&s_client(port, tls, None, Some(&sess)), tls);
        assert!(!first.reused, "{tls:?}: {first:?}");
        let mut tags = vec![first.tag];
        for i in 1..=4 {
            let next = dir.join(format!("{tls:?}-{i}.pem"));
            let s = seen(&s_client(port, tls, Some(&sess), Some(&next)), tls);
            assert!(s.reused && s.prog_resumed, "{tls:?} #{i}: {s:?}");
            tags.push(s.tag);
            if next.exists() {
                sess = next;
            }
        }
        assert!(
            tags.iter().any(|t| t == "s1") && tags.iter().any(|t| t == "s2"),
            "{tls:?}: {tags:?}"
        );
    }
}

// ------------------------------------------------------------------ tlsserver

/// `tlsserver -v 2 opts... 127.0.0.1 PORT sh -c REPORT` with the test pair and `env`.
fn tlsserver(opts: &[&str], env: &[(&str, &Path)]) -> Server {
    let p = pki();
    let mut all: Vec<(&str, &Path)> = vec![
        ("CERTFILE", p.ec.cert.as_path()),
        ("KEYFILE", p.ec.key.as_path()),
    ];
    all.extend_from_slice(env);
    let mut o = vec!["-v", "2"];
    o.extend_from_slice(opts);
    Server::start_env(&o, "127.0.0.1", &["/bin/sh", "-c", REPORT], &all)
}

/// Two tlsserver instances sharing the key file: a session made with one resumes with
/// the other (TLS 1.3 and 1.2), prog sees SSL_SESSION_RESUMED=1, one TLS 1.3 ticket per
/// connection. Then both behind HAProxy round robin (`-L`, `send-proxy-v2`): the first
/// connection through the balancer is a full handshake, every reconnection resumes, on
/// both servers.
#[test]
fn two_tlsservers_sharing_the_key_file_and_haproxy_round_robin() {
    if !require("openssl") {
        return;
    }
    let dir = scratch("tickets-tlsserver");
    let keys = key_file(&dir, "tickets.key", &[key(61)]);
    let env = |tag: &'static str| [("TICKETKEYFILE", keys.as_path()), ("TAG", Path::new(tag))];
    let (a, b) = (tlsserver(&[], &env("a")), tlsserver(&[], &env("b")));
    for tls in Tls::both() {
        let sess = dir.join(format!("direct-{tls:?}.pem"));
        let first = seen(&s_client(a.port, tls, None, Some(&sess)), tls);
        assert!(!first.reused && !first.prog_resumed, "{tls:?}: {first:?}");
        assert_eq!(first.tickets, 1, "{tls:?}: one ticket per connection");
        let again = seen(&s_client(b.port, tls, Some(&sess), None), tls);
        assert!(again.reused && again.prog_resumed, "{tls:?}: {again:?}");
        assert_eq!(again.tag, "b", "{tls:?}");
    }
    let log = a.log() + &b.log();
    assert!(!log.contains("fatal") && !log.contains("warning"), "{log}");
    assert_eq!(a.stop() + b.stop(), 0);

    if !require("haproxy") {
        return;
    }
    // The README's command line, on loopback.
    let (s1, s2) = (
        tlsserver(&["-L", "-c", "100"], &env("s1")),
        tlsserver(&["-L", "-c", "100"], &env("s2")),
    );
    let (hap, port) = haproxy([s1.port, s2.port]);
    every_reconnection_resumes(port, &dir);
    drop(hap);
    let log = s1.log() + &s2.log();
    assert!(!log.contains("fatal"), "{log}");
    assert_eq!(s1.stop() + s2.stop(), 0);
}

/// Write `keys` to the key file by a rename over it, as a rotation job does.
fn replace_keys(path: &Path, keys: &[Vec<u8>]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, keys.concat()).expect("write the new keys");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename the new keys");
}

/// tlsserver keeps the ticket keys across a certificate reload (SIGHUP) and re-reads a
/// replaced TICKETKEYFILE at its once-a-second check: [new, old] still resumes an old
/// ticket, [new] alone gives it a full handshake and resumes the new key's; a key file
/// of the wrong size at a reload is one warning and the keys in use stay.
#[test]
fn tlsserver_reloads_keep_and_reread_the_ticket_keys() {
    if !require("openssl") {
        return;
    }
    let dir = scratch("tickets-tlsserver-reload");
    let (old, new) = (key(71), key(72));
    let keys = key_file(&dir, "tickets.key", std::slice::from_ref(&old));
    let srv = tlsserver(&[], &[("TICKETKEYFILE", keys.as_path())]);
    let reloaded = "info: certificates and ticket keys reloaded";
    let mut reloads = 0;
    let mut reload = |what: &str| {
        reloads += 1;
        assert!(
            srv.wait_log(reloaded, reloads, WAIT),
            "{what}: no reload: {}",
            srv.log()
        );
    };
    let resumes = |sess: &Path, tls: Tls| seen(&s_client(srv.port, tls, Some(sess), None), tls);
    let made = |name: &str, tls: Tls| {
        let p = dir.join(format!("{name}-{tls:?}.pem"));
        assert!(!seen(&s_client(srv.port, tls, None, Some(&p)), tls).reused);
        p
    };
    let olds: Vec<(Tls, PathBuf)> = Tls::both().map(|t| (t, made("old", t))).to_vec();

    srv.signal(libc::SIGHUP);
    reload("SIGHUP");
    for (tls, sess) in &olds {
        let s = resumes(sess, *tls);
        assert!(s.reused && s.prog_resumed, "{tls:?} after SIGHUP: {s:?}");
    }

    replace_keys(&keys, &[new.clone(), old.clone()]);
    reload("[new, old]");
    for (tls, sess) in &olds {
        let s = resumes(sess, *tls);
        assert!(s.reused && s.prog_resumed, "{tls:?} [new, old]: {s:?}");
    }
    let news: Vec<(Tls, PathBuf)> = Tls::both().map(|t| (t, made("new", t))).to_vec();

    replace_keys(&keys, std::slice::from_ref(&new));
    reload("[new]");
    for ((tls, old_sess), (_, new_sess)) in olds.iter().zip(&news) {
        let s = resumes(old_sess, *tls);
        assert!(!s.reused && !s.prog_resumed, "{tls:?} [new]: old {s:?}");
        let s = resumes(new_sess, *tls);
        assert!(s.reused && s.prog_resumed, "{tls:?} [new]: new {s:?}");
    }

    // A broken file at a reload: reported once (after its retry), the keys in use stay.
    std::fs::write(&keys, &new[..50]).expect("a short file");
    let warned = "warning: unable to reload the certificates, the previous ones stay in use";
    assert!(srv.wait_log(warned, 1, WAIT), "{}", srv.log());
    for (tls, sess) in &news {
        let s = resumes(sess, *tls);
        assert!(s.reused && s.prog_resumed, "{tls:?} broken file: {s:?}");
    }
    let log = srv.log();
    assert_eq!(log.matches(warned).count(), 1, "{log}");
    assert!(log.contains("50 bytes"), "{log}");
    assert!(!log.contains("fatal"), "{log}");
    assert_eq!(srv.stop(), 0);
}
