//! OpenSSL's failures in the user's terms: what went wrong and what to do about it, with
//! OpenSSL's own words kept in parentheses for searching. Only the messages are made here;
//! the exit codes stay where the failures are found.

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;
use openssl::x509::{X509NameRef, X509Ref, X509VerifyResult};
use stls_desc::Cause;

/// What an OpenSSL reason code means to the user, for the failures a user can fix.
pub(crate) fn reason(code: libc::c_int) -> Option<&'static str> {
    Some(match code {
        // A record header that is not TLS: plain text, or another protocol.
        267 | 198 | 213 => {
            "the peer does not speak TLS: it may speak plain text or another protocol on this port"
        }
        156 => "the client sent a plain HTTP request, not TLS: use https:// (or the plain port)",
        155 => "the client sent an HTTP proxy request (CONNECT), not TLS",
        258 | 1070 | 191 | 1086 => {
            "no protocol version in common with the peer: this side speaks TLS 1.2 and 1.3 (TLS_MIN_VERSION)"
        }
        193 => "no cipher in common with the peer (TLS_CIPHERS, TLS_CIPHERSUITES)",
        410 | 101 => "no key exchange group in common with the peer (TLS_GROUPS)",
        1040 => "the peer refused the handshake (no protocol, cipher or certificate it accepts)",
        1071 => "the peer finds this side's settings too weak (insufficient security)",
        199 => "the client sent no certificate, and -y requires one",
        1116 => "the server requires a client certificate: set CERTFILE and KEYFILE and use -y",
        1042 | 1043 | 1046 => "the peer rejected this side's certificate",
        1044 => "the peer says this side's certificate is revoked",
        1045 => "the peer says this side's certificate has expired",
        1048 => "the peer does not trust the CA that issued this side's certificate",
        1049 => "the peer denied access",
        1112 => "the server has no certificate for the name sent (SNI): check the name",
        1120 => "no application protocol (ALPN) in common with the peer",
        _ => return None,
    })
}

/// Whether a reason is the peer's verdict on this side's certificate: in TLS 1.3 a server
/// sends it after the client's handshake is complete, so it arrives as a failure of the
/// relay, yet it is a handshake failure (exit 97).
pub(crate) fn is_certificate_verdict(code: libc::c_int) -> bool {
    matches!(code, 1116 | 1042 | 1043 | 1044 | 1045 | 1046 | 1048 | 1049)
}

extern "C" {
    fn SSL_get0_param(s: *mut openssl_sys::SSL) -> *mut openssl_sys::X509_VERIFY_PARAM;
    fn X509_VERIFY_PARAM_get0_host(
        p: *mut openssl_sys::X509_VERIFY_PARAM,
        idx: libc::c_int,
    ) -> *const libc::c_char;
    fn X509_VERIFY_PARAM_get1_ip_asc(p: *mut openssl_sys::X509_VERIFY_PARAM) -> *mut libc::c_char;
    fn CRYPTO_free(p: *mut libc::c_void, file: *const libc::c_char, line: libc::c_int);
}

/// The name or address the session was told to verify, if any.
fn expected_name(ssl: &SslRef) -> Option<String> {
    // SAFETY: `ssl` is a live session; its parameters live as long as it does, the host
    // string is owned by them, and the IP text is a copy freed here with OpenSSL's allocator.
    unsafe {
        let p = SSL_get0_param(ssl.as_ptr());
        if p.is_null() {
            return None;
        }
        let h = X509_VERIFY_PARAM_get0_host(p, 0);
        if !h.is_null() {
            return Some(std::ffi::CStr::from_ptr(h).to_string_lossy().into_owned());
        }
        let ip = X509_VERIFY_PARAM_get1_ip_asc(p);
        if ip.is_null() {
            return None;
        }
        let s = std::ffi::CStr::from_ptr(ip).to_string_lossy().into_owned();
        CRYPTO_free(ip.cast(), c"explain".as_ptr(), 0);
        Some(s)
    }
}

/// `CN=...`, or the whole name in OpenSSL's one-line form without a CN.
fn name_text(n: &X509NameRef) -> String {
    let cn = n
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .map(|s| format!("CN={s}"));
    cn.unwrap_or_else(|| {
        let parts: Vec<String> = n
            .entries()
            .filter_map(|e| {
                let k = e.object().nid().short_name().ok()?;
                let v = e.data().to_string().ok()?;
                Some(format!("{k}={v}"))
            })
            .collect();
        if parts.is_empty() {
            "an empty name".into()
        } else {
            parts.join(", ")
        }
    })
}

/// The names a certificate is valid for: its DNS and IP subject alternative names.
fn san_names(c: &X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(sans) = c.subject_alt_names() {
        for n in &sans {
            if let Some(d) = n.dnsname() {
                names.push(d.to_string());
            } else if let Some(ip) = n.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(ip).map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => continue,
                };
                if let Ok(ip) = ip {
                    names.push(ip);
                }
            }
        }
    }
    names
}

/// The subject's common name, if it has one.
fn common_name(c: &X509Ref) -> Option<String> {
    c.subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .map(|s| s.to_string())
}

/// The `-addext` value that issues a certificate for `name` (an address or a DNS name).
fn san_for(name: &str) -> String {
    let kind = if name.parse::<std::net::IpAddr>().is_ok() {
        "IP"
    } else {
        "DNS"
    };
    format!("subjectAltName={kind}:{name}")
}

/// Why a certificate with no DNS or IP subject alternative name matches no name: OpenSSL
/// checks only those, never the subject's CN, as browsers do (a CN is not marked as a
/// name, so trusting it lets a CA's customer name any host in it).
fn no_san(leaf: &X509Ref, name: &str) -> String {
    format!(
        "the peer's certificate ({}) has no subject alternative name, so it is valid for no \
         name: the subject's CN is not used as a name, on purpose, as browsers do; issue it \
         with one, e.g. openssl req ... -addext \"{}\"",
        name_text(leaf.subject_name()),
        san_for(name)
    )
}

/// The verification results that trust settles (the chain ends at a CA not held here),
/// and those of a name that does not match.
const UNTRUSTED: [i32; 6] = [2, 18, 19, 20, 21, 27];
const WRONG_NAME: [i32; 2] = [62, 64];

/// Why a verification failed, for advice: trust, the name, or anything else.
pub(crate) fn cause(v: X509VerifyResult) -> Cause {
    match v.as_raw() {
        r if UNTRUSTED.contains(&r) => Cause::Untrusted,
        r if WRONG_NAME.contains(&r) => Cause::Name,
        _ => Cause::Other,
    }
}

/// A failed verification of the peer's certificate: which certificate, what is wrong
/// with it, and what settles it.
pub(crate) fn verification(ssl: &SslRef, v: X509VerifyResult) -> String {
    let chain = ssl.peer_cert_chain();
    let leaf = ssl
        .peer_certificate()
        .or_else(|| chain.and_then(|c| c.iter().next()).map(|c| c.to_owned()));
    let top = chain.and_then(|c| c.iter().last()).map(|c| c.to_owned());
    let Some(leaf) = leaf else {
        return format!("certificate verification failed: {}", v.error_string());
    };
    let subject = name_text(leaf.subject_name());
    let why = match v.as_raw() {
        // The chain ends at a CA this side does not hold.
        2 | 20 | 21 | 27 => {
            let issuer = top.as_deref().unwrap_or(&leaf).issuer_name();
            format!(
                "the peer's certificate ({subject}) is issued by {}, which is not trusted here: \
                 to trust a private CA, name its certificate in CAFILE or put it in CADIR",
                name_text(issuer)
            )
        }
        18 => format!(
            "the peer's certificate ({subject}) is self-signed and not trusted here: \
             name it in CAFILE or put it in CADIR to trust it"
        ),
        19 => format!(
            "the peer's certificate ({subject}) comes from a self-signed CA ({}) that is not \
             trusted here: name the CA in CAFILE or put it in CADIR",
            name_text(top.as_deref().unwrap_or(&leaf).subject_name())
        ),
        62 | 64 => {
            let expected = expected_name(ssl).unwrap_or_else(|| "the name asked for".into());
            let what = if v.as_raw() == 64 {
                format!("the address {expected}")
            } else {
                expected.clone()
            };
            let names = san_names(&leaf);
            let cn = common_name(&leaf);
            if names.is_empty() {
                no_san(&leaf, &expected)
            } else if cn.is_some_and(|cn| cn.eq_ignore_ascii_case(&expected)) {
                format!(
                    "the peer's certificate is for {}, not for {what}: {expected} is only its \
                     subject's CN, which is not used as a name, on purpose, as browsers do; \
                     give one of its names with {}, or issue it with {expected} among its \
                     subject alternative names (openssl req ... -addext \"{}\")",
                    names.join(", "),
                    name_option(),
                    san_for(&expected)
                )
            } else {
                format!(
                    "the peer's certificate is for {}, not for {what}: give the name it was \
                     issued for with {}, or install a certificate for {what}",
                    names.join(", "),
                    name_option()
                )
            }
        }
        10 => format!(
            "a certificate of the peer's chain has expired (the peer's: {subject}, valid until {})",
            leaf.not_after()
        ),
        9 => format!(
            "a certificate of the peer's chain is not valid yet (the peer's: {subject}, valid from {}): \
             check the clocks",
            leaf.not_before()
        ),
        23 => format!("the peer's certificate ({subject}) is revoked"),
        _ => format!("the peer's certificate ({subject}): {}", v.error_string()),
    };
    // A trust failure comes before the name check: a certificate that will fail that
    // too says so now, rather than after the user has fixed CAFILE.
    let also = if cause(v) == Cause::Untrusted && san_names(&leaf).is_empty() {
        let san =
            expected_name(ssl).map_or_else(|| "subjectAltName=DNS:NAME".into(), |n| san_for(&n));
        format!(
            "; it also has no subject alternative name, so no name will match it (the CN is \
             not used as a name): issue it with one, e.g. openssl req ... -addext \"{san}\""
        )
    } else {
        String::new()
    };
    format!(
        "certificate verification failed: {why}{also} ({})",
        v.error_string()
    )
}

/// How the user gives the server's name: tlsc's `-k`, or, for the tlsc that autossl-shim
/// starts (which its user never types), the shim's variables.
fn name_option() -> &'static str {
    if std::env::var_os("AUTOSSL_NESTED").is_some() {
        "AUTOSSL_SNI=NAME (or AUTOSSL_NAMES=\"NAME=ADDRESS:PORT\")"
    } else {
        "-k"
    }
}

#[cfg(test)]
mod tests {
    use super::{is_certificate_verdict, reason, san_for};

    #[test]
    fn reasons_have_words_and_verdicts_are_handshake_failures() {
        assert!(reason(267).is_some_and(|s| s.contains("does not speak TLS")));
        assert!(reason(1116).is_some_and(|s| s.contains("CERTFILE")));
        assert!(reason(12345).is_none());
        assert!(is_certificate_verdict(1116));
        assert!(!is_certificate_verdict(267));
    }

    #[test]
    fn the_fix_for_a_missing_name_is_of_the_names_kind() {
        assert_eq!(san_for("localhost"), "subjectAltName=DNS:localhost");
        assert_eq!(san_for("127.0.0.1"), "subjectAltName=IP:127.0.0.1");
        assert_eq!(san_for("::1"), "subjectAltName=IP:::1");
    }
}
