//! Key-exchange groups that depend on the OpenSSL linked in: the default list (the hybrid
//! post-quantum group X25519MLKEM768 first where the library has it, OpenSSL 3.5 and
//! later), the name of the group a handshake negotiated, and what `--version` says about
//! the library.
//!
//! One source, two builds: the system build links Debian 12's OpenSSL 3.0, which has no
//! ML-KEM; the vendored build (`make build-vendored`) links OpenSSL 4.0 from the
//! `openssl-src` crate. Everything here is decided at run time from the library itself, so
//! the same code does the right thing in both.

use foreign_types::ForeignTypeRef;
use openssl::ssl::SslRef;
use std::ffi::CStr;

/// The hybrid group: X25519 and ML-KEM-768 together (a session stays safe as long as
/// either holds), the one browsers send.
pub const HYBRID: &str = "X25519MLKEM768";

/// The default groups where the library has [`HYBRID`]: it first, then the classic ones.
/// The `*` marks the groups a client sends key shares for (OpenSSL 3.5's syntax): the
/// hybrid one, so that a server that has it answers at once, and X25519, so that a classic
/// server (nearly all pick X25519) answers at once too; P-256 and P-384 cost a
/// HelloRetryRequest, as before. A server ignores the `*`; the list is one tuple, so it
/// takes the first group of its list among the key shares the client sent and asks for
/// another only when none of them is in its list.
pub const DEFAULT_GROUPS_HYBRID: &str = "*X25519MLKEM768:*X25519:P-256:P-384";

/// The default groups without the hybrid group (OpenSSL 3.0 to 3.4): no finite-field group,
/// whose handshake is a CPU lever. OpenSSL 3.0 sends a key share for the first only.
pub const DEFAULT_GROUPS_CLASSIC: &str = "X25519:P-256:P-384";

/// The first OpenSSL with ML-KEM in its default provider: 3.5.0.
const HYBRID_SINCE: i64 = 0x3050_0000;

/// Whether the OpenSSL this program runs on has [`HYBRID`].
pub fn hybrid_available() -> bool {
    openssl::version::number() >= HYBRID_SINCE
}

/// The default group list for the OpenSSL this program runs on.
pub fn default_groups() -> &'static str {
    if hybrid_available() {
        DEFAULT_GROUPS_HYBRID
    } else {
        DEFAULT_GROUPS_CLASSIC
    }
}

/// Is `name` a post-quantum group (ML-KEM alone or in a hybrid), which OpenSSL has from
/// 3.5 on? For the message that names the build that has it.
pub fn is_pq_name(name: &str) -> bool {
    name.to_ascii_uppercase().contains("MLKEM")
}

/// The message for a `TLS_GROUPS` entry the library does not know.
pub fn unknown_group_message(item: &str) -> String {
    let name = item.trim_start_matches(['*', '?', '-']);
    if is_pq_name(name) && !hybrid_available() {
        format!(
            "TLS_GROUPS: {name}: this build's OpenSSL ({}) has no ML-KEM, which needs \
             OpenSSL 3.5 or later: use the vendored build (make build-vendored), which has \
             it, or leave TLS_GROUPS unset",
            openssl::version::version()
        )
    } else {
        format!("TLS_GROUPS: unknown or unavailable group: {name:?}")
    }
}

extern "C" {
    fn SSL_group_to_name(s: *mut openssl_sys::SSL, id: libc::c_int) -> *const libc::c_char;
}

/// `SSL_get_negotiated_group` is a macro over this control in every OpenSSL 3.
const SSL_CTRL_GET_NEGOTIATED_GROUP: libc::c_int = 134;

/// The group the handshake of `ssl` negotiated, in the spelling of the default list
/// (`X25519MLKEM768`, `X25519`, `P-256`, `P-384`, `P-521`, `X448`, `ffdhe2048`, ...);
/// `None` when there was no key exchange (a resumed TLS 1.2 session) or it has no name.
pub fn negotiated(ssl: &SslRef) -> Option<String> {
    // SAFETY: `ssl` is a live session; the control only reads it. SSL_group_to_name
    // returns NULL or a static NUL-terminated string, copied at once.
    let name = unsafe {
        let id = openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            SSL_CTRL_GET_NEGOTIATED_GROUP,
            0,
            std::ptr::null_mut(),
        );
        if id <= 0 {
            return None;
        }
        let p = SSL_group_to_name(ssl.as_ptr(), libc::c_int::try_from(id).ok()?);
        if p.is_null() {
            return None;
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    Some(canonical(&name))
}

/// OpenSSL's TLS names of the classic groups (`x25519`, `secp256r1`) in the spelling
/// users write in `TLS_GROUPS` and the default list shows.
fn canonical(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "x25519" => "X25519".into(),
        "x448" => "X448".into(),
        "secp256r1" | "prime256v1" => "P-256".into(),
        "secp384r1" => "P-384".into(),
        "secp521r1" => "P-521".into(),
        _ => name.to_string(),
    }
}

/// What `--version` prints: the program and its version, the OpenSSL it runs on, and
/// whether the hybrid group is there.
pub fn version_text(program: &str, version: &str) -> String {
    let pq = if hybrid_available() {
        format!("{HYBRID}: yes (offered first by default)")
    } else {
        format!(
            "{HYBRID}: no (needs OpenSSL 3.5 or later: the vendored build, make build-vendored)"
        )
    };
    format!(
        "{program} {version}\n{}\n{pq}\n",
        openssl::version::version()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(canonical("x25519"), "X25519");
        assert_eq!(canonical("secp384r1"), "P-384");
        assert_eq!(canonical("X25519MLKEM768"), "X25519MLKEM768");
        assert!(is_pq_name("x25519mlkem768") && !is_pq_name("X25519"));
        let m = unknown_group_message("*ffdhe1234");
        assert!(m.contains("\"ffdhe1234\""), "{m}");
        let v = version_text("tlsd", "1.2.3");
        assert!(v.starts_with("tlsd 1.2.3\nOpenSSL "), "{v}");
        assert!(v.contains(HYBRID), "{v}");
    }

    #[test]
    fn the_default_list_is_the_librarys() {
        let mut b =
            openssl::ssl::SslContextBuilder::new(openssl::ssl::SslMethod::tls()).expect("context");
        b.set_groups_list(default_groups())
            .expect("the default groups");
        if hybrid_available() {
            assert!(b.set_groups_list(HYBRID).is_ok());
        } else {
            assert!(b.set_groups_list(HYBRID).is_err());
        }
    }
}
