//! Errors in the user's terms: each common mistake gets one line that says what is wrong
//! and what to do, and its documented exit code: an untrusted CA, a name or address the
//! certificate is not for, a peer that does not speak TLS, a CAFILE or CADIR that does not
//! exist, a TLS 1.3 server that wants a client certificate, tlsd started from a terminal,
//! tlsc with no arguments or with mistyped `ADDR PORT` operands.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use stls_tests::client::{OneShotServer, ServerOpts};
use stls_tests::listener::{Spawn, TinyListener};
use stls_tests::peers::{one_fatal_line, Tlsc};
use stls_tests::pki::Pair;
use stls_tests::proc::{self, Outcome};
use stls_tests::{bins, pki};

const WAIT: Duration = Duration::from_secs(30);

fn prog(opts: &[&str], script: &str) -> Vec<String> {
    let mut v: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    v.extend(["--", "/bin/sh", "-c", script].map(String::from));
    v
}

/// tlsc's prog form against a one-shot server of `pair`.
fn against(pair: &Pair, t: Tlsc) -> Outcome {
    let srv = OneShotServer::start(ServerOpts::new(pair), Box::new(|_| Vec::new()));
    let o = t.run(srv.port(), None);
    let _ = srv.report(WAIT);
    o
}

/// One `tlsc: fatal:` line with `code`, containing every one of `words`.
fn says(o: &Outcome, prog: &str, code: i32, words: &[&str], what: &str) {
    let err = o.stderr_str();
    assert_eq!(o.code(), code, "{what}: {err}");
    assert!(one_fatal_line(&err, prog), "{what}: not one line: {err}");
    for w in words {
        assert!(err.contains(w), "{what}: {w:?} missing from: {err}");
    }
}

#[test]
fn untrusted_issuer_names_the_certificate_and_the_remedy() {
    let o = against(
        &pki().untrusted,
        Tlsc::new(&prog(&["-k", "localhost"], "cat <&6")),
    );
    says(
        &o,
        "tlsc",
        97,
        &[
            "CN=localhost",
            "stls untrusted CA",
            "CAFILE",
            "CADIR",
            "(unable to get local issuer certificate)",
        ],
        "untrusted CA",
    );
}

#[test]
fn name_and_address_mismatches_name_the_certificates_names() {
    let o = against(&pki().a, Tlsc::new(&prog(&["-k", "b.test"], "cat <&6")));
    says(
        &o,
        "tlsc",
        97,
        &["is for a.test, not for b.test", "-k"],
        "name",
    );
    // No -k: the address connected to is verified, and a.test has no IP SAN.
    let o = against(&pki().a, Tlsc::new(&prog(&[], "cat <&6")));
    says(
        &o,
        "tlsc",
        97,
        &["is for a.test, not for the address 127.0.0.1", "-k"],
        "address",
    );
}

#[test]
fn a_peer_that_does_not_speak_tls_is_named_so() {
    // tlsc against a plain-text server.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(b"220 plain text here, no TLS\r\n");
            let mut b = [0u8; 512];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut b);
        }
    });
    let o = Tlsc::new(&prog(&["-k", "localhost"], "cat <&6")).run(port, None);
    let _ = server.join();
    says(
        &o,
        "tlsc",
        97,
        &["does not speak TLS", "(OpenSSL: wrong version number)"],
        "plain-text server",
    );

    // tlsd receiving a plain HTTP request.
    let p = pki();
    let l = TinyListener::start(Spawn::tlsd(
        &["--", "/bin/cat"],
        &[("CERTFILE", &p.ec.cert), ("KEYFILE", &p.ec.key)],
    ));
    let mut c = l.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 97, "{}", s.stderr_str());
    assert!(
        s.stderr_str().contains("plain HTTP request, not TLS"),
        "{}",
        s.stderr_str()
    );
}

#[test]
fn missing_cafile_and_cadir_are_reported_at_start() {
    let p = pki();
    let missing = Path::new("/nonexistent/stls-ca");
    for (var, value, words) in [
        (
            "CAFILE",
            missing,
            &["CAFILE", "No such file or directory"][..],
        ),
        (
            "CADIR",
            missing,
            &["CADIR", "No such file or directory"][..],
        ),
        (
            "CADIR",
            p.ca.as_path(),
            &["CADIR", "is not a directory"][..],
        ),
        (
            "CAFILE",
            p.cadir.as_path(),
            &["CAFILE", "is a directory"][..],
        ),
    ] {
        // tlsc: before any connection (the io form with nothing to connect to).
        let o = proc::run(
            Tlsc::bare(&["-k", "localhost", "127.0.0.1", "9"])
                .env(var, value)
                .command()
                .stdin(Stdio::null()),
            None,
            WAIT,
        );
        says(&o, "tlsc", 96, words, &format!("tlsc {var}={value:?}"));
        // tlsd -y: before the handshake, and prog never runs.
        let l = TinyListener::start(
            Spawn::tlsd(
                &["-y", "--", "/bin/echo", "ran"],
                &[("CERTFILE", &p.ec.cert), ("KEYFILE", &p.ec.key)],
            )
            .env(var, value),
        );
        let _c = l.connect();
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 96, "tlsd {var}: {}", s.stderr_str());
        assert!(
            one_fatal_line(&s.stderr_str(), "tlsd"),
            "{}",
            s.stderr_str()
        );
        for w in words {
            assert!(s.stderr_str().contains(w), "tlsd {var}: {}", s.stderr_str());
        }
    }
}

#[test]
fn tls13_server_requiring_a_client_certificate_is_97() {
    let p = pki();
    let l = TinyListener::start(
        Spawn::tlsd(
            &["-y", "--", "/bin/echo", "ran"],
            &[("CERTFILE", &p.ec.cert), ("KEYFILE", &p.ec.key)],
        )
        .env("CAFILE", &p.ca),
    );
    // The prog form reads until the server's verdict arrives.
    let o = Tlsc::new(&prog(&["-k", "localhost"], "cat <&6")).run(l.port(), None);
    says(
        &o,
        "tlsc",
        97,
        &[
            "handshake failed: the server requires a client certificate",
            "CERTFILE",
        ],
        "no client certificate",
    );
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 97, "{}", s.stderr_str());
    assert!(
        s.stderr_str().contains("the client sent no certificate"),
        "{}",
        s.stderr_str()
    );
}

/// Run `cmd` with stdin and stdout as the caller set them; stderr collected.
fn run_keeping_fds(cmd: &mut Command) -> (i32, String) {
    cmd.stderr(Stdio::piped());
    let mut child = proc::spawn(cmd);
    let mut err = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let st = proc::wait_or_kill(&mut child, WAIT, "tlsd");
    (proc::exit_code(st), reader.join().unwrap_or_default())
}

/// A pseudo-terminal's (controller, device) fds.
fn openpty() -> (i32, i32) {
    let (mut controller, mut device) = (-1, -1);
    // SAFETY: the out-pointers are valid; name, termios and winsize may be null.
    let r = unsafe {
        libc::openpty(
            &mut controller,
            &mut device,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    (controller, device)
}

#[test]
fn tlsd_on_a_terminal_says_so_at_once() {
    use std::os::fd::FromRawFd;
    let p = pki();
    let (controller, device) = openpty();
    // SAFETY: `device` is a fresh fd owned by nothing else; the File takes it.
    let tty = unsafe { std::fs::File::from_raw_fd(device) };
    let mut c = Command::new(bins::tlsd());
    c.args(["--", "/bin/cat"])
        .env("CERTFILE", &p.ec.cert)
        .env("KEYFILE", &p.ec.key)
        .stdin(tty.try_clone().unwrap())
        .stdout(tty);
    let start = Instant::now();
    let (code, err) = run_keeping_fds(&mut c);
    drop(c);
    // SAFETY: `controller` is ours and closed once.
    unsafe { libc::close(controller) };
    assert_eq!(code, 100, "{err}");
    assert!(one_fatal_line(&err, "tlsd"), "{err}");
    assert!(
        err.contains("fd 0 is a terminal") && err.contains("tcpserver"),
        "{err}"
    );
    // Not the handshake timeout (30 s): at once.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn tlsc_without_arguments_or_with_mistyped_operands() {
    let run =
        |args: &[&str]| proc::run(Tlsc::bare(args).command().stdin(Stdio::null()), None, WAIT);
    says(
        &run(&[]),
        "tlsc",
        100,
        &["no arguments", "tlsc --help"],
        "bare",
    );
    says(
        &run(&["a.test", "443"]),
        "tlsc",
        100,
        &["numeric IP address, not \"a.test\"", "tlsclient"],
        "host name",
    );
    says(
        &run(&["127.0.0.1", "44x3"]),
        "tlsc",
        100,
        &["number from 1 to 65535, not \"44x3\""],
        "bad port",
    );
    says(
        &run(&["127.0.0.1", "443", "cat"]),
        "tlsc",
        100,
        &["exactly two operands, not 3", "--"],
        "three operands",
    );
    // With `--` the operands are a prog: the missing network fds are the problem.
    says(
        &run(&["--", "a.test", "443"]),
        "tlsc",
        111,
        &["the network must be on fd 6 and fd 7"],
        "prog form",
    );
}

#[test]
fn verbose_line_names_the_peer_without_tcpremoteip() {
    let p = pki();
    // tlsd with the socket on fd 0/1 and no TCP* variables, as inetd runs it.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let client = thread::spawn(move || {
        let o = Tlsc::new(&prog(&["-k", "localhost"], "cat <&6")).run(addr.port(), None);
        o.code()
    });
    let (sock, _) = l.accept().unwrap();
    let mut c = Command::new(bins::tlsd());
    c.args(["-v", "2", "--", "/bin/echo", "ok"])
        .env_remove("TCPREMOTEIP")
        .env("CERTFILE", &p.ec.cert)
        .env("KEYFILE", &p.ec.key)
        .stdin(std::os::fd::OwnedFd::from(sock.try_clone().unwrap()))
        .stdout(std::os::fd::OwnedFd::from(sock));
    let (code, err) = run_keeping_fds(&mut c);
    drop(c);
    assert_eq!(client.join().unwrap(), 0);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("tlsd: info: TLSv1.3") && err.contains(" peer=127.0.0.1"),
        "{err}"
    );
}

/// `openssl req -x509 -newkey rsa:2048 -nodes ... -subj "/CN=localhost"` and `extra`, run
/// as a newcomer runs it, in `dir`: (certificate, key).
fn self_signed(dir: &Path, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let script = format!(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem -days 30 \
         -subj \"/CN=localhost\" {extra}"
    );
    let o = proc::run(proc::sh(&script).current_dir(dir), None, WAIT);
    assert_eq!(o.code(), 0, "{script}: {}", o.stderr_str());
    (dir.join("c.pem"), dir.join("k.pem"))
}

/// `cmd` with CAFILE (or nothing: the system store) and no other trust setting.
fn trusting(cmd: &mut Command, cafile: Option<&Path>) -> Outcome {
    cmd.env_remove("CAFILE").env_remove("CADIR");
    if let Some(f) = cafile {
        cmd.env("CAFILE", f);
    }
    proc::run(cmd, Some(b"x\n"), WAIT)
}

fn serving(cert: &Path, key: &Path) -> TinyListener {
    TinyListener::start(Spawn::tlsd(
        &["--", "/bin/cat"],
        &[("CERTFILE", cert), ("KEYFILE", key)],
    ))
}

/// The certificate `openssl req -x509 -subj /CN=localhost` makes has no subject
/// alternative name, and the CN is not used as a name: the message says so and gives the
/// `-addext` that fixes it, not `-k` (no -k helps); without trust, CAFILE and CADIR come
/// first, with the missing name said too. The fix it names then works.
#[test]
fn a_certificate_with_only_a_cn_is_named_so_with_the_fix() {
    if !stls_tests::require("openssl") {
        return;
    }
    let dir = stls_tests::scratch("cn-only");
    let (cert, key) = self_signed(&dir, "");
    let l = serving(&cert, &key);
    let port = l.port().to_string();
    let tlsclient = || {
        let mut c = Command::new(bins::bin("tlsclient"));
        c.args(["localhost", &port]);
        c
    };
    let no_k = |o: &Outcome, what: &str| {
        assert!(
            !o.stderr_str().contains("with -k"),
            "{what}: {}",
            o.stderr_str()
        );
    };
    let o = trusting(&mut tlsclient(), Some(&cert));
    let words = [
        "the peer's certificate (CN=localhost) has no subject alternative name",
        "the subject's CN is not used as a name, on purpose, as browsers do",
        "openssl req ... -addext \"subjectAltName=DNS:localhost\"",
        "(hostname mismatch)",
    ];
    says(&o, "tlsclient", 97, &words, "tlsclient localhost");
    no_k(&o, "tlsclient localhost");

    let mut tlsc = Command::new(bins::tlsc());
    tlsc.args(["-k", "localhost", "127.0.0.1", &port]);
    let o = trusting(&mut tlsc, Some(&cert));
    says(&o, "tlsc", 97, &words, "tlsc -k localhost");
    no_k(&o, "tlsc -k localhost");

    // No -k: the address is verified, and the fix is an IP name.
    let mut tlsc = Command::new(bins::tlsc());
    tlsc.args(["127.0.0.1", &port]);
    let o = trusting(&mut tlsc, Some(&cert));
    says(
        &o,
        "tlsc",
        97,
        &[
            "has no subject alternative name",
            "-addext \"subjectAltName=IP:127.0.0.1\"",
            "(IP address mismatch)",
        ],
        "tlsc ADDR PORT",
    );

    // Not trusted (the system store): trust is the first remedy, the name the second.
    let o = trusting(&mut tlsclient(), None);
    says(
        &o,
        "tlsclient",
        97,
        &[
            "(CN=localhost) is self-signed and not trusted here",
            "CAFILE",
            "CADIR",
            "it also has no subject alternative name",
            "-addext \"subjectAltName=DNS:localhost\"",
            "(self-signed certificate)",
        ],
        "untrusted",
    );
    no_k(&o, "untrusted");
    drop(l);

    // The fix as the message gives it.
    let fixed = stls_tests::scratch("cn-and-san");
    let (cert, key) = self_signed(&fixed, "-addext \"subjectAltName=DNS:localhost\"");
    let l = serving(&cert, &key);
    let port = l.port().to_string();
    let mut c = Command::new(bins::bin("tlsclient"));
    c.args(["localhost", &port]);
    let o = trusting(&mut c, Some(&cert));
    assert_eq!(o.code(), 0, "with the SAN: {}", o.stderr_str());
    assert_eq!(o.stdout_str(), "x\n");
}

/// A certificate whose CN is the name asked for but whose subject alternative names are
/// others: the message says the CN does not count, and both remedies.
#[test]
fn a_name_only_in_the_cn_is_named_so() {
    if !stls_tests::require("openssl") {
        return;
    }
    let dir = stls_tests::scratch("cn-not-san");
    let (cert, key) = self_signed(&dir, "-addext \"subjectAltName=DNS:other.test\"");
    let l = serving(&cert, &key);
    let mut c = Command::new(bins::bin("tlsclient"));
    c.args(["localhost", &l.port().to_string()]);
    let o = trusting(&mut c, Some(&cert));
    says(
        &o,
        "tlsclient",
        97,
        &[
            "is for other.test, not for localhost",
            "localhost is only its subject's CN, which is not used as a name",
            "-k",
            "-addext \"subjectAltName=DNS:localhost\"",
        ],
        "CN only",
    );
}
