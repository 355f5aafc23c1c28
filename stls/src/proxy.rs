//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends
//! before the client's bytes, saying whom the connection is really from and to.
//!
//! [`parse`] is the protocol, pure: bytes in, a [`Proxied`] and the header's length out, or
//! [`Error::Incomplete`] when more bytes are needed, or a typed error. [`read_header`] is
//! the I/O: it reads exactly the header's bytes from a socket (peeking first, so that not
//! one byte of the TLS stream behind it is consumed), bounded by a deadline.
//!
//! Version 1 is one text line of at most 107 bytes, CRLF included:
//! `PROXY TCP4 SRC DST SPORT DPORT\r\n`, `PROXY TCP6 ...`, or `PROXY UNKNOWN ...\r\n`.
//! Version 2 is binary: a 12-byte signature, a version/command byte, a family/transport
//! byte, a 16-bit big-endian length, then that many bytes (addresses, then TLVs, which
//! are skipped).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::io::RawFd;
use std::time::Instant;

/// Version 2's signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's longest line, CRLF included.
pub const V1_MAX: usize = 107;
/// Version 2's fixed part: signature, version/command, family/transport, length.
pub const V2_PREFIX: usize = 16;
/// Version 2's longest header: the prefix and a 16-bit length.
pub const V2_MAX: usize = V2_PREFIX + 0xffff;

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxied {
    /// A proxied TCP connection over IPv4 or IPv6: the client's address and the address
    /// it connected to.
    Header {
        /// The client (the connection's source).
        source: SocketAddr,
        /// Where the client connected (the balancer's listening address).
        destination: SocketAddr,
    },
    /// Version 2 `LOCAL`: the balancer's own connection (a health check); the
    /// connection's own addresses stand.
    Local,
    /// Version 1 `UNKNOWN`, or version 2 `PROXY` for a family or transport other than TCP
    /// over IPv4 or IPv6: the connection's own addresses stand.
    Unknown,
}

/// Why bytes are not a PROXY protocol header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A header so far: more bytes are needed (never returned by [`read_header`]).
    Incomplete,
    /// The bytes start as neither version's signature: no header was sent.
    Missing,
    /// Version 1 without its CRLF within 107 bytes.
    TooLong,
    /// A version 1 line that is not `PROXY TCP4|TCP6|UNKNOWN ...` with valid fields.
    BadV1,
    /// Version 2 with a version other than 2 or a command other than LOCAL or PROXY.
    BadV2Command,
    /// Version 2 with an undefined family or transport.
    BadV2Family,
    /// Version 2 whose length is shorter than its addresses.
    ShortV2Addresses,
    /// The peer closed the connection before the header's end (or its start).
    Eof,
    /// No complete header before the deadline.
    Timeout,
    /// A system call failed on the socket (its errno).
    Os(i32),
    /// fd 0 is not a socket: the header can only be peeked at on one.
    NotSocket,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Incomplete => f.write_str("incomplete PROXY protocol header"),
            Error::Missing => f.write_str(
                "no PROXY protocol header: the connection did not start with one (is the \
                 load balancer set to send it, e.g. HAProxy's send-proxy?)",
            ),
            Error::TooLong => f.write_str("PROXY protocol v1 header without CRLF within 107 bytes"),
            Error::BadV1 => f.write_str(
                "malformed PROXY protocol v1 header (expected PROXY TCP4|TCP6|UNKNOWN with \
                 two addresses and two ports)",
            ),
            Error::BadV2Command => {
                f.write_str("malformed PROXY protocol v2 header: unknown version or command")
            }
            Error::BadV2Family => f.write_str(
                "malformed PROXY protocol v2 header: unknown address family or transport",
            ),
            Error::ShortV2Addresses => f.write_str(
                "malformed PROXY protocol v2 header: its length is shorter than its addresses",
            ),
            Error::Eof => {
                f.write_str("connection closed before the end of the PROXY protocol header")
            }
            Error::Timeout => f.write_str("timed out waiting for the PROXY protocol header"),
            Error::Os(e) => write!(
                f,
                "unable to read the PROXY protocol header: {}",
                crate::exit::io_text(&std::io::Error::from_raw_os_error(*e))
            ),
            Error::NotSocket => {
                f.write_str("the PROXY protocol needs the network on a socket, and fd 0 is not one")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Parse the header at the start of `buf`: what it says and its length in bytes. Bytes
/// after it are not looked at. [`Error::Incomplete`] when `buf` is a prefix of a header
/// that may still turn out valid.
pub fn parse(buf: &[u8]) -> Result<(Proxied, usize), Error> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if n < V2_SIGNATURE.len() {
            return Err(Error::Incomplete);
        }
        return parse_v2(buf);
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        if n < 6 {
            return Err(Error::Incomplete);
        }
        return parse_v1(buf);
    }
    Err(Error::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<(Proxied, usize), Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(Error::TooLong);
        }
        // A lone CR or LF can never become a CRLF-ended line further on.
        if window[..window.len().saturating_sub(1)].contains(&b'\r') || window.contains(&b'\n') {
            return Err(Error::BadV1);
        }
        return Err(Error::Incomplete);
    };
    let len = cr + 2;
    let line = std::str::from_utf8(&buf[6..cr]).map_err(|_| Error::BadV1)?;
    if line.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(Error::BadV1);
    }
    let mut fields = line.split(' ');
    let proto = fields.next().ok_or(Error::BadV1)?;
    if proto == "UNKNOWN" {
        // The rest of the line, whatever it holds, is to be ignored.
        return Ok((Proxied::Unknown, len));
    }
    let v6 = match proto {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(Error::BadV1),
    };
    let f: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = f[..] else {
        return Err(Error::BadV1);
    };
    let ip = |s: &str| -> Result<IpAddr, Error> {
        if v6 {
            s.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            s.parse::<Ipv4Addr>().map(IpAddr::V4)
        }
        .map_err(|_| Error::BadV1)
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, port(dport)?);
    Ok((
        Proxied::Header {
            source,
            destination,
        },
        len,
    ))
}

/// A decimal port, 0 to 65535, without sign or leading zeros.
fn port(s: &str) -> Result<u16, Error> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(Error::BadV1);
    }
    s.parse().map_err(|_| Error::BadV1)
}

fn parse_v2(buf: &[u8]) -> Result<(Proxied, usize), Error> {
    if buf.len() < V2_PREFIX {
        // The version/command byte can be judged as soon as it is there.
        if buf.len() > 12 && buf[12] >> 4 != 2 {
            return Err(Error::BadV2Command);
        }
        return Err(Error::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0xf);
    if version != 2 || command > 1 {
        return Err(Error::BadV2Command);
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0xf);
    if family > 3 || transport > 2 {
        return Err(Error::BadV2Family);
    }
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = V2_PREFIX + body;
    if buf.len() < len {
        return Err(Error::Incomplete);
    }
    if command == 0 {
        return Ok((Proxied::Local, len));
    }
    let a = &buf[V2_PREFIX..len];
    // Family 1 is IPv4, 2 IPv6; transport 1 is a stream (TCP). What follows the
    // addresses (TLVs) is skipped.
    let proxied = match (family, transport) {
        (1, 1) => {
            if a.len() < 12 {
                return Err(Error::ShortV2Addresses);
            }
            let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
            let p = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Proxied::Header {
                source: SocketAddr::new(ip(0), p(8)),
                destination: SocketAddr::new(ip(4), p(10)),
            }
        }
        (2, 1) => {
            if a.len() < 36 {
                return Err(Error::ShortV2Addresses);
            }
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let p = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            Proxied::Header {
                source: SocketAddr::new(ip(0), p(32)),
                destination: SocketAddr::new(ip(16), p(34)),
            }
        }
        _ => Proxied::Unknown,
    };
    Ok((proxied, len))
}

/// Read one header from the socket `fd`, exactly its bytes, by `deadline`. The bytes are
/// peeked at first and only a header's bytes are consumed, so the stream that follows
/// (the TLS handshake) is left untouched, whatever the peer sent at once.
pub fn read_header(fd: RawFd, deadline: Option<Instant>) -> Result<Proxied, Error> {
    let mut got: Vec<u8> = Vec::with_capacity(V1_MAX);
    let mut peek = vec![0u8; V1_MAX];
    loop {
        wait_readable(fd, deadline)?;
        // Never more than the longest header could still need.
        let room = if got.len() >= V2_PREFIX && got.starts_with(&V2_SIGNATURE) {
            V2_PREFIX + u16::from_be_bytes([got[14], got[15]]) as usize - got.len()
        } else {
            V1_MAX.max(V2_PREFIX) - got.len()
        };
        peek.resize(room.max(1), 0);
        let n = recv(fd, &mut peek, libc::MSG_PEEK | libc::MSG_DONTWAIT)?;
        let Some(n) = n else { continue };
        if n == 0 {
            return Err(Error::Eof);
        }
        let mut seen = got.clone();
        seen.extend_from_slice(&peek[..n]);
        match parse(&seen) {
            Ok((p, len)) => {
                consume(fd, len - got.len())?;
                return Ok(p);
            }
            Err(Error::Incomplete) => {
                // Every byte seen belongs to the header: take them and wait for more.
                consume(fd, n)?;
                got = seen;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Wait until `fd` is readable or the deadline passes.
fn wait_readable(fd: RawFd, deadline: Option<Instant>) -> Result<(), Error> {
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout);
        }
        let mut p = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        match crate::fd::poll(&mut p, crate::fd::poll_timeout(deadline)) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Os(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
}

/// One recv(2); `None` when it would block or was interrupted.
fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> Result<Option<usize>, Error> {
    // SAFETY: `buf` is valid for writes of its length during the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        Some(libc::ENOTSOCK) => Err(Error::NotSocket),
        Some(c) => Err(Error::Os(c)),
        None => Err(Error::Os(libc::EIO)),
    }
}

/// Take `n` bytes already peeked at off the socket.
fn consume(fd: RawFd, mut n: usize) -> Result<(), Error> {
    let mut sink = [0u8; 512];
    while n > 0 {
        let want = n.min(sink.len());
        match recv(fd, &mut sink[..want], libc::MSG_DONTWAIT)? {
            Some(0) => return Err(Error::Eof),
            Some(k) => n -= k,
            // Peeked bytes are in the socket's buffer: only a signal can get here.
            None => {}
        }
    }
    Ok(())
}

/// Read the header on `fd` for a program's `-L`, with the programs' exit codes: a
/// missing, malformed or cut header is the peer's protocol error (97, as a failed
/// handshake), no header by the deadline a handshake timeout (98), a failed system call
/// 111.
pub fn accept(fd: RawFd, deadline: Option<Instant>) -> Result<Proxied, crate::exit::Error> {
    use crate::exit;
    read_header(fd, deadline).map_err(|e| {
        let code = match e {
            Error::Timeout => exit::TLS,
            Error::Os(_) | Error::NotSocket => exit::SYSTEM,
            _ => exit::HANDSHAKE,
        };
        exit::Error::new(code, e.to_string())
    })
}

/// After a version 2 `LOCAL` header: whether the balancer's connection ends before a byte
/// follows it (a health check that connects, sends its header and leaves, closing or
/// resetting). Waits for the first byte or the end, at most until `deadline`; a byte, the
/// deadline or a failed system call is `false`, and the handshake reports it as usual.
pub fn ends_after_header(fd: RawFd, deadline: Option<Instant>) -> bool {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    loop {
        let t = crate::fd::poll_timeout(deadline);
        if t == 0 {
            return false;
        }
        match crate::fd::poll(&mut p, t) {
            Ok(0) => continue,
            Ok(_) => break,
            Err(_) => return false,
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: `b` is valid for one byte; MSG_PEEK leaves it for the handshake.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let gone = matches!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ECONNRESET | libc::EPIPE)
    );
    n == 0 || (n < 0 && gone)
}

/// `-L`: the header on `fd`, read by `deadline` ([`accept`]); `None` without `-L`.
pub fn header(
    opts: &crate::options::Options,
    fd: RawFd,
    deadline: Option<Instant>,
) -> Result<Option<Proxied>, crate::exit::Error> {
    if !opts.proxy_protocol {
        return Ok(None);
    }
    accept(fd, deadline).map(Some)
}

/// The environment edits for the app, the connection being the socket `net`: a proxied
/// TCP connection's addresses replace the connection's own (`TCPREMOTEIP`,
/// `TCPREMOTEPORT`, `TCPLOCALIP`, `TCPLOCALPORT`, `PROTO`), and the names a UCSPI server
/// looked up for the balancer's addresses are removed. After `LOCAL` or `UNKNOWN` the
/// connection's own addresses stand: those the UCSPI server set, or where none did (inetd,
/// systemd) the socket's own, so that prog sees an address either way.
pub fn describe(p: Proxied, net: RawFd, desc: &mut crate::session::Description) {
    let (source, destination) = match p {
        Proxied::Header {
            source,
            destination,
        } => {
            for k in ["TCPREMOTEHOST", "TCPREMOTEINFO", "TCPLOCALHOST"] {
                desc.set(k, None);
            }
            (Some(source), Some(destination))
        }
        Proxied::Local | Proxied::Unknown => {
            let unset = |k| std::env::var_os(k).is_none();
            (
                unset("TCPREMOTEIP")
                    .then(|| crate::net::peer_addr(net))
                    .flatten(),
                unset("TCPLOCALIP")
                    .then(|| crate::net::local_addr(net))
                    .flatten(),
            )
        }
    };
    if source.is_some() || destination.is_some() {
        desc.set("PROTO", Some("TCP".into()));
    }
    if let Some(a) = source {
        desc.set("TCPREMOTEIP", Some(a.ip().to_string()));
        desc.set("TCPREMOTEPORT", Some(a.port().to_string()));
    }
    if let Some(a) = destination {
        desc.set("TCPLOCALIP", Some(a.ip().to_string()));
        desc.set("TCPLOCALPORT", Some(a.port().to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn header(src: &str, dst: &str) -> Proxied {
        Proxied::Header {
            source: sa(src),
            destination: sa(dst),
        }
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n\x16\x03\x01";
        assert_eq!(
            parse(h),
            Ok((header("192.0.2.7:56324", "198.51.100.1:443"), h.len() - 3))
        );
        let h = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        assert_eq!(
            parse(h),
            Ok((header("[2001:db8::1]:1", "[::1]:65535"), h.len()))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok((Proxied::Unknown, 15)));
        let h = b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\nrest";
        assert_eq!(parse(h), Ok((Proxied::Unknown, h.len() - 4)));
        // The longest possible line is accepted.
        let mut h = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec();
        assert_eq!(h.len(), V1_MAX);
        h.extend_from_slice(b"more");
        assert_eq!(parse(&h).map(|r| r.1), Ok(V1_MAX));
    }

    #[test]
    fn v1_incomplete_then_complete() {
        let h = b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n";
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Err(Error::Incomplete), "prefix {i}");
        }
        assert!(parse(h).is_ok());
    }

    #[test]
    fn v1_malformed() {
        for h in [
            &b"PROXY TCP4 10.0.0.1 10.0.0.2 1000\r\n"[..],
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000 3000\r\n",
            b"PROXY TCP4 10.0.0.1  10.0.0.2 1000 2000\r\n",
            b"PROXY TCP4 ::1 ::1 1000 2000\r\n",
            b"PROXY TCP6 10.0.0.1 10.0.0.2 1000 2000\r\n",
            b"PROXY TCP4 10.0.0.256 10.0.0.2 1000 2000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 65536 2000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 01000 2000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 +1000 2000\r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000 \r\n",
            b"PROXY UDP4 10.0.0.1 10.0.0.2 1000 2000\r\n",
            b"PROXY tcp4 10.0.0.1 10.0.0.2 1000 2000\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\n",
            b"PROXY TCP4 10.0.0.1\r10.0.0.2 1000 2000\r\n",
            b"PROXY TCP4 \xff.0.0.1 10.0.0.2 1000 2000\r\n",
        ] {
            assert_eq!(
                parse(h),
                Err(Error::BadV1),
                "{:?}",
                String::from_utf8_lossy(h)
            );
        }
    }

    #[test]
    fn v1_oversized() {
        let mut h = b"PROXY UNKNOWN ".to_vec();
        h.resize(V1_MAX, b'x');
        assert_eq!(parse(&h), Err(Error::TooLong));
        h.extend_from_slice(b"\r\n");
        assert_eq!(parse(&h), Err(Error::TooLong));
        // 106 bytes without CRLF yet: still may end at byte 107.
        assert_eq!(parse(&h[..V1_MAX - 1]), Err(Error::Incomplete));
    }

    #[test]
    fn missing() {
        for h in [
            &b"\x16\x03\x01\x02\x00\x01"[..],
            b"GET / HTTP/1.1\r\n",
            b"proxy TCP4",
            b"PROXYTCP4",
            b"\r\n\r\n\0\r\nQUIX\n",
            b"\r\n\r\n\r\n",
        ] {
            assert_eq!(parse(h), Err(Error::Missing), "{h:?}");
        }
        assert_eq!(parse(b""), Err(Error::Incomplete));
        assert_eq!(parse(b"PRO"), Err(Error::Incomplete));
        assert_eq!(parse(b"\r\n\r\n\0"), Err(Error::Incomplete));
    }

    #[test]
    fn v2_proxy_ipv4_ipv6_with_tlvs() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        // A TLV (type 0x04: NOOP) and an unknown one, both skipped.
        body.extend_from_slice(&[0x04, 0x00, 0x03, 1, 2, 3, 0xee, 0x00, 0x00]);
        let mut h = v2(0x21, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            parse(&h),
            Ok((header("192.0.2.7:56324", "198.51.100.1:443"), len))
        );
        for i in 0..len {
            assert_eq!(parse(&h[..i]), Err(Error::Incomplete), "prefix {i}");
        }

        let src: Ipv6Addr = "2001:db8::7".parse().expect("v6");
        let dst: Ipv6Addr = "2001:db8::1".parse().expect("v6");
        let mut body = src.octets().to_vec();
        body.extend_from_slice(&dst.octets());
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&8443u16.to_be_bytes());
        let h = v2(0x21, 0x21, &body);
        assert_eq!(
            parse(&h),
            Ok((header("[2001:db8::7]:1", "[2001:db8::1]:8443"), h.len()))
        );
    }

    #[test]
    fn v2_local_and_unknown() {
        // LOCAL: addresses, if any, are ignored.
        assert_eq!(parse(&v2(0x20, 0x00, &[])), Ok((Proxied::Local, 16)));
        assert_eq!(parse(&v2(0x20, 0x11, &[0; 12])), Ok((Proxied::Local, 28)));
        // PROXY over UNSPEC, UDP or a UNIX socket: the connection's own addresses stand.
        assert_eq!(parse(&v2(0x21, 0x00, &[])), Ok((Proxied::Unknown, 16)));
        assert_eq!(parse(&v2(0x21, 0x12, &[0; 12])), Ok((Proxied::Unknown, 28)));
        assert_eq!(
            parse(&v2(0x21, 0x31, &[0; 216])),
            Ok((Proxied::Unknown, 232))
        );
    }

    #[test]
    fn v2_malformed() {
        assert_eq!(parse(&v2(0x11, 0x11, &[0; 12])), Err(Error::BadV2Command));
        assert_eq!(parse(&v2(0x22, 0x11, &[0; 12])), Err(Error::BadV2Command));
        // Judged as soon as the byte is there.
        assert_eq!(parse(&v2(0x31, 0x11, &[])[..13]), Err(Error::BadV2Command));
        assert_eq!(parse(&v2(0x21, 0x41, &[0; 12])), Err(Error::BadV2Family));
        assert_eq!(parse(&v2(0x21, 0x13, &[0; 12])), Err(Error::BadV2Family));
        assert_eq!(
            parse(&v2(0x21, 0x11, &[0; 11])),
            Err(Error::ShortV2Addresses)
        );
        assert_eq!(
            parse(&v2(0x21, 0x21, &[0; 35])),
            Err(Error::ShortV2Addresses)
        );
        // A truncated one is incomplete until the peer closes or the deadline passes.
        let h = v2(0x21, 0x11, &[0; 12]);
        assert_eq!(parse(&h[..20]), Err(Error::Incomplete));
    }

    #[test]
    fn v2_longest() {
        let mut body = vec![0u8; 0xffff];
        body[..12].copy_from_slice(&[127, 0, 0, 2, 127, 0, 0, 1, 0, 80, 1, 187]);
        let h = v2(0x21, 0x11, &body);
        assert_eq!(
            parse(&h),
            Ok((header("127.0.0.2:80", "127.0.0.1:443"), V2_MAX))
        );
    }

    /// Random bytes and random edits of valid headers (seeded, bounded): parse never
    /// panics, a header's length never exceeds what it was given, and every prefix of an
    /// accepted header is incomplete.
    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seeds = vec![
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(0x21, 0x11, &[1; 12]),
            v2(0x21, 0x21, &[2; 40]),
            v2(0x20, 0x00, &[]),
        ];
        seeds.push(Vec::new());
        for i in 0..20_000 {
            let mut b = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 4) {
                let r = next();
                match r % 3 {
                    0 if !b.is_empty() => {
                        let at = (r >> 8) as usize % b.len();
                        b[at] = (r >> 32) as u8;
                    }
                    1 => b.truncate((r >> 8) as usize % (b.len() + 1)),
                    _ => {
                        for _ in 0..((r >> 8) % 64) {
                            b.push(next() as u8);
                        }
                    }
                }
            }
            if let Ok((_, len)) = parse(&b) {
                assert!(len <= b.len(), "{b:?}");
                for cut in [0, len / 2, len.saturating_sub(1)] {
                    if cut < len {
                        assert_eq!(parse(&b[..cut]), Err(Error::Incomplete), "{b:?} at {cut}");
                    }
                }
            }
        }
    }

    fn pair() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn reads_exactly_the_header() {
        let deadline = Some(Instant::now() + std::time::Duration::from_secs(5));
        for (h, want) in [
            (
                b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\n".to_vec(),
                header("10.0.0.1:1000", "10.0.0.2:2000"),
            ),
            (v2(0x20, 0x00, &[]), Proxied::Local),
            (
                v2(
                    0x21,
                    0x11,
                    &[10, 0, 0, 1, 10, 0, 0, 2, 3, 232, 7, 208, 4, 0, 0],
                ),
                header("10.0.0.1:1000", "10.0.0.2:2000"),
            ),
        ] {
            let (a, b) = pair();
            let mut all = h.clone();
            all.extend_from_slice(b"\x16\x03\x01after");
            crate::fd::write_all(b, &all).expect("write");
            assert_eq!(read_header(a, deadline), Ok(want));
            crate::fd::close(b);
            assert_eq!(
                crate::fd::read_to_end(a, 1024).expect("rest"),
                b"\x16\x03\x01after"
            );
            crate::fd::close(a);
        }
    }

    #[test]
    fn reads_a_trickled_header_and_times_out() {
        let (a, b) = pair();
        let h = b"PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\nTLS".to_vec();
        let t = std::thread::spawn(move || {
            for c in h.chunks(7) {
                crate::fd::write_all(b, c).expect("write");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            b
        });
        let deadline = Some(Instant::now() + std::time::Duration::from_secs(5));
        assert_eq!(
            read_header(a, deadline),
            Ok(header("10.0.0.1:1000", "10.0.0.2:2000"))
        );
        let b = t.join().expect("writer");
        crate::fd::close(b);
        assert_eq!(crate::fd::read_to_end(a, 64).expect("rest"), b"TLS");
        crate::fd::close(a);

        let (a, b) = pair();
        crate::fd::write_all(b, b"PROXY TCP4 10.0").expect("write");
        let deadline = Some(Instant::now() + std::time::Duration::from_millis(100));
        assert_eq!(read_header(a, deadline), Err(Error::Timeout));
        crate::fd::close(b);
        crate::fd::close(a);

        let (a, b) = pair();
        crate::fd::write_all(b, b"PROXY TCP4 10.0").expect("write");
        crate::fd::close(b);
        assert_eq!(read_header(a, None), Err(Error::Eof));
        crate::fd::close(a);

        let (a, b) = pair();
        crate::fd::close(b);
        assert_eq!(read_header(a, None), Err(Error::Eof));
        crate::fd::close(a);
    }
}
