//! The resolver hooks: which host name gave which addresses, recorded for `names` from
//! getaddrinfo(3), getaddrinfo_a(3) (when the program learns the answer), and the
//! gethostbyname(3) family. Results are never changed. Like every hook, each is behind the
//! reentrancy guard and `catch_unwind` of `hooks`.

use std::cell::Cell;
use std::os::raw::{c_char, c_int};

use libc::{addrinfo, hostent, size_t};

use crate::hooks::guarded;
use crate::{addr, config, names, real, rules};

thread_local! {
    /// The getaddrinfo_a request (and its result) this thread recorded last.
    static LAST_REQUEST: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

const MAX_IPS: usize = 32;

struct Ips {
    n: usize,
    v: [u128; MAX_IPS],
}

impl Ips {
    fn new() -> Ips {
        Ips {
            n: 0,
            v: [0; MAX_IPS],
        }
    }
    fn push(&mut self, k: u128) {
        if self.n < MAX_IPS && !self.v[..self.n].contains(&k) {
            self.v[self.n] = k;
            self.n += 1;
        }
    }
}

fn recording() -> bool {
    config::state().cfg.active()
}

/// Record that the lookup of `node` gave `ips`.
///
/// # Safety
/// `node` is a valid NUL-terminated string.
unsafe fn record(node: *const c_char, ips: &Ips) {
    // SAFETY: our caller's promise.
    let name = unsafe { std::ffi::CStr::from_ptr(node) }.to_bytes();
    names::record(name, &ips.v[..ips.n]);
}

/// Record the result list `ai` of a successful lookup of `node`.
///
/// # Safety
/// `node` is null or a valid NUL-terminated string; `ai` is null or a list getaddrinfo made
/// that the caller has not freed.
unsafe fn record_list(node: *const c_char, mut ai: *const addrinfo) {
    if node.is_null() || ai.is_null() {
        return;
    }
    guarded(|| {
        if !recording() {
            return None;
        }
        let mut ips = Ips::new();
        let mut steps = 0;
        while !ai.is_null() && steps < 256 {
            // SAFETY: a node of the list (our caller's promise).
            let a = unsafe { &*ai };
            // SAFETY: the node's ai_addr is valid for ai_addrlen bytes.
            if let Some(t) = unsafe { addr::target(a.ai_addr, a.ai_addrlen) } {
                ips.push(t.key);
            }
            ai = a.ai_next;
            steps += 1;
        }
        // SAFETY: node is not null: the caller's NUL-terminated name.
        unsafe { record(node, &ips) };
        Some(())
    });
}

/// Record a finished getaddrinfo_a request.
///
/// # Safety
/// `req` is null or a valid request whose lookup succeeded (its result not yet freed).
unsafe fn record_request(req: *const real::Gaicb) {
    // SAFETY: our caller's promise.
    if let Some(r) = unsafe { req.as_ref() } {
        // A program polls gai_error: one request's answer counts as one lookup.
        let key = (req as usize, r.ar_result as usize);
        if LAST_REQUEST.try_with(|l| l.replace(key)).ok() == Some(key) {
            return;
        }
        // SAFETY: the request's name and result, valid by our caller's promise.
        unsafe { record_list(r.ar_name, r.ar_result) };
    }
}

/// # Safety
/// The C contract of getaddrinfo_a(3).
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo_a(
    mode: c_int,
    list: *mut *mut real::Gaicb,
    n: c_int,
    sev: *mut libc::sigevent,
) -> c_int {
    let Some(f) = real::getaddrinfo_a() else {
        return libc::EAI_SYSTEM;
    };
    // SAFETY: the real getaddrinfo_a with the caller's own arguments.
    let rc = unsafe { f(mode, list, n, sev) };
    // GAI_WAIT (0): the lookups are done; those that succeeded are recorded now. With
    // GAI_NOWAIT they are recorded when the program asks gai_error about them.
    if mode == 0 && !list.is_null() {
        let Some(err) = real::gai_error() else {
            return rc;
        };
        for i in 0..n.clamp(0, 1024) as usize {
            // SAFETY: list holds n entries (getaddrinfo_a's contract).
            let req = unsafe { *list.add(i) };
            // SAFETY: a request of the caller's list, null or valid.
            if !req.is_null() && unsafe { err(req) } == 0 {
                // SAFETY: its lookup succeeded and the caller has not freed it yet.
                unsafe { record_request(req) };
            }
        }
    }
    rc
}

/// # Safety
/// The C contract of gai_error(3).
#[no_mangle]
pub unsafe extern "C" fn gai_error(req: *mut real::Gaicb) -> c_int {
    let Some(f) = real::gai_error() else {
        return libc::EAI_SYSTEM;
    };
    // SAFETY: the real gai_error with the caller's own argument.
    let rc = unsafe { f(req) };
    if rc == 0 {
        // SAFETY: the caller's request, whose lookup succeeded.
        unsafe { record_request(req) };
    }
    rc
}

/// # Safety
/// The C contract of getaddrinfo(3).
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let Some(f) = real::getaddrinfo() else {
        return libc::EAI_SYSTEM;
    };
    // SAFETY: the real getaddrinfo with the caller's own arguments.
    let rc = unsafe { f(node, service, hints, res) };
    if rc != 0 || node.is_null() || res.is_null() {
        return rc;
    }
    // SAFETY: res is not null and getaddrinfo succeeded: *res is its list.
    unsafe { record_list(node, *res) };
    rc
}

/// Record the addresses of a gethostbyname* result for `node`.
///
/// # Safety
/// `node` is null or a valid NUL-terminated string, `h` null or a valid hostent.
unsafe fn record_hostent(node: *const c_char, h: *const hostent) {
    if node.is_null() || h.is_null() {
        return;
    }
    guarded(|| {
        if !recording() {
            return None;
        }
        // SAFETY: our caller's promise, and h is not null.
        let h = unsafe { &*h };
        let mut ips = Ips::new();
        if !h.h_addr_list.is_null() {
            for i in 0..MAX_IPS {
                // SAFETY: h_addr_list is NULL-terminated and we stop at its NULL.
                let p = unsafe { *h.h_addr_list.add(i) };
                if p.is_null() {
                    break;
                }
                match (h.h_addrtype, h.h_length) {
                    (libc::AF_INET, 4) => {
                        let mut b = [0u8; 4];
                        // SAFETY: each entry holds h_length (4) bytes.
                        unsafe { std::ptr::copy_nonoverlapping(p as *const u8, b.as_mut_ptr(), 4) };
                        ips.push(rules::key_of(std::net::Ipv4Addr::from(b).into()));
                    }
                    (libc::AF_INET6, 16) => {
                        let mut b = [0u8; 16];
                        // SAFETY: each entry holds h_length (16) bytes.
                        unsafe {
                            std::ptr::copy_nonoverlapping(p as *const u8, b.as_mut_ptr(), 16)
                        };
                        let v6 = std::net::Ipv6Addr::from(b);
                        let ip = match v6.to_ipv4_mapped() {
                            Some(v4) => std::net::IpAddr::V4(v4),
                            None => std::net::IpAddr::V6(v6),
                        };
                        ips.push(rules::key_of(ip));
                    }
                    _ => {}
                }
            }
        }
        // SAFETY: node is not null: the caller's NUL-terminated name.
        unsafe { record(node, &ips) };
        Some(())
    });
}

/// # Safety
/// The C contract of gethostbyname(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    let Some(f) = real::gethostbyname() else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real gethostbyname with the caller's own argument.
    let h = unsafe { f(name) };
    // SAFETY: the caller's name and the real function's result.
    unsafe { record_hostent(name, h) };
    h
}

/// # Safety
/// The C contract of gethostbyname2(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    let Some(f) = real::gethostbyname2() else {
        return std::ptr::null_mut();
    };
    // SAFETY: the real gethostbyname2 with the caller's own arguments.
    let h = unsafe { f(name, af) };
    // SAFETY: the caller's name and the real function's result.
    unsafe { record_hostent(name, h) };
    h
}

/// # Safety
/// The C contract of gethostbyname_r(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let Some(f) = real::gethostbyname_r() else {
        return libc::ENOSYS;
    };
    // SAFETY: the real gethostbyname_r with the caller's own arguments.
    let rc = unsafe { f(name, ret, buf, buflen, result, h_errnop) };
    if rc == 0 && !result.is_null() {
        // SAFETY: the caller's name, and the result the real function stored in *result.
        unsafe { record_hostent(name, *result) };
    }
    rc
}

/// # Safety
/// The C contract of gethostbyname2_r(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let Some(f) = real::gethostbyname2_r() else {
        return libc::ENOSYS;
    };
    // SAFETY: the real gethostbyname2_r with the caller's own arguments.
    let rc = unsafe { f(name, af, ret, buf, buflen, result, h_errnop) };
    if rc == 0 && !result.is_null() {
        // SAFETY: the caller's name, and the result the real function stored in *result.
        unsafe { record_hostent(name, *result) };
    }
    rc
}
