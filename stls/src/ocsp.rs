//! Revocation: OCSP stapling for the server (`OCSPFILE`, `OCSPFILE:name`), and for the
//! client a CRL file (`CRLFILE`) and the stapled response, which a must-staple certificate
//! requires.
//!
//! The server reads its response files at start (before the privilege drop) and parses
//! one only when a client asks for a staple: a client that does not ask costs nothing.

use crate::exit::{io_text, Error};
use crate::log::Log;
use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::ocsp::{OcspCertStatus, OcspFlag, OcspResponse, OcspResponseStatus};
use openssl::ssl::{SslContextBuilder, SslRef};
use openssl::stack::Stack;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509Crl, X509Ref, X509};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The revocation variables, read from environment pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Files {
    /// `OCSPFILE`: the DER OCSP response for the default certificate.
    pub ocspfile: Option<OsString>,
    /// `OCSPFILE:name`: (lower-case name, path), beside the `CERTFILE:name` pairs.
    pub named: Vec<(String, OsString)>,
    /// `CRLFILE`: PEM (or one DER) CRLs for the client's verification.
    pub crlfile: Option<OsString>,
}

impl Files {
    /// Read `OCSPFILE`, `OCSPFILE:name` and `CRLFILE` from environment pairs; an empty
    /// value is unset.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Files
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut f = Files::default();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            if v.is_empty() {
                continue;
            }
            match k.as_bytes() {
                b"OCSPFILE" => f.ocspfile = Some(v.to_os_string()),
                b"CRLFILE" => f.crlfile = Some(v.to_os_string()),
                kb => {
                    if let Some(n) = kb.strip_prefix(b"OCSPFILE:") {
                        let n = String::from_utf8_lossy(n).to_ascii_lowercase();
                        f.named.push((n, v.to_os_string()));
                    }
                }
            }
        }
        f
    }
}

// ------------------------------------------------------------------ server: stapling

static LOGGED: AtomicBool = AtomicBool::new(false);

/// What the server could not staple, said once per process (`prog: info: ...` at `-v 2`).
fn log_once(log: Log, msg: &str) {
    if !LOGGED.swap(true, Ordering::Relaxed) {
        log.info(msg);
    }
}

/// Read the response files now (the handshake runs after the privilege drop) and staple,
/// when the client asks, the one for the certificate in use if it is fresh. An
/// unreadable file is not an error: the server runs without a staple, as it would with a
/// stale response, and says so at `-v 2`.
pub fn server(b: &mut SslContextBuilder, files: &Files, log: Log) -> Result<(), Error> {
    let mut paths: Vec<&OsString> = files.ocspfile.iter().collect();
    paths.extend(files.named.iter().map(|(_, p)| p));
    if paths.is_empty() {
        return Ok(());
    }
    let mut responses: Vec<(String, Vec<u8>)> = Vec::new();
    for p in paths {
        let shown = p.to_string_lossy().into_owned();
        match std::fs::read(p) {
            Ok(der) => responses.push((shown, der)),
            Err(e) => log_once(
                log,
                &format!("OCSP response {shown} not stapled: {}", io_text(&e)),
            ),
        }
    }
    if responses.is_empty() {
        return Ok(());
    }
    b.set_status_callback(move |ssl| {
        let Some(leaf) = ssl.certificate() else {
            return Ok(false);
        };
        let mut why = String::from("no response for the certificate in use");
        for (shown, der) in &responses {
            match fresh_for(der, leaf) {
                Ok(()) => {
                    ssl.set_ocsp_status(der)?;
                    return Ok(true);
                }
                Err(Unfit::OtherCertificate) => {}
                Err(Unfit::Stale(w)) => why = format!("{shown}: {w}"),
            }
        }
        log_once(log, &format!("OCSP response not stapled: {why}"));
        Ok(false)
    })
    .map_err(|_| Error::config("unable to set the OCSP stapling callback"))
}

enum Unfit {
    /// The response holds no status for this certificate (another SNI pair's file).
    OtherCertificate,
    /// It does, but must not be stapled: why.
    Stale(&'static str),
}

extern "C" {
    fn OCSP_resp_count(bs: *mut openssl_sys::OCSP_BASICRESP) -> libc::c_int;
    fn OCSP_resp_get0(bs: *mut openssl_sys::OCSP_BASICRESP, idx: libc::c_int) -> *mut libc::c_void;
    fn OCSP_SINGLERESP_get0_id(single: *const libc::c_void) -> *const libc::c_void;
    fn OCSP_id_get0_info(
        name_hash: *mut *mut libc::c_void,
        md: *mut *mut libc::c_void,
        key_hash: *mut *mut libc::c_void,
        serial: *mut *mut openssl_sys::ASN1_INTEGER,
        cid: *const libc::c_void,
    ) -> libc::c_int;
    fn OCSP_single_get0_status(
        single: *mut libc::c_void,
        reason: *mut libc::c_int,
        revtime: *mut *mut libc::c_void,
        thisupd: *mut *mut libc::c_void,
        nextupd: *mut *mut libc::c_void,
    ) -> libc::c_int;
    fn X509_cmp_current_time(t: *const libc::c_void) -> libc::c_int;
    fn SSL_set_verify_result(ssl: *mut openssl_sys::SSL, v: libc::c_long);
    fn X509_STORE_add_crl(
        store: *mut openssl_sys::X509_STORE,
        crl: *mut openssl_sys::X509_CRL,
    ) -> libc::c_int;
}

/// Is `der` a successful response with a status for `leaf` (by serial number) whose
/// nextUpdate is in the future? Without nextUpdate a response is never known to be fresh.
/// The signature is the client's to check: the server staples what its CA signed.
fn fresh_for(der: &[u8], leaf: &X509Ref) -> Result<(), Unfit> {
    let resp = OcspResponse::from_der(der).map_err(|_| {
        let _ = openssl::error::ErrorStack::get();
        Unfit::Stale("not a DER OCSP response")
    })?;
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return Err(Unfit::Stale("the responder reported an error"));
    }
    let basic = resp
        .basic()
        .map_err(|_| Unfit::Stale("not a basic OCSP response"))?;
    let serial = leaf.serial_number().as_ptr();
    // SAFETY: `basic` owns the response for the whole block; every pointer read from it
    // (single responses, their ids, serials and times) is borrowed from it and used only
    // inside the block; NULL results are checked before use.
    unsafe {
        let bs = basic.as_ptr();
        for i in 0..OCSP_resp_count(bs) {
            let single = OCSP_resp_get0(bs, i);
            if single.is_null() {
                continue;
            }
            let mut sn: *mut openssl_sys::ASN1_INTEGER = std::ptr::null_mut();
            let id = OCSP_SINGLERESP_get0_id(single);
            if id.is_null()
                || OCSP_id_get0_info(
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut sn,
                    id,
                ) != 1
                || sn.is_null()
                || openssl_sys::ASN1_INTEGER_cmp(sn, serial) != 0
            {
                continue;
            }
            let mut next: *mut libc::c_void = std::ptr::null_mut();
            let mut this: *mut libc::c_void = std::ptr::null_mut();
            OCSP_single_get0_status(
                single,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut this,
                &mut next,
            );
            if next.is_null() {
                return Err(Unfit::Stale("no nextUpdate: never known to be fresh"));
            }
            if X509_cmp_current_time(next) <= 0 {
                return Err(Unfit::Stale("stale (nextUpdate has passed)"));
            }
            return Ok(());
        }
    }
    Err(Unfit::OtherCertificate)
}

// ------------------------------------------------------------------ client: CRLs, staples

/// `id-pe-tlsfeature` holding `status_request` (RFC 7633): the certificate must come with
/// a stapled OCSP response.
pub fn must_staple(cert: &X509Ref) -> bool {
    extern "C" {
        fn X509_get_ext_by_NID(
            x: *const openssl_sys::X509,
            nid: libc::c_int,
            last: libc::c_int,
        ) -> libc::c_int;
        fn X509_get_ext(x: *const openssl_sys::X509, loc: libc::c_int) -> *mut libc::c_void;
        fn X509_EXTENSION_get_data(ext: *mut libc::c_void) -> *mut openssl_sys::ASN1_STRING;
    }
    const NID_TLSFEATURE: libc::c_int = 1020;
    // SAFETY: the certificate outlives the block; the extension and its data are borrowed
    // from it, checked for NULL, and the data is copied before the block ends.
    let data: Vec<u8> = unsafe {
        let x = cert.as_ptr();
        let loc = X509_get_ext_by_NID(x, NID_TLSFEATURE, -1);
        if loc < 0 {
            return false;
        }
        let ext = X509_get_ext(x, loc);
        if ext.is_null() {
            return false;
        }
        let s = X509_EXTENSION_get_data(ext);
        if s.is_null() {
            return false;
        }
        let p = openssl_sys::ASN1_STRING_get0_data(s);
        let n = openssl_sys::ASN1_STRING_length(s);
        if p.is_null() || n <= 0 {
            return false;
        }
        std::slice::from_raw_parts(p, n as usize).to_vec()
    };
    tls_features_request_status(&data)
}

/// `TLSFeatures ::= SEQUENCE OF INTEGER`: does it hold 5 (status_request)?
fn tls_features_request_status(der: &[u8]) -> bool {
    let Some((&0x30, rest)) = der.split_first() else {
        return false;
    };
    let Some((&len, mut body)) = rest.split_first() else {
        return false;
    };
    if len & 0x80 != 0 || body.len() < len as usize {
        return false;
    }
    body = &body[..len as usize];
    while let [0x02, n, tail @ ..] = body {
        let n = *n as usize;
        if tail.len() < n {
            return false;
        }
        if n == 1 && tail[0] == 5 {
            return true;
        }
        body = &tail[n..];
    }
    false
}

/// The client's revocation checks. `CRLFILE`: its CRLs join the trust store and every
/// certificate of the chain, leaf and intermediates, must be covered by an unexpired one
/// that does not list it. When `verify` is on, a stapled OCSP response is asked for:
/// one that says revoked fails the handshake; a must-staple certificate fails it unless
/// a response signed for it, fresh and "good", came with it. A staple is checked only
/// when the server sends one.
pub fn client(b: &mut SslContextBuilder, files: &Files, verify: bool) -> Result<(), Error> {
    if let Some(path) = &files.crlfile {
        load_crls(b, path)?;
    }
    if !verify {
        return Ok(());
    }
    // SAFETY: a plain control call on the context being built, which the builder owns.
    let r = unsafe {
        openssl_sys::SSL_CTX_ctrl(
            b.as_ptr(),
            openssl_sys::SSL_CTRL_SET_TLSEXT_STATUS_REQ_TYPE,
            openssl_sys::TLSEXT_STATUSTYPE_ocsp as libc::c_long,
            std::ptr::null_mut(),
        )
    };
    if r != 1 {
        return Err(Error::config("unable to request OCSP stapling"));
    }
    b.set_status_callback(|ssl| Ok(check_staple(ssl)))
        .map_err(|_| Error::config("unable to set the OCSP status callback"))
}

// X509_V_ERR_* values (x509_vfy.h), for the message the failed handshake reports.
const V_ERR_CERT_REVOKED: libc::c_long = 23;
const V_ERR_OCSP_VERIFY_NEEDED: libc::c_long = 73;
const V_ERR_OCSP_VERIFY_FAILED: libc::c_long = 74;

enum Staple {
    Good,
    Revoked,
    Missing,
    Invalid,
}

/// The client's verdict on the staple; `false` fails the handshake, with the reason left
/// as the verification result, which the handshake's error message reports.
fn check_staple(ssl: &mut SslRef) -> bool {
    let Some(leaf) = ssl.peer_certificate() else {
        return true;
    };
    let verdict = match ssl.ocsp_status() {
        None => Staple::Missing,
        Some(der) => judge(ssl, &leaf, der),
    };
    let _ = openssl::error::ErrorStack::get();
    let fail = match verdict {
        Staple::Good => None,
        Staple::Revoked => Some(V_ERR_CERT_REVOKED),
        Staple::Missing if must_staple(&leaf) => Some(V_ERR_OCSP_VERIFY_NEEDED),
        Staple::Invalid if must_staple(&leaf) => Some(V_ERR_OCSP_VERIFY_FAILED),
        Staple::Missing | Staple::Invalid => None,
    };
    match fail {
        None => true,
        Some(code) => {
            // SAFETY: the session is alive for the call; it only stores the number.
            unsafe { SSL_set_verify_result(ssl.as_ptr(), code) };
            false
        }
    }
}

fn judge(ssl: &SslRef, leaf: &X509, der: &[u8]) -> Staple {
    let Ok(resp) = OcspResponse::from_der(der) else {
        return Staple::Invalid;
    };
    if resp.status() != OcspResponseStatus::SUCCESSFUL {
        return Staple::Invalid;
    }
    let Ok(basic) = resp.basic() else {
        return Staple::Invalid;
    };
    // The issuer is the verified chain's second certificate (for a leaf signed by a root
    // in the store, that root).
    let Some(chain) = ssl.verified_chain() else {
        return Staple::Invalid;
    };
    let Some(issuer) = chain.get(1) else {
        return Staple::Invalid;
    };
    let mut certs = match Stack::new() {
        Ok(s) => s,
        Err(_) => return Staple::Invalid,
    };
    for c in chain.iter() {
        if certs.push(c.to_owned()).is_err() {
            return Staple::Invalid;
        }
    }
    let store = ssl.ssl_context().cert_store();
    if basic.verify(&certs, store, OcspFlag::empty()).is_err() {
        return Staple::Invalid;
    }
    let Ok(id) =
        openssl::ocsp::OcspCertId::from_cert(openssl::hash::MessageDigest::sha1(), leaf, issuer)
    else {
        return Staple::Invalid;
    };
    let Some(status) = basic.find_status(&id) else {
        return Staple::Invalid;
    };
    // Five minutes of clock skew, no bound on the age beyond nextUpdate.
    if status.next_update().is_none() || status.check_validity(300, None).is_err() {
        return Staple::Invalid;
    }
    match status.status {
        OcspCertStatus::GOOD => Staple::Good,
        OcspCertStatus::REVOKED => Staple::Revoked,
        _ => Staple::Invalid,
    }
}

fn load_crls(b: &mut SslContextBuilder, path: &OsStr) -> Result<(), Error> {
    let shown = path.to_string_lossy();
    let data = std::fs::read(path)
        .map_err(|e| Error::config(format!("unable to read CRLFILE {shown}: {}", io_text(&e))))?;
    let crls = parse_crls(&data);
    if crls.is_empty() {
        return Err(Error::config(format!(
            "unable to parse CRLFILE {shown}: not a PEM or DER CRL"
        )));
    }
    let store = b.cert_store_mut();
    for crl in &crls {
        // SAFETY: the store and the CRL are alive for the call; the store takes its own
        // reference to the CRL.
        let ok = unsafe { X509_STORE_add_crl(store.as_ptr(), crl.as_ptr()) };
        if ok != 1 {
            let _ = openssl::error::ErrorStack::get();
        }
    }
    b.verify_param_mut()
        .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
        .map_err(|_| Error::config("unable to enable CRL checking"))
}

/// Every `X509 CRL` block of a PEM file, or the file as one DER CRL.
fn parse_crls(data: &[u8]) -> Vec<X509Crl> {
    const BEGIN: &[u8] = b"-----BEGIN X509 CRL-----";
    const END: &[u8] = b"-----END X509 CRL-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(start) = find(rest, BEGIN) {
        let Some(len) = find(&rest[start..], END) else {
            break;
        };
        let end = start + len + END.len();
        if let Ok(c) = X509Crl::from_pem(&rest[start..end]) {
            out.push(c);
        }
        rest = &rest[end..];
    }
    if out.is_empty() {
        if let Ok(c) = X509Crl::from_der(data) {
            out.push(c);
        }
    }
    let _ = openssl::error::ErrorStack::get();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading() {
        let f = Files::from_vars([
            ("OCSPFILE", "/r.der"),
            ("OCSPFILE:A.test", "/a.der"),
            ("CRLFILE", "/c.pem"),
            ("OCSPFILE:b.test", ""),
        ]);
        assert_eq!(f.ocspfile.as_deref(), Some(OsStr::new("/r.der")));
        assert_eq!(f.named, vec![("a.test".to_string(), "/a.der".into())]);
        assert_eq!(f.crlfile.as_deref(), Some(OsStr::new("/c.pem")));
    }

    #[test]
    fn tls_feature_parsing() {
        assert!(tls_features_request_status(&[0x30, 3, 2, 1, 5]));
        assert!(tls_features_request_status(&[0x30, 6, 2, 1, 17, 2, 1, 5]));
        assert!(!tls_features_request_status(&[0x30, 3, 2, 1, 17]));
        assert!(!tls_features_request_status(&[0x30, 9, 2, 1, 5]));
        assert!(!tls_features_request_status(&[]));
        assert!(!tls_features_request_status(&[0x31, 3, 2, 1, 5]));
    }

    #[test]
    fn crl_file_errors_are_96() {
        let dir = std::env::temp_dir().join(format!("stls-ocsp-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, b"not a crl").expect("write");
        let mut b = SslContextBuilder::new(openssl::ssl::SslMethod::tls_client()).expect("context");
        let files = |p: &std::path::Path| Files {
            crlfile: Some(p.as_os_str().to_os_string()),
            ..Files::default()
        };
        let e = client(&mut b, &files(&bad), true).expect_err("bad CRL");
        assert_eq!(e.code, 96);
        assert!(e.msg.contains("bad.pem"), "{}", e.msg);
        let e = client(&mut b, &files(&dir.join("missing.pem")), true).expect_err("missing");
        assert_eq!(e.code, 96);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
