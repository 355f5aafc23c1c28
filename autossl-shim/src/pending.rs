//! Non-blocking connects in progress: the program's own readiness wait and `SO_ERROR`
//! check drive them, at the program's own pace.
//!
//! Design. The descriptor the program holds when `connect()` returns EINPROGRESS must
//! already be the final one: programs register it with epoll at once, and a registration
//! follows the open file, not the number. So, inside that `connect()`:
//!
//! 1. the kernel's non-blocking connect starts on the caller's socket;
//! 2. a socketpair is made, and the send buffer of the program's end filled with N bytes
//!    (until EAGAIN): that end is now unwritable, as a connecting TCP socket is;
//! 3. tlsc starts with the connecting socket as its network (`--pending-connect`: it waits
//!    for the connect and takes its errno from SO_ERROR before any write could consume
//!    it), the other end as its clear side and `--discard=N`;
//! 4. the program's end takes the caller's descriptor number (dup3, flags kept), and an
//!    entry here keeps tlsc's notification pipe; connect() returns EINPROGRESS.
//!
//! tlsc then writes the outcome on the pipe — the session description, or `!errno
//! message` — and either drops the filler (the program's end becomes writable: the
//! connection is usable) or exits (the program's end hangs up). Either way the program's
//! poll/select/epoll wakes after the outcome is on the pipe, and what it asks next is
//! answered from it: `getsockopt(SO_ERROR)` 0, or the errno once (as the kernel clears
//! it); a second `connect()` EALREADY while pending, 0 once connected (then EISCONN, from
//! the table of upgraded sockets), the errno after a failure. A TCP errno (refused,
//! unreachable, timed out) is the kernel's own; a failed handshake is ECONNREFUSED
//! (ETIMEDOUT at tlsc's handshake timeout), or AUTOSSL_ERRNO. The messages that the
//! blocking path prints before connect() returns are printed when the outcome is read.
//!
//! The table: [`SLOTS`] entries of atomics in the process's own memory, keyed like the
//! upgraded sockets by the `(st_dev, st_ino)` of the program's end. One thread at a time
//! holds an entry (compare-and-swap to `BUSY`); no lock, nothing a fork could leave held.
//! Eviction: when a connect reserves an entry, every entry whose descriptor number no
//! longer holds its socket (the program closed it) is freed and its pipe closed, and an
//! entry whose outcome has come is settled (a connected one freed, a failed one keeps
//! only its errno): a program that uses its socket without asking still frees it. A live
//! entry is never evicted: with the table full of them, the next non-blocking connect is
//! completed inside connect(), as a blocking one is.
//!
//! After a fork, only the process that made the connect reads its pipe; the other one
//! answers from what the socket shows.
//!
//! In the host: one pipe end per pending connect (close-on-exec), closed when the outcome
//! is read. It is checked by identity before each read: a program that closed it (a
//! closefrom) and reused the number loses the report, never its data; the outcome is then
//! read off the program's end itself (hang-up: failed; writable: connected).

use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use stls_desc::{Cause, Description, Failure, MAX_NOTIFICATION};

use crate::socks::identity;

pub const SLOTS: usize = 256;

const FREE: u32 = 0;
const BUSY: u32 = 1;
/// Connecting: the pipe is open.
const PENDING: u32 = 2;
/// Failed: `errno` holds the errno; the pipe is closed.
const FAILED: u32 = 3;

/// What the messages about a pending connect need, made in connect().
pub struct Info {
    /// When connect() was called.
    pub started: Instant,
    /// tlsc's handshake timeout.
    pub timeout: Duration,
    /// AUTOSSL_ERRNO, for a failure after the TCP connection was made.
    pub fail_errno: Option<c_int>,
    /// No messages (AUTOSSL_SILENT, or the connection is on fd 2).
    pub silent: bool,
    /// AUTOSSL_VERBOSE: the line `fd N: IP port P name X`, said with the outcome.
    pub verbose: Option<String>,
    /// `IP port P (name X)`: tlsc's failure is said with it.
    pub dest: String,
    /// Said when the handshake failed: why the address was verified, what settles it.
    pub advice: Option<String>,
}

struct Slot {
    state: AtomicU32,
    /// The process that made the connect: only it reads the pipe (a forked child has a
    /// copy of the table and of the pipe, and must not take its parent's report).
    owner: AtomicI32,
    fd: AtomicI32,
    dev: AtomicU64,
    ino: AtomicU64,
    pipe: AtomicI32,
    pipe_dev: AtomicU64,
    pipe_ino: AtomicU64,
    errno: AtomicI32,
    /// FAILED: SO_ERROR has given the errno already.
    seen: AtomicBool,
    info: AtomicPtr<Info>,
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    state: AtomicU32::new(FREE),
    owner: AtomicI32::new(0),
    fd: AtomicI32::new(-1),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
    pipe: AtomicI32::new(-1),
    pipe_dev: AtomicU64::new(0),
    pipe_ino: AtomicU64::new(0),
    errno: AtomicI32::new(0),
    seen: AtomicBool::new(false),
    info: AtomicPtr::new(std::ptr::null_mut()),
};

static TABLE: [Slot; SLOTS] = [SLOT; SLOTS];
/// Has a connect ever been left pending here (the fast path when not)?
static ANY: AtomicBool = AtomicBool::new(false);

/// Has any non-blocking connect been left pending in this process?
pub fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

fn claim(s: &Slot, from: u32) -> bool {
    s.state
        .compare_exchange(from, BUSY, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Close the entry's pipe (if it is still ours) and drop its info. The caller holds it.
fn close_pipe(s: &Slot) {
    let p = s.pipe.swap(-1, Ordering::Relaxed);
    let k = (
        s.pipe_dev.load(Ordering::Relaxed),
        s.pipe_ino.load(Ordering::Relaxed),
    );
    if p >= 0 && identity(p) == Some(k) {
        // SAFETY: closing the pipe end this entry owns (checked by identity).
        unsafe { libc::close(p) };
    }
    let info = s.info.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !info.is_null() {
        // SAFETY: the pointer came from Box::into_raw in `publish`, and the swap took it
        // out of the entry: this is its only owner.
        drop(unsafe { Box::from_raw(info) });
    }
}

/// An entry held for a connect under way: published, or freed when dropped.
pub struct Reservation {
    slot: &'static Slot,
    published: bool,
}

/// Hold an entry for a new pending connect, after freeing the entries of closed sockets
/// and settling those whose outcome has come (a program that uses its socket without
/// asking SO_ERROR); None when every entry is live.
pub fn reserve() -> Option<Reservation> {
    for s in TABLE.iter() {
        let st = s.state.load(Ordering::Acquire);
        if st != PENDING && st != FAILED {
            continue;
        }
        let fd = s.fd.load(Ordering::Relaxed);
        let k = (s.dev.load(Ordering::Relaxed), s.ino.load(Ordering::Relaxed));
        if identity(fd) != Some(k) {
            if claim(s, st) {
                close_pipe(s);
                s.ino.store(0, Ordering::Relaxed);
                s.state.store(FREE, Ordering::Release);
            }
        } else if st == PENDING && owned(s) && claim(s, PENDING) {
            settle(s, fd);
        }
    }
    TABLE
        .iter()
        .find(|s| s.state.load(Ordering::Relaxed) == FREE && claim(s, FREE))
        .map(|slot| Reservation {
            slot,
            published: false,
        })
}

impl Reservation {
    /// The connect on `fd` (the program's end, in place) is pending; `pipe` is tlsc's
    /// notification pipe's reading end, which the entry now owns.
    pub fn publish(mut self, fd: c_int, pipe: c_int, info: Box<Info>) -> Result<(), c_int> {
        let (Some((dev, ino)), Some((pdev, pino))) = (identity(fd), identity(pipe)) else {
            return Err(libc::EBADF);
        };
        // SAFETY: F_GETFL/F_SETFL on our own pipe end: its reads must never block a hook.
        unsafe {
            let fl = libc::fcntl(pipe, libc::F_GETFL);
            libc::fcntl(pipe, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let s = self.slot;
        // SAFETY: getpid has no preconditions.
        s.owner.store(unsafe { libc::getpid() }, Ordering::Relaxed);
        s.fd.store(fd, Ordering::Relaxed);
        s.dev.store(dev, Ordering::Relaxed);
        s.ino.store(ino, Ordering::Relaxed);
        s.pipe.store(pipe, Ordering::Relaxed);
        s.pipe_dev.store(pdev, Ordering::Relaxed);
        s.pipe_ino.store(pino, Ordering::Relaxed);
        s.errno.store(0, Ordering::Relaxed);
        s.seen.store(false, Ordering::Relaxed);
        s.info.store(Box::into_raw(info), Ordering::Release);
        ANY.store(true, Ordering::Relaxed);
        s.state.store(PENDING, Ordering::Release);
        self.published = true;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.published {
            self.slot.state.store(FREE, Ordering::Release);
        }
    }
}

/// Where a pending connect is, as the program may ask.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Connected,
    /// `fresh`: SO_ERROR has not given it yet.
    Failed {
        errno: c_int,
        fresh: bool,
    },
}

/// The outcome of the connect pending on `fd`, if one is; `take`: SO_ERROR is asking (a
/// failure's errno is given once).
pub fn check(fd: c_int, take: bool) -> Option<Outcome> {
    if !any() {
        return None;
    }
    let key = identity(fd)?;
    let s = TABLE.iter().find(|s| {
        let st = s.state.load(Ordering::Acquire);
        (st == PENDING || st == FAILED)
            && s.ino.load(Ordering::Relaxed) == key.1
            && s.dev.load(Ordering::Relaxed) == key.0
    })?;
    let failed = |s: &Slot| {
        let fresh = if take {
            !s.seen.swap(true, Ordering::Relaxed)
        } else {
            !s.seen.load(Ordering::Relaxed)
        };
        Outcome::Failed {
            errno: s.errno.load(Ordering::Relaxed),
            fresh,
        }
    };
    match s.state.load(Ordering::Acquire) {
        FAILED => return Some(failed(s)),
        // Another process's connect (we were forked from it): what the socket shows.
        PENDING if !owned(s) => {
            return Some(match from_socket(fd) {
                Read::Pending => Outcome::Pending,
                Read::Connected => Outcome::Connected,
                Read::Failed(_) => Outcome::Failed {
                    errno: libc::ECONNREFUSED,
                    fresh: true,
                },
            })
        }
        PENDING if claim(s, PENDING) => {}
        // Another thread is reading it (or it is being set up): still in progress.
        _ => return Some(Outcome::Pending),
    }
    Some(match settle(s, fd) {
        Read::Pending => Outcome::Pending,
        Read::Connected => Outcome::Connected,
        Read::Failed(_) => failed(s),
    })
}

/// Was the entry's connect made by this process?
fn owned(s: &Slot) -> bool {
    // SAFETY: getpid has no preconditions.
    s.owner.load(Ordering::Relaxed) == unsafe { libc::getpid() }
}

/// Read the outcome of the held entry `s` of `fd`, and leave the entry as it says:
/// pending again, freed (connected), or failed with the errno.
fn settle(s: &Slot, fd: c_int) -> Read {
    let o = read_outcome(s, fd);
    match o {
        Read::Pending => s.state.store(PENDING, Ordering::Release),
        Read::Connected => {
            close_pipe(s);
            s.ino.store(0, Ordering::Relaxed);
            s.state.store(FREE, Ordering::Release);
        }
        Read::Failed(e) => {
            close_pipe(s);
            s.errno.store(e, Ordering::Relaxed);
            s.seen.store(false, Ordering::Relaxed);
            s.state.store(FAILED, Ordering::Release);
        }
    }
    o
}

enum Read {
    Pending,
    Connected,
    Failed(c_int),
}

/// Read what tlsc wrote on the entry's pipe (the caller holds the entry), and say what
/// there is to say about it.
fn read_outcome(s: &Slot, fd: c_int) -> Read {
    // SAFETY: the entry is held (BUSY) by the caller and its info was published with it;
    // only the holder frees it.
    let Some(info) = (unsafe { s.info.load(Ordering::Acquire).as_ref() }) else {
        return Read::Pending;
    };
    let pipe = s.pipe.load(Ordering::Relaxed);
    let key = (
        s.pipe_dev.load(Ordering::Relaxed),
        s.pipe_ino.load(Ordering::Relaxed),
    );
    if pipe < 0 || identity(pipe) != Some(key) {
        return match from_socket(fd) {
            Read::Failed(_) => failed_tls(info, None),
            r => r,
        };
    }
    // A description, or a failure with its message: one more byte to see an overlong one.
    let mut buf = [0u8; MAX_NOTIFICATION + 1];
    let mut got = 0;
    let mut eof = false;
    while got < buf.len() {
        let room = &mut buf[got..];
        // SAFETY: read writes at most room.len() bytes into our buffer; the pipe is ours
        // (checked above) and non-blocking.
        let n = unsafe { libc::read(pipe, room.as_mut_ptr() as *mut libc::c_void, room.len()) };
        if n > 0 {
            got += n as usize;
            continue;
        }
        let e = errno();
        if n < 0 && e == libc::EINTR {
            continue;
        }
        eof = n == 0 || e != libc::EAGAIN;
        break;
    }
    let data = &buf[..got];
    if let Some(report) = Failure::decode(data) {
        if report.errno > 0 {
            // The TCP connect's own errno: the program reports it as without the library.
            return Read::Failed(report.errno);
        }
        return failed_tls(info, Some(&report));
    }
    match Description::decode_notification(data) {
        Ok(d) => {
            if let Some(line) = &info.verbose {
                let get = |k| d.get(k).map(|v| v.to_string_lossy()).unwrap_or_default();
                say(
                    info,
                    &format!(
                        "{line}: {} {} {}",
                        get("SSL_PROTOCOL"),
                        get("SSL_CIPHER"),
                        get("SSL_GROUP")
                    ),
                );
            }
            Read::Connected
        }
        Err(_) if !eof && got < buf.len() => Read::Pending,
        Err(_) => failed_tls(info, None),
    }
}

/// Without the pipe: what the program's end shows (tlsc hung up, or drained the filler).
fn from_socket(fd: c_int) -> Read {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r <= 0 {
        Read::Pending
    } else if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
        Read::Failed(libc::ECONNREFUSED)
    } else {
        Read::Connected
    }
}

/// A failure after the TCP connection was made: tlsc's reason said with the destination,
/// the advice if the name was not known; ETIMEDOUT at tlsc's handshake timeout, else
/// ECONNREFUSED (or AUTOSSL_ERRNO).
fn failed_tls(info: &Info, report: Option<&Failure>) -> Read {
    if let Some(m) = report.map(|r| r.msg.trim()).filter(|m| !m.is_empty()) {
        say(info, &format!("{}: tlsc: fatal: {m}", info.dest));
    }
    if let Some(line) = &info.verbose {
        say(info, &format!("{line}: TLS failed"));
    }
    // Not for a certificate that is not trusted at all: that is no matter of names.
    let untrusted = report.is_some_and(|r| r.cause == Cause::Untrusted);
    if let (Some(a), false) = (&info.advice, untrusted) {
        say(info, a);
    }
    let e = if info.started.elapsed() + Duration::from_millis(50) >= info.timeout {
        libc::ETIMEDOUT
    } else {
        libc::ECONNREFUSED
    };
    Read::Failed(info.fail_errno.unwrap_or(e))
}

fn say(info: &Info, text: &str) {
    if !info.silent {
        crate::say::message(text);
    }
}

fn errno() -> c_int {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is the process's: one test at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn info() -> Box<Info> {
        Box::new(Info {
            started: Instant::now(),
            timeout: Duration::from_secs(30),
            fail_errno: None,
            silent: true,
            verbose: None,
            dest: String::new(),
            advice: None,
        })
    }

    fn pair() -> (c_int, c_int) {
        let mut sv = [-1; 2];
        // SAFETY: socketpair writes two ints into a 2-int array.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
        assert_eq!(r, 0);
        (sv[0], sv[1])
    }

    fn write(fd: c_int, b: &[u8]) {
        // SAFETY: write reads b.len() bytes of b.
        let n = unsafe { libc::write(fd, b.as_ptr() as *const libc::c_void, b.len()) };
        assert_eq!(n, b.len() as isize);
    }

    fn close(fd: c_int) {
        // SAFETY: closing our own descriptor.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn outcomes_from_the_pipe() {
        let _one = SERIAL.lock();
        // Connected: pending until the description, then no longer in the table.
        let (app, _peer) = pair();
        let (r, w) = pair();
        reserve()
            .expect("room")
            .publish(app, r, info())
            .expect("published");
        assert_eq!(check(app, true), Some(Outcome::Pending));
        write(w, b"SSL_PROTOCOL=TLSv1.3\0\0");
        assert_eq!(check(app, false), Some(Outcome::Connected));
        assert_eq!(check(app, true), None);
        close(w);

        // A TCP errno: given once to SO_ERROR, always to connect().
        let (app2, _peer2) = pair();
        let (r, w) = pair();
        reserve()
            .expect("room")
            .publish(app2, r, info())
            .expect("published");
        write(w, b"!111 unable to connect: Connection refused");
        close(w);
        let refused = |fresh| Some(Outcome::Failed { errno: 111, fresh });
        assert_eq!(check(app2, false), refused(true));
        assert_eq!(check(app2, true), refused(true));
        assert_eq!(check(app2, true), refused(false));

        // EOF with nothing, or a failed handshake's report: ECONNREFUSED.
        for said in [&b""[..], &b"!0 handshake failed"[..]] {
            let (app3, _peer3) = pair();
            let (r, w) = pair();
            reserve()
                .expect("room")
                .publish(app3, r, info())
                .expect("published");
            write(w, said);
            close(w);
            assert_eq!(
                check(app3, true),
                Some(Outcome::Failed {
                    errno: libc::ECONNREFUSED,
                    fresh: true
                })
            );
            close(app3);
        }

        // The program closed its end: the next reservation frees the entry.
        close(app2);
        close(app);
        for _ in 0..SLOTS {
            let held = reserve().expect("entries of closed sockets are freed");
            drop(held);
        }
    }

    #[test]
    fn a_table_of_live_entries_is_full() {
        let _one = SERIAL.lock();
        let mut live = Vec::new();
        let mut held = Vec::new();
        while let Some(r) = reserve() {
            held.push(r);
            assert!(held.len() <= SLOTS);
        }
        assert!(!held.is_empty());
        for r in held {
            let (app, peer) = pair();
            let (pr, pw) = pair();
            r.publish(app, pr, info()).expect("published");
            live.push((app, peer, pw));
        }
        assert!(reserve().is_none(), "a live entry is never evicted");
        for (app, peer, pw) in live {
            close(app);
            close(peer);
            close(pw);
        }
        assert!(reserve().is_some());
    }
}
