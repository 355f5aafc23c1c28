//! Which host name gave which address: recorded from the resolver hooks, read when a
//! connection is upgraded.
//!
//! Two places:
//! - per thread, the last lookup this thread made (its name and up to [`LAST_IPS`]
//!   addresses; a numeric lookup records "no name" for its address);
//! - per process, a fixed table of [`SLOTS`] (address, name) entries in
//!   `MAP_SHARED | MAP_ANONYMOUS` memory made when the library is loaded, so that a child
//!   forked to resolve (lynx) fills the table its parent reads. Writers claim an entry with a
//!   compare-and-swap on its sequence number (odd while written), readers retry on a change:
//!   no lock, nothing that can deadlock after `fork`. An address already present is
//!   updated in place; otherwise the next entry in round-robin order is replaced (the
//!   oldest).

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::rules;

pub const SLOTS: usize = 512;
pub const NAME_MAX: usize = 256;
const NAME_WORDS: usize = NAME_MAX / 8;
pub const LAST_IPS: usize = 8;

#[repr(C)]
struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU32,
    len: AtomicU32,
    ip: [AtomicU64; 2],
    name: [AtomicU64; NAME_WORDS],
}

#[repr(C)]
struct Table {
    next: AtomicU32,
    slots: [Slot; SLOTS],
}

static TABLE: AtomicPtr<Table> = AtomicPtr::new(ptr::null_mut());

/// Map the shared table (idempotent; called from the constructor, or lazily).
pub fn init() {
    let _ = map();
}

fn map() -> *mut Table {
    let t = TABLE.load(Ordering::Acquire);
    if !t.is_null() {
        return t;
    }
    let size = std::mem::size_of::<Table>();
    // SAFETY: a fresh anonymous mapping; all-zero bytes are a valid Table (atomics at 0).
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    let p = p as *mut Table;
    match TABLE.compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => p,
        Err(other) => {
            // SAFETY: our own mapping, never published.
            unsafe { libc::munmap(p as *mut libc::c_void, size) };
            other
        }
    }
}

fn table() -> Option<&'static Table> {
    let t = map();
    // SAFETY: the mapping lives for the rest of the process (never unmapped once published).
    unsafe { t.as_ref() }
}

/// A name of at most NAME_MAX bytes, by value.
#[derive(Clone, Copy)]
pub struct Name {
    pub len: usize,
    pub bytes: [u8; NAME_MAX],
}

impl Name {
    pub const EMPTY: Name = Name {
        len: 0,
        bytes: [0; NAME_MAX],
    };

    pub fn from(s: &[u8]) -> Option<Name> {
        let s = rules::valid_name(s)?;
        let mut n = Name::EMPTY;
        n.bytes[..s.len()].copy_from_slice(s);
        n.len = s.len();
        Some(n)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len.min(NAME_MAX)]
    }
}

#[derive(Clone, Copy)]
struct Last {
    name: Name,
    n: usize,
    ips: [u128; LAST_IPS],
}

thread_local! {
    static LAST: Cell<Last> = const {
        Cell::new(Last { name: Name::EMPTY, n: 0, ips: [0; LAST_IPS] })
    };
}

/// The start of one lookup by this thread for `node`: a numeric node records "no name"
/// for its own address, a host name forgets the previous lookup.
pub fn begin_lookup(node: &[u8]) {
    if let Some(ip) = numeric(node) {
        let mut l = Last {
            name: Name::EMPTY,
            n: 1,
            ips: [0; LAST_IPS],
        };
        l.ips[0] = rules::key_of(ip);
        let _ = LAST.try_with(|c| c.set(l));
    }
}

/// Is `node` an IP literal (v4, or v6 with an optional zone)?
pub fn numeric(node: &[u8]) -> Option<std::net::IpAddr> {
    let s = std::str::from_utf8(node).ok()?;
    let s = s.split('%').next().unwrap_or(s);
    s.parse().ok()
}

/// Record that `node` resolved to the addresses in `ips` (this thread and the table).
pub fn record(node: &[u8], ips: &[u128]) {
    if ips.is_empty() || numeric(node).is_some() {
        return;
    }
    let Some(name) = Name::from(node) else {
        return;
    };
    let mut l = Last {
        name,
        n: 0,
        ips: [0; LAST_IPS],
    };
    for ip in ips.iter().take(LAST_IPS) {
        l.ips[l.n] = *ip;
        l.n += 1;
    }
    let _ = LAST.try_with(|c| c.set(l));
    if let Some(t) = table() {
        for ip in ips {
            store(t, *ip, &name);
        }
    }
}

fn store(t: &Table, ip: u128, name: &Name) {
    let hi = (ip >> 64) as u64;
    let lo = ip as u64;
    // An entry for this address already: update it; else the next one round-robin.
    let mut target = None;
    for (i, s) in t.slots.iter().enumerate() {
        let seq = s.seq.load(Ordering::Acquire);
        if seq != 0
            && seq & 1 == 0
            && s.ip[0].load(Ordering::Relaxed) == hi
            && s.ip[1].load(Ordering::Relaxed) == lo
        {
            target = Some(i);
            break;
        }
    }
    for attempt in 0..4 {
        let i = match (target, attempt) {
            (Some(i), 0) => i,
            _ => t.next.fetch_add(1, Ordering::Relaxed) as usize % SLOTS,
        };
        let s = &t.slots[i];
        let seq = s.seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            continue; // someone else is writing it
        }
        if s.seq
            .compare_exchange(
                seq,
                seq.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            continue;
        }
        s.ip[0].store(hi, Ordering::Relaxed);
        s.ip[1].store(lo, Ordering::Relaxed);
        s.len.store(name.len as u32, Ordering::Relaxed);
        for (w, chunk) in s.name.iter().zip(name.bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
        // Even again, and never 0 (0 marks an entry never written).
        let mut done = seq.wrapping_add(2);
        if done == 0 {
            done = 2;
        }
        s.seq.store(done, Ordering::Release);
        return;
    }
}

/// The name for an address: this thread's last lookup if it gave this address (an empty
/// name when that lookup was numeric), else the process-wide table.
pub fn lookup(ip: u128) -> Option<Name> {
    let last = LAST.try_with(|c| c.get()).ok();
    if let Some(l) = last {
        if l.ips[..l.n.min(LAST_IPS)].contains(&ip) {
            return (l.name.len > 0).then_some(l.name);
        }
    }
    let t = table()?;
    let hi = (ip >> 64) as u64;
    let lo = ip as u64;
    for s in t.slots.iter() {
        for _ in 0..4 {
            let seq = s.seq.load(Ordering::Acquire);
            if seq == 0 || seq & 1 == 1 {
                break;
            }
            if s.ip[0].load(Ordering::Relaxed) != hi || s.ip[1].load(Ordering::Relaxed) != lo {
                break;
            }
            let mut n = Name::EMPTY;
            n.len = (s.len.load(Ordering::Relaxed) as usize).min(NAME_MAX);
            for (w, chunk) in s.name.iter().zip(n.bytes.chunks_mut(8)) {
                chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
            }
            std::sync::atomic::fence(Ordering::Acquire);
            if s.seq.load(Ordering::Relaxed) == seq {
                // A torn name cannot pass: it is checked again before use.
                return Name::from(n.as_bytes());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two tests share the process's table: one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn k(s: &str) -> u128 {
        rules::key_of(s.parse().expect("ip"))
    }

    #[test]
    fn thread_then_table() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        record(b"a.test", &[k("192.0.2.1"), k("2001:db8::1")]);
        assert_eq!(
            lookup(k("192.0.2.1")).map(|n| n.as_bytes().to_vec()),
            Some(b"a.test".to_vec())
        );
        record(b"b.test.", &[k("192.0.2.2")]);
        // Another thread sees both through the table.
        let got = std::thread::spawn(|| {
            (
                lookup(k("192.0.2.1")).map(|n| n.as_bytes().to_vec()),
                lookup(k("192.0.2.2")).map(|n| n.as_bytes().to_vec()),
                lookup(k("192.0.2.99")).is_none(),
            )
        })
        .join()
        .expect("thread");
        assert_eq!(got.0, Some(b"a.test".to_vec()));
        assert_eq!(got.1, Some(b"b.test".to_vec()));
        assert!(got.2);
        // A numeric lookup by this thread means "no name" for that address.
        begin_lookup(b"192.0.2.1");
        assert!(lookup(k("192.0.2.1")).is_none());
        // Non-ASCII and numeric names are not recorded.
        record("caf\u{e9}.test".as_bytes(), &[k("192.0.2.3")]);
        record(b"192.0.2.4", &[k("192.0.2.4")]);
        assert!(lookup(k("192.0.2.3")).is_none());
        assert!(lookup(k("192.0.2.4")).is_none());
    }

    #[test]
    fn bounded_table() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..(SLOTS as u32 * 3) {
            let name = format!("h{i}.test");
            record(
                name.as_bytes(),
                &[k(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))],
            );
        }
        // The newest are there, the oldest were replaced.
        let newest = SLOTS as u32 * 3 - 1;
        let ip = format!(
            "10.{}.{}.{}",
            newest >> 16,
            (newest >> 8) & 255,
            newest & 255
        );
        std::thread::spawn(move || assert!(lookup(k(&ip)).is_some()))
            .join()
            .expect("thread");
        std::thread::spawn(|| assert!(lookup(k("10.0.0.0")).is_none()))
            .join()
            .expect("thread");
    }
}
