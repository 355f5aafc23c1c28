//! Exit codes and the error type every program shares (documented in stls(7)).

use std::fmt;

/// TLS configuration error: unreadable or invalid certificate or key, mismatched key,
/// missing SNI pair files.
pub const CONFIG: i32 = 96;
/// TLS setup or handshake error, including a failed verification; a missing or malformed
/// PROXY protocol header under `-L`.
pub const HANDSHAKE: i32 = 97;
/// TLS or network error after the handshake, handshake timeout (the PROXY protocol
/// header's included), truncation under `-J`.
pub const TLS: i32 = 98;
/// Usage error or missing required variable.
pub const USAGE: i32 = 100;
/// System call failure.
pub const SYSTEM: i32 = 111;
/// The program to run was found but cannot be executed.
pub const NOT_EXECUTABLE: i32 = 126;
/// The program to run was not found.
pub const NOT_FOUND: i32 = 127;

/// Every exit code the programs define and what it means, in the order `--help`, the man
/// pages and the README list them (the tests compare those lists with this one).
pub const CODES: &[(i32, &str)] = &[
    (
        CONFIG,
        "TLS configuration error: unreadable or invalid certificate or key, mismatched key, bad TICKETKEYFILE",
    ),
    (
        HANDSHAKE,
        "TLS setup or handshake error, including a failed verification, or a missing or malformed PROXY protocol header (-L)",
    ),
    (
        TLS,
        "TLS or network error after the handshake, handshake timeout, truncation under -J",
    ),
    (USAGE, "usage error or missing required variable"),
    (SYSTEM, "system call failure, missing network fds"),
    (NOT_EXECUTABLE, "prog was found but cannot be executed"),
    (NOT_FOUND, "prog was not found"),
];

/// A fatal error: the exit code it maps to and a one-line message (`what: why`).
#[derive(Debug)]
pub struct Error {
    /// The exit code.
    pub code: i32,
    /// The message, one line, without the program's name.
    pub msg: String,
    /// Why a handshake failed, as far as advice depends on it (tlsc reports it to
    /// autossl-shim); [`Cause::Other`] unless said.
    pub cause: Cause,
}

pub use stls_desc::Cause;

impl Error {
    /// An error with exit code `code`.
    pub fn new(code: i32, msg: impl Into<String>) -> Error {
        Error {
            code,
            msg: msg.into(),
            cause: Cause::Other,
        }
    }
    /// The same error, for `cause`.
    pub fn because(self, cause: Cause) -> Error {
        Error { cause, ..self }
    }
    /// A usage error (100).
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::new(USAGE, msg)
    }
    /// A TLS configuration error (96).
    pub fn config(msg: impl Into<String>) -> Error {
        Error::new(CONFIG, msg)
    }
    /// A setup or handshake error (97).
    pub fn handshake(msg: impl Into<String>) -> Error {
        Error::new(HANDSHAKE, msg)
    }
    /// A TLS or network error after the handshake (98).
    pub fn tls(msg: impl Into<String>) -> Error {
        Error::new(TLS, msg)
    }
    /// A failed system call: `what` is the action, the reason is errno's text.
    pub fn sys(what: &str, err: std::io::Error) -> Error {
        Error::new(SYSTEM, format!("{what}: {}", io_text(&err)))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// errno's text without Rust's " (os error N)" suffix.
pub fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.rfind(" (os error ") {
        Some(i) => &s[..i],
        None => &s,
    };
    one_line(s)
}

/// OpenSSL error stacks print one entry per line; messages here are one line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for part in s.split(['\n', '\r']).filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(part);
    }
    out
}

/// Load OpenSSL's error strings, once, on the first message that needs them:
/// `process::init_openssl` skips them at start-up (they cost CPU in every connection).
pub fn load_error_strings() {
    extern "C" {
        fn ERR_load_CRYPTO_strings() -> libc::c_int;
        fn ERR_load_SSL_strings() -> libc::c_int;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: loading the error strings has no preconditions; Once runs it a single time.
    ONCE.call_once(|| unsafe {
        ERR_load_CRYPTO_strings();
        ERR_load_SSL_strings();
    });
}

/// OpenSSL's number for its TLS library in error codes (not in openssl-sys).
const ERR_LIB_SSL: libc::c_int = 20;

/// The reason text for the last OpenSSL errors on this thread (drains the queue).
pub fn ssl_reason() -> String {
    ssl_failure().0
}

/// The reason text for the last OpenSSL errors on this thread, in the user's terms where
/// the failure is one a user can fix, and whether one of them is the peer's verdict on this
/// side's certificate (drains the queue).
pub(crate) fn ssl_failure() -> (String, bool) {
    load_error_strings();
    let stack = openssl::error::ErrorStack::get();
    let mut out = String::new();
    let mut verdict = false;
    for e in stack.errors() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        let ssl_lib = e.library_code() == ERR_LIB_SSL;
        let explained = ssl_lib
            .then(|| crate::explain::reason(e.reason_code()))
            .flatten();
        verdict |= ssl_lib && crate::explain::is_certificate_verdict(e.reason_code());
        let said = match e.reason() {
            Some(r) => r.to_string(),
            None => format!("error {:#x}", e.code()),
        };
        match explained {
            Some(words) => out.push_str(&format!("{words} (OpenSSL: {said})")),
            None => out.push_str(&said),
        }
        if let Some(d) = e.data() {
            out.push_str(" (");
            out.push_str(d);
            out.push(')');
        }
    }
    if out.is_empty() {
        out.push_str("unknown TLS error");
    }
    (one_line(&out), verdict)
}

/// Exit code for a wait status: the child's code, or 128 + signal.
pub fn from_wait_status(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        SYSTEM
    }
}
