//! tlsserver under hostile load, with its default options: silent sockets (from one
//! address, from 200), ClientHellos followed by silence (from 100 addresses, from 500),
//! clients trickling a byte a second. During each attack a real TLS client must be served
//! within a second, the server's connection processes never exceed its limit and its
//! tree's memory stays under the bound tlsserver(1) states; afterwards no process and no
//! fd is left. Established sessions are never closed to make room. stunnel4 (daemon mode, foreground) takes the
//! same attacks as the reference, and its figure is reported. tlsd under tcpserver, with
//! the options its manual recommends, survives the silent sockets too.
//!
//! Every attack is bounded in time (a few seconds) and in sockets; closed attack sockets
//! are opened again at once, as an attacker would.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::io::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use stls_tests::client::{self, ClientOpts, End};
use stls_tests::listener::TcpServer;
use stls_tests::payload;
use stls_tests::tlsserver::Server;
use stls_tests::{peers, pki, proc, require, scratch};

/// tlsserver's default `-c`.
const MAXCONN: usize = 40;
/// The bound tlsserver(1) states for the whole tree's PSS with the default options.
const PSS_BOUND_KIB: u64 = 64 * 1024;
/// How long a real client may take, attack or not.
const SERVED_WITHIN: Duration = Duration::from_secs(1);
/// How long each attack lasts once in place.
const ATTACK: Duration = Duration::from_secs(3);

/// One attack at a time: two at once on a small machine would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------ helpers

/// The soft RLIMIT_NOFILE raised to the hard one: 2,000 attack sockets and the clients'.
fn raise_nofile() {
    // SAFETY: getrlimit and setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// 127.0.x.y for `i` in 0..: the attack's and the sessions' source addresses.
fn loopback(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        (10 + i / 250) as u8,
        (1 + i % 250) as u8,
    ))
}

/// A TCP connection to `dst` from `src` (port chosen by the system).
fn connect_from(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<TcpStream> {
    let Some(IpAddr::V4(src)) = src else {
        return TcpStream::connect_timeout(&dst, Duration::from_secs(5));
    };
    // SAFETY: a new socket owned by the TcpStream made from it on every path.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is ours.
    let stream = unsafe { TcpStream::from_raw_fd(s) };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let local = sin(src, 0);
    let SocketAddr::V4(d) = dst else {
        return Err(io::Error::other("IPv4 only"));
    };
    let remote = sin(*d.ip(), d.port());
    // SAFETY: both sockaddrs are locals of the size passed.
    unsafe {
        if libc::bind(s, (&local as *const libc::sockaddr_in).cast(), len) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::connect(s, (&remote as *const libc::sockaddr_in).cast(), len) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(stream)
}

/// A ClientHello as OpenSSL sends it, taken from a handshake against a stream that keeps
/// what is written and has nothing to read.
fn client_hello() -> Vec<u8> {
    struct Capture(Vec<u8>);
    impl Read for Capture {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let ctx = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())
        .expect("connector")
        .build();
    let cfg = ctx.configure().expect("configure");
    match cfg.connect("localhost", Capture(Vec::new())) {
        Err(openssl::ssl::HandshakeError::WouldBlock(mid)) => mid.get_ref().0.clone(),
        _ => panic!("the capture stream should make the handshake wait"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Connects and says nothing.
    Silent,
    /// Sends a whole ClientHello, then nothing.
    Hello,
    /// Sends a ClientHello one byte a second.
    Trickle,
}

/// An attack in progress: `n` sockets held open (each one closed is opened again), until
/// stopped.
struct Attack {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

struct Sock {
    s: Option<TcpStream>,
    sent: usize,
    next: Instant,
}

impl Attack {
    fn start(dst: SocketAddr, kind: Kind, n: usize, sources: usize) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicUsize::new(0));
        let (st, op) = (stop.clone(), opened.clone());
        let hello = client_hello();
        let thread = thread::spawn(move || {
            let src = |i: usize| (sources > 0).then(|| loopback(i % sources));
            let open = |i: usize| -> Option<TcpStream> {
                let s = connect_from(src(i), dst).ok()?;
                if kind == Kind::Hello {
                    let _ = (&s).write_all(&hello);
                }
                let _ = s.set_nonblocking(true);
                op.fetch_add(1, Ordering::Relaxed);
                Some(s)
            };
            let mut socks: Vec<Sock> = Vec::with_capacity(n);
            for i in 0..n {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                socks.push(Sock {
                    s: open(i),
                    sent: 0,
                    next: Instant::now(),
                });
            }
            // Bounded: an attack never outlives a minute, whatever the test does.
            let end = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                for (i, k) in socks.iter_mut().enumerate() {
                    let closed = match &k.s {
                        None => true,
                        Some(s) => match (&*s).read(&mut buf) {
                            Ok(0) => true,
                            Ok(_) => false,
                            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
                        },
                    };
                    if closed {
                        k.s = open(i);
                        k.sent = 0;
                        k.next = Instant::now();
                    }
                    if kind == Kind::Trickle && k.next <= Instant::now() && k.sent < hello.len() {
                        if let Some(s) = &k.s {
                            if (&*s).write(&hello[k.sent..k.sent + 1]).is_ok() {
                                k.sent += 1;
                            }
                        }
                        k.next = Instant::now() + Duration::from_secs(1);
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        Attack {
            stop,
            opened,
            thread: Some(thread),
        }
    }

    /// Wait (bounded) until `n` sockets were opened.
    fn in_place(&self, n: usize) {
        let ok = proc::wait_for(Duration::from_secs(20), || {
            self.opened.load(Ordering::Relaxed) >= n
        });
        assert!(
            ok,
            "only {} attack sockets opened",
            self.opened.load(Ordering::Relaxed)
        );
    }

    /// Close every attack socket.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A real client from `src`: handshake, a line echoed by `cat`, the close; how long it
/// took, or what went wrong.
fn serve_one(dst: SocketAddr, src: Option<IpAddr>) -> Result<Duration, String> {
    let t0 = Instant::now();
    let tcp = connect_from(src, dst).map_err(|e| format!("connect: {e}"))?;
    let o = ClientOpts {
        timeout: Duration::from_secs(10),
        ..ClientOpts::default()
    };
    let mut c = client::handshake(tcp, &o)?;
    c.write_all(b"ping\n").map_err(|e| format!("write: {e}"))?;
    c.half_close()?;
    let (got, end) = c.read_to_end();
    if got != b"ping\n" || end != End::CloseNotify {
        return Err(format!("{} bytes back, {end:?}", got.len()));
    }
    Ok(t0.elapsed())
}

/// The slowest of `n` real clients, one after the other, spread over the attack.
fn real_clients(dst: SocketAddr, src: Option<IpAddr>, n: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..n {
        let t = serve_one(dst, src).unwrap_or_else(|e| panic!("real client {i}: {e}"));
        worst = worst.max(t);
        thread::sleep(ATTACK / n as u32);
    }
    worst
}

/// `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The PSS of `pid` and all its descendants, in KiB.
fn tree_pss(pid: u32) -> u64 {
    let own = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    own + children(pid).into_iter().map(tree_pss).sum::<u64>()
}

fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The most connection processes and the most PSS seen while it runs.
struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(usize, u64)>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Watch {
    fn start(pid: u32) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new((0, 0)));
        let (st, sn) = (stop.clone(), seen.clone());
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                let procs = children(pid).len();
                let pss = tree_pss(pid);
                if let Ok(mut s) = sn.lock() {
                    s.0 = s.0.max(procs);
                    s.1 = s.1.max(pss);
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        Watch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> (usize, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let s = self.seen.lock().map(|s| *s).unwrap_or((0, 0));
        s
    }
}

/// Nothing left of the attack: no connection process, the fds of the idle server.
fn nothing_left(srv: &Server, idle_fds: usize) {
    let pid = srv.pid();
    let clean = proc::wait_for(Duration::from_secs(15), || {
        children(pid).is_empty() && fds(pid) <= idle_fds
    });
    assert!(
        clean,
        "left after the attack: processes {:?}, {} fds (idle: {idle_fds})",
        children(pid),
        fds(pid)
    );
}

/// The same attack on stunnel4, its slowest real client reported (or its failure).
fn stunnel_reference(kind: Kind, n: usize, sources: usize) -> String {
    if !require("stunnel4") {
        return "stunnel4 not installed".into();
    }
    let dir = scratch("hostile-stunnel");
    let (run, port) = peers::stunnel(&pki().ec, &["cat"], None, &dir);
    let dst = SocketAddr::from(([127, 0, 0, 1], port));
    let attack = Attack::start(dst, kind, n, sources);
    attack.in_place(n);
    let figure = (0..3)
        .map(|_| serve_one(dst, None))
        .try_fold(Duration::ZERO, |w, r| r.map(|t| w.max(t)));
    attack.stop();
    drop(run.kill());
    match figure {
        Ok(t) => format!("stunnel4 served in {t:?} at worst"),
        Err(e) => format!("stunnel4 did not serve: {e}"),
    }
}

/// One attack on a default tlsserver: real clients served within a second, the limits
/// held, nothing left; then stunnel4's figure for the same attack.
fn survives(kind: Kind, n: usize, sources: usize, client_src: Option<IpAddr>) {
    let _one = one_at_a_time();
    raise_nofile();
    let t0 = Instant::now();
    let srv = Server::start(&[], "127.0.0.1", &["cat"]);
    let pid = srv.pid();
    let idle_fds = fds(pid);
    let watch = Watch::start(pid);
    let attack = Attack::start(srv.addr(), kind, n, sources);
    attack.in_place(n);
    let worst = real_clients(srv.addr(), client_src, 5);
    let opened = attack.stop();
    let (procs, pss) = watch.stop();
    eprintln!(
        "{kind:?} x{n} from {} addresses ({opened} sockets opened): tlsserver served in \
         {worst:?} at worst, {procs} processes, {pss} KiB PSS at most",
        sources.max(1)
    );
    assert!(worst < SERVED_WITHIN, "served in {worst:?}");
    assert!(procs <= MAXCONN, "{procs} connection processes");
    assert!(pss < PSS_BOUND_KIB, "{pss} KiB");
    nothing_left(&srv, idle_fds);
    // Said, not silent: the limits' line at -v 1, at most once a second.
    let log = srv.log();
    let said = log
        .lines()
        .filter(|l| l.contains(": limit reached ("))
        .count();
    if kind != Kind::Silent {
        assert!(said >= 1, "no limit line: {log}");
    }
    let secs = t0.elapsed().as_secs() as usize;
    assert!(said <= secs + 1, "{said} limit lines in {secs} s");
    assert!(!log.contains("fatal"), "{log}");
    assert_eq!(srv.stop(), 0);
    eprintln!("{kind:?} x{n}: {}", stunnel_reference(kind, n, sources));
}

// ------------------------------------------------------------------ the attacks

#[test]
fn forty_five_silent_sockets_from_one_address() {
    // The real client comes from the attack's own address.
    survives(Kind::Silent, 45, 0, None);
}

#[test]
fn five_hundred_client_hellos_then_silence() {
    // From 100 addresses, so that -C alone could not stop them.
    survives(Kind::Hello, 500, 100, None);
}

#[test]
fn five_hundred_client_hellos_then_silence_from_500_addresses() {
    // One socket per address: each address has as few connections waiting as the real
    // client's, and only its connections ended to make room tell the flood apart.
    survives(Kind::Hello, 500, 500, None);
}

#[test]
fn two_hundred_clients_trickling_a_byte_a_second() {
    survives(Kind::Trickle, 200, 50, None);
}

#[test]
fn two_thousand_silent_sockets_from_200_addresses_and_30_sessions_kept() {
    let _one = one_at_a_time();
    raise_nofile();
    let srv = Server::start(&[], "127.0.0.1", &["cat"]);
    let pid = srv.pid();
    let idle_fds = fds(pid);
    let addr = srv.addr();
    // 30 established sessions from 30 addresses of their own, each streaming through the
    // whole attack, its data checked by hash at the end.
    let go = Arc::new(AtomicBool::new(false));
    let sessions: Vec<_> = (0..30)
        .map(|i| {
            let go = go.clone();
            thread::spawn(move || -> Result<(), String> {
                let tcp = connect_from(Some(loopback(900 + i)), addr)
                    .map_err(|e| format!("{i}: connect: {e}"))?;
                let o = ClientOpts {
                    timeout: Duration::from_secs(20),
                    ..ClientOpts::default()
                };
                let mut c = client::handshake(tcp, &o).map_err(|e| format!("{i}: {e}"))?;
                let (mut sent, mut back) = (Vec::new(), Vec::new());
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut k = 0;
                while !go.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let chunk = payload::bytes(1000 * i as u64 + k, 1024);
                    k += 1;
                    c.write_all(&chunk).map_err(|e| format!("{i}: {e}"))?;
                    back.extend(c.read_exact(1024).map_err(|e| format!("{i}: {e:?}"))?);
                    sent.extend(chunk);
                    thread::sleep(Duration::from_millis(100));
                }
                c.half_close()?;
                let (rest, end) = c.read_to_end();
                back.extend(rest);
                if end != End::CloseNotify
                    || k < 10
                    || payload::sha256_hex(&back) != payload::sha256_hex(&sent)
                {
                    return Err(format!(
                        "{i}: {} of {} bytes back, {end:?}",
                        back.len(),
                        sent.len()
                    ));
                }
                Ok(())
            })
        })
        .collect();
    let up = proc::wait_for(Duration::from_secs(20), || children(pid).len() >= 30);
    assert!(up, "{} sessions up", children(pid).len());
    let watch = Watch::start(pid);
    let attack = Attack::start(addr, Kind::Silent, 2000, 200);
    attack.in_place(2000);
    let worst = real_clients(addr, Some(loopback(5)), 5);
    let opened = attack.stop();
    go.store(true, Ordering::Relaxed);
    let failed: Vec<String> = sessions
        .into_iter()
        .filter_map(|t| t.join().map_or(Some("panicked".into()), |r| r.err()))
        .collect();
    let (procs, pss) = watch.stop();
    eprintln!(
        "Silent x2000 from 200 addresses ({opened} opened), 30 sessions: served in {worst:?} \
         at worst, {procs} processes, {pss} KiB PSS at most"
    );
    assert!(
        failed.is_empty(),
        "sessions closed or corrupted: {failed:?}"
    );
    assert!(worst < SERVED_WITHIN, "served in {worst:?}");
    assert!(procs <= MAXCONN, "{procs} connection processes");
    assert!(pss < PSS_BOUND_KIB, "{pss} KiB");
    nothing_left(&srv, idle_fds);
    assert_eq!(srv.stop(), 0);
    eprintln!(
        "Silent x2000: {}",
        stunnel_reference(Kind::Silent, 2000, 200)
    );
}

#[test]
fn tlsd_under_tcpserver_with_the_recommended_options() {
    if !require("tcpserver") {
        return;
    }
    let _one = one_at_a_time();
    raise_nofile();
    let p = &pki().ec;
    let tlsd = stls_tests::tlsd();
    let tlsd = tlsd.to_string_lossy();
    // The line of tlsd(1): room for the silent sockets (-c 200), and a handshake
    // timeout that frees their processes soon (-K 5s).
    let srv = TcpServer::start(
        200,
        &[&*tlsd, "-K", "5s", "cat"],
        &[("CERTFILE", &p.cert), ("KEYFILE", &p.key)],
    );
    let attack = Attack::start(srv.addr(), Kind::Silent, 45, 0);
    attack.in_place(45);
    let worst = real_clients(srv.addr(), None, 3);
    attack.stop();
    eprintln!("tcpserver -c 200 tlsd -K 5s, 45 silent sockets: served in {worst:?} at worst");
    assert!(worst < SERVED_WITHIN, "served in {worst:?}");
    srv.stop();
}
