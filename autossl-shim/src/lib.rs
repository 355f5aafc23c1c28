//! autossl-shim: an `LD_PRELOAD` library that upgrades chosen TCP connections of an
//! unmodified program to TLS, through the toolkit's `tlsc` (see autossl-shim(8)).
//!
//! Layout, one job a file, no file importing one that imports it back:
//! - `config`: the `AUTOSSL_*` variables (one table), parsed once, and the paths found;
//! - `rules`: the entries of those variables (ports, addresses, CIDR, names), pure code;
//! - `addr`: the program's destination, from its sockaddr;
//! - `names`: host names recorded from the resolver hooks (a table in shared memory that
//!   survives fork), and the choice of a connection's name from them;
//! - `fds`: system calls on descriptors (what a socket is, waits, flags carried over);
//! - `say`: messages, one `write(2)` a line;
//! - `spawn`: starting a helper with no SIGCHLD, no zombie, no inherited fd;
//! - `handoff`: the pre-started helper, found or started, handed each connection;
//! - `outcome`: the handshake's outcome as tlsc reports it on its `-d` pipe;
//! - `pending`: non-blocking connects in progress, completed at the program's own pace
//!   (its design is in its documentation);
//! - `socks`: the upgraded sockets (what getpeername & co. answer for them);
//! - `upgrade`: one matching connect, in the native mode's and `AUTOSSL_TLS_CMD`'s steps:
//!   real TCP connect, helper started, outcome awaited, swap;
//! - `accept`: the server side, one accepted connection on a chosen listening port: tlsd
//!   started on the real socket, the socketpair end swapped in, at once;
//! - `sessions`: the accepted connections' session descriptions, in a table tlsd writes
//!   (shared memory), and `autossl_session`, the daemon's query;
//! - `hooks` (not in unit-test builds: a test binary must not interpose `connect`): the
//!   exported socket functions, each behind a reentrancy guard and `catch_unwind`;
//! - `lookups` (likewise): the exported resolver functions, which feed `names`.

// Loaded into every host process: every unsafe operation is spelt out and justified.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod accept;
pub mod addr;
pub mod config;
pub mod fds;
pub mod handoff;
pub mod names;
pub mod outcome;
pub mod pending;
pub mod real;
pub mod rules;
pub mod say;
pub mod sessions;
pub mod socks;
pub mod spawn;
pub mod upgrade;

#[cfg(not(test))]
mod hooks;
#[cfg(not(test))]
mod lookups;
