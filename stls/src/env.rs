//! Configuration read from the environment: certificates, keys, SNI pairs, trust,
//! and the engine's credentials. Files are read here, before any privilege drop;
//! parsing happens later and only for what is used. Which variables there are, which
//! programs read them and which leave prog's environment: [`crate::variables`].

use crate::exit::Error;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use std::ffi::{CStr, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// A certificate (chain) and key, as file contents.
#[derive(Clone)]
pub struct Material {
    /// Where the certificate (chain) was read from, for messages.
    pub cert_path: OsString,
    /// The certificate file's contents (PEM or DER).
    pub cert: Vec<u8>,
    /// Where the key was read from, for messages.
    pub key_path: OsString,
    /// The key file's contents (PEM or DER).
    pub key: Vec<u8>,
}

/// A parsed pair: leaf, extra chain, key.
pub struct Pair {
    /// The certificate itself.
    pub leaf: X509,
    /// The certificates that follow it in the file, sent as the chain.
    pub chain: Vec<X509>,
    /// Its private key, checked to match the certificate.
    pub key: PKey<Private>,
}

impl Material {
    /// Read both files now (before any privilege drop); parse nothing yet.
    pub fn load(cert_path: &OsStr, key_path: &OsStr) -> Result<Material, Error> {
        let read = |p: &OsStr| {
            std::fs::read(p).map_err(|e| {
                Error::config(format!(
                    "unable to read {}: {}",
                    p.to_string_lossy(),
                    crate::exit::io_text(&e)
                ))
            })
        };
        Ok(Material {
            cert_path: cert_path.to_os_string(),
            cert: read(cert_path)?,
            key_path: key_path.to_os_string(),
            key: read(key_path)?,
        })
    }

    /// Parse PEM (a chain: leaf first) or DER.
    pub fn parse(&self) -> Result<Pair, Error> {
        let cp = self.cert_path.to_string_lossy();
        let kp = self.key_path.to_string_lossy();
        let mut certs = if looks_pem(&self.cert) {
            X509::stack_from_pem(&self.cert).unwrap_or_default()
        } else {
            X509::from_der(&self.cert)
                .map(|c| vec![c])
                .unwrap_or_default()
        };
        if certs.is_empty() {
            return Err(Error::config(format!(
                "unable to parse certificate {cp}: not a PEM or DER certificate"
            )));
        }
        let leaf = certs.remove(0);
        let pk = leaf
            .public_key()
            .map_err(|_| Error::config(format!("unable to read the public key of {cp}")))?;
        let pem = looks_pem(&self.key);
        let key = decode_key_as(&self.key, pem, key_type_name(&pk))
            .map(Ok)
            .unwrap_or_else(|| {
                if pem {
                    PKey::private_key_from_pem(&self.key)
                } else {
                    PKey::private_key_from_der(&self.key)
                }
            })
            .map_err(|_| {
                Error::config(format!(
                    "unable to parse private key {kp}: not a PEM or DER private key"
                ))
            })?;
        if !key.public_eq(&pk) {
            return Err(Error::config(format!(
                "private key {kp} does not match certificate {cp}"
            )));
        }
        Ok(Pair {
            leaf,
            chain: certs,
            key,
        })
    }
}

/// OpenSSL's key type name for the decoders, from the certificate's public key.
fn key_type_name(pk: &PKey<openssl::pkey::Public>) -> Option<&'static CStr> {
    use openssl::pkey::Id;
    let n: &'static [u8] = match pk.id() {
        Id::EC => b"EC\0",
        Id::RSA => b"RSA\0",
        Id::RSA_PSS => b"RSA-PSS\0",
        Id::ED25519 => b"ED25519\0",
        Id::ED448 => b"ED448\0",
        _ => return None,
    };
    CStr::from_bytes_with_nul(n).ok()
}

/// Decode a private key with only the decoders of the certificate's key type (the
/// generic `PEM_read_bio_PrivateKey` tries every decoder of every provider, which
/// costs about a millisecond in each connection). `None` when this fast path does not
/// apply or fails: the caller then falls back to the generic decoding, so any key that
/// was accepted before still is.
fn decode_key_as(data: &[u8], pem: bool, keytype: Option<&CStr>) -> Option<PKey<Private>> {
    use foreign_types::ForeignType;
    extern "C" {
        fn OSSL_DECODER_CTX_new_for_pkey(
            pkey: *mut *mut openssl_sys::EVP_PKEY,
            input_type: *const libc::c_char,
            input_struct: *const libc::c_char,
            keytype: *const libc::c_char,
            selection: libc::c_int,
            libctx: *mut libc::c_void,
            propquery: *const libc::c_char,
        ) -> *mut libc::c_void;
        fn OSSL_DECODER_from_data(
            ctx: *mut libc::c_void,
            pdata: *mut *const u8,
            plen: *mut libc::size_t,
        ) -> libc::c_int;
        fn OSSL_DECODER_CTX_free(ctx: *mut libc::c_void);
    }
    // EVP_PKEY_KEYPAIR: parameters, public and private parts.
    const KEYPAIR: libc::c_int = 0x87;
    let keytype = keytype?;
    let input: &[u8] = if pem { b"PEM\0" } else { b"DER\0" };
    let mut pkey: *mut openssl_sys::EVP_PKEY = std::ptr::null_mut();
    // SAFETY: the decoder writes the key it made into `pkey`, which lives across the calls;
    // the strings passed are NUL-terminated literals; the context is freed below and the
    // key is owned by the PKey built from it.
    unsafe {
        let ctx = OSSL_DECODER_CTX_new_for_pkey(
            &mut pkey,
            input.as_ptr().cast(),
            std::ptr::null(),
            keytype.as_ptr(),
            KEYPAIR,
            std::ptr::null_mut(),
            std::ptr::null(),
        );
        if ctx.is_null() {
            return None;
        }
        let mut p = data.as_ptr();
        let mut len = data.len();
        let ok = OSSL_DECODER_from_data(ctx, &mut p, &mut len);
        OSSL_DECODER_CTX_free(ctx);
        // A failed attempt leaves errors queued; the fallback must not see them.
        let _ = openssl::error::ErrorStack::get();
        if ok != 1 || pkey.is_null() {
            if !pkey.is_null() {
                openssl_sys::EVP_PKEY_free(pkey);
            }
            return None;
        }
        Some(PKey::from_ptr(pkey))
    }
}

fn looks_pem(b: &[u8]) -> bool {
    b.windows(11).take(4096).any(|w| w == b"-----BEGIN ")
}

/// A `CERTFILE:name` / `KEYFILE:name` pair: (lower-case name, cert path, key path).
pub type NamedPair = (String, OsString, OsString);

/// Everything both wrappers read from the environment.
#[derive(Default)]
pub struct Env {
    /// CERTFILE: the default certificate (chain).
    pub certfile: Option<OsString>,
    /// KEYFILE: the default certificate's key.
    pub keyfile: Option<OsString>,
    /// `CERTFILE:name` / `KEYFILE:name` pairs: (lower-case name, cert path, key path);
    /// shared with the contexts built from them.
    pub pairs: std::sync::Arc<Vec<NamedPair>>,
    /// CADIR: a hashed directory of trusted certificates (wins over CAFILE).
    pub cadir: Option<OsString>,
    /// CAFILE: a file of trusted certificates.
    pub cafile: Option<OsString>,
    /// TLS_UID: the engine's user id after the drop.
    pub uid: Option<libc::uid_t>,
    /// TLS_GID: the engine's group id after the drop.
    pub gid: Option<libc::gid_t>,
    /// TCPREMOTEIP, as the UCSPI server or client set it.
    pub tcpremoteip: Option<String>,
    /// SSL_CERT_DIR: the system store's directories (colon-separated).
    pub ssl_cert_dir: Option<OsString>,
    /// SSL_CERT_FILE: a file added to the system store.
    pub ssl_cert_file: Option<OsString>,
    /// Whether OPENSSL_CONF is set (the configuration is then loaded).
    pub openssl_conf: bool,
    /// TLS_CIPHERS, TLS_CIPHERSUITES, TLS_GROUPS, TLS_MIN_VERSION.
    pub policy: crate::policy::Policy,
    /// OCSPFILE, OCSPFILE:name, CRLFILE.
    pub revocation: crate::ocsp::Files,
    /// TICKETKEYFILE, TICKETLIFETIME.
    pub tickets: crate::tickets::Settings,
}

fn nonempty(v: &OsStr) -> Option<OsString> {
    if v.is_empty() {
        None
    } else {
        Some(v.to_os_string())
    }
}

/// This process's environment entries (`NAME=value`), as the C library holds them: no
/// copy. They stay valid while nothing changes the environment (the programs change it
/// only from their main thread, which reads it).
pub(crate) fn environ() -> Vec<*const libc::c_char> {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut out = Vec::new();
    // SAFETY: `environ` is the C library's null-terminated array of NUL-terminated
    // strings, read from the thread that changes it.
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return out;
        }
        while !(*p).is_null() {
            out.push(*p);
            p = p.add(1);
        }
    }
    out
}

impl Env {
    /// Read from the process environment, borrowed: only what is kept is copied (a
    /// hosting setup passes hundreds of `CERTFILE:name` pairs to each connection's
    /// process, and a copy of every variable costs it).
    pub fn from_process() -> Result<Env, Error> {
        let entries = environ();
        let mut vars: Vec<(&OsStr, &OsStr)> = Vec::with_capacity(entries.len());
        for e in entries {
            // SAFETY: the entries are the environment's, which nothing changes while they
            // are read here; strchrnul stops at the entry's NUL, and the value starts
            // after the '=' it found (or is the empty string at that NUL).
            let (k, v) = unsafe {
                let eq = libc::strchrnul(e, libc::c_int::from(b'='));
                let k = std::slice::from_raw_parts(e.cast::<u8>(), eq.offset_from(e) as usize);
                let v = if *eq == 0 { eq } else { eq.add(1) };
                (k, CStr::from_ptr(v).to_bytes())
            };
            vars.push((OsStr::from_bytes(k), OsStr::from_bytes(v)));
        }
        Env::from_vars(vars)
    }

    /// Read from `vars`; a malformed value is a usage error naming the variable.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Env, Error>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let vars: Vec<(K, V)> = vars.into_iter().collect();
        let mut env = Env {
            policy: crate::policy::Policy::from_vars(vars.iter().map(|(k, v)| (k, v)))?,
            revocation: crate::ocsp::Files::from_vars(vars.iter().map(|(k, v)| (k, v))),
            tickets: crate::tickets::Settings::from_vars(vars.iter().map(|(k, v)| (k, v)))?,
            ..Env::default()
        };
        let mut certs: Vec<(String, OsString)> = Vec::new();
        let mut keys: Vec<(String, OsString)> = Vec::new();
        for (k, v) in &vars {
            let kb = k.as_ref().as_bytes();
            let v = v.as_ref();
            match kb {
                b"CERTFILE" => env.certfile = nonempty(v),
                b"KEYFILE" => env.keyfile = nonempty(v),
                b"CADIR" => env.cadir = nonempty(v),
                b"CAFILE" => env.cafile = nonempty(v),
                b"TLS_UID" => env.uid = Some(parse_id("TLS_UID", v)?),
                b"TLS_GID" => env.gid = Some(parse_id("TLS_GID", v)?),
                b"TCPREMOTEIP" => env.tcpremoteip = v.to_str().map(str::to_string),
                b"SSL_CERT_DIR" => env.ssl_cert_dir = nonempty(v),
                b"SSL_CERT_FILE" => env.ssl_cert_file = nonempty(v),
                b"OPENSSL_CONF" => env.openssl_conf = true,
                _ => {
                    let named = |prefix: &[u8]| {
                        kb.strip_prefix(prefix)
                            .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
                    };
                    if let Some(n) = named(b"CERTFILE:") {
                        certs.push((n, v.to_os_string()));
                    } else if let Some(n) = named(b"KEYFILE:") {
                        keys.push((n, v.to_os_string()));
                    }
                }
            }
        }
        // Each certificate's key is looked for first where it is when both lists are in
        // the same order (a configuration that gives each name its two variables), then
        // through the keys sorted by name: hundreds of pairs are read at every connection
        // of tlsd, and a scan of the keys for each certificate grew with their square.
        let mut keys: Vec<(String, Option<OsString>)> =
            keys.into_iter().map(|(n, k)| (n, Some(k))).collect();
        let mut sorted: Option<Vec<usize>> = None;
        let mut pairs = Vec::with_capacity(certs.len());
        for (i, (name, cert)) in certs.into_iter().enumerate() {
            if name.is_empty() {
                return Err(Error::usage("CERTFILE: needs a name after the colon"));
            }
            let at = match keys.get(i) {
                Some((n, _)) if *n == name => Some(i),
                _ => {
                    let order = sorted.get_or_insert_with(|| {
                        let mut o: Vec<usize> = (0..keys.len()).collect();
                        o.sort_unstable_by(|&a, &b| keys[a].0.cmp(&keys[b].0));
                        o
                    });
                    order
                        .binary_search_by(|&j| keys[j].0.as_str().cmp(name.as_str()))
                        .ok()
                        .map(|j| order[j])
                }
            };
            let Some(key) = at.and_then(|j| keys[j].1.take()) else {
                return Err(Error::usage(format!(
                    "CERTFILE:{name} is set but KEYFILE:{name} is not"
                )));
            };
            pairs.push((name, cert, key));
        }
        env.pairs = std::sync::Arc::new(pairs);
        if let Some((n, _)) = keys.iter().find(|(_, k)| k.is_some()) {
            return Err(Error::usage(format!(
                "KEYFILE:{n} is set but CERTFILE:{n} is not"
            )));
        }
        Ok(env)
    }

    /// The default pair, read now; `None` when neither variable is set.
    pub fn default_material(&self) -> Result<Option<Material>, Error> {
        match (&self.certfile, &self.keyfile) {
            (Some(c), Some(k)) => Material::load(c, k).map(Some),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(Error::usage("KEYFILE is set but CERTFILE is not")),
            (Some(_), None) => Err(Error::usage("CERTFILE is set but KEYFILE is not")),
        }
    }
}

fn parse_id(name: &str, v: &OsStr) -> Result<u32, Error> {
    v.to_str()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| Error::usage(format!("{name} must be a number: {}", v.to_string_lossy())))
}

/// Whether [`drop_privileges`] will drop anything: `TLS_UID` or `TLS_GID` set, as root.
pub fn will_drop_privileges(uid: Option<libc::uid_t>, gid: Option<libc::gid_t>) -> bool {
    // SAFETY: geteuid has no preconditions.
    (uid.is_some() || gid.is_some()) && unsafe { libc::geteuid() } == 0
}

/// Drop to `TLS_UID`/`TLS_GID` (supplementary groups too) when running as root.
/// Returns whether a drop happened.
pub fn drop_privileges(uid: Option<libc::uid_t>, gid: Option<libc::gid_t>) -> Result<bool, Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || (uid.is_none() && gid.is_none()) {
        return Ok(false);
    }
    let sys = |what: &str| Error::sys(what, std::io::Error::last_os_error());
    // setgroups first: after setuid it is no longer permitted.
    let groups: Vec<libc::gid_t> = gid.into_iter().collect();
    // SAFETY: `groups` holds `groups.len()` gids and lives across the call.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } < 0 {
        return Err(sys("unable to setgroups"));
    }
    if let Some(g) = gid {
        // SAFETY: setgid takes a plain id.
        if unsafe { libc::setgid(g) } < 0 {
            return Err(sys("unable to setgid"));
        }
    }
    if let Some(u) = uid {
        // SAFETY: setuid takes a plain id.
        if unsafe { libc::setuid(u) } < 0 {
            return Err(sys("unable to setuid"));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[(&str, &str)]) -> Result<Env, Error> {
        Env::from_vars(
            v.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
    }

    #[test]
    fn pairs() {
        let e = env(&[
            ("CERTFILE:A.test", "c"),
            ("KEYFILE:a.test", "k"),
            ("TLS_UID", "5"),
        ])
        .expect("env");
        assert_eq!(*e.pairs, vec![("a.test".into(), "c".into(), "k".into())]);
        assert_eq!(e.uid, Some(5));
        assert!(env(&[("CERTFILE:x", "c")]).is_err());
        assert!(env(&[("KEYFILE:x", "c")]).is_err());
        assert!(env(&[("TLS_GID", "root")]).is_err());
    }

    #[test]
    fn pairs_in_any_order() {
        let e = env(&[
            ("CERTFILE:a", "ca"),
            ("KEYFILE:b", "kb"),
            ("CERTFILE:b", "cb"),
            ("KEYFILE:c", "kc"),
            ("KEYFILE:a", "ka"),
            ("CERTFILE:c", "cc"),
        ])
        .expect("env");
        let got: Vec<(String, OsString, OsString)> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    format!("c{n}").into(),
                    format!("k{n}").into(),
                )
            })
            .collect();
        assert_eq!(*e.pairs, got);
        let e = env(&[("CERTFILE:a", "c"), ("KEYFILE:b", "k"), ("CERTFILE:b", "c")]);
        assert!(e.is_err_and(|e| e.msg.contains("CERTFILE:a is set but KEYFILE:a")));
        let e = env(&[("CERTFILE:a", "c"), ("KEYFILE:a", "k"), ("KEYFILE:b", "k")]);
        assert!(e.is_err_and(|e| e.msg.contains("KEYFILE:b is set but CERTFILE:b")));
        assert!(env(&[("CERTFILE:", "c"), ("KEYFILE:", "k")]).is_err());
    }
}
