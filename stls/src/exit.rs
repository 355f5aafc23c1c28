//! Exit codes and the error type shared by tlsd and tlsc (documented in stls(7)).

use std::fmt;

/// TLS configuration error: unreadable or invalid certificate or key, mismatched key,
/// missing SNI pair files.
pub const CONFIG: i32 = 96;
/// TLS setup or handshake error, including a failed verification.
pub const HANDSHAKE: i32 = 97;
/// TLS or network error after the handshake, handshake timeout, truncation under `-J`.
pub const TLS: i32 = 98;
/// Usage error or missing required variable.
pub const USAGE: i32 = 100;
/// System call failure.
pub const SYSTEM: i32 = 111;

/// A fatal error: the exit code it maps to and a one-line message (`what: why`).
#[derive(Debug)]
pub struct Error {
    pub code: i32,
    pub msg: String,
}

impl Error {
    pub fn new(code: i32, msg: impl Into<String>) -> Error {
        Error {
            code,
            msg: msg.into(),
        }
    }
    pub fn usage(msg: impl Into<String>) -> Error {
        Error::new(USAGE, msg)
    }
    pub fn config(msg: impl Into<String>) -> Error {
        Error::new(CONFIG, msg)
    }
    pub fn handshake(msg: impl Into<String>) -> Error {
        Error::new(HANDSHAKE, msg)
    }
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
/// `wrap::init_openssl` skips them at start-up (they cost CPU in every connection).
pub fn load_error_strings() {
    extern "C" {
        fn ERR_load_CRYPTO_strings() -> libc::c_int;
        fn ERR_load_SSL_strings() -> libc::c_int;
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| unsafe {
        ERR_load_CRYPTO_strings();
        ERR_load_SSL_strings();
    });
}

/// The reason text for the last OpenSSL errors on this thread (drains the queue).
pub fn ssl_reason() -> String {
    load_error_strings();
    let stack = openssl::error::ErrorStack::get();
    let mut out = String::new();
    for e in stack.errors() {
        if !out.is_empty() {
            out.push_str("; ");
        }
        match e.reason() {
            Some(r) => out.push_str(r),
            None => out.push_str(&format!("error {:#x}", e.code())),
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
    one_line(&out)
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
