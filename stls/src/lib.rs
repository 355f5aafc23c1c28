//! stls: a TLS engine over five file descriptors (clear text in and out, ciphertext in and
//! out, a selfpipe), in the UCSPI style of s6-networking's `stls_run`, and the building
//! blocks of the programs that run it.
//!
//! The engine:
//! - [`run`] relays a finished TLS session until both directions are closed and the child
//!   is reaped, and reports how it ended ([`Outcome`]); it never exits the process.
//! - [`Tls`] binds an OpenSSL session to raw fds and runs the handshake with a deadline.
//! - [`child::Launcher`] forks the process that will exec the app once the handshake is
//!   done, and [`child::Selfpipe`] turns SIGCHLD into a readable fd for the engine.
//! - [`ucspi`] runs delayed TLS (UCSPI-TLS): the app, started at once, asks for the
//!   handshake on a control socket.
//! - [`context`] builds the server and client `SslContext`s from [`env::Env`] and their
//!   own settings types.
//!
//! The programs' building blocks: [`env`](mod@env) (configuration read from the environment, the
//! privilege drop), [`options`] (the option table behind parsing and `--help`), [`cli`]
//! (messages, the child's environment, the exit code of a relay), [`session`] (the `SSL_*`
//! description), [`exit`] (the exit codes), [`fd`], [`process`], [`policy`] (versions,
//! ciphers, groups, host-name checks), [`groups`] (the default groups and the negotiated
//! one, from the linked OpenSSL), [`ocsp`] (stapling, CRLs, must-staple) and
//! [`proxy`] (the PROXY protocol's header, behind a load balancer), [`tickets`] (session
//! tickets shared through a key file). None of
//! them knows a program: the name used in messages is passed in.
//!
//! Embedding the engine over a socketpair, with an in-process OpenSSL peer:
//!
//! ```
//! use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
//! use std::io::{Read, Write};
//! use std::os::unix::io::IntoRawFd;
//! use std::os::unix::net::UnixStream;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A throw-away certificate for the server.
//! let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
//! let key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group)?)?;
//! let mut name = openssl::x509::X509NameBuilder::new()?;
//! name.append_entry_by_text("CN", "example.test")?;
//! let name = name.build();
//! let mut cert = openssl::x509::X509Builder::new()?;
//! cert.set_version(2)?;
//! cert.set_subject_name(&name)?;
//! cert.set_issuer_name(&name)?;
//! cert.set_pubkey(&key)?;
//! let (from, until) = (
//!     openssl::asn1::Asn1Time::days_from_now(0)?,
//!     openssl::asn1::Asn1Time::days_from_now(1)?,
//! );
//! cert.set_not_before(&from)?;
//! cert.set_not_after(&until)?;
//! cert.sign(&key, openssl::hash::MessageDigest::sha256())?;
//! let cert = cert.build();
//!
//! // The network: a socketpair, the peer (an OpenSSL server) on one end in a thread.
//! let (ours, theirs) = UnixStream::pair()?;
//! let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
//! acceptor.set_private_key(&key)?;
//! acceptor.set_certificate(&cert)?;
//! let acceptor = acceptor.build();
//! let peer = std::thread::spawn(move || -> Vec<u8> {
//!     let mut s = acceptor.accept(theirs).expect("handshake");
//!     s.write_all(b"hello from the peer").expect("write");
//!     s.shutdown().expect("close_notify");
//!     let mut got = Vec::new();
//!     let _ = s.read_to_end(&mut got);
//!     got
//! });
//!
//! // Our side: a client session over the raw fd, its handshake, then the engine between
//! // the session and a pair of pipes standing for the app.
//! let mut connector = SslConnector::builder(SslMethod::tls())?;
//! connector.set_verify(SslVerifyMode::NONE);
//! let ctx = connector.build().into_context();
//! let fd = ours.into_raw_fd(); // the engine closes it when it is done
//! stls::nonblocking(&[fd])?;
//! let mut tls = stls::Tls::new(&ctx, fd, fd)?;
//! tls.ssl_mut().set_connect_state();
//! tls.handshake(None)?;
//!
//! let (app_reads, to_app) = stls::fd::pipe()?; // network -> app
//! let (from_app, app_writes) = stls::fd::pipe()?; // app -> network
//! stls::fd::write_all(app_writes, b"hello from the app")?;
//! stls::fd::close(app_writes); // the app's EOF: the engine sends close_notify
//! stls::nonblocking(&[to_app, from_app])?;
//! let fds = stls::Fds {
//!     clear_in: from_app,
//!     clear_out: to_app,
//!     cipher_in: fd,
//!     cipher_out: fd,
//!     selfpipe: -1, // no child to watch
//! };
//! let out = stls::run(&mut tls, fds, None, &stls::Config::default());
//! assert_eq!(out.end, stls::End::Clean);
//! assert_eq!(stls::fd::read_to_end(app_reads, 1 << 20)?, b"hello from the peer");
//! assert_eq!(peer.join().expect("peer"), b"hello from the app");
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod child;
pub mod cli;
pub mod context;
pub mod engine;
pub mod env;
pub mod exit;
mod explain;
pub mod fd;
pub mod groups;
pub mod handoff;
pub mod hashdir;
pub mod help;
pub mod http_host;
pub mod log;
pub mod net;
pub mod ocsp;
pub mod options;
pub mod pages;
pub mod policy;
pub mod process;
pub mod proxy;
pub mod sandbox;
pub mod session;
pub mod tickets;
pub mod tls;
pub mod ucspi;
pub mod variables;

pub use engine::{run, run_sending, Config, End, Fds, Hold, Outcome, BUF};
pub use tls::{nonblocking, Io, Tls};
