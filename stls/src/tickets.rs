//! Session tickets shared by every process (and machine) that reads the same key file
//! (`TICKETKEYFILE`), so that a returning client resumes its session wherever its next
//! connection lands; without the file, a server issues no tickets at all (a process that
//! serves one connection could never use one again).
//!
//! The file holds one or more 80-byte keys in nginx's `ssl_session_ticket_key` format: a
//! 16-byte name, a 32-byte HMAC-SHA256 secret, a 32-byte AES-256 key. The first key
//! encrypts new tickets; every key decrypts, so a fleet rotates by putting a new key first
//! and keeping the previous one after it. A ticket whose key is gone, or that has expired,
//! gives a full handshake, never a failure.

use crate::exit::{ssl_reason, Error};
use crate::log::Log;
use foreign_types::ForeignTypeRef;
use openssl::ssl::{SslContext, SslContextBuilder, SslOptions, SslRef};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use std::time::Duration;

/// One key's size in the file.
pub const KEY_LEN: usize = 80;
/// The ticket lifetime when `TICKETLIFETIME` is unset.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// The longest lifetime a TLS 1.3 ticket may have (RFC 8446, 4.6.1).
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// One ticket key.
#[derive(Clone)]
pub struct Key {
    name: [u8; 16],
    hmac: [u8; 32],
    aes: [u8; 32],
}

impl Drop for Key {
    fn drop(&mut self) {
        wipe(&mut self.hmac);
        wipe(&mut self.aes);
    }
}

/// Overwrite secret bytes before their memory is freed.
fn wipe(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: `x` is a valid, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
}

/// The keys of a file, the first one issuing tickets.
pub struct Keys(Vec<Key>);

/// Where the ticket keys come from and how long tickets live, as the environment says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `TICKETKEYFILE`: the key file; `None`: no tickets.
    pub keyfile: Option<OsString>,
    /// `TICKETLIFETIME`: how long a ticket stays valid.
    pub lifetime: Option<Duration>,
}

impl Settings {
    /// Read both variables; a bad lifetime is a configuration error (96) naming it.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Settings, Error>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut s = Settings::default();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            if k == "TICKETKEYFILE" && !v.is_empty() {
                s.keyfile = Some(v.to_os_string());
            } else if k == "TICKETLIFETIME" && !v.is_empty() {
                s.lifetime = Some(parse_lifetime(&v.to_string_lossy())?);
            }
        }
        Ok(s)
    }
}

/// A lifetime: seconds (`7200`) or a duration with a unit (`2h`, `30m`), more than zero and
/// at most 7 days.
pub fn parse_lifetime(s: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::config(format!(
            "TICKETLIFETIME must be seconds or a duration such as 2h, from 1s to 7d: {s}"
        ))
    };
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(s.parse().map_err(|_| bad())?)
    } else {
        humantime::parse_duration(s).map_err(|_| bad())?
    };
    if d < Duration::from_secs(1) || d > MAX_LIFETIME {
        return Err(bad());
    }
    Ok(d)
}

impl Keys {
    /// Parse a key file's contents: one or more 80-byte keys, nothing else.
    pub fn parse(bytes: &[u8], shown: &str) -> Result<Keys, Error> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(KEY_LEN) {
            return Err(Error::config(format!(
                "TICKETKEYFILE {shown}: {} bytes, not one or more 80-byte keys (make one with: openssl rand 80 > FILE)",
                bytes.len()
            )));
        }
        let keys = bytes
            .chunks_exact(KEY_LEN)
            .map(|k| {
                let mut key = Key {
                    name: [0; 16],
                    hmac: [0; 32],
                    aes: [0; 32],
                };
                key.name.copy_from_slice(&k[..16]);
                key.hmac.copy_from_slice(&k[16..48]);
                key.aes.copy_from_slice(&k[48..80]);
                key
            })
            .collect();
        Ok(Keys(keys))
    }

    /// Read and parse the file now (before any privilege drop); warn when users other
    /// than its owner and group may read it.
    pub fn load(path: &OsStr, log: Log) -> Result<Keys, Error> {
        let shown = path.to_string_lossy();
        let unreadable = |e: std::io::Error| {
            Error::config(format!(
                "unable to read TICKETKEYFILE {shown}: {}",
                crate::exit::io_text(&e)
            ))
        };
        let mut bytes = std::fs::read(path).map_err(unreadable)?;
        let keys = Keys::parse(&bytes, &shown);
        wipe(&mut bytes);
        let keys = keys?;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o004 != 0 {
                log.warn(&format!(
                    "TICKETKEYFILE {shown} is readable by every user: make it mode 0600"
                ));
            }
        }
        Ok(keys)
    }

    /// How many keys the file held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no keys (never true of a parsed file).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Issue and accept tickets with `keys` on a server context: one TLS 1.3 ticket per
/// connection, resumed or not, TLS 1.2 tickets, sessions valid for `lifetime`. `sid_context` names the
/// settings a session was made under (client certificates): a session made under other
/// settings is not resumed.
pub fn enable(
    b: &mut SslContextBuilder,
    keys: Keys,
    lifetime: Duration,
    sid_context: &[u8],
) -> Result<(), Error> {
    let e = |what: &str| Error::config(format!("unable to {what}: {}", ssl_reason()));
    let index = index().ok_or_else(|| e("set up session tickets"))?;
    b.set_ex_data(index, keys);
    b.clear_options(SslOptions::NO_TICKET);
    b.set_num_tickets(1)
        .map_err(|_| e("set the number of tickets"))?;
    b.set_session_id_context(sid_context)
        .map_err(|_| e("set the session id context"))?;
    // SAFETY: the context is live; the callback only reads the keys stored in the
    // context's ex_data above, which live as long as the context.
    let ok = unsafe {
        SSL_CTX_set_timeout(b.as_ptr(), lifetime.as_secs() as libc::c_long);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(b.as_ptr(), Some(ticket_key))
    };
    if ok != 1 {
        return Err(e("set the ticket key callback"));
    }
    Ok(())
}

/// Turn tickets off: no TLS 1.2 ticket, no TLS 1.3 ticket.
pub fn disable(b: &mut SslContextBuilder) {
    b.set_options(SslOptions::NO_TICKET);
    let _ = b.set_num_tickets(0);
}

fn index() -> Option<openssl::ex_data::Index<SslContext, Keys>> {
    static INDEX: OnceLock<Option<openssl::ex_data::Index<SslContext, Keys>>> = OnceLock::new();
    *INDEX.get_or_init(|| SslContext::new_ex_index::<Keys>().ok())
}

/// An `EVP_MAC_CTX` (OpenSSL 3), opaque.
enum EvpMacCtx {}

type TicketKeyCb = unsafe extern "C" fn(
    *mut openssl_sys::SSL,
    *mut u8,
    *mut u8,
    *mut openssl_sys::EVP_CIPHER_CTX,
    *mut EvpMacCtx,
    libc::c_int,
) -> libc::c_int;

extern "C" {
    fn SSL_CTX_set_tlsext_ticket_key_evp_cb(
        ctx: *mut openssl_sys::SSL_CTX,
        cb: Option<TicketKeyCb>,
    ) -> libc::c_int;
    fn SSL_CTX_set_timeout(ctx: *mut openssl_sys::SSL_CTX, t: libc::c_long) -> libc::c_long;
    fn EVP_MAC_CTX_set_params(
        ctx: *mut EvpMacCtx,
        params: *const openssl_sys::OSSL_PARAM,
    ) -> libc::c_int;
    fn OSSL_PARAM_construct_octet_string(
        key: *const libc::c_char,
        buf: *mut libc::c_void,
        bsize: libc::size_t,
    ) -> openssl_sys::OSSL_PARAM;
    fn OSSL_PARAM_construct_utf8_string(
        key: *const libc::c_char,
        buf: *mut libc::c_char,
        bsize: libc::size_t,
    ) -> openssl_sys::OSSL_PARAM;
    fn OSSL_PARAM_construct_end() -> openssl_sys::OSSL_PARAM;
}

/// Key the ticket's HMAC-SHA256 with `secret`.
///
/// # Safety
/// `hctx` is the live MAC context OpenSSL passed to the ticket key callback.
unsafe fn init_mac(hctx: *mut EvpMacCtx, secret: &[u8; 32]) -> bool {
    // SAFETY: the parameters point at `secret` and at NUL-terminated literals, which
    // outlive the call; OpenSSL only reads them (the casts to *mut are for the
    // constructors' signatures); `hctx` is live by this function's contract.
    unsafe {
        let params = [
            OSSL_PARAM_construct_octet_string(
                c"key".as_ptr(),
                secret.as_ptr() as *mut libc::c_void,
                secret.len(),
            ),
            OSSL_PARAM_construct_utf8_string(
                c"digest".as_ptr(),
                c"SHA256".as_ptr() as *mut libc::c_char,
                0,
            ),
            OSSL_PARAM_construct_end(),
        ];
        EVP_MAC_CTX_set_params(hctx, params.as_ptr()) == 1
    }
}

/// OpenSSL's ticket key callback. Encrypting (`enc` 1): the first key's name into
/// `key_name`, a random IV, AES-256-CBC and HMAC-SHA256 keyed; 1. Decrypting: the key
/// named `key_name`; 0 when there is none (a full handshake), else 2, which asks OpenSSL
/// for a new ticket (under the first key): with 1, a resumed TLS 1.3 session would get
/// none, and a client that uses each ticket once (as TLS 1.3 advises) would resume only
/// every other connection; -1 on an internal error.
unsafe extern "C" fn ticket_key(
    ssl: *mut openssl_sys::SSL,
    key_name: *mut u8,
    iv: *mut u8,
    cctx: *mut openssl_sys::EVP_CIPHER_CTX,
    hctx: *mut EvpMacCtx,
    enc: libc::c_int,
) -> libc::c_int {
    let Some(index) = index() else { return -1 };
    // SAFETY: OpenSSL passes a live session, a 16-byte key name, an IV buffer of
    // EVP_MAX_IV_LENGTH (16) bytes and live cipher and MAC contexts; the keys are the
    // context's, alive while any of its sessions is.
    unsafe {
        let ssl = SslRef::from_ptr(ssl);
        let Some(keys) = ssl.ssl_context().ex_data(index) else {
            return -1;
        };
        let aes = openssl_sys::EVP_aes_256_cbc();
        if enc == 1 {
            let Some(k) = keys.0.first() else { return -1 };
            std::ptr::copy_nonoverlapping(k.name.as_ptr(), key_name, 16);
            if openssl_sys::RAND_bytes(iv, 16) != 1 {
                return -1;
            }
            let null = std::ptr::null_mut();
            if openssl_sys::EVP_EncryptInit_ex(cctx, aes, null, k.aes.as_ptr(), iv) != 1
                || !init_mac(hctx, &k.hmac)
            {
                return -1;
            }
            return 1;
        }
        let name = std::slice::from_raw_parts(key_name, 16);
        let Some(k) = keys.0.iter().find(|k| k.name[..] == *name) else {
            return 0;
        };
        let null = std::ptr::null_mut();
        if openssl_sys::EVP_DecryptInit_ex(cctx, aes, null, k.aes.as_ptr(), iv) != 1
            || !init_mac(hctx, &k.hmac)
        {
            return -1;
        }
        // Every resumed session gets a fresh ticket, whichever key decrypted this one.
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files() {
        assert!(Keys::parse(&[], "f").is_err());
        assert_eq!(Keys::parse(&[7; 79], "f").map(|_| ()).unwrap_err().code, 96);
        assert!(Keys::parse(&[7; 81], "f").is_err());
        assert!(Keys::parse(&[7; 48], "f").is_err());
        let mut two = vec![1u8; 80];
        two.extend_from_slice(&[2u8; 80]);
        let k = Keys::parse(&two, "f").expect("two keys");
        assert_eq!(k.len(), 2);
        assert_eq!(k.0[0].name, [1; 16]);
        assert_eq!(k.0[1].aes, [2; 32]);
        let e = Keys::parse(&[0; 100], "/etc/t.key")
            .map(|_| ())
            .unwrap_err();
        assert!(
            e.msg.contains("/etc/t.key") && e.msg.contains("100 bytes"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("7200").ok(), Some(DEFAULT_LIFETIME));
        assert_eq!(parse_lifetime("2h").ok(), Some(DEFAULT_LIFETIME));
        assert_eq!(parse_lifetime("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_lifetime("7d").ok(), Some(MAX_LIFETIME));
        for bad in ["0", "8d", "", "x", "500ms", "-1"] {
            assert_eq!(
                parse_lifetime(bad).map(|_| ()).unwrap_err().code,
                96,
                "{bad}"
            );
        }
        let s = Settings::from_vars([("TICKETKEYFILE", "/k"), ("TICKETLIFETIME", "1h")])
            .expect("settings");
        assert_eq!(s.keyfile.as_deref(), Some(OsStr::new("/k")));
        assert_eq!(s.lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(
            Settings::from_vars([("TICKETKEYFILE", ""), ("TICKETLIFETIME", "")]).expect("empty"),
            Settings::default()
        );
    }
}
