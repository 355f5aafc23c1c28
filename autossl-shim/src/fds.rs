//! System calls on descriptors, as the upgrade needs them: what a socket is, waiting on it,
//! the flags and owners carried over to the descriptor that takes its place, owned
//! descriptors that close themselves.

use std::os::raw::c_int;
use std::time::{Duration, Instant};

use libc::{sockaddr, socklen_t};

use crate::{real, socks};

pub fn int_opt(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
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

pub fn errno() -> c_int {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

pub fn millis(d: Duration) -> c_int {
    d.as_millis().min(i32::MAX as u128) as c_int
}

/// Wait for `events` on `fd` until `deadline`: Ok(revents), Err(ETIMEDOUT) or the errno.
pub fn poll_until(fd: c_int, events: i16, deadline: Instant) -> Result<i16, c_int> {
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

pub fn set_fl(fd: c_int, fl: c_int) {
    // SAFETY: F_SETFL takes an int; on a bad fd it fails without harm.
    unsafe {
        libc::fcntl(fd, libc::F_SETFL, fl);
    }
}

pub fn sockaddr_bytes(fd: c_int, peer: bool) -> ([u8; 128], usize) {
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
pub struct Carried {
    fd_flags: c_int,
    fl: c_int,
    owner: Option<[c_int; 2]>,
    sig: Option<c_int>,
    rcvtimeo: Option<libc::timeval>,
    sndtimeo: Option<libc::timeval>,
}

pub const F_SETSIG: c_int = 10;
pub const F_GETSIG: c_int = 11;
pub const F_SETOWN_EX: c_int = 15;
pub const F_GETOWN_EX: c_int = 16;

/// A socket's SO_RCVTIMEO or SO_SNDTIMEO, when set (non-zero).
pub fn timeo(fd: c_int, name: c_int) -> Option<libc::timeval> {
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
    pub fn of(fd: c_int, fl: c_int, fd_flags: c_int) -> Carried {
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
    pub fn swap(&self, app: c_int, fd: c_int) -> Result<(), c_int> {
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
pub struct Fd(pub c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: closing a descriptor we own.
            unsafe { libc::close(self.0) };
        }
    }
}

pub fn socketpair() -> Result<(Fd, Fd), c_int> {
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

pub fn pipe() -> Result<(Fd, Fd), c_int> {
    let mut p = [-1; 2];
    // SAFETY: pipe2 writes two ints into a 2-int array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno());
    }
    Ok((Fd(p[0]), Fd(p[1])))
}
