//! The session description: what a finished handshake tells a program, as s6-networking
//! passes it on a notification descriptor (`tlsc -d fd`) and from a wrapper to the
//! process that runs its program.
//!
//! The wire form is a sequence of entries, each ended by a `\0`: `K=V` sets the variable
//! `K` to `V`, a bare `K` unsets it; a final `\0` (an empty entry) ends the description.
//! An empty description is the single byte `\0`. A key never holds `=` or `\0`, a value
//! never holds `\0`; the first `=` of an entry separates the key from the value.
//!
//! On a notification descriptor the whole description is at most [`MAX_NOTIFICATION`]
//! bytes: the writer makes it fit ([`Description::fits`]), the reader refuses more
//! ([`Description::decode_notification`]).
//!
//! Instead of a description, `tlsc --detach` (autossl-shim's) reports a failure on the
//! descriptor: [`Failure`], a line that starts with `!`, which no description does.
//!
//! This crate has no dependencies: `libautossl.so`, which reads what `tlsc` writes, links
//! neither OpenSSL nor `stls`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The largest description, in bytes, final `\0` included, written to or read from a
/// notification descriptor.
pub const MAX_NOTIFICATION: usize = 4096;

/// Ordered variable edits: `Some(v)` sets the variable to `v`, `None` unsets it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// The edits in the order they are applied (a later entry for a key wins).
    pub vars: Vec<(OsString, Option<OsString>)>,
}

/// Why bytes are not a description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// No final `\0`: the writer stopped early (or nothing was written).
    Incomplete,
    /// An empty entry before the end: a `\0` where a key was expected.
    EmptyEntry,
    /// More than [`MAX_NOTIFICATION`] bytes on a notification descriptor.
    TooLong,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Incomplete => "session description without its final NUL",
            DecodeError::EmptyEntry => "session description with an empty entry",
            DecodeError::TooLong => "session description longer than 4096 bytes",
        })
    }
}

impl std::error::Error for DecodeError {}

impl Description {
    /// Set `key` to `val` (`None`: unset it), in the place of an earlier edit of `key` if
    /// there is one, else at the end.
    pub fn set(&mut self, key: &str, val: Option<String>) {
        let key = OsString::from(key);
        let val = val.map(OsString::from);
        match self.vars.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = val,
            None => self.vars.push((key, val)),
        }
    }

    /// Append an edit that unsets `key`.
    pub fn unset(&mut self, key: &OsStr) {
        self.vars.push((key.to_os_string(), None));
    }

    /// The value of the first edit of `key`; `None` when there is none or it unsets.
    pub fn get(&self, key: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The length of [`encode`](Description::encode)'s result, without building it.
    pub fn encoded_len(&self) -> usize {
        let entries: usize = self
            .vars
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| 1 + v.len()) + 1)
            .sum();
        entries + 1
    }

    /// Does the wire form fit a notification descriptor ([`MAX_NOTIFICATION`])?
    pub fn fits(&self) -> bool {
        self.encoded_len() <= MAX_NOTIFICATION
    }

    /// The wire form: `K=V\0` or `K\0` per edit, then `\0`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for (k, v) in &self.vars {
            out.extend_from_slice(k.as_bytes());
            if let Some(v) = v {
                out.push(b'=');
                out.extend_from_slice(v.as_bytes());
            }
            out.push(0);
        }
        out.push(0);
        out
    }

    /// Parse a complete wire form, of any length. `None` when it is not one: no final
    /// `\0`, or an empty entry before the end ([`parse`](Description::parse) says which).
    pub fn decode(buf: &[u8]) -> Option<Description> {
        Description::parse(buf).ok()
    }

    /// Parse a complete wire form, of any length, saying what is wrong with it.
    pub fn parse(buf: &[u8]) -> Result<Description, DecodeError> {
        let mut d = Description::default();
        for item in entries(buf)? {
            d.vars.push(match item.iter().position(|&b| b == b'=') {
                Some(i) => (
                    OsString::from_vec(item[..i].to_vec()),
                    Some(OsString::from_vec(item[i + 1..].to_vec())),
                ),
                None => (OsString::from_vec(item.to_vec()), None),
            });
        }
        Ok(d)
    }

    /// Parse what was read from a notification descriptor: as
    /// [`parse`](Description::parse), and at most [`MAX_NOTIFICATION`] bytes.
    pub fn decode_notification(buf: &[u8]) -> Result<Description, DecodeError> {
        if buf.len() > MAX_NOTIFICATION {
            return Err(DecodeError::TooLong);
        }
        Description::parse(buf)
    }
}

/// The entries of a complete wire form, each without its `\0`: `K=V` sets, a bare `K`
/// unsets. Borrows `buf` and allocates nothing, so a process may use it between fork and
/// exec.
pub fn entries(buf: &[u8]) -> Result<impl Iterator<Item = &[u8]> + Clone, DecodeError> {
    let body = buf.strip_suffix(&[0]).ok_or(DecodeError::Incomplete)?;
    // Every entry, the last one included, ends with its own `\0`.
    let body = match body {
        [] => None,
        _ => Some(body.strip_suffix(&[0]).ok_or(DecodeError::Incomplete)?),
    };
    if body.is_some_and(|b| b.split(|&c| c == 0).any(<[u8]>::is_empty)) {
        return Err(DecodeError::EmptyEntry);
    }
    Ok(body.into_iter().flat_map(|b| b.split(|&c| c == 0)))
}

/// Why a handshake failed, as far as the reader's advice depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The peer's chain ends at no CA trusted here: trust settles it, no name would.
    Untrusted,
    /// The peer's certificate is not for the name asked for.
    Name,
    /// Anything else.
    Other,
}

impl Cause {
    const WORDS: [(Cause, &'static str); 3] = [
        (Cause::Untrusted, "untrusted"),
        (Cause::Name, "name"),
        (Cause::Other, "other"),
    ];

    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("other", |(_, w)| w)
    }
}

/// A failure reported on a notification descriptor instead of a description:
/// `!ERRNO CAUSE MESSAGE`, ERRNO the connect's (0 when the failure came later), CAUSE a
/// word ([`Cause`]), MESSAGE one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The errno of a connect that failed, 0 when the failure came after it.
    pub errno: i32,
    /// Why.
    pub cause: Cause,
    /// What the writer would have said on its stderr.
    pub msg: String,
}

impl Failure {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        format!("!{} {} {}", self.errno, self.cause.word(), self.msg).into_bytes()
    }

    /// The failure in `buf`, if it is one (it starts with `!`). A missing or unknown
    /// cause is [`Cause::Other`], a missing errno 0.
    pub fn decode(buf: &[u8]) -> Option<Failure> {
        let text = String::from_utf8_lossy(buf.strip_prefix(b"!")?);
        let (num, rest) = text.split_once(' ').unwrap_or((&text, ""));
        let (word, msg) = rest.split_once(' ').unwrap_or((rest, ""));
        let cause = Cause::WORDS
            .iter()
            .find(|(_, w)| *w == word)
            .map_or(Cause::Other, |(c, _)| *c);
        Some(Failure {
            errno: num.parse().unwrap_or(0),
            cause,
            msg: msg.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_borrow_the_wire_form() {
        fn e(b: &[u8]) -> Result<Vec<&[u8]>, DecodeError> {
            entries(b).map(|i| i.collect())
        }
        assert_eq!(e(b"\0"), Ok(vec![]));
        assert_eq!(e(b"A=1\0B\0\0"), Ok(vec![&b"A=1"[..], b"B"]));
        assert_eq!(e(b"A=1\0"), Err(DecodeError::Incomplete));
        assert_eq!(e(b"A=1\0\0\0"), Err(DecodeError::EmptyEntry));
        assert_eq!(e(b""), Err(DecodeError::Incomplete));
    }

    fn desc(vars: &[(&str, Option<&str>)]) -> Description {
        Description {
            vars: vars
                .iter()
                .map(|(k, v)| (OsString::from(k), v.map(OsString::from)))
                .collect(),
        }
    }

    #[test]
    fn wire_form_is_s6s() {
        let mut d = Description::default();
        d.set("SSL_PROTOCOL", Some("TLSv1.3".into()));
        d.set("SSL_PEER_CERT_HASH", None);
        let enc = d.encode();
        assert_eq!(enc, b"SSL_PROTOCOL=TLSv1.3\0SSL_PEER_CERT_HASH\0\0");
        assert_eq!(enc.len(), d.encoded_len());
        assert_eq!(Description::default().encode(), b"\0");
    }

    #[test]
    fn round_trips() {
        let cases = [
            desc(&[]),
            desc(&[("A", Some("1"))]),
            desc(&[("A", None)]),
            desc(&[("A", Some(""))]),
            desc(&[("A", Some("x=y=z")), ("B", None), ("C", Some("é \n\t"))]),
            desc(&[("A", Some("1")), ("A", None), ("A", Some("2"))]),
        ];
        for d in cases {
            let enc = d.encode();
            assert_eq!(enc.len(), d.encoded_len(), "{d:?}");
            assert_eq!(Description::decode(&enc).as_ref(), Some(&d), "{enc:?}");
            assert_eq!(Description::decode_notification(&enc), Ok(d));
        }
        // Non-UTF-8 bytes pass through.
        let d = Description {
            vars: vec![(
                OsString::from_vec(b"K\xff".to_vec()),
                Some(OsString::from_vec(b"\xfe\x01".to_vec())),
            )],
        };
        assert_eq!(d.encode(), b"K\xff=\xfe\x01\0\0");
        assert_eq!(Description::decode(&d.encode()), Some(d));
    }

    #[test]
    fn set_replaces_unset_appends_get_finds_the_first() {
        let mut d = Description::default();
        d.set("A", Some("1".into()));
        d.set("B", Some("2".into()));
        d.set("A", Some("3".into()));
        assert_eq!(d, desc(&[("A", Some("3")), ("B", Some("2"))]));
        d.unset(OsStr::new("B"));
        assert_eq!(d.vars.len(), 3);
        assert_eq!(d.get("B"), Some(OsStr::new("2")));
        assert_eq!(d.get("A"), Some(OsStr::new("3")));
        assert_eq!(d.get("C"), None);
        d.set("A", None);
        assert_eq!(d.get("A"), None);
    }

    #[test]
    fn the_4_kib_limit() {
        // One entry `K=vvv...\0` plus the final `\0`: 2 + n + 1 + 1 bytes.
        let at = |n: usize| desc(&[("K", Some(&"v".repeat(n)))]);
        let max = at(MAX_NOTIFICATION - 4);
        assert_eq!(max.encoded_len(), MAX_NOTIFICATION);
        assert!(max.fits());
        assert_eq!(
            Description::decode_notification(&max.encode()).as_ref(),
            Ok(&max)
        );
        let over = at(MAX_NOTIFICATION - 3);
        assert_eq!(over.encoded_len(), MAX_NOTIFICATION + 1);
        assert!(!over.fits());
        assert_eq!(
            Description::decode_notification(&over.encode()),
            Err(DecodeError::TooLong)
        );
        // Without the limit (the wrapper to its program's launcher), any length.
        assert_eq!(Description::decode(&over.encode()), Some(over));
        assert!(Description::default().fits());
    }

    #[test]
    fn malformed_input() {
        use DecodeError::*;
        for (bytes, why) in [
            (&b""[..], Incomplete),
            (b"A=1", Incomplete),
            (b"A=1\0", Incomplete),
            (b"A=1\0B", Incomplete),
            (b"\0\0", EmptyEntry),
            (b"\0A=1\0\0", EmptyEntry),
            (b"A=1\0\0B=2\0\0", EmptyEntry),
            (b"A=1\0\0\0", EmptyEntry),
        ] {
            assert_eq!(Description::parse(bytes), Err(why), "{bytes:?}");
            assert_eq!(Description::decode(bytes), None, "{bytes:?}");
            assert_eq!(
                Description::decode_notification(bytes),
                Err(why),
                "{bytes:?}"
            );
        }
        // Accepted as s6 writes them: an empty key or value, `=` inside a value.
        assert_eq!(
            Description::decode(b"=x\0A=\0B==\0\0"),
            Some(desc(&[("", Some("x")), ("A", Some("")), ("B", Some("="))]))
        );
        assert!(!DecodeError::TooLong.to_string().is_empty());
    }

    #[test]
    fn whatever_decodes_encodes_back_to_the_same_bytes() {
        // Every string of up to 6 bytes over a small alphabet.
        let alphabet = [0u8, b'=', b'A', b'b'];
        let mut buf = Vec::new();
        for len in 0..=6u32 {
            for mut n in 0..4usize.pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(alphabet[n % 4]);
                    n /= 4;
                }
                if let Some(d) = Description::decode(&buf) {
                    assert_eq!(d.encode(), buf, "{buf:?}");
                }
            }
        }
    }

    #[test]
    fn failures_round_trip_and_are_never_descriptions() {
        for cause in [Cause::Untrusted, Cause::Name, Cause::Other] {
            let f = Failure {
                errno: 111,
                cause,
                msg: "handshake failed: a b".into(),
            };
            assert_eq!(Failure::decode(&f.encode()), Some(f.clone()));
            assert!(Description::decode(&f.encode()).is_none());
        }
        assert_eq!(Failure::decode(b"A=1\0\0"), None);
        let bare = Failure::decode(b"!7").expect("a failure");
        assert_eq!(
            (bare.errno, bare.cause, bare.msg.as_str()),
            (7, Cause::Other, "")
        );
        let odd = Failure::decode(b"!x what now").expect("a failure");
        assert_eq!((odd.errno, odd.cause), (0, Cause::Other));
    }
}
