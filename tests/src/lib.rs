//! Shared support for the integration tests: the toolkit's binaries, a throw-away PKI,
//! per-connection listeners (our own and `tcpserver`), real TLS peers, an in-process TLS
//! client and server, payloads and hashes, and bounded process handling.
//!
//! Every wait is bounded: sockets have timeouts, children have deadlines and are killed
//! (with their process group) when they overstay.

pub mod bins;
pub mod client;
pub mod faults;
pub mod jobs;
pub mod listener;
pub mod options;
pub mod payload;
pub mod peers;
pub mod pki;
pub mod proc;
pub mod shim;
pub mod tlsserver;

pub use bins::{ci, require, skip, tlsc, tlsd};
pub use pki::{pki, scratch};
