//! The configuration: which connections are upgraded, parsed once from the environment.
//!
//! Pure code (no libc calls), so that it can be unit- and property-tested in isolation.
//! Parsing is lenient in one way only: a bad entry is reported and skipped, the rest of the
//! list still counts (the caller then knows the configuration is broken and stays out of the
//! way, see [`Config::broken`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// A set of TCP ports, as a fixed 65536-bit map (no allocation when matching).
#[derive(Clone)]
pub struct Ports {
    bits: Box<[u64; 1024]>,
    count: u32,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            bits: Box::new([0; 1024]),
            count: 0,
        }
    }
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ports({} ports)", self.count)
    }
}

impl Ports {
    pub fn insert(&mut self, p: u16) {
        let (w, b) = (usize::from(p) / 64, p % 64);
        if self.bits[w] & (1 << b) == 0 {
            self.bits[w] |= 1 << b;
            self.count += 1;
        }
    }

    pub fn contains(&self, p: u16) -> bool {
        let (w, b) = (usize::from(p) / 64, p % 64);
        self.bits[w] & (1 << b) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }
}

/// An address or network: IPv4 networks are stored in their v4-mapped IPv6 form
/// (`::ffff:a.b.c.d/96+n`), so that one comparison serves both families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub net: u128,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: u128) -> bool {
        let mask = mask(self.prefix);
        ip & mask == self.net
    }
}

fn mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// An address as the 128-bit key used for matching: IPv4 (and v4-mapped IPv6) as
/// `::ffff:a.b.c.d`.
pub fn key_of(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Is this 128-bit key an IPv4 address (v4-mapped form)?
pub fn key_is_v4(k: u128) -> bool {
    k >> 32 == 0xffff
}

/// The address of a key: IPv4 for the v4-mapped form.
pub fn ip_of(k: u128) -> IpAddr {
    let v6 = Ipv6Addr::from(k);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Why a list entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    pub var: &'static str,
    pub entry: String,
}

/// Split on spaces, tabs, newlines and commas; empty pieces are skipped.
fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|t| !t.is_empty())
}

/// A port: 1..=65535, decimal.
fn port(t: &str) -> Option<u16> {
    if t.is_empty() || t.len() > 5 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match t.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Some(n as u16),
        _ => None,
    }
}

/// Parse a port list into `into`: `443`, `443,8443`, `443 8443`, ranges `8000-8010`.
/// Returns the entries that could not be parsed.
pub fn parse_ports(var: &'static str, s: &str, into: &mut Ports) -> Vec<BadEntry> {
    let mut bad = Vec::new();
    for t in tokens(s) {
        let ok = match t.split_once('-') {
            None => port(t).map(|p| into.insert(p)).is_some(),
            Some((a, b)) => match (port(a), port(b)) {
                (Some(a), Some(b)) if a <= b => {
                    for p in a..=b {
                        into.insert(p);
                    }
                    true
                }
                _ => false,
            },
        };
        if !ok {
            bad.push(BadEntry {
                var,
                entry: t.chars().take(64).collect(),
            });
        }
    }
    bad
}

/// One address or network: `192.0.2.1`, `10.0.0.0/8`, `2001:db8::1`, `[2001:db8::1]`,
/// `2001:db8::/32`, `[2001:db8::]/32`. Host bits under the mask are ignored.
pub fn parse_cidr(t: &str) -> Option<Cidr> {
    let (addr, len) = match t.rsplit_once('/') {
        Some((a, l)) => {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (a, Some(l.parse::<u8>().ok()?))
        }
        None => (t, None),
    };
    let bracketed = addr.starts_with('[');
    let addr = if bracketed {
        addr.strip_prefix('[')?.strip_suffix(']')?
    } else {
        addr
    };
    let ip: IpAddr = if let Ok(v4) = addr.parse::<Ipv4Addr>() {
        if bracketed {
            return None;
        }
        IpAddr::V4(v4)
    } else {
        IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?)
    };
    let key = key_of(ip);
    let prefix = match (ip, len) {
        (IpAddr::V4(_), Some(l)) if l <= 32 => 96 + l,
        (IpAddr::V4(_), None) => 128,
        (IpAddr::V6(_), Some(l)) if l <= 128 => l,
        (IpAddr::V6(_), None) => 128,
        _ => return None,
    };
    Some(Cidr {
        net: key & mask(prefix),
        prefix,
    })
}

/// Parse an address list. Returns the networks and the entries that could not be parsed.
pub fn parse_ips(var: &'static str, s: &str) -> (Vec<Cidr>, Vec<BadEntry>) {
    let mut nets = Vec::new();
    let mut bad = Vec::new();
    for t in tokens(s) {
        match parse_cidr(t) {
            Some(c) => nets.push(c),
            None => bad.push(BadEntry {
                var,
                entry: t.chars().take(64).collect(),
            }),
        }
    }
    (nets, bad)
}

/// One entry of `AUTOSSL_NAMES`: the server name for a destination (`port` 0: every port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub key: u128,
    pub port: u16,
    pub name: String,
}

/// A destination of `AUTOSSL_NAMES`: `192.0.2.1:443`, `[2001:db8::1]:443`, or an address
/// alone (`192.0.2.1`, `[2001:db8::1]`, `2001:db8::1`) for every port.
fn parse_destination(t: &str) -> Option<(u128, u16)> {
    if let Some(rest) = t.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        let port = match after {
            "" => 0,
            p => port(p.strip_prefix(':')?)?,
        };
        return Some((key_of(IpAddr::V6(ip)), port));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some((key_of(ip), 0));
    }
    let (ip, p) = t.rsplit_once(':')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    Some((key_of(IpAddr::V4(ip)), port(p)?))
}

/// Parse `AUTOSSL_NAMES`: `name=destination` entries. A destination given twice with two
/// names is refused (it would not say which one).
pub fn parse_names(var: &'static str, s: &str) -> (Vec<Named>, Vec<BadEntry>) {
    let mut out: Vec<Named> = Vec::new();
    let mut bad = Vec::new();
    for t in tokens(s) {
        let parsed = t.split_once('=').and_then(|(n, d)| {
            let name = valid_name(n.as_bytes())?;
            let (key, port) = parse_destination(d)?;
            Some(Named {
                key,
                port,
                name: String::from_utf8_lossy(name).into_owned(),
            })
        });
        let clash = parsed.as_ref().is_some_and(|p| {
            out.iter()
                .any(|o| o.key == p.key && o.port == p.port && o.name != p.name)
        });
        match parsed {
            Some(p) if !clash => out.push(p),
            _ => bad.push(BadEntry {
                var,
                entry: t.chars().take(64).collect(),
            }),
        }
    }
    (out, bad)
}

/// A duration: `30s`, `500ms`, `2m`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let d = match s[digits..].trim() {
        "" | "ms" => Duration::from_millis(n),
        "s" | "sec" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    Some(d)
}

/// An errno value: decimal, 1..=4095.
pub fn parse_errno(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match s.parse::<i32>() {
        Ok(n) if (1..=4095).contains(&n) => Some(n),
        _ => None,
    }
}

/// A server name usable for SNI and verification: ASCII letters, digits, `-`, `_`, `.`,
/// `*` not allowed; 1..=253 bytes after a trailing dot is removed; no empty label.
pub fn valid_name(s: &[u8]) -> Option<&[u8]> {
    let s = s.strip_suffix(b".").unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    if !s
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return None;
    }
    if s.split(|&b| b == b'.')
        .any(|l| l.is_empty() || l.len() > 63)
    {
        return None;
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(s: &str) -> (Ports, Vec<BadEntry>) {
        let mut p = Ports::default();
        let bad = parse_ports("P", s, &mut p);
        (p, bad)
    }

    fn k(s: &str) -> u128 {
        key_of(s.parse().expect("ip"))
    }

    #[test]
    fn port_lists() {
        let (p, bad) = ports("443, 8443 1 65535\t,,");
        assert!(bad.is_empty());
        assert_eq!(p.len(), 4);
        for x in [443, 8443, 1, 65535] {
            assert!(p.contains(x));
        }
        assert!(!p.contains(80));
        let (p, bad) = ports("8000-8002");
        assert!(bad.is_empty());
        assert_eq!(p.len(), 3);
        assert!(p.contains(8001));
        for b in [
            "0",
            "65536",
            "-1",
            "+443",
            "44x",
            "http",
            "9-8",
            "1-",
            "99999999999",
        ] {
            let (p, bad) = ports(b);
            assert_eq!(bad.len(), 1, "{b}");
            assert!(p.is_empty(), "{b}");
        }
        let (p, bad) = ports("443 x 80");
        assert_eq!(bad.len(), 1);
        assert_eq!(p.len(), 2);
        assert!(ports("").0.is_empty());
    }

    #[test]
    fn cidrs() {
        let c = parse_cidr("10.0.0.0/8").expect("v4 net");
        assert!(c.contains(k("10.1.2.3")));
        assert!(c.contains(k("::ffff:10.1.2.3")));
        assert!(!c.contains(k("11.0.0.1")));
        let c = parse_cidr("192.0.2.1").expect("v4 host");
        assert!(c.contains(k("192.0.2.1")));
        assert!(!c.contains(k("192.0.2.2")));
        let c = parse_cidr("[2001:db8::1]").expect("bracketed");
        assert!(c.contains(k("2001:db8::1")));
        let c = parse_cidr("2001:db8::/32").expect("v6 net");
        assert!(c.contains(k("2001:db8:ffff::1")));
        assert!(!c.contains(k("2001:db9::1")));
        let c = parse_cidr("[2001:db8::]/32").expect("bracketed net");
        assert!(c.contains(k("2001:db8::2")));
        let c = parse_cidr("0.0.0.0/0").expect("all v4");
        assert!(c.contains(k("203.0.113.9")));
        assert!(!c.contains(k("::1")));
        let c = parse_cidr("::/0").expect("all");
        assert!(c.contains(k("::1")) && c.contains(k("1.2.3.4")));
        let c = parse_cidr("::ffff:127.0.0.1").expect("mapped");
        assert!(c.contains(k("127.0.0.1")));
        let c = parse_cidr("10.1.2.3/8").expect("host bits");
        assert!(c.contains(k("10.200.0.1")));
        for b in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "[10.0.0.1]",
            "host",
            "1.2.3.4/",
            "/8",
            "[::1",
            "::1]",
            "1.2.3.4/-1",
            "1.2.3.4/8/8",
            "fe80::1%eth0",
        ] {
            assert_eq!(parse_cidr(b), None, "{b}");
        }
    }

    #[test]
    fn durations_and_errno() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for b in ["", "s", "1h", "-1", "1.5s", "abc"] {
            assert_eq!(parse_duration(b), None, "{b}");
        }
        assert_eq!(parse_errno("111"), Some(111));
        for b in ["0", "-1", "x", "4096", ""] {
            assert_eq!(parse_errno(b), None, "{b}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(valid_name(b"tls.test."), Some(&b"tls.test"[..]));
        assert_eq!(valid_name(b"a-b_c.example"), Some(&b"a-b_c.example"[..]));
        for b in [&b""[..], b".", b"a..b", b"caf\xc3\xa9", b"a b", b"*.x"] {
            assert_eq!(valid_name(b), None);
        }
        let long = vec![b'a'; 64];
        assert_eq!(valid_name(&long), None);
    }

    /// A small deterministic generator for the property tests (no external crates).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random strings over the alphabet of the lists never panic, and whatever parses
    /// round-trips: every port printed into a list is found again.
    #[test]
    fn property_ports() {
        let alphabet = b"0123456789,- \t/:[]abf.x+";
        let mut r = Rng(0x5eed_1234_abcd_0001);
        for _ in 0..20_000 {
            let n = r.below(24) as usize;
            let s: String = (0..n)
                .map(|_| alphabet[r.below(alphabet.len() as u64) as usize] as char)
                .collect();
            let (p, bad) = ports(&s);
            assert!(p.len() <= 65535);
            let _ = bad;
            let _ = parse_ips("I", &s);
            let _ = parse_duration(&s);
            let _ = parse_errno(&s);
        }
        for _ in 0..2_000 {
            let want: Vec<u16> = (0..r.below(8)).map(|_| 1 + r.below(65535) as u16).collect();
            let sep = [",", " ", ", ", "\t"][r.below(4) as usize];
            let s = want
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(sep);
            let (p, bad) = ports(&s);
            assert!(bad.is_empty(), "{s}");
            for w in &want {
                assert!(p.contains(*w), "{s}");
            }
            let mut uniq = want.clone();
            uniq.sort_unstable();
            uniq.dedup();
            assert_eq!(p.len(), uniq.len(), "{s}");
        }
    }

    /// A random network contains exactly the addresses that share its first `prefix` bits,
    /// for both families and both spellings.
    #[test]
    fn property_cidr() {
        let mut r = Rng(0x0bad_cafe_f00d_0002);
        for _ in 0..5_000 {
            let v4 = r.below(2) == 0;
            let (text, key, plen) = if v4 {
                let a = r.next() as u32;
                let l = r.below(33) as u8;
                (
                    format!("{}/{}", Ipv4Addr::from(a), l),
                    key_of(IpAddr::V4(Ipv4Addr::from(a))),
                    96 + l,
                )
            } else {
                let a = (u128::from(r.next()) << 64) | u128::from(r.next());
                let l = r.below(129) as u8;
                let ip = Ipv6Addr::from(a);
                let text = if r.below(2) == 0 {
                    format!("{ip}/{l}")
                } else {
                    format!("[{ip}]/{l}")
                };
                // A v4-mapped network given in IPv6 form keeps its IPv6 prefix length.
                (text, a, l)
            };
            let c = parse_cidr(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(c.prefix, plen, "{text}");
            assert!(c.contains(key), "{text}");
            // Flip one bit: inside the prefix it must leave, outside it must stay.
            let bit = r.below(128) as u32;
            let other = key ^ (1u128 << bit);
            let inside = 127 - bit < u32::from(plen);
            assert_eq!(c.contains(other), !inside, "{text} bit {bit}");
        }
    }
}
