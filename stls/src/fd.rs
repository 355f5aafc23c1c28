//! Small, exact wrappers over the fd system calls the engine and the wrappers use.
//! Raw fds on purpose: the UCSPI fd numbers (0/1, 6/7) are an interface, not owned objects.

use std::io;
use std::os::unix::io::RawFd;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Set or clear O_NONBLOCK.
pub fn set_nonblock(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a caller-given fd number reads or sets flags only; a bad fd is an error.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let new = if on {
        fl | libc::O_NONBLOCK
    } else {
        fl & !libc::O_NONBLOCK
    };
    if new != fl {
        // SAFETY: fcntl on a caller-given fd number reads or sets flags only; a bad fd is an error.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// Set or clear FD_CLOEXEC.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a caller-given fd number reads or sets flags only; a bad fd is an error.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let new = if on {
        fl | libc::FD_CLOEXEC
    } else {
        fl & !libc::FD_CLOEXEC
    };
    if new != fl {
        // SAFETY: fcntl on a caller-given fd number reads or sets flags only; a bad fd is an error.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, new) })?;
    }
    Ok(())
}

/// Whether `fd` is open at all.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl on a caller-given fd number reads or sets flags only; a bad fd is an error.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

fn stat(fd: RawFd) -> Option<libc::stat> {
    // SAFETY: libc::stat is plain old data; all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer for the call.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        None
    } else {
        Some(st)
    }
}

/// Whether `fd` can carry a connection: open, and not the character device /dev/null
/// that Rust's runtime puts on fds 0-2 when they were closed at exec.
pub fn is_network(fd: RawFd) -> bool {
    match stat(fd) {
        None => false,
        Some(st) => {
            let null = st.st_mode & libc::S_IFMT == libc::S_IFCHR
                && libc::major(st.st_rdev) == 1
                && libc::minor(st.st_rdev) == 3;
            !null
        }
    }
}

/// Whether `fd` is a terminal: a program started by hand from a shell, not by a super-server.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the fd number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Whether `fd` is a socket.
pub fn is_socket(fd: RawFd) -> bool {
    stat(fd).is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
}

/// Whether two fds refer to the same file (the same socket on 0 and 1, or 0 and 2 under inetd).
pub fn same_file(a: RawFd, b: RawFd) -> bool {
    match (stat(a), stat(b)) {
        (Some(x), Some(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// End the write direction: on a socket `shutdown(SHUT_WR)` (the fd stays open, so a read
/// side on the same socket keeps reading and the number is not reused); on anything else
/// `close`. Returns whether the fd was closed.
/// Tried as a shutdown first, not told by fstat: a confined engine may not stat (glibc's
/// fstat is newfstatat, which also takes paths).
pub fn shut_write(fd: RawFd) -> bool {
    // SAFETY: shutdown on an fd number affects only that socket; not a socket: ENOTSOCK.
    let r = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    if r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOTSOCK) {
        return false;
    }
    close(fd);
    true
}

/// End the read direction: the fd is closed. On a socket the other fd (if shared) keeps
/// the socket open; `SHUT_RD` is not used because it would discard data in flight.
pub fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closing an fd number the caller owns; the number is not used again by it.
        unsafe { libc::close(fd) };
    }
}

/// How many bytes wait to be read on a socket (FIONREAD), without reading them; 0 when
/// unknown.
pub fn pending(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into a local.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if r < 0 {
        0
    } else {
        usize::try_from(n).unwrap_or(0)
    }
}

/// dup2(2).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on fd numbers only.
    cvt(unsafe { libc::dup2(from, to) }).map(|_| ())
}

/// A close-on-exec copy of `fd` on the lowest number from `min` up (F_DUPFD_CLOEXEC).
pub fn dup_above(fd: RawFd, min: RawFd) -> io::Result<RawFd> {
    // SAFETY: fcntl duplicates a caller-given fd number; a bad fd is an error.
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// Write all of `buf` at `offset` of `fd` (pwrite(2)), retrying on EINTR; the file
/// offset is not moved.
pub fn pwrite_all(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: pwrite reads `buf[done..]`, in bounds, for its length.
        let n = unsafe { libc::pwrite(fd, buf[done..].as_ptr().cast(), buf.len() - done, at) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n as usize;
    }
    Ok(())
}

/// A pipe with both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((p[0], p[1]))
}

/// One read(2); EINTR is returned as an error of kind `Interrupted`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One write(2); EINTR is returned as an error of kind `Interrupted`.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of reads.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Write all of `buf` to a blocking fd, retrying on EINTR.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read until EOF from a blocking fd, at most `limit` bytes (more is an error).
pub fn read_to_end(fd: RawFd, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(fd, &mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                if out.len() + n > limit {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "too long"));
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// poll(2) with EINTR reported as zero events, so callers re-check their state.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Whether an error is EAGAIN/EWOULDBLOCK.
pub fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Milliseconds until `deadline` for poll: -1 for none, rounded up so poll never spins.
pub fn poll_timeout(deadline: Option<std::time::Instant>) -> libc::c_int {
    match deadline {
        None => -1,
        Some(d) => {
            let now = std::time::Instant::now();
            if d <= now {
                0
            } else {
                let ms = (d - now).as_micros().div_ceil(1000);
                ms.min(i32::MAX as u128) as libc::c_int
            }
        }
    }
}

/// /dev/null kept open for [`silence_stderr`]: none, an fd, or used.
static KEPT_NULL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(NULL_NONE);
const NULL_NONE: i32 = -1;
const NULL_USED: i32 = -2;

/// Open /dev/null now (close-on-exec) for [`silence_stderr`] to use later: for a process
/// that will not be able to open it then (the sandbox).
pub fn keep_devnull() -> io::Result<()> {
    use std::os::unix::io::IntoRawFd;
    if KEPT_NULL.load(std::sync::atomic::Ordering::Relaxed) != NULL_NONE {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    KEPT_NULL.store(f.into_raw_fd(), std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Point fd 2 at /dev/null: for a process whose stderr is the connection (inetd
/// `nowait`) or must not be held open (a detached helper).
pub fn silence_stderr() {
    use std::os::unix::io::{AsRawFd, IntoRawFd};
    // A confined process opens nothing: it kept /dev/null open from before
    // ([`keep_devnull`]), for this one use (no descriptor is held beyond it).
    match KEPT_NULL.swap(NULL_USED, std::sync::atomic::Ordering::Relaxed) {
        NULL_NONE => KEPT_NULL.store(NULL_NONE, std::sync::atomic::Ordering::Relaxed),
        // Used already: fd 2 is /dev/null.
        NULL_USED => return,
        null => {
            let _ = dup2(null, 2);
            close(null);
            return;
        }
    }
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        if f.as_raw_fd() == 2 {
            // fd 2 was closed and /dev/null landed on it: keep it.
            let _ = f.into_raw_fd();
            return;
        }
        // `f` is closed when it goes out of scope: only fd 2 keeps /dev/null open.
        let _ = dup2(f.as_raw_fd(), 2);
    }
}
