//! tlsd end to end: real peers on loopback, under the suite's
//! own listener and under `tcpserver`; integrity by hash; SSL_* variables; SNI; client
//! certificates; options; the faults of earlier TLS wrappers that must not recur (secrets leaking to the
//! app, a TCP EOF taken for an error, a lost last reply, SIGALRM on timeout, a stale poll
//! result, a zero certificate hash, no setgroups, the app started before the handshake);
//! exit codes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use stls_tests::client::{self, ClientOpts, End};
use stls_tests::listener::{Spawn, TcpServer, TinyListener};
use stls_tests::payload::{self, MIB};
use stls_tests::peers::{self, one_fatal_line, Tls};
use stls_tests::pki::Pair;
use stls_tests::{pki, proc, require, scratch, skip};

const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ helpers

fn pair_env(p: &'static Pair) -> Vec<(&'static str, &'static Path)> {
    vec![("CERTFILE", p.cert.as_path()), ("KEYFILE", p.key.as_path())]
}

fn ec_env() -> Vec<(&'static str, &'static Path)> {
    pair_env(&pki().ec)
}

/// tlsd argv: `opts... -- /bin/sh -c script`.
fn sh_args(opts: &[&str], script: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = opts.iter().map(OsString::from).collect();
    v.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    v
}

/// tlsd under the suite's listener, running `sh -c script` per connection.
fn serve_with(opts: &[&str], script: &str, env: &[(&str, &Path)]) -> TinyListener {
    TinyListener::start(Spawn::tlsd(&sh_args(opts, script), env))
}

/// The same with the ECDSA pair.
fn serve(opts: &[&str], script: &str) -> TinyListener {
    serve_with(opts, script, &ec_env())
}

/// What a client saw of one exchange.
#[derive(Debug)]
struct Talk {
    reply: Vec<u8>,
    end: End,
    cn: Option<String>,
    version: &'static str,
}

impl Talk {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.reply).into_owned()
    }
}

/// Connect, send `input`, half-close (close_notify + FIN), read to the end.
fn talk(addr: SocketAddr, o: &ClientOpts, input: &[u8]) -> Result<Talk, String> {
    let mut c = client::connect(addr, o)?;
    c.write_all(input).map_err(|e| format!("write: {e}"))?;
    c.half_close()?;
    let (reply, end) = c.read_to_end();
    Ok(Talk {
        reply,
        end,
        cn: c.peer_cn(),
        version: c.version(),
    })
}

/// The child's environment, as printed by `env`, into a map.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_clean(sess: &stls_tests::listener::Session, what: &str) {
    assert_eq!(
        sess.code(),
        0,
        "{what}: tlsd exit {} (killed: {}), stderr: {}",
        sess.code(),
        sess.killed,
        sess.stderr_str()
    );
}

/// Run a plain (non-TLS) client against a fresh tlsd: send `bytes`, read to EOF.
fn plain_client(l: &TinyListener, bytes: &[u8]) -> Vec<u8> {
    let mut s = l.connect();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

// ------------------------------------------------------------------ interop: real clients

const ID_SCRIPT: &str = r#"read line; echo "got=$line proto=$SSL_PROTOCOL cipher=$SSL_CIPHER sni=$SSL_TLS_SNI_SERVERNAME""#;

fn check_id_reply(out: &str, tls: Tls, rsa: bool, who: &str) {
    assert!(
        out.contains(&format!("got=hello proto={} ", tls.name())),
        "{who}: reply {out:?}"
    );
    if tls == Tls::V12 {
        let kind = if rsa { "-RSA-" } else { "-ECDSA-" };
        assert!(
            out.contains(kind),
            "{who}: TLS 1.2 cipher should be {kind}: {out:?}"
        );
    }
}

#[test]
fn s_client_tls12_tls13_ecdsa_rsa() {
    if !require("openssl") {
        return;
    }
    for (p, rsa) in [(&pki().ec, false), (&pki().rsa, true)] {
        let l = serve_with(&[], ID_SCRIPT, &pair_env(p));
        for tls in Tls::both() {
            let who = format!("s_client {tls:?} rsa={rsa}");
            let o = peers::s_client(l.port(), tls, &[], b"hello\n");
            let out = o.stdout_str();
            assert_eq!(o.code(), 0, "{who}: stderr {}", o.stderr_str());
            assert!(
                !peers::reports_error(&o.stderr_str()),
                "{who}: {}",
                o.stderr_str()
            );
            check_id_reply(&out, tls, rsa, &who);
            assert!(out.contains("sni=localhost"), "{who}: {out}");
            assert_clean(&l.next_session(WAIT), &who);
        }
    }
}

#[test]
fn s_client_under_tcpserver() {
    if !require("openssl") || !require("tcpserver") {
        return;
    }
    let mut prog: Vec<OsString> = vec![stls_tests::tlsd().into()];
    prog.extend(sh_args(&[], ID_SCRIPT));
    let ts = TcpServer::start(20, &prog, &ec_env());
    for tls in Tls::both() {
        let o = peers::s_client(ts.port, tls, &[], b"hello\n");
        assert_eq!(o.code(), 0, "stderr {}", o.stderr_str());
        assert!(!peers::reports_error(&o.stderr_str()), "{}", o.stderr_str());
        check_id_reply(&o.stdout_str(), tls, false, "s_client under tcpserver");
    }
    let err = ts.stop();
    assert!(!err.contains("fatal"), "tlsd under tcpserver: {err}");
}

/// A tiny HTTP responder: reads the request head, answers with a fixed body.
const HTTP: &str = r#"
while IFS= read -r l; do case "$l" in "$(printf '\r')"|"") break;; esac; done
body="hello over $SSL_PROTOCOL"
printf 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' "${#body}" "$body"
"#;

#[test]
fn curl_tiny_http_responder() {
    if !require("curl") {
        return;
    }
    for p in [&pki().ec, &pki().rsa] {
        let l = serve_with(&[], HTTP, &pair_env(p));
        for tls in Tls::both() {
            let o = peers::curl(l.port(), tls);
            assert_eq!(o.code(), 0, "curl {tls:?}: {}", o.stderr_str());
            assert_eq!(o.stdout_str(), format!("hello over {}", tls.name()));
            assert_clean(&l.next_session(WAIT), "curl");
        }
    }
}

#[test]
fn curl_under_tcpserver() {
    if !require("curl") || !require("tcpserver") {
        return;
    }
    let mut prog: Vec<OsString> = vec![stls_tests::tlsd().into()];
    prog.extend(sh_args(&[], HTTP));
    let ts = TcpServer::start(20, &prog, &pair_env(&pki().rsa));
    for tls in Tls::both() {
        let o = peers::curl(ts.port, tls);
        assert_eq!(o.code(), 0, "curl {tls:?}: {}", o.stderr_str());
        assert_eq!(o.stdout_str(), format!("hello over {}", tls.name()));
    }
    ts.stop();
}

#[test]
fn gnutls_cli_clean_close() {
    if !require("gnutls-cli") {
        return;
    }
    for (p, rsa) in [(&pki().ec, false), (&pki().rsa, true)] {
        let l = serve_with(&[], ID_SCRIPT, &pair_env(p));
        for tls in Tls::both() {
            let who = format!("gnutls-cli {tls:?} rsa={rsa}");
            let o = peers::gnutls_cli(l.port(), tls, b"hello\n");
            let all = format!("{}\n{}", o.stdout_str(), o.stderr_str());
            assert_eq!(o.code(), 0, "{who}: {all}");
            assert!(
                !all.contains("non-properly") && !all.contains("Fatal error"),
                "{who}: unclean close: {all}"
            );
            assert!(
                all.contains("Peer has closed the GnuTLS connection"),
                "{who}: {all}"
            );
            assert!(
                all.contains(&format!("got=hello proto={}", tls.name())),
                "{who}: {all}"
            );
            assert_clean(&l.next_session(WAIT), &who);
        }
    }
}

#[test]
fn python_ssl_client() {
    if !require("python3") {
        return;
    }
    for (p, rsa) in [(&pki().ec, false), (&pki().rsa, true)] {
        let l = serve_with(&[], ID_SCRIPT, &pair_env(p));
        for tls in Tls::both() {
            let who = format!("python {tls:?} rsa={rsa}");
            let o = peers::python_client(l.port(), tls, b"hello\n");
            assert_eq!(o.code(), 0, "{who}: {}", o.stderr_str());
            check_id_reply(&o.stdout_str(), tls, rsa, &who);
            assert_clean(&l.next_session(WAIT), &who);
        }
    }
}

#[test]
fn ipv6_loopback_with_ip_san() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip("no IPv6 loopback");
        return;
    }
    let l = TinyListener::start_on(
        "[::1]:0",
        Spawn::tlsd(
            &sh_args(&[], "echo \"$TCPREMOTEIP $SSL_PROTOCOL\""),
            &ec_env(),
        ),
    );
    let o = ClientOpts {
        sni: None,
        verify_name: Some("::1".into()),
        ..Default::default()
    };
    let t = talk(l.addr, &o, b"").expect("IPv6 handshake");
    assert_eq!(t.text(), "::1 TLSv1.3\n");
    assert_eq!(t.version, "TLSv1.3");
    assert_eq!(t.end, End::CloseNotify);
    assert_clean(&l.next_session(WAIT), "ipv6");
}

// ------------------------------------------------------------------ integrity

#[test]
fn upload_64_mib_hash_in_1_mib_writes() {
    let l = serve(&[], "exec sha256sum");
    let mut c = client::connect(l.addr, &ClientOpts::tls13()).expect("handshake");
    let mut rng = payload::XorShift::new(64);
    let mut h = payload::Hasher::new();
    let mut buf = vec![0u8; MIB];
    for _ in 0..64 {
        rng.fill(&mut buf);
        h.update(&buf);
        c.write_all(&buf).expect("1 MiB write");
    }
    c.half_close().expect("half-close");
    let (reply, end) = c.read_to_end();
    assert_eq!(payload::sha256sum_word(&reply), h.hex());
    assert_eq!(end, End::CloseNotify);
    assert_clean(&l.next_session(WAIT), "upload 64 MiB");
}

#[test]
fn download_64_mib_hash() {
    let dir = scratch("download64");
    let (file, want) = payload::file(&dir, "payload", 6464, 64 * MIB);
    let l = serve(&[], &format!("exec cat '{}'", file.display()));
    let mut c = client::connect(l.addr, &ClientOpts::tls12()).expect("handshake");
    let (h, end) = c.hash_to_end(None);
    assert_eq!(
        h.len,
        64 * MIB as u64,
        "end: {end:?}, tlsd: {:?}",
        l.next_session(WAIT)
    );
    assert_eq!(h.hex(), want);
    assert_eq!(end, End::CloseNotify);
    drop(c);
    assert_clean(&l.next_session(WAIT), "download 64 MiB");
}

#[test]
fn full_duplex_echo_through_cat() {
    for tls in Tls::both() {
        let l = serve(&[], "exec cat");
        let data = payload::bytes(99, 8 * MIB + 123);
        let mut c = client::connect(l.addr, &ClientOpts::version(tls.ssl_version())).unwrap();
        let (h, end) = c.duplex(&data, true, Duration::from_secs(60));
        assert_eq!(end, End::CloseNotify, "{tls:?}");
        assert_eq!(h.len as usize, data.len(), "{tls:?}");
        assert_eq!(h.hex(), payload::sha256_hex(&data), "{tls:?}");
        assert_clean(&l.next_session(WAIT), "duplex echo");
    }
}

#[test]
fn half_close_client_sends_then_reads_whole_reply() {
    // the reply is computed from the whole request and is larger than any buffer
    let dir = scratch("halfclose");
    let (file, want) = payload::file(&dir, "reply", 5, 3 * MIB);
    let script = format!("sha256sum; cat '{}'", file.display());
    for tls in Tls::both() {
        let l = serve(&[], &script);
        let data = payload::bytes(11, 2 * MIB + 5);
        let t = talk(l.addr, &ClientOpts::version(tls.ssl_version()), &data).unwrap();
        assert_eq!(t.end, End::CloseNotify);
        let (line, rest) = t.reply.split_at(64);
        assert_eq!(payload::sha256sum_word(line), payload::sha256_hex(&data));
        // "  -\n" follows the hash
        assert_eq!(&rest[..4], b"  -\n");
        assert_eq!(payload::sha256_hex(&rest[4..]), want, "{tls:?}");
        assert_clean(&l.next_session(WAIT), "half-close");
    }
}

#[test]
fn slow_reader_gets_everything() {
    let dir = scratch("slow");
    let (file, want) = payload::file(&dir, "payload", 77, 4 * MIB);
    let l = serve(&[], &format!("exec cat '{}'", file.display()));
    let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
    thread::sleep(Duration::from_secs(1)); // let every buffer on the way fill up
    let (h, end) = c.hash_to_end(Some((16 * 1024, Duration::from_millis(1))));
    assert_eq!(h.hex(), want);
    assert_eq!(end, End::CloseNotify);
    drop(c);
    assert_clean(&l.next_session(WAIT), "slow reader");
}

#[test]
fn one_byte_writes_are_forwarded_at_once() {
    let l = serve(&[], "exec cat");
    let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..200u32 {
        let b = [(i % 251) as u8];
        let t0 = Instant::now();
        c.write_all(&b).unwrap();
        let got = c.read_exact(1).expect("echo of one byte");
        assert_eq!(got, b);
        worst = worst.max(t0.elapsed());
    }
    assert!(
        worst < Duration::from_millis(500),
        "a 1-byte write took {worst:?} to come back"
    );
    c.half_close().unwrap();
    let (rest, end) = c.read_to_end();
    assert!(rest.is_empty());
    assert_eq!(end, End::CloseNotify);
    assert_clean(&l.next_session(WAIT), "1-byte writes");
}

#[test]
fn one_byte_writes_many_records_hash() {
    let l = serve(&[], "exec sha256sum");
    let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
    let data = payload::bytes(3, 5000);
    c.write_chunked(&data, 1).unwrap();
    c.half_close().unwrap();
    let (reply, end) = c.read_to_end();
    assert_eq!(payload::sha256sum_word(&reply), payload::sha256_hex(&data));
    assert_eq!(end, End::CloseNotify);
    assert_clean(&l.next_session(WAIT), "1-byte records");
}

fn fifty_clients(addr: SocketAddr) {
    let report = stls_tests::jobs::run(50, 50, |i| {
        let data = payload::bytes(1000 + i as u64, 64 * 1024 + i * 97);
        let t = match talk(addr, &ClientOpts::default(), &data) {
            Ok(t) => t,
            Err(e) => return Some(format!("client {i}: {e}")),
        };
        if t.end != End::CloseNotify {
            return Some(format!("client {i}: ended {:?}", t.end));
        }
        (payload::sha256sum_word(&t.reply) != payload::sha256_hex(&data))
            .then(|| format!("client {i}: the reply's hash differs"))
    });
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
}

#[test]
fn fifty_concurrent_connections_tiny_listener() {
    let l = serve(&[], "exec sha256sum");
    fifty_clients(l.addr);
    for _ in 0..50 {
        assert_clean(&l.next_session(WAIT), "50 concurrent");
    }
}

#[test]
fn fifty_concurrent_connections_under_tcpserver() {
    if !require("tcpserver") {
        return;
    }
    let mut prog: Vec<OsString> = vec![stls_tests::tlsd().into()];
    prog.extend(sh_args(&[], "exec sha256sum"));
    let ts = TcpServer::start(60, &prog, &ec_env());
    fifty_clients(ts.addr());
    let err = ts.stop();
    assert!(!err.contains("fatal"), "{err}");
}

#[test]
fn pem_chain_der_and_sec1_keys() {
    let p = pki();
    // chain: the client trusts the root only; tlsd must send the intermediate
    for (pair, what) in [
        (&p.chain, "PEM chain"),
        (&p.ec_der, "DER (EC)"),
        (&p.rsa_der, "DER (RSA)"),
        (&p.ec_sec1, "SEC1 EC key"),
    ] {
        let l = serve_with(&[], "echo ok", &pair_env(pair));
        let t = talk(l.addr, &ClientOpts::default(), b"")
            .unwrap_or_else(|e| panic!("{what}: {e}; tlsd: {}", l.next_session(WAIT).stderr_str()));
        assert_eq!(t.text(), "ok\n", "{what}");
        assert_clean(&l.next_session(WAIT), what);
    }
}

// ------------------------------------------------------------------ SSL_* variables

#[test]
fn ssl_variables_with_client_cert_and_sni() {
    let l = TinyListener::start(
        Spawn::tlsd(&sh_args(&["-Y"], "env"), &ec_env()).env("CAFILE", &pki().ca),
    );
    let o = ClientOpts::tls13().with_cert(&pki().client);
    let t = talk(l.addr, &o, b"").unwrap();
    let env = parse_env(&t.text());
    assert_eq!(env.get("SSL_PROTOCOL").map(String::as_str), Some("TLSv1.3"));
    assert!(
        env.get("SSL_CIPHER").is_some_and(|c| c.starts_with("TLS_")),
        "{env:?}"
    );
    assert_eq!(
        env.get("SSL_TLS_SNI_SERVERNAME").map(String::as_str),
        Some("localhost")
    );
    assert_eq!(env.get("SSL_PEER_CERT_HASH"), Some(&pki().client.hash));
    assert_eq!(
        env.get("SSL_PEER_CERT_SUBJECT").map(String::as_str),
        Some("CN=client,O=Test")
    );
    assert_clean(&l.next_session(WAIT), "SSL_* with client cert");
}

/// With optional client certificates and none given, no
/// SSL_PEER_CERT_HASH=SHA256:000…; absent values are unset, never empty.
#[test]
fn absent_values_are_unset() {
    let l = TinyListener::start(
        Spawn::tlsd(&sh_args(&["-Y"], "env"), &ec_env()).env("CAFILE", &pki().ca),
    );
    let o = ClientOpts::tls12().sni(None);
    let t = talk(l.addr, &o, b"").unwrap();
    let env = parse_env(&t.text());
    assert_eq!(env.get("SSL_PROTOCOL").map(String::as_str), Some("TLSv1.2"));
    assert!(env.contains_key("SSL_CIPHER"));
    for k in [
        "SSL_TLS_SNI_SERVERNAME",
        "SSL_PEER_CERT_HASH",
        "SSL_PEER_CERT_SUBJECT",
    ] {
        assert!(!env.contains_key(k), "{k} must be unset: {:?}", env.get(k));
    }
    assert_clean(
        &l.next_session(WAIT),
        "optional client certificate, none given",
    );
}

// ------------------------------------------------------------------ SNI

fn sni_env() -> Vec<(&'static str, &'static Path)> {
    let p = pki();
    vec![
        ("CERTFILE", p.ec.cert.as_path()),
        ("KEYFILE", p.ec.key.as_path()),
        ("CERTFILE:a.test", p.a.cert.as_path()),
        ("KEYFILE:a.test", p.a.key.as_path()),
        ("CERTFILE:b.test", p.b.cert.as_path()),
        ("KEYFILE:b.test", p.b.key.as_path()),
        ("CERTFILE:*.wild.test", p.wild.cert.as_path()),
        ("KEYFILE:*.wild.test", p.wild.key.as_path()),
    ]
}

/// Handshake with SNI `name` (no name check) and return the served certificate's CN.
fn served_cn(addr: SocketAddr, name: Option<&str>) -> Result<String, String> {
    let o = ClientOpts {
        sni: name.map(str::to_string),
        verify_name: None,
        ..Default::default()
    };
    let t = talk(addr, &o, b"")?;
    Ok(t.cn.unwrap_or_default())
}

#[test]
fn sni_level_0_always_default_pair() {
    let l = serve_with(&[], "echo \"$SSL_TLS_SNI_SERVERNAME\"", &sni_env());
    for name in ["a.test", "b.test", "x.wild.test"] {
        assert_eq!(
            served_cn(l.addr, Some(name)).unwrap(),
            "localhost",
            "{name}"
        );
        assert_clean(&l.next_session(WAIT), "-k 0");
    }
}

#[test]
fn sni_level_1_named_pairs_wildcards_and_fallback() {
    for opt in ["-k1", "--sni", "--sni-level=1"] {
        let l = serve_with(&[opt], "echo \"$SSL_TLS_SNI_SERVERNAME\"", &sni_env());
        for (name, cn) in [
            (Some("a.test"), "a.test"),
            (Some("b.test"), "b.test"),
            (Some("B.TEST"), "b.test"),
            (Some("x.wild.test"), "*.wild.test"),
            (Some("Other.Wild.Test"), "*.wild.test"),
            (Some("a.b.wild.test"), "localhost"), // one label only
            (Some("wild.test"), "localhost"),
            (Some("unknown.test"), "localhost"),
            (None, "localhost"),
        ] {
            assert_eq!(
                served_cn(l.addr, name).unwrap_or_else(|e| panic!("{opt} {name:?}: {e}")),
                cn,
                "{opt} SNI {name:?}"
            );
            assert_clean(&l.next_session(WAIT), "-k 1");
        }
    }
    // and the verified path: a client that checks a.test
    let l = serve_with(&["-k", "1"], "echo \"$SSL_TLS_SNI_SERVERNAME\"", &sni_env());
    let o = ClientOpts {
        sni: Some("a.test".into()),
        verify_name: Some("a.test".into()),
        ..Default::default()
    };
    let t = talk(l.addr, &o, b"").unwrap();
    assert_eq!(t.text(), "a.test\n");
}

#[test]
fn sni_level_2_only_named_pairs() {
    let env: Vec<_> = sni_env()
        .into_iter()
        .filter(|(k, _)| *k != "CERTFILE" && *k != "KEYFILE")
        .collect();
    for opt in ["-k2", "--mandatory-sni"] {
        let l = serve_with(&[opt], "echo ok", &env);
        assert_eq!(served_cn(l.addr, Some("a.test")).unwrap(), "a.test");
        assert_clean(&l.next_session(WAIT), "-k 2 a.test");
        assert_eq!(
            served_cn(l.addr, Some("z.wild.test")).unwrap(),
            "*.wild.test"
        );
        assert_clean(&l.next_session(WAIT), "-k 2 wildcard");
        for name in [Some("unknown.test"), None] {
            assert!(served_cn(l.addr, name).is_err(), "{opt} {name:?} must fail");
            let s = l.next_session(WAIT);
            assert_eq!(s.code(), 97, "{opt} {name:?}: {}", s.stderr_str());
            assert!(
                one_fatal_line(&s.stderr_str(), "tlsd"),
                "{}",
                s.stderr_str()
            );
        }
    }
}

#[test]
fn sni_missing_pair_file_is_96() {
    let dir = scratch("sni-missing");
    let missing = dir.join("nope.pem");
    let p = pki();
    let env = vec![
        ("CERTFILE", p.ec.cert.as_path()),
        ("KEYFILE", p.ec.key.as_path()),
        ("CERTFILE:a.test", missing.as_path()),
        ("KEYFILE:a.test", p.a.key.as_path()),
    ];
    let l = serve_with(&["-k", "1"], "echo ok", &env);
    let _ = served_cn(l.addr, Some("a.test"));
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 96, "{}", s.stderr_str());
    assert!(
        one_fatal_line(&s.stderr_str(), "tlsd")
            && s.stderr_str().contains(&missing.display().to_string()),
        "the file is named: {}",
        s.stderr_str()
    );
    // Only the pair a client names is read, when it names it: a broken pair fails the
    // connections that ask for it, not the others.
    for name in [None, Some("other.test")] {
        assert_eq!(served_cn(l.addr, name).unwrap(), "localhost", "{name:?}");
        assert_clean(&l.next_session(WAIT), "another name");
    }
}

/// 300 pairs, all but one naming files that do not exist: only the pair the client names
/// is read, so a.test and the default are served, and only a client naming a broken pair
/// fails (96).
#[test]
fn sni_reads_only_the_named_pair_of_300() {
    let dir = scratch("sni-300");
    let p = pki();
    let missing = dir.join("nope.pem");
    let mut spawn = Spawn::tlsd(
        &sh_args(&["-k", "1"], "echo ok"),
        &[
            ("CERTFILE", p.ec.cert.as_path()),
            ("KEYFILE", p.ec.key.as_path()),
            ("CERTFILE:a.test", p.a.cert.as_path()),
            ("KEYFILE:a.test", p.a.key.as_path()),
        ],
    );
    for i in 0..299 {
        spawn = spawn
            .env(&format!("CERTFILE:n{i}.test"), &missing)
            .env(&format!("KEYFILE:n{i}.test"), &missing);
    }
    let l = TinyListener::start(spawn);
    assert_eq!(served_cn(l.addr, Some("a.test")).unwrap(), "a.test");
    assert_clean(&l.next_session(WAIT), "300 pairs, a.test");
    let t = talk(l.addr, &ClientOpts::default(), b"").unwrap();
    assert_eq!(t.text(), "ok\n");
    assert_clean(&l.next_session(WAIT), "300 pairs, the default");
    let _ = served_cn(l.addr, Some("n7.test"));
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 96, "{}", s.stderr_str());
}

// ------------------------------------------------------------------ client certificates

#[test]
fn mandatory_client_cert() {
    let p = pki();
    for (ca_var, ca) in [("CAFILE", &p.ca), ("CADIR", &p.cadir)] {
        let spawn = Spawn::tlsd(
            &sh_args(&["-y"], "echo \"$SSL_PEER_CERT_SUBJECT\""),
            &ec_env(),
        )
        .env(ca_var, ca);
        let l = TinyListener::start(spawn);
        // a good certificate
        let t = talk(l.addr, &ClientOpts::default().with_cert(&p.client), b"").unwrap();
        assert_eq!(t.text(), "CN=client,O=Test\n", "{ca_var}");
        assert_clean(&l.next_session(WAIT), "-y good cert");
        // none, and one from an unknown CA: the handshake fails, the app never runs
        for o in [
            ClientOpts::tls12(),
            ClientOpts::tls13(),
            ClientOpts::tls13().with_cert(&p.untrusted_client),
        ] {
            let r = talk(l.addr, &o, b"");
            if let Ok(t) = &r {
                assert!(t.reply.is_empty(), "{ca_var}: the app ran: {:?}", t.text());
            }
            let s = l.next_session(WAIT);
            assert_eq!(s.code(), 97, "{ca_var} {:?}: {}", o.cert, s.stderr_str());
            assert!(
                one_fatal_line(&s.stderr_str(), "tlsd"),
                "{}",
                s.stderr_str()
            );
        }
    }
}

#[test]
fn optional_client_cert() {
    let p = pki();
    let spawn = Spawn::tlsd(
        &sh_args(&["-Y"], "echo \"${SSL_PEER_CERT_SUBJECT-unset}\""),
        &ec_env(),
    )
    .env("CAFILE", &p.ca);
    let l = TinyListener::start(spawn);
    let t = talk(l.addr, &ClientOpts::default().with_cert(&p.client), b"").unwrap();
    assert_eq!(t.text(), "CN=client,O=Test\n");
    assert_clean(&l.next_session(WAIT), "-Y with cert");
    let t = talk(l.addr, &ClientOpts::default(), b"").unwrap();
    assert_eq!(t.text(), "unset\n");
    assert_clean(&l.next_session(WAIT), "-Y without cert");
}

#[test]
fn client_cert_options_need_a_ca() {
    for opt in ["-y", "-Y"] {
        let l = serve(&[opt], "echo ran");
        let out = plain_client(&l, b"");
        assert!(out.is_empty());
        let s = l.next_session(WAIT);
        assert_eq!(
            s.code(),
            100,
            "{opt} without CAFILE/CADIR: {}",
            s.stderr_str()
        );
        assert!(
            one_fatal_line(&s.stderr_str(), "tlsd"),
            "{}",
            s.stderr_str()
        );
    }
}

// ------------------------------------------------------------------ -Z/-z

const SECRET_VARS: &[&str] = &[
    "CERTFILE",
    "KEYFILE",
    "CAFILE",
    "CADIR",
    "TLS_UID",
    "TLS_GID",
    "CERTFILE:a.test",
    "KEYFILE:a.test",
];

fn env_seen_by_child(opts: &[&str]) -> BTreeMap<String, String> {
    let p = pki();
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() }.to_string();
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() }.to_string();
    // `env` itself, not through sh: dash drops variables whose names are not shell
    // identifiers (CERTFILE:a.test) from what it passes on.
    let mut args: Vec<OsString> = opts.iter().map(OsString::from).collect();
    args.extend(["--", "env"].map(OsString::from));
    let spawn = Spawn::tlsd(&args, &ec_env())
        .env("CAFILE", &p.ca)
        .env("CADIR", &p.cadir)
        .env("CERTFILE:a.test", &p.a.cert)
        .env("KEYFILE:a.test", &p.a.key)
        .env("TLS_UID", uid)
        .env("TLS_GID", gid);
    let l = TinyListener::start(spawn);
    let t = talk(l.addr, &ClientOpts::default(), b"").unwrap();
    assert_clean(&l.next_session(WAIT), "env");
    parse_env(&t.text())
}

/// By default the secrets' variables do not reach the app.
#[test]
fn default_strips_secret_variables() {
    for opts in [&[][..], &["-z"][..], &["--no-keep"][..]] {
        let env = env_seen_by_child(opts);
        assert!(env.contains_key("SSL_PROTOCOL"), "{env:?}");
        for k in SECRET_VARS {
            assert!(!env.contains_key(*k), "{opts:?}: {k} leaked to the app");
        }
    }
}

#[test]
fn keep_option_keeps_them() {
    for opts in [&["-Z"][..], &["--keep"][..]] {
        let env = env_seen_by_child(opts);
        for k in SECRET_VARS {
            assert!(env.contains_key(*k), "{opts:?}: {k} should be kept");
        }
        assert_eq!(
            env.get("CERTFILE"),
            Some(&pki().ec.cert.display().to_string())
        );
    }
}

// ------------------------------------------------------------------ -S/-s, -J/-j

#[test]
fn close_notify_default_and_no_close_notify() {
    for (opts, want) in [
        (&[][..], End::CloseNotify),
        (&["-S"][..], End::CloseNotify),
        (&["--close-notify"][..], End::CloseNotify),
        (&["-s"][..], End::Eof),
        (&["--no-close-notify"][..], End::Eof),
    ] {
        let l = serve(opts, "echo reply");
        let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
        let (reply, end) = c.read_to_end();
        assert_eq!(reply, b"reply\n", "{opts:?}");
        assert_eq!(end, want, "{opts:?}");
        drop(c);
        assert_clean(&l.next_session(WAIT), "-S/-s");
    }
}

/// A TCP EOF without close_notify is a normal EOF by default.
#[test]
fn tcp_eof_without_close_notify_is_normal_eof() {
    for tls in Tls::both() {
        for opts in [&[][..], &["-j"][..], &["--no-enforce-close-notify"][..]] {
            let l = serve(opts, "exec sha256sum");
            let data = payload::bytes(2, 300_000);
            let mut c = client::connect(l.addr, &ClientOpts::version(tls.ssl_version())).unwrap();
            c.write_all(&data).unwrap();
            c.shutdown_tcp_write(); // FIN, no close_notify
            let (reply, end) = c.read_to_end();
            assert_eq!(
                payload::sha256sum_word(&reply),
                payload::sha256_hex(&data),
                "{tls:?} {opts:?}"
            );
            assert_eq!(end, End::CloseNotify, "{tls:?} {opts:?}");
            assert_clean(&l.next_session(WAIT), "TCP EOF without close_notify");
        }
    }
}

#[test]
fn enforce_close_notify_makes_truncation_fatal() {
    for opts in [&["-J"][..], &["--enforce-close-notify"][..]] {
        let l = serve(opts, "exec cat >/dev/null");
        let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
        c.write_all(b"some data").unwrap();
        c.shutdown_tcp_write();
        let _ = c.read_to_end();
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 98, "{opts:?}: {}", s.stderr_str());
        assert!(
            one_fatal_line(&s.stderr_str(), "tlsd"),
            "{}",
            s.stderr_str()
        );
    }
}

// ------------------------------------------------------------------ replies, timeouts, close order, privileges

/// An app that writes its reply and exits at once (without reading
/// its input) loses nothing: 50 runs out of 50.
#[test]
fn reply_of_app_exiting_at_once_arrives_50_of_50() {
    let l = serve(&[], "echo reply-from-app");
    for i in 0..50 {
        let t = talk(
            l.addr,
            &ClientOpts::default(),
            b"request that nobody reads\n",
        )
        .unwrap_or_else(|e| panic!("run {i}: {e}"));
        assert_eq!(t.text(), "reply-from-app\n", "run {i}");
        assert_eq!(t.end, End::CloseNotify, "run {i}");
        assert_clean(&l.next_session(WAIT), &format!("run {i}"));
    }
    // a larger reply, still written at once and the app gone
    let dir = scratch("reply-at-exit");
    let (file, want) = payload::file(&dir, "reply", 33, 512 * 1024);
    let l = serve(&[], &format!("exec cat '{}'", file.display()));
    for i in 0..10 {
        let t = talk(l.addr, &ClientOpts::default(), b"req\n").unwrap();
        assert_eq!(payload::sha256_hex(&t.reply), want, "large run {i}");
        assert_eq!(t.end, End::CloseNotify, "large run {i}");
        assert_clean(&l.next_session(WAIT), &format!("large run {i}"));
    }
}

/// The handshake timeout is exit 98 with a message, not SIGALRM.
#[test]
fn handshake_timeout_is_98_with_message() {
    for opts in [
        &["-K", "300"][..],
        &["-K300"][..],
        &["--handshake-timeout=300ms"][..],
    ] {
        let l = serve(opts, "echo ran");
        let s0 = l.connect(); // connect and send nothing
        let s = l.next_session(Duration::from_secs(10));
        drop(s0);
        assert_eq!(s.code(), 98, "{opts:?}: {}", s.stderr_str());
        assert!(!s.killed);
        assert!(
            s.elapsed >= Duration::from_millis(250) && s.elapsed < Duration::from_secs(5),
            "{opts:?}: ended after {:?}",
            s.elapsed
        );
        assert!(
            one_fatal_line(&s.stderr_str(), "tlsd"),
            "{}",
            s.stderr_str()
        );
    }
}

#[test]
fn slowloris_partial_client_hello_times_out() {
    let l = serve(&["-K", "400"], "echo ran");
    let mut s0 = l.connect();
    // a TLS record header announcing a ClientHello that never completes
    s0.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .unwrap();
    let s = l.next_session(Duration::from_secs(10));
    assert_eq!(s.code(), 98, "{}", s.stderr_str());
    assert!(
        one_fatal_line(&s.stderr_str(), "tlsd"),
        "{}",
        s.stderr_str()
    );
}

/// After one side closes, no stale poll result (no exit 111).
/// Both orders, repeated.
#[test]
fn close_orders_never_111() {
    // the client closes first while the app is still writing
    let dir = scratch("close-orders");
    let (file, want) = payload::file(&dir, "reply", 66, 256 * 1024);
    let l = serve(
        &[],
        &format!("cat '{}' & cat >/dev/null; wait", file.display()),
    );
    for i in 0..20 {
        let t = talk(l.addr, &ClientOpts::default(), b"x").unwrap();
        assert_eq!(payload::sha256_hex(&t.reply), want, "client-first run {i}");
        assert_clean(&l.next_session(WAIT), &format!("client-first run {i}"));
    }
    // the app closes its output first, keeps reading; the client sends after that
    let l = serve(&[], "printf early; exec 1>&-; exec sha256sum >&2");
    for i in 0..20 {
        let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
        let (reply, end) = c.read_to_end();
        assert_eq!(reply, b"early", "app-first run {i}");
        assert_eq!(end, End::CloseNotify);
        let data = payload::bytes(i, 100_000);
        c.write_all(&data).unwrap();
        c.half_close().unwrap();
        let s = l.next_session(WAIT);
        assert_clean(&s, &format!("app-first run {i}"));
        assert!(
            s.stderr_str().contains(&payload::sha256_hex(&data)),
            "app-first run {i}: data after the app's EOF was lost: {}",
            s.stderr_str()
        );
    }
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Processes of the tlsd binary in process group `pgid` that hold a socket.
fn engines_in_group(pgid: u32) -> Vec<u32> {
    let tlsd = stls_tests::tlsd().canonicalize().expect("tlsd path");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        if std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            != Some(tlsd.as_path())
        {
            continue;
        }
        let has_socket = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|rd| {
                rd.flatten().any(|f| {
                    std::fs::read_link(f.path())
                        .map(|t| t.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false);
        if has_socket {
            out.push(pid);
        }
    }
    out
}

/// TLS_UID/TLS_GID drop uid, gid and the supplementary groups of
/// the engine; the app keeps the original credentials.
#[test]
fn privilege_drop_with_setgroups() {
    if !stls_tests::bins::is_root() {
        skip("needs root");
        return;
    }
    let mut spawn = Spawn::tlsd(
        &sh_args(
            &[],
            "echo \"uid=$(id -u) groups=$(id -G)\"; read x; echo bye",
        ),
        &ec_env(),
    )
    .env("TLS_UID", "65534")
    .env("TLS_GID", "65534");
    spawn.groups = Some(vec![4242, 27]);
    let l = TinyListener::start(spawn);
    let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
    let pid = l.next_started(WAIT);
    let mut line = Vec::new();
    while !line.ends_with(b"\n") {
        let mut b = [0u8; 256];
        let n = c.read_some(&mut b).expect("the app's first line");
        line.extend_from_slice(&b[..n]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    assert!(line.starts_with("uid=0 "), "the app must keep root: {line}");
    assert!(line.contains("4242"), "the app keeps its groups: {line}");
    // the handshake is done and the app runs: inspect the engine
    let engines = engines_in_group(pid);
    assert!(
        !engines.is_empty(),
        "no tlsd process holding the socket found"
    );
    for e in &engines {
        assert_eq!(
            status_field(*e, "Uid").as_deref(),
            Some("65534 65534 65534 65534"),
            "pid {e}"
        );
        assert_eq!(
            status_field(*e, "Gid").as_deref(),
            Some("65534 65534 65534 65534"),
            "pid {e}"
        );
        let groups = status_field(*e, "Groups").unwrap_or_default();
        assert!(
            groups.is_empty() || groups == "65534",
            "engine pid {e} keeps supplementary groups: {groups:?}"
        );
    }
    c.write_all(b"go\n").unwrap();
    c.half_close().unwrap();
    let (rest, end) = c.read_to_end();
    assert_eq!(rest, b"bye\n");
    assert_eq!(end, End::CloseNotify);
    assert_clean(&l.next_session(WAIT), "privilege drop with setgroups");
}

/// The app starts only after a successful handshake.
#[test]
fn app_never_starts_before_handshake() {
    let dir = scratch("app-after-handshake");
    let marker = peers::marker(&dir);
    let script = format!("touch '{}'; echo ran", marker.display());
    let l = serve(&["-K", "500"], &script);
    // no handshake at all
    let s0 = l.connect();
    let s = l.next_session(Duration::from_secs(10));
    drop(s0);
    assert_eq!(s.code(), 98);
    // a failed handshake (client rejects the server's certificate)
    let o = ClientOpts {
        ca: Some(pki().untrusted_ca.clone()),
        ..Default::default()
    };
    assert!(talk(l.addr, &o, b"").is_err());
    let s = l.next_session(Duration::from_secs(10));
    assert_eq!(s.code(), 97, "{}", s.stderr_str());
    thread::sleep(Duration::from_millis(100));
    assert!(!marker.exists(), "the app ran without a handshake");
    // and after a good one it runs, with the session's variables
    let t = talk(l.addr, &ClientOpts::default(), b"").unwrap();
    assert_eq!(t.text(), "ran\n");
    assert!(marker.exists());
    assert_clean(&l.next_session(WAIT), "app after the handshake");
}

// ------------------------------------------------------------------ exit codes and messages

#[test]
fn exit_status_is_the_childs() {
    for (script, want) in [
        ("exit 0", 0),
        ("exit 7", 7),
        ("exit 99", 99),
        ("kill -TERM $$", 143),
        ("kill -KILL $$", 137),
    ] {
        let l = serve(&[], script);
        let _ = talk(l.addr, &ClientOpts::default(), b"");
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), want, "{script}: {}", s.stderr_str());
    }
}

#[test]
fn missing_certfile_or_keyfile_is_100() {
    let p = pki();
    for env in [
        vec![("KEYFILE", p.ec.key.as_path())],
        vec![("CERTFILE", p.ec.cert.as_path())],
        vec![],
    ] {
        let l = serve_with(&[], "echo ran", &env);
        assert!(plain_client(&l, b"").is_empty());
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 100, "{env:?}: {}", s.stderr_str());
        assert!(
            one_fatal_line(&s.stderr_str(), "tlsd"),
            "{}",
            s.stderr_str()
        );
    }
}

#[test]
fn bad_key_or_cert_is_96() {
    let p = pki();
    let dir = scratch("badkey");
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.join("missing.key");
    let dir_as_file = dir.clone();
    let cases: Vec<(&str, &Path, &Path)> = vec![
        ("nonexistent key", &p.ec.cert, &missing),
        ("garbage key", &p.ec.cert, &garbage),
        ("key is a directory", &p.ec.cert, &dir_as_file),
        ("mismatched key", &p.ec.cert, &p.rsa.key),
        ("mismatched key 2", &p.a.cert, &p.ec.key),
        ("garbage cert", &garbage, &p.ec.key),
        ("nonexistent cert", &missing, &p.ec.key),
    ];
    for (what, cert, key) in cases {
        let l = serve_with(&[], "echo ran", &[("CERTFILE", cert), ("KEYFILE", key)]);
        assert!(plain_client(&l, b"").is_empty());
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 96, "{what}: {}", s.stderr_str());
        assert!(
            one_fatal_line(&s.stderr_str(), "tlsd"),
            "{what}: {}",
            s.stderr_str()
        );
    }
}

#[test]
fn garbage_or_plain_text_client_is_97_one_line() {
    let l = serve(&[], "echo ran");
    for bytes in [
        &b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"[..],
        &b"EHLO example.com\r\n"[..],
        &payload::bytes(9, 4096)[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
    ] {
        let out = plain_client(&l, bytes);
        assert!(!String::from_utf8_lossy(&out).contains("ran"));
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 97, "{:?}: {}", &bytes[..4], s.stderr_str());
        assert!(
            one_fatal_line(&s.stderr_str(), "tlsd"),
            "exactly one `tlsd: fatal:` line expected: {:?}",
            s.stderr_str()
        );
    }
}

#[test]
fn usage_errors_are_100() {
    for args in [
        &["--no-such-option", "--", "true"][..],
        &["-K", "not-a-number", "--", "true"][..],
        &["-k", "7", "--", "true"][..],
        &[][..], // no prog
    ] {
        let mut c = Command::new(stls_tests::tlsd());
        c.args(args).env_clear();
        for (k, v) in ec_env() {
            c.env(k, v);
        }
        let o = proc::run(&mut c, None, WAIT);
        assert_eq!(o.code(), 100, "{args:?}: {}", o.stderr_str());
        assert!(
            o.stderr_str().starts_with("tlsd: "),
            "{args:?}: {}",
            o.stderr_str()
        );
    }
}

#[test]
fn help_and_version() {
    for a in ["-h", "--help"] {
        let o = proc::run(Command::new(stls_tests::tlsd()).arg(a), None, WAIT);
        assert_eq!(o.code(), 0, "{a}");
        assert!(o.stdout_str().contains("tlsd"), "{a}");
    }
    for a in ["-V", "--version"] {
        let o = proc::run(Command::new(stls_tests::tlsd()).arg(a), None, WAIT);
        assert_eq!(o.code(), 0, "{a}");
        assert!(
            o.stdout_str().contains(env!("CARGO_PKG_VERSION")),
            "{a}: {}",
            o.stdout_str()
        );
    }
}

/// Under inetd `nowait` the socket is on fd 2 as well: messages must not enter the stream.
#[test]
fn inetd_nowait_messages_stay_out_of_the_stream() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let (srv, _) = l.accept().unwrap();
    let mut c = Command::new(stls_tests::tlsd());
    c.args(sh_args(&[], "echo ran")).env_clear();
    for (k, v) in ec_env() {
        c.env(k, v);
    }
    c.stdin(Stdio::from(std::os::fd::OwnedFd::from(
        srv.try_clone().unwrap(),
    )))
    .stdout(Stdio::from(std::os::fd::OwnedFd::from(
        srv.try_clone().unwrap(),
    )))
    .stderr(Stdio::from(std::os::fd::OwnedFd::from(srv)));
    let mut child = proc::spawn(&mut c);
    drop(c);
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = client.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = client.read_to_end(&mut out);
    let st = proc::wait_or_kill(&mut child, WAIT, "tlsd under inetd");
    assert_eq!(proc::exit_code(st), 97);
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("tlsd"),
        "a message went into the stream: {text:?}"
    );
}

#[test]
fn idle_timeout_closes_as_at_local_eof() {
    let l = serve(&["--idle-timeout=500ms"], "exec cat");
    let mut c = client::connect(l.addr, &ClientOpts::default()).unwrap();
    c.write_all(b"x").unwrap();
    assert_eq!(c.read_exact(1).unwrap(), b"x");
    let t0 = Instant::now();
    let (rest, end) = c.read_to_end();
    assert!(rest.is_empty());
    assert_eq!(end, End::CloseNotify);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(c);
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 0, "the exit is the child's: {}", s.stderr_str());
}
