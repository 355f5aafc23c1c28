//! The exported symbols. Each one: a reentrancy guard (a `const` thread-local flag: our own
//! code calls libc, which may land in these hooks again), `catch_unwind` around our part
//! (never unwind into C), and the real function for everything that is not ours.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::{msghdr, size_t, sockaddr, socklen_t, ssize_t};

use crate::addr::{Dest, Target};
use crate::pending::{self, Outcome};
use crate::upgrade;
use crate::{accept, config, fds, names, real, socks, spawn};

thread_local! {
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = BUSY.try_with(|b| b.set(false));
    }
}

fn enter() -> Option<Guard> {
    BUSY.try_with(|b| {
        if b.get() {
            None
        } else {
            b.set(true);
            Some(Guard)
        }
    })
    .ok()
    .flatten()
}

fn set_errno(e: c_int) {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() = e };
}

fn get_errno() -> c_int {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// Our part of a hook: `body` under the reentrancy guard and `catch_unwind`, errno as it was
/// before. None when re-entered, when `body` gives None, or when it panicked.
pub fn guarded<T>(body: impl FnOnce() -> Option<T>) -> Option<T> {
    let _g = enter()?;
    let e = get_errno();
    let r = catch_unwind(AssertUnwindSafe(body)).ok().flatten();
    set_errno(e);
    r
}

// ---------------------------------------------------------------------------------------
// Constructor

extern "C" fn init() {
    // A process pays for nothing before its first intercepted call: no allocation (a
    // process's first malloc costs glibc a search of its symbol table), no symbol lookup,
    // no mapping, no parsing; the configuration is read and each real function found at
    // its first use. A process that asks for an upgrade only has `before_fork` run before
    // each fork.
    if !config::wanted() {
        return;
    }
    // SAFETY: registers a function of the type pthread_atfork takes; none for after.
    unsafe { libc::pthread_atfork(Some(before_fork), None, None) };
}

/// In the parent, before a fork: what the child must inherit rather than make. Every real
/// function found (a child of a threaded program must not call dlsym, whose lock another
/// thread may have held at the fork), and the names' table mapped (a child that resolves
/// must fill its parent's table). At the second fork, a check of each.
extern "C" fn before_fork() {
    let _ = catch_unwind(|| {
        let _g = enter();
        real::init();
        names::init();
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

// ---------------------------------------------------------------------------------------
// connect and TCP Fast Open

enum Decision {
    /// Not ours: the real call.
    Pass,
    /// Upgraded (Ok) or failed with an errno.
    Done(Result<(), c_int>),
}

/// The shared decision of connect, sendto and sendmsg with MSG_FASTOPEN.
fn decide(fd: c_int, dest: Dest<'_>, matched: &mut bool) -> Decision {
    let st = config::state();
    let cfg = &st.cfg;
    if !cfg.engaged() && !socks::any() {
        return Decision::Pass;
    }
    // Helpers' keepers that have ended (a host that adopts orphans): reaped here, so that
    // none waits long as a zombie.
    spawn::reap();
    if let Some(r) = reconnect(fd) {
        return Decision::Done(r);
    }
    let Some(t): Option<Target> = dest.target() else {
        return Decision::Pass;
    };
    if fds::is_ours(fd) {
        return Decision::Done(Err(libc::EISCONN));
    }
    if cfg.broken.is_some() {
        // A configuration that could not be read: with AUTOSSL_ERRNO, whatever it could have
        // meant fails; without, everything goes out as it is (the message said so).
        return match cfg.errno {
            Some(e) if cfg.could_match(t.key, t.port) && fds::is_tcp(fd) => {
                *matched = true;
                Decision::Done(Err(e))
            }
            _ => Decision::Pass,
        };
    }
    if !cfg.active() || !cfg.matches(t.key, t.port) || !fds::is_tcp(fd) {
        return Decision::Pass;
    }
    *matched = true;
    Decision::Done(upgrade::upgrade(st, fd, dest, t))
}

/// connect() again on a socket whose connect is pending here, as the kernel answers it:
/// EALREADY while in progress, 0 once connected (later ones EISCONN, as an upgraded
/// socket), the errno after a failure.
fn reconnect(fd: c_int) -> Option<Result<(), c_int>> {
    match pending::check(fd, false)? {
        Outcome::Pending => Some(Err(libc::EALREADY)),
        Outcome::Connected => Some(Ok(())),
        Outcome::Failed { errno, .. } => Some(Err(errno)),
    }
}

/// getsockopt(SO_ERROR) on a socket whose connect is pending here: 0 while in progress
/// and once connected (as the kernel), a failure's errno once.
fn so_error(fd: c_int) -> Option<c_int> {
    Some(match pending::check(fd, true)? {
        Outcome::Pending | Outcome::Connected => 0,
        Outcome::Failed { errno, fresh } => {
            if fresh {
                errno
            } else {
                0
            }
        }
    })
}

/// Run `decide` guarded: Some(result) when it was ours, None to do the real call.
///
/// # Safety
/// `addr` is null or valid for reads of `len` bytes during the call (connect()'s contract).
unsafe fn guarded_decide(
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> Option<Result<(), c_int>> {
    let _g = enter()?;
    // SAFETY: our caller's promise, for the duration of this call.
    let dest = unsafe { Dest::new(addr, len) };
    let mut matched = false;
    let r = catch_unwind(AssertUnwindSafe(|| decide(fd, dest, &mut matched)));
    match r {
        Ok(Decision::Pass) => None,
        Ok(Decision::Done(r)) => Some(r),
        // A bug of ours: after a match, fail closed; before, stay out of the way.
        Err(_) if matched => Some(Err(libc::ECONNREFUSED)),
        Err(_) => None,
    }
}

/// # Safety
/// The C contract of connect(2).
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's arguments, valid by connect()'s contract.
    match unsafe { guarded_decide(fd, addr, len) } {
        Some(Ok(())) => 0,
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
        None => match real::connect() {
            // SAFETY: the real connect with the caller's own arguments.
            Some(f) => unsafe { f(fd, addr, len) },
            None => {
                set_errno(libc::ENOSYS);
                -1
            }
        },
    }
}

/// # Safety
/// The C contract of sendto(2).
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    let Some(real_sendto) = real::sendto() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    if flags & libc::MSG_FASTOPEN == 0 || addr.is_null() {
        // SAFETY: the real sendto with the caller's own arguments.
        return unsafe { real_sendto(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: the caller's destination, valid by sendto()'s contract.
    match unsafe { guarded_decide(fd, addr, len) } {
        // SAFETY: the real sendto with the caller's own arguments.
        None => unsafe { real_sendto(fd, buf, n, flags, addr, len) },
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
        // SAFETY: the caller's buffer, now on the upgraded (connected) descriptor.
        Some(Ok(())) => unsafe {
            real_sendto(fd, buf, n, flags & !libc::MSG_FASTOPEN, std::ptr::null(), 0)
        },
    }
}

/// # Safety
/// The C contract of sendmsg(2).
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let Some(real_sendmsg) = real::sendmsg() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    let name = if flags & libc::MSG_FASTOPEN == 0 {
        None
    } else {
        // SAFETY: msg, when not null, is the caller's valid msghdr (sendmsg()'s contract).
        unsafe { msg.as_ref() }.map(|m| (m.msg_name as *const sockaddr, m.msg_namelen))
    };
    let Some((addr, len)) = name.filter(|(a, _)| !a.is_null()) else {
        // SAFETY: the real sendmsg with the caller's own arguments.
        return unsafe { real_sendmsg(fd, msg, flags) };
    };
    // SAFETY: the caller's destination, valid for msg_namelen bytes by sendmsg()'s contract.
    match unsafe { guarded_decide(fd, addr, len) } {
        // SAFETY: the real sendmsg with the caller's own arguments.
        None => unsafe { real_sendmsg(fd, msg, flags) },
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
        Some(Ok(())) => {
            // SAFETY: msg is the caller's valid msghdr (not null: it gave a name).
            let mut m = unsafe { std::ptr::read(msg) };
            m.msg_name = std::ptr::null_mut();
            m.msg_namelen = 0;
            // SAFETY: the caller's message without its name, on the upgraded descriptor.
            unsafe { real_sendmsg(fd, &m, flags & !libc::MSG_FASTOPEN) }
        }
    }
}

// ---------------------------------------------------------------------------------------
// accept and accept4: the server side (see accept.rs)

/// The real call's new descriptor `fd` (or its failure), then ours: the descriptor, or -1
/// with the errno of a connection that had to be closed.
fn accepted(listener: c_int, fd: c_int) -> c_int {
    if fd < 0 {
        return fd;
    }
    match guarded(|| accept::on_accept(listener, fd).err()) {
        None => fd,
        Some(e) => {
            // SAFETY: the descriptor the real accept just gave, not yet the program's.
            unsafe { libc::close(fd) };
            set_errno(e);
            -1
        }
    }
}

/// # Safety
/// The C contract of accept(2).
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(f) = real::accept() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY: the real accept with the caller's own arguments.
    accepted(fd, unsafe { f(fd, addr, len) })
}

/// # Safety
/// The C contract of accept4(2).
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(f) = real::accept4() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY: the real accept4 with the caller's own arguments.
    accepted(fd, unsafe { f(fd, addr, len, flags) })
}

// ---------------------------------------------------------------------------------------
// The faked TCP socket API on swapped descriptors

/// Copy `bytes` into the caller's (addr, len) with the kernel's truncation rule.
///
/// # Safety
/// `len` is valid for reads and writes, `addr` for writes of `*len` bytes.
unsafe fn give_addr(bytes: &[u8], addr: *mut sockaddr, len: *mut socklen_t) {
    // SAFETY: our caller's promise on len.
    let room = unsafe { *len } as usize;
    let n = room.min(bytes.len());
    // SAFETY: our caller's promise: addr has room for `*len` bytes, and n <= *len.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, n) };
    // SAFETY: our caller's promise on len.
    unsafe { *len = bytes.len() as socklen_t };
}

/// getpeername (`peer`) or getsockname.
///
/// # Safety
/// The C contract of getpeername(2): `len` null or valid, `addr` valid for `*len` bytes.
unsafe fn name_hook(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, peer: bool) -> c_int {
    let f = real::sockname(peer);
    let Some(f) = f else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    if !socks::any() || addr.is_null() || len.is_null() {
        // SAFETY: the real function with the caller's own arguments.
        return unsafe { f(fd, addr, len) };
    }
    let done = guarded(|| {
        let ent = socks::find(fd)?;
        let (b, n) = if peer { ent.peer() } else { ent.local() };
        if n == 0 {
            return None;
        }
        // SAFETY: the caller's (addr, len), not null, valid by getpeername()'s contract.
        unsafe { give_addr(&b[..n], addr, len) };
        Some(())
    });
    match done {
        Some(()) => 0,
        // SAFETY: the real function with the caller's own arguments.
        None => unsafe { f(fd, addr, len) },
    }
}

/// # Safety
/// The C contract of getpeername(2).
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments, valid by getpeername()'s contract.
    unsafe { name_hook(fd, addr, len, true) }
}

/// # Safety
/// The C contract of getsockname(2).
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments, valid by getsockname()'s contract.
    unsafe { name_hook(fd, addr, len, false) }
}

const TCP_ESTABLISHED: u8 = 1;

/// A TCP socket of a family for the kernel's answers about options, closed when dropped.
struct Scratch(c_int);

impl Scratch {
    fn new(domain: c_int) -> Option<Scratch> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        (fd >= 0).then_some(Scratch(fd))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn ip_level(level: c_int) -> bool {
    level == libc::IPPROTO_TCP || level == libc::IPPROTO_IP || level == libc::IPPROTO_IPV6
}

/// # Safety
/// The C contract of getsockopt(2).
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let Some(f) = real::getsockopt() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    if level == libc::SOL_SOCKET
        && name == libc::SO_ERROR
        && pending::any()
        && !val.is_null()
        && !len.is_null()
    {
        // SAFETY: len is not null and valid by getsockopt()'s contract.
        let room = unsafe { *len } as usize;
        if room >= std::mem::size_of::<c_int>() {
            if let Some(e) = guarded(|| so_error(fd)) {
                // SAFETY: val has room for `*len` bytes, an int's at least; len is valid.
                unsafe {
                    std::ptr::write_unaligned(val as *mut c_int, e);
                    *len = std::mem::size_of::<c_int>() as socklen_t;
                }
                return 0;
            }
        }
    }
    // SAFETY: the real getsockopt with the caller's own arguments.
    let rc = unsafe { f(fd, level, name, val, len) };
    if !socks::any() || val.is_null() || len.is_null() {
        return rc;
    }
    let identity = level == libc::SOL_SOCKET
        && (name == libc::SO_DOMAIN || name == libc::SO_PROTOCOL)
        && rc == 0;
    let faked = ip_level(level) && rc != 0;
    if !identity && !faked {
        return rc;
    }
    let done = guarded(|| {
        let ent = socks::find(fd)?;
        // SAFETY: len is not null and valid by getsockopt()'s contract.
        let room = unsafe { *len } as usize;
        let int = std::mem::size_of::<c_int>();
        if identity {
            let v: c_int = if name == libc::SO_DOMAIN {
                ent.domain
            } else {
                libc::IPPROTO_TCP
            };
            if room < int {
                return None;
            }
            // SAFETY: val has room for `*len` bytes (getsockopt()'s contract), an int's at
            // least; len is valid.
            unsafe {
                std::ptr::write_unaligned(val as *mut c_int, v);
                *len = int as socklen_t;
            }
            return Some(Ok(()));
        }
        // A TCP/IP-level option: the kernel's own answer for a TCP socket of the family
        // (its size, its defaults, its errors), with what the program set on top; TCP_INFO
        // says established, as the connection is.
        let tmp = Scratch::new(ent.domain)?;
        // SAFETY: the caller's (val, len), valid by getsockopt()'s contract.
        let r = unsafe { f(tmp.0, level, name, val, len) };
        if r != 0 {
            return Some(Err(get_errno()));
        }
        // SAFETY: len is valid; the kernel just wrote it.
        let got = unsafe { *len } as usize;
        if level == libc::IPPROTO_TCP && name == libc::TCP_INFO {
            if got >= 1 {
                // SAFETY: val holds at least the first byte of a struct tcp_info
                // (tcpi_state): the kernel wrote `got` bytes.
                unsafe { *(val as *mut u8) = TCP_ESTABLISHED };
            }
        } else if let (true, Some(v)) = (got == int, ent.get_opt(level, name)) {
            // SAFETY: val holds an int (the kernel wrote one).
            unsafe { std::ptr::write_unaligned(val as *mut c_int, v) };
        }
        Some(Ok(()))
    });
    match done {
        Some(Ok(())) => 0,
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
        None => rc,
    }
}

/// # Safety
/// The C contract of setsockopt(2).
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    let Some(f) = real::setsockopt() else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY: the real setsockopt with the caller's own arguments.
    let rc = unsafe { f(fd, level, name, val, len) };
    if rc == 0 || !socks::any() || !ip_level(level) {
        return rc;
    }
    let done = guarded(|| {
        let ent = socks::find(fd)?;
        // The kernel judges the option on a TCP socket of the family (length, value,
        // permission); what needs a connection is taken as it is.
        let tmp = Scratch::new(ent.domain)?;
        // SAFETY: the caller's (val, len), valid by setsockopt()'s contract.
        if unsafe { f(tmp.0, level, name, val, len) } != 0 {
            let e = get_errno();
            if e != libc::ENOTCONN {
                return Some(Err(e));
            }
        }
        if !val.is_null() && len as usize >= std::mem::size_of::<c_int>() {
            // SAFETY: val is valid for `len` bytes (setsockopt()'s contract), an int's.
            let v = unsafe { std::ptr::read_unaligned(val as *const c_int) };
            ent.set_opt(level, name, v);
        }
        Some(Ok(()))
    });
    match done {
        Some(Ok(())) => 0,
        Some(Err(e)) => {
            set_errno(e);
            -1
        }
        None => rc,
    }
}
