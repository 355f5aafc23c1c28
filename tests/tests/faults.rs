//! Faults: peer resets, plain-text and garbage peers, slowloris, truncation,
//! crashing children, children that ignore their input, grandchildren holding the pipes,
//! closed or missing network descriptors. Each case is bounded in time and checks the
//! documented exit code, the one line on stderr and that no deliverable byte was lost.
//! tests/README.md maps every case to its test.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use stls_tests::client::{self, ClientOpts, End, OneShotServer, ServerOpts, TlsClient};
use stls_tests::faults::{self, lines, plain_server, reset, Plain};
use stls_tests::listener::{Session, Spawn, TinyListener};
use stls_tests::payload::{self, MIB};
use stls_tests::peers::{self, one_fatal_line, Tlsc};
use stls_tests::proc::{self, Outcome, Running};
use stls_tests::{pki, scratch};

const WAIT: Duration = Duration::from_secs(60);
/// Every per-connection tlsd is killed after this long (the listener reports `killed`).
const SESSION_LIMIT: Duration = Duration::from_secs(40);

// ------------------------------------------------------------------ helpers

/// tlsd `opts -- /bin/sh -c script` under the suite's listener, ECDSA pair, sessions
/// bounded by SESSION_LIMIT.
fn serve(opts: &[&str], script: &str) -> TinyListener {
    let mut args: Vec<OsString> = opts.iter().map(OsString::from).collect();
    args.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    let p = pki();
    let mut spawn = Spawn::tlsd(
        &args,
        &[
            ("CERTFILE", p.ec.cert.as_path()),
            ("KEYFILE", p.ec.key.as_path()),
        ],
    );
    spawn.timeout = SESSION_LIMIT;
    TinyListener::start(spawn)
}

/// tlsc argv: `opts... -- /bin/sh -c script`.
fn prog(opts: &[&str], script: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = opts.iter().map(OsString::from).collect();
    v.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    v
}

/// tlsd ended by itself with `code` and exactly one `tlsd: fatal:` line.
fn assert_fatal(s: &Session, code: i32, what: &str) {
    assert!(
        !s.killed,
        "{what}: tlsd still running after {SESSION_LIMIT:?} (hang); stderr: {}",
        s.stderr_str()
    );
    assert_eq!(s.code(), code, "{what}: stderr: {}", s.stderr_str());
    assert!(
        one_fatal_line(&s.stderr_str(), "tlsd"),
        "{what}: exactly one `tlsd: fatal:` line expected: {:?}",
        s.stderr_str()
    );
}

/// tlsc's outcome: `code` and exactly one `tlsc: fatal:` line.
fn assert_tlsc_fatal(o: &Outcome, code: i32, what: &str) {
    assert_eq!(o.code(), code, "{what}: stderr: {}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc"),
        "{what}: exactly one `tlsc: fatal:` line expected: {:?}",
        o.stderr_str()
    );
}

/// The exit of a killed child: the child's status and one warning line naming the signal.
fn assert_killed_child(code: i32, stderr: &str, sig: i32, prog: &str, what: &str) {
    assert_eq!(code, 128 + sig, "{what}: stderr: {stderr}");
    let l = lines(stderr);
    assert!(
        l.len() == 1 && l[0].starts_with(&format!("{prog}: ")) && l[0].contains(&sig.to_string()),
        "{what}: one line naming signal {sig} expected: {stderr:?}"
    );
}

/// Connect a verifying TLS client to `l`.
fn connect(l: &TinyListener) -> TlsClient {
    client::connect(l.addr, &ClientOpts::default()).expect("TLS client connects")
}

/// Write until the peer stops taking data (a write blocks for `stall`); returns the count.
fn write_until_blocked(c: &mut TlsClient, stall: Duration) -> usize {
    c.stream
        .get_ref()
        .set_write_timeout(Some(stall))
        .expect("write timeout");
    let chunk = payload::bytes(5, 64 * 1024);
    let mut sent = 0;
    for _ in 0..4096 {
        match c.stream.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => return sent,
        }
    }
    panic!("the peer took 256 MiB without ever blocking");
}

/// Send a TCP RST on the client's connection.
fn reset_client(c: TlsClient) {
    faults::linger_zero(c.stream.get_ref());
    drop(c);
}

/// A one-shot TLS server (ECDSA pair) running `handler`.
fn tls_server(
    handler: impl FnOnce(&mut openssl::ssl::SslStream<TcpStream>) -> Vec<u8> + Send + 'static,
) -> OneShotServer {
    OneShotServer::start(ServerOpts::new(&pki().ec), Box::new(handler))
}

/// tlsc -k localhost with `script` against 127.0.0.1:port, killed after SESSION_LIMIT.
fn run_tlsc(opts: &[&str], script: &str, port: u16) -> Outcome {
    let mut args = vec!["-k", "localhost"];
    args.extend(opts);
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect to the server");
    let r = Tlsc::new(&prog(&args, script)).spawn(sock, Stdio::null());
    r.finish_or_kill(SESSION_LIMIT).unwrap_or_else(|| {
        panic!("tlsc {opts:?} {script:?}: still running after {SESSION_LIMIT:?} (hang)")
    })
}

// ------------------------------------------------------------------ peer resets

/// The client resets (SO_LINGER 0 close) while the app streams to it: 98, one line.
#[test]
fn tlsd_peer_reset_during_download_is_98() {
    let l = serve(&[], "exec cat /dev/zero");
    for i in 0..3 {
        let mut c = connect(&l);
        let got = c.read_exact(256 * 1024).expect("the first 256 KiB");
        assert!(got.iter().all(|&b| b == 0));
        reset_client(c);
        let s = l.next_session(WAIT);
        assert_fatal(&s, 98, &format!("reset during download, run {i}"));
    }
}

/// The client resets in the middle of an upload the app is reading (the app's output stays
/// open): 98, one line.
#[test]
fn tlsd_peer_reset_during_upload_is_98() {
    let l = serve(&[], "cat >/dev/null; exit 0");
    for i in 0..3 {
        let mut c = connect(&l);
        c.write_all(&payload::bytes(i, MIB)).expect("upload 1 MiB");
        reset_client(c);
        let s = l.next_session(WAIT);
        assert_fatal(&s, 98, &format!("reset during upload, run {i}"));
    }
}

/// The app closed its output at once (tlsd sends close_notify and shuts down writing),
/// then the client uploads and resets. When the RST is reported on the close_notify write
/// instead of a read, the error is consumed from the socket and the next read returns 0:
/// that 0 must not be taken for a plain FIN (an exit 0 over a truncated stream).
#[test]
fn tlsd_peer_reset_racing_our_close_notify_is_98() {
    let l = serve(&[], "exec cat >/dev/null");
    for i in 0..20 {
        let mut c = connect(&l);
        c.write_all(&payload::bytes(i, MIB)).expect("upload 1 MiB");
        reset_client(c);
        let s = l.next_session(WAIT);
        assert_fatal(&s, 98, &format!("reset after our close_notify, run {i}"));
    }
}

/// A reset while the app's pipe is full (the engine once waited for the app here; fixed in
/// f06bbfd): the app never reads, so its clear-text pipe is full and the engine stops
/// reading the network; the client then resets. tlsd must notice (POLLERR/POLLHUP on the
/// socket, or an error on the next write) and end with 98 in bounded time, killing the
/// app after its grace period — not wait for the app.
#[test]
fn tlsd_peer_reset_while_app_pipe_full_is_98() {
    let l = serve(&[], "exec sleep 60");
    let mut c = connect(&l);
    let sent = write_until_blocked(&mut c, Duration::from_secs(2));
    assert!(sent > 0);
    let t0 = Instant::now();
    reset_client(c);
    let s = l.next_session(WAIT);
    assert_fatal(&s, 98, "reset while the app's pipe is full");
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "noticed only after {:?}",
        t0.elapsed()
    );
}

/// tlsc: the server resets while the app reads what it sends: 98, one line.
#[test]
fn tlsc_peer_reset_mid_transfer_is_98() {
    let srv = tls_server(|s| {
        let data = payload::bytes(11, 4 * MIB);
        let _ = s.write_all(&data);
        thread::sleep(Duration::from_millis(200));
        faults::linger_zero(s.get_ref());
        Vec::new()
    });
    let o = run_tlsc(&[], "exec cat <&6 >/dev/null", srv.port());
    assert_tlsc_fatal(&o, 98, "server reset");
    let _ = srv.report(WAIT);
}

/// The same reset for tlsc (fixed in f06bbfd): the app never reads fd 6, the server fills
/// everything and resets.
#[test]
fn tlsc_peer_reset_while_app_pipe_full_is_98() {
    let srv = tls_server(|s| {
        s.get_ref()
            .set_write_timeout(Some(Duration::from_secs(2)))
            .expect("write timeout");
        let chunk = payload::bytes(12, 64 * 1024);
        for _ in 0..4096 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        faults::linger_zero(s.get_ref());
        Vec::new()
    });
    let t0 = Instant::now();
    let o = run_tlsc(&[], "exec sleep 60", srv.port());
    assert_tlsc_fatal(&o, 98, "server reset while the app's pipe is full");
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let _ = srv.report(WAIT);
}

// ------------------------------------------------------------------ plain text and garbage

/// A plain-text client that waits for a server banner first (SMTP, FTP, POP3 style):
/// nothing ever comes, the handshake timeout ends it with 98, and not a byte of a
/// message enters the stream.
#[test]
fn tlsd_client_waiting_for_a_banner_gets_98_and_nothing() {
    let l = serve(&["-K", "500"], "echo ran");
    let mut s0 = l.connect();
    s0.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut got = Vec::new();
    let _ = s0.read_to_end(&mut got);
    assert!(got.is_empty(), "bytes in the stream: {got:?}");
    let s = l.next_session(WAIT);
    assert_fatal(&s, 98, "banner wait");
}

/// tlsc meets a plain-text server: an SMTP banner, an HTTP error reply, random garbage, a
/// TLS alert record from nowhere. 97, one line, the app never runs, nothing on stdout.
#[test]
fn tlsc_plain_text_or_garbage_server_is_97() {
    let cases: Vec<(&str, Plain)> = vec![
        (
            "SMTP banner",
            Plain::Banner(b"220 mail.example.test ESMTP ready\r\n".to_vec()),
        ),
        (
            "HTTP reply",
            Plain::Reply(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            ),
        ),
        ("garbage", Plain::Reply(payload::bytes(13, 4096))),
        (
            "a handshake record with a bad body",
            Plain::Reply(vec![0x16, 0x03, 0x03, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff]),
        ),
    ];
    for (what, plain) in cases {
        let dir = scratch("plain-server");
        let marker = peers::marker(&dir);
        let (addr, h) = plain_server(plain, Duration::from_secs(20));
        let o = run_tlsc(&[], &format!("touch '{}'", marker.display()), addr.port());
        assert_tlsc_fatal(&o, 97, what);
        assert!(!marker.exists(), "{what}: the app ran");
        assert!(o.stdout.is_empty(), "{what}: {:?}", o.stdout_str());
        h.join().expect("plain server");
    }
}

// ------------------------------------------------------------------ slowloris

/// A client that keeps sending a ClientHello one byte at a time (never idle, never done):
/// the handshake timeout is a deadline for the whole handshake, not an idle timer.
#[test]
fn tlsd_slowloris_trickling_client_hello_is_98_at_the_deadline() {
    let l = serve(&["-K", "1000"], "echo ran");
    let mut s0 = l.connect();
    let t0 = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let trickle = thread::spawn(move || {
        // record header: handshake, TLS 1.0 record version, 512 bytes announced
        let mut bytes = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        bytes.extend(std::iter::repeat_n(0x41, 500));
        for b in bytes {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) || s0.write_all(&[b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    let s = l.next_session(WAIT);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    trickle.join().expect("trickle thread");
    assert_fatal(&s, 98, "trickling slowloris");
    assert!(
        s.elapsed >= Duration::from_millis(900) && s.elapsed < Duration::from_secs(8),
        "ended after {:?} with -K 1000",
        s.elapsed
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
}

/// tlsc against a server that trickles its first flight: 98 at the deadline.
#[test]
fn tlsc_slowloris_server_is_98_at_the_deadline() {
    let mut bytes = vec![
        0x16, 0x03, 0x03, 0x02, 0x00, 0x02, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    bytes.extend(std::iter::repeat_n(0x41, 500));
    let (addr, h) = plain_server(
        Plain::Trickle(bytes, Duration::from_millis(50)),
        Duration::from_secs(15),
    );
    let dir = scratch("slow-server");
    let marker = peers::marker(&dir);
    let t0 = Instant::now();
    let o = run_tlsc(
        &["-K", "1000"],
        &format!("touch '{}'", marker.display()),
        addr.port(),
    );
    let took = t0.elapsed();
    assert_tlsc_fatal(&o, 98, "trickling server");
    assert!(!marker.exists(), "the app ran");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "ended after {took:?} with -K 1000"
    );
    h.join().expect("plain server");
}

// ------------------------------------------------------------------ truncation

/// Client: a TCP FIN without close_notify after 3 MiB; the app hashes what it got.
fn tlsd_truncated_upload(opts: &[&str]) -> (Session, String, String) {
    let data = payload::bytes(21, 3 * MIB + 5);
    let dir = scratch("trunc");
    let out = dir.join("hash");
    let l = serve(opts, &format!("exec sha256sum >'{}'", out.display()));
    let mut c = connect(&l);
    c.write_all(&data).expect("upload");
    c.shutdown_tcp_write(); // FIN, no close_notify
    let _ = c.read_to_end();
    let s = l.next_session(WAIT);
    let got = std::fs::read(&out).unwrap_or_default();
    (s, payload::sha256sum_word(&got), payload::sha256_hex(&data))
}

/// A TCP FIN without close_notify is a normal EOF by default and with -j: exit 0, no
/// message, every byte delivered (a TCP EOF without close_notify is a normal EOF by default; here
/// with the app's own hash).
#[test]
fn tlsd_truncation_without_enforcement_delivers_everything() {
    for opts in [&[][..], &["-j"][..]] {
        for i in 0..3 {
            let (s, got, want) = tlsd_truncated_upload(opts);
            assert!(!s.killed);
            assert_eq!(s.code(), 0, "{opts:?} run {i}: {}", s.stderr_str());
            assert!(s.stderr.is_empty(), "{opts:?}: {}", s.stderr_str());
            assert_eq!(got, want, "{opts:?} run {i}: bytes lost");
        }
    }
}

/// With -J the truncation is fatal (98, one line; tlsd.rs checks that part), but the bytes
/// that arrived authenticated before the FIN can still be delivered and must be: the app
/// gets all of them, then EOF.
#[test]
fn tlsd_truncation_with_enforcement_still_delivers_everything_before_it() {
    for i in 0..5 {
        let (s, got, want) = tlsd_truncated_upload(&["-J"]);
        assert_fatal(&s, 98, &format!("-J run {i}"));
        assert_eq!(
            got, want,
            "-J run {i}: bytes received before the FIN were lost"
        );
    }
}

/// Server: 3 MiB, then a FIN without close_notify; tlsc's app hashes what it got.
fn tlsc_truncated_download(opts: &[&str]) -> (Outcome, String, String) {
    let data = payload::bytes(22, 3 * MIB + 7);
    let want = payload::sha256_hex(&data);
    let srv = tls_server(move |s| {
        let _ = s.write_all(&data);
        let _ = s.get_ref().shutdown(Shutdown::Write);
        let _ = client::server_read_to_end(s);
        Vec::new()
    });
    let dir = scratch("trunc-c");
    let out = dir.join("hash");
    let o = run_tlsc(
        opts,
        &format!("sha256sum <&6 >'{}'", out.display()),
        srv.port(),
    );
    let _ = srv.report(WAIT);
    let got = std::fs::read(&out).unwrap_or_default();
    (o, payload::sha256sum_word(&got), want)
}

#[test]
fn tlsc_truncation_without_enforcement_delivers_everything() {
    for opts in [&[][..], &["-j"][..]] {
        for i in 0..3 {
            let (o, got, want) = tlsc_truncated_download(opts);
            assert_eq!(o.code(), 0, "{opts:?} run {i}: {}", o.stderr_str());
            assert!(o.stderr.is_empty(), "{opts:?}: {}", o.stderr_str());
            assert_eq!(got, want, "{opts:?} run {i}: bytes lost");
        }
    }
}

#[test]
fn tlsc_truncation_with_enforcement_still_delivers_everything_before_it() {
    for i in 0..5 {
        let (o, got, want) = tlsc_truncated_download(&["-J"]);
        assert_tlsc_fatal(&o, 98, &format!("-J run {i}"));
        assert_eq!(
            got, want,
            "-J run {i}: bytes received before the FIN were lost"
        );
    }
}

// ------------------------------------------------------------------ the child crashes

/// The app dies by SIGSEGV or SIGKILL while the client is still uploading: tlsd exits
/// 128+signal with one warning line, and the client is not left hanging.
#[test]
fn tlsd_child_crash_mid_transfer_is_128_plus_signal() {
    let data = payload::bytes(31, 4 * MIB);
    for (sig, name) in [(11, "SEGV"), (9, "KILL")] {
        let l = serve(
            &[],
            &format!("ulimit -c 0; head -c 300000 >/dev/null; echo partial; kill -{name} $$"),
        );
        let mut c = connect(&l);
        let (h, end) = c.duplex(&data, true, WAIT);
        assert_ne!(end, End::Timeout, "SIG{name}: the client hung");
        assert_eq!(h.len, 8, "SIG{name}: the app's output before dying");
        let s = l.next_session(WAIT);
        assert!(!s.killed, "SIG{name}: tlsd hung");
        assert_killed_child(
            s.code(),
            &s.stderr_str(),
            sig,
            "tlsd",
            &format!("SIG{name}"),
        );
    }
}

#[test]
fn tlsc_child_crash_mid_transfer_is_128_plus_signal() {
    for (sig, name) in [(11, "SEGV"), (9, "KILL")] {
        let srv = tls_server(|s| {
            let _ = s.write_all(&payload::bytes(32, 4 * MIB));
            let _ = s.shutdown();
            let (got, _) = client::server_read_to_end(s);
            got
        });
        let o = run_tlsc(
            &[],
            &format!(
                "ulimit -c 0; head -c 300000 <&6 >/dev/null; echo partial >&7; kill -{name} $$"
            ),
            srv.port(),
        );
        assert_killed_child(
            o.code(),
            &o.stderr_str(),
            sig,
            "tlsc",
            &format!("SIG{name}"),
        );
        let rep = srv.report(WAIT);
        assert_eq!(
            rep.result.as_deref(),
            Some(&b"partial\n"[..]),
            "SIG{name}: what the server got"
        );
    }
}

// ------------------------------------------------------------------ the child ignores input

/// The app never reads its input and replies after a while; the client sends 8 MiB (far
/// more than the pipes and socket buffers hold). No deadlock: the reply arrives, the exit
/// is the app's. Also with the app closing its input at once.
#[test]
fn tlsd_child_ignoring_its_input_does_not_deadlock() {
    let data = payload::bytes(41, 8 * MIB);
    for script in [
        "sleep 1; echo reply; exit 5",
        "exec 0<&-; sleep 1; echo reply; exit 5",
    ] {
        let l = serve(&[], script);
        let mut c = connect(&l);
        let t0 = Instant::now();
        let (h, end) = c.duplex(&data, true, WAIT);
        assert_eq!(end, End::CloseNotify, "{script}: after {:?}", t0.elapsed());
        assert_eq!(h.hex(), payload::sha256_hex(b"reply\n"), "{script}");
        let s = l.next_session(WAIT);
        assert!(!s.killed, "{script}");
        assert_eq!(s.code(), 5, "{script}: {}", s.stderr_str());
        assert!(s.stderr.is_empty(), "{script}: {}", s.stderr_str());
    }
}

#[test]
fn tlsc_child_ignoring_its_input_does_not_deadlock() {
    for script in [
        "sleep 1; echo reply >&7; exit 5",
        "exec 6<&-; sleep 1; echo reply >&7; exit 5",
    ] {
        let srv = tls_server(|s| {
            s.get_ref()
                .set_write_timeout(Some(Duration::from_secs(30)))
                .expect("write timeout");
            let wrote = s.write_all(&payload::bytes(42, 8 * MIB)).is_ok();
            let _ = s.shutdown();
            let (got, end) = client::server_read_to_end(s);
            format!("{wrote} {end:?} {}", String::from_utf8_lossy(&got)).into_bytes()
        });
        let o = run_tlsc(&[], script, srv.port());
        assert_eq!(o.code(), 5, "{script}: {}", o.stderr_str());
        assert!(o.stderr.is_empty(), "{script}: {}", o.stderr_str());
        let rep = srv.report(WAIT);
        assert_eq!(
            String::from_utf8_lossy(&rep.result.unwrap_or_default()),
            "true CloseNotify reply\n",
            "{script}"
        );
    }
}

// ------------------------------------------------------------------ grandchildren

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        })
        .unwrap_or(false)
}

/// The app exits (status 3) while a grandchild keeps its pipes open and writes later: the
/// session follows the pipes (the late output arrives), the child is reaped at once (no
/// zombie while the grandchild runs), and the exit is the child's.
#[test]
fn tlsd_grandchild_keeps_the_pipes_open() {
    let l = serve(&[], "(sleep 2; echo late) & echo early; exit 3");
    let mut c = connect(&l);
    let tlsd_pid = l.next_started(WAIT);
    let first = c.read_exact(6).expect("early line");
    assert_eq!(first, b"early\n");
    // the child exits right after `early`: it must be reaped while the session goes on
    let reaped = proc::wait_for(Duration::from_millis(1500), || {
        faults::children(tlsd_pid).iter().all(|p| !zombie(*p))
            && faults::children(tlsd_pid).is_empty()
    });
    c.half_close().expect("half-close");
    let (rest, end) = c.read_to_end();
    assert_eq!(rest, b"late\n", "the grandchild's output");
    assert_eq!(end, End::CloseNotify);
    let s = l.next_session(WAIT);
    assert!(!s.killed);
    assert_eq!(s.code(), 3, "{}", s.stderr_str());
    assert!(s.stderr.is_empty(), "{}", s.stderr_str());
    assert!(
        reaped,
        "the exited child was not reaped while the grandchild held the pipes"
    );
}

#[test]
fn tlsc_grandchild_keeps_the_pipes_open() {
    let srv = tls_server(|s| {
        let (got, _) = client::server_read_to_end(s);
        let _ = s.shutdown();
        got
    });
    let o = run_tlsc(
        &[],
        "(sleep 1; echo late >&7) & echo early >&7; exit 3",
        srv.port(),
    );
    assert_eq!(o.code(), 3, "{}", o.stderr_str());
    assert!(o.stderr.is_empty(), "{}", o.stderr_str());
    let rep = srv.report(WAIT);
    assert_eq!(rep.result.as_deref(), Some(&b"early\nlate\n"[..]));
}

// ------------------------------------------------------------------ closed or missing fds

/// The peer is already gone when tlsd starts (FIN, or RST): a handshake error, 97, one line.
#[test]
fn tlsd_network_closed_on_entry_is_97() {
    let dir = scratch("closed-entry");
    let marker = peers::marker(&dir);
    let l = serve(&[], &format!("touch '{}'", marker.display()));
    for rst in [false, true] {
        let s0 = l.connect();
        if rst {
            reset(s0);
        } else {
            let _ = s0.shutdown(Shutdown::Both);
            drop(s0);
        }
        let s = l.next_session(WAIT);
        assert_fatal(&s, 97, &format!("closed on entry (rst={rst})"));
    }
    assert!(!marker.exists(), "the app ran");
}

#[test]
fn tlsc_network_closed_on_entry_is_97() {
    for rst in [false, true] {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let sock = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (srv, _) = l.accept().expect("accept");
        if rst {
            reset(srv);
        } else {
            drop(srv);
        }
        thread::sleep(Duration::from_millis(50));
        let dir = scratch("closed-entry-c");
        let marker = peers::marker(&dir);
        let mut c = Tlsc::new(&prog(
            &["-k", "localhost"],
            &format!("touch '{}'", marker.display()),
        ))
        .command();
        proc::map_fds(&mut c, &[(sock.as_raw_fd(), 6), (sock.as_raw_fd(), 7)]);
        c.stdin(Stdio::null());
        let r = Running::start(&mut c);
        drop(c);
        drop(sock);
        let o = r.finish(WAIT);
        assert_tlsc_fatal(&o, 97, &format!("closed on entry (rst={rst})"));
        assert!(!marker.exists());
    }
}

/// A connected socket pair for fd plumbing (our end, the end for the wrapper).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    (a, b)
}

/// Missing network fds (once a handshake failure, 97; fixed in f06bbfd): tlsd with fd 0
/// and/or fd 1 closed must exit 111 (a system error) before any network I/O. Rust's runtime reopens closed fds 0-2 on /dev/null
/// before main, so a plain `is_open` check passed and the handshake failed (97).
#[test]
fn tlsd_missing_fd_0_or_1_is_111() {
    let p = pki();
    for close in [&[0][..], &[1][..], &[0, 1][..]] {
        let dir = scratch("missing01");
        let marker = peers::marker(&dir);
        let (_peer, ours) = tcp_pair();
        let mut c = Command::new(stls_tests::tlsd());
        c.args(prog(&[], &format!("touch '{}'", marker.display())))
            .env_clear()
            .env("CERTFILE", &p.ec.cert)
            .env("KEYFILE", &p.ec.key);
        let fd_in: OwnedFd = ours.try_clone().expect("dup").into();
        let fd_out: OwnedFd = ours.into();
        c.stdin(Stdio::from(fd_in)).stdout(Stdio::from(fd_out));
        c.stderr(Stdio::piped());
        faults::close_in_child(&mut c, close);
        let r = Running::adopt(proc::spawn(&mut c));
        drop(c);
        let o = r.finish(WAIT);
        assert_eq!(o.code(), 111, "fd {close:?} closed: {}", o.stderr_str());
        assert!(
            one_fatal_line(&o.stderr_str(), "tlsd"),
            "fd {close:?}: {:?}",
            o.stderr_str()
        );
        assert!(!marker.exists(), "fd {close:?}: the app ran");
    }
}

/// tlsc with only one of fd 6/7 open: 111, one line, the app never runs.
#[test]
fn tlsc_one_network_fd_missing_is_111() {
    for (have, missing) in [(6, 7), (7, 6)] {
        let dir = scratch("missing67");
        let marker = peers::marker(&dir);
        let (_peer, ours) = tcp_pair();
        let mut c = Tlsc::new(&prog(
            &["-k", "localhost"],
            &format!("touch '{}'", marker.display()),
        ))
        .command();
        proc::map_fds(&mut c, &[(ours.as_raw_fd(), have)]);
        c.stdin(Stdio::null());
        let r = Running::start(&mut c);
        drop(c);
        drop(ours);
        let o = r.finish(WAIT);
        assert_tlsc_fatal(&o, 111, &format!("fd {missing} missing"));
        assert!(!marker.exists());
    }
}

// ------------------------------------------------------------------ tlsc io form, one socket

/// A case reported as a failure that this code never had: tlsc's io form with one
/// socketpair end on both fd 0 and fd 1 (the shim's case). The host sends, shuts down writing, then reads: the
/// reply must still arrive (local EOF on a socket ends only that direction, fd 1 stays
/// usable).
#[test]
fn tlsc_io_form_one_socketpair_half_close() {
    for len in [0, 1, 1000, 2 * MIB + 3] {
        io_form_one_socketpair(len);
    }
}

fn io_form_one_socketpair(len: usize) {
    let p = pki();
    let mut args: Vec<OsString> = vec!["--".into(), "/bin/sh".into(), "-c".into()];
    args.push("exec sha256sum".into());
    let mut spawn = Spawn::tlsd(
        &args,
        &[
            ("CERTFILE", p.ec.cert.as_path()),
            ("KEYFILE", p.ec.key.as_path()),
        ],
    );
    spawn.timeout = SESSION_LIMIT;
    let l = TinyListener::start(spawn);
    let data = payload::bytes(51, len);
    let (mut host, theirs) = UnixStream::pair().expect("socketpair");
    host.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let net = TcpStream::connect(l.addr).expect("connect");
    let mut c = Tlsc::new(&["-k", "localhost"]).command();
    let fd_in: OwnedFd = theirs.try_clone().expect("dup").into();
    let fd_out: OwnedFd = theirs.into();
    c.stdin(Stdio::from(fd_in))
        .stdout(Stdio::from(fd_out))
        .stderr(Stdio::piped());
    proc::map_fds(&mut c, &[(net.as_raw_fd(), 6), (net.as_raw_fd(), 7)]);
    let r = Running::adopt(proc::spawn(&mut c));
    drop(c);
    drop(net);
    let mut w = host.try_clone().expect("dup host end");
    let d2 = data.clone();
    let writer = thread::spawn(move || {
        let ok = w.write_all(&d2).is_ok();
        let _ = w.shutdown(Shutdown::Write);
        ok
    });
    let mut reply = Vec::new();
    let _ = host.read_to_end(&mut reply);
    assert!(writer.join().expect("writer"), "writing to tlsc failed");
    assert_eq!(
        payload::sha256sum_word(&reply),
        payload::sha256_hex(&data),
        "{len} bytes: the reply after the host's shutdown(SHUT_WR)"
    );
    let o = r.finish(WAIT);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(l.next_session(WAIT).code(), 0);
}
