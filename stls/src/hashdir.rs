//! Hashed CA directories (`HASH.N` files, as `openssl rehash` makes them) read into memory
//! now and looked up later as OpenSSL's own directory lookup would, by the hash of the
//! subject name, each certificate parsed only when a verification asks for its name.
//!
//! OpenSSL reads such a directory lazily, during the handshake: after the engine's
//! privilege drop (TLS_UID/TLS_GID) a directory only root can read would reject every
//! peer, and in the sandbox the engine can open no file at all. Reading the files is cheap;
//! parsing the whole system store is not (tens of milliseconds), so that is still left to
//! the handshake, in memory.

use foreign_types::{ForeignType, ForeignTypeRef};
use openssl::ssl::SslContextBuilder;
use openssl::x509::X509;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// The files' bytes by the subject hash of their name, in the order of their `.N`.
type Files = HashMap<u32, Vec<Vec<u8>>>;

const X509_LU_X509: libc::c_int = 1;

#[allow(non_camel_case_types)]
type X509_LOOKUP = libc::c_void;
#[allow(non_camel_case_types)]
type X509_LOOKUP_METHOD = libc::c_void;
#[allow(non_camel_case_types)]
type X509_OBJECT = libc::c_void;

type GetBySubject = unsafe extern "C" fn(
    *mut X509_LOOKUP,
    libc::c_int,
    *const openssl_sys::X509_NAME,
    *mut X509_OBJECT,
) -> libc::c_int;

extern "C" {
    fn X509_LOOKUP_meth_new(name: *const libc::c_char) -> *mut X509_LOOKUP_METHOD;
    fn X509_LOOKUP_meth_set_get_by_subject(
        m: *mut X509_LOOKUP_METHOD,
        f: GetBySubject,
    ) -> libc::c_int;
    fn X509_LOOKUP_meth_set_free(
        m: *mut X509_LOOKUP_METHOD,
        f: unsafe extern "C" fn(*mut X509_LOOKUP),
    ) -> libc::c_int;
    fn X509_STORE_add_lookup(
        s: *mut openssl_sys::X509_STORE,
        m: *mut X509_LOOKUP_METHOD,
    ) -> *mut X509_LOOKUP;
    fn X509_LOOKUP_set_method_data(l: *mut X509_LOOKUP, data: *mut libc::c_void) -> libc::c_int;
    fn X509_LOOKUP_get_method_data(l: *const X509_LOOKUP) -> *mut libc::c_void;
    fn X509_LOOKUP_get_store(l: *const X509_LOOKUP) -> *mut openssl_sys::X509_STORE;
    fn X509_NAME_hash_ex(
        n: *const openssl_sys::X509_NAME,
        libctx: *mut libc::c_void,
        propq: *const libc::c_char,
        ok: *mut libc::c_int,
    ) -> libc::c_ulong;
    fn X509_NAME_cmp(
        a: *const openssl_sys::X509_NAME,
        b: *const openssl_sys::X509_NAME,
    ) -> libc::c_int;
    fn X509_OBJECT_set1_X509(o: *mut X509_OBJECT, x: *mut openssl_sys::X509) -> libc::c_int;
}

/// `HASH.N`: eight hex digits, a dot, a decimal number (CRLs are `HASH.rN`): the hash and N.
pub fn hashed_cert_name(n: &[u8]) -> Option<(u32, u32)> {
    let hex = n.get(..8)?.iter().all(u8::is_ascii_hexdigit);
    if !hex || n.len() <= 9 || n[8] != b'.' || !n[9..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let hash = u32::from_str_radix(std::str::from_utf8(&n[..8]).ok()?, 16).ok()?;
    let index = std::str::from_utf8(&n[9..]).ok()?.parse().ok()?;
    Some((hash, index))
}

/// Read the certificates of `dirs` (every `HASH.N` file) and add a lookup over them to
/// `b`'s store. A directory that cannot be read is an error when `strict` (the user's
/// CADIR), else skipped (the system's directories, which may be missing); a file that
/// cannot be read is skipped, as OpenSSL's lookup would skip it.
pub fn add(b: &mut SslContextBuilder, dirs: &[&Path], strict: bool) -> std::io::Result<()> {
    let mut found: HashMap<u32, Vec<(u32, Vec<u8>)>> = HashMap::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if strict => return Err(e),
            Err(_) => continue,
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if strict => return Err(e),
                Err(_) => continue,
            };
            let Some((hash, n)) = hashed_cert_name(entry.file_name().as_encoded_bytes()) else {
                continue;
            };
            if let Ok(pem) = std::fs::read(entry.path()) {
                found.entry(hash).or_default().push((n, pem));
            }
        }
    }
    let files: Files = found
        .into_iter()
        .map(|(h, mut v)| {
            v.sort_by_key(|(n, _)| *n);
            (h, v.into_iter().map(|(_, pem)| pem).collect())
        })
        .collect();
    let Some(method) = method() else {
        return Err(std::io::Error::other("no memory for a certificate lookup"));
    };
    // SAFETY: the store belongs to the builder, alive across the call; the method lives
    // for the process; the files are handed to the lookup, which frees them in
    // `free_files`. A store has one lookup per method: a second call adds to its files.
    unsafe {
        let lookup = X509_STORE_add_lookup(b.cert_store_mut().as_ptr(), method);
        if lookup.is_null() {
            return Err(std::io::Error::other("unable to add a certificate lookup"));
        }
        let had = X509_LOOKUP_get_method_data(lookup).cast::<Files>();
        match had.as_mut() {
            Some(had) => {
                for (h, v) in files {
                    had.entry(h).or_default().extend(v);
                }
            }
            None => {
                X509_LOOKUP_set_method_data(lookup, Box::into_raw(Box::new(files)).cast());
            }
        }
    }
    Ok(())
}

/// The lookup method, made once for the process (a store keeps a pointer to it).
fn method() -> Option<*mut X509_LOOKUP_METHOD> {
    static METHOD: OnceLock<usize> = OnceLock::new();
    let m = *METHOD.get_or_init(|| {
        // SAFETY: a new method with a static name; the setters take it and our functions.
        unsafe {
            let m = X509_LOOKUP_meth_new(c"stls hashed directory, read ahead".as_ptr());
            if !m.is_null() {
                X509_LOOKUP_meth_set_get_by_subject(m, by_subject);
                X509_LOOKUP_meth_set_free(m, free_files);
            }
            m as usize
        }
    });
    (m != 0).then_some(m as *mut X509_LOOKUP_METHOD)
}

/// The store is freed: so are the files.
unsafe extern "C" fn free_files(l: *mut X509_LOOKUP) {
    // SAFETY: the method data is the box made in `add`, or null; it is taken once.
    unsafe {
        let d = X509_LOOKUP_get_method_data(l);
        if !d.is_null() {
            X509_LOOKUP_set_method_data(l, std::ptr::null_mut());
            drop(Box::from_raw(d.cast::<Files>()));
        }
    }
}

/// OpenSSL asks for the certificates whose subject is `name`: those of the files named
/// by its hash are parsed and added to the store, and the first is returned in `ret`.
unsafe extern "C" fn by_subject(
    l: *mut X509_LOOKUP,
    kind: libc::c_int,
    name: *const openssl_sys::X509_NAME,
    ret: *mut X509_OBJECT,
) -> libc::c_int {
    if kind != X509_LU_X509 || name.is_null() {
        return 0;
    }
    // SAFETY: OpenSSL passes its lookup, whose data is `add`'s map (or null), a valid
    // name, and an object to fill; every certificate is owned by an `X509` until the end.
    unsafe {
        let files = X509_LOOKUP_get_method_data(l).cast::<Files>();
        let Some(files) = files.as_ref() else {
            return 0;
        };
        let mut ok = 0;
        let hash = X509_NAME_hash_ex(name, std::ptr::null_mut(), std::ptr::null(), &mut ok);
        if ok == 0 {
            return 0;
        }
        let Some(list) = u32::try_from(hash).ok().and_then(|h| files.get(&h)) else {
            return 0;
        };
        let store = X509_LOOKUP_get_store(l);
        let mut found = 0;
        for pem in list {
            for cert in X509::stack_from_pem(pem).unwrap_or_default() {
                let subject = openssl_sys::X509_get_subject_name(cert.as_ptr());
                if X509_NAME_cmp(subject, name) != 0 {
                    continue;
                }
                // A duplicate (two hash links to one file) is not an error.
                if !store.is_null() {
                    openssl_sys::X509_STORE_add_cert(store, cert.as_ptr());
                }
                if found == 0 && X509_OBJECT_set1_X509(ret, cert.as_ptr()) == 1 {
                    found = 1;
                }
            }
        }
        let _ = openssl::error::ErrorStack::get();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::hashed_cert_name as h;

    #[test]
    fn hashed_cert_names() {
        assert_eq!(h(b"ce275665.0"), Some((0xce27_5665, 0)));
        assert_eq!(h(b"0A1b2C3d.12"), Some((0x0a1b_2c3d, 12)));
        assert_eq!(h(b"ce275665.r0"), None);
        assert_eq!(h(b"ce275665."), None);
        assert_eq!(h(b"ce27566.0"), None);
        assert_eq!(h(b"ca.pem"), None);
        assert_eq!(h(b"xe275665.0"), None);
    }
}
