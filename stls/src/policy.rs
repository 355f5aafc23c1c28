//! The TLS policy both wrappers impose on their contexts: protocol floor, TLS 1.2 cipher
//! list, TLS 1.3 cipher suites, key-exchange groups, server preference, tickets and the
//! client's host-name checks.
//!
//! The default is hardened: TLS 1.2 and 1.3; in TLS 1.2 only ECDHE with AEAD ciphers
//! (AES-GCM, ChaCha20-Poly1305), so no static-RSA key exchange and no CBC; the groups
//! X25519, P-256 and P-384 only, since a finite-field handshake (ffdhe8192) costs several
//! times an X25519 one and a per-connection server must not hand out that lever, with the
//! hybrid X25519MLKEM768 first where the library has it ([`groups`](crate::groups)). Four
//! variables change it: `TLS_CIPHERS`, `TLS_CIPHERSUITES`, `TLS_GROUPS`, `TLS_MIN_VERSION`.
//! Everything is set on the context, once, before the handshake: nothing here runs per
//! record or adds work to the handshake beyond what OpenSSL does with the lists.

use crate::exit::{ssl_reason, Error};
use openssl::ssl::{SslContextBuilder, SslOptions, SslVersion};
use openssl::x509::verify::X509CheckFlags;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// The default TLS 1.2 list: ECDHE with AEAD only, ECDSA before RSA, AES-256-GCM first as in
/// OpenSSL's own TLS 1.3 order (ChaCha20 moves to the top for a client that prefers it).
pub const DEFAULT_CIPHERS: &str = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";

/// The default TLS 1.3 suites: OpenSSL's own default (all three are AEAD).
pub const DEFAULT_CIPHERSUITES: &str =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";

/// The default groups without the hybrid post-quantum group (the system build's OpenSSL
/// 3.0): no finite-field group, whose handshake is a CPU lever. The list in use is
/// [`groups::default_groups`](crate::groups::default_groups), which puts X25519MLKEM768
/// first where the library has it.
pub const DEFAULT_GROUPS: &str = crate::groups::DEFAULT_GROUPS_CLASSIC;

/// The TLS 1.3 cipher suites OpenSSL knows (RFC 8446). OpenSSL itself skips an unknown
/// name in a suite list silently, so the names are checked here to reject a typo.
const TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
];

/// The lowest protocol version accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MinVersion {
    /// TLS 1.2 (the default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// The policy read from the environment. `None` is the default for that item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `TLS_CIPHERS`: the TLS 1.2 cipher list, OpenSSL cipher-list syntax.
    pub ciphers: Option<String>,
    /// `TLS_CIPHERSUITES`: the TLS 1.3 suites, colon-separated.
    pub ciphersuites: Option<String>,
    /// `TLS_GROUPS`: the key-exchange groups, colon-separated, in preference order.
    pub groups: Option<String>,
    /// `TLS_MIN_VERSION`: `1.2` or `1.3`.
    pub min_version: MinVersion,
    /// `OPENSSL_CONF` is set: its `system_default` section, applied by OpenSSL when the
    /// context is created, decides the lists the variables above leave unset.
    pub openssl_conf: bool,
}

fn text(name: &str, v: &OsStr) -> Result<Option<String>, Error> {
    if v.is_empty() {
        return Ok(None);
    }
    let s = v.to_str().ok_or_else(|| {
        Error::config(format!(
            "{name} is not valid UTF-8: {}",
            v.to_string_lossy()
        ))
    })?;
    Ok(Some(s.to_string()))
}

impl Policy {
    /// Read the policy from environment pairs (`std::env::vars_os()` or a test's list). An
    /// empty variable is the default. A value that cannot be right whatever OpenSSL
    /// supports (a version other than 1.2 or 1.3, an unknown TLS 1.3 suite) is rejected
    /// here; cipher and group names are checked against OpenSSL by [`apply_server`] and
    /// [`apply_client`].
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Policy, Error>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut p = Policy::default();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k.as_bytes() {
                b"TLS_CIPHERS" => p.ciphers = text("TLS_CIPHERS", v)?,
                b"TLS_CIPHERSUITES" => {
                    p.ciphersuites = text("TLS_CIPHERSUITES", v)?;
                    if let Some(s) = &p.ciphersuites {
                        check_suites(s)?;
                    }
                }
                b"TLS_GROUPS" => p.groups = text("TLS_GROUPS", v)?,
                b"TLS_MIN_VERSION" => {
                    p.min_version = match text("TLS_MIN_VERSION", v)?.as_deref() {
                        None | Some("1.2") => MinVersion::Tls12,
                        Some("1.3") => MinVersion::Tls13,
                        Some(other) => {
                            return Err(Error::config(format!(
                                "TLS_MIN_VERSION must be 1.2 or 1.3: {other}"
                            )))
                        }
                    }
                }
                b"OPENSSL_CONF" => p.openssl_conf = true,
                _ => {}
            }
        }
        Ok(p)
    }
}

fn check_suites(s: &str) -> Result<(), Error> {
    for item in s.split(':') {
        if !TLS13_SUITES.contains(&item) {
            return Err(Error::config(format!(
                "TLS_CIPHERSUITES: unknown TLS 1.3 cipher suite: {item:?}"
            )));
        }
    }
    Ok(())
}

/// The separators of OpenSSL's cipher-list syntax.
fn cipher_items(list: &str) -> impl Iterator<Item = &str> {
    list.split([':', ',', ' ', ';']).filter(|i| !i.is_empty())
}

/// Set a user's TLS 1.2 list. OpenSSL accepts a list as long as one item matches, so an
/// item that matches nothing (a typo, a cipher this OpenSSL lacks) is found by trying each
/// one alone first: only done when the variable is set.
fn set_ciphers_checked(b: &mut SslContextBuilder, list: &str) -> Result<(), Error> {
    for item in cipher_items(list) {
        // `@STRENGTH`, `@SECLEVEL=n` order or tune the list; they select nothing alone.
        if item.starts_with('@') {
            continue;
        }
        let bare = item.trim_start_matches(['!', '-', '+']);
        if bare.is_empty() || b.set_cipher_list(bare).is_err() {
            let _ = openssl::error::ErrorStack::get();
            return Err(Error::config(format!(
                "TLS_CIPHERS: unknown or unavailable cipher: {item:?}"
            )));
        }
    }
    b.set_cipher_list(list).map_err(|_| {
        Error::config(format!(
            "TLS_CIPHERS selects no cipher: {list:?} ({})",
            ssl_reason()
        ))
    })
}

/// Set a user's group list, naming the first group OpenSSL does not know (a
/// post-quantum one on a library without ML-KEM: the message names the build that has
/// it). OpenSSL 3.5's syntax is taken as is: `/` between tuples, `*` for a key share, `?`
/// for a group that may be missing (not checked, as OpenSSL skips it).
fn set_groups_checked(b: &mut SslContextBuilder, list: &str) -> Result<(), Error> {
    for item in list.split([':', '/']).map(str::trim) {
        if item.starts_with('?') && crate::groups::hybrid_available() {
            continue;
        }
        if item.is_empty() || b.set_groups_list(item).is_err() {
            let _ = openssl::error::ErrorStack::get();
            return Err(Error::config(crate::groups::unknown_group_message(item)));
        }
    }
    b.set_groups_list(list)
        .map_err(|_| Error::config(format!("TLS_GROUPS: {list:?}: {}", ssl_reason())))
}

fn apply_common(b: &mut SslContextBuilder, p: &Policy) -> Result<(), Error> {
    let internal = |what: &str| Error::config(format!("unable to set {what}: {}", ssl_reason()));
    match &p.ciphers {
        Some(list) => set_ciphers_checked(b, list)?,
        None if !p.openssl_conf => b
            .set_cipher_list(DEFAULT_CIPHERS)
            .map_err(|_| internal("the default ciphers"))?,
        None => {}
    }
    match &p.ciphersuites {
        Some(list) => b
            .set_ciphersuites(list)
            .map_err(|_| Error::config(format!("TLS_CIPHERSUITES: {list:?}: {}", ssl_reason())))?,
        None if !p.openssl_conf => b
            .set_ciphersuites(DEFAULT_CIPHERSUITES)
            .map_err(|_| internal("the default cipher suites"))?,
        None => {}
    }
    match &p.groups {
        Some(list) => set_groups_checked(b, list)?,
        None if !p.openssl_conf => b
            .set_groups_list(crate::groups::default_groups())
            .map_err(|_| internal("the default groups"))?,
        None => {}
    }
    if p.min_version == MinVersion::Tls13 {
        b.set_min_proto_version(Some(SslVersion::TLS1_3))
            .map_err(|_| internal("the minimum version"))?;
    }
    Ok(())
}

/// The server's policy: the lists, server preference with ChaCha20 moved to the top for a
/// client that lists it first (a client without AES instructions says so that way), and
/// no TLS 1.2 session tickets: a process that serves one connection can never resume a
/// session, so a ticket only costs an encryption and bytes on the wire. Shared ticket
/// keys (`TICKETKEYFILE`, the [`tickets`](crate::tickets) module) clear `NO_TICKET` again.
pub fn apply_server(b: &mut SslContextBuilder, p: &Policy) -> Result<(), Error> {
    apply_common(b, p)?;
    b.set_options(
        SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::PRIORITIZE_CHACHA
            | SslOptions::NO_TICKET,
    );
    Ok(())
}

/// The client's policy: the lists, and strict host-name checks inherited by every
/// session's verify parameters: a wildcard only as a whole left-most label
/// (`*.example.test`, never `w*.example.test`), and the subject's CN never taken for a
/// name, whether or not the certificate has subject alternative names.
pub fn apply_client(b: &mut SslContextBuilder, p: &Policy) -> Result<(), Error> {
    apply_common(b, p)?;
    b.verify_param_mut().set_hostflags(host_flags());
    Ok(())
}

/// The host-name check flags of [`apply_client`], for a caller that sets a session's
/// parameters itself.
pub fn host_flags() -> X509CheckFlags {
    X509CheckFlags::NO_PARTIAL_WILDCARDS | X509CheckFlags::NEVER_CHECK_SUBJECT
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::SslMethod;
    use std::ffi::OsString;

    fn policy(v: &[(&str, &str)]) -> Result<Policy, Error> {
        Policy::from_vars(
            v.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
    }

    fn server(v: &[(&str, &str)]) -> Result<SslContextBuilder, Error> {
        let p = policy(v)?;
        let mut b = SslContextBuilder::new(SslMethod::tls_server()).expect("context");
        apply_server(&mut b, &p)?;
        Ok(b)
    }

    fn code_and_msg(r: Result<impl Sized, Error>) -> (i32, String) {
        match r {
            Ok(_) => (0, String::new()),
            Err(e) => (e.code, e.msg),
        }
    }

    #[test]
    fn defaults_and_reading() {
        let p = policy(&[]).expect("empty");
        assert_eq!(p, Policy::default());
        let p = policy(&[
            ("TLS_CIPHERS", "ECDHE+AESGCM"),
            ("TLS_CIPHERSUITES", "TLS_AES_128_GCM_SHA256"),
            ("TLS_GROUPS", "P-384"),
            ("TLS_MIN_VERSION", "1.3"),
            ("TLS_OTHER", "x"),
        ])
        .expect("set");
        assert_eq!(p.ciphers.as_deref(), Some("ECDHE+AESGCM"));
        assert_eq!(p.ciphersuites.as_deref(), Some("TLS_AES_128_GCM_SHA256"));
        assert_eq!(p.groups.as_deref(), Some("P-384"));
        assert_eq!(p.min_version, MinVersion::Tls13);
        assert!(!p.openssl_conf);
        // Empty is the default, as for the other variables.
        assert_eq!(
            policy(&[("TLS_GROUPS", ""), ("TLS_MIN_VERSION", "")]).expect("empty"),
            Policy::default()
        );
        assert!(
            policy(&[("OPENSSL_CONF", "/x")])
                .expect("conf")
                .openssl_conf
        );
    }

    #[test]
    fn bad_values_are_96_and_named() {
        let (c, m) = code_and_msg(policy(&[("TLS_MIN_VERSION", "1.1")]));
        assert_eq!(c, 96);
        assert!(m.contains("TLS_MIN_VERSION") && m.contains("1.1"), "{m}");
        let (c, m) = code_and_msg(policy(&[(
            "TLS_CIPHERSUITES",
            "TLS_AES_128_GCM_SHA256:TLS_BOGUS",
        )]));
        assert_eq!(c, 96);
        assert!(m.contains("TLS_BOGUS"), "{m}");
        let (c, m) = code_and_msg(server(&[("TLS_CIPHERS", "ECDHE+AESGCM:NOPE-CIPHER")]));
        assert_eq!(c, 96);
        assert!(m.contains("NOPE-CIPHER"), "{m}");
        let (c, m) = code_and_msg(server(&[("TLS_GROUPS", "X25519:ffdhe1234")]));
        assert_eq!(c, 96);
        assert!(m.contains("ffdhe1234"), "{m}");
        // A post-quantum group on a library without ML-KEM names the build that has it.
        if !crate::groups::hybrid_available() {
            let (c, m) = code_and_msg(server(&[("TLS_GROUPS", "X25519MLKEM768")]));
            assert_eq!(c, 96);
            assert!(
                m.contains("X25519MLKEM768") && m.contains("vendored"),
                "{m}"
            );
        }
        let bad = OsString::from(OsStr::from_bytes(b"\xff"));
        let r = Policy::from_vars([(OsString::from("TLS_GROUPS"), bad)]);
        assert_eq!(code_and_msg(r).0, 96);
    }

    #[test]
    fn good_values_are_accepted() {
        for v in [
            ("TLS_CIPHERS", "ECDHE+AESGCM:!aNULL:-SHA1:@STRENGTH"),
            ("TLS_CIPHERS", "HIGH"),
            ("TLS_GROUPS", "ffdhe2048:X25519"),
            ("TLS_GROUPS", "secp384r1"),
            ("TLS_MIN_VERSION", "1.2"),
        ] {
            assert!(server(&[v]).is_ok(), "{v:?}");
        }
    }

    #[test]
    fn default_ciphers_are_ecdhe_aead() {
        let b = server(&[]).expect("default");
        let ctx = b.build();
        let ssl = openssl::ssl::Ssl::new(&ctx).expect("ssl");
        // SSL_get_ciphers lists the TLS 1.3 suites too; the TLS 1.2 ones are ECDHE + AEAD.
        let names = ciphers_of(&ssl);
        assert!(!names.is_empty());
        for n in &names {
            let ok = n.starts_with("TLS_")
                || (n.starts_with("ECDHE-") && (n.contains("GCM") || n.contains("CHACHA20")));
            assert!(ok, "default cipher {n}");
        }
        assert!(names.iter().any(|n| n == "ECDHE-RSA-CHACHA20-POLY1305"));
    }

    fn ciphers_of(ssl: &openssl::ssl::Ssl) -> Vec<String> {
        use foreign_types::ForeignTypeRef;
        extern "C" {
            fn SSL_get_cipher_list(
                s: *const openssl_sys::SSL,
                n: libc::c_int,
            ) -> *const libc::c_char;
        }
        let mut out = Vec::new();
        for i in 0.. {
            // SAFETY: the session is alive for the call; OpenSSL returns NULL past the end
            // and otherwise a static name, copied at once.
            let p = unsafe { SSL_get_cipher_list(ssl.as_ptr(), i) };
            if p.is_null() {
                break;
            }
            // SAFETY: a non-NULL result is a NUL-terminated static string.
            let c = unsafe { std::ffi::CStr::from_ptr(p) };
            out.push(c.to_string_lossy().into_owned());
        }
        out
    }
}
