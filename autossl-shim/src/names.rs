//! Which host name gave which address: recorded from the resolver hooks, read when a
//! connection is upgraded. The rule is that no name is ever used that the program may not
//! have meant for this connection: where the record cannot tell, [`evidence`] says so and
//! gives the candidates.
//!
//! Two places:
//! - per thread, the last [`LOOKUPS`] lookups this thread made (each a name and up to
//!   [`LAST_IPS`] addresses). A connect to one of those addresses by the same thread takes
//!   that name when exactly one of the thread's lookups not yet used for that address gave
//!   it; the connection then uses it up, so that a later connect to the same address with
//!   no new lookup (a client's DNS cache) is not taken for the same name again. Numeric
//!   lookups record nothing (they never erase a name);
//! - per process, a fixed table of [`SLOTS`] (address, name) pairs in
//!   `MAP_SHARED | MAP_ANONYMOUS` memory made when the library is loaded, so that a child
//!   forked to resolve (lynx) fills the table its parent reads. It answers only when exactly
//!   one name is known for the address. An address that two names gave is marked ambiguous
//!   in every entry it has, so that it stays ambiguous when one of them is evicted. Writers
//!   claim an entry with a compare-and-swap on its sequence number (odd while written),
//!   readers retry on a change: no lock, nothing that can deadlock after `fork`. A pair
//!   already present stays in place; a new pair replaces the next entry in round-robin
//!   order (the oldest).

use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::rules;

pub const SLOTS: usize = 512;
pub const NAME_MAX: usize = 256;
const NAME_WORDS: usize = NAME_MAX / 8;
pub const LAST_IPS: usize = 16;
pub const LOOKUPS: usize = 8;
/// How many candidate names a failure message lists at most.
pub const CANDIDATES: usize = 4;

#[repr(C)]
struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU32,
    /// Non-zero: another name gave this address too.
    ambiguous: AtomicU32,
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

    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl PartialEq for Name {
    fn eq(&self, o: &Name) -> bool {
        self.as_bytes() == o.as_bytes()
    }
}

/// Names an address may have been meant for (at most [`CANDIDATES`]).
#[derive(Clone, Copy)]
pub struct Candidates {
    pub n: usize,
    pub names: [Name; CANDIDATES],
    /// More names than listed gave the address (some forgotten, or not listed).
    pub more: bool,
}

impl Candidates {
    const NONE: Candidates = Candidates {
        n: 0,
        names: [Name::EMPTY; CANDIDATES],
        more: false,
    };

    fn add(&mut self, name: &Name) {
        if self.names[..self.n].contains(name) {
            return;
        }
        if self.n < CANDIDATES {
            self.names[self.n] = *name;
            self.n += 1;
        } else {
            self.more = true;
        }
    }

    pub fn list(&self) -> &[Name] {
        &self.names[..self.n.min(CANDIDATES)]
    }
}

/// What the records say about the name of one connection (by value: nothing is allocated
/// in a hook, and it lives on the stack for one connect).
#[allow(clippy::large_enum_variant)]
pub enum Evidence {
    /// This thread's own lookup gave the address, under this name only.
    Thread(Name),
    /// The only name the process ever resolved to the address.
    Process(Name),
    /// No name can be told: none known, or these candidates.
    Unknown(Candidates),
}

#[derive(Clone, Copy)]
struct Look {
    name: Name,
    n: usize,
    ips: [u128; LAST_IPS],
    /// Bit i: ips[i] was used by a connection since this lookup.
    used: u32,
}

struct Ring {
    next: usize,
    len: usize,
    v: [Look; LOOKUPS],
}

const NO_LOOK: Look = Look {
    name: Name::EMPTY,
    n: 0,
    ips: [0; LAST_IPS],
    used: 0,
};

thread_local! {
    static RING: RefCell<Ring> = const {
        RefCell::new(Ring { next: 0, len: 0, v: [NO_LOOK; LOOKUPS] })
    };
}

/// Is `node` an IP literal (v4, or v6 with an optional zone)?
pub fn numeric(node: &[u8]) -> Option<std::net::IpAddr> {
    let s = std::str::from_utf8(node).ok()?;
    let s = s.split('%').next().unwrap_or(s);
    s.parse().ok()
}

/// Record that `node` resolved to the addresses in `ips` (this thread and the table). A
/// numeric node or an empty result records nothing.
pub fn record(node: &[u8], ips: &[u128]) {
    if ips.is_empty() || numeric(node).is_some() {
        return;
    }
    let Some(name) = Name::from(node) else {
        return;
    };
    let mut l = Look { name, ..NO_LOOK };
    for ip in ips.iter().take(LAST_IPS) {
        l.ips[l.n] = *ip;
        l.n += 1;
    }
    let _ = RING.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            // The same name again (a lookup per address family, or per request): the
            // newest entry is renewed, so that older lookups keep their places.
            let newest = (r.next + LOOKUPS - 1) % LOOKUPS;
            if r.len > 0 && r.v[newest].name == l.name {
                let old = r.v[newest];
                for ip in &old.ips[..old.n.min(LAST_IPS)] {
                    if l.n < LAST_IPS && !l.ips[..l.n].contains(ip) {
                        l.ips[l.n] = *ip;
                        l.n += 1;
                    }
                }
                r.v[newest] = l;
                return;
            }
            let i = r.next;
            r.v[i] = l;
            r.next = (i + 1) % LOOKUPS;
            r.len = (r.len + 1).min(LOOKUPS);
        }
    });
    if let Some(t) = table() {
        for ip in ips {
            store(t, *ip, &name);
        }
    }
}

/// A stable copy of a slot: (address, name, ambiguous); None while it is written or never
/// was.
fn read_slot(s: &Slot) -> Option<(u128, Name, bool)> {
    for _ in 0..4 {
        let seq = s.seq.load(Ordering::Acquire);
        if seq == 0 {
            return None;
        }
        if seq & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        let ip = (u128::from(s.ip[0].load(Ordering::Relaxed)) << 64)
            | u128::from(s.ip[1].load(Ordering::Relaxed));
        let mut n = Name::EMPTY;
        n.len = (s.len.load(Ordering::Relaxed) as usize).min(NAME_MAX);
        for (w, chunk) in s.name.iter().zip(n.bytes.chunks_mut(8)) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        let amb = s.ambiguous.load(Ordering::Relaxed) != 0;
        std::sync::atomic::fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) == seq {
            // A torn name cannot pass: it is checked again.
            return Name::from(n.as_bytes()).map(|n| (ip, n, amb));
        }
    }
    None
}

/// Does a slot hold `ip` (at a glance: [`read_slot`] confirms)? Spares reading the names of
/// every other address.
fn holds(s: &Slot, ip: u128) -> bool {
    s.ip[0].load(Ordering::Relaxed) == (ip >> 64) as u64
        && s.ip[1].load(Ordering::Relaxed) == ip as u64
}

fn store(t: &Table, ip: u128, name: &Name) {
    // The pair already there: nothing to add. Another name for the address: every entry of
    // the address is marked ambiguous, and so is the new one.
    let mut present = false;
    let mut other = false;
    for s in t.slots.iter().filter(|s| holds(s, ip)) {
        let Some((sip, sname, _)) = read_slot(s) else {
            continue;
        };
        if sip != ip {
            continue;
        }
        if sname == *name {
            present = true;
        } else {
            other = true;
        }
    }
    if other {
        for s in t.slots.iter().filter(|s| holds(s, ip)) {
            if matches!(read_slot(s), Some((sip, _, _)) if sip == ip) {
                // A race with a rewrite of this slot can only mark another address
                // ambiguous: it then fails closed, never open.
                s.ambiguous.store(1, Ordering::Relaxed);
            }
        }
    }
    if present {
        return;
    }
    let hi = (ip >> 64) as u64;
    let lo = ip as u64;
    for _ in 0..4 {
        let i = t.next.fetch_add(1, Ordering::Relaxed) as usize % SLOTS;
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
        s.ambiguous.store(u32::from(other), Ordering::Relaxed);
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

/// What the process-wide table knows of an address: its names, and whether another one
/// was seen (perhaps forgotten since).
fn process_names(ip: u128) -> (Candidates, bool) {
    let mut c = Candidates::NONE;
    let mut amb = false;
    if let Some(t) = table() {
        for s in t.slots.iter().filter(|s| holds(s, ip)) {
            if let Some((sip, n, a)) = read_slot(s) {
                if sip == ip {
                    c.add(&n);
                    amb |= a;
                }
            }
        }
    }
    (c, amb || c.n > 1 || c.more)
}

/// This thread's evidence: the names of its lookups that gave `ip` and were not used for
/// it yet.
fn thread_names(ip: u128) -> Candidates {
    let mut c = Candidates::NONE;
    let _ = RING.try_with(|r| {
        if let Ok(r) = r.try_borrow() {
            for l in &r.v[..r.len.min(LOOKUPS)] {
                let used = |i: usize| l.used & (1 << i) != 0;
                if (0..l.n.min(LAST_IPS)).any(|i| l.ips[i] == ip && !used(i)) {
                    c.add(&l.name);
                }
            }
        }
    });
    c
}

/// This thread's lookups of `name` that gave `ip` count as used for it.
fn use_up(ip: u128, name: &Name) {
    let _ = RING.try_with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            for l in r.v.iter_mut() {
                if l.name == *name {
                    for i in 0..l.n.min(LAST_IPS) {
                        if l.ips[i] == ip {
                            l.used |= 1 << i;
                        }
                    }
                }
            }
        }
    });
}

/// The name for a connection to `ip` by this thread, best evidence first: this thread's
/// own unused lookups when they name one name (which the connection then uses up), else
/// the process's table when it knows exactly one name; else the candidates.
pub fn evidence(ip: u128) -> Evidence {
    let mine = thread_names(ip);
    if mine.n == 1 {
        let n = mine.names[0];
        use_up(ip, &n);
        return Evidence::Thread(n);
    }
    let (all, ambiguous) = process_names(ip);
    if mine.n == 0 && !ambiguous && all.n == 1 {
        return Evidence::Process(all.names[0]);
    }
    let mut c = mine;
    for n in all.list() {
        c.add(n);
    }
    c.more |= all.more || (ambiguous && c.n < 2);
    Evidence::Unknown(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests share the process's table: one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn k(s: &str) -> u128 {
        rules::key_of(s.parse().expect("ip"))
    }

    fn text(e: &Evidence) -> String {
        match e {
            Evidence::Thread(n) => format!("thread {}", n.text()),
            Evidence::Process(n) => format!("process {}", n.text()),
            Evidence::Unknown(c) => {
                let v: Vec<String> = c.list().iter().map(Name::text).collect();
                format!("unknown {}{}", v.join(","), if c.more { "+" } else { "" })
            }
        }
    }

    fn elsewhere(ip: &'static str) -> String {
        std::thread::spawn(move || text(&evidence(k(ip))))
            .join()
            .expect("thread")
    }

    #[test]
    fn thread_then_table() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        record(b"a.test", &[k("192.0.2.1"), k("2001:db8::1")]);
        assert_eq!(text(&evidence(k("192.0.2.1"))), "thread a.test");
        // Used up: the same address again with no new lookup is the table's answer.
        assert_eq!(text(&evidence(k("192.0.2.1"))), "process a.test");
        assert_eq!(text(&evidence(k("2001:db8::1"))), "thread a.test");
        record(b"b.test.", &[k("192.0.2.2")]);
        // Another thread sees both through the table.
        assert_eq!(elsewhere("192.0.2.1"), "process a.test");
        assert_eq!(elsewhere("192.0.2.2"), "process b.test");
        assert_eq!(elsewhere("192.0.2.99"), "unknown ");
        // A numeric lookup erases nothing.
        record(b"192.0.2.2", &[k("192.0.2.2")]);
        assert_eq!(text(&evidence(k("192.0.2.2"))), "thread b.test");
        // Non-ASCII and numeric names are not recorded.
        record("caf\u{e9}.test".as_bytes(), &[k("192.0.2.3")]);
        record(b"192.0.2.4", &[k("192.0.2.4")]);
        assert_eq!(text(&evidence(k("192.0.2.3"))), "unknown ");
        assert_eq!(text(&evidence(k("192.0.2.4"))), "unknown ");
    }

    #[test]
    fn several_names_on_one_address() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let x = "198.51.100.7";
        record(b"v1.test", &[k(x)]);
        assert_eq!(elsewhere(x), "process v1.test");
        record(b"v2.test", &[k(x)]);
        // Another thread (curl's resolver, node's pool): no single name.
        assert_eq!(elsewhere(x), "unknown v1.test,v2.test");
        // This thread looked up both and used neither: it cannot tell either.
        assert_eq!(text(&evidence(k(x))), "unknown v1.test,v2.test");
        // A lookup per connection (getaddrinfo, then connect) is this thread's evidence.
        std::thread::spawn(move || {
            record(b"v1.test", &[k(x)]);
            assert_eq!(text(&evidence(k(x))), "thread v1.test");
            record(b"v2.test", &[k(x)]);
            assert_eq!(text(&evidence(k(x))), "thread v2.test");
            // A cached name: no lookup, so no name.
            assert_eq!(text(&evidence(k(x))), "unknown v1.test,v2.test");
        })
        .join()
        .expect("thread");
        // The ambiguity outlives the eviction of one of the names: v1.test's entry is the
        // oldest after SLOTS - 2 more, and the next one replaces it.
        for i in 0..(SLOTS as u32 - 1) {
            let name = format!("f{i}.test");
            record(
                name.as_bytes(),
                &[k(&format!("10.9.{}.{}", (i >> 8) & 255, i & 255))],
            );
        }
        assert_eq!(elsewhere(x), "unknown v2.test+");
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
        let ip: &'static str = Box::leak(ip.into_boxed_str());
        assert!(elsewhere(ip).starts_with("process h"));
        assert_eq!(elsewhere("10.0.0.0"), "unknown ");
    }
}
