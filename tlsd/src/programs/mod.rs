//! The server side's programs, each a `main` that never returns: the binaries `tlsd`,
//! `tlsserver` and `ucspitlsd` call one each, and the multi-call binary `stls` (the one
//! `make install` installs under the six names) calls the one its `argv[0]` names.

pub mod tlsd;
pub mod tlsserver;
pub mod ucspitlsd;
