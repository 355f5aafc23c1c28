//! The real functions, found with `dlsym(RTLD_NEXT)` once (at first use, or before a fork
//! in a process that asks for an upgrade), never resolving to this library itself.
//!
//! [`reals!`] is the one list of them: each line declares a function by its C name and
//! type, and gives an accessor of that name (`real::connect()`: `Some` of the next
//! object's `connect`, `None` when there is none) and its place in [`init`].

use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{addrinfo, hostent, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// Whether `addr` lies in this library (a lookup that found ourselves is refused).
/// dladdr would say, but it searches the symbol table of the object it finds (libc's is
/// large) for every lookup: the loaded segments alone answer here, found once and kept
/// (a walk of every object's segments per lookup was half of what resolving the real
/// functions cost each process that sets a port).
fn ours(addr: usize) -> bool {
    static START: AtomicUsize = AtomicUsize::new(0);
    static END: AtomicUsize = AtomicUsize::new(0);
    let mut end = END.load(Ordering::Acquire);
    let mut start = START.load(Ordering::Relaxed);
    if end == 0 {
        // Found twice by two threads at once: the same answer, stored twice.
        (start, end) = own_segments();
        START.store(start, Ordering::Relaxed);
        END.store(end, Ordering::Release);
    }
    addr >= start && addr < end
}

/// From the lowest address of this library's loaded segments to the end of the highest
/// (the loader maps an object in one reservation, so nothing else lies between); (1, 1),
/// an empty range, when the loader does not list it.
fn own_segments() -> (usize, usize) {
    struct Find {
        addr: usize,
        range: Option<(usize, usize)>,
    }
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: the loader passes a valid dl_phdr_info, whose dlpi_phdr array has
        // dlpi_phnum entries; `data` is the Find given below.
        unsafe {
            let f = &mut *(data as *mut Find);
            let i = &*info;
            let mut range: Option<(usize, usize)> = None;
            let mut holds = false;
            for k in 0..usize::from(i.dlpi_phnum) {
                let ph = &*i.dlpi_phdr.add(k);
                if ph.p_type != libc::PT_LOAD {
                    continue;
                }
                let start = i.dlpi_addr as usize + ph.p_vaddr as usize;
                let end = start + ph.p_memsz as usize;
                holds |= f.addr >= start && f.addr < end;
                range = Some(match range {
                    Some((s, e)) => (s.min(start), e.max(end)),
                    None => (start, end),
                });
            }
            if holds {
                f.range = range;
                return 1;
            }
        }
        0
    }
    let mut f = Find {
        addr: ours as *const () as usize,
        range: None,
    };
    // SAFETY: dl_iterate_phdr calls `each` with the loader's objects and our Find.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut f as *mut Find as *mut c_void) };
    f.range.unwrap_or((1, 1))
}

/// The address of `name` (NUL-terminated) in the objects after this one, cached in
/// `cache` (0: not looked up yet, 1: known missing, else the address); 0 when missing.
fn resolve(cache: &AtomicUsize, name: &'static [u8]) -> usize {
    let v = cache.load(Ordering::Acquire);
    if v > 1 {
        return v;
    }
    if v == 1 {
        return 0; // known missing
    }
    // SAFETY: name is NUL-terminated (the macro appends the NUL).
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) } as usize;
    let p = if p == 0 || ours(p) { 0 } else { p };
    cache.store(if p == 0 { 1 } else { p }, Ordering::Release);
    p
}

/// `reals! { name(arg types) -> ret; ... }`: for each, `pub fn name() -> Option<unsafe
/// extern "C" fn(arg types) -> ret>` resolving the C symbol `name`; and `init`, which
/// resolves them all.
macro_rules! reals {
    ($($name:ident($($arg:ty),* $(,)?) -> $ret:ty;)*) => {
        $(
            #[doc = concat!("The real `", stringify!($name), "`, if the next objects have one.")]
            pub fn $name() -> Option<unsafe extern "C" fn($($arg),*) -> $ret> {
                static CACHE: AtomicUsize = AtomicUsize::new(0);
                let p = resolve(&CACHE, concat!(stringify!($name), "\0").as_bytes());
                if p == 0 {
                    return None;
                }
                // SAFETY: p is the address of the C function of that name in an object
                // after this one; its C type is the one declared here (glibc's).
                Some(unsafe {
                    std::mem::transmute::<usize, unsafe extern "C" fn($($arg),*) -> $ret>(p)
                })
            }
        )*

        /// Resolve every real function now (before a fork, for the child to inherit).
        pub fn init() {
            $(let _ = $name();)*
        }
    };
}

/// glibc's `struct gaicb` (getaddrinfo_a's request), as far as the public fields go.
#[repr(C)]
pub struct Gaicb {
    pub ar_name: *const c_char,
    pub ar_service: *const c_char,
    pub ar_request: *const addrinfo,
    pub ar_result: *mut addrinfo,
    return_: c_int,
    reserved: [c_int; 5],
}

reals! {
    connect(c_int, *const sockaddr, socklen_t) -> c_int;
    accept(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    accept4(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
    getpeername(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    getsockname(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
    getsockopt(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;
    setsockopt(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
    sendto(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t;
    sendmsg(c_int, *const msghdr, c_int) -> ssize_t;
    getaddrinfo(*const c_char, *const c_char, *const addrinfo, *mut *mut addrinfo) -> c_int;
    getaddrinfo_a(c_int, *mut *mut Gaicb, c_int, *mut libc::sigevent) -> c_int;
    gai_error(*mut Gaicb) -> c_int;
    gethostbyname(*const c_char) -> *mut hostent;
    gethostbyname2(*const c_char, c_int) -> *mut hostent;
    gethostbyname_r(
        *const c_char,
        *mut hostent,
        *mut c_char,
        size_t,
        *mut *mut hostent,
        *mut c_int,
    ) -> c_int;
    gethostbyname2_r(
        *const c_char,
        c_int,
        *mut hostent,
        *mut c_char,
        size_t,
        *mut *mut hostent,
        *mut c_int,
    ) -> c_int;
}

/// The type of getpeername and getsockname.
pub type SockName = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;

/// getpeername (`peer`) or getsockname.
pub fn sockname(peer: bool) -> Option<SockName> {
    if peer {
        getpeername()
    } else {
        getsockname()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_libc() {
        assert!(super::connect().is_some());
        assert!(super::gethostbyname2_r().is_some());
        super::init();
    }
}
