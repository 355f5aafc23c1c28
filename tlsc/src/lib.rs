//! The client side's building blocks, shared by its programs: reading an address as the
//! environment and the command line give it, the forms of tlsc's command line, connecting
//! with a time limit, detaching from the caller, and the session itself (tlsc runs it on
//! the fds it was given, tlsclient on the connection it made).

#![forbid(unsafe_code)]

pub mod programs;
mod serve;

use openssl::ssl::SslContext;
use std::net::{IpAddr, SocketAddr, SocketAddrV6, TcpStream};
use std::os::unix::io::{IntoRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::time::Duration;
use stls::child::{self, Launcher, Selfpipe};
use stls::context::{self, ClientSettings};
use stls::env::{self, Env};
use stls::exit::{self, Error};
use stls::http_host::{self, Head};
use stls::log::{self, Log};
use stls::options::{Command, Groups, Options};
use stls::session;
use stls::ucspi;
use stls::{fd, process, Fds, Hold, Tls};

/// `tlsc`: its name, its groups (the options it takes, the variables it reads and sets)
/// and its usage.
pub const TLSC: Command = Command {
    name: "tlsc",
    groups: Groups::COMMON
        .with(Groups::CLIENT)
        .with(Groups::CLIENT_FDS)
        .with(Groups::SHIM)
        .with(Groups::NOT_DELAYED),
    usage: "usage: tlsc [options] [--] prog...   (network on fd 6/7, prog gets clear text on its fd 6/7)\n\
            \x20      tlsc [options]              (io form: clear text on stdin/stdout)\n\
            \x20      tlsc [options] ADDR PORT    (connect first, then the io form)\n",
};

/// `tlsclient`: its name, its groups (the options it takes, the variables it reads and sets)
/// and its usage.
pub const TLSCLIENT: Command = Command {
    name: "tlsclient",
    groups: Groups::COMMON
        .with(Groups::CLIENT)
        .with(Groups::CONNECT)
        .with(Groups::NOT_DELAYED),
    usage:
        "usage: tlsclient [options] [--] HOST PORT prog...   (prog gets clear text on its fd 6/7)\n\
            \x20      tlsclient [options] [--] HOST PORT           (clear text on stdin/stdout)\n\
            TLS client: connect to HOST PORT and verify HOST's certificate.\n",
};

/// `ucspitlsc`: its name, its groups (the options it takes, the variables it reads and sets)
/// and its usage.
pub const UCSPITLSC: Command = Command {
    name: "ucspitlsc",
    groups: Groups::COMMON
        .with(Groups::CLIENT)
        .with(Groups::CLIENT_FDS)
        .with(Groups::DELAYED),
    usage: "usage: ucspitlsc [options] [--] prog...\n\
            Delayed TLS (UCSPI-TLS) on the client side: the network on fd 6/7, prog starts at once on it \
            and asks for TLS on SSLCTLFD.\n",
};

/// An IP literal as found in TCPREMOTEIP, -k or an ADDR operand: IPv4, IPv6 with an
/// optional `%zone` and brackets; a v4-mapped IPv6 address is its IPv4 address. Returns the
/// address and the zone's interface index (0 without a zone).
pub fn parse_ip(s: &str) -> Option<(IpAddr, u32)> {
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let scope = match zone {
        None => 0,
        Some(z) if !ip.is_ipv6() || z.is_empty() => return None,
        Some(z) => match z.parse::<u32>() {
            Ok(n) => n,
            Err(_) => stls::net::interface_index(z)?,
        },
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    Some((ip, scope))
}

/// The three forms of tlsc's command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Form {
    /// `tlsc [opts] [--] prog...`: prog on the network fds.
    Prog,
    /// `tlsc [opts]`: clear text on fd 0/1.
    Io,
    /// `tlsc [opts] ADDR PORT`: connect, then the io form.
    Connect(SocketAddr),
}

/// Which form the operands make: `--` always means prog; exactly two operands that are a
/// numeric address and a port are the connect form.
pub fn form_of(opts: &Options) -> Result<Form, Error> {
    let ops = &opts.operands;
    if opts.dashdash {
        if ops.is_empty() {
            return Err(Error::usage("no program after --"));
        }
        return Ok(Form::Prog);
    }
    if ops.is_empty() {
        return Ok(Form::Io);
    }
    if ops.len() == 2 {
        let a = ops[0].to_str().and_then(parse_ip);
        let p = ops[1].to_str().and_then(parse_port);
        if let (Some((ip, scope)), Some(port)) = (a, p) {
            let sa = match ip {
                IpAddr::V4(v4) => SocketAddr::from((v4, port)),
                IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope)),
            };
            return Ok(Form::Connect(sa));
        }
    }
    Ok(Form::Prog)
}

/// A port operand: a number from 1 to 65535.
fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

/// What is wrong with operands that were probably meant as `ADDR PORT` but made the prog
/// form, for the message when the prog form's network fds are missing.
pub fn connect_form_problem(ops: &[std::ffi::OsString]) -> Option<String> {
    let text: Vec<String> = ops
        .iter()
        .map(|o| o.to_string_lossy().into_owned())
        .collect();
    let is_ip = |s: &str| parse_ip(s).is_some();
    let is_port = |s: &str| parse_port(s).is_some();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match text.as_slice() {
        [a, p] if is_ip(a) && !is_port(p) => Some(format!(
            "in tlsc ADDR PORT, PORT must be a number from 1 to 65535, not {p:?}"
        )),
        [a, p] if !is_ip(a) && (is_port(p) || numeric(p)) => Some(format!(
            "in tlsc ADDR PORT, ADDR must be a numeric IP address, not {a:?}: \
             tlsclient HOST PORT connects by name"
        )),
        [a, p, rest @ ..] if is_ip(a) && is_port(p) => Some(format!(
            "tlsc ADDR PORT takes exactly two operands, not {} \
             (for the prog form, put -- before prog)",
            rest.len() + 2
        )),
        _ => None,
    }
}

/// Connect to `sa`, bounded by `timeout`; the socket twice (read and write fds).
pub fn connect(sa: SocketAddr, timeout: Option<Duration>) -> Result<(RawFd, RawFd), Error> {
    split(connect_stream(sa, timeout)?)
}

/// Connect to `sa`, bounded by `timeout`, with TCP_NODELAY.
pub fn connect_stream(sa: SocketAddr, timeout: Option<Duration>) -> Result<TcpStream, Error> {
    let s = match timeout {
        Some(t) => TcpStream::connect_timeout(&sa, t),
        None => TcpStream::connect(sa),
    }
    .map_err(|e| {
        Error::new(
            exit::SYSTEM,
            format!("unable to connect to {sa}: {}", exit::io_text(&e)),
        )
    })?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A connected socket as the session's read and write fds.
pub fn split(s: TcpStream) -> Result<(RawFd, RawFd), Error> {
    let w = s
        .try_clone()
        .map_err(|e| Error::sys("unable to dup the socket", e))?;
    Ok((s.into_raw_fd(), w.into_raw_fd()))
}

/// Fork once: the first process exits 0 at once, so whoever spawned the program never has
/// to wait for the long-lived one (autossl-shim keeps it out of the host's children).
pub fn detach() -> Result<(), Error> {
    // The program is single-threaded here: no thread has started yet.
    process::detach().map_err(|e| Error::sys("unable to fork", e))
}

/// Check the notification fd (`-d`) and keep it from the app, run `f`, and close the fd
/// when `f` fails (its reader waits for EOF). With `--detach` (autossl-shim's tlsc), a
/// failure before the handshake's end is also reported on the fd ([`session::Failure`]:
/// its cause decides the shim's advice); with `--pending-connect`, only there, not on
/// stderr, and the exit is its code.
pub fn with_notification(
    opts: &Options,
    f: impl FnOnce() -> Result<i32, Error>,
) -> Result<i32, Error> {
    let notify = opts.notification_fd;
    if let Some(n) = notify {
        if !fd::is_open(n) {
            return Err(Error::usage(format!("notification fd {n} is not open")));
        }
        // The app must not inherit it: its reader waits for EOF.
        let _ = fd::set_cloexec(n, true);
    }
    let r = f();
    if let (Err(e), Some(n)) = (&r, notify) {
        // Its reader is autossl-shim, which gives the reason with the connection it was
        // for when the program looks at its connect's outcome: not now, on its stderr.
        // (After the handshake the fd is closed already, and its number may be reused.)
        let report = session::Failure {
            errno: CONNECT_ERRNO.load(Relaxed),
            cause: e.cause,
            msg: e.msg.clone(),
        };
        let told = (opts.detach || opts.pending_connect)
            && !HANDSHAKE_DONE.load(Relaxed)
            && fd::write_all(n, &report.encode()).is_ok();
        fd::close(n);
        if told && opts.pending_connect {
            return Ok(e.code);
        }
    }
    r
}

/// The errno of a connect awaited with `--pending-connect` that failed (0: none).
static CONNECT_ERRNO: AtomicI32 = AtomicI32::new(0);
/// The handshake is over: the clear side's close is the engine's business from here on.
static HANDSHAKE_DONE: AtomicBool = AtomicBool::new(false);

/// `--pending-connect`: wait until the connect in progress on `net` is done (bounded by
/// `deadline`), and take its outcome from SO_ERROR before anything is written (a write
/// would consume it). A failure is the connect's errno.
pub fn await_connect(net: RawFd, deadline: Option<std::time::Instant>) -> Result<(), Error> {
    let failed = |e: i32| {
        CONNECT_ERRNO.store(e, Relaxed);
        Error::new(
            exit::SYSTEM,
            format!(
                "unable to connect: {}",
                exit::io_text(&std::io::Error::from_raw_os_error(e))
            ),
        )
    };
    loop {
        let mut p = [libc::pollfd {
            fd: net,
            events: libc::POLLOUT,
            revents: 0,
        }];
        let t = fd::poll_timeout(deadline);
        if t == 0 {
            return Err(failed(libc::ETIMEDOUT));
        }
        match fd::poll(&mut p, t) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::sys("unable to wait for the connection", e)),
        }
    }
    match stls::net::take_error(net) {
        Ok(0) => Ok(()),
        Ok(e) => Err(failed(e)),
        Err(e) => Err(failed(e.raw_os_error().unwrap_or(libc::EIO))),
    }
}

/// `--pending-connect`: until the handshake is over, the caller closing the clear side
/// (its program gave up on the connect) ends tlsc at once, connection and all; a thread
/// that watches fd 0 for the hang-up. It is confined from its start unless `no_sandbox`
/// (Landlock applies per thread; the process's own entry comes later). Returns once the
/// thread runs: its start-up calls (robust list, rseq, name, signal stack) must be made
/// before the process's seccomp filter, which reaches every thread, allows none of them.
pub fn watch_clear_side(no_sandbox: bool) {
    let (started, running) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("clear-side".into())
        .spawn(move || {
            stls::sandbox::confine_this_thread(no_sandbox);
            let _ = started.send(());
            while !HANDSHAKE_DONE.load(Relaxed) {
                let mut p = [libc::pollfd {
                    fd: 0,
                    events: 0,
                    revents: 0,
                }];
                match fd::poll(&mut p, 100) {
                    Ok(n) if n > 0 && !HANDSHAKE_DONE.load(Relaxed) => {
                        // Nothing has been relayed yet: nothing to finish.
                        process::exit_now(exit::SYSTEM)
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
    if spawned.is_ok() {
        // Bounded: a thread that never runs must not hold the connection.
        let _ = running.recv_timeout(std::time::Duration::from_secs(5));
    }
}

/// `--discard=N`: read and drop the first `n` bytes of clear input (`fd`, non-blocking),
/// within `deadline`: the filler the caller wrote before tlsc started.
pub fn discard(
    fd_in: RawFd,
    mut n: usize,
    deadline: Option<std::time::Instant>,
) -> Result<(), Error> {
    let mut buf = vec![0u8; n.min(64 * 1024)];
    while n > 0 {
        let want = n.min(buf.len());
        match fd::read(fd_in, &mut buf[..want]) {
            Ok(0) => {
                return Err(Error::new(
                    exit::SYSTEM,
                    "the clear side closed before the connection was ready",
                ))
            }
            Ok(k) => n -= k,
            Err(e) if fd::would_block(&e) || e.kind() == std::io::ErrorKind::Interrupted => {
                let t = fd::poll_timeout(deadline);
                if t == 0 {
                    return Err(Error::new(
                        exit::SYSTEM,
                        "the clear side's filler did not come",
                    ));
                }
                let mut p = [libc::pollfd {
                    fd: fd_in,
                    events: libc::POLLIN,
                    revents: 0,
                }];
                let _ = fd::poll(&mut p, t);
            }
            Err(e) => return Err(Error::sys("unable to read the clear side", e)),
        }
    }
    Ok(())
}

/// The client context from the environment and the command line.
pub fn client_context(opts: &Options, env: &Env) -> Result<SslContext, Error> {
    let settings = ClientSettings {
        verify_cert: opts.verify_cert,
        send_cert: opts.send_cert,
        enforce_close_notify: opts.enforce_close_notify,
        sandbox: !opts.no_sandbox,
    };
    context::client(&settings, env)
}

/// The name verified, and the one sent as SNI (host names only).
pub struct Peer {
    name: Option<String>,
    ip: Option<IpAddr>,
    sni: Option<String>,
}

impl Peer {
    /// The server's name, `-k` if given, else `name`: a host name is verified and sent as
    /// SNI, an address is checked against the certificate's IP addresses.
    pub fn named(opts: &Options, name: Option<String>) -> Result<Peer, Error> {
        let name = match &opts.servername {
            Some(n) => Some(n.trim_end_matches('.').to_string()),
            None => name,
        };
        let ip = name.as_deref().and_then(parse_ip).map(|(ip, _)| ip);
        if name.is_none() && opts.verify_cert && opts.verify_name {
            return Err(Error::usage(
                "no server name to verify: use -k name, set TCPREMOTEIP, or --no-verify-name",
            ));
        }
        // SNI only for host names (RFC 6066).
        let sni = match (&name, ip) {
            (Some(n), None) => Some(n.clone()),
            _ => None,
        };
        Ok(Peer { name, ip, sni })
    }
}

/// The network's read and write fds, and whether prog runs (then with clear text on its
/// fds `opts.read_fd`/`opts.write_fd`, where the network is) or clear text is on fd 0/1.
pub struct Network {
    /// The fd the network is read from.
    pub rfd: RawFd,
    /// The fd the network is written to.
    pub wfd: RawFd,
    /// prog (the operands) runs as a child: the prog form.
    pub prog: bool,
}

/// The session, from the launcher to the engine's end: in the prog form the launcher
/// forked (prog keeps the program's credentials), the engine's credentials dropped, the
/// handshake with SNI and verification, the description written to `-d`, prog started,
/// the engine relaying. The exit code is prog's unless the engine failed.
pub fn session(
    log: Log,
    opts: &Options,
    env: &Env,
    ctx: &SslContext,
    peer: &Peer,
    net: Network,
) -> Result<i32, Error> {
    session_sending(log, opts, env, ctx, peer, net, &[])
}

/// [`session`], with `first` (the app's first bytes, read already) sent before anything
/// else the app writes.
pub fn session_sending(
    log: Log,
    opts: &Options,
    env: &Env,
    ctx: &SslContext,
    peer: &Peer,
    net: Network,
    first: &[u8],
) -> Result<i32, Error> {
    let (rfd, wfd) = (net.rfd, net.wfd);
    if opts.check_host {
        let _ = DEST.set(destination(rfd));
    }
    let mut launcher = None;
    let selfpipe = if net.prog {
        let sp = Selfpipe::install()?;
        let close: Vec<RawFd> = [Some(sp.rfd), opts.notification_fd]
            .into_iter()
            .flatten()
            .collect();
        launcher = Some(Launcher::spawn(
            log.name,
            &opts.operands,
            rfd,
            wfd,
            &close,
            !opts.keep_env,
        )?);
        sp.rfd
    } else {
        child::ignore_sigpipe();
        -1
    };
    let app = match &launcher {
        Some(l) => (l.from_app, l.to_app),
        None => (0, 1),
    };
    let child = launcher.as_ref().map(|l| l.pid);
    let (tls, desc) = match handshake(log, opts, env, ctx, peer, (rfd, wfd), app, child) {
        Ok(t) => t,
        Err(e) => {
            if let Some(l) = launcher {
                l.abort();
            }
            return Err(e);
        }
    };
    HANDSHAKE_DONE.store(true, Relaxed);
    if opts.discard > 0 {
        discard(app.0, opts.discard as usize, opts.deadline())?;
    }
    let fds = Fds {
        clear_in: app.0,
        clear_out: app.1,
        cipher_in: rfd,
        cipher_out: wfd,
        selfpipe,
    };
    let hold = (opts.check_host && first.is_empty())
        .then(|| peer.sni.clone())
        .flatten();
    Ok(relay_sending(
        log, opts, tls, desc, launcher, fds, hold, first,
    ))
}

/// The handshake on the network fds `net`: the engine's credentials dropped, the sandbox
/// entered (unless `--no-sandbox`), the session's fds non-blocking (`app`: the app's ends the engine will use), SNI and verification of
/// `peer`, the description written to `-d`.
#[allow(clippy::too_many_arguments)]
pub fn handshake(
    log: Log,
    opts: &Options,
    env: &Env,
    ctx: &SslContext,
    peer: &Peer,
    (rfd, wfd): (RawFd, RawFd),
    app: (RawFd, RawFd),
    child: Option<libc::pid_t>,
) -> Result<(Tls, session::Description), Error> {
    env::drop_privileges(env.uid, env.gid)?;
    // The first byte from the network is read below: from here on, the engine's process
    // touches nothing but its fds (prog, `child`, was started or its launcher forked).
    stls::sandbox::enter(log, opts.no_sandbox, child)?;
    stls::nonblocking(&[rfd, wfd, app.0, app.1])?;
    stls::net::nodelay(wfd);
    let mut tls = Tls::new(ctx, rfd, wfd)?;
    let ssl = tls.ssl_mut();
    ssl.set_connect_state();
    if let Some(s) = &peer.sni {
        ssl.set_hostname(s)
            .map_err(|_| Error::usage(format!("invalid server name: {s}")))?;
    }
    if opts.verify_cert && opts.verify_name {
        let p = ssl.param_mut();
        let r = match (peer.ip, &peer.name) {
            (Some(ip), _) => p.set_ip(ip),
            (None, Some(n)) => p.set_host(n),
            (None, None) => Ok(()),
        };
        r.map_err(|_| Error::usage("invalid server name"))?;
    }
    tls.handshake(opts.deadline())?;
    let desc = session::describe(tls.ssl(), peer.sni.as_deref());
    if let Some(n) = opts.notification_fd {
        let r = fd::write_all(n, &desc.encode());
        fd::close(n);
        r.map_err(|e| Error::sys("unable to write the session description", e))?;
    }
    Ok((tls, desc))
}

/// After the handshake: the heap trimmed, prog (if any) started with the description, the
/// engine relaying over `fds`; the exit code of the whole session.
pub fn relay(
    log: Log,
    opts: &Options,
    tls: Tls,
    desc: session::Description,
    launcher: Option<Launcher>,
    fds: Fds,
) -> i32 {
    relay_sending(log, opts, tls, desc, launcher, fds, None, &[])
}

/// [`relay`], with the app's first request held for its host (`hold`, `--check-host`) or
/// its first bytes already read (`first`).
#[allow(clippy::too_many_arguments)]
fn relay_sending(
    log: Log,
    opts: &Options,
    mut tls: Tls,
    desc: session::Description,
    mut launcher: Option<Launcher>,
    fds: Fds,
    hold: Option<String>,
    first: &[u8],
) -> i32 {
    process::trim_heap();
    log.info(&log::session_line(&desc, fds.cipher_in));
    let mut cfg = opts.engine_config();
    if opts.detach {
        // The caller's stderr must not be held open for the connection's lifetime: with
        // a request to judge, the verdict goes to --log-fd, which is closed right after.
        match (&hold, opts.log_fd) {
            (Some(_), Some(l)) => {
                let _ = fd::dup2(l, 2);
                fd::close(l);
            }
            _ => {
                close_log_fd(opts);
                fd::silence_stderr();
            }
        }
    }
    cfg.hold = hold.map(|host| Hold {
        host,
        decided: if opts.detach { judged_detached } else { judged },
    });
    let pid = launcher.as_mut().map(|l| {
        l.start(&desc);
        l.pid
    });
    let out = stls::run_sending(&mut tls, fds, pid, &cfg, first);
    log::conclude(&log, out)
}

/// Where the connection goes, for the messages of the shim's checks (set once, before).
static DEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn dest() -> &'static str {
    DEST.get().map(String::as_str).unwrap_or("the server")
}

/// The verdict on the first request, said at once when it refuses.
fn judged(why: Option<&str>) {
    if let Some(why) = why {
        let line = format!("tlsc: fatal: {}: {why}\n", dest());
        let _ = fd::write_all(2, line.as_bytes());
    }
}

/// [`judged`], then the caller's stderr let go (`--detach`).
fn judged_detached(why: Option<&str>) {
    judged(why);
    fd::silence_stderr();
}

fn close_log_fd(opts: &Options) {
    if let Some(l) = opts.log_fd {
        if l > 2 {
            fd::close(l);
        }
    }
}

/// `--host-from-request=NAMES`: several names gave the address and the app's own request
/// says which. The caller's connect completes now (the filler dropped, an empty description
/// on `-d`), messages go to `--log-fd`, and the app's first bytes are read (bounded by the
/// handshake timeout): an HTTP/1.x request whose host is one of `names` makes that name the
/// server's; anything else fails closed, nothing sent. Returns the peer and the bytes read.
pub fn name_from_request(
    opts: &Options,
    names: &[String],
    net: RawFd,
) -> Result<(Peer, Vec<u8>), Error> {
    let deadline = opts.deadline();
    if opts.discard > 0 {
        discard(0, opts.discard as usize, deadline)?;
    }
    if let Some(n) = opts.notification_fd {
        let r = fd::write_all(n, &session::Description::default().encode());
        fd::close(n);
        HANDSHAKE_DONE.store(true, Relaxed);
        r.map_err(|e| Error::sys("unable to write the session description", e))?;
    }
    if let (true, Some(l)) = (opts.detach, opts.log_fd) {
        let _ = fd::dup2(l, 2);
        fd::close(l);
    }
    let _ = DEST.set(destination(net));
    let deadline = opts.deadline();
    let list = names.join(", ");
    let fail = |what: String| {
        Error::new(
            exit::HANDSHAKE,
            format!(
                "{}: several names gave this address ({list}) and {what}: nothing was sent; \
                 set AUTOSSL_SNI=NAME, or AUTOSSL_NAMES=\"NAME=ADDRESS:PORT\"",
                dest()
            ),
        )
    };
    stls::nonblocking(&[0])?;
    let mut buf = vec![0u8; http_host::MAX_HEAD];
    let mut got = 0;
    let head = loop {
        match http_host::head(&buf[..got]) {
            Head::Incomplete if got < buf.len() => {}
            h => break h,
        }
        match fd::read(0, &mut buf[got..]) {
            Ok(0) => {
                return Err(fail(
                    "the program closed the connection before it named one".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if fd::would_block(&e) => {
                let t = fd::poll_timeout(deadline);
                if t == 0 {
                    return Err(fail(
                        "the program sent no request that names one in time (AUTOSSL_TIMEOUT)"
                            .into(),
                    ));
                }
                let mut p = [libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                }];
                let _ = fd::poll(&mut p, t);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::sys("unable to read the clear side", e)),
        }
    };
    buf.truncate(got);
    let host = match head {
        Head::Host(Some(h)) if names.contains(&h) => h,
        Head::Host(Some(h)) => {
            return Err(fail(format!(
                "the request names host {h}, which is not one of them"
            )))
        }
        Head::Host(None) => return Err(fail("the request names no host name".into())),
        Head::NotHttp => {
            return Err(fail(
                "the program's first bytes are not an HTTP/1.x request that names one".into(),
            ))
        }
        Head::Incomplete => return Err(fail("the request's head did not end".into())),
        Head::Bad(why) => return Err(fail(format!("the request has {why}"))),
    };
    let mut o = opts.clone();
    o.servername = Some(host);
    Ok((Peer::named(&o, None)?, buf))
}

/// `IP port P` of the network's peer, for messages.
fn destination(net: RawFd) -> String {
    match stls::net::peer_addr(net) {
        Some(a) => format!("{} port {}", a.ip(), a.port()),
        None => "the server".into(),
    }
}

/// Delayed TLS: the selfpipe, prog (the operands) started at once with the network on its
/// fds `-6`/`-7` and the UCSPI-TLS descriptors, and the control socket's end to wait on.
/// The secrets leave prog's environment unless `-Z`; the notification fd is not prog's.
pub fn launch_delayed(
    name: &'static str,
    opts: &Options,
) -> Result<(Selfpipe, Launcher, RawFd), Error> {
    let selfpipe = Selfpipe::install()?;
    let close: Vec<RawFd> = [Some(selfpipe.rfd), opts.notification_fd]
        .into_iter()
        .flatten()
        .collect();
    let (launcher, ctl) = Launcher::spawn_ucspi(
        name,
        &opts.operands,
        &close,
        &child::Credentials::default(),
        !opts.keep_env,
    )?;
    Ok((selfpipe, launcher, ctl))
}

/// Delayed TLS, after [`launch_delayed`]: prog's command, then the handshake on `net` (its
/// timeout counted from the command) and the relay, or prog's own exit when it declines
/// TLS. A failed handshake ends the connection and returns its error once prog is reaped.
pub fn serve_delayed(
    log: Log,
    opts: &Options,
    env: &Env,
    ctx: &SslContext,
    peer: &Peer,
    net: (RawFd, RawFd),
    (selfpipe, launcher, ctl): (Selfpipe, Launcher, RawFd),
) -> Result<i32, Error> {
    let up = ucspi::upgrade(ctl, launcher, net, |l| {
        handshake(
            log,
            opts,
            env,
            ctx,
            peer,
            net,
            (l.from_app, l.to_app),
            Some(l.pid),
        )
    })?;
    Ok(match up {
        ucspi::Upgrade::Declined(code) => code,
        ucspi::Upgrade::Started(tls, launcher, desc) => {
            let fds = Fds {
                clear_in: launcher.from_app,
                clear_out: launcher.to_app,
                cipher_in: net.0,
                cipher_out: net.1,
                selfpipe: selfpipe.rfd,
            };
            relay(log, opts, tls, desc, Some(launcher), fds)
        }
    })
}

/// Steps 3 to 8 of tlsc's story, once the context is built: the name, the network fds
/// (awaiting a pending connect), the session. The helper that autossl-shim starts once
/// runs this for each connection it is handed.
pub fn connected(
    log: Log,
    opts: &Options,
    form: &Form,
    env: &Env,
    ctx: &SslContext,
) -> Result<i32, Error> {
    if opts.host_from_request.is_some() && *form == Form::Prog {
        return Err(Error::usage(
            "--host-from-request reads the first request on fd 0: the io form only",
        ));
    }
    let peer = match opts.host_from_request {
        None => Some(peer_name(opts, form, env)?),
        Some(_) => None,
    };
    let (rfd, wfd) = network(opts, form)?;
    if opts.pending_connect {
        await_connect(rfd, opts.deadline())?;
    }
    let net = Network {
        rfd,
        wfd,
        prog: *form == Form::Prog,
    };
    if let Some(peer) = &peer {
        return session(log, opts, env, ctx, peer, net);
    }
    let names = opts.host_from_request.as_deref().unwrap_or_default();
    let (peer, first) = name_from_request(opts, names, rfd)?;
    // The filler is gone and -d was written: the session does neither again.
    let mut rest = opts.clone();
    rest.discard = 0;
    rest.notification_fd = None;
    rest.log_fd = None;
    session_sending(log, &rest, env, ctx, &peer, net, &first)
}

/// `-k`, else the address connected to, else TCPREMOTEIP.
fn peer_name(opts: &Options, form: &Form, env: &Env) -> Result<Peer, Error> {
    let name = match form {
        Form::Connect(sa) => Some(sa.ip().to_string()),
        _ => env.tcpremoteip.clone(),
    };
    Peer::named(opts, name)
}

/// The network's read and write fds: connected now, or the ones the form names.
fn network(opts: &Options, form: &Form) -> Result<(RawFd, RawFd), Error> {
    if let Form::Connect(sa) = form {
        return connect(*sa, opts.handshake_timeout);
    }
    network_fds(opts).ok_or_else(|| no_network_fds(opts))
}

/// The fds the options name for the network, if both can carry it.
pub fn network_fds(opts: &Options) -> Option<(RawFd, RawFd)> {
    let (r, w) = (opts.read_fd, opts.write_fd);
    (fd::is_network(r) && fd::is_network(w)).then_some((r, w))
}

pub fn no_network_fds(opts: &Options) -> Error {
    let (r, w) = (opts.read_fd, opts.write_fd);
    Error::new(
        exit::SYSTEM,
        format!("the network must be on fd {r} and fd {w}, and they are closed or /dev/null"),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_ip;
    use std::net::IpAddr;

    #[test]
    fn ip_forms() {
        let v4: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(parse_ip("127.0.0.1"), Some((v4, 0)));
        assert_eq!(parse_ip("::ffff:127.0.0.1"), Some((v4, 0)));
        assert_eq!(parse_ip("[::1]").map(|x| x.0), "::1".parse().ok());
        assert_eq!(parse_ip("fe80::1%7").map(|x| x.1), Some(7));
        assert_eq!(parse_ip("127.0.0.1%1"), None);
        assert_eq!(parse_ip("localhost"), None);
    }

    #[test]
    fn connect_form_problems() {
        use super::connect_form_problem as p;
        let ops = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(p(&ops(&["a.test", "443"])).is_some_and(|m| m.contains("numeric IP address")));
        assert!(p(&ops(&["127.0.0.1", "44x3"])).is_some_and(|m| m.contains("1 to 65535")));
        assert!(p(&ops(&["127.0.0.1", "0"])).is_some_and(|m| m.contains("1 to 65535")));
        assert!(p(&ops(&["127.0.0.1", "443", "x"])).is_some_and(|m| m.contains("exactly two")));
        assert_eq!(p(&ops(&["cat"])), None);
        assert_eq!(p(&ops(&["sh", "-c"])), None);
    }
}
