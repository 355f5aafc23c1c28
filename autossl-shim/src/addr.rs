//! Destinations as the program gives them to `connect()`: read from its sockaddr, checked
//! against the length it passed, kept as a table key.

use std::marker::PhantomData;
use std::net::IpAddr;
use std::os::raw::c_int;

use libc::{sockaddr, socklen_t};

use crate::rules;

/// A destination taken from the caller's sockaddr.
#[derive(Clone, Copy)]
pub struct Target {
    /// The address as a table key (an IPv4-mapped address as its IPv4 form).
    pub key: u128,
    /// The port, in host order.
    pub port: u16,
}

impl Target {
    /// The address.
    pub fn ip(&self) -> IpAddr {
        rules::ip_of(self.key)
    }
}

/// Read an AF_INET/AF_INET6 destination, checking `len` against the family's size.
///
/// # Safety
/// `addr` is null or valid for reads of `len` bytes (the caller's promise to connect()).
pub unsafe fn target(addr: *const sockaddr, len: socklen_t) -> Option<Target> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: addr is valid for `len` bytes (our caller's promise), at least a family's.
    let family = c_int::from(unsafe { std::ptr::read_unaligned(addr) }.sa_family);
    match family {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: as above, and `len` covers a sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(addr as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(Target {
                key: rules::key_of(IpAddr::V4(ip)),
                port: u16::from_be(sin.sin_port),
            })
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, and `len` covers a sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(addr as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let ip = match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            };
            Some(Target {
                key: rules::key_of(ip),
                port: u16::from_be(sin6.sin6_port),
            })
        }
        _ => None,
    }
}

/// The caller's destination argument to connect() (or sendto/sendmsg), for as long as
/// that call lasts (`'a`).
#[derive(Clone, Copy)]
pub struct Dest<'a> {
    /// The caller's pointer, as given.
    pub addr: *const sockaddr,
    /// The caller's length, as given.
    pub len: socklen_t,
    _call: PhantomData<&'a [u8]>,
}

impl<'a> Dest<'a> {
    /// # Safety
    /// `addr` is null or valid for reads of `len` bytes during `'a`: connect()'s contract,
    /// for the duration of the hook.
    pub unsafe fn new(addr: *const sockaddr, len: socklen_t) -> Dest<'a> {
        Dest {
            addr,
            len,
            _call: PhantomData,
        }
    }

    /// The destination, if it is AF_INET/AF_INET6 and `len` covers its family's size.
    pub fn target(&self) -> Option<Target> {
        // SAFETY: the promise made to Dest::new.
        unsafe { target(self.addr, self.len) }
    }

    /// What getpeername will answer: the address as given, at its family's own size (a
    /// caller may pass sizeof(struct sockaddr_storage)); empty when there is no family.
    pub fn peer(&self) -> &'a [u8] {
        if self.addr.is_null() || (self.len as usize) < std::mem::size_of::<libc::sa_family_t>() {
            return &[];
        }
        // SAFETY: the promise made to Dest::new, and `len` covers the family.
        let family = c_int::from(unsafe { std::ptr::read_unaligned(self.addr) }.sa_family);
        let size = if family == libc::AF_INET6 {
            std::mem::size_of::<libc::sockaddr_in6>()
        } else {
            std::mem::size_of::<libc::sockaddr_in>()
        };
        // SAFETY: the promise made to Dest::new; at most `len` bytes.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, size.min(self.len as usize)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(ip: [u8; 4], port: u16) -> libc::sockaddr_in {
        // SAFETY: sockaddr_in is plain data: all zeros is a valid value.
        let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        s.sin_family = libc::AF_INET as libc::sa_family_t;
        s.sin_port = port.to_be();
        s.sin_addr.s_addr = u32::from_be_bytes(ip).to_be();
        s
    }

    fn v6(ip: std::net::Ipv6Addr, port: u16) -> libc::sockaddr_in6 {
        // SAFETY: sockaddr_in6 is plain data: all zeros is a valid value.
        let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        s.sin6_port = port.to_be();
        s.sin6_addr.s6_addr = ip.octets();
        s
    }

    /// A Dest over `a`'s first `len` bytes (at most its size).
    fn dest<T>(a: &T, len: usize) -> Dest<'_> {
        assert!(len <= std::mem::size_of::<T>());
        // SAFETY: `a` is valid for reads of `len` bytes for as long as it is borrowed.
        unsafe { Dest::new(a as *const T as *const sockaddr, len as socklen_t) }
    }

    #[test]
    fn destinations_and_lengths() {
        let a = v4([192, 0, 2, 7], 443);
        let n = std::mem::size_of::<libc::sockaddr_in>();
        let t = dest(&a, n).target().expect("v4");
        assert_eq!(t.port, 443);
        assert_eq!(t.ip().to_string(), "192.0.2.7");
        assert!(rules::key_is_v4(t.key));
        assert_eq!(dest(&a, n).peer().len(), n);
        assert!(dest(&a, n - 1).target().is_none(), "short addrlen");
        assert!(dest(&a, 1).target().is_none());
        assert!(dest(&a, 1).peer().is_empty());
        // SAFETY: a null pointer is allowed.
        let null = unsafe { Dest::new(std::ptr::null(), n as socklen_t) };
        assert!(null.target().is_none());
        assert!(null.peer().is_empty());

        let m = v6("::ffff:127.0.0.1".parse().expect("ip"), 8443);
        let n = std::mem::size_of::<libc::sockaddr_in6>();
        let t = dest(&m, n).target().expect("mapped");
        assert_eq!(t.ip().to_string(), "127.0.0.1");
        assert_eq!(t.port, 8443);
        assert!(dest(&m, n - 4).target().is_none());

        let six = v6("2001:db8::1".parse().expect("ip"), 1);
        let t = dest(&six, n).target().expect("v6");
        assert_eq!(t.ip().to_string(), "2001:db8::1");
        assert!(!rules::key_is_v4(t.key));

        // SAFETY: sockaddr_un is plain data: all zeros is a valid value.
        let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        un.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let n = std::mem::size_of::<libc::sockaddr_un>();
        assert!(dest(&un, n).target().is_none(), "AF_UNIX is never ours");
    }

    #[test]
    fn peer_is_the_family_size_of_a_longer_argument() {
        // SAFETY: sockaddr_storage is plain data: all zeros is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        ss.ss_family = libc::AF_INET as libc::sa_family_t;
        let n = std::mem::size_of::<libc::sockaddr_storage>();
        assert_eq!(
            dest(&ss, n).peer().len(),
            std::mem::size_of::<libc::sockaddr_in>()
        );
        ss.ss_family = libc::AF_INET6 as libc::sa_family_t;
        assert_eq!(
            dest(&ss, n).peer().len(),
            std::mem::size_of::<libc::sockaddr_in6>()
        );
    }
}
