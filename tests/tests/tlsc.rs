//! tlsc end to end: against openssl s_server, stunnel4, socat,
//! a Python ssl server and tlsd; under tcpclient and with the network on fd 6/7 as
//! tcpclient gives it; integrity by hash with half-close; verification fails closed;
//! TLS < 1.2 refused; a last handshake flight arriving with the server's FIN; a name
//! always verified, even without -k; the io and `ADDR PORT` forms; `-d`; options.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use stls_tests::client::{self, End, OneShotServer, ServerOpts};
use stls_tests::listener::{Spawn, TinyListener};
use stls_tests::payload::{self, MIB};
use stls_tests::peers::{self, one_fatal_line, Tls, Tlsc};
use stls_tests::pki::Pair;
use stls_tests::proc::{self, Outcome, Running};
use stls_tests::{pki, require, scratch, skip};

const WAIT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ helpers

fn pair_env(p: &'static Pair) -> Vec<(&'static str, &'static Path)> {
    vec![("CERTFILE", p.cert.as_path()), ("KEYFILE", p.key.as_path())]
}

/// tlsd serving `sh -c script` with `pair`, under the suite's listener.
fn tlsd_server(opts: &[&str], script: &str, pair: &'static Pair) -> TinyListener {
    let mut args: Vec<OsString> = opts.iter().map(OsString::from).collect();
    args.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    TinyListener::start(Spawn::tlsd(&args, &pair_env(pair)))
}

/// tlsc argv: `opts... -- /bin/sh -c script`.
fn prog(opts: &[&str], script: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = opts.iter().map(OsString::from).collect();
    v.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    v
}

fn assert_ok(o: &Outcome, what: &str) {
    assert_eq!(
        o.code(),
        0,
        "{what}: tlsc exit {}, stderr: {}",
        o.code(),
        o.stderr_str()
    );
}

/// tlsc fails closed: exit `code`, one `tlsc: fatal:` line, and the marker absent.
fn assert_fails_closed(o: &Outcome, code: i32, marker: &Path, what: &str) {
    assert_eq!(o.code(), code, "{what}: stderr {}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc"),
        "{what}: one `tlsc: fatal:` line expected: {:?}",
        o.stderr_str()
    );
    assert!(!marker.exists(), "{what}: prog ran");
    assert!(o.stdout.is_empty(), "{what}: output {:?}", o.stdout_str());
}

/// The client's script for uploads: send the file, half-close, print the reply.
fn upload_script(file: &Path) -> String {
    format!("cat '{}' >&7; exec 7>&-; cat <&6", file.display())
}

// ------------------------------------------------------------------ against tlsd

#[test]
fn against_tlsd_variables_and_exchange() {
    let l = tlsd_server(&[], "read l; echo \"server got $l\"", &pki().ec);
    let script = "echo hello >&7; exec 7>&-; cat <&6; \
                  echo \"proto=$SSL_PROTOCOL cipher=$SSL_CIPHER sni=${SSL_TLS_SNI_SERVERNAME-unset}\"; \
                  echo \"hash=$SSL_PEER_CERT_HASH\"; echo \"subject=$SSL_PEER_CERT_SUBJECT\"";
    let o = Tlsc::new(&prog(&["-k", "localhost"], script)).run(l.port(), None);
    assert_ok(&o, "tlsc vs tlsd");
    let out = o.stdout_str();
    assert!(out.starts_with("server got hello\n"), "{out}");
    assert!(out.contains("proto=TLSv1.3 cipher=TLS_"), "{out}");
    assert!(out.contains(&format!("hash={}\n", pki().ec.hash)), "{out}");
    assert!(out.contains("subject=CN=localhost,O=Test\n"), "{out}");
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 0, "tlsd: {}", s.stderr_str());
}

#[test]
fn sni_is_sent_for_names_not_for_ip_literals() {
    let l = tlsd_server(&[], "echo \"${SSL_TLS_SNI_SERVERNAME-unset}\"", &pki().ec);
    for (k, want) in [
        (Some("localhost"), "localhost"),
        (Some("tls.test"), "tls.test"),
        (Some("127.0.0.1"), "unset"),
        (None, "unset"),
    ] {
        let mut args = Vec::new();
        if let Some(k) = k {
            args.extend(["-k", k]);
        }
        let o = Tlsc::new(&prog(&args, "cat <&6")).run(l.port(), None);
        assert_ok(&o, &format!("-k {k:?}"));
        assert_eq!(o.stdout_str(), format!("{want}\n"), "-k {k:?}");
        let _ = l.next_session(WAIT);
    }
}

#[test]
fn integrity_64_mib_upload_with_half_close() {
    let dir = scratch("tlsc-up64");
    let (file, want) = payload::file(&dir, "up", 164, 64 * MIB);
    let l = tlsd_server(&[], "exec sha256sum", &pki().ec);
    let o = Tlsc::new(&prog(&["-k", "localhost"], &upload_script(&file))).run(l.port(), None);
    assert_ok(&o, "upload 64 MiB");
    assert_eq!(payload::sha256sum_word(&o.stdout), want);
    assert_eq!(l.next_session(WAIT).code(), 0);
}

#[test]
fn integrity_64_mib_download() {
    let dir = scratch("tlsc-down64");
    let (file, want) = payload::file(&dir, "down", 264, 64 * MIB);
    let l = tlsd_server(&[], &format!("exec cat '{}'", file.display()), &pki().ec);
    let o = Tlsc::new(&prog(&["-k", "localhost"], "exec sha256sum <&6")).run(l.port(), None);
    assert_ok(&o, "download 64 MiB");
    assert_eq!(payload::sha256sum_word(&o.stdout), want);
    assert_eq!(l.next_session(WAIT).code(), 0);
}

#[test]
fn half_close_both_ways_at_once() {
    // the server's reply depends on the whole request; the server also sends before reading
    let dir = scratch("tlsc-hc");
    let (up, up_hash) = payload::file(&dir, "up", 1, 3 * MIB);
    let (down, _) = payload::file(&dir, "down", 2, 3 * MIB);
    let l = tlsd_server(
        &[],
        &format!("cat '{}'; sha256sum", down.display()),
        &pki().ec,
    );
    // upload in the background (closing fd 7 when done) while reading everything
    let script = format!(
        "{{ cat '{up}' >&7; exec 7>&-; }} & exec 7>&-; sha256sum <&6 > '{dir}/got'; wait; cat '{dir}/got'",
        up = up.display(),
        dir = dir.display()
    );
    let o = Tlsc::new(&prog(&["-k", "localhost"], &script)).run(l.port(), None);
    assert_ok(&o, "half-close both ways");
    // what tlsc's app received: the file, then the hash line of the upload
    let mut want = Vec::new();
    want.extend(std::fs::read(&down).unwrap());
    want.extend(format!("{up_hash}  -\n").as_bytes());
    assert_eq!(
        payload::sha256sum_word(&o.stdout),
        payload::sha256_hex(&want)
    );
    assert_eq!(l.next_session(WAIT).code(), 0);
}

#[test]
fn under_tcpclient() {
    if !require("tcpclient") {
        return;
    }
    let l = tlsd_server(
        &[],
        "read l; echo \"server got $l over $SSL_PROTOCOL\"",
        &pki().ec,
    );
    let mut c = Command::new("tcpclient");
    c.args(["-RHl0", "127.0.0.1"])
        .arg(l.port().to_string())
        .arg(stls_tests::tlsc())
        .args(prog(
            &["-k", "localhost"],
            "echo hi >&7; exec 7>&-; cat <&6",
        ))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAFILE", &pki().ca);
    let o = proc::run(&mut c, None, WAIT);
    assert_ok(&o, "under tcpclient");
    assert_eq!(o.stdout_str(), "server got hi over TLSv1.3\n");
    assert_eq!(l.next_session(WAIT).code(), 0);
    // and without -k: tcpclient's TCPREMOTEIP is checked against the IP SANs
    let mut c = Command::new("tcpclient");
    c.args(["-RHl0", "127.0.0.1"])
        .arg(l.port().to_string())
        .arg(stls_tests::tlsc())
        .args(prog(&[], "echo hi >&7; exec 7>&-; cat <&6"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAFILE", &pki().ca);
    let o = proc::run(&mut c, None, WAIT);
    assert_ok(&o, "under tcpclient, no -k");
    assert_eq!(o.stdout_str(), "server got hi over TLSv1.3\n");
}

// ------------------------------------------------------------------ against other servers

#[test]
fn against_openssl_s_server() {
    if !require("openssl") {
        return;
    }
    for tls in Tls::both() {
        let (srv, port) = peers::s_server(&pki().ec, &[tls.openssl_flag()], b"from s_server\n");
        let script = "head -n1 <&6; echo from-tlsc >&7; exec 7>&-; echo \"proto=$SSL_PROTOCOL\"";
        let o = Tlsc::new(&prog(&["-k", "localhost"], script)).run(port, None);
        assert_ok(&o, &format!("s_server {tls:?}"));
        assert_eq!(
            o.stdout_str(),
            format!("from s_server\nproto={}\n", tls.name()),
            "{tls:?}"
        );
        let so = srv.finish_or_kill(Duration::from_secs(20));
        if let Some(so) = so {
            assert!(
                so.stdout_str().contains("from-tlsc"),
                "{tls:?}: {}",
                so.stdout_str()
            );
        } else {
            panic!("s_server {tls:?} did not end after the client closed");
        }
    }
    // integrity towards s_server (it prints what it receives)
    let dir = scratch("s_server-up");
    let (file, want) = payload::file(&dir, "up", 31, 4 * MIB);
    let (srv, port) = peers::s_server(&pki().rsa, &[], b"");
    let script = format!(
        "cat '{}' >&7; exec 7>&-; cat <&6 >/dev/null",
        file.display()
    );
    let o = Tlsc::new(&prog(&["-k", "localhost"], &script)).run(port, None);
    assert_ok(&o, "upload to s_server");
    let so = srv
        .finish_or_kill(Duration::from_secs(20))
        .expect("s_server ends");
    assert_eq!(
        payload::sha256_hex(&so.stdout),
        want,
        "bytes s_server received"
    );
}

#[test]
fn against_stunnel() {
    if !require("stunnel4") {
        return;
    }
    let dir = scratch("stunnel");
    let (up, up_hash) = payload::file(&dir, "up", 41, 4 * MIB);
    let (down, down_hash) = payload::file(&dir, "down", 42, 4 * MIB);
    for tls in Tls::both() {
        let (srv, port) = peers::stunnel(&pki().ec, &["sha256sum"], Some(tls), &dir);
        let o = Tlsc::new(&prog(&["-k", "localhost"], &upload_script(&up))).run(port, None);
        assert_ok(&o, &format!("stunnel upload {tls:?}"));
        assert_eq!(
            payload::sha256sum_word(&o.stdout),
            up_hash,
            "stunnel {tls:?}"
        );
        drop(srv);
        let down_s = down.display().to_string();
        let (srv, port) = peers::stunnel(&pki().rsa, &["cat", &down_s], Some(tls), &dir);
        // The app keeps its side open until the download is done: under TLS 1.2 stunnel
        // answers a close_notify with a full close (RFC 5246 7.2.1) and drops what it
        // had still to send, so an early half-close would truncate the download.
        let o = Tlsc::new(&prog(
            &["-k", "localhost"],
            "sha256sum <&6; echo \"$SSL_PROTOCOL\"; exec 7>&-",
        ))
        .run(port, None);
        assert_ok(&o, &format!("stunnel download {tls:?}"));
        assert_eq!(
            payload::sha256sum_word(&o.stdout),
            down_hash,
            "stunnel {tls:?}"
        );
        assert!(o.stdout_str().ends_with(&format!("{}\n", tls.name())));
        drop(srv);
    }
}

#[test]
fn against_socat() {
    if !require("socat") {
        return;
    }
    let dir = scratch("socat");
    let (up, up_hash) = payload::file(&dir, "up", 51, 4 * MIB);
    for tls in Tls::both() {
        let (srv, port) = peers::socat(&pki().ec, "sha256sum", tls);
        let script = format!("{}; echo \"$SSL_PROTOCOL\"", upload_script(&up));
        let o = Tlsc::new(&prog(&["-k", "localhost"], &script)).run(port, None);
        assert_ok(&o, &format!("socat {tls:?}"));
        assert_eq!(payload::sha256sum_word(&o.stdout), up_hash, "socat {tls:?}");
        assert!(o.stdout_str().ends_with(&format!("{}\n", tls.name())));
        let so = srv
            .finish_or_kill(Duration::from_secs(20))
            .expect("socat ends");
        assert_eq!(so.code(), 0, "socat: {}", so.stderr_str());
    }
}

#[test]
fn against_python_ssl_server() {
    if !require("python3") {
        return;
    }
    let dir = scratch("python-srv");
    let (up, up_hash) = payload::file(&dir, "up", 61, 4 * MIB);
    let (down, down_hash) = payload::file(&dir, "down", 62, 4 * MIB);
    for tls in Tls::both() {
        let (srv, port) = peers::python_server(&pki().ec, tls, "hash");
        let o = Tlsc::new(&prog(&["-k", "localhost"], &upload_script(&up))).run(port, None);
        assert_ok(&o, &format!("python hash {tls:?}"));
        assert_eq!(
            payload::sha256sum_word(&o.stdout),
            up_hash,
            "python {tls:?}"
        );
        let so = srv.finish(Duration::from_secs(20));
        assert_eq!(so.code(), 0, "python server: {}", so.stderr_str());
        assert!(so.stdout_str().contains(&format!("PROTO {}", tls.name())));
        let (srv, port) =
            peers::python_server(&pki().rsa, tls, &format!("send:{}", down.display()));
        let o = Tlsc::new(&prog(&["-k", "localhost"], "exec 7>&-; sha256sum <&6")).run(port, None);
        assert_ok(&o, &format!("python send {tls:?}"));
        assert_eq!(
            payload::sha256sum_word(&o.stdout),
            down_hash,
            "python {tls:?}"
        );
        let so = srv.finish(Duration::from_secs(20));
        assert_eq!(so.code(), 0, "python server: {}", so.stderr_str());
    }
}

// ------------------------------------------------------------------ security: fail closed

fn one_shot(pair: &Pair) -> OneShotServer {
    OneShotServer::start(ServerOpts::new(pair), Box::new(|_| Vec::new()))
}

/// Run tlsc with a marker-touching prog against a server with `pair`.
fn attempt(pair: &Pair, opts: &[&str], env: &[(&str, &Path)]) -> (Outcome, std::path::PathBuf) {
    let dir = scratch("attempt");
    let marker = peers::marker(&dir);
    let srv = one_shot(pair);
    let mut t = Tlsc::new(&prog(
        opts,
        &format!("touch '{}'; cat <&6", marker.display()),
    ));
    for (k, v) in env {
        t = t.without_env(k).env(k, v);
    }
    let o = t.run(srv.port(), None);
    let _ = srv.report(WAIT);
    (o, marker)
}

#[test]
fn untrusted_chain_fails_closed() {
    let (o, m) = attempt(&pki().untrusted, &["-k", "localhost"], &[]);
    assert_fails_closed(&o, 97, &m, "untrusted chain");
}

#[test]
fn expired_certificate_fails_closed() {
    let (o, m) = attempt(&pki().expired, &["-k", "localhost"], &[]);
    assert_fails_closed(&o, 97, &m, "expired certificate");
}

#[test]
fn wrong_name_fails_closed() {
    for name in ["wrong.test", "a.test", "localhost.evil"] {
        let (o, m) = attempt(&pki().ec, &["-k", name], &[]);
        assert_fails_closed(&o, 97, &m, &format!("-k {name}"));
    }
}

#[test]
fn ip_without_matching_ip_san_fails_closed() {
    // a.test's certificate has no IP SAN: neither TCPREMOTEIP nor -k 127.0.0.1 may pass
    let (o, m) = attempt(&pki().a, &[], &[]);
    assert_fails_closed(&o, 97, &m, "TCPREMOTEIP without IP SAN");
    let (o, m) = attempt(&pki().a, &["-k", "127.0.0.1"], &[]);
    assert_fails_closed(&o, 97, &m, "-k 127.0.0.1 without IP SAN");
    // the standard certificate has IP:127.0.0.1 but not 10.9.8.7
    let (o, m) = attempt(&pki().ec, &["-k", "10.9.8.7"], &[]);
    assert_fails_closed(&o, 97, &m, "-k another IP");
}

#[test]
fn matching_ip_san_and_v4_mapped_remote_ip_pass() {
    for (opts, env) in [
        (vec![], vec![]),
        (vec!["-k", "127.0.0.1"], vec![]),
        (vec![], vec![("TCPREMOTEIP", "::ffff:127.0.0.1")]),
    ] {
        let l = tlsd_server(&[], "echo ok", &pki().ec);
        let mut t = Tlsc::new(&prog(&opts, "cat <&6"));
        for (k, v) in &env {
            t = t.env(k, v);
        }
        let o = t.run(l.port(), None);
        assert_ok(&o, &format!("{opts:?} {env:?}"));
        assert_eq!(o.stdout_str(), "ok\n");
    }
}

/// Without -k the client still checks a name; with no name at all
/// it refuses (100) unless --no-verify-name.
#[test]
fn no_name_no_connection() {
    let dir = scratch("no-name");
    let marker = peers::marker(&dir);
    let l = tlsd_server(&[], "echo ok", &pki().ec);
    let sock = TcpStream::connect(l.addr).unwrap();
    // no -k and no TCPREMOTEIP (Tlsc::spawn sets it only when absent: give an empty name)
    let mut c = Tlsc::new(&prog(&[], &format!("touch '{}'", marker.display()))).command();
    let fd = sock.as_raw_fd();
    proc::map_fds(&mut c, &[(fd, 6), (fd, 7)]);
    let r = Running::start(&mut c);
    drop(c);
    drop(sock);
    let o = r.finish(WAIT);
    assert_fails_closed(&o, 100, &marker, "no name to verify");
    // --no-verify-name lets it through
    let o = Tlsc::new(&prog(&["--no-verify-name"], "cat <&6"))
        .without_env("TCPREMOTEIP")
        .run(l.port(), None);
    assert_ok(&o, "--no-verify-name");
    assert_eq!(o.stdout_str(), "ok\n");
    // and a name that does not match fails even though the chain is good
    let (o, m) = attempt(&pki().b, &[], &[]);
    assert_fails_closed(&o, 97, &m, "no -k, cert for another name");
}

#[test]
fn no_verify_cert_accepts_untrusted() {
    let l = tlsd_server(&[], "echo ok", &pki().untrusted);
    let o =
        Tlsc::new(&prog(&["-k", "localhost", "--no-verify-cert"], "cat <&6")).run(l.port(), None);
    assert_ok(&o, "--no-verify-cert");
    assert_eq!(o.stdout_str(), "ok\n");
}

#[test]
fn trust_sources_cafile_cadir_chain_and_system() {
    let p = pki();
    let ok = |env: &[(&str, &Path)], pair: &'static Pair, what: &str, want: i32| {
        let l = tlsd_server(&[], "echo ok", pair);
        let mut t = Tlsc::bare(&prog(&["-k", "localhost"], "cat <&6"));
        for (k, v) in env {
            t = t.env(k, v);
        }
        let o = t.run(l.port(), None);
        assert_eq!(o.code(), want, "{what}: {}", o.stderr_str());
        if want == 0 {
            assert_eq!(o.stdout_str(), "ok\n", "{what}");
        } else {
            assert!(
                one_fatal_line(&o.stderr_str(), "tlsc"),
                "{what}: {}",
                o.stderr_str()
            );
        }
    };
    ok(&[("CAFILE", &p.ca)], &p.ec, "CAFILE", 0);
    ok(&[("CADIR", &p.cadir)], &p.ec, "CADIR", 0);
    ok(
        &[("CAFILE", &p.ca)],
        &p.chain,
        "chain sent by the server",
        0,
    );
    ok(
        &[("CADIR", &p.cadir), ("CAFILE", &p.untrusted_ca)],
        &p.ec,
        "CADIR wins over CAFILE",
        0,
    );
    ok(
        &[("SSL_CERT_FILE", &p.ca)],
        &p.ec,
        "system store + SSL_CERT_FILE",
        0,
    );
    ok(&[("SSL_CERT_DIR", &p.cadir)], &p.ec, "SSL_CERT_DIR", 0);
    ok(&[], &p.ec, "system store does not know the test CA", 97);
}

/// SPEC: the whole system bundle is never parsed per process. Distributions export
/// SSL_CERT_FILE naming it (this machine does): tlsc must not open it, and must still open
/// an SSL_CERT_FILE that is not the system bundle. Seen with strace.
#[test]
fn system_bundle_named_by_ssl_cert_file_is_not_parsed() {
    if !require("strace") {
        return;
    }
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let default = Path::new("/usr/lib/ssl/cert.pem");
    let same = match (
        std::fs::canonicalize(bundle),
        std::fs::canonicalize(default),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same && skip("no Debian system bundle at /etc/ssl/certs/ca-certificates.crt") {
        return;
    }
    let p = pki();
    let opened = |file: &Path, want: i32| -> String {
        let l = tlsd_server(&[], "echo ok", &p.ec);
        let sock = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
        let trace = scratch("strace").join("trace");
        let mut c = Command::new("strace");
        c.arg("-f")
            .arg("-qq")
            .args(["-e", "trace=open,openat", "-o"])
            .arg(&trace)
            .arg(stls_tests::bins::tlsc())
            .args(["-k", "localhost", "--", "/bin/sh", "-c", "cat <&6"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SSL_CERT_FILE", file);
        proc::map_fds(&mut c, &[(sock.as_raw_fd(), 6), (sock.as_raw_fd(), 7)]);
        let r = Running::start(&mut c);
        drop(sock);
        let o = r.finish(WAIT);
        let t = std::fs::read_to_string(&trace).expect("strace output");
        let name = file.to_string_lossy().into_owned();
        assert_eq!(o.code(), want, "SSL_CERT_FILE={name}: {}", o.stderr_str());
        t
    };
    // The system store does not know the test CA: 97, without the bundle being read ...
    let t = opened(bundle, 97);
    assert!(
        !t.contains("ca-certificates.crt"),
        "the system bundle was opened:\n{t}"
    );
    // ... while a file that is not the system bundle is loaded.
    let t = opened(&p.ca, 0);
    assert!(
        t.contains(&*p.ca.to_string_lossy()),
        "SSL_CERT_FILE was not opened:\n{t}"
    );
}

/// TLS 1.0 and 1.1 servers are refused; first shown to be reachable by a permissive
/// client, so that the test can fail. If the system OpenSSL cannot speak TLS 1.0/1.1 at
/// all (even at SECLEVEL=0), the refusal is trivially true and the test says so.
#[test]
fn tls10_tls11_servers_refused() {
    if !require("openssl") {
        return;
    }
    for (flag, name) in [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")] {
        let extra = [flag, "-cipher", "DEFAULT@SECLEVEL=0"];
        // the permissive client negotiates the old version
        let (srv, port) = peers::s_server(&pki().ec, &extra, b"");
        let mut c = Command::new("openssl");
        c.args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args([flag, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile"])
            .arg(&pki().ca);
        let o = proc::run(&mut c, Some(b""), WAIT);
        drop(srv);
        if !peers::negotiated(&o.stdout_str(), name) {
            skip(&format!(
                "the system OpenSSL cannot negotiate {name} even at SECLEVEL=0, so tlsc's refusal \
                 cannot be shown to matter: {}",
                o.stderr_str().lines().last().unwrap_or("")
            ));
            continue;
        }
        // tlsc refuses it
        let dir = scratch("oldtls");
        let marker = peers::marker(&dir);
        let (srv, port) = peers::s_server(&pki().ec, &extra, b"");
        let o = Tlsc::new(&prog(
            &["-k", "localhost"],
            &format!("touch '{}'", marker.display()),
        ))
        .run(port, None);
        drop(srv);
        assert_fails_closed(&o, 97, &marker, name);
    }
}

// ------------------------------------------------------------------ last flight and FIN in one read

/// The server's last handshake flight and its FIN in one read
/// (`tlsd -- true`): tlsc runs its app, which sees a clean EOF, 20 times of 20.
#[test]
fn server_closing_at_once_20_of_20() {
    let l = tlsd_server(&[], "true", &pki().ec);
    for i in 0..20 {
        let o = Tlsc::new(&prog(
            &["-k", "localhost"],
            "cat <&6; echo \"eof $SSL_PROTOCOL\"",
        ))
        .run(l.port(), None);
        assert_ok(&o, &format!("run {i}"));
        assert_eq!(o.stdout_str(), "eof TLSv1.3\n", "run {i}");
        assert_eq!(l.next_session(WAIT).code(), 0, "tlsd run {i}");
    }
    let l = tlsd_server(&[], "echo bye", &pki().ec);
    for i in 0..10 {
        let o = Tlsc::new(&prog(&["-k", "localhost"], "cat <&6")).run(l.port(), None);
        assert_ok(&o, &format!("echo bye run {i}"));
        assert_eq!(o.stdout_str(), "bye\n", "run {i}");
    }
}

// ------------------------------------------------------------------ options

#[test]
fn exit_status_is_the_childs() {
    let l = tlsd_server(&[], "cat >/dev/null", &pki().ec);
    for (script, want) in [("exit 0", 0), ("exit 5", 5), ("kill -TERM $$", 143)] {
        let o = Tlsc::new(&prog(&["-k", "localhost"], script)).run(l.port(), None);
        assert_eq!(o.code(), want, "{script}: {}", o.stderr_str());
    }
}

#[test]
fn client_certificate_with_y() {
    let p = pki();
    let l = TinyListener::start(
        Spawn::tlsd(
            &[
                "-y",
                "--",
                "/bin/sh",
                "-c",
                "echo \"$SSL_PEER_CERT_SUBJECT\"",
            ],
            &pair_env(&p.ec),
        )
        .env("CAFILE", &p.ca),
    );
    for opt in ["-y", "--client-cert"] {
        let o = Tlsc::new(&prog(&["-k", "localhost", opt], "cat <&6"))
            .env("CERTFILE", &p.client.cert)
            .env("KEYFILE", &p.client.key)
            .run(l.port(), None);
        assert_ok(&o, opt);
        assert_eq!(o.stdout_str(), "CN=client,O=Test\n");
        assert_eq!(l.next_session(WAIT).code(), 0);
    }
}

#[test]
fn keep_and_strip_secret_variables() {
    let p = pki();
    let l = tlsd_server(&[], "true", &p.ec);
    let run = |opts: &[&str]| -> BTreeMap<String, String> {
        let mut args = vec!["-k", "localhost"];
        args.extend(opts);
        let o = Tlsc::new(&prog(&args, "env"))
            .env("CADIR", &p.cadir)
            .env("CERTFILE", &p.client.cert)
            .env("KEYFILE", &p.client.key)
            .run(l.port(), None);
        assert_ok(&o, &format!("{opts:?}"));
        o.stdout_str()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for opts in [&[][..], &["-z"][..], &["--no-keep"][..]] {
        let env = run(opts);
        assert!(env.contains_key("SSL_PROTOCOL"));
        for k in ["CAFILE", "CADIR", "CERTFILE", "KEYFILE"] {
            assert!(!env.contains_key(k), "{opts:?}: {k} leaked");
        }
    }
    for opts in [&["-Z"][..], &["--keep"][..]] {
        let env = run(opts);
        for k in ["CAFILE", "CADIR", "CERTFILE", "KEYFILE"] {
            assert!(env.contains_key(k), "{opts:?}: {k} not kept");
        }
    }
}

#[test]
fn close_notify_options_seen_by_the_server() {
    for (opts, want) in [
        (&[][..], End::CloseNotify),
        (&["-S"][..], End::CloseNotify),
        (&["-s"][..], End::Eof),
        (&["--no-close-notify"][..], End::Eof),
    ] {
        let srv = OneShotServer::start(
            ServerOpts::new(&pki().ec),
            Box::new(|s| {
                let (got, end) = client::server_read_to_end(s);
                let _ = s.shutdown();
                format!("{end:?}|{}", String::from_utf8_lossy(&got)).into_bytes()
            }),
        );
        let mut args = vec!["-k", "localhost"];
        args.extend(opts);
        let o = Tlsc::new(&prog(&args, "echo data >&7")).run(srv.port(), None);
        assert_ok(&o, &format!("{opts:?}"));
        let rep = srv.report(WAIT);
        let got = String::from_utf8(rep.result.expect("handshake")).unwrap();
        assert_eq!(got, format!("{want:?}|data\n"), "{opts:?}");
    }
}

#[test]
fn enforce_close_notify() {
    // tlsd -s closes without close_notify
    let l = tlsd_server(&["-s"], "echo hi", &pki().ec);
    for opts in [&[][..], &["-j"][..]] {
        let mut args = vec!["-k", "localhost"];
        args.extend(opts);
        let o = Tlsc::new(&prog(&args, "cat <&6")).run(l.port(), None);
        assert_ok(&o, &format!("{opts:?}"));
        assert_eq!(o.stdout_str(), "hi\n");
    }
    for opts in [&["-J"][..], &["--enforce-close-notify"][..]] {
        let mut args = vec!["-k", "localhost"];
        args.extend(opts);
        let o = Tlsc::new(&prog(&args, "cat <&6; sleep 1")).run(l.port(), None);
        assert_eq!(o.code(), 98, "{opts:?}: {}", o.stderr_str());
        assert!(
            one_fatal_line(&o.stderr_str(), "tlsc"),
            "{}",
            o.stderr_str()
        );
    }
}

#[test]
fn handshake_timeout_is_98() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let dir = scratch("hs-timeout");
    let marker = peers::marker(&dir);
    for opts in [&["-K", "300"][..], &["--handshake-timeout=300ms"][..]] {
        let mut args = vec!["-k", "localhost"];
        args.extend(opts);
        let t0 = std::time::Instant::now();
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (held, _) = l.accept().unwrap(); // accepted, never answers
        let r = Tlsc::new(&prog(&args, &format!("touch '{}'", marker.display())))
            .spawn(sock, Stdio::null());
        let o = r.finish(WAIT);
        drop(held);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_fails_closed(&o, 98, &marker, &format!("{opts:?}"));
    }
}

#[test]
fn network_fd_options_and_missing_fds() {
    let l = tlsd_server(&[], "echo ok", &pki().ec);
    // the network on fds 8 and 9
    let sock = TcpStream::connect(l.addr).unwrap();
    let mut c = Tlsc::new(&prog(
        &["-k", "localhost", "-6", "8", "-7", "9"],
        "echo \"$SSL_PROTOCOL\"",
    ))
    .command();
    let fd = sock.as_raw_fd();
    proc::map_fds(&mut c, &[(fd, 8), (fd, 9)]);
    let o = proc::run(&mut c, None, WAIT);
    drop(sock);
    assert_ok(&o, "-6 8 -7 9");
    assert_eq!(o.stdout_str(), "TLSv1.3\n");
    // long forms
    let sock = TcpStream::connect(l.addr).unwrap();
    let mut c = Tlsc::new(&prog(
        &["-k", "localhost", "--read-fd=8", "--write-fd=9"],
        "echo \"$SSL_PROTOCOL\"",
    ))
    .command();
    let fd = sock.as_raw_fd();
    proc::map_fds(&mut c, &[(fd, 8), (fd, 9)]);
    let o = proc::run(&mut c, None, WAIT);
    drop(sock);
    assert_ok(&o, "--read-fd/--write-fd");
    // no network fds at all: 111
    let o = proc::run(
        &mut Tlsc::new(&prog(&["-k", "localhost"], "true")).command(),
        None,
        WAIT,
    );
    assert_eq!(o.code(), 111, "missing fd 6/7: {}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc"),
        "{}",
        o.stderr_str()
    );
    // bad fd numbers: usage
    for args in [&["-6", "2"][..], &["-6", "8", "-7", "8"][..]] {
        let mut a = vec!["-k", "localhost"];
        a.extend(args);
        let o = proc::run(&mut Tlsc::new(&prog(&a, "true")).command(), None, WAIT);
        assert_eq!(o.code(), 100, "{args:?}: {}", o.stderr_str());
    }
}

// ------------------------------------------------------------------ io form, ADDR PORT form

/// A tlsc whose stdin we hold and whose stdout we read as it comes.
struct Streaming {
    run: Running,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<Vec<u8>>,
}

impl Streaming {
    fn start(mut cmd: Command, sock: Option<TcpStream>) -> Streaming {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(s) = &sock {
            let fd = s.as_raw_fd();
            proc::map_fds(&mut cmd, &[(fd, 6), (fd, 7)]);
        }
        let mut child = proc::spawn(&mut cmd);
        drop(cmd);
        drop(sock);
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Vec::new());
                        break;
                    }
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        // stderr collected at the end: wrap in Running for bounded waits
        let run = Running::adopt(child);
        Streaming {
            run,
            stdin,
            out: rx,
        }
    }

    /// Read stdout until EOF (bounded); returns the bytes.
    fn read_to_eof(&self, timeout: Duration) -> Vec<u8> {
        let deadline = std::time::Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.out.recv_timeout(left) {
                Ok(v) if v.is_empty() => return all,
                Ok(v) => all.extend(v),
                Err(_) => panic!("no EOF on tlsc's stdout within {timeout:?}"),
            }
        }
    }
}

#[test]
fn io_form_integrity_and_client_half_close() {
    let l = tlsd_server(&[], "exec sha256sum", &pki().ec);
    let data = payload::bytes(71, 8 * MIB + 3);
    let sock = TcpStream::connect(l.addr).unwrap();
    let mut s = Streaming::start(Tlsc::new(&["-k", "localhost"]).command(), Some(sock));
    let mut stdin = s.stdin.take().unwrap();
    let d2 = data.clone();
    let w = thread::spawn(move || {
        stdin.write_all(&d2).expect("writing tlsc's stdin");
        // dropping stdin = our half-close
    });
    let out = s.read_to_eof(WAIT);
    w.join().unwrap();
    assert_eq!(payload::sha256sum_word(&out), payload::sha256_hex(&data));
    let o = s.run.finish(WAIT);
    assert_ok(&o, "io form");
    assert_eq!(l.next_session(WAIT).code(), 0);
}

#[test]
fn io_form_server_closes_first_stdin_still_open() {
    let dir = scratch("io-server-first");
    let (file, want) = payload::file(&dir, "down", 72, 2 * MIB);
    let l = tlsd_server(&[], &format!("exec cat '{}'", file.display()), &pki().ec);
    let sock = TcpStream::connect(l.addr).unwrap();
    let mut s = Streaming::start(Tlsc::new(&["-k", "localhost"]).command(), Some(sock));
    // everything arrives and stdout reaches EOF while we still hold stdin open
    let out = s.read_to_eof(WAIT);
    assert_eq!(payload::sha256_hex(&out), want);
    let mut stdin = s.stdin.take().unwrap();
    let _ = stdin.write_all(b"late data the server app will never read\n");
    drop(stdin);
    let o = s.run.finish(WAIT);
    assert_ok(&o, "io form, server first");
}

fn addr_port_cmd(opts: &[&str], addr: &str, port: u16) -> Command {
    let mut args: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
    args.push(addr.to_string());
    args.push(port.to_string());
    Tlsc::new(&args).command()
}

#[test]
fn addr_port_form_integrity_both_directions() {
    let l = tlsd_server(&[], "exec sha256sum", &pki().ec);
    let data = payload::bytes(81, 4 * MIB + 1);
    for opts in [&["-k", "localhost"][..], &[][..]] {
        let mut c = addr_port_cmd(opts, "127.0.0.1", l.port());
        let o = proc::run(&mut c, Some(&data), WAIT);
        assert_ok(&o, &format!("ADDR PORT {opts:?}"));
        assert_eq!(
            payload::sha256sum_word(&o.stdout),
            payload::sha256_hex(&data)
        );
        assert_eq!(l.next_session(WAIT).code(), 0);
    }
    // the server closes first, our stdin still open
    let dir = scratch("addrport-down");
    let (file, want) = payload::file(&dir, "down", 82, 2 * MIB);
    let l = tlsd_server(&[], &format!("exec cat '{}'", file.display()), &pki().ec);
    let mut s = Streaming::start(
        addr_port_cmd(&["-k", "localhost"], "127.0.0.1", l.port()),
        None,
    );
    let out = s.read_to_eof(WAIT);
    assert_eq!(payload::sha256_hex(&out), want);
    drop(s.stdin.take());
    let o = s.run.finish(WAIT);
    assert_ok(&o, "ADDR PORT, server first");
}

#[test]
fn addr_port_form_ipv6() {
    if TcpListener::bind("[::1]:0").is_err() {
        skip("no IPv6 loopback");
        return;
    }
    let mut args: Vec<OsString> = vec!["--".into(), "/bin/sh".into(), "-c".into()];
    args.push("echo \"v6 $SSL_PROTOCOL\"".into());
    let l = TinyListener::start_on("[::1]:0", Spawn::tlsd(&args, &pair_env(&pki().ec)));
    let mut c = addr_port_cmd(&[], "::1", l.port());
    let o = proc::run(&mut c, Some(b""), WAIT);
    assert_ok(&o, "ADDR PORT ::1");
    assert_eq!(o.stdout_str(), "v6 TLSv1.3\n");
}

#[test]
fn addr_port_form_wrong_ip_and_refused() {
    // a certificate without IP SANs: ADDR stands for TCPREMOTEIP and must not verify
    let srv = one_shot(&pki().a);
    let o = proc::run(
        &mut addr_port_cmd(&[], "127.0.0.1", srv.port()),
        Some(b"x"),
        WAIT,
    );
    assert_eq!(o.code(), 97, "{}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc"),
        "{}",
        o.stderr_str()
    );
    assert!(o.stdout.is_empty());
    // nothing listens: 111 with a message
    let port = stls_tests::listener::free_port("127.0.0.1");
    let o = proc::run(
        &mut addr_port_cmd(&["-k", "localhost"], "127.0.0.1", port),
        Some(b"x"),
        WAIT,
    );
    assert_eq!(o.code(), 111, "{}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc"),
        "{}",
        o.stderr_str()
    );
}

// ------------------------------------------------------------------ -d

/// Parse `K=V\0 ... \0` (a bare `K\0` = unset); `None` if not properly terminated.
fn parse_description(b: &[u8]) -> Option<BTreeMap<String, Option<String>>> {
    if b.len() < 2 || !b.ends_with(b"\0\0") {
        return None;
    }
    let body = &b[..b.len() - 1]; // drop the final terminator
    let mut m = BTreeMap::new();
    for item in body.split(|&c| c == 0).filter(|s| !s.is_empty()) {
        let s = String::from_utf8_lossy(item).into_owned();
        match s.split_once('=') {
            Some((k, v)) => m.insert(k.to_string(), Some(v.to_string())),
            None => m.insert(s, None),
        };
    }
    Some(m)
}

/// Run tlsc with `-d 3` (a pipe), return (outcome, bytes read from the pipe).
fn with_notification(opts: &[&str], port: u16, io_form: bool) -> (Outcome, Vec<u8>) {
    let (r_fd, w_fd) = proc::pipe();
    let mut args: Vec<String> = vec!["-d".into(), "3".into()];
    args.extend(opts.iter().map(|s| s.to_string()));
    let mut t = if io_form {
        Tlsc::new(&args)
    } else {
        let mut a = args.clone();
        a.extend(["--", "/bin/sh", "-c", "cat <&6 >/dev/null"].map(String::from));
        Tlsc::new(&a)
    };
    t.fds.push((w_fd.as_raw_fd(), 3));
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let reader = thread::spawn(move || {
        let mut f = std::fs::File::from(r_fd);
        let mut v = Vec::new();
        let _ = f.read_to_end(&mut v);
        v
    });
    let run = t.spawn(sock, Stdio::null());
    drop(w_fd);
    let o = run.finish(WAIT);
    let got = reader.join().expect("pipe reader");
    (o, got)
}

#[test]
fn notification_fd_success_description() {
    let l = tlsd_server(&[], "true", &pki().ec);
    for io_form in [false, true] {
        let (o, got) = with_notification(&["-k", "localhost"], l.port(), io_form);
        assert_ok(&o, &format!("-d io_form={io_form}"));
        assert!(got.len() <= 4096);
        let m = parse_description(&got)
            .unwrap_or_else(|| panic!("not K=V\\0...\\0\\0: {:?}", String::from_utf8_lossy(&got)));
        assert_eq!(
            m.get("SSL_PROTOCOL"),
            Some(&Some("TLSv1.3".to_string())),
            "{m:?}"
        );
        assert!(
            m.get("SSL_CIPHER")
                .and_then(|c| c.as_ref())
                .is_some_and(|c| c.starts_with("TLS_")),
            "{m:?}"
        );
        assert_eq!(
            m.get("SSL_PEER_CERT_HASH"),
            Some(&Some(pki().ec.hash.clone())),
            "{m:?}"
        );
        let _ = l.next_session(WAIT);
    }
}

#[test]
fn notification_fd_failure_closed_unwritten() {
    for io_form in [false, true] {
        let srv = one_shot(&pki().untrusted);
        let (o, got) = with_notification(&["-k", "localhost"], srv.port(), io_form);
        assert_eq!(o.code(), 97, "{}", o.stderr_str());
        assert!(
            got.is_empty(),
            "written on failure: {:?}",
            String::from_utf8_lossy(&got)
        );
        let _ = srv.report(WAIT);
    }
}

#[test]
fn notification_fd_write_failure_is_111() {
    let l = tlsd_server(&[], "true", &pki().ec);
    let (r_fd, w_fd) = proc::pipe();
    drop(r_fd); // nobody reads: the write fails with EPIPE
    let mut t = Tlsc::new(&["-d", "3", "-k", "localhost", "--", "true"]);
    t.fds.push((w_fd.as_raw_fd(), 3));
    let sock = TcpStream::connect(l.addr).unwrap();
    let run = t.spawn(sock, Stdio::null());
    drop(w_fd);
    let o = run.finish(WAIT);
    assert_eq!(o.code(), 111, "{}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc"),
        "{}",
        o.stderr_str()
    );
}
