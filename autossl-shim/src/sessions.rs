//! The session descriptions of accepted connections (the server side, see `accept`), for a
//! daemon that asks with `autossl_session(fd, buf, len)`.
//!
//! tlsd runs outside the daemon and the handshake ends after accept() has returned: the
//! description has to reach the daemon's memory without a descriptor per connection (the
//! daemon closes its connections without us: nothing would close one) and without a
//! hook on read. So a table of [`SLOTS`] entries lives in a memfd, made at the first
//! upgraded accept, mapped `MAP_SHARED` (a forked child shares it) and kept open at one
//! descriptor (close-on-exec, from fd 100 up, its identity checked before each use: a
//! daemon that closed or reused that number gets a new table). tlsd gets the memfd and
//! `--session-at=FD:OFFSET`: it writes the wire form at the entry's data, then its length,
//! last, into the entry's length word. The daemon's lookup is by the (st_dev, st_ino) of
//! its socketpair end, as in `socks`.
//!
//! An entry is taken round-robin (a counter in the shared table) among those that are
//! free, whose description was written (that tlsd writes no more) unless its connection
//! is still open in this process, or whose handshake cannot be running any more (claimed
//! longer ago than AUTOSSL_TIMEOUT and a margin): a late tlsd never writes into an entry
//! that another connection has taken. No lock: atomics on the shared memory.

use std::os::raw::{c_char, c_int};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::fds::errno;
use crate::socks::identity;

pub const SLOTS: usize = 1024;
/// The most a description takes (tlsd's bound, `stls_desc::MAX_NOTIFICATION`).
pub const DATA: usize = stls_desc::MAX_NOTIFICATION;

#[repr(C)]
struct Slot {
    dev: AtomicU64,
    ino: AtomicU64,
    /// When it was claimed (CLOCK_MONOTONIC, ms; 0: never).
    claimed: AtomicU64,
    /// The process and descriptor that accepted the connection.
    pid: AtomicI32,
    fd: AtomicI32,
    _pad: [u32; 7],
    /// Written by tlsd, last: the description's length (little-endian; 0: not yet).
    len: AtomicU32,
    data: [u8; DATA],
}

#[repr(C)]
struct Table {
    next: AtomicU32,
    _pad: [u32; 15],
    slots: [Slot; SLOTS],
}

/// Where tlsd writes the length word of a slot: the data follows it.
const LEN_AT: usize = std::mem::offset_of!(Slot, len);
const _: () = assert!(std::mem::offset_of!(Slot, data) == LEN_AT + 4);

static TABLE: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());
static FD: AtomicI32 = AtomicI32::new(-1);
static FD_DEV: AtomicU64 = AtomicU64::new(0);
static FD_INO: AtomicU64 = AtomicU64::new(0);
/// 1 while a thread makes the table (another one goes without a description).
static MAKING: AtomicU32 = AtomicU32::new(0);

fn now_ms() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: CLOCK_MONOTONIC into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// The table and its descriptor, made now if there is none or its descriptor is no longer
/// the memfd.
fn table() -> Option<(&'static Table, c_int)> {
    let t = TABLE.load(Ordering::Acquire);
    let fd = FD.load(Ordering::Acquire);
    if !t.is_null()
        && identity(fd)
            == Some((
                FD_DEV.load(Ordering::Relaxed),
                FD_INO.load(Ordering::Relaxed),
            ))
    {
        // SAFETY: a mapping of a whole Table, never unmapped.
        return Some((unsafe { &*t }, fd));
    }
    if MAKING.swap(1, Ordering::AcqRel) == 1 {
        return None;
    }
    let made = make();
    MAKING.store(0, Ordering::Release);
    made
}

fn make() -> Option<(&'static Table, c_int)> {
    let size = std::mem::size_of::<Table>();
    // SAFETY: memfd_create with a constant NUL-terminated name.
    let m = unsafe { libc::memfd_create(c"autossl-sessions".as_ptr(), libc::MFD_CLOEXEC) };
    if m < 0 {
        return None;
    }
    // Out of the way of the daemon's own low numbers.
    // SAFETY: F_DUPFD_CLOEXEC on our own descriptor.
    let fd = unsafe { libc::fcntl(m, libc::F_DUPFD_CLOEXEC, 100) };
    // SAFETY: closing our own descriptor (the duplicate, if made, stays).
    unsafe { libc::close(m) };
    if fd < 0 {
        return None;
    }
    // SAFETY: ftruncate and mmap on our own memfd; all-zero bytes are a valid Table.
    let p = unsafe {
        if libc::ftruncate(fd, size as libc::off_t) != 0 {
            libc::close(fd);
            return None;
        }
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        return None;
    }
    let (dev, ino) = identity(fd)?;
    FD_DEV.store(dev, Ordering::Relaxed);
    FD_INO.store(ino, Ordering::Relaxed);
    FD.store(fd, Ordering::Release);
    // A table given up (its descriptor was lost) stays mapped: a lookup may be reading it.
    TABLE.store(p as *mut Table, Ordering::Release);
    // SAFETY: the mapping just made, of a whole Table.
    Some((unsafe { &*(p as *const Table) }, fd))
}

/// An entry claimed for one accepted connection.
pub struct Claim {
    slot: &'static Slot,
    /// The memfd, for tlsd.
    pub fd: c_int,
    /// Where tlsd writes (`--session-at=FD:OFFSET`).
    pub offset: u64,
}

/// Claim an entry for a connection whose handshake is bounded by `timeout`; None when
/// there is no table or every entry is in use.
pub fn claim(timeout: Duration) -> Option<Claim> {
    let (t, fd) = table()?;
    let now = now_ms().max(1);
    let expired = timeout.as_millis() as u64 + 5_000;
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    for _ in 0..SLOTS {
        let i = t.next.fetch_add(1, Ordering::Relaxed) as usize % SLOTS;
        let s = &t.slots[i];
        let c = s.claimed.load(Ordering::Acquire);
        let written = s.len.load(Ordering::Acquire) != 0;
        let open_here = written
            && s.pid.load(Ordering::Relaxed) == me
            && identity(s.fd.load(Ordering::Relaxed))
                == Some((s.dev.load(Ordering::Relaxed), s.ino.load(Ordering::Relaxed)));
        let free = c == 0 || (written && !open_here) || now.saturating_sub(c) > expired;
        if free
            && s.claimed
                .compare_exchange(c, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            s.dev.store(0, Ordering::Relaxed);
            s.ino.store(0, Ordering::Relaxed);
            s.len.store(0, Ordering::Release);
            let base = std::mem::offset_of!(Table, slots) + i * std::mem::size_of::<Slot>();
            return Some(Claim {
                slot: s,
                fd,
                offset: (base + LEN_AT) as u64,
            });
        }
    }
    None
}

impl Claim {
    /// The entry now answers for the daemon's descriptor `fd` (after the swap).
    pub fn bind(&self, fd: c_int) {
        if let Some((dev, ino)) = identity(fd) {
            // SAFETY: getpid cannot fail.
            self.slot
                .pid
                .store(unsafe { libc::getpid() }, Ordering::Relaxed);
            self.slot.fd.store(fd, Ordering::Relaxed);
            self.slot.dev.store(dev, Ordering::Relaxed);
            self.slot.ino.store(ino, Ordering::Release);
        }
    }
}

/// The description of the connection on `fd` into `out`: Ok(length), or the errno
/// (ENOENT: not an upgraded accepted connection, or forgotten; EAGAIN: its handshake is not
/// done; ERANGE: `out` is too small).
pub fn lookup(fd: c_int, out: &mut [u8]) -> Result<usize, c_int> {
    let Some((dev, ino)) = identity(fd) else {
        return Err(errno());
    };
    let t = TABLE.load(Ordering::Acquire);
    if t.is_null() {
        return Err(libc::ENOENT);
    }
    // SAFETY: a mapping of a whole Table, never unmapped.
    let t = unsafe { &*t };
    let s = t
        .slots
        .iter()
        .find(|s| s.ino.load(Ordering::Acquire) == ino && s.dev.load(Ordering::Relaxed) == dev)
        .ok_or(libc::ENOENT)?;
    let n = s.len.load(Ordering::Acquire) as usize;
    if n == 0 {
        return Err(libc::EAGAIN);
    }
    if n > DATA {
        return Err(libc::EIO);
    }
    if n > out.len() {
        return Err(libc::ERANGE);
    }
    for (i, b) in out[..n].iter_mut().enumerate() {
        // SAFETY: i < n <= DATA: inside the slot's data, shared memory another process
        // wrote before it stored the length (read once here, volatile).
        *b = unsafe { ptr::read_volatile(s.data.as_ptr().add(i)) };
    }
    Ok(n)
}

/// The query a daemon makes (autossl-shim(8), SERVER SIDE): the session description of the
/// accepted connection on `fd`, in its wire form (`KEY=VALUE` entries each ended by a NUL,
/// then a NUL), copied into `buf` (4096 bytes always suffice). Returns its length, or -1
/// with errno ENOENT (not a connection upgraded on accept, or one forgotten after 1024
/// newer ones), EAGAIN (the handshake is not done), ERANGE (`len` too small), EBADF.
///
/// # Safety
/// `buf` is valid for writes of `len` bytes (or `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn autossl_session(fd: c_int, buf: *mut c_char, len: usize) -> isize {
    let r = std::panic::catch_unwind(|| {
        let out: &mut [u8] = if buf.is_null() || len == 0 {
            &mut []
        } else {
            // SAFETY: the caller's promise: buf holds len writable bytes.
            unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, len) }
        };
        lookup(fd, out)
    });
    match r {
        Ok(Ok(n)) => n as isize,
        Ok(Err(e)) => {
            // SAFETY: the thread's errno location is always valid.
            unsafe { *libc::__errno_location() = e };
            -1
        }
        Err(_) => {
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = libc::EIO };
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_write_lookup() {
        let c = claim(Duration::from_secs(1)).expect("a table");
        let mut sv = [0; 2];
        // SAFETY: socketpair writes two ints into a 2-int array.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
        assert_eq!(r, 0);
        c.bind(sv[0]);
        let mut buf = [0u8; DATA];
        assert_eq!(lookup(sv[0], &mut buf), Err(libc::EAGAIN));
        assert_eq!(lookup(sv[1], &mut buf), Err(libc::ENOENT));
        // As tlsd does: the bytes, then the length.
        let wire = b"SSL_PROTOCOL=TLSv1.3\0\0";
        // SAFETY: pwrite of our buffers into the memfd, inside the table.
        unsafe {
            libc::pwrite(
                c.fd,
                wire.as_ptr() as *const _,
                wire.len(),
                (c.offset + 4) as i64,
            );
            let l = (wire.len() as u32).to_le_bytes();
            libc::pwrite(c.fd, l.as_ptr() as *const _, 4, c.offset as i64);
        }
        assert_eq!(lookup(sv[0], &mut buf), Ok(wire.len()));
        assert_eq!(&buf[..wire.len()], wire);
        assert_eq!(lookup(sv[0], &mut buf[..3]), Err(libc::ERANGE));
        // Still open here: its entry is not taken while others are free.
        for _ in 0..SLOTS - 1 {
            let _ = claim(Duration::from_secs(1)).expect("free entries");
        }
        assert_eq!(lookup(sv[0], &mut buf), Ok(wire.len()));
        // SAFETY: closing our own fds.
        unsafe {
            libc::close(sv[0]);
            libc::close(sv[1]);
        }
    }
}
