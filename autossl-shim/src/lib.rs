//! autossl-shim: an `LD_PRELOAD` library that upgrades chosen TCP connections of an
//! unmodified program to TLS, through the toolkit's `tlsc` (see autossl-shim(8)).
//!
//! Layout:
//! - `rules`: the environment's lists (ports, addresses, CIDR), parsed once;
//! - `names`: host names recorded from the resolver hooks (per thread, and a table in
//!   shared memory that survives fork);
//! - `pending`: non-blocking connects in progress, completed at the program's own pace
//!   (its design is in its documentation);
//! - `socks`: the upgraded sockets (what getpeername & co. answer for them);
//! - `spawn`: starting a helper with no SIGCHLD, no zombie, no inherited fd;
//! - `upgrade`: one matching connect, in steps shared by the native mode and
//!   `AUTOSSL_TLS_CMD`'s: real TCP connect, helper started, session description awaited
//!   (decoded by `stls_desc`, the format tlsc writes), swap;
//! - `hooks` (not in unit-test builds: a test binary must not interpose `connect`): the
//!   exported symbols, each behind a reentrancy guard and `catch_unwind`.

// Loaded into every host process: every unsafe operation is spelt out and justified.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod names;
pub mod pending;
pub mod real;
pub mod rules;
pub mod socks;
pub mod spawn;
pub mod upgrade;

#[cfg(not(test))]
mod hooks;
