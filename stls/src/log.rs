//! A program's messages and its way out: `name: fatal: ...`, `name: warning: ...`,
//! `name: info: ...` lines on fd 2, each written whole by one write(2) so that the lines of
//! processes sharing a stderr (a logger such as s6-log or svlogd reads one pipe) never mix;
//! the exit with an error's code; the exit code of a finished relay. Every function takes
//! the program's name: this module knows no program.

use crate::engine::{End, Outcome};
use crate::exit::{self, Error};
use crate::fd;
use crate::options::{Command, Options};
use crate::session::Description;
use std::sync::atomic::{AtomicU32, Ordering};

/// 0 in a program that serves one connection and ends with it; `1 + verbosity` in one
/// connection's process of a server that goes on (tlsserver's forks), whose failure ends
/// that connection only and so is a warning, not a fatal error.
static ONE_OF_MANY: AtomicU32 = AtomicU32::new(0);

/// Mark this process as one connection of a server that goes on: its failures are
/// `name: warning: ...` lines from verbosity 1, the word "fatal" being kept for failures
/// that end the server.
pub fn one_connection_of_many(verbosity: u32) {
    ONE_OF_MANY.store(verbosity.saturating_add(1), Ordering::Relaxed);
}

/// The word before a failure's message, and whether the line is printed at all.
pub fn failure_word() -> (&'static str, bool) {
    match ONE_OF_MANY.load(Ordering::Relaxed) {
        0 => ("fatal", true),
        v => ("warning", v >= 2),
    }
}

/// `name: word: msg` and its newline, written to fd 2 with one write(2): a pipe takes up to
/// PIPE_BUF (4096) bytes in one piece, so concurrent writers' lines never interleave. A
/// longer line, or a full non-blocking stderr, may still be cut; the rest follows at once.
pub fn line(name: &str, word: &str, msg: &str) {
    let text = format!("{name}: {word}: {msg}\n");
    // Nothing can be done about a stderr that fails: the message is lost, not the program.
    let _ = fd::write_all(2, text.as_bytes());
}

/// A program's messages: `name: fatal: ...` always, warnings from verbosity 1, one line
/// per connection from verbosity 2.
#[derive(Clone, Copy, Debug)]
pub struct Log {
    /// The program's name, the first word of every line.
    pub name: &'static str,
    /// `-v`.
    pub verbosity: u32,
}

impl Log {
    /// The messages of `cmd` at the verbosity of `opts`.
    pub fn new(cmd: &Command, opts: &Options) -> Log {
        Log {
            name: cmd.name,
            verbosity: opts.verbosity,
        }
    }

    /// `name: fatal: msg`, whatever the verbosity; in one connection's process of a
    /// server, `name: warning: msg` from verbosity 1 (see [`one_connection_of_many`]).
    pub fn fatal(&self, e: &Error) {
        let (word, shown) = failure_word();
        if shown {
            line(self.name, word, &e.msg);
        }
    }

    /// `name: warning: msg` from verbosity 1.
    pub fn warn(&self, msg: &str) {
        if self.verbosity >= 1 {
            line(self.name, "warning", msg);
        }
    }

    /// `name: info: msg` from verbosity 2.
    pub fn info(&self, msg: &str) {
        if self.verbosity >= 2 {
            line(self.name, "info", msg);
        }
    }
}

/// Exit with the code of `r`, printing the fatal line of an error first (a warning in one
/// connection's process of a server).
pub fn exit_with(name: &'static str, r: Result<i32, Error>) -> ! {
    let code = match r {
        Ok(c) => c,
        Err(e) => {
            let (word, shown) = failure_word();
            if shown {
                line(name, word, &e.msg);
            }
            e.code
        }
    };
    std::process::exit(code)
}

/// The exit code of a finished relay: 98 or 111 when the engine failed (with its fatal
/// line), 97 when the peer rejected this side's certificate after the handshake, else the
/// child's status.
pub fn conclude(log: &Log, out: Outcome) -> i32 {
    match out.end {
        End::Tls(m) => {
            log.fatal(&Error::tls(m));
            exit::TLS
        }
        End::Rejected(m) => {
            log.fatal(&Error::handshake(m));
            exit::HANDSHAKE
        }
        End::System(m) => {
            log.fatal(&Error::new(exit::SYSTEM, m));
            exit::SYSTEM
        }
        End::Clean => {
            if out.idle_expired {
                log.info("idle timeout: session closed");
            }
            match out.child_status {
                Some(st) => {
                    if libc::WIFSIGNALED(st) {
                        log.warn(&format!(
                            "child was killed by signal {}",
                            libc::WTERMSIG(st)
                        ));
                    }
                    exit::from_wait_status(st)
                }
                None => 0,
            }
        }
    }
}

/// The one line a connection logs at verbosity 2: protocol, cipher, group, SNI, a resumed
/// session, peer (a PROXY protocol header's client, else TCPREMOTEIP, else the socket `net`
/// itself: inetd and systemd set no variable).
pub fn session_line(desc: &Description, net: std::os::unix::io::RawFd) -> String {
    let get = |k| desc.get(k).map(|v| v.to_string_lossy().into_owned());
    let mut s = format!(
        "{} {}",
        get("SSL_PROTOCOL").unwrap_or_default(),
        get("SSL_CIPHER").unwrap_or_default()
    );
    if let Some(g) = get("SSL_GROUP") {
        s.push_str(&format!(" group={g}"));
    }
    if let Some(n) = get("SSL_TLS_SNI_SERVERNAME") {
        s.push_str(&format!(" sni={n}"));
    }
    if get("SSL_SESSION_RESUMED").is_some() {
        s.push_str(" resumed");
    }
    let peer = get("TCPREMOTEIP")
        .or_else(|| std::env::var("TCPREMOTEIP").ok())
        .or_else(|| crate::net::peer_addr(net).map(|a| a.ip().to_string()));
    if let Some(ip) = peer {
        s.push_str(&format!(" peer={ip}"));
    }
    s
}
