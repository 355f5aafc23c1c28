//! Sockets: the addresses of a connection's two ends, a listening socket made or taken
//! over, the socket options and state the programs set or read. Safe wrappers, so that the
//! programs need no `unsafe` of their own.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::io::{FromRawFd, RawFd};

/// The address of the peer of socket `fd`, if it is a connected TCP socket.
pub fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    address(fd, libc::getpeername)
}

/// The local address of socket `fd` (where its peer connected to), if it is a TCP socket.
pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    address(fd, libc::getsockname)
}

type NameCall =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// getpeername or getsockname on `fd`, as a std address.
fn address(fd: RawFd, call: NameCall) -> Option<SocketAddr> {
    // SAFETY: the storage is zeroed and large enough for any address; the kernel writes
    // at most `len` bytes of it.
    let (ss, len) = unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if call(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        (ss, len)
    };
    sockaddr_to_std(&ss, len)
}

/// A socket address from the kernel's form (IPv4 or IPv6; a v4-mapped address is IPv4).
fn sockaddr_to_std(
    ss: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and it is that long.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and it is that long.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let v6 = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let ip = v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6));
            Some(SocketAddr::new(ip, u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// TCP_NODELAY on a network socket: records are whole messages, Nagle would only delay
/// the small ones. Not a socket, or not TCP: nothing to do.
pub fn nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a c_int that lives across the call, and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: `v` is an int that lives across the call, and its size is passed.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// A TCP socket listening on `sa`, non-blocking and close-on-exec, with `SO_REUSEADDR`,
/// and for IPv6 both families (`::` then takes IPv4 connections too, whatever the
/// system's `bindv6only`). `backlog`: the listen queue's length, else the system's
/// maximum. The error says which step failed.
pub fn listen(
    sa: SocketAddr,
    backlog: Option<i32>,
) -> Result<TcpListener, (&'static str, io::Error)> {
    let family = if sa.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket takes plain integers.
    let s = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(("create a socket for", io::Error::last_os_error()));
    }
    // SAFETY: `s` is a new socket this function owns; the listener closes it on every path.
    let listener = unsafe { TcpListener::from_raw_fd(s) };
    setsockopt_int(s, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    if sa.is_ipv6() {
        setsockopt_int(s, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0);
    }
    let r = match sa {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sin` is a sockaddr_in of the size passed, alive across the call.
            unsafe {
                libc::bind(
                    s,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: `sin6` is a sockaddr_in6 of the size passed, alive across the call.
            unsafe {
                libc::bind(
                    s,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if r < 0 {
        return Err(("bind to", io::Error::last_os_error()));
    }
    // SAFETY: listen takes plain integers.
    if unsafe { libc::listen(s, backlog.unwrap_or(libc::SOMAXCONN)) } < 0 {
        return Err(("listen on", io::Error::last_os_error()));
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| ("set O_NONBLOCK on", e))?;
    Ok(listener)
}

/// The listening socket a service manager passed on `fd` (systemd's socket activation),
/// taken over: the caller must own `fd`, which nothing else in the process uses. `None`
/// when `fd` is not a TCP socket.
pub fn take_listener(fd: RawFd) -> Option<TcpListener> {
    if !crate::fd::is_socket(fd) {
        return None;
    }
    // SAFETY: `fd` is an open socket (checked above) that the caller hands over: from here
    // on the listener alone owns and closes it.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    l.local_addr().is_ok().then_some(l)
}

/// The pending error of socket `fd` (SO_ERROR, which reading clears): 0 when none, the
/// errno of a failed connect otherwise.
pub fn take_error(fd: RawFd) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int-sized option into an int, with its length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut v as *mut libc::c_int).cast(),
            &mut l,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// The index of the network interface named `name` (an IPv6 zone such as `eth0`); `None`
/// when there is none.
pub fn interface_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated interface name that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
