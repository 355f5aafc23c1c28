//! The upgrade of one matching `connect()`: the real TCP connect on the caller's socket,
//! tlsc started on it, the handshake awaited, the descriptor swapped.

use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libc::{sockaddr, socklen_t};

use crate::rules::{self, Config, Vars};
use crate::{names, real, socks, spawn};

// ---------------------------------------------------------------------------------------
// Configuration and paths, once per process

pub struct State {
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
        nested: std::env::var_os("AUTOSSL_NESTED").is_some(),
    };
    let cfg = Config::parse(&v);
    if let Some(why) = &cfg.broken {
        if !cfg.silent && !v.nested {
            let then = match cfg.errno {
                Some(e) => format!("matching connections fail with errno {e}"),
                None => "connections are not upgraded".to_string(),
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
    // SAFETY: dladdr fills a Dl_info for an address inside this object.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(own_path as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null()
        {
            return None;
        }
        Some(CStr::from_ptr(info.dli_fname).to_owned())
    }
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
    // SAFETY: writing our own buffer to fd 2.
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
    pub key: u128,
    pub port: u16,
}

impl Target {
    pub fn ip(&self) -> IpAddr {
        rules::ip_of(self.key)
    }
}

/// Read an AF_INET/AF_INET6 destination, checking `len` against the family's size.
///
/// # Safety
/// `addr` must be valid for `len` bytes (the caller's promise to connect()).
pub unsafe fn target(addr: *const sockaddr, len: socklen_t) -> Option<Target> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    let family = c_int::from(std::ptr::read_unaligned(addr).sa_family);
    match family {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            let sin = std::ptr::read_unaligned(addr as *const libc::sockaddr_in);
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(Target {
                key: rules::key_of(IpAddr::V4(ip)),
                port: u16::from_be(sin.sin_port),
            })
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let sin6 = std::ptr::read_unaligned(addr as *const libc::sockaddr_in6);
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

fn int_opt(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let get = real::getsockopt()?;
    let mut v: c_int = 0;
    let mut l = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: an int-sized option into an int.
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
// The upgrade

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
        // SAFETY: one pollfd.
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
    // SAFETY: fcntl on a caller's fd.
    unsafe {
        libc::fcntl(fd, libc::F_SETFL, fl);
    }
}

/// The real TCP connect on the caller's socket, bounded by `limit` (also when the caller's
/// socket is blocking): Ok, or the real errno.
fn tcp_connect(
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    fl: c_int,
    limit: Duration,
) -> Result<(), c_int> {
    let connect = real::connect().ok_or(libc::ENOSYS)?;
    let nonblocking = fl & libc::O_NONBLOCK != 0;
    if !nonblocking {
        set_fl(fd, fl | libc::O_NONBLOCK);
    }
    // SAFETY: the caller's own arguments.
    let r = unsafe { connect(fd, addr, len) };
    let res = if r == 0 {
        Ok(())
    } else {
        match errno() {
            libc::EINPROGRESS | libc::EALREADY | libc::EINTR => {
                match poll_until(fd, libc::POLLOUT, Instant::now() + limit) {
                    Ok(_) => match int_opt(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
                        Some(0) => Ok(()),
                        Some(e) => Err(e),
                        None => Err(errno()),
                    },
                    Err(e) => Err(e),
                }
            }
            e => Err(e),
        }
    };
    if !nonblocking {
        set_fl(fd, fl);
    }
    res
}

fn sockaddr_bytes(fd: c_int, peer: bool) -> ([u8; 128], usize) {
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
    // SAFETY: st is 128 bytes.
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

fn timeo(fd: c_int, name: c_int) -> Option<libc::timeval> {
    let get = real::getsockopt()?;
    let mut tv: libc::timeval = unsafe { std::mem::zeroed() };
    let mut l = std::mem::size_of::<libc::timeval>() as socklen_t;
    // SAFETY: a timeval option into a timeval.
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
        // SAFETY: fcntl queries on the caller's fd.
        unsafe {
            let mut own = [0 as c_int; 2];
            let owner =
                (libc::fcntl(fd, F_GETOWN_EX, own.as_mut_ptr()) == 0 && own[1] != 0).then_some(own);
            let s = libc::fcntl(fd, F_GETSIG);
            Carried {
                fd_flags,
                fl,
                owner,
                sig: (s > 0).then_some(s),
                rcvtimeo: timeo(fd, libc::SO_RCVTIMEO),
                sndtimeo: timeo(fd, libc::SO_SNDTIMEO),
            }
        }
    }

    /// Put `app` in the place of `fd` with everything carried over.
    fn swap(&self, app: c_int, fd: c_int) -> Result<(), c_int> {
        let cloexec = if self.fd_flags & libc::FD_CLOEXEC != 0 {
            libc::O_CLOEXEC
        } else {
            0
        };
        // SAFETY: descriptor operations on our socketpair end and the caller's fd.
        unsafe {
            if libc::dup3(app, fd, cloexec) < 0 {
                return Err(errno());
            }
            // Owner and signal first: O_ASYNC must not fire before they are in place.
            if let Some(mut o) = self.owner {
                libc::fcntl(fd, F_SETOWN_EX, o.as_mut_ptr());
            }
            if let Some(s) = self.sig {
                libc::fcntl(fd, F_SETSIG, s);
            }
            libc::fcntl(fd, libc::F_SETFL, self.fl);
            if let Some(set) = real::setsockopt() {
                let l = std::mem::size_of::<libc::timeval>() as socklen_t;
                for (name, tv) in [
                    (libc::SO_RCVTIMEO, &self.rcvtimeo),
                    (libc::SO_SNDTIMEO, &self.sndtimeo),
                ] {
                    if let Some(tv) = tv {
                        set(fd, libc::SOL_SOCKET, name, tv as *const _ as *const _, l);
                    }
                }
            }
        }
        Ok(())
    }
}

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
    // SAFETY: into a 2-int array.
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
    // SAFETY: into a 2-int array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno());
    }
    Ok((Fd(p[0]), Fd(p[1])))
}

/// The helper's stderr: /dev/null, added to `fds` as its fd 2, when the caller must not see
/// its messages (AUTOSSL_SILENT, or the connection is on fd 2 itself); else the caller's. The
/// returned descriptor must stay open until the spawn.
fn quiet_stderr(cfg: &Config, fd: c_int, fds: &mut Vec<(c_int, c_int)>) -> Fd {
    if !(cfg.silent || fd == 2) {
        return Fd(-1);
    }
    // SAFETY: a constant C path.
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

static NO_TLSC: AtomicBool = AtomicBool::new(false);
static SPAWN_FAILED: AtomicBool = AtomicBool::new(false);

/// Upgrade a matching connect. Err(errno) for connect() to return.
///
/// # Safety
/// `addr`/`len` are the caller's valid arguments to connect().
pub unsafe fn upgrade(
    st: &State,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    t: Target,
) -> Result<(), c_int> {
    let cfg = &st.cfg;
    let fail = |e: c_int| cfg.errno.unwrap_or(e);
    let fl = libc::fcntl(fd, libc::F_GETFL);
    let fd_flags = libc::fcntl(fd, libc::F_GETFD);
    if fl < 0 || fd_flags < 0 {
        return Err(errno());
    }
    let ip = t.ip();
    let ip_text = ip.to_string();
    let port_text = t.port.to_string();
    // What getpeername will answer: the address as given, at its family's own size (a
    // caller may pass sizeof(struct sockaddr_storage)).
    let family = c_int::from(std::ptr::read_unaligned(addr).sa_family);
    let peer_len = if family == libc::AF_INET6 {
        std::mem::size_of::<libc::sockaddr_in6>()
    } else {
        std::mem::size_of::<libc::sockaddr_in>()
    }
    .min(len as usize);
    let peer = std::slice::from_raw_parts(addr as *const u8, peer_len);
    let domain = int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(libc::AF_INET);

    if let Some(cmd) = &cfg.tls_cmd {
        // autossl.so's contract: `cmd IP PORT`, clear text on its stdin/stdout; it connects.
        let (app, helper) = socketpair().map_err(fail)?;
        let argv = vec![
            cstr("/bin/sh")?,
            cstr("-c")?,
            cstr(&format!("{cmd} \"$@\""))?,
            cstr("autossl")?,
            cstr(&ip_text)?,
            cstr(&port_text)?,
        ];
        let p = spawn::Prepared::new(cstr("/bin/sh")?, argv, spawn::helper_env(st.lib.as_deref()));
        let mut fds = vec![(helper.0, 0), (helper.0, 1)];
        let _devnull = quiet_stderr(cfg, fd, &mut fds);
        if let Err(e) = spawn::spawn(&p, &fds, 3, true) {
            say_once(
                &SPAWN_FAILED,
                cfg,
                &format!("cannot start {cmd}: errno {e}"),
            );
            return Err(fail(libc::ECONNREFUSED));
        }
        drop(helper);
        let (local, local_len) = sockaddr_bytes(fd, false);
        let carried = Carried::of(fd, fl, fd_flags);
        carried.swap(app.0, fd).map_err(fail)?;
        drop(app);
        socks::insert(fd, domain, peer, &local[..local_len]);
        if cfg.verbose {
            say(
                cfg,
                &format!("fd {fd}: {ip_text} port {port_text}: handed to {cmd}"),
            );
        }
        return Ok(());
    }

    let Some(tlsc) = &st.tlsc else {
        say_once(
            &NO_TLSC,
            cfg,
            "tlsc not found beside the library nor on PATH: refusing the connection",
        );
        return Err(fail(libc::ECONNREFUSED));
    };

    // 1. The real connect, on the caller's socket: its errno is the caller's.
    let mut limit = cfg.timeout;
    if fl & libc::O_NONBLOCK == 0 {
        if let Some(tv) = timeo(fd, libc::SO_SNDTIMEO) {
            let d =
                Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64);
            limit = limit.min(d);
        }
    }
    tcp_connect(fd, addr, len, fl, limit)?;

    // From here on the TCP connection exists: every failure shuts it down (never plain).
    let abort = |e: c_int| {
        libc::shutdown(fd, libc::SHUT_RDWR);
        Err(fail(e))
    };
    let (local, local_len) = sockaddr_bytes(fd, false);

    // 2. The name: AUTOSSL_SNI, else what the program resolved, else the address.
    let name: String = match (&cfg.sni, names::lookup(t.key)) {
        (Some(s), _) => s.clone(),
        (None, Some(n)) => String::from_utf8_lossy(n.as_bytes()).into_owned(),
        (None, None) => ip_text.clone(),
    };
    let ms = millis(cfg.timeout).to_string();
    let argv = match (|| {
        Ok::<_, c_int>(vec![
            tlsc.clone(),
            cstr("--detach")?,
            cstr("-K")?,
            cstr(&ms)?,
            cstr("-d")?,
            cstr("3")?,
            cstr("-k")?,
            cstr(&name)?,
        ])
    })() {
        Ok(a) => a,
        Err(e) => return abort(e),
    };
    let p = spawn::Prepared::new(tlsc.clone(), argv, spawn::helper_env(st.lib.as_deref()));
    let (app, helper) = match socketpair() {
        Ok(x) => x,
        Err(e) => return abort(e),
    };
    let (nr, nw) = match pipe() {
        Ok(x) => x,
        Err(e) => return abort(e),
    };
    let mut fds = vec![(helper.0, 0), (helper.0, 1), (nw.0, 3), (fd, 6), (fd, 7)];
    let devnull = quiet_stderr(cfg, fd, &mut fds);
    // 3. tlsc: io form on the connected socket, started by a short-lived middle process
    //    (see spawn.rs); --detach also keeps it off the caller's stderr after the handshake.
    if let Err(e) = spawn::spawn(&p, &fds, 8, true) {
        say_once(
            &SPAWN_FAILED,
            cfg,
            &format!("cannot start {}: errno {e}", tlsc.to_string_lossy()),
        );
        return abort(libc::ECONNREFUSED);
    }
    drop(helper);
    drop(nw);
    drop(devnull);

    // 4. The handshake's outcome: a session description, or EOF (failed), or nothing in time.
    let started = Instant::now();
    let deadline = started + cfg.timeout + Duration::from_secs(1);
    let mut desc = [0u8; 4200];
    let mut got = 0usize;
    let outcome = loop {
        match poll_until(nr.0, libc::POLLIN, deadline) {
            Err(e) => break Err(e),
            Ok(_) => {
                let room = desc.len() - got;
                if room == 0 {
                    break Ok(());
                }
                let n = libc::read(nr.0, desc[got..].as_mut_ptr() as *mut libc::c_void, room);
                if n < 0 {
                    if errno() == libc::EINTR || errno() == libc::EAGAIN {
                        continue;
                    }
                    break Err(libc::ECONNREFUSED);
                }
                if n == 0 {
                    break if got > 0 {
                        Ok(())
                    } else if started.elapsed() + Duration::from_millis(50) >= cfg.timeout {
                        // tlsc gave up at its handshake timeout (-K): a timeout.
                        Err(libc::ETIMEDOUT)
                    } else {
                        Err(libc::ECONNREFUSED)
                    };
                }
                got += n as usize;
            }
        }
    };
    drop(nr);
    if let Err(e) = outcome {
        if cfg.verbose {
            say(
                cfg,
                &format!("fd {fd}: {ip_text} port {port_text} name {name}: TLS failed"),
            );
        }
        return abort(e);
    }

    // 5. The swap: the socketpair end takes the descriptor's place.
    let carried = Carried::of(fd, fl, fd_flags);
    if let Err(e) = carried.swap(app.0, fd) {
        return abort(e);
    }
    drop(app);
    socks::insert(fd, domain, peer, &local[..local_len]);
    if cfg.verbose {
        let d = &desc[..got];
        let get = |k: &[u8]| -> String {
            d.split(|&b| b == 0)
                .find_map(|e| e.strip_prefix(k))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let mut line = String::new();
        let _ = write!(
            line,
            "fd {fd}: {ip_text} port {port_text} name {name}: {} {}",
            get(b"SSL_PROTOCOL="),
            get(b"SSL_CIPHER=")
        );
        say(cfg, &line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
        let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        s.sin_family = libc::AF_INET as libc::sa_family_t;
        s.sin_port = port.to_be();
        s.sin_addr.s_addr = u32::from_be_bytes(ip).to_be();
        s
    }

    fn v6(ip: std::net::Ipv6Addr, port: u16) -> libc::sockaddr_in6 {
        let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        s.sin6_port = port.to_be();
        s.sin6_addr.s6_addr = ip.octets();
        s
    }

    #[test]
    fn destinations_and_lengths() {
        let a = v4([192, 0, 2, 7], 443);
        let p = &a as *const _ as *const sockaddr;
        let n = std::mem::size_of::<libc::sockaddr_in>() as socklen_t;
        // SAFETY: the pointers are valid for the lengths given (or shorter).
        unsafe {
            let t = target(p, n).expect("v4");
            assert_eq!(t.port, 443);
            assert_eq!(t.ip().to_string(), "192.0.2.7");
            assert!(rules::key_is_v4(t.key));
            assert!(target(p, n - 1).is_none(), "short addrlen");
            assert!(target(p, 1).is_none());
            assert!(target(std::ptr::null(), n).is_none());
        }
        let m = v6("::ffff:127.0.0.1".parse().expect("ip"), 8443);
        let p = &m as *const _ as *const sockaddr;
        let n = std::mem::size_of::<libc::sockaddr_in6>() as socklen_t;
        unsafe {
            let t = target(p, n).expect("mapped");
            assert_eq!(t.ip().to_string(), "127.0.0.1");
            assert_eq!(t.port, 8443);
            assert!(target(p, n - 4).is_none());
        }
        let six = v6("2001:db8::1".parse().expect("ip"), 1);
        let p = &six as *const _ as *const sockaddr;
        unsafe {
            let t = target(p, n).expect("v6");
            assert_eq!(t.ip().to_string(), "2001:db8::1");
            assert!(!rules::key_is_v4(t.key));
        }
        let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        un.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let p = &un as *const _ as *const sockaddr;
        let n = std::mem::size_of::<libc::sockaddr_un>() as socklen_t;
        unsafe { assert!(target(p, n).is_none(), "AF_UNIX is never ours") };
    }
}
