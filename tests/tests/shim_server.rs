//! autossl-shim's server side: daemons that listen and accept by themselves, preloaded
//! with the library and `AUTOSSL_ACCEPT_PORTS`, reached over TLS by real clients and
//! checked by payload: redis-server, memcached, Python's http.server, busybox httpd, a
//! forking server and an epoll daemon that accepts with accept4's flags itself
//! (tests/apps/shim_server).
//! What the daemon sees (addresses, flags, options, the session), client certificates, a
//! stalled handshake, and 1,000 connections without a leak in the daemon.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use stls_tests::client::{self, ClientOpts, TlsClient};
use stls_tests::listener::free_port;
use stls_tests::proc::{self, Outcome, Running};
use stls_tests::shim::{library, processes_with, python};
use stls_tests::{bins, payload, pki, require};

/// A daemon under the shim, its port upgraded, with a marker variable its tlsd helpers
/// inherit.
struct Daemon {
    run: Running,
    port: u16,
    marker: String,
    what: String,
}

fn apps() -> PathBuf {
    bins::workspace().join("tests/apps/shim_server")
}

impl Daemon {
    /// Start `cmd` (its port is `port`) with the shim, the test server pair and `env`; wait
    /// (bounded) until a TLS handshake on the port succeeds.
    fn start(what: &str, cmd: &[String], port: u16, env: &[(&str, String)]) -> Daemon {
        let p = pki();
        let marker = format!("STLS_SHIM_SERVER={what}-{}-{port}", std::process::id());
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..])
            .env("LD_PRELOAD", library())
            .env("AUTOSSL_ACCEPT_PORTS", port.to_string())
            .env("AUTOSSL_VERBOSE", "1")
            .env("CERTFILE", &p.ec.cert)
            .env("KEYFILE", &p.ec.key)
            .env("STLS_SHIM_SERVER", &marker["STLS_SHIM_SERVER=".len()..]);
        for (k, v) in env {
            c.env(k, v);
        }
        let run = Running::start(&mut c);
        let d = Daemon {
            run,
            port,
            marker,
            what: what.to_string(),
        };
        let up = proc::wait_for(Duration::from_secs(30), || {
            d.tls(&ClientOpts::default()).is_ok()
        });
        assert!(up, "{what}: no TLS on port {port} within 30 s");
        d
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A TLS connection from 127.0.0.1.
    fn tls(&self, o: &ClientOpts) -> Result<TlsClient, String> {
        client::connect(
            self.addr(),
            &ClientOpts {
                timeout: Duration::from_secs(20),
                ..o.clone()
            },
        )
    }

    /// A TLS connection from `src` (another loopback address).
    fn tls_from(&self, src: [u8; 4], o: &ClientOpts) -> Result<TlsClient, String> {
        client::handshake(connect_from(src, self.addr()), o)
    }

    fn pid(&self) -> u32 {
        self.run.pid()
    }

    /// The daemon's open descriptors.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The daemon's descriptor count once it has stopped changing (bounded): its count with
    /// no connection open, taken when none is.
    fn settled_fds(&self) -> usize {
        let mut last = self.fds();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.fds();
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    /// Wait (bounded) until the daemon has closed its connections down to `idle`
    /// descriptors: it has read their ends, and logged them, before it is stopped.
    fn closed_down_to(&self, idle: usize) {
        let _ = proc::wait_for(Duration::from_secs(10), || self.fds() <= idle);
    }

    /// The daemon's children (every thread's).
    fn children(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) {
            for t in rd.flatten() {
                if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                    v.extend(s.split_whitespace().map(str::to_string));
                }
            }
        }
        v
    }

    /// The helpers (tlsd) still running: the marker's processes but the daemon's own.
    fn helpers(&self) -> Vec<u32> {
        let me = self.pid();
        let kids = self.children();
        processes_with(&self.marker)
            .into_iter()
            .filter(|&p| p != me && !kids.contains(&p.to_string()))
            .collect()
    }

    /// Stop the daemon (its process group, and with it the helpers left) and give what it
    /// printed.
    fn stop(self) -> Outcome {
        let out = self.run.kill();
        eprintln!("{} said:\n{}", self.what, out.stderr_str());
        out
    }
}

/// A TCP connection to `to` from the loopback address `src`.
fn connect_from(src: [u8; 4], to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only");
    };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket, bind and connect with sockaddr_in values of their own size; the
    // descriptor goes to the TcpStream, which owns it from then on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        let a = sin(src, 0);
        let r = libc::bind(fd, &a as *const _ as *const libc::sockaddr, len);
        assert_eq!(r, 0, "bind {src:?}: {}", std::io::Error::last_os_error());
        let b = sin(to.ip().octets(), to.port());
        let r = libc::connect(fd, &b as *const _ as *const libc::sockaddr, len);
        assert_eq!(r, 0, "connect {to}: {}", std::io::Error::last_os_error());
        s
    }
}

/// Read from `c` until `done` says the bytes are complete (bounded by the client's
/// timeouts and 64 MiB).
fn read_until(c: &mut TlsClient, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !done(&out) && out.len() < 64 << 20 {
        match c.read_some(&mut buf) {
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "read ended ({e:?}) after {} bytes: {:?}",
                out.len(),
                String::from_utf8_lossy(&out[..out.len().min(300)])
            ),
        }
    }
    out
}

fn line(c: &mut TlsClient) -> String {
    String::from_utf8_lossy(&read_until(c, |b| b.ends_with(b"\n"))).into_owned()
}

/// A RESP command.
fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Printable bytes (for the clients that print what they get).
fn text(seed: u64, len: usize) -> Vec<u8> {
    payload::bytes(seed, len)
        .into_iter()
        .map(|b| b"abcdefghijklmnopqrstuvwxyz0123456789"[b as usize % 36])
        .collect()
}

/// A field's value as Python's json.dumps writes it: a string's (without escapes, as
/// ours are), else the number's or the literal's text.
fn field<'a>(json: &'a str, k: &str) -> &'a str {
    let key = format!("\"{k}\": ");
    let i = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {k} in {json}"))
        + key.len();
    let rest = &json[i..];
    if let Some(q) = rest.strip_prefix('"') {
        return &q[..q.find('"').unwrap_or(q.len())];
    }
    &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
}

fn redis(port: u16) -> Daemon {
    Daemon::start(
        "redis",
        &[
            "redis-server".into(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            // Clients from 127.0.0.2 are not "local" to redis: they really are seen there.
            "--protected-mode".into(),
            "no".into(),
            "--maxclients".into(),
            "1000".into(),
        ],
        port,
        &[],
    )
}

#[test]
fn redis_server_over_tls_sees_the_real_client() {
    if !(require("redis-server") && require("redis-cli")) {
        return;
    }
    let d = redis(free_port("127.0.0.1"));
    let p = pki();
    let big = text(6379, 1 << 20);
    let cli = |args: &[&str], input: Option<&[u8]>| {
        let mut c = Command::new("redis-cli");
        c.args(["--tls", "--cacert"])
            .arg(&p.ca)
            .args(["--sni", "localhost", "-h", "127.0.0.1", "-p"])
            .arg(d.port.to_string())
            .args(args);
        proc::run(&mut c, input, Duration::from_secs(60))
    };
    let o = cli(&["-x", "SET", "big"], Some(&big));
    assert_eq!(
        (o.code(), o.stdout_str().trim()),
        (0, "OK"),
        "{}",
        o.stderr_str()
    );
    let o = cli(&["GET", "big"], None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout.len(), big.len() + 1, "GET big: length");
    assert!(o.stdout.starts_with(&big), "GET big: other bytes");

    // From 127.0.0.2: 1 MiB both ways, and CLIENT LIST names that address, not a proxy's.
    let mut c = d
        .tls_from([127, 0, 0, 2], &ClientOpts::default())
        .expect("TLS from 127.0.0.2");
    let mine = c.stream.get_ref().local_addr().expect("local address");
    let value = text(2, 1 << 20);
    c.write_all(&resp(&[b"SET", b"two", &value])).expect("SET");
    assert_eq!(line(&mut c), "+OK\r\n");
    c.write_all(&resp(&[b"GET", b"two"])).expect("GET");
    let want = [
        format!("${}\r\n", value.len()).into_bytes(),
        value,
        b"\r\n".to_vec(),
    ]
    .concat();
    let got = read_until(&mut c, |b| b.len() >= want.len());
    assert!(got == want, "GET two: {} bytes, other than sent", got.len());
    c.write_all(&resp(&[b"CLIENT", b"LIST"]))
        .expect("CLIENT LIST");
    let list = String::from_utf8_lossy(&read_until(&mut c, |b| {
        b.ends_with(b"\r\n") && b.split(|&x| x == b'\n').count() > 2
    }))
    .into_owned();
    let me = list
        .lines()
        .find(|l| l.contains("cmd=client"))
        .unwrap_or_else(|| panic!("no CLIENT LIST line of ours: {list}"));
    assert!(
        me.contains(&format!(" addr={mine} ")),
        "{mine} not in: {me}"
    );
    assert!(
        me.contains(&format!(" laddr=127.0.0.1:{} ", d.port)),
        "{me}"
    );
    drop(c);
    let out = d.stop();
    let err = out.stderr_str();
    assert!(
        err.contains("autossl: fd ")
            && err.contains(&format!("127.0.0.2 port {}: accepted on port", mine.port())),
        "no line for the upgrade: {err}"
    );
}

#[test]
fn redis_thousand_connections_leave_nothing_behind() {
    if !require("redis-server") {
        return;
    }
    let d = redis(free_port("127.0.0.1"));
    // The warm-up made the session table: its descriptor is the one the library keeps.
    assert!(proc::wait_for(Duration::from_secs(30), || d
        .helpers()
        .is_empty()));
    let fds = d.fds();
    let children = d.children();
    let started = Instant::now();
    let failures = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..50u64 {
            let (addr, failures) = (d.addr(), &failures);
            s.spawn(move || {
                for i in 0..20u64 {
                    let ok = (|| -> Result<(), String> {
                        let mut c = client::connect(addr, &ClientOpts::default())?;
                        let key = format!("k{t}-{i}");
                        let val = text(t * 100 + i, 1000 + (i as usize) * 100);
                        c.write_all(&resp(&[b"SET", key.as_bytes(), &val]))
                            .map_err(|e| e.to_string())?;
                        c.write_all(&resp(&[b"GET", key.as_bytes()]))
                            .map_err(|e| e.to_string())?;
                        let want = [
                            b"+OK\r\n".to_vec(),
                            format!("${}\r\n", val.len()).into_bytes(),
                            val,
                            b"\r\n".to_vec(),
                        ]
                        .concat();
                        let got = read_until(&mut c, |b| b.len() >= want.len());
                        if got != want {
                            return Err(format!("{key}: other bytes"));
                        }
                        Ok(())
                    })();
                    if let Err(e) = ok {
                        eprintln!("connection {t}/{i}: {e}");
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let took = started.elapsed();
    assert_eq!(failures.into_inner(), 0, "failed connections (in {took:?})");
    let settled = proc::wait_for(Duration::from_secs(60), || {
        d.fds() <= fds && d.helpers().is_empty() && d.children() == children
    });
    assert!(
        settled,
        "after 1000 connections: {} fds (before {fds}), children {:?} (before {children:?}), helpers {:?}",
        d.fds(),
        d.children(),
        d.helpers()
    );
    eprintln!("1000 connections, 50 at once: {took:?}");
    d.stop();
}

#[test]
fn memcached_set_get_over_tls() {
    if !require("memcached") {
        return;
    }
    let port = free_port("127.0.0.1");
    let mut cmd: Vec<String> = ["memcached", "-U", "0", "-l", "127.0.0.1", "-p"]
        .map(String::from)
        .to_vec();
    cmd.push(port.to_string());
    if bins::is_root() {
        cmd.extend(["-u".into(), "root".into()]);
    }
    let d = Daemon::start("memcached", &cmd, port, &[]);
    let value = text(11211, 512 * 1024);
    let mut c = d.tls(&ClientOpts::default()).expect("TLS");
    c.write_all(format!("set k 0 0 {}\r\n", value.len()).as_bytes())
        .expect("set");
    c.write_all(&value).expect("value");
    c.write_all(b"\r\n").expect("end");
    assert_eq!(line(&mut c), "STORED\r\n");
    c.write_all(b"get k\r\n").expect("get");
    let want = [
        format!("VALUE k 0 {}\r\n", value.len()).into_bytes(),
        value,
        b"\r\nEND\r\n".to_vec(),
    ]
    .concat();
    let got = read_until(&mut c, |b| b.len() >= want.len());
    assert!(got == want, "get k: {} bytes, other than set", got.len());
    drop(c);
    d.stop();
}

#[test]
fn python_http_server_logs_the_client() {
    if !(require("curl") && require("python3")) {
        return;
    }
    let dir = stls_tests::scratch("http-server");
    let body = text(8000, 300_000);
    std::fs::write(dir.join("file"), &body).expect("file");
    let port = free_port("127.0.0.1");
    let d = Daemon::start(
        "http.server",
        &[
            python().display().to_string(),
            "-m".into(),
            "http.server".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--directory".into(),
            dir.display().to_string(),
        ],
        port,
        &[],
    );
    let mut c = Command::new("curl");
    c.args(["-sS", "--interface", "127.0.0.2", "--cacert"])
        .arg(&pki().ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/file"));
    let o = proc::run(&mut c, None, Duration::from_secs(60));
    assert_eq!(o.code(), 0, "curl: {}", o.stderr_str());
    assert!(
        o.stdout == body,
        "curl got {} bytes, other than the file",
        o.stdout.len()
    );
    let out = d.stop();
    let err = out.stderr_str();
    assert!(
        err.lines()
            .any(|l| l.starts_with("127.0.0.2 - - ") && l.contains("\"GET /file HTTP/1.1\" 200")),
        "http.server's log does not name 127.0.0.2: {err}"
    );
}

#[test]
fn forking_server_half_closes_and_sees_the_client() {
    if !require("python3") {
        return;
    }
    let port = free_port("127.0.0.1");
    let d = Daemon::start(
        "forking",
        &[
            python().display().to_string(),
            apps().join("forking.py").display().to_string(),
            port.to_string(),
        ],
        port,
        &[],
    );
    let mut c = d
        .tls_from([127, 0, 0, 3], &ClientOpts::default())
        .expect("TLS");
    let mine = c.stream.get_ref().local_addr().expect("local address");
    c.write_all(b"hello\n").expect("hello");
    let (got, end) = c.read_to_end();
    let got = String::from_utf8_lossy(&got).into_owned();
    assert_eq!(
        end,
        client::End::CloseNotify,
        "the handler's shutdown: {got}"
    );
    assert_eq!(field(&got, "peer"), mine.to_string(), "{got}");
    assert_eq!(field(&got, "sock"), format!("127.0.0.1:{port}"), "{got}");
    assert_eq!(field(&got, "line"), "hello", "{got}");
    assert_eq!(
        field(&got, "parent"),
        d.pid().to_string(),
        "not a forked child: {got}"
    );
    assert!(
        got.contains("\"SSL_PROTOCOL=TLSv1.3\""),
        "no session: {got}"
    );
    assert!(
        got.contains("\"SSL_TLS_SNI_SERVERNAME=localhost\""),
        "{got}"
    );
    // Half-closed: the daemon still reads what comes after its own end.
    c.write_all(b"after the end")
        .expect("writing after the server's end");
    c.half_close().expect("close_notify");
    let want = format!("after {mine} after the end");
    let seen = proc::wait_for(Duration::from_secs(20), || {
        processes_with(&d.marker).len() <= 1
    });
    let out = d.stop();
    let err = out.stderr_str();
    assert!(seen && err.contains(&want), "{want:?} not in: {err}");
}

fn evloop(env: &[(&str, String)]) -> Daemon {
    let port = free_port("127.0.0.1");
    Daemon::start(
        "evloop",
        &[
            python().display().to_string(),
            apps().join("evloop.py").display().to_string(),
            port.to_string(),
        ],
        port,
        env,
    )
}

#[test]
fn an_event_loop_sees_a_tcp_socket() {
    if !require("python3") {
        return;
    }
    let d = evloop(&[]);
    let mut c = d
        .tls_from([127, 0, 0, 2], &ClientOpts::default())
        .expect("TLS");
    let mine = c.stream.get_ref().local_addr().expect("local address");
    c.write_all(b"ping\n").expect("ping");
    assert_eq!(line(&mut c), "PING\n");
    c.write_all(b"INFO\n").expect("INFO");
    let info = line(&mut c);
    assert_eq!(field(&info, "accepted"), mine.to_string(), "{info}");
    assert_eq!(field(&info, "peer"), mine.to_string(), "{info}");
    assert_eq!(
        field(&info, "sock"),
        format!("127.0.0.1:{}", d.port),
        "{info}"
    );
    assert_eq!(field(&info, "family"), libc::AF_INET.to_string(), "{info}");
    assert_eq!(field(&info, "nonblock"), "true", "SOCK_NONBLOCK: {info}");
    assert_eq!(field(&info, "cloexec"), "true", "SOCK_CLOEXEC: {info}");
    assert_eq!(field(&info, "nodelay"), "1", "TCP_NODELAY: {info}");
    assert_eq!(field(&info, "SSL_PROTOCOL"), "TLSv1.3", "{info}");
    assert_eq!(
        field(&info, "SSL_TLS_SNI_SERVERNAME"),
        "localhost",
        "{info}"
    );
    // 1 MiB through the event loop, both ways.
    let big = text(5, 1 << 20);
    let sent = [big.clone(), b"\n".to_vec()].concat();
    // The daemon answers once the whole line is in: all of it written, then read back.
    c.write_all(&sent).expect("1 MiB line");
    let back = read_until(&mut c, |b| b.ends_with(b"\n"));
    assert!(
        back.len() == sent.len() && back[..big.len()] == big.to_ascii_uppercase()[..],
        "1 MiB line: {} bytes back",
        back.len()
    );
    drop(c);
    let out = d.stop();
    let err = out.stderr_str();
    assert!(err.contains("autossl: fd "), "{err}");
    assert!(
        err.contains("tlsd: info: TLSv1.3"),
        "tlsd's session line: {err}"
    );
}

#[test]
fn a_required_client_certificate_keeps_others_from_the_daemon() {
    if !require("python3") {
        return;
    }
    let p = pki();
    let d = evloop(&[
        ("AUTOSSL_ACCEPT_CLIENT_CERT", "required".into()),
        ("CAFILE", p.ca.display().to_string()),
    ]);
    let idle = d.settled_fds();
    let mut c = d
        .tls(&ClientOpts::default().with_cert(&p.client))
        .expect("TLS with a client certificate");
    c.write_all(b"INFO\n").expect("INFO");
    let info = line(&mut c);
    assert_eq!(
        field(&info, "SSL_PEER_CERT_SUBJECT"),
        p.client.subject,
        "{info}"
    );
    assert_eq!(field(&info, "SSL_PEER_CERT_HASH"), p.client.hash, "{info}");
    drop(c);

    // Without one: the daemon gets its descriptor, and an end, never a byte.
    let mut without = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(d.addr()).expect("connect");
        let me = tcp.local_addr().expect("local address");
        let mut refused = match client::handshake(tcp, &ClientOpts::default()) {
            Err(_) => {
                without.push(me);
                continue;
            }
            Ok(c) => c,
        };
        // TLS 1.3: the server's verdict comes after the client's handshake.
        let _ = refused.write_all(b"INFO\n");
        let mut buf = [0u8; 100];
        assert!(
            refused.read_some(&mut buf).is_err(),
            "an answer without a certificate"
        );
        without.push(me);
    }
    let ended = proc::wait_for(Duration::from_secs(20), || d.helpers().is_empty());
    d.closed_down_to(idle);
    let out = d.stop();
    let err = out.stderr_str();
    assert!(ended, "helpers left: {err}");
    for me in without {
        assert!(
            err.contains(&format!("eof {me}\n")),
            "no end for {me}: {err}"
        );
        assert!(
            !err.contains(&format!("data {me}\n")),
            "{me} reached the daemon's read: {err}"
        );
    }
}

#[test]
fn a_stalled_handshake_does_not_delay_the_others() {
    if !require("python3") {
        return;
    }
    let d = evloop(&[("AUTOSSL_TIMEOUT", "10s".into())]);
    let idle = d.settled_fds();
    // Silent clients: TCP only, and one that stops in the middle of its ClientHello.
    let mut silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(d.addr()).expect("connect"))
        .collect();
    silent[0]
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("a piece of a hello");
    let started = Instant::now();
    for i in 0..10 {
        let mut c = d
            .tls(&ClientOpts::default())
            .expect("TLS beside the stalled ones");
        c.write_all(format!("n{i}\n").as_bytes()).expect("line");
        assert_eq!(line(&mut c), format!("N{i}\n"));
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "10 conversations took {took:?} beside stalled handshakes"
    );
    // The stalled ones end at AUTOSSL_TIMEOUT: a client that closed, to the daemon too.
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut b = [0u8; 16];
        let t = Instant::now();
        let r = s.read(&mut b);
        let waited = matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        assert!(!waited, "a stalled handshake outlived its timeout: {r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(19),
            "a stalled handshake outlived the timeout"
        );
    }
    let gone = proc::wait_for(Duration::from_secs(20), || d.helpers().is_empty());
    d.closed_down_to(idle);
    let out = d.stop();
    let err = out.stderr_str();
    assert!(gone, "helpers left: {err}");
    let eofs = err.lines().filter(|l| l.starts_with("eof ")).count();
    assert!(eofs >= 13, "the daemon saw {eofs} ends: {err}");
}

#[test]
fn busybox_httpd_forks_and_logs_the_client() {
    if !(require("busybox") && require("curl")) {
        return;
    }
    let dir = stls_tests::scratch("busybox-httpd");
    let body = text(80, 200_000);
    std::fs::write(dir.join("file"), &body).expect("file");
    let port = free_port("127.0.0.1");
    // A process per connection, forked by the one that accepted.
    let d = Daemon::start(
        "busybox httpd",
        &[
            "busybox".into(),
            "httpd".into(),
            "-f".into(),
            "-vv".into(),
            "-p".into(),
            format!("127.0.0.1:{port}"),
            "-h".into(),
            dir.display().to_string(),
        ],
        port,
        &[],
    );
    for i in 0..3 {
        let mut c = Command::new("curl");
        c.args(["-sS", "--interface", "127.0.0.2", "--cacert"])
            .arg(&pki().ca)
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg(format!("https://localhost:{port}/file?{i}"));
        let o = proc::run(&mut c, None, Duration::from_secs(60));
        assert_eq!(o.code(), 0, "curl: {}", o.stderr_str());
        assert!(
            o.stdout == body,
            "curl got {} bytes, other than the file",
            o.stdout.len()
        );
    }
    let gone = proc::wait_for(Duration::from_secs(20), || d.helpers().is_empty());
    let out = d.stop();
    let err = out.stderr_str();
    assert!(gone, "helpers left: {err}");
    let served = err
        .lines()
        .filter(|l| l.starts_with("127.0.0.2:") && l.ends_with("response:200"))
        .count();
    assert_eq!(
        served, 3,
        "busybox httpd's log does not name 127.0.0.2 three times: {err}"
    );
}
