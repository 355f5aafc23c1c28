//! Delayed TLS (UCSPI-TLS): ucspitlsd with a small SMTP server app (tests/apps/ucspi-smtpd)
//! under real STARTTLS clients (curl, openssl s_client, swaks, gnutls-cli, Python smtplib);
//! `Y` and `y`; a declined session; garbage after STARTTLS; the handshake timeout counted
//! from the command; the secrets stripped; a bad command. ucspitlsc with a small SMTP client
//! app (tests/apps/ucspi-smtp) under tcpclient against aiosmtpd (which requires STARTTLS)
//! and against ucspitlsd; a wrong name fails closed. Random payloads both ways by hash
//! through the delayed path (tests/apps/ucspi-pipe), with half-close and an app that exits
//! at once after its last write; a reset, a killed app and truncation after the upgrade.
//! tlsserver -n: the same protocol on every connection (curl, swaks, a declined session,
//! garbage after STARTTLS with the server going on, the handshake timeout).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stls_tests::bins;
use stls_tests::client::{self, ClientOpts, End};
use stls_tests::listener::{self, Session, Spawn, TcpServer, TinyListener};
use stls_tests::payload::{self, MIB};
use stls_tests::peers::one_fatal_line;
use stls_tests::proc::{self, Running};
use stls_tests::tlsserver::Server;
use stls_tests::{faults, pki, require, scratch};

const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ helpers

fn app(name: &str) -> PathBuf {
    bins::workspace().join("tests/apps").join(name)
}

fn path_var() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into())
}

/// `ucspitlsd opts... -- prog...` per connection under the suite's listener, with the
/// ECDSA pair.
fn ucspitlsd(opts: &[&str], prog: &[&Path], args: &[&str]) -> TinyListener {
    let mut argv: Vec<OsString> = opts.iter().map(OsString::from).collect();
    argv.push("--".into());
    argv.extend(prog.iter().map(|p| p.as_os_str().to_os_string()));
    argv.extend(args.iter().map(OsString::from));
    let spawn = Spawn {
        program: bins::bin("ucspitlsd"),
        args: argv,
        env: vec![
            ("CERTFILE".into(), pki().ec.cert.clone().into()),
            ("KEYFILE".into(), pki().ec.key.clone().into()),
        ],
        groups: None,
        timeout: Duration::from_secs(60),
    };
    TinyListener::start(spawn)
}

/// ucspitlsd running the SMTP server app with `command` ("Y", "y", "decline", ...); the
/// app's files go to the returned directory.
fn smtpd(opts: &[&str], command: &str, label: &str) -> (TinyListener, PathBuf) {
    let out = scratch(label);
    let o = out.to_string_lossy().into_owned();
    let l = ucspitlsd(opts, &[&app("ucspi-smtpd")], &[&o, command]);
    (l, out)
}

/// A mail body: seeded random base64 lines ending in CRLF, every fifth starting with a
/// dot (SMTP's dot-stuffing must be undone exactly).
fn mail_body(seed: u64, lines: usize) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = payload::XorShift::new(seed);
    let mut out = b"Subject: delayed TLS\r\n\r\n".to_vec();
    for i in 0..lines {
        if i % 5 == 2 {
            out.push(b'.');
        }
        for _ in 0..76 {
            out.push(B64[(rng.next_u64() % 64) as usize]);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn body_file(label: &str, body: &[u8]) -> PathBuf {
    let p = scratch(label).join("mail.txt");
    std::fs::write(&p, body).expect("write the mail");
    p
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The description's entries that set a variable.
fn entries(desc: &[u8]) -> BTreeMap<String, String> {
    assert!(desc.ends_with(b"\0"), "no final NUL: {desc:?}");
    String::from_utf8_lossy(desc)
        .split('\0')
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The app received mail number 1, over TLS (`how`), with exactly `body`.
fn assert_mail(out: &Path, body: &[u8], how: &str) {
    assert_eq!(
        payload::sha256_hex(&read(&out.join("mail.1"))),
        payload::sha256_hex(body),
        "the mail's content"
    );
    assert_eq!(read(&out.join("mail.1.how")), how.as_bytes());
}

/// After `Y`: a description with the protocol and cipher of a real session.
fn assert_described(out: &Path) -> BTreeMap<String, String> {
    let d = entries(&read(&out.join("desc")));
    assert!(
        matches!(
            d.get("SSL_PROTOCOL").map(String::as_str),
            Some("TLSv1.2" | "TLSv1.3")
        ),
        "{d:?}"
    );
    assert!(d.get("SSL_CIPHER").is_some_and(|c| !c.is_empty()), "{d:?}");
    d
}

fn session(l: &TinyListener) -> Session {
    l.next_session(WAIT)
}

fn assert_clean(s: &Session, what: &str) {
    assert_eq!(s.code(), 0, "{what}: {}", s.stderr_str());
    assert!(s.stderr.is_empty(), "{what}: {}", s.stderr_str());
}

fn base(c: &mut Command) -> &mut Command {
    c.env_clear().env("PATH", path_var())
}

/// Python's smtplib: EHLO, STARTTLS verifying `localhost`, the mail, QUIT. `tls`: false
/// sends in clear text.
fn smtplib(port: u16, body: &Path, tls: bool) -> proc::Outcome {
    const SCRIPT: &str = r#"
import smtplib, ssl, sys
port, ca, body, tls = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
with open(body, "rb") as f:
    data = f.read()
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30)
if tls:
    ctx = ssl.create_default_context(cafile=ca)
    # starttls() verifies the name the connection was made to: the certificate's.
    s._host = "localhost"
    s.starttls(context=ctx)
s.sendmail("a@client.test", ["b@server.test"], data)
s.quit()
"#;
    let mut c = Command::new("python3");
    base(&mut c)
        .arg("-c")
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(&pki().ca)
        .arg(body)
        .arg(if tls { "1" } else { "0" });
    proc::run(&mut c, None, WAIT)
}

/// The SMTP commands after STARTTLS, for the clients that take them on stdin.
fn smtp_script(body: &[u8]) -> Vec<u8> {
    let mut s =
        b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@server.test>\r\nDATA\r\n"
            .to_vec();
    for l in body.split_inclusive(|&b| b == b'\n') {
        if l.starts_with(b".") {
            s.push(b'.');
        }
        s.extend_from_slice(l);
    }
    s.extend_from_slice(b".\r\nQUIT\r\n");
    s
}

/// Read one SMTP reply (its last line starts with the code and a space).
fn reply(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) => {}
            other => panic!("reading a reply: {other:?} after {all:?}"),
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            all.extend_from_slice(&line);
            if line.get(3) == Some(&b' ') {
                return String::from_utf8_lossy(&all).into_owned();
            }
            line.clear();
        }
    }
}

/// Connect, read the banner, EHLO, STARTTLS: the socket is where the handshake starts.
fn starttls(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(reply(&mut s).starts_with("220 "));
    s.write_all(b"EHLO client.test\r\n").expect("EHLO");
    assert!(reply(&mut s).contains("STARTTLS"));
    s.write_all(b"STARTTLS\r\n").expect("STARTTLS");
    assert!(reply(&mut s).starts_with("220 "));
    s
}

/// Read until the peer closes or resets; what came.
fn drain(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A Python that has aiosmtpd: Debian's own (a developer's PATH may put another first).
fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// `ucspitlsc opts... -- prog...` under `tcpclient -RHl0 127.0.0.1 port`, CAFILE the
/// test CA.
fn ucspitlsc(port: u16, opts: &[&str], prog: &[&OsString]) -> proc::Outcome {
    let mut c = Command::new("tcpclient");
    base(&mut c)
        .args(["-RHl0", "127.0.0.1"])
        .arg(port.to_string())
        .arg(bins::bin("ucspitlsc"))
        .args(opts)
        .arg("--")
        .args(prog)
        .env("CAFILE", &pki().ca);
    proc::run(&mut c, None, WAIT)
}

// ------------------------------------------------ ucspitlsd and STARTTLS clients

#[test]
fn curl_sends_a_mail_under_tcpserver() {
    if !require("tcpserver") || !require("curl") {
        return;
    }
    let out = scratch("ucspi-curl-out");
    let body = mail_body(1, 400);
    let file = body_file("ucspi-curl", &body);
    let prog = [
        bins::bin("ucspitlsd").into_os_string(),
        "--".into(),
        app("ucspi-smtpd").into_os_string(),
        out.clone().into_os_string(),
    ];
    let ec = &pki().ec;
    let srv = TcpServer::start(
        4,
        &prog,
        &[
            ("CERTFILE", ec.cert.as_path()),
            ("KEYFILE", ec.key.as_path()),
        ],
    );
    let o = curl_mail(srv.port, &file);
    assert_eq!(o.code(), 0, "curl: {}", o.stderr_str());
    // curl is done once the server answered QUIT; the app writes its files before that.
    assert!(proc::wait_for(WAIT, || out.join("mail.1.how").exists()));
    let stderr = srv.stop();
    assert_mail(&out, &body, "tls");
    assert_described(&out);
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn openssl_s_client_starttls_smtp() {
    let (l, out) = smtpd(&[], "Y", "ucspi-s-client");
    let body = mail_body(2, 300);
    let mut c = Command::new("openssl");
    base(&mut c)
        .args(["s_client", "-starttls", "smtp", "-connect"])
        .arg(format!("127.0.0.1:{}", l.port()))
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(&pki().ca)
        .args(["-verify_return_error", "-quiet"]);
    let o = proc::run(&mut c, Some(&smtp_script(&body)), WAIT);
    let s = session(&l);
    assert_clean(&s, "ucspitlsd");
    assert!(o.stdout_str().contains("221 bye"), "{}", o.stdout_str());
    assert_mail(&out, &body, "tls");
    let d = assert_described(&out);
    assert_eq!(
        d.get("SSL_TLS_SNI_SERVERNAME").map(String::as_str),
        Some("localhost")
    );
}

#[test]
fn swaks_tls() {
    if !require("swaks") {
        return;
    }
    let (l, out) = smtpd(&[], "Y", "ucspi-swaks");
    let body = mail_body(3, 200);
    let file = body_file("ucspi-swaks", &body);
    let o = swaks_mail(l.port(), &file);
    assert_eq!(o.code(), 0, "swaks: {}{}", o.stdout_str(), o.stderr_str());
    assert_clean(&session(&l), "ucspitlsd");
    // swaks ends the DATA it sends with a line of its own: "\r\n.\r\n" after the file.
    let mut sent = body.clone();
    sent.extend_from_slice(b"\r\n");
    assert_mail(&out, &sent, "tls");
    assert_described(&out);
}

#[test]
fn gnutls_cli_starttls_smtp() {
    if !require("gnutls-cli") {
        return;
    }
    let (l, out) = smtpd(&[], "Y", "ucspi-gnutls");
    let body = mail_body(4, 300);
    let mut c = Command::new("gnutls-cli");
    base(&mut c)
        .arg("127.0.0.1")
        .arg("-p")
        .arg(l.port().to_string())
        .arg("--starttls-proto=smtp")
        .arg("--sni-hostname=localhost")
        .arg("--verify-hostname=localhost")
        .arg(format!("--x509cafile={}", pki().ca.display()))
        .stdin(Stdio::piped());
    // gnutls-cli closes the session at its stdin's EOF: the server's 221 and close end it.
    let mut r = Running::start(&mut c);
    let mut stdin = r.child.stdin.take().expect("gnutls-cli stdin");
    let _ = stdin.write_all(&smtp_script(&body));
    let _ = stdin.flush();
    let s = session(&l);
    let o = r.finish(WAIT);
    drop(stdin);
    assert_clean(&s, "ucspitlsd");
    assert!(o.stdout_str().contains("221 bye"), "{}", o.stdout_str());
    assert_mail(&out, &body, "tls");
    assert_described(&out);
}

#[test]
fn python_smtplib_starttls_with_y_and_without_a_description() {
    for (command, described) in [("Y", true), ("y", false)] {
        let (l, out) = smtpd(&[], command, "ucspi-smtplib");
        let body = mail_body(5, 500);
        let o = smtplib(l.port(), &body_file("ucspi-smtplib", &body), true);
        assert_eq!(o.code(), 0, "smtplib ({command}): {}", o.stderr_str());
        assert_clean(&session(&l), command);
        assert_mail(&out, &body, "tls");
        if described {
            assert_described(&out);
        } else {
            // `y`: SSLCTLFD closed, nothing written on it.
            assert_eq!(read(&out.join("desc")), b"", "after y");
        }
    }
}

// ------------------------------------------------------- ucspitlsd's other paths

#[test]
fn declined_session_stays_plain_with_the_apps_exit_code() {
    let (l, out) = smtpd(&[], "decline", "ucspi-decline");
    let body = mail_body(6, 100);
    let o = smtplib(l.port(), &body_file("ucspi-decline", &body), false);
    assert_eq!(o.code(), 0, "smtplib: {}", o.stderr_str());
    let s = session(&l);
    // The app exits 7 after QUIT when it declined TLS.
    assert_eq!(s.code(), 7, "{}", s.stderr_str());
    assert!(s.stderr.is_empty(), "{}", s.stderr_str());
    assert_mail(&out, &body, "plain");
}

#[test]
fn garbage_after_starttls_is_97_and_no_hang() {
    let (l, out) = smtpd(&[], "Y", "ucspi-garbage");
    let t0 = Instant::now();
    let mut s = starttls(l.port());
    s.write_all(b"EHLO again\r\nMAIL FROM:<x@y>\r\n")
        .expect("garbage");
    let _ = drain(&mut s);
    let sess = session(&l);
    assert_eq!(sess.code(), 97, "{}", sess.stderr_str());
    assert!(
        one_fatal_line(&sess.stderr_str(), "ucspitlsd"),
        "{}",
        sess.stderr_str()
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The app saw no description (the handshake failed) and nothing more in clear text.
    assert_eq!(read(&out.join("desc")), b"");
    assert_eq!(read(&out.join("log")), b"EHLO\nSTARTTLS\n");
}

#[test]
fn handshake_timeout_counts_from_the_command() {
    let (l, _out) = smtpd(&["-K", "1000"], "Y", "ucspi-timeout");
    // 1.5 s of clear text before STARTTLS, longer than -K: the handshake still succeeds.
    let mut s = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(reply(&mut s).starts_with("220 "));
    std::thread::sleep(Duration::from_millis(1500));
    drop(s);
    let s = starttls(l.port());
    let mut t = client::handshake(s, &ClientOpts::default()).expect("handshake after the wait");
    t.write_all(b"QUIT\r\n").expect("QUIT");
    let (got, end) = t.read_to_end();
    assert!(got.starts_with(b"221 "), "{got:?}");
    assert_eq!(end, End::CloseNotify);
    // The first connection: the app saw EOF in clear text and exited 5.
    let first = session(&l);
    assert_eq!(first.code(), 5, "{}", first.stderr_str());
    assert_clean(&session(&l), "after a slow clear-text phase");

    // STARTTLS, then silence: 98 about 1 s after the command.
    let mut s = starttls(l.port());
    let t0 = Instant::now();
    let _ = drain(&mut s);
    let sess = session(&l);
    let waited = t0.elapsed();
    assert_eq!(sess.code(), 98, "{}", sess.stderr_str());
    assert!(
        sess.stderr_str().contains("handshake timed out"),
        "{}",
        sess.stderr_str()
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

#[test]
fn secrets_stripped_unless_keep() {
    for (opts, kept) in [(&[][..], false), (&["-Z"][..], true)] {
        let (l, out) = smtpd(opts, "decline", "ucspi-env");
        let mut s = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        assert!(reply(&mut s).starts_with("220 "));
        s.write_all(b"QUIT\r\n").expect("QUIT");
        assert!(reply(&mut s).starts_with("221 "));
        assert_eq!(session(&l).code(), 7);
        let env = String::from_utf8_lossy(&read(&out.join("env"))).into_owned();
        let names: Vec<&str> = env.lines().collect();
        for k in ["SSLCTLFD", "SSLREADFD", "SSLWRITEFD"] {
            assert!(names.contains(&k), "{k} missing: {names:?}");
        }
        for k in ["CERTFILE", "KEYFILE"] {
            assert_eq!(names.contains(&k), kept, "{k} with {opts:?}: {names:?}");
        }
    }
}

#[test]
fn any_other_command_is_100() {
    let (l, out) = smtpd(&[], "N", "ucspi-badcmd");
    let mut s = starttls(l.port());
    let _ = drain(&mut s);
    let sess = session(&l);
    assert_eq!(sess.code(), 100, "{}", sess.stderr_str());
    assert!(
        one_fatal_line(&sess.stderr_str(), "ucspitlsd"),
        "{}",
        sess.stderr_str()
    );
    assert!(
        sess.stderr_str().contains("Y and y"),
        "{}",
        sess.stderr_str()
    );
    assert_eq!(read(&out.join("desc")), b"");
}

#[test]
fn prog_exiting_without_a_command_is_its_exit_code() {
    let l = ucspitlsd(&[], &[Path::new("/bin/sh")], &["-c", "exit 3"]);
    let mut s = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    // Nobody holds the connection once the app is gone: the client reads EOF.
    assert_eq!(drain(&mut s), b"");
    let sess = session(&l);
    assert_eq!(sess.code(), 3, "{}", sess.stderr_str());
    assert!(sess.stderr.is_empty(), "{}", sess.stderr_str());
}

#[test]
fn failures_before_prog_starts() {
    let marker = scratch("ucspi-before").join("ran");
    let script = format!("touch {}", marker.display());
    // A certificate that cannot be read: 96, and the app never runs.
    let mut argv: Vec<OsString> = vec!["--".into(), "/bin/sh".into(), "-c".into()];
    argv.push(script.clone().into());
    let spawn = Spawn {
        program: bins::bin("ucspitlsd"),
        args: argv,
        env: vec![
            ("CERTFILE".into(), "/no/such/cert.pem".into()),
            ("KEYFILE".into(), pki().ec.key.clone().into()),
        ],
        groups: None,
        timeout: Duration::from_secs(60),
    };
    let l = TinyListener::start(spawn);
    let mut s = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert_eq!(drain(&mut s), b"");
    let sess = session(&l);
    assert_eq!(sess.code(), 96, "{}", sess.stderr_str());
    assert!(
        one_fatal_line(&sess.stderr_str(), "ucspitlsd"),
        "{}",
        sess.stderr_str()
    );
    assert!(!marker.exists(), "the app ran");

    // A program that is not there: 127.
    let l = ucspitlsd(&[], &[Path::new("/no/such/prog")], &[]);
    let mut s = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let _ = drain(&mut s);
    let sess = session(&l);
    assert_eq!(sess.code(), 127, "{}", sess.stderr_str());
    assert!(
        one_fatal_line(&sess.stderr_str(), "ucspitlsd"),
        "{}",
        sess.stderr_str()
    );

    // No network on fd 0/1: 111; no program: 100.
    for (args, code) in [(&["--", "/bin/true"][..], 111), (&[][..], 100)] {
        let mut c = Command::new(bins::bin("ucspitlsd"));
        base(&mut c).args(args);
        let o = proc::run(&mut c, None, WAIT);
        assert_eq!(o.code(), code, "{args:?}: {}", o.stderr_str());
        assert!(
            one_fatal_line(&o.stderr_str(), "ucspitlsd"),
            "{}",
            o.stderr_str()
        );
    }
}

#[test]
fn engine_drops_privileges_after_the_command_and_the_app_keeps_its_own() {
    if !bins::is_root() {
        stls_tests::skip("needs root (TLS_UID)");
        return;
    }
    let out = scratch("ucspi-uid");
    let o = out.to_string_lossy().into_owned();
    let mut argv: Vec<OsString> = vec!["--".into(), app("ucspi-smtpd").into_os_string()];
    argv.extend([OsString::from(&o), "Y".into()]);
    let spawn = Spawn {
        program: bins::bin("ucspitlsd"),
        args: argv,
        env: vec![
            ("CERTFILE".into(), pki().ec.cert.clone().into()),
            ("KEYFILE".into(), pki().ec.key.clone().into()),
            ("TLS_UID".into(), "65534".into()),
            ("TLS_GID".into(), "65534".into()),
        ],
        groups: None,
        timeout: Duration::from_secs(60),
    };
    let l = TinyListener::start(spawn);
    let body = mail_body(10, 20);
    let r = smtplib(l.port(), &body_file("ucspi-uid", &body), true);
    assert_eq!(r.code(), 0, "smtplib: {}", r.stderr_str());
    assert_clean(&session(&l), "ucspitlsd with TLS_UID");
    assert_mail(&out, &body, "tls");
    assert_eq!(read(&out.join("ids")), b"0 0\n", "the app's ids");
    assert_eq!(
        read(&out.join("engine-uid")),
        b"65534\n",
        "the engine's uid"
    );
}

// --------------------------------------------------------------------- ucspitlsc

/// The client app's argv: the mail file, its output directory, the command.
fn client_app(mail: &Path, out: &Path) -> Vec<OsString> {
    vec![
        app("ucspi-smtp").into_os_string(),
        mail.as_os_str().to_os_string(),
        out.as_os_str().to_os_string(),
    ]
}

#[test]
fn ucspitlsc_delivers_to_aiosmtpd_which_requires_starttls() {
    if !require("tcpclient") {
        return;
    }
    let probe = proc::run(
        Command::new(system_python()).args(["-c", "import aiosmtpd"]),
        None,
        WAIT,
    );
    if probe.code() != 0 && !stls_tests::skip("python3-aiosmtpd not installed") {
        return;
    }
    let maildir = scratch("ucspi-aiosmtpd").join("maildir");
    let ec = &pki().ec;
    let (_server, port) = listener::serve_on_free_port("aiosmtpd", "127.0.0.1", |port| {
        let mut c = Command::new(system_python());
        base(&mut c)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tlscert")
            .arg(&ec.cert)
            .arg("--tlskey")
            .arg(&ec.key)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir);
        c
    });
    // aiosmtpd refuses a mail in clear text: it does require STARTTLS.
    let body = mail_body(7, 300);
    let file = body_file("ucspi-aiosmtpd", &body);
    let plain = smtplib(port, &file, false);
    assert_ne!(plain.code(), 0, "aiosmtpd took a mail in clear text");

    let out = scratch("ucspi-aiosmtpd-out");
    let argv = client_app(&file, &out);
    let o = ucspitlsc(port, &["-k", "localhost"], &argv.iter().collect::<Vec<_>>());
    assert_eq!(o.code(), 0, "ucspitlsc: {}", o.stderr_str());
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    let d = assert_described(&out);
    assert_eq!(
        d.get("SSL_TLS_SNI_SERVERNAME").map(String::as_str),
        Some("localhost")
    );
    // The Maildir holds the message with LF line ends and the handler's headers first.
    let new = maildir.join("new");
    assert!(proc::wait_for(WAIT, || std::fs::read_dir(&new)
        .map(|d| d.count() == 1)
        .unwrap_or(false)));
    let entry = std::fs::read_dir(&new)
        .expect("maildir")
        .next()
        .expect("one message")
        .expect("entry");
    let stored = read(&entry.path());
    let sent_body = &body[b"Subject: delayed TLS\r\n\r\n".len()..];
    let want: Vec<u8> = String::from_utf8_lossy(sent_body)
        .replace("\r\n", "\n")
        .into_bytes();
    let at = stored
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("headers end");
    assert_eq!(
        payload::sha256_hex(&stored[at + 2..]),
        payload::sha256_hex(&want),
        "the stored body"
    );
}

#[test]
fn ucspitlsc_against_ucspitlsd() {
    if !require("tcpclient") {
        return;
    }
    let (l, sout) = smtpd(&[], "Y", "ucspi-pair");
    let body = mail_body(8, 1000);
    let file = body_file("ucspi-pair", &body);
    let cout = scratch("ucspi-pair-client");
    let argv = client_app(&file, &cout);
    let o = ucspitlsc(
        l.port(),
        &["-k", "localhost"],
        &argv.iter().collect::<Vec<_>>(),
    );
    assert_eq!(o.code(), 0, "ucspitlsc: {}", o.stderr_str());
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    assert_clean(&session(&l), "ucspitlsd");
    assert_mail(&sout, &body, "tls");
    let (c, s) = (assert_described(&cout), assert_described(&sout));
    assert_eq!(c.get("SSL_PROTOCOL"), s.get("SSL_PROTOCOL"));
    assert_eq!(c.get("SSL_CIPHER"), s.get("SSL_CIPHER"));
}

#[test]
fn ucspitlsc_wrong_name_fails_closed_and_sends_nothing_after() {
    if !require("tcpclient") {
        return;
    }
    let (l, sout) = smtpd(&[], "Y", "ucspi-wrongname");
    let file = body_file("ucspi-wrongname", &mail_body(9, 10));
    let cout = scratch("ucspi-wrongname-client");
    let argv = client_app(&file, &cout);
    let o = ucspitlsc(
        l.port(),
        &["-k", "wrong.test"],
        &argv.iter().collect::<Vec<_>>(),
    );
    assert_eq!(o.code(), 97, "ucspitlsc: {}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "ucspitlsc"),
        "{}",
        o.stderr_str()
    );
    assert!(o.stderr_str().contains("wrong.test"), "{}", o.stderr_str());
    // The app's writes after the failure, in clear text on fd 7 and on SSLWRITEFD, failed.
    assert_eq!(read(&cout.join("leak")), b"refused refused\n");
    assert_eq!(read(&cout.join("desc")), b"");
    let s = session(&l);
    assert_eq!(s.code(), 97, "{}", s.stderr_str());
    // The server saw nothing after STARTTLS.
    assert_eq!(read(&sout.join("log")), b"EHLO\nSTARTTLS\n");
    assert!(!sout.join("mail.1").exists());
}

#[test]
fn ucspitlsc_declined_is_the_apps_exit_code() {
    if !require("tcpclient") {
        return;
    }
    let (l, _out) = smtpd(&[], "decline", "ucspi-client-decline");
    let sh = OsString::from("/bin/sh");
    let (c, script) = (OsString::from("-c"), OsString::from("exit 6"));
    let o = ucspitlsc(l.port(), &["-k", "localhost"], &[&sh, &c, &script]);
    assert_eq!(o.code(), 6, "ucspitlsc: {}", o.stderr_str());
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    // The server's app reads EOF in clear text once the client's side let go: it exits 5.
    assert_eq!(session(&l).code(), 5);
}

#[test]
fn ucspitlsc_handshake_timeout_counts_from_the_command() {
    if !require("tcpclient") {
        return;
    }
    // A server slower than -K before STARTTLS, then silent after its 220.
    let srv = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = srv.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = srv.accept().expect("accept");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        std::thread::sleep(Duration::from_millis(1500));
        let line = |s: &mut TcpStream| {
            let mut l = Vec::new();
            let mut b = [0u8; 1];
            while !l.ends_with(b"\n") && s.read(&mut b).unwrap_or(0) == 1 {
                l.push(b[0]);
            }
            l
        };
        s.write_all(b"220 slow ESMTP\r\n").expect("banner");
        assert!(line(&mut s).starts_with(b"EHLO"));
        s.write_all(b"250-slow\r\n250 STARTTLS\r\n").expect("EHLO");
        assert!(line(&mut s).starts_with(b"STARTTLS"));
        s.write_all(b"220 go ahead\r\n").expect("STARTTLS");
        let started = Instant::now();
        let _ = drain(&mut s);
        started.elapsed()
    });
    let file = body_file("ucspi-client-timeout", &mail_body(11, 5));
    let cout = scratch("ucspi-client-timeout-out");
    let argv = client_app(&file, &cout);
    let o = ucspitlsc(
        port,
        &["-K", "1000", "-k", "localhost"],
        &argv.iter().collect::<Vec<_>>(),
    );
    assert_eq!(o.code(), 98, "ucspitlsc: {}", o.stderr_str());
    assert!(
        o.stderr_str().contains("handshake timed out"),
        "{}",
        o.stderr_str()
    );
    let waited = server.join().expect("server");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(read(&cout.join("leak")), b"refused refused\n");
}

// ----------------------------------------------------- integrity, both programs

fn pipe_server(label: &str, send: &Path) -> (TinyListener, PathBuf) {
    let out = scratch(label);
    let l = ucspitlsd(
        &[],
        &[&app("ucspi-pipe")],
        &["server", &send.to_string_lossy(), &out.to_string_lossy()],
    );
    (l, out)
}

#[test]
fn random_payloads_both_ways_with_half_close() {
    for (i, (up, down)) in [(0, 0), (1, 70_000), (3 * MIB, 1), (2 * MIB, 5 * MIB)]
        .into_iter()
        .enumerate()
    {
        let dir = scratch("ucspi-payloads");
        let (up_file, up_hash) = payload::file(&dir, "up", 100 + i as u64, up);
        let (down_file, down_hash) = payload::file(&dir, "down", 200 + i as u64, down);
        let (l, out) = pipe_server("ucspi-payloads-server", &down_file);
        let mut s = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
        s.write_all(b"STARTTLS\n").expect("STARTTLS");
        let mut ok = [0u8; 3];
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.read_exact(&mut ok).expect("OK");
        assert_eq!(&ok, b"OK\n");
        let mut t = client::handshake(s, &ClientOpts::default()).expect("handshake");
        let data = read(&up_file);
        let (h, end) = t.duplex(&data, true, WAIT);
        assert_eq!(end, End::CloseNotify, "{up}/{down}");
        assert_eq!(h.hex(), down_hash, "{up}/{down}: what the app sent");
        assert_clean(&session(&l), "ucspitlsd");
        assert_eq!(
            read(&out.join("got")),
            up_hash.as_bytes(),
            "{up}/{down}: what the app received"
        );
    }
}

#[test]
fn ucspitlsc_to_ucspitlsd_payloads_both_ways() {
    if !require("tcpclient") {
        return;
    }
    let dir = scratch("ucspi-chain");
    let (up_file, up_hash) = payload::file(&dir, "up", 31, 3 * MIB + 7);
    let (down_file, down_hash) = payload::file(&dir, "down", 32, 2 * MIB + 3);
    let (l, sout) = pipe_server("ucspi-chain-server", &down_file);
    let cout = scratch("ucspi-chain-client");
    let argv: Vec<OsString> = vec![
        app("ucspi-pipe").into_os_string(),
        "client".into(),
        up_file.into_os_string(),
        cout.clone().into_os_string(),
    ];
    let o = ucspitlsc(
        l.port(),
        &["-k", "localhost"],
        &argv.iter().collect::<Vec<_>>(),
    );
    assert_eq!(o.code(), 0, "ucspitlsc: {}", o.stderr_str());
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    assert_clean(&session(&l), "ucspitlsd");
    assert_eq!(read(&sout.join("got")), up_hash.as_bytes(), "upload");
    assert_eq!(read(&cout.join("got")), down_hash.as_bytes(), "download");
}

// ------------------------------------------------------------------ faults

/// An app that asks for TLS at once (`y`) and then runs `then` (Python, with `r` and `w`
/// its SSLREADFD and SSLWRITEFD).
fn at_once(opts: &[&str], then: &str) -> TinyListener {
    let script = format!(
        "import os, signal, sys\n\
         ctl = int(os.environ['SSLCTLFD'])\n\
         os.write(ctl, b'y')\n\
         os.read(ctl, 1)\n\
         r, w = int(os.environ['SSLREADFD']), int(os.environ['SSLWRITEFD'])\n\
         {then}\n"
    );
    ucspitlsd(opts, &[Path::new("python3")], &["-c", &script])
}

#[test]
fn peer_reset_during_a_download_is_98() {
    let l = at_once(
        &[],
        "data = b'x' * (8 << 20)\ntry:\n    while data:\n        data = data[os.write(w, data):]\n\
         except BrokenPipeError:\n    sys.exit(0)",
    );
    let tcp = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
    let mut t = client::handshake(tcp, &ClientOpts::default()).expect("handshake");
    let mut buf = vec![0u8; 65536];
    t.read_some(&mut buf).expect("some data");
    let tcp = t.stream.get_ref().try_clone().expect("socket");
    drop(t);
    faults::reset(tcp);
    let s = session(&l);
    assert_eq!(s.code(), 98, "{}", s.stderr_str());
    assert!(
        one_fatal_line(&s.stderr_str(), "ucspitlsd"),
        "{}",
        s.stderr_str()
    );
}

#[test]
fn app_killed_mid_session_is_128_plus_signal() {
    let l = at_once(
        &[],
        "os.write(w, b'partial')\nos.kill(os.getpid(), signal.SIGKILL)",
    );
    let tcp = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
    let mut t = client::handshake(tcp, &ClientOpts::default()).expect("handshake");
    let (got, end) = t.read_to_end();
    assert_eq!(got, b"partial");
    // The app's pipe closed: the engine ends the direction with close_notify.
    assert_eq!(end, End::CloseNotify);
    let s = session(&l);
    assert_eq!(s.code(), 137, "{}", s.stderr_str());
}

#[test]
fn truncation_is_eof_by_default_and_98_under_enforcement() {
    for (opts, code) in [(&[][..], 0), (&["-J"][..], 98)] {
        let l = at_once(
            opts,
            "got = b''\nwhile True:\n    c = os.read(r, 65536)\n    if not c:\n        break\n    got += c\n\
             sys.exit(0 if got == b'all of it' else 9)",
        );
        let tcp = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
        let mut t = client::handshake(tcp, &ClientOpts::default()).expect("handshake");
        t.write_all(b"all of it").expect("write");
        // A TCP FIN without close_notify.
        t.shutdown_tcp_write();
        let _ = t.read_to_end();
        let s = session(&l);
        assert_eq!(s.code(), code, "{opts:?}: {}", s.stderr_str());
    }
}

// ------------------------------------------------------------ tlsserver -n

/// `tlsserver -n -v 2 -c 100 opts... 127.0.0.1 PORT ucspi-smtpd OUT command` with the
/// ECDSA pair; the app's files go to the returned directory.
fn tlsserver_smtpd(opts: &[&str], command: &str, label: &str) -> (Server, PathBuf) {
    let out = scratch(label);
    let ec = &pki().ec;
    let mut all = vec!["-n", "-v", "2", "-c", "100"];
    all.extend_from_slice(opts);
    let argv: Vec<OsString> = vec![
        app("ucspi-smtpd").into(),
        out.clone().into(),
        command.into(),
    ];
    let srv = Server::start_env(
        &all,
        "127.0.0.1",
        &argv,
        &[
            ("CERTFILE", ec.cert.as_path()),
            ("KEYFILE", ec.key.as_path()),
        ],
    );
    (srv, out)
}

/// The server logged the end of `n` connections, the last with exit `code`.
fn ended(srv: &Server, n: usize, code: i32) -> String {
    assert!(srv.wait_log(": info: end pid ", n, WAIT), "{}", srv.log());
    let log = srv.log();
    let last = log
        .lines()
        .filter(|l| l.contains(": info: end pid "))
        .nth(n - 1)
        .unwrap_or_default()
        .to_string();
    assert!(last.contains(&format!(" exit {code} ")), "{log}");
    log
}

/// `swaks --tls` sending `file` as the mail's data, verifying the server as localhost.
fn swaks_mail(port: u16, file: &Path) -> proc::Outcome {
    let mut c = Command::new("swaks");
    base(&mut c)
        .args(["--server", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args([
            "--tls",
            "--tls-verify",
            "--tls-sni",
            "localhost",
            "--tls-ca-path",
        ])
        .arg(&pki().ca)
        .args(["--from", "a@client.test", "--to", "b@server.test", "--data"])
        .arg(format!("@{}", file.display()));
    proc::run(&mut c, None, WAIT)
}

/// curl sending `file` as a mail over SMTP with `--ssl-reqd`, verified against the test CA.
fn curl_mail(port: u16, file: &Path) -> proc::Outcome {
    let mut c = Command::new("curl");
    base(&mut c)
        .args(["-sS", "--max-time", "30", "--ssl-reqd", "--cacert"])
        .arg(&pki().ca)
        .arg(format!("smtp://127.0.0.1:{port}"))
        .args([
            "--mail-from",
            "a@client.test",
            "--mail-rcpt",
            "b@server.test",
        ])
        .arg("-T")
        .arg(file);
    proc::run(&mut c, None, WAIT)
}

/// tlsserver -n (the README's and tlsserver(1)'s command line, on loopback): curl sends a
/// mail with `--ssl-reqd` twice, each connection in its own process with the context
/// built once: the app gets it over TLS by hash, and the description after `Y`.
#[test]
fn tlsserver_delayed_curl_sends_mails() {
    if !require("curl") {
        return;
    }
    let (srv, out) = tlsserver_smtpd(&[], "Y", "tlsserver-n-curl");
    for i in 1..=2 {
        let body = mail_body(40 + i, 300);
        let file = body_file("tlsserver-n-curl-mail", &body);
        let o = curl_mail(srv.port, &file);
        assert_eq!(o.code(), 0, "curl #{i}: {}", o.stderr_str());
        let log = ended(&srv, i as usize, 0);
        assert_mail(&out, &body, "tls");
        assert_described(&out);
        assert!(!log.contains("fatal") && !log.contains("warning"), "{log}");
    }
    assert_eq!(srv.stop(), 0);
}

#[test]
fn tlsserver_delayed_swaks_tls() {
    if !require("swaks") {
        return;
    }
    let (srv, out) = tlsserver_smtpd(&[], "Y", "tlsserver-n-swaks");
    let body = mail_body(43, 200);
    let file = body_file("tlsserver-n-swaks", &body);
    let o = swaks_mail(srv.port, &file);
    assert_eq!(o.code(), 0, "swaks: {}{}", o.stdout_str(), o.stderr_str());
    ended(&srv, 1, 0);
    let mut sent = body.clone();
    sent.extend_from_slice(b"\r\n");
    assert_mail(&out, &sent, "tls");
    let d = assert_described(&out);
    assert_eq!(
        d.get("SSL_TLS_SNI_SERVERNAME").map(String::as_str),
        Some("localhost")
    );
    assert_eq!(srv.stop(), 0);
}

/// A declined session stays plain: the mail arrives in clear text and the server logs
/// the app's exit code (7); the app's environment has the UCSPI-TLS descriptors and no
/// secrets.
#[test]
fn tlsserver_delayed_declined_is_the_apps_exit_code() {
    let (srv, out) = tlsserver_smtpd(&[], "decline", "tlsserver-n-decline");
    let body = mail_body(44, 100);
    let o = smtplib(srv.port, &body_file("tlsserver-n-decline", &body), false);
    assert_eq!(o.code(), 0, "smtplib: {}", o.stderr_str());
    let log = ended(&srv, 1, 7);
    assert!(!log.contains("fatal"), "{log}");
    assert_mail(&out, &body, "plain");
    let env = String::from_utf8_lossy(&read(&out.join("env"))).into_owned();
    let names: Vec<&str> = env.lines().collect();
    for k in ["SSLCTLFD", "SSLREADFD", "SSLWRITEFD", "TCPREMOTEIP"] {
        assert!(names.contains(&k), "{k} missing: {names:?}");
    }
    for k in ["CERTFILE", "KEYFILE"] {
        assert!(!names.contains(&k), "{k} kept: {names:?}");
    }
    assert_eq!(srv.stop(), 0);
}

/// Garbage after STARTTLS: that connection's one warning line (only what ends the server is
/// fatal) and exit 97, no hang, no
/// description for the app; the server goes on and the next client's STARTTLS works.
#[test]
fn tlsserver_delayed_garbage_after_starttls_is_97_and_the_server_goes_on() {
    let (srv, out) = tlsserver_smtpd(&[], "Y", "tlsserver-n-garbage");
    let t0 = Instant::now();
    let mut s = starttls(srv.port);
    s.write_all(b"EHLO again\r\nMAIL FROM:<x@y>\r\n")
        .expect("garbage");
    let _ = drain(&mut s);
    let log = ended(&srv, 1, 97);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("tlsserver: warning:"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(!log.contains("fatal"), "{log}");
    assert_eq!(read(&out.join("desc")), b"");
    assert_eq!(read(&out.join("log")), b"EHLO\nSTARTTLS\n");

    let body = mail_body(45, 200);
    let o = smtplib(srv.port, &body_file("tlsserver-n-after", &body), true);
    assert_eq!(o.code(), 0, "smtplib: {}", o.stderr_str());
    ended(&srv, 2, 0);
    assert_mail(&out, &body, "tls");
    assert_described(&out);
    assert_eq!(srv.stop(), 0);
}

/// Under tlsserver -n the handshake timeout counts from the app's command: STARTTLS and
/// then silence is 98 about -K after it, for that connection only.
#[test]
fn tlsserver_delayed_handshake_timeout_counts_from_the_command() {
    let (srv, _out) = tlsserver_smtpd(&["-K", "1000"], "Y", "tlsserver-n-timeout");
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    assert!(reply(&mut s).starts_with("220 "));
    // Longer than -K in clear text: nothing times out before the command.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(b"EHLO client.test\r\n").expect("EHLO");
    assert!(reply(&mut s).contains("STARTTLS"));
    s.write_all(b"STARTTLS\r\n").expect("STARTTLS");
    assert!(reply(&mut s).starts_with("220 "));
    let t0 = Instant::now();
    let _ = drain(&mut s);
    let waited = t0.elapsed();
    let log = ended(&srv, 1, 98);
    assert!(log.contains("handshake timed out"), "{log}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(srv.stop(), 0);
}

/// tlsserver -n with -u/-g and TLS_UID/TLS_GID: the app runs with its ids from the start
/// (33), the engine with TLS_UID (65534) once the app asked for TLS.
#[test]
fn tlsserver_delayed_app_ids_and_engine_ids() {
    if !bins::is_root() {
        stls_tests::skip("needs root (-u, TLS_UID)");
        return;
    }
    let out = scratch("tlsserver-n-ids");
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let ec = &pki().ec;
    let argv: Vec<OsString> = vec![app("ucspi-smtpd").into(), out.clone().into(), "Y".into()];
    let srv = Server::start_env(
        &["-n", "-v", "2", "-u", "33", "-g", "33"],
        "127.0.0.1",
        &argv,
        &[
            ("CERTFILE", ec.cert.as_path()),
            ("KEYFILE", ec.key.as_path()),
            ("TLS_UID", Path::new("65534")),
            ("TLS_GID", Path::new("65534")),
        ],
    );
    let body = mail_body(46, 20);
    let r = smtplib(srv.port, &body_file("tlsserver-n-ids", &body), true);
    assert_eq!(r.code(), 0, "smtplib: {}", r.stderr_str());
    ended(&srv, 1, 0);
    assert_mail(&out, &body, "tls");
    assert_eq!(read(&out.join("ids")), b"33 33\n", "the app's ids");
    assert_eq!(
        read(&out.join("engine-uid")),
        b"65534\n",
        "the engine's uid"
    );
    assert_eq!(srv.stop(), 0);
}
