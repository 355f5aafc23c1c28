//! The upgraded sockets: what the program's descriptor was before the swap, so that
//! `getpeername`, `getsockname`, `getsockopt`, `setsockopt` and a second `connect` answer
//! as for the original TCP socket.
//!
//! A fixed table of [`SLOTS`] entries in the process's own memory (a forked child gets a
//! copy, as it gets a copy of the descriptors). An entry is keyed by the `(st_dev, st_ino)`
//! of the socketpair end the program holds: that survives `dup`, `fork` and `SCM_RIGHTS`
//! without hooking `close` or `dup*`. Eviction: a free entry, else one whose descriptor
//! number no longer refers to its socket (closed), else the next one round-robin.
//! Entries are claimed and published with atomics: no lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const SLOTS: usize = 1024;
const ADDR_WORDS: usize = 16; // 128 bytes: a sockaddr_storage
const OPTS: usize = 8;

const FREE: u32 = 0;
const BUSY: u32 = 1;
const READY: u32 = 2;

struct Slot {
    state: AtomicU32,
    fd: AtomicU32,
    dev: AtomicU64,
    ino: AtomicU64,
    domain: AtomicU32,
    peer_len: AtomicU32,
    peer: [AtomicU64; ADDR_WORDS],
    local_len: AtomicU32,
    local: [AtomicU64; ADDR_WORDS],
    /// Options set at the TCP/IP levels: bit 63 used, level (16 bits), name (16), value (32).
    opts: [AtomicU64; OPTS],
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    state: AtomicU32::new(FREE),
    fd: AtomicU32::new(0),
    dev: AtomicU64::new(0),
    ino: AtomicU64::new(0),
    domain: AtomicU32::new(0),
    peer_len: AtomicU32::new(0),
    peer: [const { AtomicU64::new(0) }; ADDR_WORDS],
    local_len: AtomicU32::new(0),
    local: [const { AtomicU64::new(0) }; ADDR_WORDS],
    opts: [const { AtomicU64::new(0) }; OPTS],
};

static TABLE: [Slot; SLOTS] = [SLOT; SLOTS];
/// How many entries were ever published (0: nothing to look up, the fast path).
static USED: AtomicU32 = AtomicU32::new(0);
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Has any socket been upgraded in this process (or its parent before a fork)?
pub fn any() -> bool {
    USED.load(Ordering::Relaxed) != 0
}

/// The (st_dev, st_ino) of an open descriptor.
pub fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: fstat writes into a zeroed stat.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        Some((st.st_dev, st.st_ino))
    }
}

fn put_bytes(words: &[AtomicU64; ADDR_WORDS], b: &[u8]) {
    let mut buf = [0u8; ADDR_WORDS * 8];
    let n = b.len().min(buf.len());
    buf[..n].copy_from_slice(&b[..n]);
    for (w, c) in words.iter().zip(buf.chunks(8)) {
        let mut x = [0u8; 8];
        x.copy_from_slice(c);
        w.store(u64::from_ne_bytes(x), Ordering::Relaxed);
    }
}

fn get_bytes(words: &[AtomicU64; ADDR_WORDS]) -> [u8; ADDR_WORDS * 8] {
    let mut buf = [0u8; ADDR_WORDS * 8];
    for (w, c) in words.iter().zip(buf.chunks_mut(8)) {
        c.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
    }
    buf
}

/// Record an upgraded socket.
pub fn insert(fd: i32, domain: i32, peer: &[u8], local: &[u8]) {
    let Some((dev, ino)) = identity(fd) else {
        return;
    };
    let claim = |s: &Slot, from: u32| {
        s.state
            .compare_exchange(from, BUSY, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    };
    let mut chosen = None;
    // A free entry, else a stale one.
    for s in TABLE.iter() {
        if s.state.load(Ordering::Relaxed) == FREE && claim(s, FREE) {
            chosen = Some(s);
            break;
        }
    }
    if chosen.is_none() {
        for s in TABLE.iter() {
            if s.state.load(Ordering::Relaxed) != READY {
                continue;
            }
            let k = (s.dev.load(Ordering::Relaxed), s.ino.load(Ordering::Relaxed));
            if identity(s.fd.load(Ordering::Relaxed) as i32) != Some(k) && claim(s, READY) {
                chosen = Some(s);
                break;
            }
        }
    }
    if chosen.is_none() {
        for _ in 0..SLOTS {
            let s = &TABLE[NEXT.fetch_add(1, Ordering::Relaxed) as usize % SLOTS];
            if claim(s, READY) {
                chosen = Some(s);
                break;
            }
        }
    }
    let Some(s) = chosen else {
        return;
    };
    s.fd.store(fd as u32, Ordering::Relaxed);
    s.dev.store(dev, Ordering::Relaxed);
    s.ino.store(ino, Ordering::Relaxed);
    s.domain.store(domain as u32, Ordering::Relaxed);
    s.peer_len
        .store(peer.len().min(ADDR_WORDS * 8) as u32, Ordering::Relaxed);
    put_bytes(&s.peer, peer);
    s.local_len
        .store(local.len().min(ADDR_WORDS * 8) as u32, Ordering::Relaxed);
    put_bytes(&s.local, local);
    for o in s.opts.iter() {
        o.store(0, Ordering::Relaxed);
    }
    s.state.store(READY, Ordering::Release);
    USED.fetch_add(1, Ordering::Relaxed);
}

/// What is known of an upgraded socket.
pub struct Entry {
    slot: &'static Slot,
    pub domain: i32,
}

impl Entry {
    pub fn peer(&self) -> ([u8; ADDR_WORDS * 8], usize) {
        (
            get_bytes(&self.slot.peer),
            self.slot.peer_len.load(Ordering::Relaxed) as usize,
        )
    }

    pub fn local(&self) -> ([u8; ADDR_WORDS * 8], usize) {
        (
            get_bytes(&self.slot.local),
            self.slot.local_len.load(Ordering::Relaxed) as usize,
        )
    }

    fn pack(level: i32, name: i32) -> u64 {
        (1 << 63) | (u64::from(level as u16) << 48) | (u64::from(name as u16) << 32)
    }

    /// Remember an option value set at a TCP/IP level.
    pub fn set_opt(&self, level: i32, name: i32, value: i32) {
        let key = Self::pack(level, name);
        let v = key | u64::from(value as u32);
        for o in self.slot.opts.iter() {
            let cur = o.load(Ordering::Relaxed);
            if cur & !0xffff_ffff == key {
                o.store(v, Ordering::Relaxed);
                return;
            }
        }
        for o in self.slot.opts.iter() {
            if o.compare_exchange(0, v, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        // Full: the oldest entry goes.
        self.slot.opts[0].store(v, Ordering::Relaxed);
    }

    pub fn get_opt(&self, level: i32, name: i32) -> Option<i32> {
        let key = Self::pack(level, name);
        self.slot
            .opts
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .find(|v| v & !0xffff_ffff == key)
            .map(|v| v as u32 as i32)
    }
}

/// The entry of `fd`, if it is an upgraded socket.
pub fn find(fd: i32) -> Option<Entry> {
    if !any() {
        return None;
    }
    let (dev, ino) = identity(fd)?;
    for s in TABLE.iter() {
        if s.state.load(Ordering::Acquire) == READY
            && s.ino.load(Ordering::Relaxed) == ino
            && s.dev.load(Ordering::Relaxed) == dev
        {
            return Some(Entry {
                slot: s,
                domain: s.domain.load(Ordering::Relaxed) as i32,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_evict() {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two ints into a 2-int array.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0);
        insert(fds[0], libc::AF_INET, &[1, 2, 3], &[4, 5]);
        let e = find(fds[0]).expect("found");
        assert_eq!(e.domain, libc::AF_INET);
        assert_eq!(e.peer().1, 3);
        assert_eq!(&e.peer().0[..3], &[1, 2, 3]);
        assert_eq!(e.local().1, 2);
        e.set_opt(6, 1, 1);
        e.set_opt(6, 1, 0);
        e.set_opt(0, 2, 7);
        assert_eq!(e.get_opt(6, 1), Some(0));
        assert_eq!(e.get_opt(0, 2), Some(7));
        assert_eq!(e.get_opt(41, 2), None);
        assert!(find(fds[1]).is_none());
        // Many more inserts than slots: bounded, and the newest is found.
        for _ in 0..(SLOTS + 10) {
            insert(fds[1], libc::AF_INET6, &[9], &[]);
        }
        assert_eq!(find(fds[1]).expect("newest").domain, libc::AF_INET6);
        // SAFETY: closing our own fds.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
