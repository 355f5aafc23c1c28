//! The client side's programs, each a `main` that never returns: the binaries `tlsc`,
//! `tlsclient` and `ucspitlsc` call one each, and the multi-call binary `stls` (the one
//! `make install` installs under the six names) calls the one its `argv[0]` names.

pub mod tlsc;
pub mod tlsclient;
pub mod ucspitlsc;
