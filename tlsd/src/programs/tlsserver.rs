//! tlsserver: listen, accept, and run tlsd's session for every connection, in a fork of
//! the server that inherits the context built once at start. The interface is tlsserver(1).
//!
//! The story:
//! 1. the command line, the app's credentials, prog checked, the environment;
//! 2. the context built from CERTFILE/KEYFILE, the SNI pairs, the client CA and the ticket
//!    keys: a configuration error ends the server here, before it listens;
//! 3. the listening socket: bound now (a privileged port before anything is dropped), or
//!    fd 3 under socket activation;
//! 4. the loop: signals (SIGTERM/SIGINT end it, SIGHUP reloads the certificates, SIGCHLD
//!    reaps), the certificate and ticket key files checked once a second, and connections
//!    accepted into a bounded pool where they wait, without a process, for their first
//!    byte; a connection that has spoken gets a process, up to `-c` (and `-C` per
//!    address), newest first from the addresses with the fewest unproven connections,
//!    room being made by ending the connections longest in their handshake (past a
//!    grace, at a bounded rate), never an established session; the accepting process
//!    never reads from a client;
//! 5. each connection's process: the socket on fd 0/1, the TCP variables, then tlsd's
//!    session (launcher, engine privilege drop, PROXY protocol header with `-L`,
//!    handshake, prog, engine), or with `-n` ucspitlsd's (the header, prog at once, its
//!    command, the handshake, the engine).

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, IntoRawFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use stls::child::{self, Credentials, Selfpipe};
use stls::cli;
use stls::context::{self, Server, ServerSettings};
use stls::env::Env;
use stls::exit::{self, Error};
use stls::log::{self, Log};
use stls::options::Options;
use stls::pages::SharedFlags;
use stls::process::{self, Forked, Nofile};
use stls::{fd, net};

/// How often the certificate files are checked for a replacement.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The most connections that wait for their first byte at once. A silent connection
/// costs the server one fd and the kernel a few kilobytes, no process: 4096 is the
/// kernel's default listen queue again, so that a flood the queue held is held here too.
const POOL_MAX: usize = 4096;

/// fds kept for the server's own use besides the pool (the listener, the selfpipe, the
/// certificate files at a reload, the next accept).
const FD_RESERVE: u64 = 64;

/// Connections accepted per turn of the loop: a flood of new connections must not starve
/// the ones that have spoken, nor the signals.
const ACCEPT_BATCH: usize = 256;

/// How often, at most, the limits' line is said.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The least time a connection's process has for its handshake before it may be ended to
/// make room: a real client's round trip on a nearby network, under a flood that competes
/// with it for the CPU, fits in it; and it is all a connection that has spoken waits for
/// a process when every process has just started (the flood's first moments).
const HANDSHAKE_GRACE: Duration = Duration::from_millis(100);

/// At most `-c` connections in their handshake are ended per this time, one at a time: a
/// flood then costs at most `-c` handshakes' CPU per half second, each process it starts
/// lives about this long (a farther client's round trip), and a connection that has
/// spoken finds one that may be ended every half second divided by `-c`.
const ENDS_PER: Duration = Duration::from_millis(500);

/// How long a connection ended to make room counts against its address's next ones: longer
/// than a flood takes to connect again, short enough that a real client behind the same
/// address is soon first in line again. At most `-c` per [`ENDS_PER`] are kept (800 with
/// `-c 40`).
const ENDED_COUNTS: Duration = Duration::from_secs(10);

/// tlsserver, on this process's command line and environment; exits with its status.
pub fn main() -> ! {
    log::exit_with(crate::TLSSERVER.name, tlsserver())
}

fn tlsserver() -> Result<i32, Error> {
    let Some(opts) = cli::parse_args(&crate::TLSSERVER)? else {
        return Ok(0);
    };
    let log = Log::new(&crate::TLSSERVER, &opts);
    standard_fds_open();
    let activated = socket_activation()?;
    let (addr, prog) = operands(&opts, activated.is_some())?;
    let creds = app_credentials(&opts)?;
    child::find_program(&prog[0])?;
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    // Every pair read at start and at each reload (the context is built once): a missing
    // file is reported then, not at the first client that names it.
    let settings = ServerSettings {
        sni_preload: true,
        ..crate::settings(&opts, log)
    };
    let mut certs = Certs::load(&settings, &env)?;
    process::warm_up(&certs.server.ctx);
    // Nothing of that handshake may show in a connection's error report.
    if let Ok(mut e) = certs.server.sni_error.lock() {
        *e = None;
    }

    let listener = match (activated, addr) {
        (Some(l), _) => l,
        (None, Some(sa)) => listen(sa, opts.backlog)?,
        (None, None) => return Err(Error::usage("no address to listen on")),
    };
    if let Ok(a) = listener.local_addr() {
        log.info(&format!("listening on {a}"));
    }
    let signals = Selfpipe::catching(&CAUGHT)?;
    let nofile = Nofile::raise();
    let pool_max = pool_max(&nofile);
    let per_ip = match opts.maxconn_per_ip {
        None => Some(opts.maxconn.div_ceil(2)),
        Some(0) => None,
        Some(n) => Some(n),
    };
    let mut conns = Conns::new(opts.maxconn as usize)?;
    let mut pool: VecDeque<Waiting> = VecDeque::new();
    let mut room = Room::default();
    let mut ends = Ends::new(opts.maxconn);
    // When a connection that has spoken, left waiting by a limit, may get a process.
    let mut retry: Option<Instant> = None;
    let session = Session {
        opts: &opts,
        env: &env,
        log,
        prog: &prog,
        creds: &creds,
    };
    loop {
        let mut pfd = Vec::with_capacity(2 + pool.len());
        pfd.push(pollfd(signals.rfd));
        pfd.push(pollfd(listener.as_raw_fd()));
        // A connection that has spoken waits for a process, not for more bytes: poll(2)
        // skips it (a negative fd), so that it does not wake the loop again and again.
        pfd.extend(
            pool.iter()
                .map(|w| pollfd_waiting(if w.ready { -1 } else { w.fd() })),
        );
        let timeout = next_expiry(&pool, opts.handshake_timeout, retry);
        fd::poll(&mut pfd, timeout).map_err(|e| Error::sys("unable to poll", e))?;
        for sig in signals.drain() {
            match sig {
                libc::SIGTERM | libc::SIGINT => {
                    log.info("stopping: open sessions finish on their own");
                    return Ok(0);
                }
                libc::SIGHUP => certs.reload(&settings, &env, log, true),
                _ => {}
            }
        }
        conns.reap(log);
        if certs.checked.elapsed() >= CHECK_EVERY {
            certs.reload(&settings, &env, log, false);
        }
        let mut gone = false;
        for (w, p) in pool.iter_mut().zip(&pfd[2..]) {
            if p.revents & (libc::POLLHUP | libc::POLLERR) != 0
                || (p.revents & libc::POLLRDHUP != 0 && fd::pending(w.fd()) == 0)
            {
                // Gone before it said anything: nothing to serve, no process to spend.
                w.gone = true;
                gone = true;
            } else if p.revents != 0 {
                w.ready = true;
            }
        }
        if gone {
            pool.retain(|w| !w.gone);
        }
        expire(&mut pool, opts.handshake_timeout);
        if pfd[1].revents != 0 {
            accept_some(&listener, &mut pool, pool_max, &opts, log, &mut room);
        }
        let spawn = Spawn {
            s: &session,
            server: &certs.server,
            signals: &signals,
            listener: &listener,
            nofile: &nofile,
        };
        retry = start_ready(&mut pool, &mut conns, &spawn, per_ip, &mut room, &mut ends);
        room.report(log, opts.maxconn, per_ip, pool_max, &pool);
    }
}

/// What a connection's process needs from the server.
struct Session<'a> {
    opts: &'a Options,
    env: &'a Env,
    log: Log,
    prog: &'a [OsString],
    creds: &'a Credentials,
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// A waiting connection's pollfd: readable, or closed by its peer.
fn pollfd_waiting(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    }
}

/// fd 0, 1 and 2 open (on /dev/null when they were closed), so that no socket ever lands
/// on them and gets clobbered when a connection is moved there.
fn standard_fds_open() {
    for n in 0..=2 {
        if !fd::is_open(n) {
            if let Ok(f) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                let f = f.into_raw_fd();
                if f != n {
                    let _ = fd::dup2(f, n);
                    fd::close(f);
                }
            }
        }
    }
}

/// systemd's protocol: `LISTEN_PID` is this process and `LISTEN_FDS=1`: the listening
/// socket is fd 3. The variables are removed so that prog does not take them as its own.
fn socket_activation() -> Result<Option<TcpListener>, Error> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    if !ours {
        return Ok(None);
    }
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    if fds.as_deref() != Some("1") {
        return Err(Error::usage(format!(
            "LISTEN_FDS={}: tlsserver takes exactly one listening socket",
            fds.unwrap_or_default()
        )));
    }
    if !fd::is_socket(3) {
        return Err(Error::new(
            exit::SYSTEM,
            "LISTEN_FDS=1 but fd 3 is not a socket",
        ));
    }
    let _ = fd::set_cloexec(3, true);
    // fd 3 is the listening socket systemd passed; nothing else in the process owns it.
    let Some(l) = net::take_listener(3) else {
        return Err(Error::usage(
            "LISTEN_FDS=1 but fd 3 is not a TCP socket (use ListenStream= with an address)",
        ));
    };
    l.set_nonblocking(true)
        .map_err(|e| Error::sys("unable to set O_NONBLOCK on fd 3", e))?;
    Ok(Some(l))
}

/// `ADDR PORT prog...`; under socket activation ADDR PORT may be left out (and are ignored
/// when given: the socket is fd 3).
fn operands(opts: &Options, activated: bool) -> Result<(Option<SocketAddr>, Vec<OsString>), Error> {
    let ops = &opts.operands;
    let usage = "usage: tlsserver [options] [--] ADDR PORT prog...";
    let addr = match (ops.first(), ops.get(1)) {
        (Some(a), Some(p)) => match (parse_addr(a), p.to_str().and_then(|p| p.parse().ok())) {
            (Some(ip), Some(port)) => Some(SocketAddr::new(ip, port)),
            (Some(_), None) if !activated => {
                return Err(Error::usage(format!(
                    "invalid port: {} (give a number from 0 to 65535)",
                    p.to_string_lossy()
                )))
            }
            _ => None,
        },
        _ => None,
    };
    let prog = match (addr, activated) {
        (Some(_), _) => ops[2..].to_vec(),
        (None, true) => ops.clone(),
        (None, false) => {
            let what = match ops.first() {
                Some(a) => format!("invalid address: {} ({usage})", a.to_string_lossy()),
                None => format!("no address to listen on ({usage})"),
            };
            return Err(Error::usage(what));
        }
    };
    if prog.is_empty() {
        return Err(Error::usage(format!("no program to run ({usage})")));
    }
    Ok((addr, prog))
}

/// An IPv4 or IPv6 address, the latter with or without brackets.
fn parse_addr(s: &OsStr) -> Option<IpAddr> {
    let s = s.to_str()?;
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

/// The app's ids: `-U` reads UID, GID and GIDLIST; `-u` and `-g` win over them.
fn app_credentials(opts: &Options) -> Result<Credentials, Error> {
    let mut c = Credentials::default();
    if opts.app_ids_from_env {
        let id = |k: &str| -> Result<u32, Error> {
            let v = std::env::var(k).map_err(|_| Error::usage(format!("-U: {k} is not set")))?;
            v.parse()
                .map_err(|_| Error::usage(format!("-U: {k} must be a number: {v}")))
        };
        c.uid = Some(id("UID")?);
        c.gid = Some(id("GID")?);
        if let Ok(list) = std::env::var("GIDLIST") {
            let groups: Result<Vec<u32>, _> = list
                .split(',')
                .filter(|g| !g.is_empty())
                .map(str::parse)
                .collect();
            c.groups = Some(groups.map_err(|_| {
                Error::usage(format!(
                    "-U: GIDLIST must be numbers separated by commas: {list}"
                ))
            })?);
        }
    }
    if let Some(u) = opts.app_uid {
        c.uid = Some(u);
    }
    if let Some(g) = opts.app_gid {
        c.gid = Some(g);
        c.groups = None;
    }
    Ok(c)
}

/// A socket listening on `sa` (see [`net::listen`]).
fn listen(sa: SocketAddr, backlog: Option<i32>) -> Result<TcpListener, Error> {
    net::listen(sa, backlog).map_err(|(what, e)| Error::sys(&format!("unable to {what} {sa}"), e))
}

/// The signals the server acts on, caught into its selfpipe.
const CAUGHT: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];

/// How many connections may wait for their first byte: [`POOL_MAX`], less when the fd
/// limit is lower.
fn pool_max(nofile: &Nofile) -> usize {
    let fds = nofile.now.saturating_sub(FD_RESERVE).max(1);
    usize::try_from(fds).map_or(POOL_MAX, |n| n.min(POOL_MAX))
}

/// A connection accepted that has no process yet: it waits for its first byte (a
/// ClientHello, a PROXY protocol header), which costs the server one fd and no process.
struct Waiting {
    conn: TcpStream,
    remote: SocketAddr,
    since: Instant,
    /// It has spoken: it waits for a process.
    ready: bool,
    /// It closed without a word: to be dropped.
    gone: bool,
}

impl Waiting {
    fn fd(&self) -> RawFd {
        self.conn.as_raw_fd()
    }
}

/// The poll timeout: a second, or less when a waiting connection's time runs out sooner,
/// or when one that has spoken may get a process (`retry`).
fn next_expiry(
    pool: &VecDeque<Waiting>,
    k: Option<Duration>,
    retry: Option<Instant>,
) -> libc::c_int {
    let ms = |d: Duration| libc::c_int::try_from(d.as_millis() + 1).unwrap_or(1000);
    let mut t = 1000;
    // The pool is in accept order: the first one is the first to expire.
    if let (Some(k), Some(first)) = (k, pool.front()) {
        t = t.min(ms(k.saturating_sub(first.since.elapsed())));
    }
    if let Some(r) = retry {
        t = t.min(ms(r.saturating_duration_since(Instant::now())));
    }
    t
}

/// Close the waiting connections whose handshake time (`-K`, counted from the accept)
/// has run out before they got a process.
fn expire(pool: &mut VecDeque<Waiting>, k: Option<Duration>) {
    let Some(k) = k else {
        return;
    };
    while pool.front().is_some_and(|w| w.since.elapsed() >= k) {
        pool.pop_front();
    }
}

/// A connection's process, as the server knows it.
struct Proc {
    ip: IpAddr,
    slot: usize,
    /// When it was forked: the one longest in its handshake is ended first, and none
    /// before [`HANDSHAKE_GRACE`] from then.
    forked: Instant,
}

/// The connection to end to make room: the one longest in its handshake, when its grace
/// has run out, or when it does.
enum Victim {
    Now(libc::pid_t),
    At(Instant),
    /// Every process is an established session.
    None,
}

/// The connections' processes: where they come from, their slots, whether their
/// handshake is done.
struct Conns {
    by_pid: HashMap<libc::pid_t, Proc>,
    by_ip: HashMap<IpAddr, u32>,
    free: Vec<usize>,
    /// One byte per process slot, shared with the connections' processes: a connection's
    /// process sets its byte once its handshake is done, so the server knows which
    /// connections have proven nothing yet without reading from any of them.
    flags: SharedFlags,
    /// The connections ended to make room in the last [`ENDED_COUNTS`], oldest first.
    ended: VecDeque<(Instant, IpAddr)>,
}

impl Conns {
    fn new(maxconn: usize) -> Result<Conns, Error> {
        Ok(Conns {
            by_pid: HashMap::new(),
            by_ip: HashMap::new(),
            ended: VecDeque::new(),
            free: (0..maxconn).rev().collect(),
            flags: SharedFlags::new(maxconn)
                .map_err(|e| Error::sys("unable to map the connections' flags", e))?,
        })
    }

    fn total(&self) -> usize {
        self.by_pid.len()
    }

    fn from(&self, ip: &IpAddr) -> u32 {
        self.by_ip.get(ip).copied().unwrap_or(0)
    }

    fn add(&mut self, pid: libc::pid_t, p: Proc) {
        *self.by_ip.entry(p.ip).or_insert(0) += 1;
        self.by_pid.insert(pid, p);
    }

    fn remove(&mut self, pid: libc::pid_t) -> Option<Proc> {
        let p = self.by_pid.remove(&pid)?;
        if let Some(n) = self.by_ip.get_mut(&p.ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&p.ip);
            }
        }
        self.free.push(p.slot);
        Some(p)
    }

    fn in_handshake(&self, p: &Proc) -> bool {
        self.flags.slot(p.slot).load(Ordering::Acquire) == 0
    }

    /// The process longest in its handshake, from `ip` only when given, if its grace has
    /// run out; an established session is never one.
    fn longest_in_handshake(&self, ip: Option<IpAddr>) -> Victim {
        let oldest = self
            .by_pid
            .iter()
            .filter(|(_, p)| ip.is_none_or(|ip| p.ip == ip) && self.in_handshake(p))
            .min_by_key(|(_, p)| p.forked);
        match oldest {
            None => Victim::None,
            Some((&pid, p)) if p.forked.elapsed() >= HANDSHAKE_GRACE => Victim::Now(pid),
            Some((_, p)) => Victim::At(p.forked + HANDSHAKE_GRACE),
        }
    }

    /// How many connections from each address have proven nothing: processes in their
    /// handshake, connections waiting in `pool`, and those ended to make room lately (a
    /// flood's, which come back at once).
    fn unproven(&mut self, pool: &VecDeque<Waiting>) -> HashMap<IpAddr, u32> {
        while self
            .ended
            .front()
            .is_some_and(|(t, _)| t.elapsed() >= ENDED_COUNTS)
        {
            self.ended.pop_front();
        }
        let mut n: HashMap<IpAddr, u32> = HashMap::new();
        for (_, ip) in &self.ended {
            *n.entry(*ip).or_insert(0) += 1;
        }
        for p in self.by_pid.values().filter(|p| self.in_handshake(p)) {
            *n.entry(p.ip).or_insert(0) += 1;
        }
        for w in pool {
            *n.entry(unmapped(w.remote.ip())).or_insert(0) += 1;
        }
        n
    }

    /// End a connection still in its handshake to make room: SIGKILL (it has no prog
    /// yet, nothing to flush), then reaped at once so that the processes never exceed the
    /// limit. A killed process exits without running any code of its own, so this wait
    /// is the kernel's teardown, never a client's pace.
    fn evict(&mut self, pid: libc::pid_t) {
        process::kill_and_reap(pid);
        if let Some(p) = self.remove(pid) {
            self.ended.push_back((Instant::now(), p.ip));
        }
    }

    /// Reap every finished child (the connections' processes), logging their status.
    fn reap(&mut self, log: Log) {
        while let Some((pid, st)) = process::reap_any() {
            let Some(p) = self.remove(pid) else {
                continue;
            };
            log.info(&format!(
                "end pid {pid} from {} exit {} ({} open)",
                p.ip,
                exit::from_wait_status(st),
                self.by_pid.len()
            ));
        }
    }
}

/// What was closed to make room since the last report, said at verbosity 1 at most once
/// a second.
#[derive(Default)]
struct Room {
    /// Connections' processes ended in their handshake.
    evicted: u64,
    /// Waiting connections closed because the pool was full.
    silent: u64,
    /// New connections closed by `-C`, every connection from their address established.
    refused: u64,
    last_refused: Option<IpAddr>,
    said: Option<Instant>,
}

impl Room {
    fn report(
        &mut self,
        log: Log,
        maxconn: u32,
        per_ip: Option<u32>,
        pool_max: usize,
        pool: &VecDeque<Waiting>,
    ) {
        if self.evicted + self.silent + self.refused == 0
            || self.said.is_some_and(|t| t.elapsed() < REPORT_EVERY)
        {
            return;
        }
        if let (Some(ip), Some(m)) = (self.last_refused, per_ip) {
            let more = match self.refused {
                0 | 1 => String::new(),
                n => format!(" ({} more from the busiest addresses)", n - 1),
            };
            log.warn(&format!(
                "connection from {ip} closed: {m} connections from it already (-C){more}"
            ));
        }
        if self.evicted + self.silent > 0 {
            let c = per_ip.map_or(String::from("-C 0"), |m| format!("-C {m}"));
            log.warn(&format!(
                "limit reached (-c {maxconn}, {c}): {} connections in their handshake and {} \
                 silent ones (of at most {pool_max} waiting) closed to make room, {} that \
                 have spoken waiting for a process",
                self.evicted,
                self.silent,
                pool.iter().filter(|w| w.ready).count()
            ));
        }
        *self = Room {
            said: Some(Instant::now()),
            ..Room::default()
        };
    }
}

/// Accept what is waiting into the pool, the oldest waiting connection closed when the
/// pool is full: a connection that has not spoken has proven nothing.
fn accept_some(
    listener: &TcpListener,
    pool: &mut VecDeque<Waiting>,
    pool_max: usize,
    opts: &Options,
    log: Log,
    room: &mut Room,
) {
    for _ in 0..ACCEPT_BATCH {
        let (conn, remote) = match listener.accept() {
            Ok(c) => c,
            Err(e) if fd::would_block(&e) => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of fds or memory: say so, and give the system a moment.
                log.warn(&format!("unable to accept: {}", exit::io_text(&e)));
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        };
        if pool.len() >= pool_max && pool.pop_front().is_some() {
            room.silent += 1;
        }
        pool.push_back(Waiting {
            conn,
            remote,
            since: Instant::now(),
            // With -n prog speaks first: the client waits for it, so there is no first
            // byte to wait for.
            ready: opts.delayed,
            gone: false,
        });
    }
}

/// What starting a connection's process needs.
struct Spawn<'a> {
    s: &'a Session<'a>,
    server: &'a Server,
    signals: &'a Selfpipe,
    listener: &'a TcpListener,
    nofile: &'a Nofile,
}

/// How many connections in their handshake may be ended to make room: `-c` per
/// [`ENDS_PER`], one at a time, so that the processes started in a burst are ended one
/// after the other rather than all at once.
struct Ends {
    credit: f64,
    at: Instant,
    per_sec: f64,
}

impl Ends {
    fn new(maxconn: u32) -> Ends {
        Ends {
            credit: 1.0,
            at: Instant::now(),
            per_sec: f64::from(maxconn.max(1)) / ENDS_PER.as_secs_f64(),
        }
    }

    /// One end allowed now, or when the next one is.
    fn take(&mut self) -> Result<(), Instant> {
        let now = Instant::now();
        self.credit =
            (self.credit + now.duration_since(self.at).as_secs_f64() * self.per_sec).min(1.0);
        self.at = now;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            return Ok(());
        }
        Err(now + Duration::from_secs_f64((1.0 - self.credit) / self.per_sec))
    }
}

/// Give a process to the waiting connections that have spoken, within `-c` and `-C`: the
/// ones from the addresses with the fewest connections that have proven nothing first
/// (one address, or a few, cannot keep the others out), and among those the newest first
/// (a standing queue of ClientHellos does not delay the one that has just come). At a
/// limit, the connection longest in its handshake past its grace (from the same address
/// for `-C`) is ended to make room, within [`Ends`]; when every one is an established
/// session, the waiting connection waits (`-c`) or is closed (`-C`). Returns when one left
/// waiting may get a process, if that is a matter of time.
fn start_ready(
    pool: &mut VecDeque<Waiting>,
    conns: &mut Conns,
    sp: &Spawn,
    per_ip: Option<u32>,
    room: &mut Room,
    ends: &mut Ends,
) -> Option<Instant> {
    let maxconn = sp.s.opts.maxconn as usize;
    if !pool.iter().any(|w| w.ready) {
        return None;
    }
    let unproven = conns.unproven(pool);
    let mut order: Vec<usize> = (0..pool.len()).filter(|&i| pool[i].ready).collect();
    // The pool is in accept order: the later index, the newer.
    order.sort_by_key(|&i| {
        let n = unproven.get(&unmapped(pool[i].remote.ip())).copied();
        (n.unwrap_or(0), std::cmp::Reverse(i))
    });
    let mut retry: Option<Instant> = None;
    let mut later = |at: Instant| retry = Some(retry.map_or(at, |r| r.min(at)));
    let mut taken = vec![false; pool.len()];
    for i in order {
        let ip = unmapped(pool[i].remote.ip());
        if per_ip.is_some_and(|m| conns.from(&ip) >= m) {
            match make_room(conns, ends, room, Some(ip)) {
                Made::Room => {}
                Made::Later(at) => {
                    later(at);
                    continue;
                }
                Made::None => {
                    taken[i] = true;
                    room.refused += 1;
                    room.last_refused = Some(ip);
                    continue;
                }
            }
        }
        if conns.total() >= maxconn {
            match make_room(conns, ends, room, None) {
                Made::Room => {}
                Made::Later(at) => {
                    later(at);
                    break;
                }
                // Every process is an established session: the rest wait for one to end.
                Made::None => break,
            }
        }
        taken[i] = true;
        spawn(i, pool, conns, sp);
    }
    let mut k = 0;
    pool.retain(|_| {
        k += 1;
        !taken[k - 1]
    });
    retry
}

/// What [`make_room`] could do.
enum Made {
    /// A connection in its handshake was ended.
    Room,
    /// One may be ended at this time (its grace, or [`Ends`], runs out then).
    Later(Instant),
    /// Every process (from `ip`, if given) is an established session.
    None,
}

/// End the connection longest in its handshake (from `ip` only, when given), if its grace
/// is over and [`Ends`] allows one more now.
fn make_room(conns: &mut Conns, ends: &mut Ends, room: &mut Room, ip: Option<IpAddr>) -> Made {
    match conns.longest_in_handshake(ip) {
        Victim::Now(pid) => match ends.take() {
            Ok(()) => {
                conns.evict(pid);
                room.evicted += 1;
                Made::Room
            }
            Err(at) => Made::Later(at),
        },
        Victim::At(at) => Made::Later(at),
        Victim::None => Made::None,
    }
}

/// Fork a connection's process for the waiting connection `i`, which the caller then
/// closes in the server.
fn spawn(i: usize, pool: &mut VecDeque<Waiting>, conns: &mut Conns, sp: &Spawn) {
    let s = sp.s;
    let Some(slot) = conns.free.pop() else {
        return;
    };
    let w = &pool[i];
    let remote = w.remote;
    conns.flags.slot(slot).store(0, Ordering::Release);
    let remote_ip = unmapped(w.remote.ip());
    let from_ip = conns.from(&remote_ip) + 1;
    let local = w.conn.local_addr().ok();
    // -K counts from the accept: the wait for the first byte was part of it.
    let left = s.opts.handshake_timeout.map(|k| {
        k.saturating_sub(w.since.elapsed())
            .max(Duration::from_millis(1))
    });
    // The server is single-threaded: the child is a copy of it that runs only the
    // connection's session and leaves by exit.
    match process::fork() {
        Err(e) => {
            conns.free.push(slot);
            s.log
                .warn(&format!("unable to fork: {}", exit::io_text(&e)));
        }
        Ok(Forked::Child) => {
            sp.signals.forget();
            // The listener and the other waiting connections are the server's: this
            // process must not keep them open.
            fd::close(sp.listener.as_raw_fd());
            let Some(w) = pool.remove(i) else {
                process::exit_now(exit::SYSTEM)
            };
            for o in pool.iter() {
                fd::close(o.fd());
            }
            sp.nofile.restore();
            log::one_connection_of_many(s.opts.verbosity);
            let mut opts = s.opts.clone();
            if opts.handshake_timeout.is_some() {
                opts.handshake_timeout = left;
            }
            let session = Session {
                opts: &opts,
                env: s.env,
                log: s.log,
                prog: s.prog,
                creds: s.creds,
            };
            let tcp = Tcp {
                local,
                remote: SocketAddr::new(remote_ip, remote.port()),
                connnum: from_ip,
            };
            let done = conns.flags.slot(slot);
            log::exit_with(
                crate::TLSSERVER.name,
                connection(&session, sp.server, w.conn, &tcp, done),
            )
        }
        Ok(Forked::Parent(pid)) => {
            conns.add(
                pid,
                Proc {
                    ip: remote_ip,
                    slot,
                    forked: Instant::now(),
                },
            );
            s.log.info(&format!(
                "pid {pid} from {remote_ip} port {} ({}/{})",
                remote.port(),
                conns.total(),
                s.opts.maxconn
            ));
        }
    }
}

/// A v4-mapped IPv6 address (a connection to `::` over IPv4) as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Where a connection is between, as prog sees it in its environment.
struct Tcp {
    local: Option<SocketAddr>,
    remote: SocketAddr,
    connnum: u32,
}

/// A connection's process: the socket on fd 0/1, the TCP variables, then tlsd's session,
/// or with `-n` ucspitlsd's. A PROXY protocol header (`-L`) is read in the session (with
/// `-n`, before prog starts), and its addresses replace the socket's in prog's environment.
///
/// `done` is this connection's byte shared with the server: set once the handshake is
/// done (with `-n`, at once: prog runs from the start, as under tcpserver), after which the
/// server never ends this connection to make room.
fn connection(
    s: &Session,
    server: &Server,
    conn: TcpStream,
    tcp: &Tcp,
    done: &AtomicU8,
) -> Result<i32, Error> {
    let c = conn.into_raw_fd();
    for n in [0, 1] {
        fd::dup2(c, n).map_err(|e| Error::sys("unable to move the connection to fd 0/1", e))?;
    }
    if c > 1 {
        fd::close(c);
    }
    set_tcp_env(tcp);
    if s.opts.delayed {
        done.store(1, Ordering::Release);
        crate::proxy_header_first(s.opts)?;
        let launched = crate::launch_delayed(crate::TLSSERVER.name, s.prog, s.opts, s.creds)?;
        return crate::serve_delayed(s.opts, s.env, s.log, server, launched);
    }
    // Without an engine drop, prog can be spawned after the handshake, from this process;
    // not from a confined one (prog would inherit its seccomp filter and no_new_privs):
    // with the sandbox, its launcher is made before, sharing this process's memory.
    let keeps_credentials = s.env.uid.is_none() && s.env.gid.is_none();
    let form = if keeps_credentials && s.opts.no_sandbox {
        crate::LaunchForm::Deferred
    } else if keeps_credentials {
        crate::LaunchForm::Shared
    } else {
        crate::LaunchForm::Fork
    };
    let launched = crate::launch(
        crate::TLSSERVER.name,
        s.prog,
        s.creds,
        !s.opts.keep_env,
        form,
    )?;
    crate::serve_then(s.opts, s.env, s.log, Ok(server), launched, || {
        done.store(1, Ordering::Release)
    })
}

/// `PROTO=TCP` and the addresses, as tcpserver and s6-tcpserver set them (no DNS: the
/// names' variables are removed).
fn set_tcp_env(tcp: &Tcp) {
    std::env::set_var("PROTO", "TCP");
    if let Some(l) = tcp.local {
        std::env::set_var("TCPLOCALIP", unmapped(l.ip()).to_string());
        std::env::set_var("TCPLOCALPORT", l.port().to_string());
    }
    std::env::set_var("TCPREMOTEIP", tcp.remote.ip().to_string());
    std::env::set_var("TCPREMOTEPORT", tcp.remote.port().to_string());
    std::env::set_var("TCPCONNNUM", tcp.connnum.to_string());
    for k in ["TCPLOCALHOST", "TCPREMOTEHOST", "TCPREMOTEINFO"] {
        std::env::remove_var(k);
    }
}

/// A file's identity and version: a replacement (rename over it) or a rewrite changes it.
type Stamp = Option<(u64, u64, i64, i64, i64, i64, u64)>;

fn stamp(path: &OsStr) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.size(),
    ))
}

/// The serving context and the files it was built from: the certificates and keys, and
/// the ticket key file.
struct Certs {
    server: Server,
    files: Vec<OsString>,
    stamps: Vec<Stamp>,
    /// The files' stamps when a reload failed once: tried again at the next check, since
    /// a check may fall between the renames of a certificate and its key.
    pending: Option<Vec<Stamp>>,
    /// The files' stamps when a reload failed twice and was reported: not tried again.
    failed: Option<Vec<Stamp>>,
    checked: Instant,
}

impl Certs {
    fn load(settings: &ServerSettings, env: &Env) -> Result<Certs, Error> {
        let mut files: Vec<OsString> = [&env.certfile, &env.keyfile]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for (_, c, k) in env.pairs.iter() {
            files.push(c.clone());
            files.push(k.clone());
        }
        // A rotated ticket key file is picked up as a renewed certificate is; a reload for
        // a certificate reads the same keys again, so tickets keep resuming across it.
        files.extend(env.tickets.keyfile.iter().cloned());
        let stamps = files.iter().map(|f| stamp(f)).collect();
        Ok(Certs {
            server: context::server(settings, env)?,
            files,
            stamps,
            pending: None,
            failed: None,
            checked: Instant::now(),
        })
    }

    /// Build a new context when the files changed (or at SIGHUP, `forced`); one that does
    /// not build leaves the old one serving, with one warning per version of the files
    /// (at its second failure, or at once at SIGHUP).
    fn reload(&mut self, settings: &ServerSettings, env: &Env, log: Log, forced: bool) {
        self.checked = Instant::now();
        let now: Vec<Stamp> = self.files.iter().map(|f| stamp(f)).collect();
        let changed = now != self.stamps;
        if !forced && (!changed || self.failed.as_ref() == Some(&now)) {
            return;
        }
        match context::server(settings, env) {
            Ok(server) => {
                self.server = server;
                self.stamps = now;
                self.pending = None;
                self.failed = None;
                log.info(if env.tickets.keyfile.is_some() {
                    "certificates and ticket keys reloaded"
                } else {
                    "certificates reloaded"
                });
            }
            Err(_) if !forced && self.pending.as_ref() != Some(&now) => self.pending = Some(now),
            Err(e) => {
                log.warn(&format!(
                    "unable to reload the certificates, the previous ones stay in use: {}",
                    e.msg
                ));
                self.pending = None;
                self.failed = Some(now);
            }
        }
    }
}
