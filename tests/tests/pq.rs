//! The key exchange's group, on either build (`make test` runs this file on the system
//! build and, with `STLS_BIN_DIR`, on the vendored one): what `--version` says, the
//! default groups (X25519MLKEM768 first where the library has it), `SSL_GROUP` on both
//! sides and in the `-v 2` line, `TLS_GROUPS` naming a group the library lacks, and no
//! extra round trip against classic peers (curl, openssl s_client and s_server, gnutls-cli,
//! Python's ssl: every ClientHello on the wire counted by a relay in between); a real
//! browser (headless Chromium) fetching a page from tlsserver and from tlsd.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use stls_tests::bins::{self, hybrid_build};
use stls_tests::listener::{Spawn, TinyListener};
use stls_tests::peers::{self, one_fatal_line, Tls, Tlsc};
use stls_tests::proc;
use stls_tests::tlsserver::Server;
use stls_tests::{pki, require, scratch};

const WAIT: Duration = Duration::from_secs(30);
const HYBRID: &str = "X25519MLKEM768";

/// The group a default client and a default server of the build under test agree on.
fn expected_default_group() -> &'static str {
    if hybrid_build() {
        HYBRID
    } else {
        "X25519"
    }
}

fn ec_env() -> Vec<(&'static str, &'static Path)> {
    vec![
        ("CERTFILE", pki().ec.cert.as_path()),
        ("KEYFILE", pki().ec.key.as_path()),
    ]
}

/// tlsd under the suite's listener, `-v 2`, running `sh -c script` per connection.
fn tlsd(script: &str, extra: &[(&str, &str)]) -> TinyListener {
    let args: Vec<OsString> = ["-v", "2", "--", "/bin/sh", "-c", script]
        .iter()
        .map(OsString::from)
        .collect();
    let mut s = Spawn::tlsd(&args, &ec_env());
    for (k, v) in extra {
        s = s.env(k, v);
    }
    TinyListener::start(s)
}

/// `K=V` lines of a reply.
fn vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

// ------------------------------------------------------------------ a counting relay

/// A TCP relay on 127.0.0.1 in front of `target`, for one connection, that counts the
/// ClientHello messages the client sends: two mean a HelloRetryRequest came in between.
/// The handshake's first flights are plain TLS records (content type 22, handshake type 1
/// for a ClientHello); counting stops at the first encrypted record.
struct Relay {
    port: u16,
    hellos: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = l.local_addr().expect("relay address").port();
        let hellos = Arc::new(AtomicUsize::new(0));
        let count = hellos.clone();
        let thread = thread::spawn(move || {
            let Ok((client, _)) = l.accept() else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                return;
            };
            for s in [&client, &server] {
                let _ = s.set_read_timeout(Some(WAIT));
            }
            let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                (Ok(c), Ok(s)) => (c, s),
                _ => return,
            };
            let back = thread::spawn(move || copy(s2, c2, None));
            copy(client, server, Some(&count));
            let _ = back.join();
        });
        Relay {
            port,
            hellos,
            thread: Some(thread),
        }
    }

    /// The ClientHellos seen, once the connection has ended (bounded by the read timeout).
    fn hellos(mut self) -> usize {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.hellos.load(Ordering::SeqCst)
    }
}

/// Copy `from` to `to` until EOF or an error; with `count`, parse the records as they
/// pass and count the ClientHellos before the first encrypted record.
fn copy(mut from: TcpStream, mut to: TcpStream, count: Option<&AtomicUsize>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut counting = count.is_some();
    let mut buf = [0u8; 16384];
    // Bounded: every read waits at most WAIT, and a connection of the tests is short.
    for _ in 0..100_000 {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if counting {
            pending.extend_from_slice(&buf[..n]);
            while pending.len() >= 5 {
                let len = usize::from(u16::from_be_bytes([pending[3], pending[4]]));
                if pending.len() < 5 + len {
                    break;
                }
                match pending[0] {
                    22 if len > 0 && pending[5] == 1 => {
                        if let Some(c) = count {
                            c.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    23 => counting = false,
                    _ => {}
                }
                pending.drain(..5 + len);
                if !counting {
                    break;
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

// ------------------------------------------------------------------ --version

#[test]
fn every_program_names_its_openssl_and_the_hybrid_group() {
    let hybrid = hybrid_build();
    for prog in [
        "tlsd",
        "tlsc",
        "tlsserver",
        "tlsclient",
        "ucspitlsd",
        "ucspitlsc",
    ] {
        let o = proc::run(Command::new(bins::bin(prog)).arg("--version"), None, WAIT);
        assert_eq!(o.code(), 0, "{prog}: {}", o.stderr_str());
        let out = o.stdout_str();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{prog}: {out}");
        assert_eq!(
            lines[0],
            format!("{prog} {}", env!("CARGO_PKG_VERSION")),
            "{out}"
        );
        assert!(lines[1].starts_with("OpenSSL "), "{prog}: {out}");
        let want = if hybrid {
            "X25519MLKEM768: yes"
        } else {
            "X25519MLKEM768: no"
        };
        assert!(lines[2].starts_with(want), "{prog}: {out}");
    }
}

// ------------------------------------------------------------------ the toolkit's own pair

#[test]
fn tlsc_to_tlsd_default_groups_both_sides_see_the_group() {
    let l = tlsd("echo \"server_group=$SSL_GROUP\"", &[]);
    let relay = Relay::start(l.port());
    let script = "cat <&6; echo \"client_group=$SSL_GROUP\"";
    let o = Tlsc::new(&["-k", "localhost", "--", "/bin/sh", "-c", script]).run(relay.port, None);
    assert_eq!(o.code(), 0, "tlsc: {}", o.stderr_str());
    let v = vars(&o.stdout_str());
    let want = expected_default_group();
    assert_eq!(
        v.get("server_group").map(String::as_str),
        Some(want),
        "{v:?}"
    );
    assert_eq!(
        v.get("client_group").map(String::as_str),
        Some(want),
        "{v:?}"
    );
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 0, "tlsd: {}", s.stderr_str());
    assert!(
        s.stderr_str().contains(&format!(" group={want} ")),
        "the -v 2 line names the group: {}",
        s.stderr_str()
    );
    assert_eq!(relay.hellos(), 1, "no HelloRetryRequest");
}

#[test]
fn tls_groups_names_a_group_this_openssl_lacks() {
    if hybrid_build() {
        // Both sides with the hybrid group alone: it is negotiated.
        let l = tlsd(
            "echo \"server_group=$SSL_GROUP\"",
            &[("TLS_GROUPS", HYBRID)],
        );
        let o = Tlsc::new(&["-k", "localhost", "--", "/bin/sh", "-c", "cat <&6"])
            .env("TLS_GROUPS", HYBRID)
            .run(l.port(), None);
        assert_eq!(o.code(), 0, "{}", o.stderr_str());
        assert!(
            o.stdout_str().contains("server_group=X25519MLKEM768"),
            "{}",
            o.stdout_str()
        );
        return;
    }
    // The configuration is read before the handshake: the connection's close is enough.
    let l = tlsd("echo ran", &[("TLS_GROUPS", HYBRID)]);
    drop(l.connect());
    let s = l.next_session(WAIT);
    let err = s.stderr_str();
    assert_eq!(s.code(), 96, "{err}");
    assert!(one_fatal_line(&err, "tlsd"), "{err}");
    assert!(
        err.contains("X25519MLKEM768")
            && err.contains("OpenSSL 3.5")
            && err.contains("vendored build"),
        "{err}"
    );
    // tlsc says the same.
    let o = Tlsc::new(&["-k", "localhost", "--", "/bin/true"])
        .env("TLS_GROUPS", HYBRID)
        .run(l.port(), None);
    assert_eq!(o.code(), 96, "{}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc") && o.stderr_str().contains("vendored build"),
        "{}",
        o.stderr_str()
    );
}

// ------------------------------------------------------------------ classic peers

/// tlsc of the build under test against the system's `openssl s_server` (OpenSSL 3.0, no
/// ML-KEM): X25519, in one round trip (the client sent an X25519 key share too).
#[test]
fn tlsc_against_the_systems_s_server_is_x25519_without_a_retry() {
    if !require("openssl") {
        return;
    }
    let (mut srv, port) = peers::s_server(&pki().ec, &[], b"");
    let relay = Relay::start(port);
    let o = Tlsc::new(&[
        "-k",
        "localhost",
        "--",
        "/bin/sh",
        "-c",
        "echo \"client_group=$SSL_GROUP\"",
    ])
    .run(relay.port, None);
    let _ = srv.child.kill();
    let _ = srv.child.wait();
    assert_eq!(o.code(), 0, "tlsc: {}", o.stderr_str());
    assert!(
        o.stdout_str().contains("client_group=X25519\n"),
        "{}",
        o.stdout_str()
    );
    assert_eq!(relay.hellos(), 1, "no HelloRetryRequest");
}

/// Classic clients against tlsd of the build under test: each gets a group it sent a key
/// share for with its first ClientHello, so no HelloRetryRequest: X25519, except for
/// gnutls-cli 3.7 on the system build: it sends key shares for P-256 then X25519, and
/// OpenSSL 3.0 takes the client's first share it supports, where 3.5 and later take the
/// first of the server's list among them.
#[test]
fn classic_clients_against_tlsd_get_x25519_without_a_retry() {
    // An HTTP/1.0 answer at once (for curl; the others print it as it comes), then EOF.
    let script = "printf 'HTTP/1.0 200 OK\\r\\n\\r\\nserver_group=%s\\n' \"$SSL_GROUP\"";
    type Client = fn(u16) -> proc::Outcome;
    let gnutls = if hybrid_build() { "X25519" } else { "P-256" };
    let clients: [(&str, &str, &str, Client); 4] = [
        ("curl", "curl", "X25519", |p| peers::curl(p, Tls::V13)),
        ("openssl", "openssl s_client", "X25519", |p| {
            peers::s_client(p, Tls::V13, &[], b"")
        }),
        ("gnutls-cli", "gnutls-cli", gnutls, |p| {
            peers::gnutls_cli(p, Tls::V13, b"")
        }),
        ("python3", "python ssl", "X25519", |p| {
            peers::python_client(p, Tls::V13, b"")
        }),
    ];
    for (tool, what, group, run) in clients {
        if !require(tool) {
            continue;
        }
        let l = tlsd(script, &[]);
        let relay = Relay::start(l.port());
        let o = run(relay.port);
        let out = o.stdout_str();
        assert!(
            out.contains(&format!("server_group={group}\n")),
            "{what}: {out}; {}",
            o.stderr_str()
        );
        let s = l.next_session(WAIT);
        assert!(
            s.stderr_str().contains(&format!(" group={group} ")),
            "{what}: {}",
            s.stderr_str()
        );
        assert_eq!(relay.hellos(), 1, "{what}: no HelloRetryRequest");
    }
}

// ------------------------------------------------------------------ a browser

/// The page every connection serves: the request's head read, then the group.
const PAGE: &str =
    "while IFS= read -r l; do case \"$l\" in ''|\"$(printf '\\r')\") break;; esac; done; \
    printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/html\\r\\nConnection: close\\r\\n\\r\\n'; \
    printf '<html><body><p id=g>SSL_GROUP=%s</p></body></html>\\n' \"$SSL_GROUP\"";

/// Headless Chromium (Debian's `chromium`) fetching https://127.0.0.1:port/ with the test
/// CA trusted in an NSS database of its own HOME (made with certutil, as a user would):
/// the page's text.
fn chromium_fetch(port: u16) -> String {
    let home = scratch("chromium-home");
    let nss = home.join(".pki/nssdb");
    std::fs::create_dir_all(&nss).expect("nssdb directory");
    let db = format!("sql:{}", nss.display());
    let o = proc::run(
        Command::new("certutil").args(["-N", "--empty-password", "-d", &db]),
        None,
        WAIT,
    );
    assert_eq!(o.code(), 0, "certutil -N: {}", o.stderr_str());
    let o = proc::run(
        Command::new("certutil")
            .args(["-A", "-d", &db, "-n", "stls test CA", "-t", "C,,", "-i"])
            .arg(&pki().ca),
        None,
        WAIT,
    );
    assert_eq!(o.code(), 0, "certutil -A: {}", o.stderr_str());
    let mut c = Command::new("timeout");
    // Root needs --no-sandbox; the rest keeps a headless run to itself and short.
    c.args(["-k", "10", "60", "chromium", "--headless", "--no-sandbox"])
        .args(["--disable-gpu", "--no-first-run", "--disable-extensions"])
        .args(["--disable-background-networking", "--disable-sync"])
        .arg(format!(
            "--user-data-dir={}",
            home.join("profile").display()
        ))
        .args(["--dump-dom", &format!("https://127.0.0.1:{port}/")])
        .env("HOME", &home);
    let start = Instant::now();
    let o = proc::run(&mut c, None, Duration::from_secs(90));
    assert!(
        o.code() == 0,
        "chromium exit {} after {:?}: {}",
        o.code(),
        start.elapsed(),
        o.stderr_str()
    );
    o.stdout_str()
}

fn have_chromium() -> bool {
    require("chromium") && require("certutil")
}

#[test]
fn chromium_negotiates_the_group_with_tlsserver_and_tlsd() {
    if !have_chromium() {
        return;
    }
    let want = format!("SSL_GROUP={}", expected_default_group());
    let srv = Server::start(&["-v", "2"], "127.0.0.1", &["/bin/sh", "-c", PAGE]);
    let page = chromium_fetch(srv.port);
    let log = srv.log();
    assert_eq!(srv.stop(), 0);
    assert!(page.contains(&want), "tlsserver: {page}\n{log}");

    let l = tlsd(PAGE, &[]);
    let page = chromium_fetch(l.port());
    let s = l.next_session(WAIT);
    assert!(page.contains(&want), "tlsd: {page}\n{}", s.stderr_str());
    assert!(
        s.stderr_str()
            .contains(&format!(" group={} ", expected_default_group())),
        "{}",
        s.stderr_str()
    );
}

/// The README's `ldd target/vendored/release/tlsd`: either build's programs and library
/// need nothing but the C library (and GCC's unwinder, which every Rust program links):
/// OpenSSL is linked in.
#[test]
fn binaries_need_only_the_c_library() {
    if !require("ldd") {
        return;
    }
    for prog in ["tlsd", "tlsc", "tlsserver", "libautossl.so"] {
        let o = proc::run(Command::new("ldd").arg(bins::bin(prog)), None, WAIT);
        assert_eq!(o.code(), 0, "ldd {prog}: {}", o.stderr_str());
        for line in o.stdout_str().lines() {
            let lib = line.split_whitespace().next().unwrap_or("");
            assert!(
                ["linux-vdso.so.1", "libgcc_s.so.1", "libc.so.6"].contains(&lib)
                    || lib.contains("ld-linux"),
                "{prog} needs {lib}: {}",
                o.stdout_str()
            );
        }
    }
}
