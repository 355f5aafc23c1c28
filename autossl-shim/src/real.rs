//! The real functions, found with `dlsym(RTLD_NEXT)` once (in the constructor, or on first
//! use), never resolving to this library itself.

use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{addrinfo, hostent, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// Our own object's base address, to refuse a lookup that found ourselves.
fn ours(addr: usize) -> bool {
    // SAFETY: dladdr only reads the loader's tables.
    unsafe {
        let mut a: libc::Dl_info = std::mem::zeroed();
        let mut b: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr as *const c_void, &mut a) == 0 {
            return false;
        }
        if libc::dladdr(ours as *const c_void, &mut b) == 0 {
            return false;
        }
        a.dli_fbase == b.dli_fbase
    }
}

fn resolve(cache: &AtomicUsize, name: &'static [u8]) -> usize {
    let v = cache.load(Ordering::Acquire);
    if v > 1 {
        return v;
    }
    if v == 1 {
        return 0; // known missing
    }
    // SAFETY: name is NUL-terminated.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) } as usize;
    let p = if p == 0 || ours(p) { 0 } else { p };
    cache.store(if p == 0 { 1 } else { p }, Ordering::Release);
    p
}

macro_rules! real {
    ($fn:ident, $sym:literal, $ty:ty) => {
        pub fn $fn() -> Option<$ty> {
            static CACHE: AtomicUsize = AtomicUsize::new(0);
            let p = resolve(&CACHE, concat!($sym, "\0").as_bytes());
            if p == 0 {
                None
            } else {
                // SAFETY: the symbol of that name in the next object has this C type.
                Some(unsafe { std::mem::transmute::<usize, $ty>(p) })
            }
        }
    };
}

pub type Connect = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
pub type SockName = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
pub type GetOpt = unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;
pub type SetOpt = unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
pub type SendTo = unsafe extern "C" fn(
    c_int,
    *const c_void,
    size_t,
    c_int,
    *const sockaddr,
    socklen_t,
) -> ssize_t;
pub type SendMsg = unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t;
pub type GetAddrInfo = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const addrinfo,
    *mut *mut addrinfo,
) -> c_int;
pub type GetHostByName = unsafe extern "C" fn(*const c_char) -> *mut hostent;
pub type GetHostByName2 = unsafe extern "C" fn(*const c_char, c_int) -> *mut hostent;
pub type GetHostByNameR = unsafe extern "C" fn(
    *const c_char,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;
pub type GetHostByName2R = unsafe extern "C" fn(
    *const c_char,
    c_int,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;

real!(connect, "connect", Connect);
real!(getpeername, "getpeername", SockName);
real!(getsockname, "getsockname", SockName);
real!(getsockopt, "getsockopt", GetOpt);
real!(setsockopt, "setsockopt", SetOpt);
real!(sendto, "sendto", SendTo);
real!(sendmsg, "sendmsg", SendMsg);
real!(getaddrinfo, "getaddrinfo", GetAddrInfo);
real!(gethostbyname, "gethostbyname", GetHostByName);
real!(gethostbyname2, "gethostbyname2", GetHostByName2);
real!(gethostbyname_r, "gethostbyname_r", GetHostByNameR);
real!(gethostbyname2_r, "gethostbyname2_r", GetHostByName2R);

/// getpeername (`peer`) or getsockname.
pub fn sockname(peer: bool) -> Option<SockName> {
    if peer {
        getpeername()
    } else {
        getsockname()
    }
}

/// Resolve everything now (from the constructor, while the process is single-threaded).
pub fn init() {
    let _ = (
        connect(),
        getpeername(),
        getsockname(),
        getsockopt(),
        setsockopt(),
        sendto(),
        sendmsg(),
    );
    let _ = (
        getaddrinfo(),
        gethostbyname(),
        gethostbyname2(),
        gethostbyname_r(),
        gethostbyname2_r(),
    );
}
