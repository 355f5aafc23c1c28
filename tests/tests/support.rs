//! Self-tests of the support library (no tlsd/tlsc needed): the PKI verifies with the
//! openssl CLI, the in-process client and server talk, the listeners run programs.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use stls_tests::client::{self, ClientOpts, End, OneShotServer, ServerOpts};
use stls_tests::listener::{Spawn, TcpServer, TinyListener};
use stls_tests::payload;
use stls_tests::{pki, proc, require};

fn verify(ca: &std::path::Path, cert: &std::path::Path, extra: &[&str]) -> proc::Outcome {
    let mut c = Command::new("openssl");
    c.arg("verify").arg("-CAfile").arg(ca).args(extra).arg(cert);
    proc::run(&mut c, None, Duration::from_secs(20))
}

#[test]
fn pki_verifies_with_openssl_cli() {
    if !require("openssl") {
        return;
    }
    let p = pki();
    for pair in [&p.ec, &p.rsa, &p.a, &p.b, &p.wild, &p.client] {
        let o = verify(&p.ca, &pair.cert, &[]);
        assert_eq!(o.code(), 0, "{}: {}", pair.cert.display(), o.stderr_str());
    }
    let o = verify(&p.ca, &p.expired.cert, &[]);
    assert_ne!(o.code(), 0, "expired cert must not verify");
    assert!(o.stdout_str().contains("expired") || o.stderr_str().contains("expired"));
    let o = verify(&p.ca, &p.untrusted.cert, &[]);
    assert_ne!(o.code(), 0, "untrusted cert must not verify");
    // the chain file carries the intermediate
    let o = verify(
        &p.ca,
        &p.chain.cert,
        &["-untrusted", p.chain.cert.to_str().unwrap()],
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    // CADIR is a hashed directory
    let mut c = Command::new("openssl");
    c.arg("verify").arg("-CApath").arg(&p.cadir).arg(&p.ec.cert);
    let o = proc::run(&mut c, None, Duration::from_secs(20));
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    // the subject in RFC 4514 form
    let mut c = Command::new("openssl");
    c.args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&p.client.cert);
    let o = proc::run(&mut c, None, Duration::from_secs(20));
    assert_eq!(
        o.stdout_str().trim(),
        format!("subject={}", p.client.subject)
    );
    assert_eq!(p.client.subject, "CN=client,O=Test");
}

#[test]
fn in_process_client_and_server_half_close() {
    let data = payload::bytes(7, 3 * payload::MIB + 17);
    let want = payload::sha256_hex(&data);
    let srv = OneShotServer::start(
        ServerOpts::new(&pki().ec),
        Box::new(|s| {
            let (got, end) = client::server_read_to_end(s);
            assert_eq!(end, End::CloseNotify);
            let h = payload::sha256_hex(&got);
            s.write_all(h.as_bytes()).unwrap();
            s.shutdown().unwrap();
            got
        }),
    );
    let mut c = client::connect(srv.addr, &ClientOpts::tls13()).expect("connect");
    assert_eq!(c.version(), "TLSv1.3");
    c.write_all(&data).unwrap();
    c.half_close().unwrap();
    let (reply, end) = c.read_to_end();
    assert_eq!(end, End::CloseNotify);
    assert_eq!(String::from_utf8_lossy(&reply), want);
    let rep = srv.report(Duration::from_secs(30));
    assert!(rep.handshake.is_ok());
}

#[test]
fn in_process_duplex_echo() {
    let data = payload::bytes(8, 2 * payload::MIB);
    let want = payload::sha256_hex(&data);
    let srv = OneShotServer::start(
        ServerOpts::new(&pki().rsa),
        Box::new(|s| {
            let mut buf = vec![0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
            s.shutdown().unwrap();
            Vec::new()
        }),
    );
    let mut c = client::connect(srv.addr, &ClientOpts::tls12()).expect("connect");
    let (h, end) = c.duplex(&data, true, Duration::from_secs(60));
    assert_eq!(end, End::CloseNotify);
    assert_eq!(h.len as usize, data.len());
    assert_eq!(h.hex(), want);
}

#[test]
fn client_refuses_untrusted_and_wrong_name() {
    let srv = OneShotServer::start(ServerOpts::new(&pki().untrusted), Box::new(|_| Vec::new()));
    assert!(client::connect(srv.addr, &ClientOpts::default()).is_err());
    let srv = OneShotServer::start(ServerOpts::new(&pki().a), Box::new(|_| Vec::new()));
    assert!(client::connect(srv.addr, &ClientOpts::default()).is_err());
}

#[test]
fn tiny_listener_runs_a_program_per_connection() {
    let l = TinyListener::start(Spawn {
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            "echo \"$TCPREMOTEIP:$PROTO\"; cat; exit 3".into(),
        ],
        env: vec![],
        groups: None,
        timeout: Duration::from_secs(20),
    });
    let mut s = l.connect();
    s.write_all(b"ping").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "127.0.0.1:TCP\nping");
    let sess = l.next_session(Duration::from_secs(20));
    assert_eq!(sess.code(), 3);
}

#[test]
fn tcpserver_helper_runs_a_program() {
    if !require("tcpserver") {
        return;
    }
    let ts = TcpServer::start(10, &["/bin/sh", "-c", "echo \"hi $TCPREMOTEIP\""], &[]);
    let mut s = std::net::TcpStream::connect(ts.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "hi 127.0.0.1\n");
    ts.stop();
}
