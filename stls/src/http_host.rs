//! The host an HTTP/1.x request names, read from the app's first bytes.
//!
//! autossl-shim's tlsc uses it two ways: a name chosen from the program's lookups is
//! checked against the request before any of its bytes leave ([`judge`], in the engine's
//! `Holding` state), and where several names gave the address, the request's host picks
//! one of them before the handshake ([`head`]). Only the first request of a connection is
//! read: what follows on a kept-alive connection is the program's business.
//!
//! The rules, strict where a guess would open a door:
//! - a request line is `METHOD SP TARGET SP HTTP/1.D` ending in CRLF (or LF); a method is
//!   1 to 24 of `A-Z`, `-`, `_`. Bytes that cannot start such a line are not HTTP/1.x
//!   (SMTP's `EHLO x`, Redis's `PING`, TLS-in-TLS, HTTP/2's preface) and pass;
//! - the host is the authority of an absolute-form target, else the `Host` header's value
//!   (RFC 9112 §3.2.2), its port and a trailing dot removed, compared without case;
//! - two `Host` headers, or a head that does not end within [`MAX_HEAD`] bytes, fail;
//! - a request that names no host (HTTP/1.0 without `Host`) or an IP literal names no
//!   name: nothing disagrees with it, and it chooses nothing.

/// The longest request head read before the verdict (the size of the engine's buffers, in
/// which it is held).
pub const MAX_HEAD: usize = 64 * 1024;

/// What the first bytes say so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not an HTTP/1.x request: nothing to check.
    NotHttp,
    /// Could still be a request whose head has not ended.
    Incomplete,
    /// A complete head naming this host (lower case), or none (`None`: no `Host`, or an IP
    /// literal).
    Host(Option<String>),
    /// A request that cannot be read safely, and why.
    Bad(&'static str),
}

/// Read the head at the start of `b`.
pub fn head(b: &[u8]) -> Head {
    let line_end = b.iter().position(|&c| c == b'\n');
    let line = match line_end {
        Some(i) => &b[..i],
        None => b,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match request_line(line, line_end.is_some()) {
        Line::No => Head::NotHttp,
        Line::Partial => too_long_or(b, Head::Incomplete),
        Line::Yes(target) => {
            let Some(end) = line_end else {
                return too_long_or(b, Head::Incomplete);
            };
            let mut host = authority(target).map(|a| a.to_vec());
            let absolute = host.is_some();
            let mut seen_host = false;
            let mut rest = &b[end + 1..];
            loop {
                let Some(i) = rest.iter().position(|&c| c == b'\n') else {
                    return too_long_or(b, Head::Incomplete);
                };
                let h = &rest[..i];
                let h = h.strip_suffix(b"\r").unwrap_or(h);
                rest = &rest[i + 1..];
                if h.is_empty() {
                    break;
                }
                let Some(colon) = h.iter().position(|&c| c == b':') else {
                    return Head::Bad("a header line without a colon");
                };
                if h[..colon].eq_ignore_ascii_case(b"host") {
                    if seen_host {
                        return Head::Bad("two Host headers");
                    }
                    seen_host = true;
                    if !absolute {
                        host = Some(h[colon + 1..].trim_ascii().to_vec());
                    }
                }
            }
            match host {
                None => Head::Host(None),
                Some(h) => match host_name(&h) {
                    Ok(n) => Head::Host(n),
                    Err(why) => Head::Bad(why),
                },
            }
        }
    }
}

/// A head that is not over when the buffer is full is refused rather than passed.
fn too_long_or(b: &[u8], h: Head) -> Head {
    if b.len() >= MAX_HEAD {
        Head::Bad("a request head longer than 64 KiB")
    } else {
        h
    }
}

enum Line<'a> {
    No,
    Partial,
    /// A request line; its target.
    Yes(&'a [u8]),
}

fn request_line(line: &[u8], complete: bool) -> Line<'_> {
    let is_method = |c: u8| c.is_ascii_uppercase() || c == b'-' || c == b'_';
    let m = line.iter().take_while(|&&c| is_method(c)).count();
    if m > 24 || (m == 0 && !line.is_empty()) {
        return Line::No;
    }
    if m == line.len() {
        return if complete { Line::No } else { Line::Partial };
    }
    if line[m] != b' ' {
        return Line::No;
    }
    let rest = &line[m + 1..];
    let t = rest.iter().take_while(|&&c| c > b' ' && c < 0x7f).count();
    if t == rest.len() {
        return if complete || t > MAX_HEAD {
            Line::No
        } else {
            Line::Partial
        };
    }
    if t == 0 || rest[t] != b' ' {
        return Line::No;
    }
    let version = &rest[t + 1..];
    const V: &[u8] = b"HTTP/1.";
    let n = version.len().min(V.len());
    if version[..n] != V[..n] {
        return Line::No;
    }
    if version.len() <= V.len() {
        return if complete { Line::No } else { Line::Partial };
    }
    if version.len() == V.len() + 1 && version[V.len()].is_ascii_digit() {
        return if complete {
            Line::Yes(&rest[..t])
        } else {
            Line::Partial
        };
    }
    Line::No
}

/// The authority of an absolute-form target (`http://host:port/...`), without user info.
fn authority(target: &[u8]) -> Option<&[u8]> {
    let lower: Vec<u8> = target.iter().take(8).map(u8::to_ascii_lowercase).collect();
    let rest = if lower.starts_with(b"http://") {
        &target[7..]
    } else if lower.starts_with(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&c| matches!(c, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let a = &rest[..end];
    Some(match a.iter().rposition(|&c| c == b'@') {
        Some(i) => &a[i + 1..],
        None => a,
    })
}

/// `name[:port]`, `v4[:port]` or `[v6][:port]`: the name in lower case without a trailing
/// dot, or None for an IP literal or an empty value.
fn host_name(v: &[u8]) -> Result<Option<String>, &'static str> {
    if v.is_empty() {
        return Ok(None);
    }
    if v[0] == b'[' {
        return match v.iter().position(|&c| c == b']') {
            Some(_) => Ok(None),
            None => Err("a Host header with an unclosed bracket"),
        };
    }
    let host = match v.iter().rposition(|&c| c == b':') {
        Some(i) if v[i + 1..].iter().all(u8::is_ascii_digit) => &v[..i],
        Some(_) => return Err("a Host header with a bad port"),
        None => v,
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let ok = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_');
    if host.is_empty() || !host.iter().all(ok) {
        return Err("a Host header that is not a host name");
    }
    let s = String::from_utf8_lossy(host).to_ascii_lowercase();
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(None);
    }
    Ok(Some(s))
}

/// The engine's verdict on the app's first bytes when they must name `expect`.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send them (and everything after).
    Pass,
    /// Read more before deciding.
    More,
    /// Send nothing: why.
    Refuse(String),
}

/// Judge the app's first bytes `b` against the name the connection was made for. `eof`: the
/// app's output ended there (an unfinished head is then refused, if it looked like one).
pub fn judge(expect: &str, b: &[u8], eof: bool) -> Verdict {
    match head(b) {
        Head::NotHttp | Head::Host(None) => Verdict::Pass,
        Head::Incomplete if eof => Verdict::Refuse("the request ended inside its head".into()),
        Head::Incomplete => Verdict::More,
        Head::Bad(why) => Verdict::Refuse(format!("the request has {why}")),
        Head::Host(Some(h)) => {
            let want = expect.trim_end_matches('.');
            if h.eq_ignore_ascii_case(want) {
                Verdict::Pass
            } else {
                Verdict::Refuse(format!(
                    "the request names host {h}, but the connection was made and verified \
                     for {want}: nothing was sent"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> Head {
        head(s.as_bytes())
    }

    #[test]
    fn requests_and_their_hosts() {
        let h = |s: Option<&str>| Head::Host(s.map(str::to_string));
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: A.Test:8443\r\n\r\n"),
            h(Some("a.test"))
        );
        assert_eq!(host("GET / HTTP/1.1\nhost:b.test.\n\n"), h(Some("b.test")));
        assert_eq!(host("GET / HTTP/1.0\r\n\r\n"), h(None));
        assert_eq!(host("GET / HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n"), h(None));
        assert_eq!(host("GET / HTTP/1.1\r\nHost: [::1]:1\r\n\r\n"), h(None));
        assert_eq!(
            host("GET http://u@c.test:1/x HTTP/1.1\r\nHost: a.test\r\n\r\n"),
            h(Some("c.test"))
        );
        assert_eq!(
            host("POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi"),
            h(Some("a.test"))
        );
    }

    #[test]
    fn what_is_not_http_passes_at_once() {
        for s in [
            "EHLO x\r\n",
            "PING\r\n",
            "\x16\x03\x01",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "get / HTTP/1.1\r\n",
            "GET  / HTTP/1.1\r\n",
            "GET / HTTP/1.1x\r\n",
            "*1\r\n$4\r\nPING\r\n",
        ] {
            assert_eq!(host(s), Head::NotHttp, "{s:?}");
        }
    }

    #[test]
    fn a_head_not_over_waits_then_is_refused() {
        for s in [
            "G",
            "GET",
            "GET ",
            "GET /",
            "GET / HTTP/1",
            "GET / HTTP/1.1",
            "GET / HTTP/1.1\r\nHost: a",
        ] {
            assert_eq!(host(s), Head::Incomplete, "{s:?}");
        }
        assert!(matches!(
            judge("a.test", b"GET / HTTP/1.1\r\n", true),
            Verdict::Refuse(_)
        ));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD, b'x');
        assert!(matches!(head(&long), Head::Bad(_)));
    }

    #[test]
    fn verdicts() {
        let r = "GET / HTTP/1.1\r\nHost: b.test:1\r\n\r\n";
        assert_eq!(judge("b.test", r.as_bytes(), false), Verdict::Pass);
        assert_eq!(judge("B.TEST.", r.as_bytes(), false), Verdict::Pass);
        assert!(
            matches!(judge("a.test", r.as_bytes(), false), Verdict::Refuse(m) if m.contains("b.test"))
        );
        assert_eq!(judge("a.test", b"EHLO", false), Verdict::More);
        assert_eq!(judge("a.test", b"EHLO x\r\n", false), Verdict::Pass);
        assert!(matches!(
            judge(
                "a.test",
                b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                false
            ),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            judge("a.test", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", false),
            Verdict::Refuse(_)
        ));
    }
}
