//! autossl-shim: an `LD_PRELOAD` library that upgrades chosen TCP connections of an
//! unmodified program to TLS, through the toolkit's `tlsc` (see autossl-shim(8)).
//!
//! Layout:
//! - `rules`: the environment's lists (ports, addresses, CIDR), parsed once;
//! - `names`: host names recorded from the resolver hooks (per thread, and a table in
//!   shared memory that survives fork);
//! - `socks`: the upgraded sockets (what getpeername & co. answer for them);
//! - `spawn`: starting a helper with no SIGCHLD, no zombie, no inherited fd;
//! - `upgrade`: one matching connect: real TCP connect, tlsc, handshake, swap;
//! - `hooks` (not in unit-test builds: a test binary must not interpose `connect`): the
//!   exported symbols, each behind a reentrancy guard and `catch_unwind`.

pub mod names;
pub mod real;
pub mod rules;
pub mod socks;
pub mod spawn;
pub mod upgrade;

#[cfg(not(test))]
mod hooks;
