//! The description of a finished handshake: the `SSL_*` variables. Its wire form (`K=V\0`
//! to set, a bare `K\0` to unset, a final `\0`, as s6-networking passes it) is the
//! `stls-desc` crate's, which `libautossl.so` shares without linking OpenSSL.

use foreign_types::ForeignTypeRef;
use openssl::hash::MessageDigest;
use openssl::ssl::{NameType, SslRef};
use openssl::x509::X509NameRef;

pub use stls_desc::{Description, Failure, MAX_NOTIFICATION};

/// Describe `ssl` after its handshake. `sni` is the name a client sent (the server
/// reads it from the connection).
pub fn describe(ssl: &SslRef, sni: Option<&str>) -> Description {
    let mut d = Description::default();
    d.set("SSL_PROTOCOL", Some(ssl.version_str().to_string()));
    d.set(
        "SSL_CIPHER",
        ssl.current_cipher().map(|c| c.name().to_string()),
    );
    // The key exchange's group: X25519MLKEM768 says the session is safe from a later
    // quantum computer, X25519 that it is not.
    d.set("SSL_GROUP", crate::groups::negotiated(ssl));
    let sni = match sni {
        Some(s) => Some(s.to_string()),
        None => ssl.servername(NameType::HOST_NAME).map(str::to_string),
    };
    d.set("SSL_TLS_SNI_SERVERNAME", sni.filter(|s| !s.is_empty()));
    // Only a server resumes sessions (from a shared ticket key).
    if ssl.is_server() {
        d.set(
            "SSL_SESSION_RESUMED",
            ssl.session_reused().then(|| "1".to_string()),
        );
    }
    let peer = ssl.peer_certificate();
    let hash = peer
        .as_ref()
        .and_then(|c| c.digest(MessageDigest::sha256()).ok())
        .map(|h| format!("SHA256:{}", hex(&h)));
    d.set("SSL_PEER_CERT_HASH", hash);
    let subject = peer.as_ref().and_then(|c| rfc4514(c.subject_name()));
    d.set("SSL_PEER_CERT_SUBJECT", subject.filter(|s| !s.is_empty()));
    // The description must fit a notification: a huge subject is dropped, not cut.
    if !d.fits() {
        d.set("SSL_PEER_CERT_SUBJECT", None);
    }
    d
}

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

extern "C" {
    fn X509_NAME_print_ex(
        out: *mut openssl_sys::BIO,
        nm: *const openssl_sys::X509_NAME,
        indent: libc::c_int,
        flags: libc::c_ulong,
    ) -> libc::c_int;
}

/// RFC 4514 string of a name, in UTF-8: OpenSSL's RFC 2253 printer without the escaping
/// of non-ASCII bytes (RFC 4514 allows UTF-8 as is).
pub fn rfc4514(name: &X509NameRef) -> Option<String> {
    // ASN1_STRFLGS_ESC_2253 | ESC_CTRL | UTF8_CONVERT | DUMP_UNKNOWN | DUMP_DER,
    // XN_FLAG_SEP_COMMA_PLUS | XN_FLAG_DN_REV | XN_FLAG_DUMP_UNKNOWN_FIELDS.
    const FLAGS: libc::c_ulong =
        0x1 | 0x2 | 0x10 | 0x100 | 0x200 | (1 << 16) | (1 << 20) | (1 << 24);
    // SAFETY: the memory BIO is created, written by the printer from a live name, read and
    // freed here; its data pointer is read only while the BIO lives.
    unsafe {
        let bio = openssl_sys::BIO_new(openssl_sys::BIO_s_mem());
        if bio.is_null() {
            return None;
        }
        let r = X509_NAME_print_ex(bio, name.as_ptr(), 0, FLAGS);
        let mut p: *mut libc::c_char = std::ptr::null_mut();
        let len = openssl_sys::BIO_get_mem_data(bio, &mut p);
        let out = if r >= 0 && len >= 0 && !p.is_null() {
            let bytes = std::slice::from_raw_parts(p as *const u8, len as usize);
            Some(String::from_utf8_lossy(bytes).into_owned())
        } else {
            None
        };
        openssl_sys::BIO_free_all(bio);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_rfc4514() {
        let mut b = openssl::x509::X509NameBuilder::new().expect("builder");
        b.append_entry_by_text("C", "FR").expect("C");
        b.append_entry_by_text("O", "Acme, Inc").expect("O");
        b.append_entry_by_text("CN", "é #x").expect("CN");
        let n = b.build();
        assert_eq!(rfc4514(&n).as_deref(), Some("CN=é #x,O=Acme\\, Inc,C=FR"));
    }
}
