//! Shared support for the engine tests: an identity, payloads, pipes, the engine as a
//! TLS server in a thread, an OpenSSL peer.
#![allow(dead_code)]

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::{X509NameBuilder, X509};
use std::fs::File;
use std::io::Read;
use std::os::unix::io::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;
use stls::engine::{self, Config, Fds, Outcome};
use stls::tls::{nonblocking, Tls};

pub fn identity() -> &'static (X509, PKey<Private>) {
    static ID: OnceLock<(X509, PKey<Private>)> = OnceLock::new();
    ID.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", "engine.test").expect("cn");
        let name = name.build();
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("version");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
            .expect("na");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        (b.build(), key)
    })
}

pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha(b: &[u8]) -> Vec<u8> {
    hash(MessageDigest::sha256(), b).expect("sha256").to_vec()
}

pub fn pipe() -> (File, File) {
    let (r, w) = stls::fd::pipe().expect("pipe");
    // SAFETY: the two fds were just created by pipe and are owned by nothing else.
    unsafe { (File::from_raw_fd(r), File::from_raw_fd(w)) }
}

/// The engine as the TLS server, in a thread, over `net` fds; the app's ends are returned:
/// (write to the engine's clear_in, read from the engine's clear_out).
pub fn engine_server(
    net_in: RawFd,
    net_out: RawFd,
    cfg: Config,
) -> (File, File, thread::JoinHandle<Outcome>) {
    let (app_out_r, app_out_w) = pipe(); // app writes -> engine reads
    let (app_in_r, app_in_w) = pipe(); // engine writes -> app reads
    let clear_in = app_out_r.into_raw_fd();
    let clear_out = app_in_w.into_raw_fd();
    let h = thread::spawn(move || {
        let (cert, key) = identity();
        let mut b =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
        b.set_certificate(cert).expect("cert");
        b.set_private_key(key).expect("key");
        let mut opts = openssl::ssl::SslOptions::empty();
        if !cfg.enforce_close_notify {
            opts |= openssl::ssl::SslOptions::IGNORE_UNEXPECTED_EOF;
        }
        b.set_options(opts);
        b.set_mode(
            openssl::ssl::SslMode::ENABLE_PARTIAL_WRITE
                | openssl::ssl::SslMode::ACCEPT_MOVING_WRITE_BUFFER,
        );
        let ctx = b.build().into_context();
        nonblocking(&[net_in, net_out, clear_in, clear_out]).expect("nonblock");
        let mut tls = Tls::new(&ctx, net_in, net_out).expect("tls");
        tls.ssl_mut().set_accept_state();
        tls.handshake(Some(std::time::Instant::now() + Duration::from_secs(10)))
            .expect("handshake");
        let fds = Fds {
            clear_in,
            clear_out,
            cipher_in: net_in,
            cipher_out: net_out,
            selfpipe: -1,
        };
        engine::run(&mut tls, fds, None, &cfg)
    });
    (app_out_w, app_in_r, h)
}

pub fn connector() -> openssl::ssl::SslConnector {
    let mut c = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    c.set_verify(SslVerifyMode::NONE);
    c.build()
}

pub fn peer_over_socket() -> (UnixStream, RawFd, RawFd) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    b.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let fd = a.into_raw_fd();
    // SAFETY: dup takes a plain integer; `fd` is the socket this function owns.
    let fd2 = unsafe { libc::dup(fd) };
    assert!(fd2 >= 0);
    (b, fd, fd2)
}

pub fn read_all<R: Read>(mut r: R) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read to EOF");
    v
}
