//! The upgrade of one matching `connect()`, in steps that the two modes share:
//!
//! - native (`AUTOSSL_TLS_CMD` unset), a blocking socket: [`connect_tcp`], the real TCP
//!   connect on the caller's socket; [`start_helper`], tlsc's io form on it with `-d`;
//!   [`await_blocking`], the handshake's outcome on the `-d` pipe; [`swap`], the socketpair
//!   end in the place of the caller's descriptor;
//! - native, a non-blocking socket: [`pending_connect`], the real connect started, tlsc
//!   handed the connecting socket, the swap, EINPROGRESS; the program's own wait and
//!   SO_ERROR check complete it (see `pending`). With every entry of that table live, the
//!   blocking steps, the wait bounded by AUTOSSL_TIMEOUT;
//! - command (`AUTOSSL_TLS_CMD` set): [`start_helper`], `cmd IP PORT` (which connects by
//!   itself), then [`swap`].

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::net::IpAddr;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libc::{sockaddr, socklen_t};
use stls_desc::{Description, MAX_NOTIFICATION};

use crate::rules::{self, Config, Vars};
use crate::{names, pending, real, socks, spawn};

// ---------------------------------------------------------------------------------------
// Configuration and paths, once per process

/// What the library knows once per process.
pub struct State {
    /// The configuration from the environment.
    pub cfg: Config,
    /// Our own file (from dladdr), to take it out of the helper's LD_PRELOAD.
    pub lib: Option<CString>,
    /// tlsc beside the library, else on PATH.
    pub tlsc: Option<CString>,
}

static STATE: OnceLock<State> = OnceLock::new();

fn var(k: &str) -> Option<String> {
    std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
}

fn load() -> State {
    let v = Vars {
        ports: var("AUTOSSL_UPGRADE_PORTS"),
        port: var("AUTOSSL_UPGRADE_PORT"),
        ips: var("AUTOSSL_UPGRADE_IPS"),
        tls_cmd: var("AUTOSSL_TLS_CMD"),
        errno: var("AUTOSSL_ERRNO"),
        silent: std::env::var_os("AUTOSSL_SILENT").is_some(),
        sni: var("AUTOSSL_SNI"),
        timeout: var("AUTOSSL_TIMEOUT"),
        verbose: var("AUTOSSL_VERBOSE"),
        names: var("AUTOSSL_NAMES"),
        nested: std::env::var_os("AUTOSSL_NESTED").is_some(),
    };
    let cfg = Config::parse(&v);
    if let Some(why) = &cfg.broken {
        if !cfg.silent && !v.nested {
            let then = match cfg.errno {
                Some(e) => format!(
                    "every connection it could have meant fails with errno {e} (AUTOSSL_ERRNO)"
                ),
                None => "connections go out in clear text, not upgraded (set AUTOSSL_ERRNO to make them fail instead)".to_string(),
            };
            message(&format!("bad configuration: {why}; {then}"));
        }
    }
    let lib = own_path();
    let tlsc = if cfg.active() && cfg.tls_cmd.is_none() {
        find_tlsc(lib.as_deref())
    } else {
        None
    };
    State { cfg, lib, tlsc }
}

/// The configuration (parsed on first use; the constructor makes that first use).
pub fn state() -> &'static State {
    STATE.get_or_init(load)
}

fn own_path() -> Option<CString> {
    // SAFETY: Dl_info is plain data (pointers and integers): all zeros is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr fills the Dl_info it is given, for an address inside this object.
    let found = unsafe { libc::dladdr(own_path as *const libc::c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is the loader's NUL-terminated name of this object, which stays
    // loaded (and the name with it) while we copy it.
    Some(unsafe { CStr::from_ptr(info.dli_fname) }.to_owned())
}

fn executable(p: &[u8]) -> Option<CString> {
    let c = CString::new(p).ok()?;
    // SAFETY: access on a NUL-terminated path.
    (unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0).then_some(c)
}

fn find_tlsc(lib: Option<&CStr>) -> Option<CString> {
    if let Some(lib) = lib {
        let b = lib.to_bytes();
        if let Some(i) = b.iter().rposition(|&c| c == b'/') {
            let mut p = b[..=i].to_vec();
            p.extend_from_slice(b"tlsc");
            if let Some(c) = executable(&p) {
                return Some(c);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    use std::os::unix::ffi::OsStrExt;
    for dir in path.as_bytes().split(|&b| b == b':') {
        if dir.is_empty() {
            continue;
        }
        let mut p = dir.to_vec();
        p.extend_from_slice(b"/tlsc");
        if let Some(c) = executable(&p) {
            return Some(c);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Messages: one write(2) of a line to fd 2, no std locks

pub fn message(text: &str) {
    let mut line = String::with_capacity(text.len() + 10);
    line.push_str("autossl: ");
    line.push_str(text);
    line.push('\n');
    let b = line.as_bytes();
    // SAFETY: write reads b.len() bytes of our own buffer.
    unsafe {
        libc::write(2, b.as_ptr() as *const libc::c_void, b.len());
    }
}

fn say(cfg: &Config, text: &str) {
    if !cfg.silent {
        message(text);
    }
}

/// A one-time message (the helper is missing, ...).
fn say_once(flag: &AtomicBool, cfg: &Config, text: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        say(cfg, text);
    }
}

// ---------------------------------------------------------------------------------------
// Addresses

/// A destination taken from the caller's sockaddr.
#[derive(Clone, Copy)]
pub struct Target {
    /// The address as a table key (an IPv4-mapped address as its IPv4 form).
    pub key: u128,
    /// The port, in host order.
    pub port: u16,
}

impl Target {
    /// The address.
    pub fn ip(&self) -> IpAddr {
        rules::ip_of(self.key)
    }
}

/// Read an AF_INET/AF_INET6 destination, checking `len` against the family's size.
///
/// # Safety
/// `addr` is null or valid for reads of `len` bytes (the caller's promise to connect()).
pub unsafe fn target(addr: *const sockaddr, len: socklen_t) -> Option<Target> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: addr is valid for `len` bytes (our caller's promise), at least a family's.
    let family = c_int::from(unsafe { std::ptr::read_unaligned(addr) }.sa_family);
    match family {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: as above, and `len` covers a sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(addr as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(Target {
                key: rules::key_of(IpAddr::V4(ip)),
                port: u16::from_be(sin.sin_port),
            })
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, and `len` covers a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(addr as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            };
            Some(Target {
                key: rules::key_of(ip),
                port: u16::from_be(sin6.sin6_port),
            })
        }
        _ => None,
    }
}

/// The caller's destination argument to connect() (or sendto/sendmsg), for as long as
/// that call lasts (`'a`).
#[derive(Clone, Copy)]
pub struct Dest<'a> {
    addr: *const sockaddr,
    len: socklen_t,
    _call: PhantomData<&'a [u8]>,
}

impl<'a> Dest<'a> {
    /// # Safety
    /// `addr` is null or valid for reads of `len` bytes during `'a`: connect()'s contract,
    /// for the duration of the hook.
    pub unsafe fn new(addr: *const sockaddr, len: socklen_t) -> Dest<'a> {
        Dest {
            addr,
            len,
            _call: PhantomData,
        }
    }

    /// The destination, if it is AF_INET/AF_INET6 and `len` covers its family's size.
    pub fn target(&self) -> Option<Target> {
        // SAFETY: the promise made to Dest::new.
        unsafe { target(self.addr, self.len) }
    }

    /// What getpeername will answer: the address as given, at its family's own size (a
    /// caller may pass sizeof(struct sockaddr_storage)); empty when there is no family.
    fn peer(&self) -> &'a [u8] {
        if self.addr.is_null() || (self.len as usize) < std::mem::size_of::<libc::sa_family_t>() {
            return &[];
        }
        // SAFETY: the promise made to Dest::new, and `len` covers the family.
        let family = c_int::from(unsafe { std::ptr::read_unaligned(self.addr) }.sa_family);
        let size = if family == libc::AF_INET6 {
            std::mem::size_of::<libc::sockaddr_in6>()
        } else {
            std::mem::size_of::<libc::sockaddr_in>()
        };
        // SAFETY: the promise made to Dest::new; at most `len` bytes.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, size.min(self.len as usize)) }
    }
}

fn int_opt(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let get = real::getsockopt()?;
    let mut v: c_int = 0;
    let mut l = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: an int-sized option into an int, with its length.
    let r = unsafe {
        get(
            fd,
            level,
            name,
            &mut v as *mut c_int as *mut libc::c_void,
            &mut l,
        )
    };
    (r == 0).then_some(v)
}

/// Is `fd` a TCP (or MPTCP) stream socket of the Internet families?
pub fn is_tcp(fd: c_int) -> bool {
    matches!(
        int_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE),
        Some(libc::SOCK_STREAM)
    ) && matches!(
        int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN),
        Some(libc::AF_INET) | Some(libc::AF_INET6)
    ) && matches!(
        int_opt(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL),
        Some(libc::IPPROTO_TCP) | Some(libc::IPPROTO_MPTCP) | Some(0)
    )
}

/// Is `fd` one of our swapped sockets? (Only Unix sockets can be.)
pub fn is_ours(fd: c_int) -> bool {
    socks::any()
        && int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && socks::find(fd).is_some()
}

// ---------------------------------------------------------------------------------------
// System calls on descriptors

fn errno() -> c_int {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

fn millis(d: Duration) -> c_int {
    d.as_millis().min(i32::MAX as u128) as c_int
}

/// Wait for `events` on `fd` until `deadline`: Ok(revents), Err(ETIMEDOUT) or the errno.
fn poll_until(fd: c_int, events: i16, deadline: Instant) -> Result<i16, c_int> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(libc::ETIMEDOUT);
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one pollfd, ours.
        let r = unsafe { libc::poll(&mut p, 1, millis(deadline - now).max(1)) };
        if r > 0 {
            return Ok(p.revents);
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

fn set_fl(fd: c_int, fl: c_int) {
    // SAFETY: F_SETFL takes an int; on a bad fd it fails without harm.
    unsafe {
        libc::fcntl(fd, libc::F_SETFL, fl);
    }
}

fn sockaddr_bytes(fd: c_int, peer: bool) -> ([u8; 128], usize) {
    // SAFETY: sockaddr_storage is plain data: all zeros is a valid value.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut l = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let f = real::sockname(peer);
    let mut out = [0u8; 128];
    let Some(f) = f else {
        return (out, 0);
    };
    // SAFETY: a sockaddr_storage and its length.
    let r = unsafe { f(fd, &mut st as *mut _ as *mut sockaddr, &mut l) };
    if r != 0 {
        return (out, 0);
    }
    let n = (l as usize).min(128);
    // SAFETY: st is a 128-byte sockaddr_storage, initialised.
    let src = unsafe { std::slice::from_raw_parts(&st as *const _ as *const u8, 128) };
    out[..n].copy_from_slice(&src[..n]);
    (out, n)
}

/// What the descriptor carries besides being a socket: kept across the swap.
struct Carried {
    fd_flags: c_int,
    fl: c_int,
    owner: Option<[c_int; 2]>,
    sig: Option<c_int>,
    rcvtimeo: Option<libc::timeval>,
    sndtimeo: Option<libc::timeval>,
}

const F_SETSIG: c_int = 10;
const F_GETSIG: c_int = 11;
const F_SETOWN_EX: c_int = 15;
const F_GETOWN_EX: c_int = 16;

/// A socket's SO_RCVTIMEO or SO_SNDTIMEO, when set (non-zero).
fn timeo(fd: c_int, name: c_int) -> Option<libc::timeval> {
    let get = real::getsockopt()?;
    // SAFETY: timeval is plain data: all zeros is a valid value.
    let mut tv: libc::timeval = unsafe { std::mem::zeroed() };
    let mut l = std::mem::size_of::<libc::timeval>() as socklen_t;
    // SAFETY: a timeval option into a timeval, with its length.
    let r = unsafe {
        get(
            fd,
            libc::SOL_SOCKET,
            name,
            &mut tv as *mut _ as *mut _,
            &mut l,
        )
    };
    (r == 0 && (tv.tv_sec != 0 || tv.tv_usec != 0)).then_some(tv)
}

impl Carried {
    fn of(fd: c_int, fl: c_int, fd_flags: c_int) -> Carried {
        let mut own = [0 as c_int; 2];
        // SAFETY: F_GETOWN_EX writes a struct f_owner_ex (two ints) into `own`.
        let got_owner = unsafe { libc::fcntl(fd, F_GETOWN_EX, own.as_mut_ptr()) } == 0;
        // SAFETY: F_GETSIG takes no argument.
        let s = unsafe { libc::fcntl(fd, F_GETSIG) };
        Carried {
            fd_flags,
            fl,
            owner: (got_owner && own[1] != 0).then_some(own),
            sig: (s > 0).then_some(s),
            rcvtimeo: timeo(fd, libc::SO_RCVTIMEO),
            sndtimeo: timeo(fd, libc::SO_SNDTIMEO),
        }
    }

    /// Put `app` in the place of `fd` with everything carried over.
    fn swap(&self, app: c_int, fd: c_int) -> Result<(), c_int> {
        let cloexec = if self.fd_flags & libc::FD_CLOEXEC != 0 {
            libc::O_CLOEXEC
        } else {
            0
        };
        // SAFETY: dup3 on two descriptors: our socketpair end onto the caller's fd.
        if unsafe { libc::dup3(app, fd, cloexec) } < 0 {
            return Err(errno());
        }
        // Owner and signal first: O_ASYNC must not fire before they are in place.
        if let Some(mut o) = self.owner {
            // SAFETY: F_SETOWN_EX reads a struct f_owner_ex (two ints) from `o`.
            unsafe { libc::fcntl(fd, F_SETOWN_EX, o.as_mut_ptr()) };
        }
        if let Some(s) = self.sig {
            // SAFETY: F_SETSIG takes an int.
            unsafe { libc::fcntl(fd, F_SETSIG, s) };
        }
        set_fl(fd, self.fl);
        if let Some(set) = real::setsockopt() {
            let l = std::mem::size_of::<libc::timeval>() as socklen_t;
            for (name, tv) in [
                (libc::SO_RCVTIMEO, &self.rcvtimeo),
                (libc::SO_SNDTIMEO, &self.sndtimeo),
            ] {
                if let Some(tv) = tv {
                    // SAFETY: a timeval option from a timeval, with its length.
                    unsafe { set(fd, libc::SOL_SOCKET, name, tv as *const _ as *const _, l) };
                }
            }
        }
        Ok(())
    }
}

/// A descriptor of ours, closed when dropped (-1: none).
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: closing a descriptor we own.
            unsafe { libc::close(self.0) };
        }
    }
}

fn socketpair() -> Result<(Fd, Fd), c_int> {
    let mut sv = [-1; 2];
    // SAFETY: socketpair writes two ints into a 2-int array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(errno());
    }
    Ok((Fd(sv[0]), Fd(sv[1])))
}

fn pipe() -> Result<(Fd, Fd), c_int> {
    let mut p = [-1; 2];
    // SAFETY: pipe2 writes two ints into a 2-int array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno());
    }
    Ok((Fd(p[0]), Fd(p[1])))
}

/// The helper's stderr: /dev/null, added to `fds` as its fd 2, when the caller must not see
/// its messages (AUTOSSL_SILENT, or the connection is on fd 2 itself); else the caller's. The
/// returned descriptor must stay open until the spawn.
fn quiet_stderr(cfg: &Config, fd: c_int, fds: &mut Vec<(c_int, c_int)>) -> Fd {
    if !(cfg.silent || fd == 2) || fds.iter().any(|f| f.1 == 2) {
        return Fd(-1);
    }
    // SAFETY: open on a constant NUL-terminated path.
    let devnull =
        Fd(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) });
    if devnull.0 >= 0 {
        fds.push((devnull.0, 2));
    }
    devnull
}

fn cstr(s: &str) -> Result<CString, c_int> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

// ---------------------------------------------------------------------------------------
// The upgrade

static NO_TLSC: AtomicBool = AtomicBool::new(false);
static SPAWN_FAILED: AtomicBool = AtomicBool::new(false);

/// One matching connect(): the caller's socket and destination as they were when it was
/// called.
struct Call<'a> {
    st: &'a State,
    fd: c_int,
    dest: Dest<'a>,
    t: Target,
    /// The socket's file status flags (F_GETFL) and descriptor flags (F_GETFD).
    fl: c_int,
    fd_flags: c_int,
    /// The socket's family, for getsockopt(SO_DOMAIN) after the swap.
    domain: c_int,
    ip_text: String,
    port_text: String,
    /// When connect() was called.
    started: Instant,
}

impl<'a> Call<'a> {
    fn new(st: &'a State, fd: c_int, dest: Dest<'a>, t: Target) -> Result<Call<'a>, c_int> {
        // SAFETY: F_GETFL takes no argument.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: F_GETFD takes no argument.
        let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fl < 0 || fd_flags < 0 {
            return Err(errno());
        }
        Ok(Call {
            st,
            fd,
            dest,
            t,
            fl,
            fd_flags,
            domain: int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(libc::AF_INET),
            ip_text: t.ip().to_string(),
            port_text: t.port.to_string(),
            started: Instant::now(),
        })
    }

    fn cfg(&self) -> &'a Config {
        &self.st.cfg
    }

    /// Is the caller's socket blocking?
    fn blocking(&self) -> bool {
        self.fl & libc::O_NONBLOCK == 0
    }

    /// The bound on the handshake: AUTOSSL_TIMEOUT; for a blocking socket with a send
    /// timeout, what is left of it since connect() was called, when that is shorter.
    fn handshake_timeout(&self) -> Duration {
        let t = self.cfg().timeout;
        if !self.blocking() {
            return t;
        }
        match timeo(self.fd, libc::SO_SNDTIMEO) {
            Some(tv) => {
                let d = Duration::from_secs(tv.tv_sec.max(0) as u64)
                    + Duration::from_micros(tv.tv_usec.max(0) as u64);
                t.min(d.saturating_sub(self.started.elapsed()))
                    .max(Duration::from_millis(1))
            }
            None => t,
        }
    }

    /// The errno connect() returns for a failure after a rule matched: AUTOSSL_ERRNO, else
    /// `e`.
    fn fail(&self, e: c_int) -> c_int {
        self.cfg().errno.unwrap_or(e)
    }

    /// With AUTOSSL_VERBOSE, the line `fd N: IP port P<rest>`.
    fn verbose(&self, rest: &str) {
        let cfg = self.cfg();
        if cfg.verbose {
            say(
                cfg,
                &format!(
                    "fd {}: {} port {}{rest}",
                    self.fd, self.ip_text, self.port_text
                ),
            );
        }
    }
}

/// Upgrade a matching connect. Err(errno) for connect() to return.
pub fn upgrade(st: &State, fd: c_int, dest: Dest<'_>, t: Target) -> Result<(), c_int> {
    let call = Call::new(st, fd, dest, t)?;
    match &st.cfg.tls_cmd {
        Some(cmd) => command_mode(&call, cmd).map_err(|e| call.fail(e)),
        None => native_mode(&call),
    }
}

/// autossl.so's contract: `cmd IP PORT`, clear text on its stdin/stdout; it connects.
fn command_mode(c: &Call, cmd: &str) -> Result<(), c_int> {
    let (app, helper) = socketpair()?;
    let argv = vec![
        cstr("/bin/sh")?,
        cstr("-c")?,
        cstr(&format!("{cmd} \"$@\""))?,
        cstr("autossl")?,
        cstr(&c.ip_text)?,
        cstr(&c.port_text)?,
    ];
    let fds = [(helper.0, 0), (helper.0, 1)];
    start_helper(c, cstr("/bin/sh")?, argv, &fds, 3, cmd)?;
    drop(helper);
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    swap(c, app, &local[..local_len])?;
    c.verbose(&format!(": handed to {cmd}"));
    Ok(())
}

/// tlsc on a TCP connection made here: connect() returns once the handshake is done.
fn native_mode(c: &Call) -> Result<(), c_int> {
    let Some(tlsc) = &c.st.tlsc else {
        say_once(
            &NO_TLSC,
            c.cfg(),
            "tlsc not found beside the library nor on PATH: refusing the connection",
        );
        return Err(c.fail(libc::ECONNREFUSED));
    };
    if !c.blocking() {
        if let Some(entry) = pending::reserve() {
            return pending_connect(c, tlsc, entry);
        }
    }
    // The real connect, on the caller's socket: its errno is the caller's.
    connect_tcp(c)?;
    // From here on the TCP connection exists: every failure shuts it down (never plain),
    // which also ends tlsc's handshake on it. A signal handler's EINTR stays EINTR.
    over_tcp(c, tlsc).map_err(|e| {
        // SAFETY: shutdown on the caller's socket, which holds the connection made above.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        if e == libc::EINTR {
            e
        } else {
            c.fail(e)
        }
    })
}

/// The real TCP connect on the caller's socket: Ok, or the real errno. A blocking socket
/// gets the kernel's own blocking connect (its SO_SNDTIMEO, its EINTR and SA_RESTART
/// rules, exactly as without the library); a non-blocking one is waited for here, bounded
/// by AUTOSSL_TIMEOUT.
fn connect_tcp(c: &Call) -> Result<(), c_int> {
    let connect = real::connect().ok_or(libc::ENOSYS)?;
    // SAFETY: the caller's own arguments to connect(), valid during the call (Dest).
    let r = unsafe { connect(c.fd, c.dest.addr, c.dest.len) };
    if r == 0 {
        return Ok(());
    }
    let res = match errno() {
        libc::EINPROGRESS | libc::EALREADY if !c.blocking() => {
            match poll_until(c.fd, libc::POLLOUT, Instant::now() + c.cfg().timeout) {
                Ok(_) => match int_opt(c.fd, libc::SOL_SOCKET, libc::SO_ERROR) {
                    Some(0) => Ok(()),
                    Some(e) => Err(e),
                    None => Err(errno()),
                },
                Err(e) => Err(e),
            }
        }
        e => Err(e),
    };
    if let Err(libc::EINTR | libc::EINPROGRESS | libc::EALREADY | libc::ETIMEDOUT) = res {
        // The kernel would go on connecting after these: a connection that completes
        // later would be plain, so it is aborted instead.
        // SAFETY: shutdown on the caller's socket; on a connecting one it aborts.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
    }
    res
}

/// A non-blocking socket: the kernel's connect started on it, tlsc given the connecting
/// socket ([`hand_over`]), EINPROGRESS; `entry` keeps the outcome for the program's own
/// SO_ERROR check. A connect that fails at once gives its own errno, as without the
/// library.
fn pending_connect(c: &Call, tlsc: &CStr, entry: pending::Reservation) -> Result<(), c_int> {
    let connect = real::connect().ok_or(libc::ENOSYS)?;
    // SAFETY: the caller's own arguments to connect(), valid during the call (Dest).
    let r = unsafe { connect(c.fd, c.dest.addr, c.dest.len) };
    if r != 0 && errno() != libc::EINPROGRESS {
        return Err(errno());
    }
    match hand_over(c, tlsc, entry) {
        Ok(()) => Err(libc::EINPROGRESS),
        Err(e) => {
            // The connect under way must never become a plain connection.
            // SAFETY: shutdown on the caller's descriptor (either socket); it aborts.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            Err(c.fail(e))
        }
    }
}

/// Fill the send buffer of `fd` (the program's end of the socketpair, before the swap)
/// until it takes no more: the program's poll sees it unwritable, as a connecting socket
/// is, until tlsc drops these bytes after the handshake. Returns how many were written.
fn fill(fd: c_int) -> Result<usize, c_int> {
    static ZEROS: [u8; 16384] = [0; 16384];
    let mut n = 0usize;
    // Bounded: a send buffer of at most 64 MiB.
    for _ in 0..4096 {
        // SAFETY: send reads ZEROS.len() bytes of a static buffer.
        let r = unsafe {
            libc::send(
                fd,
                ZEROS.as_ptr() as *const libc::c_void,
                ZEROS.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if r > 0 {
            n += r as usize;
            continue;
        }
        match errno() {
            libc::EAGAIN if n > 0 => return Ok(n),
            libc::EINTR => continue,
            libc::EAGAIN => return Err(libc::ENOBUFS),
            e => return Err(e),
        }
    }
    Err(libc::ENOBUFS)
}

/// tlsc started on the connecting socket (`--pending-connect`, `--discard` of the filler),
/// the program's end filled and swapped in, the entry published with the notification
/// pipe and what the messages about the outcome need.
fn hand_over(c: &Call, tlsc: &CStr, entry: pending::Reservation) -> Result<(), c_int> {
    let cfg = c.cfg();
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    let chosen = server_name(c);
    let name = &chosen.name;
    let timeout = cfg.timeout;
    let (app, helper) = socketpair()?;
    let filler = fill(app.0)?;
    let (nr, nw) = pipe()?;
    let mut argv = vec![
        tlsc.to_owned(),
        cstr("--detach")?,
        cstr("--pending-connect")?,
        cstr(&format!("--discard={filler}"))?,
        cstr("-K")?,
        cstr(&millis(timeout).to_string())?,
        cstr("-d")?,
        cstr("3")?,
    ];
    argv.extend(chosen.tlsc_args()?);
    // tlsc's io form on the connecting socket (fd 6 and 7), the socketpair as its stdin
    // and stdout, the pipe's writing end as its -d fd, on which it also reports failures.
    let mut fds = vec![
        (helper.0, 0),
        (helper.0, 1),
        (nw.0, 3),
        (c.fd, 6),
        (c.fd, 7),
    ];
    late_log(c, &mut argv, &mut fds)?;
    start_helper(c, tlsc.to_owned(), argv, &fds, 8, &tlsc.to_string_lossy())?;
    drop(helper);
    drop(nw);
    let checked = chosen.checked();
    let info = Box::new(pending::Info {
        started: c.started,
        timeout,
        fail_errno: cfg.errno,
        silent: cfg.silent || c.fd == 2,
        verbose: cfg.verbose.then(|| {
            format!(
                "fd {}: {} port {} name {name}",
                c.fd, c.ip_text, c.port_text
            )
        }),
        dest: format!("{} port {} ({checked})", c.ip_text, c.port_text),
        advice: chosen
            .unknown
            .as_ref()
            .map(|cands| unknown_name_advice(c, cands)),
    });
    swap(c, app, &local[..local_len])?;
    entry.publish(c.fd, nr.0, info)?;
    // The entry owns the pipe's reading end now.
    std::mem::forget(nr);
    Ok(())
}

/// The name to send and verify, and where it came from.
struct Chosen {
    /// The name, or the address when none is known, or the candidates joined with commas
    /// when the request is to tell.
    name: String,
    /// None: the user's or the program's name; Some: no name could be told (these are the
    /// candidates).
    unknown: Option<names::Candidates>,
    /// Several candidates: the program's own request picks one of them.
    from_request: bool,
}

impl Chosen {
    /// What the failure messages say was checked.
    fn checked(&self) -> String {
        match (self.unknown, self.from_request) {
            (Some(_), true) => format!("the name its request gives, one of {}", self.name),
            (Some(_), false) => "the address".to_string(),
            (None, _) => format!("name {}", self.name),
        }
    }

    /// tlsc's options for the name: `-k NAME --check-host`, `--host-from-request=NAMES`, or
    /// `-k ADDRESS`.
    fn tlsc_args(&self) -> Result<Vec<CString>, c_int> {
        Ok(match (self.unknown, self.from_request) {
            (_, true) => vec![cstr(&format!("--host-from-request={}", self.name))?],
            (Some(_), false) => vec![cstr("-k")?, cstr(&self.name)?],
            (None, false) => vec![cstr("-k")?, cstr(&self.name)?, cstr("--check-host")?],
        })
    }
}

/// Evidence, best first: AUTOSSL_SNI; AUTOSSL_NAMES; the only name that ever gave the
/// address; several candidates: the program's request (HTTP/1.x `Host`) picks one; else
/// the address itself (said with `AUTOSSL_VERBOSE`, with the candidates). A name is checked
/// against the program's request before anything is sent.
fn server_name(c: &Call) -> Chosen {
    let cfg = c.cfg();
    let named = |name: &str| Chosen {
        name: name.to_string(),
        unknown: None,
        from_request: false,
    };
    if let Some(s) = &cfg.sni {
        return named(s);
    }
    if let Some(n) = cfg.named(c.t.key, c.t.port) {
        return named(n);
    }
    match names::evidence(c.t.key) {
        names::Evidence::Certain(n) => named(&n.text()),
        names::Evidence::Unknown(cands) if cands.n > 0 => {
            let mut list: Vec<String> = cands.list().iter().map(|n| n.text()).collect();
            if cands.more {
                // Never a host name: it matches no request, and says "and others".
                list.push("...".into());
            }
            c.verbose(&format!(
                ": several names ({}): the request's host picks one",
                candidate_list(&cands)
            ));
            Chosen {
                name: list.join(","),
                unknown: Some(cands),
                from_request: true,
            }
        }
        names::Evidence::Unknown(cands) => {
            c.verbose(&format!(
                ": no single name known ({}): verifying the address",
                candidate_list(&cands)
            ));
            Chosen {
                name: c.ip_text.clone(),
                unknown: Some(cands),
                from_request: false,
            }
        }
    }
}

/// `a.test, b.test` (and `and others`).
fn candidate_list(cands: &names::Candidates) -> String {
    let mut v: Vec<String> = cands.list().iter().map(|n| n.text()).collect();
    if cands.more {
        v.push("others".into());
    }
    v.join(", ")
}

/// Why the address was verified, and what settles it: for a failure message.
fn unknown_name_advice(c: &Call, cands: &names::Candidates) -> String {
    let dest = if rules::key_is_v4(c.t.key) {
        format!("{}:{}", c.ip_text, c.port_text)
    } else {
        format!("[{}]:{}", c.ip_text, c.port_text)
    };
    let why = if cands.n == 0 && !cands.more {
        "no host name the program resolved through the C library gave this address".to_string()
    } else {
        format!(
            "several names gave this address ({}) and the connection does not say which",
            candidate_list(cands)
        )
    };
    format!(
        "{} port {}: the certificate was checked against the address, because {why}; \
         set AUTOSSL_SNI=NAME, or AUTOSSL_NAMES=\"NAME={dest}\"",
        c.ip_text, c.port_text
    )
}

/// Messages that come after the connection is ready (the verdict on the program's request)
/// go to the program's stderr, as tlsc's fd 4: not with AUTOSSL_SILENT, nor when the
/// connection is on fd 2 itself.
fn late_log(c: &Call, argv: &mut Vec<CString>, fds: &mut Vec<(c_int, c_int)>) -> Result<(), c_int> {
    if !c.cfg().silent && c.fd != 2 {
        argv.push(cstr("--log-fd=4")?);
        fds.push((2, 4));
    }
    Ok(())
}

/// The name comes from the program's own request: tlsc is started on the connected socket
/// and the swap made at once; tlsc reads the request, then makes the handshake for the
/// name it gives. A failure from here on reaches the program as a closed connection, and
/// tlsc says why on its stderr.
fn over_tcp_from_request(c: &Call, tlsc: &CStr, chosen: &Chosen) -> Result<(), c_int> {
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    let ms = millis(c.cfg().timeout).to_string();
    let mut argv = vec![tlsc.to_owned(), cstr("--detach")?, cstr("-K")?, cstr(&ms)?];
    argv.extend(chosen.tlsc_args()?);
    let (app, helper) = socketpair()?;
    let mut fds = vec![(helper.0, 0), (helper.0, 1), (c.fd, 6), (c.fd, 7)];
    late_log(c, &mut argv, &mut fds)?;
    start_helper(c, tlsc.to_owned(), argv, &fds, 8, &tlsc.to_string_lossy())?;
    drop(helper);
    swap(c, app, &local[..local_len])?;
    c.verbose(&format!(": {}", chosen.checked()));
    Ok(())
}

/// On the connected socket: tlsc started, its handshake awaited, the swap.
fn over_tcp(c: &Call, tlsc: &CStr) -> Result<(), c_int> {
    let cfg = c.cfg();
    let chosen = server_name(c);
    if chosen.from_request {
        return over_tcp_from_request(c, tlsc, &chosen);
    }
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    let name = &chosen.name;
    let timeout = c.handshake_timeout();
    let ms = millis(timeout).to_string();
    let mut argv = vec![
        tlsc.to_owned(),
        cstr("--detach")?,
        cstr("-K")?,
        cstr(&ms)?,
        cstr("-d")?,
        cstr("3")?,
    ];
    argv.extend(chosen.tlsc_args()?);
    let (app, helper) = socketpair()?;
    let (nr, nw) = pipe()?;
    // tlsc's messages come through a pipe: each is given with the destination, before
    // connect() returns. (Not when connect() is on fd 2 itself: that is the network.)
    let relay = !cfg.silent && c.fd != 2;
    let (er, ew) = if relay { pipe()? } else { (Fd(-1), Fd(-1)) };
    // tlsc's io form on the connected socket (fd 6 and 7), the socketpair as its stdin and
    // stdout, the pipe's writing end as its -d fd; --detach also keeps it off the caller's
    // stderr after the handshake.
    let mut fds = vec![
        (helper.0, 0),
        (helper.0, 1),
        (nw.0, 3),
        (c.fd, 6),
        (c.fd, 7),
    ];
    if relay {
        fds.push((ew.0, 2));
    }
    late_log(c, &mut argv, &mut fds)?;
    start_helper(c, tlsc.to_owned(), argv, &fds, 8, &tlsc.to_string_lossy())?;
    drop(helper);
    drop(nw);
    drop(ew);
    let (desc, said) = if c.blocking() {
        await_blocking(&nr, relay.then_some(&er), timeout)
    } else {
        await_description(&nr, relay.then_some(&er), timeout)
    };
    drop(nr);
    drop(er);
    let checked = chosen.checked();
    for line in String::from_utf8_lossy(&said).lines() {
        if !line.trim().is_empty() {
            say(
                cfg,
                &format!("{} port {} ({checked}): {line}", c.ip_text, c.port_text),
            );
        }
    }
    let desc = match desc {
        Ok(d) => d,
        Err(e) => {
            c.verbose(&format!(" name {name}: TLS failed"));
            if let (Some(cands), true) = (&chosen.unknown, c.fd != 2) {
                say(cfg, &unknown_name_advice(c, cands));
            }
            return Err(e);
        }
    };
    swap(c, app, &local[..local_len])?;
    let get = |k| desc.get(k).map(|v| v.to_string_lossy()).unwrap_or_default();
    c.verbose(&format!(
        " name {name}: {} {} {}",
        get("SSL_PROTOCOL"),
        get("SSL_CIPHER"),
        get("SSL_GROUP")
    ));
    Ok(())
}

/// Start a helper: `path` with `argv`, the (source, target) descriptors `fds` in place, its
/// stderr the caller's or /dev/null ([`quiet_stderr`]), every descriptor from
/// `first_closed` up closed, through a short-lived middle process (see spawn.rs: no
/// SIGCHLD, no zombie). A helper that cannot be started (`what` names it, once per
/// process): ECONNREFUSED.
fn start_helper(
    c: &Call,
    path: CString,
    argv: Vec<CString>,
    fds: &[(c_int, c_int)],
    first_closed: c_int,
    what: &str,
) -> Result<(), c_int> {
    let p = spawn::Prepared::new(path, argv, spawn::helper_env(c.st.lib.as_deref()));
    let mut fds = fds.to_vec();
    let devnull = quiet_stderr(c.cfg(), c.fd, &mut fds);
    let r = spawn::spawn(&p, &fds, first_closed, true);
    drop(devnull);
    r.map_err(|e| {
        say_once(
            &SPAWN_FAILED,
            c.cfg(),
            &format!("cannot start {what}: errno {e}"),
        );
        libc::ECONNREFUSED
    })
}

/// The handshake's outcome, read from the `-d` pipe `nr`: the session description tlsc
/// writes after a handshake (then it closes the pipe); EOF with nothing written, a failed
/// handshake (ECONNREFUSED, or ETIMEDOUT when tlsc gave up at its own handshake timeout
/// `timeout`); nothing within `timeout` and a second, ETIMEDOUT. What does not decode as a
/// description of at most 4 KiB counts as a failed handshake. With `er`, tlsc's stderr:
/// what it wrote until it closed it (at most 4 KiB; a second at most once the outcome is
/// known), returned with the outcome.
fn await_description(
    nr: &Fd,
    er: Option<&Fd>,
    timeout: Duration,
) -> (Result<Description, c_int>, Vec<u8>) {
    let started = Instant::now();
    let deadline = started + timeout + Duration::from_secs(1);
    // One byte more than a description may have: to see that there is more.
    let mut buf = [0u8; MAX_NOTIFICATION + 1];
    let mut got = 0usize;
    let mut said = Vec::new();
    let mut outcome: Option<Result<Description, c_int>> = None;
    let mut err_open = er.is_some();
    let mut end = deadline;
    loop {
        if outcome.is_some() && !err_open {
            break;
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut p = [
            libc::pollfd {
                fd: if outcome.is_none() { nr.0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: match er {
                    Some(e) if err_open => e.0,
                    _ => -1,
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds, ours.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, millis(end - now).max(1)) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if p[1].revents != 0 {
            if let Some(e) = er {
                let mut chunk = [0u8; 512];
                // SAFETY: read writes at most 512 bytes into our buffer.
                let n = unsafe { libc::read(e.0, chunk.as_mut_ptr() as *mut libc::c_void, 512) };
                if n > 0 {
                    let room = 4096usize.saturating_sub(said.len());
                    said.extend_from_slice(&chunk[..(n as usize).min(room)]);
                } else if n == 0 || (errno() != libc::EINTR && errno() != libc::EAGAIN) {
                    err_open = false;
                }
            }
        }
        if p[0].revents == 0 {
            continue;
        }
        let room = &mut buf[got..];
        // SAFETY: read writes at most room.len() bytes into our buffer.
        let n = unsafe { libc::read(nr.0, room.as_mut_ptr() as *mut libc::c_void, room.len()) };
        let done = if n < 0 {
            if errno() == libc::EINTR || errno() == libc::EAGAIN {
                continue;
            }
            Err(libc::ECONNREFUSED)
        } else if n == 0 {
            if got > 0 {
                Description::decode_notification(&buf[..got]).map_err(|_| libc::ECONNREFUSED)
            } else if started.elapsed() + Duration::from_millis(50) >= timeout {
                // tlsc gave up at its handshake timeout (-K): a timeout.
                Err(libc::ETIMEDOUT)
            } else {
                Err(libc::ECONNREFUSED)
            }
        } else {
            got += n as usize;
            if got <= MAX_NOTIFICATION {
                continue;
            }
            Err(libc::ECONNREFUSED)
        };
        outcome = Some(done);
        end = end.min(Instant::now() + Duration::from_secs(1));
    }
    (outcome.unwrap_or(Err(libc::ETIMEDOUT)), said)
}

/// [`await_description`] for a blocking socket: the `-d` pipe read with blocking reads, so
/// that a signal handler interrupts the wait exactly as it would interrupt a blocking
/// connect (restarted under SA_RESTART, else EINTR); tlsc's own handshake timeout
/// (`timeout`) bounds it. Then tlsc's stderr as there.
fn await_blocking(
    nr: &Fd,
    er: Option<&Fd>,
    timeout: Duration,
) -> (Result<Description, c_int>, Vec<u8>) {
    let started = Instant::now();
    let mut buf = [0u8; MAX_NOTIFICATION + 1];
    let mut got = 0usize;
    let outcome = loop {
        let room = &mut buf[got..];
        // SAFETY: read writes at most room.len() bytes into our buffer.
        let n = unsafe { libc::read(nr.0, room.as_mut_ptr() as *mut libc::c_void, room.len()) };
        if n < 0 {
            // EINTR: a handler without SA_RESTART ran (with it, the kernel restarts).
            break Err(if errno() == libc::EINTR {
                libc::EINTR
            } else {
                libc::ECONNREFUSED
            });
        }
        if n == 0 {
            break if got > 0 {
                Description::decode_notification(&buf[..got]).map_err(|_| libc::ECONNREFUSED)
            } else if started.elapsed() + Duration::from_millis(50) >= timeout {
                Err(libc::ETIMEDOUT)
            } else {
                Err(libc::ECONNREFUSED)
            };
        }
        got += n as usize;
        if got > MAX_NOTIFICATION {
            break Err(libc::ECONNREFUSED);
        }
        // tlsc writes its description at once: complete, it needs no EOF (which a copy of
        // the pipe inherited by a fork elsewhere in the host would hold back).
        if let Ok(d) = Description::decode_notification(&buf[..got]) {
            break Ok(d);
        }
    };
    let mut said = Vec::new();
    if let (Some(e), false) = (er, outcome == Err(libc::EINTR)) {
        let end = Instant::now() + Duration::from_secs(1);
        while poll_until(e.0, libc::POLLIN, end).is_ok() {
            let mut chunk = [0u8; 512];
            // SAFETY: read writes at most 512 bytes into our buffer.
            let n = unsafe { libc::read(e.0, chunk.as_mut_ptr() as *mut libc::c_void, 512) };
            if n <= 0 {
                break;
            }
            let room = 4096usize.saturating_sub(said.len());
            said.extend_from_slice(&chunk[..(n as usize).min(room)]);
        }
    }
    (outcome, said)
}

/// The swap: the socketpair end `app` takes the place of the caller's descriptor (same
/// number, same flags, owner, signal and timeouts), and the table of upgraded sockets
/// learns what it answers as the TCP socket (`local`: its getsockname).
fn swap(c: &Call, app: Fd, local: &[u8]) -> Result<(), c_int> {
    let carried = Carried::of(c.fd, c.fl, c.fd_flags);
    carried.swap(app.0, c.fd)?;
    drop(app);
    socks::insert(c.fd, c.domain, c.dest.peer(), local);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
        // SAFETY: sockaddr_in is plain data: all zeros is a valid value.
        let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        s.sin_family = libc::AF_INET as libc::sa_family_t;
        s.sin_port = port.to_be();
        s.sin_addr.s_addr = u32::from_be_bytes(ip).to_be();
        s
    }

    fn v6(ip: std::net::Ipv6Addr, port: u16) -> libc::sockaddr_in6 {
        // SAFETY: sockaddr_in6 is plain data: all zeros is a valid value.
        let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        s.sin6_port = port.to_be();
        s.sin6_addr.s6_addr = ip.octets();
        s
    }

    /// A Dest over `a`'s first `len` bytes (at most its size).
    fn dest<T>(a: &T, len: usize) -> Dest<'_> {
        assert!(len <= std::mem::size_of::<T>());
        // SAFETY: `a` is valid for reads of `len` bytes for as long as it is borrowed.
        unsafe { Dest::new(a as *const T as *const sockaddr, len as socklen_t) }
    }

    #[test]
    fn destinations_and_lengths() {
        let a = v4([192, 0, 2, 7], 443);
        let n = std::mem::size_of::<libc::sockaddr_in>();
        let t = dest(&a, n).target().expect("v4");
        assert_eq!(t.port, 443);
        assert_eq!(t.ip().to_string(), "192.0.2.7");
        assert!(rules::key_is_v4(t.key));
        assert_eq!(dest(&a, n).peer().len(), n);
        assert!(dest(&a, n - 1).target().is_none(), "short addrlen");
        assert!(dest(&a, 1).target().is_none());
        assert!(dest(&a, 1).peer().is_empty());
        // SAFETY: a null pointer is allowed.
        let null = unsafe { Dest::new(std::ptr::null(), n as socklen_t) };
        assert!(null.target().is_none());
        assert!(null.peer().is_empty());

        let m = v6("::ffff:127.0.0.1".parse().expect("ip"), 8443);
        let n = std::mem::size_of::<libc::sockaddr_in6>();
        let t = dest(&m, n).target().expect("mapped");
        assert_eq!(t.ip().to_string(), "127.0.0.1");
        assert_eq!(t.port, 8443);
        assert!(dest(&m, n - 4).target().is_none());

        let six = v6("2001:db8::1".parse().expect("ip"), 1);
        let t = dest(&six, n).target().expect("v6");
        assert_eq!(t.ip().to_string(), "2001:db8::1");
        assert!(!rules::key_is_v4(t.key));

        // SAFETY: sockaddr_un is plain data: all zeros is a valid value.
        let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        un.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let n = std::mem::size_of::<libc::sockaddr_un>();
        assert!(dest(&un, n).target().is_none(), "AF_UNIX is never ours");
    }

    #[test]
    fn peer_is_the_family_size_of_a_longer_argument() {
        // SAFETY: sockaddr_storage is plain data: all zeros is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        ss.ss_family = libc::AF_INET as libc::sa_family_t;
        let n = std::mem::size_of::<libc::sockaddr_storage>();
        assert_eq!(
            dest(&ss, n).peer().len(),
            std::mem::size_of::<libc::sockaddr_in>()
        );
        ss.ss_family = libc::AF_INET6 as libc::sa_family_t;
        assert_eq!(
            dest(&ss, n).peer().len(),
            std::mem::size_of::<libc::sockaddr_in6>()
        );
    }

    #[test]
    fn description_from_the_pipe() {
        let (r, w) = pipe().expect("pipe");
        let d = b"SSL_PROTOCOL=TLSv1.3\0SSL_CIPHER=X\0SSL_PEER_CERT_HASH\0\0";
        // SAFETY: write reads d.len() bytes of d.
        let n = unsafe { libc::write(w.0, d.as_ptr() as *const libc::c_void, d.len()) };
        assert_eq!(n, d.len() as isize);
        drop(w);
        let got = await_description(&r, None, Duration::from_secs(5))
            .0
            .expect("description");
        assert_eq!(
            got.get("SSL_PROTOCOL"),
            Some(std::ffi::OsStr::new("TLSv1.3"))
        );
        assert_eq!(got.get("SSL_CIPHER"), Some(std::ffi::OsStr::new("X")));

        // EOF with nothing: a failed handshake.
        let (r, w) = pipe().expect("pipe");
        drop(w);
        assert_eq!(
            await_description(&r, None, Duration::from_secs(5)).0.err(),
            Some(libc::ECONNREFUSED)
        );
        // Malformed, or longer than 4 KiB: failed too.
        for bad in [
            &b"SSL_PROTOCOL=TLSv1.3\0"[..],
            &[b'x'; MAX_NOTIFICATION + 1][..],
        ] {
            let (r, w) = pipe().expect("pipe");
            // SAFETY: write reads bad.len() bytes of bad (less than a pipe's buffer).
            let n = unsafe { libc::write(w.0, bad.as_ptr() as *const libc::c_void, bad.len()) };
            assert_eq!(n, bad.len() as isize);
            drop(w);
            assert_eq!(
                await_description(&r, None, Duration::from_secs(5)).0.err(),
                Some(libc::ECONNREFUSED)
            );
        }
        // Nothing at all within the time: a timeout.
        let (r, _w) = pipe().expect("pipe");
        assert_eq!(
            await_description(&r, None, Duration::from_millis(1))
                .0
                .err(),
            Some(libc::ETIMEDOUT)
        );
    }
}
