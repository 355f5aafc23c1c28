//! What the command-line programs share around the engine: messages in the programs'
//! format, the command line read once, the engine's settings from it, the child's
//! environment edits, and the exit code of a finished relay. Every function takes the
//! program's name (through [`Log`] or [`Command`]): this module knows no program.

use crate::engine::{self, End, Outcome};
use crate::env;
use crate::exit::{self, Error};
use crate::fd;
use crate::options::{self, Command, Options};
use crate::session::Description;
use std::ffi::OsString;
use std::os::unix::io::{AsRawFd, IntoRawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

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
            eprintln!("{}: {word}: {}", self.name, e.msg);
        }
    }

    /// `name: warning: msg` from verbosity 1.
    pub fn warn(&self, msg: &str) {
        if self.verbosity >= 1 {
            eprintln!("{}: warning: {msg}", self.name);
        }
    }

    /// `name: info: msg` from verbosity 2.
    pub fn info(&self, msg: &str) {
        if self.verbosity >= 2 {
            eprintln!("{}: info: {msg}", self.name);
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
                eprintln!("{name}: {word}: {}", e.msg);
            }
            e.code
        }
    };
    std::process::exit(code)
}

/// Parse the process's command line; `None` when `--help` or `--version` was answered.
pub fn parse_args(cmd: &Command) -> Result<Option<Options>, Error> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let opts = options::parse(cmd, &args)?;
    if opts.help {
        print!("{}", options::help(cmd));
        return Ok(None);
    }
    if opts.version {
        print!(
            "{}",
            crate::groups::version_text(cmd.name, env!("CARGO_PKG_VERSION"))
        );
        return Ok(None);
    }
    Ok(Some(opts))
}

/// The engine's settings from the command line.
pub fn engine_config(opts: &Options) -> engine::Config {
    engine::Config {
        close_notify: opts.close_notify,
        enforce_close_notify: opts.enforce_close_notify,
        idle_timeout: opts.idle_timeout,
        ..engine::Config::default()
    }
}

/// When the handshake must be done by, counted from now.
pub fn deadline(opts: &Options) -> Option<Instant> {
    opts.handshake_timeout.map(|d| Instant::now() + d)
}

/// `-L`: the PROXY protocol header on `fd`, read by `deadline`; `None` without `-L`.
pub fn proxy_header(
    opts: &Options,
    fd: i32,
    deadline: Option<Instant>,
) -> Result<Option<crate::proxy::Proxied>, Error> {
    if !opts.proxy_protocol {
        return Ok(None);
    }
    crate::proxy::accept(fd, deadline).map(Some)
}

/// The child's environment edits: the session, then the secrets removed unless `-Z`.
pub fn child_description(opts: &Options, mut desc: Description) -> Description {
    if !opts.keep_env {
        for (k, _) in std::env::vars_os() {
            if env::is_secret(&k) {
                desc.unset(&k);
            }
        }
    }
    desc
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
        .or_else(|| fd::peer_addr(net).map(|a| a.ip().to_string()));
    if let Some(ip) = peer {
        s.push_str(&format!(" peer={ip}"));
    }
    s
}

/// Point fd 2 at /dev/null: for a process whose stderr is the connection (inetd
/// `nowait`) or must not be held open (a detached helper).
pub fn silence_stderr() {
    // A confined process opens nothing: it kept /dev/null open from before, for this
    // one use (no descriptor is held beyond it).
    if let Some(null) = crate::sandbox::take_devnull() {
        let _ = fd::dup2(null, 2);
        fd::close(null);
        return;
    }
    if crate::sandbox::entered() {
        // Taken already: fd 2 is /dev/null.
        return;
    }
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        if f.as_raw_fd() == 2 {
            // fd 2 was closed and /dev/null landed on it: keep it.
            let _ = f.into_raw_fd();
            return;
        }
        // `f` is closed when it goes out of scope: only fd 2 keeps /dev/null open.
        let _ = fd::dup2(f.as_raw_fd(), 2);
    }
}
