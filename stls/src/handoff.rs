//! Connections handed from one process to another over a Unix socket: autossl-shim hands
//! each upgraded connection's descriptors (`SCM_RIGHTS`) to the tlsc it started once
//! (`tlsc --serve`), which forks a process per connection from a context built once. The
//! system calls that takes, behind safe functions; what goes over the socket is the
//! caller's business.
//!
//! Trust is by user: the socket lives in a directory only its user can enter, and each side
//! checks the other's uid (`SO_PEERCRED`) before anything is read or sent.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 8;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The uid of the process at the other end of a connected Unix socket.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes (a ucred) into `cred`.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// A listening `SOCK_SEQPACKET` socket (close-on-exec, non-blocking) bound at `path`,
/// readable and writable by its user only. A file already there is removed first: the
/// caller holds the lock that makes it the only server for `path`.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mut sa = libc::sockaddr_un {
        sun_family: libc::AF_UNIX as libc::sa_family_t,
        sun_path: [0; 108],
    };
    let b = c.as_bytes();
    if b.len() >= sa.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a socket path longer than 107 bytes",
        ));
    }
    for (d, s) in sa.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket takes plain integers.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: a descriptor we just made and own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = std::os::unix::io::AsRawFd::as_raw_fd(&fd);
    // SAFETY: unlink on a NUL-terminated path.
    unsafe { libc::unlink(c.as_ptr()) };
    // The socket file is made 0600: nobody else may even try to connect.
    // SAFETY: umask takes and returns a mode; restored right after bind.
    let old = unsafe { libc::umask(0o177) };
    // SAFETY: bind reads `sa`, a sockaddr_un of the size given.
    let r = unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    check(r)?;
    // SAFETY: listen takes plain integers.
    check(unsafe { libc::listen(raw, 128) })?;
    Ok(fd)
}

/// A connection waiting on `listener`, close-on-exec and blocking; None when none waits.
pub fn accept(listener: RawFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: accept4 with no address wanted.
    let r = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: a descriptor accept4 just made for us.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(r) }))
}

/// One message from `fd` into `buf`, and the descriptors that came with it (close-on-exec,
/// at most [`MAX_FDS`]; a message cut short, or with more descriptors, is an error).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    const SPACE: usize = 64 + MAX_FDS * std::mem::size_of::<libc::c_int>();
    let mut cbuf = [0u64; SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data: all zeros is a valid value, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: recvmsg writes into `buf` (iov) and `cbuf` (control), both live and of the
    // sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages recvmsg filled in, with the C library's macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const libc::c_int;
                let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message cut short, or with too many descriptors",
        ));
    }
    Ok((n as usize, fds))
}

/// An exclusive lock on the open file `fd`: false when another process holds it.
pub fn try_lock(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock takes plain integers.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Whether `dir` is a directory (not a link) owned by this user that nobody else can
/// enter.
pub fn private_dir(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) => m.is_dir() && m.uid() == euid() && m.mode() & 0o077 == 0,
        Err(_) => false,
    }
}

/// `fork(2)`: `Some(pid)` in the parent, `None` in the child. For a single-threaded
/// caller.
pub fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller is single-threaded (the helper's accepting loop): the child is a
    // complete copy and may run any code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// In a child: `sig` when the parent ends (a killed helper ends its connections).
pub fn end_with_parent(sig: libc::c_int) {
    // SAFETY: prctl with plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
}

/// The parent's pid (1, or a subreaper's, once the parent has ended).
pub fn parent_pid() -> u32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// A session of our own (no controlling terminal, no signal from the starter's).
pub fn new_session() {
    // SAFETY: setsid takes nothing; failing (already a leader) is harmless.
    unsafe { libc::setsid() };
}

/// Reap every child that has ended, without blocking: how many.
pub fn reap_children() -> usize {
    let mut n = 0;
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes the status into a local.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
        if r > 0 {
            n += 1;
            continue;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return n;
    }
}

/// Put descriptors in place: `(source, target)` pairs, a source possibly another's
/// target; the targets lose close-on-exec. The sources are left open.
pub fn place(pairs: &[(RawFd, RawFd)]) -> io::Result<()> {
    let mut high = Vec::with_capacity(pairs.len());
    for &(s, _) in pairs {
        // SAFETY: fcntl F_DUPFD_CLOEXEC takes plain integers.
        high.push(check(unsafe { libc::fcntl(s, libc::F_DUPFD_CLOEXEC, 64) })?);
    }
    let mut r = Ok(());
    for (h, &(_, t)) in high.iter().zip(pairs) {
        // SAFETY: dup2 takes plain integers.
        if unsafe { libc::dup2(*h, t) } < 0 && r.is_ok() {
            r = Err(io::Error::last_os_error());
        }
    }
    for h in high {
        // SAFETY: our own duplicates.
        unsafe { libc::close(h) };
    }
    r
}

/// `sig` back to its default disposition (in a child, before the helper's handler could
/// write to a descriptor number that is now the connection's).
pub fn default_signal(sig: libc::c_int) {
    // SAFETY: signal with SIG_DFL on a valid signal number.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// Descriptors 0, 1 and 2 on /dev/null: a long-lived helper holds nothing of the program
/// that started it.
pub fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let n = std::os::unix::io::AsRawFd::as_raw_fd(&null);
        for t in 0..3 {
            if n != t {
                // SAFETY: dup2 takes plain integers.
                unsafe { libc::dup2(n, t) };
            }
        }
        if n <= 2 {
            let _ = std::os::unix::io::IntoRawFd::into_raw_fd(null);
        }
    }
}

/// End a forked connection's process at once with `code`: nothing the helper set up for
/// itself (OpenSSL's global state, buffered output) needs tearing down in it.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running any code.
    unsafe { libc::_exit(code) }
}
