//! tlsd -L behind a real HAProxy (`send-proxy`, `send-proxy-v2`) under tcpserver: the app
//! sees the client's address and port (the client binds 127.0.0.2, or connects over
//! IPv6), data checked by hash both ways; openssl s_client and curl through HAProxy;
//! headers written by a test socket: v2 LOCAL and v1 UNKNOWN keep the connection's
//! addresses, the socket's own where no TCP variable was set (inetd, systemd); a missing, malformed, oversized, cut or stalled header ends tlsd with one
//! line and its code, and prog never runs. tlsserver -L behind HAProxy the same way, a bad
//! header ending only that connection, and -C counting the balancer's address.

use std::ffi::OsString;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stls_tests::client::{self, ClientOpts, End};
use stls_tests::listener::{serve_on_free_port, Session, Spawn, TcpServer, TinyListener};
use stls_tests::payload;
use stls_tests::peers::{self, one_fatal_line, Tls};
use stls_tests::proc::{self, Running};
use stls_tests::tlsserver::Server;
use stls_tests::{pki, require, scratch};

const WAIT: Duration = Duration::from_secs(60);

/// prog: the addresses it was given, then an echo of its input.
const ADDRESSES_THEN_ECHO: &str = "printf 'REMOTE=%s:%s LOCAL=%s:%s PROTO=%s\\n' \
     \"$TCPREMOTEIP\" \"$TCPREMOTEPORT\" \"$TCPLOCALIP\" \"$TCPLOCALPORT\" \"$PROTO\"; exec cat";

/// prog: an HTTP/1.0 reply whose body is the addresses it was given.
const ADDRESSES_OVER_HTTP: &str =
    "printf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n\
     REMOTE=%s:%s LOCAL=%s:%s\\n' \
     \"$TCPREMOTEIP\" \"$TCPREMOTEPORT\" \"$TCPLOCALIP\" \"$TCPLOCALPORT\"";

fn sh(opts: &[&str], script: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![stls_tests::tlsd().into()];
    v.extend(opts.iter().map(OsString::from));
    v.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    v
}

fn pair_env() -> Vec<(&'static str, PathBuf)> {
    let p = pki();
    vec![
        ("CERTFILE", p.ec.cert.clone()),
        ("KEYFILE", p.ec.key.clone()),
    ]
}

/// `tcpserver ... tlsd -L -v 2 -- sh -c script`.
fn tcpserver_tlsd(script: &str) -> TcpServer {
    let env = pair_env();
    let refs: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    TcpServer::start(20, &sh(&["-L", "-v", "2"], script), &refs)
}

/// `haproxy -db -f CONF` in TCP mode on 127.0.0.1 and ::1 (one port), with one server:
/// `127.0.0.1:backend` and `server_opts` (`send-proxy`, `send-proxy-v2`, ...).
fn haproxy(backend: u16, server_opts: &str) -> (Running, u16) {
    let dir = scratch("haproxy");
    serve_on_free_port("haproxy", "127.0.0.1", |port| {
        let conf = dir.join(format!("haproxy-{port}.cfg"));
        let text = format!(
            "global\n    maxconn 100\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
             frontend tls\n    bind 127.0.0.1:{port}\n    bind [::1]:{port}\n    default_backend tlsd\n\
             backend tlsd\n    server s1 127.0.0.1:{backend} {server_opts}\n"
        );
        std::fs::write(&conf, text).expect("write haproxy.cfg");
        let mut c = Command::new("haproxy");
        c.arg("-db").arg("-f").arg(&conf);
        c
    })
}

/// A TCP connection to `dst` from `src` (port chosen by the kernel).
fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr
    // structures are initialised and live across the calls that read them.
    unsafe {
        let fam = if dst.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = libc::socket(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let with = |a: SocketAddr, f: &mut dyn FnMut(*const libc::sockaddr, u32) -> i32| match a {
            SocketAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                f(
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of_val(&sa) as u32,
                )
            }
            SocketAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                f(
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of_val(&sa) as u32,
                )
            }
        };
        let r = with(SocketAddr::new(src, 0), &mut |p, l| libc::bind(fd, p, l));
        assert_eq!(r, 0, "bind {src}: {}", std::io::Error::last_os_error());
        let r = with(dst, &mut |p, l| libc::connect(fd, p, l));
        assert_eq!(r, 0, "connect {dst}: {}", std::io::Error::last_os_error());
        stream
    }
}

fn addr_text(a: SocketAddr) -> String {
    format!("{}:{}", a.ip(), a.port())
}

/// Through HAProxy with `send-proxy` (v1) and `send-proxy-v2` (with a CRC32C TLV, which
/// tlsd skips), from 127.0.0.2 to 127.0.0.1 and from ::1 to ::1: prog's TCPREMOTEIP/PORT
/// are the client's socket, TCPLOCALIP/PORT HAProxy's listening address; 256 KiB both
/// ways checked by hash; tlsd's -v 2 line names the client.
#[test]
fn haproxy_send_proxy_v1_and_v2_give_the_clients_address() {
    if !require("haproxy") || !require("tcpserver") {
        return;
    }
    for server_opts in ["send-proxy", "send-proxy-v2 proxy-v2-options crc32c"] {
        let srv = tcpserver_tlsd(ADDRESSES_THEN_ECHO);
        let (hap, port) = haproxy(srv.port, server_opts);
        for (src, dst) in [("127.0.0.2", "127.0.0.1"), ("::1", "::1")] {
            let what = format!("{server_opts}, {src} -> {dst}");
            let dst = SocketAddr::new(dst.parse().expect("ip"), port);
            let tcp = connect_from(src.parse().expect("ip"), dst);
            let me = tcp.local_addr().expect("local_addr");
            let mut c = client::handshake(tcp, &ClientOpts::tls13())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let data = payload::bytes(0x9e11 + port as u64, 256 * 1024);
            let line = format!(
                "REMOTE={} LOCAL={} PROTO=TCP\n",
                addr_text(me),
                addr_text(dst)
            );
            let mut want = line.into_bytes();
            want.extend_from_slice(&data);
            let (got, end) = c.duplex(&data, true, WAIT);
            assert_eq!(end, End::CloseNotify, "{what}");
            assert_eq!(got.len, want.len() as u64, "{what}: length");
            assert_eq!(got.hex(), payload::sha256_hex(&want), "{what}: hash");
        }
        drop(hap);
        let log = srv.stop();
        assert!(log.contains("peer=127.0.0.2"), "{server_opts}: {log}");
        assert!(log.contains("peer=::1"), "{server_opts}: {log}");
        assert!(!log.contains("fatal"), "{server_opts}: {log}");
    }
}

/// Real clients through HAProxy: openssl s_client (TLS 1.2 and 1.3, verifying) over
/// `send-proxy-v2`, curl from 127.0.0.2 (`--interface`) over `send-proxy`.
#[test]
fn s_client_and_curl_through_haproxy() {
    if !require("haproxy") || !require("tcpserver") || !require("openssl") || !require("curl") {
        return;
    }
    let srv = tcpserver_tlsd(ADDRESSES_OVER_HTTP);
    let (hap, port) = haproxy(srv.port, "send-proxy-v2");
    for tls in Tls::both() {
        let o = peers::s_client(port, tls, &[], b"");
        assert_eq!(o.code(), 0, "{tls:?}: {}", o.stderr_str());
        let out = o.stdout_str();
        let want = format!(" LOCAL=127.0.0.1:{port}\n");
        assert!(
            out.contains("REMOTE=127.0.0.1:") && out.contains(&want),
            "{tls:?}: {out}"
        );
    }
    drop(hap);
    let (hap, port) = haproxy(srv.port, "send-proxy");
    for tls in Tls::both() {
        let (v, max) = match tls {
            Tls::V12 => ("--tlsv1.2", "1.2"),
            Tls::V13 => ("--tlsv1.3", "1.3"),
        };
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", v, "--tls-max", max])
            .args(["--interface", "127.0.0.2", "--cacert"])
            .arg(&pki().ca)
            .arg("--resolve")
            .arg(format!("tls.test:{port}:127.0.0.1"))
            .arg(format!("https://tls.test:{port}/"));
        let o = proc::run(&mut c, None, WAIT);
        assert_eq!(o.code(), 0, "curl {tls:?}: {}", o.stderr_str());
        let out = o.stdout_str();
        let want = format!(" LOCAL=127.0.0.1:{port}\n");
        assert!(
            out.starts_with("REMOTE=127.0.0.2:") && out.ends_with(&want),
            "curl {tls:?}: {out}"
        );
    }
    drop(hap);
    let log = srv.stop();
    assert!(!log.contains("fatal"), "{log}");
}

/// tlsd -L under the suite's listener (which records each exit code and stderr) with
/// prog `sh -c script`; the marker file shows whether prog ran.
fn listener(opts: &[&str], script: &str) -> TinyListener {
    let mut args: Vec<OsString> = opts.iter().map(OsString::from).collect();
    args.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    let env = pair_env();
    let refs: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let mut spawn = Spawn::tlsd(&args, &refs);
    spawn.timeout = WAIT;
    TinyListener::start(spawn)
}

/// A v2 LOCAL header (a balancer's health check) and a v1 UNKNOWN header keep the
/// connection's own addresses; the handshake behind the header follows at once.
#[test]
fn v2_local_and_v1_unknown_keep_the_connections_addresses() {
    let l = listener(&["-L"], ADDRESSES_THEN_ECHO);
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    for (what, header) in [
        ("v2 LOCAL", local),
        (
            "v1 UNKNOWN",
            b"PROXY UNKNOWN 10.9.9.9 10.8.8.8 1 2\r\n".to_vec(),
        ),
    ] {
        let mut tcp = connect_from("127.0.0.2".parse().expect("ip"), l.addr);
        let me = tcp.local_addr().expect("local_addr");
        tcp.write_all(&header).expect("write the header");
        let mut c =
            client::handshake(tcp, &ClientOpts::tls12()).unwrap_or_else(|e| panic!("{what}: {e}"));
        let data = payload::bytes(7, 64 * 1024);
        let mut want = format!(
            "REMOTE={} LOCAL={} PROTO=TCP\n",
            addr_text(me),
            addr_text(l.addr)
        )
        .into_bytes();
        want.extend_from_slice(&data);
        let (got, end) = c.duplex(&data, true, WAIT);
        assert_eq!(end, End::CloseNotify, "{what}");
        assert_eq!(got.hex(), payload::sha256_hex(&want), "{what}");
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 0, "{what}: {}", s.stderr_str());
    }
    // A v2 PROXY header from the test socket: its addresses, not the socket's.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 192, 0, 2, 9, 198, 51, 100, 4, 0xc3, 0x50, 1, 187,
    ]);
    let mut tcp = l.connect();
    tcp.write_all(&v2).expect("write the header");
    let mut c = client::handshake(tcp, &ClientOpts::tls13()).expect("handshake");
    let (got, _) = c.duplex(b"", true, WAIT);
    let want = "REMOTE=192.0.2.9:50000 LOCAL=198.51.100.4:443 PROTO=TCP\n";
    assert_eq!(got.hex(), payload::sha256_hex(want.as_bytes()));
    assert_eq!(l.next_session(WAIT).code(), 0);
}

/// A connection as inetd or systemd (`Accept=yes`) hands it over: `prog_args` run with the
/// accepted socket on fd 0 and 1 and no TCP variable in the environment. The client's
/// end, and the program's outcome once it ends.
fn inetd_style(prog_args: &[OsString]) -> (TcpStream, std::thread::JoinHandle<proc::Outcome>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let tcp = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (conn, _) = l.accept().expect("accept");
    let (fd0, fd1) = (
        std::os::fd::OwnedFd::from(conn.try_clone().expect("dup")),
        std::os::fd::OwnedFd::from(conn),
    );
    let mut c = Command::new(&prog_args[0]);
    c.args(&prog_args[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(fd0)
        .stdout(fd1)
        .stderr(std::process::Stdio::piped());
    for (k, v) in pair_env() {
        c.env(k, v);
    }
    let running = Running::adopt(proc::spawn(&mut c));
    let done = std::thread::spawn(move || running.finish(WAIT));
    (tcp, done)
}

/// Under inetd or systemd no TCP variable is set: after a v2 LOCAL header (a balancer's
/// own connection), `tlsd -L` and `ucspitlsd -L` give prog the connection's own addresses,
/// from the socket.
#[test]
fn v2_local_without_tcp_variables_gives_the_sockets_addresses() {
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let report = "printf 'REMOTE=%s:%s LOCAL=%s:%s PROTO=%s\\n' \
                  \"$TCPREMOTEIP\" \"$TCPREMOTEPORT\" \"$TCPLOCALIP\" \"$TCPLOCALPORT\" \"$PROTO\"";
    for prog in ["tlsd", "ucspitlsd"] {
        let mut args: Vec<OsString> = vec![stls_tests::bins::bin(prog).into()];
        args.extend(["-L", "--", "/bin/sh", "-c", report].map(OsString::from));
        let (mut tcp, done) = inetd_style(&args);
        let want = format!(
            "REMOTE={} LOCAL={} PROTO=TCP\n",
            addr_text(tcp.local_addr().expect("local")),
            addr_text(tcp.peer_addr().expect("peer"))
        );
        tcp.write_all(&local).expect("write the header");
        let got = if prog == "tlsd" {
            let mut c = client::handshake(tcp, &ClientOpts::tls13()).expect("handshake");
            let (got, _) = c.duplex(b"", true, WAIT);
            got.hex()
        } else {
            // ucspitlsd's prog talks clear text and never asks for TLS.
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut tcp, &mut out).expect("read");
            assert_eq!(String::from_utf8_lossy(&out), want, "{prog}");
            payload::sha256_hex(&out)
        };
        assert_eq!(got, payload::sha256_hex(want.as_bytes()), "{prog}");
        let o = done.join().expect("the program's thread");
        assert_eq!(o.code(), 0, "{prog}: {}", o.stderr_str());
    }
}

fn assert_refused(s: &Session, code: i32, words: &str, marker: &Path, what: &str) {
    assert!(!s.killed, "{what}: tlsd hung");
    let err = s.stderr_str();
    assert_eq!(s.code(), code, "{what}: {err}");
    assert!(one_fatal_line(&err, "tlsd"), "{what}: {err:?}");
    assert!(err.contains(words), "{what}: {err}");
    assert!(!marker.exists(), "{what}: prog ran");
}

/// What a test socket sends instead of a good header, and whether it then closes.
enum Then {
    Close,
    Wait,
}

/// A missing, malformed, oversized or cut header: 97; a stalled one or none at all: 98
/// at the handshake timeout (-K 1s). One line each, prog never runs.
#[test]
fn bad_headers_end_tlsd_before_any_tls() {
    let dir = scratch("bad-headers");
    let marker = peers::marker(&dir);
    let script = format!("touch {}", marker.display());
    let l = listener(&["-L", "-K", "1s"], &script);
    let mut oversized = b"PROXY UNKNOWN ".to_vec();
    oversized.resize(130, b'x');
    oversized.extend_from_slice(b"\r\n");
    let sig = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let with = |tail: &[u8]| -> Vec<u8> { [&sig[..], tail].concat() };
    let cases: Vec<(&str, Vec<u8>, Then, i32, &str)> = vec![
        (
            "EOF at once",
            Vec::new(),
            Then::Close,
            97,
            "connection closed before the end of the PROXY protocol header",
        ),
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Then::Wait,
            97,
            "no PROXY protocol header",
        ),
        (
            "random bytes",
            payload::bytes(3, 300),
            Then::Wait,
            97,
            "no PROXY protocol header",
        ),
        ("oversized v1", oversized, Then::Wait, 97, "107 bytes"),
        (
            "bad v1 port",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 99999 443\r\n".to_vec(),
            Then::Wait,
            97,
            "malformed PROXY protocol v1",
        ),
        (
            "v2 bad command",
            with(&[0x23, 0x11, 0, 12]),
            Then::Wait,
            97,
            "malformed PROXY protocol v2",
        ),
        (
            "v2 short addresses",
            with(&[0x21, 0x21, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Then::Wait,
            97,
            "shorter than its addresses",
        ),
        (
            "truncated v2, then EOF",
            with(&[0x21, 0x11, 0, 12, 127, 0]),
            Then::Close,
            97,
            "connection closed before the end of the PROXY protocol header",
        ),
        (
            "truncated v2, stalled",
            with(&[0x21, 0x11, 0, 12, 127, 0]),
            Then::Wait,
            98,
            "timed out waiting for the PROXY protocol header",
        ),
        (
            "nothing sent",
            Vec::new(),
            Then::Wait,
            98,
            "timed out waiting for the PROXY protocol header",
        ),
    ];
    for (what, bytes, then, code, words) in cases {
        let mut tcp = l.connect();
        tcp.write_all(&bytes).expect("write");
        if let Then::Close = then {
            tcp.shutdown(std::net::Shutdown::Write).expect("shutdown");
        }
        let s = l.next_session(Duration::from_secs(20));
        assert_refused(&s, code, words, &marker, what);
        if code == 98 {
            assert!(
                s.elapsed >= Duration::from_millis(900) && s.elapsed < Duration::from_secs(10),
                "{what}: {:?}",
                s.elapsed
            );
        }
    }
    // A TLS client that sends its ClientHello straight away: no header.
    let r = client::connect(l.addr, &ClientOpts::tls13());
    assert!(r.is_err(), "a handshake without a header succeeded");
    let s = l.next_session(Duration::from_secs(20));
    assert_refused(&s, 97, "no PROXY protocol header", &marker, "TLS directly");
}

/// A configuration error is reported before anything is read from the network, with -L
/// too: a missing key file is 96 at once, not a header timeout.
#[test]
fn configuration_errors_come_before_the_header() {
    let dir = scratch("proxy-config");
    let mut spawn = Spawn::tlsd(
        &["-L", "--", "/bin/true"],
        &[
            ("CERTFILE", pki().ec.cert.as_path()),
            ("KEYFILE", dir.join("missing.key").as_path()),
        ],
    );
    spawn.timeout = WAIT;
    let l = TinyListener::start(spawn);
    let _tcp = l.connect();
    let s = l.next_session(Duration::from_secs(20));
    assert_eq!(s.code(), 96, "{}", s.stderr_str());
    assert!(
        one_fatal_line(&s.stderr_str(), "tlsd"),
        "{}",
        s.stderr_str()
    );
    assert!(s.elapsed < Duration::from_secs(10), "{:?}", s.elapsed);
}

/// A load balancer's health check: a v2 LOCAL header, then the end of the connection (a
/// close, or a reset as HAProxy's `check` leaves): exit 0 without a fatal line, prog never
/// runs. A LOCAL header followed by silence is still the handshake timeout (98). Then a
/// real HAProxy checking a `tlsd -L` backend every 100 ms with `send-proxy-v2`.
#[test]
fn health_checks_are_quiet() {
    let dir = scratch("health");
    let marker = peers::marker(&dir);
    let script = format!("touch {}", marker.display());
    let l = listener(&["-L", "-K", "1s", "-v", "2"], &script);
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    for reset in [false, true] {
        let mut tcp = l.connect();
        tcp.write_all(&local).expect("write the header");
        if reset {
            // SO_LINGER 0: close sends a reset, as HAProxy's check does.
            let _ = socket_linger_zero(&tcp);
        }
        drop(tcp);
        let s = l.next_session(WAIT);
        let err = s.stderr_str();
        assert_eq!(s.code(), 0, "reset={reset}: {err}");
        assert!(!err.contains("fatal"), "reset={reset}: {err}");
        assert!(err.contains("health check"), "reset={reset}: {err}");
        assert!(!marker.exists(), "reset={reset}: prog ran");
    }
    let mut tcp = l.connect();
    tcp.write_all(&local).expect("write the header");
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 98, "{}", s.stderr_str());
    drop(tcp);
    assert!(!marker.exists(), "prog ran");

    if !require("haproxy") || !require("tcpserver") {
        return;
    }
    let srv = tcpserver_tlsd(ADDRESSES_THEN_ECHO);
    let (hap, _port) = haproxy(srv.port, "send-proxy-v2 check inter 100ms");
    std::thread::sleep(Duration::from_millis(1500));
    drop(hap);
    let log = srv.stop();
    assert!(log.contains("health check"), "no check seen: {log}");
    assert!(!log.contains("fatal"), "{log}");
}

fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` is a valid linger structure for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// ------------------------------------------------------------- tlsserver -L

/// `tlsserver -L -v 2 opts... 127.0.0.1 PORT sh -c script` with the test pair.
fn tlsserver_l(opts: &[&str], script: &str) -> Server {
    let env = pair_env();
    let refs: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let mut all = vec!["-L", "-v", "2"];
    all.extend_from_slice(opts);
    Server::start_env(&all, "127.0.0.1", &["/bin/sh", "-c", script], &refs)
}

/// tlsserver -L behind HAProxy (`send-proxy`, `send-proxy-v2`), from 127.0.0.2 and ::1:
/// prog's TCPREMOTEIP/PORT are the client's socket and TCPLOCALIP/PORT HAProxy's
/// listening address, not the socket tlsserver accepted (the header's values win over
/// the ones tlsserver sets); 256 KiB both ways by hash; the session line names the client
/// while the accept line names the balancer.
#[test]
fn tlsserver_behind_haproxy_gives_prog_the_clients_address() {
    if !require("haproxy") {
        return;
    }
    for server_opts in ["send-proxy", "send-proxy-v2"] {
        let srv = tlsserver_l(&[], ADDRESSES_THEN_ECHO);
        let (hap, port) = haproxy(srv.port, server_opts);
        for (i, (src, dst)) in [("127.0.0.2", "127.0.0.1"), ("::1", "::1")]
            .into_iter()
            .enumerate()
        {
            let what = format!("{server_opts}, {src} -> {dst}");
            let dst = SocketAddr::new(dst.parse().expect("ip"), port);
            let tcp = connect_from(src.parse().expect("ip"), dst);
            let me = tcp.local_addr().expect("local_addr");
            let mut c = client::handshake(tcp, &ClientOpts::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let data = payload::bytes(0x5e11 + i as u64, 256 * 1024);
            let mut want = format!(
                "REMOTE={} LOCAL={} PROTO=TCP\n",
                addr_text(me),
                addr_text(dst)
            )
            .into_bytes();
            want.extend_from_slice(&data);
            let (got, end) = c.duplex(&data, true, WAIT);
            assert_eq!(end, End::CloseNotify, "{what}");
            assert_eq!(got.len, want.len() as u64, "{what}: length");
            assert_eq!(got.hex(), payload::sha256_hex(&want), "{what}: hash");
        }
        drop(hap);
        assert!(
            srv.wait_log(" exit 0 ", 2, WAIT),
            "{server_opts}: {}",
            srv.log()
        );
        let log = srv.log();
        assert!(log.contains("peer=127.0.0.2"), "{server_opts}: {log}");
        assert!(log.contains("peer=::1"), "{server_opts}: {log}");
        assert!(
            log.contains(" from 127.0.0.1 port "),
            "{server_opts}: {log}"
        );
        assert!(!log.contains("fatal"), "{server_opts}: {log}");
        assert_eq!(srv.stop(), 0, "{server_opts}");
    }
}

/// Bad headers under tlsserver -L: plain HTTP (97), a malformed v1 line (97), a stalled
/// header (98 at -K 1s); each is that connection's one warning line (the server goes on:
/// nothing fatal) and its logged exit
/// code, prog never runs, and the server goes on serving a good header: a v2 PROXY
/// header's addresses, and after a v2 LOCAL one the socket's.
#[test]
fn tlsserver_bad_header_ends_that_connection_only() {
    let dir = scratch("tlsserver-bad-headers");
    let marker = peers::marker(&dir);
    let script = format!(
        "touch {}; echo \"$TCPREMOTEIP:$TCPREMOTEPORT $TCPLOCALIP:$TCPLOCALPORT\"",
        marker.display()
    );
    let srv = tlsserver_l(&["-K", "1s"], &script);
    let cases: [(&str, &[u8], i32, &str); 3] = [
        (
            "plain HTTP",
            b"GET / HTTP/1.0\r\n\r\n",
            97,
            "no PROXY protocol header",
        ),
        (
            "bad v1 port",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 99999 443\r\n",
            97,
            "malformed PROXY protocol v1",
        ),
        (
            "stalled v1",
            b"PROXY TCP4 10.0.0.1",
            98,
            "timed out waiting for the PROXY protocol header",
        ),
    ];
    for (n, (what, bytes, code, words)) in cases.into_iter().enumerate() {
        let mut tcp = TcpStream::connect(srv.addr()).expect("connect");
        tcp.write_all(bytes).expect("write");
        let exits = format!(" exit {code} ");
        let count = if code == 97 { n + 1 } else { 1 };
        assert!(srv.wait_log(&exits, count, WAIT), "{what}: {}", srv.log());
        let log = srv.log();
        let warned: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("tlsserver: warning:"))
            .collect();
        assert_eq!(warned.len(), n + 1, "{what}: {log}");
        assert!(warned[n].contains(words), "{what}: {log}");
        assert!(!log.contains("fatal"), "{what}: {log}");
        assert!(!marker.exists(), "{what}: prog ran");
    }
    // The server still serves: a good v2 header, then the handshake.
    let mut tcp = TcpStream::connect(srv.addr()).expect("connect");
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 192, 0, 2, 9, 198, 51, 100, 4, 0, 80, 1, 187,
    ]);
    tcp.write_all(&v2).expect("write the header");
    let mut c = client::handshake(tcp, &ClientOpts::tls12()).expect("handshake");
    let (got, end) = c.duplex(b"", true, WAIT);
    assert_eq!(end, End::CloseNotify);
    let want = "192.0.2.9:80 198.51.100.4:443\n";
    assert_eq!(got.hex(), payload::sha256_hex(want.as_bytes()));
    // A v2 LOCAL header (a health check's): the socket's addresses stand.
    let mut tcp = connect_from("127.0.0.2".parse().expect("ip"), srv.addr());
    let me = tcp.local_addr().expect("local_addr");
    tcp.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .expect("v2 LOCAL");
    let mut c = client::handshake(tcp, &ClientOpts::tls13()).expect("handshake");
    let (got, end) = c.duplex(b"", true, WAIT);
    assert_eq!(end, End::CloseNotify);
    let want = format!("{} {}\n", addr_text(me), addr_text(srv.addr()));
    assert_eq!(got.hex(), payload::sha256_hex(want.as_bytes()));
    assert_eq!(srv.stop(), 0);
}

/// -C counts the address tlsserver accepted, the balancer's: behind HAProxy with -C 1,
/// a second client (from another address) is closed while the first is open, with
/// warnings naming 127.0.0.1.
#[test]
fn tlsserver_maxconn_per_ip_counts_the_balancer() {
    if !require("haproxy") {
        return;
    }
    let srv = tlsserver_l(&["-C", "1"], "exec cat");
    let (hap, port) = haproxy(srv.port, "send-proxy-v2");
    let dst = SocketAddr::new("127.0.0.1".parse().expect("ip"), port);
    let first = connect_from("127.0.0.2".parse().expect("ip"), dst);
    let mut first = client::handshake(first, &ClientOpts::default()).expect("first");
    // A round trip: the server has read the client's last flight, so the first session is
    // established on its side too (one still in its handshake may be ended to make room).
    first.write_all(b"ping\n").expect("ping");
    assert_eq!(first.read_exact(5).ok().as_deref(), Some(&b"ping\n"[..]));
    let second = connect_from("127.0.0.3".parse().expect("ip"), dst);
    assert!(
        client::handshake(second, &ClientOpts::default()).is_err(),
        "a second connection through the balancer was served under -C 1"
    );
    let (got, _) = first.duplex(b"still here\n", true, WAIT);
    assert_eq!(got.hex(), payload::sha256_hex(b"still here\n"));
    drop(hap);
    let log = srv.log();
    let warned = log
        .lines()
        .filter(|l| l.starts_with("tlsserver: warning: connection from 127.0.0.1 closed"))
        .count();
    // HAProxy may retry a server connection closed before any byte (its `retries`):
    // one warning per attempt, each naming the balancer.
    assert!(warned >= 1, "{log}");
    assert_eq!(srv.stop(), 0);
}

// ------------------------------------------- delayed TLS: ucspitlsd -L, tlsserver -n -L

/// A UCSPI-TLS prog (`python3 -c` this `[MARKER]`; its descriptors may be above 9, which
/// dash cannot redirect): MARKER created, its addresses in clear text, then `y` on
/// SSLCTLFD and an echo over TLS.
const ADDRESSES_THEN_STARTTLS: &str = r#"
import os, sys
e = os.environ
if len(sys.argv) > 1:
    open(sys.argv[1], "w").close()
keys = ("TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT", "PROTO")
line = "REMOTE=%s:%s LOCAL=%s:%s PROTO=%s\n" % tuple(e.get(k, "") for k in keys)
os.write(1, line.encode())
os.write(int(e["SSLCTLFD"]), b"y")
r, w = int(e["SSLREADFD"]), int(e["SSLWRITEFD"])
while True:
    d = os.read(r, 65536)
    if not d:
        break
    while d:
        d = d[os.write(w, d):]
"#;

/// One line of clear text, read a byte at a time (what follows is the TLS handshake).
fn clear_line(tcp: &mut TcpStream) -> String {
    use std::io::Read;
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 200 {
        match tcp.read(&mut b) {
            Ok(1) => line.push(b[0]),
            other => panic!("reading the clear-text line: {other:?} after {line:?}"),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Through HAProxy (`send-proxy`, `send-proxy-v2`) from 127.0.0.2 to a delayed-TLS
/// server at `backend`: the clear-text line names the client and HAProxy's address (the
/// header was read before prog started), then TLS after `y` echoes 128 KiB by hash.
fn delayed_through_haproxy(backend: u16, what: &str) {
    for server_opts in ["send-proxy", "send-proxy-v2"] {
        let what = format!("{what}, {server_opts}");
        let (hap, port) = haproxy(backend, server_opts);
        let dst = SocketAddr::new("127.0.0.1".parse().expect("ip"), port);
        let mut tcp = connect_from("127.0.0.2".parse().expect("ip"), dst);
        let me = tcp.local_addr().expect("local_addr");
        let want = format!(
            "REMOTE={} LOCAL={} PROTO=TCP\n",
            addr_text(me),
            addr_text(dst)
        );
        assert_eq!(clear_line(&mut tcp), want, "{what}");
        let mut c = client::handshake(tcp, &ClientOpts::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let data = payload::bytes(0xde1a + port as u64, 128 * 1024);
        let (got, end) = c.duplex(&data, true, WAIT);
        assert_eq!(end, End::CloseNotify, "{what}");
        assert_eq!(got.len, data.len() as u64, "{what}: length");
        assert_eq!(got.hex(), payload::sha256_hex(&data), "{what}: hash");
        drop(hap);
    }
}

/// ucspitlsd -L under tcpserver and tlsserver -n -L, behind HAProxy: prog, which talks
/// first, already sees the client's address; the TLS that follows carries data intact.
#[test]
fn delayed_tls_behind_haproxy_gives_prog_the_clients_address() {
    if !require("haproxy") || !require("tcpserver") || !require("python3") {
        return;
    }
    let env = pair_env();
    let refs: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let mut argv: Vec<OsString> = vec![stls_tests::bins::bin("ucspitlsd").into()];
    argv.extend(
        [
            "-L",
            "-v",
            "2",
            "--",
            "python3",
            "-c",
            ADDRESSES_THEN_STARTTLS,
        ]
        .map(OsString::from),
    );
    let srv = TcpServer::start(20, &argv, &refs);
    delayed_through_haproxy(srv.port, "ucspitlsd -L");
    let log = srv.stop();
    assert!(log.contains("peer=127.0.0.2"), "{log}");
    assert!(!log.contains("fatal"), "{log}");

    let srv = Server::start_env(
        &["-n", "-L", "-v", "2"],
        "127.0.0.1",
        &["python3", "-c", ADDRESSES_THEN_STARTTLS],
        &refs,
    );
    delayed_through_haproxy(srv.port, "tlsserver -n -L");
    assert!(srv.wait_log(" exit 0 ", 2, WAIT), "{}", srv.log());
    let log = srv.log();
    assert!(log.contains("peer=127.0.0.2"), "{log}");
    assert!(!log.contains("fatal"), "{log}");
    assert_eq!(srv.stop(), 0);
}

/// ucspitlsd -L: a client that talks first (no header) is 97, a stalled header 98 at
/// -K 1s, one line each and prog never runs; after a v2 LOCAL header prog runs with the
/// connection's own addresses.
#[test]
fn ucspitlsd_bad_header_before_prog_starts() {
    if !require("python3") {
        return;
    }
    let dir = scratch("ucspitlsd-bad-headers");
    let marker = peers::marker(&dir);
    let marker_arg = marker.display().to_string();
    let args = [
        "-L",
        "-K",
        "1s",
        "--",
        "python3",
        "-c",
        ADDRESSES_THEN_STARTTLS,
        &marker_arg,
    ];
    let spawn = Spawn {
        program: stls_tests::bins::bin("ucspitlsd"),
        args: args.map(OsString::from).to_vec(),
        env: pair_env()
            .into_iter()
            .map(|(k, v)| (OsString::from(k), v.into_os_string()))
            .collect(),
        groups: None,
        timeout: WAIT,
    };
    let l = TinyListener::start(spawn);
    for (what, bytes, code, words) in [
        (
            "EHLO first",
            &b"EHLO client.test\r\n"[..],
            97,
            "no PROXY protocol header",
        ),
        (
            "stalled v2",
            &b"\r\n\r\n\0\r\nQUIT\n\x21"[..],
            98,
            "timed out waiting for the PROXY protocol header",
        ),
    ] {
        let mut tcp = l.connect();
        tcp.write_all(bytes).expect("write");
        let s = l.next_session(Duration::from_secs(20));
        assert!(!s.killed, "{what}: ucspitlsd hung");
        let err = s.stderr_str();
        assert_eq!(s.code(), code, "{what}: {err}");
        assert!(one_fatal_line(&err, "ucspitlsd"), "{what}: {err:?}");
        assert!(err.contains(words), "{what}: {err}");
        assert!(!marker.exists(), "{what}: prog ran");
    }
    let mut tcp = connect_from("127.0.0.2".parse().expect("ip"), l.addr);
    let me = tcp.local_addr().expect("local_addr");
    tcp.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .expect("v2 LOCAL");
    let want = format!(
        "REMOTE={} LOCAL={} PROTO=TCP\n",
        addr_text(me),
        addr_text(l.addr)
    );
    assert_eq!(clear_line(&mut tcp), want);
    let mut c = client::handshake(tcp, &ClientOpts::default()).expect("handshake");
    let (got, end) = c.duplex(b"after LOCAL\n", true, WAIT);
    assert_eq!(end, End::CloseNotify);
    assert_eq!(got.hex(), payload::sha256_hex(b"after LOCAL\n"));
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 0, "{}", s.stderr_str());
    assert!(marker.exists(), "prog did not run after a v2 LOCAL header");
}
