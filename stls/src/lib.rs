//! stls: a TLS engine over five fds (clear in, clear out, cipher in, cipher out, selfpipe),
//! in the UCSPI style of s6-networking's `stls_run`, and everything tlsd and tlsc share.
//!
//! - `engine::run` relays a finished TLS session until both directions are closed and the
//!   child is reaped, and reports how it ended.
//! - `handshake::Tls` binds an OpenSSL session to raw fds and runs the handshake with a deadline.
//! - `env`, `context`, `options`, `session`, `child`, `exit`: configuration from the
//!   environment, SslContexts, the command line, the `SSL_*` description, the app's
//!   process, the exit codes. `wrap` is the wrappers' whole flow.
//! - `policy`, `ocsp`: the TLS policy (versions, ciphers, groups, host-name checks) and
//!   revocation (OCSP stapling, CRLs, must-staple) set on the contexts.

pub mod child;
pub mod context;
pub mod engine;
pub mod env;
pub mod exit;
pub mod fd;
pub mod handshake;
pub mod ocsp;
pub mod options;
pub mod policy;
pub mod session;
pub mod wrap;

pub use engine::{run, Config, End, Fds, Outcome};
