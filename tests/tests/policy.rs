//! The TLS policy (stls(7), TLS POLICY): the hardened default seen from outside with
//! sslscan, testssl.sh and openssl s_client; each variable changing the handshake and
//! rejecting a bad value with 96; tlsc's strict host names; OCSP stapling, must-staple and
//! CRLs with a CA of their own whose responder is `openssl ocsp`.
//!
//! Every check that something is refused has a twin that shows the same probe accepting
//! what it should, so that a probe that sees nothing cannot pass for a refusal.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use stls_tests::listener::{Spawn, TinyListener};
use stls_tests::peers::{self, one_fatal_line, Tlsc};
use stls_tests::pki::Pair;
use stls_tests::proc::{self, Outcome};
use stls_tests::{pki, require, scratch};

const WAIT: Duration = Duration::from_secs(30);
const T: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ a CA with OCSP and CRLs

/// The files made by [`PKI_SCRIPT`] in one directory.
struct Ca {
    dir: PathBuf,
}

impl Ca {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// The pair `name.pem` / `name.key`.
    fn pair(&self, name: &str) -> Pair {
        Pair {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
            hash: String::new(),
            subject: String::new(),
            cn: String::new(),
        }
    }
}

/// `openssl ca` keeps the index an `openssl ocsp -index` responder answers from; `-revoke`
/// and `-gencrl` make the CRL. A stale response is made with the clock three days back.
const PKI_SCRIPT: &str = r#"set -eu
umask 077
mkdir -p certs
: > index.txt
echo 1000 > serial
echo 1000 > crlnumber
cat > ca.cnf <<'CNF'
[ca]
default_ca = CA_default
[CA_default]
dir = .
database = index.txt
new_certs_dir = certs
certificate = ca.pem
private_key = ca.key
serial = serial
crlnumber = crlnumber
default_md = sha256
default_days = 30
default_crl_days = 7
policy = policy_any
unique_subject = no
copy_extensions = none
[policy_any]
commonName = supplied
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[staple]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
tlsfeature = status_request
[partial]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:w*.example.test
[wildcard]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:*.example.test
[cnonly]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
[responder]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = OCSPSigning
CNF
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
ec ca
openssl req -config ca.cnf -new -x509 -key ca.key -out ca.pem -days 30 \
  -subj "/CN=stls policy CA" -extensions v3_ca
issue() { # name cn section
  ec "$1"
  openssl req -config ca.cnf -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  openssl ca -config ca.cnf -batch -notext -extensions "$3" -in "$1.csr" -out "$1.pem" 2>/dev/null
}
issue server localhost server
issue staple localhost staple
issue revoked localhost server
issue partial www.example.test partial
issue wildcard a.example.test wildcard
issue cnonly localhost cnonly
issue responder "stls policy OCSP" responder
openssl ca -config ca.cnf -revoke revoked.pem 2>/dev/null
openssl ca -config ca.cnf -gencrl -out crl.pem 2>/dev/null
ocsp() { # cert out [options...]
  c=$1; o=$2; shift 2
  "$@" openssl ocsp -index index.txt -rsigner responder.pem -rkey responder.key -CA ca.pem \
    -issuer ca.pem -cert "$c" -respout "$o" -ndays 1 >/dev/null 2>&1
}
ocsp server.pem server.ocsp
ocsp staple.pem staple.ocsp
ocsp revoked.pem revoked.ocsp
ocsp staple.pem staple-stale.ocsp faketime -f -3d
ocsp server.pem server-stale.ocsp faketime -f -3d
openssl ocsp -index index.txt -rsigner responder.pem -rkey responder.key -CA ca.pem \
  -issuer ca.pem -cert server.pem -respout server-nonext.ocsp >/dev/null 2>&1
"#;

static CA: OnceLock<Ca> = OnceLock::new();

fn ca() -> &'static Ca {
    CA.get_or_init(|| {
        let dir = scratch("policy-ca");
        let mut c = proc::sh(PKI_SCRIPT);
        c.current_dir(&dir);
        let o = proc::run(&mut c, None, T);
        assert_eq!(o.code(), 0, "making the policy CA: {}", o.stderr_str());
        Ca { dir }
    })
}

fn have_tools() -> bool {
    require("openssl") && require("faketime")
}

// ------------------------------------------------------------------ helpers

/// tlsd with `pair`, `extra` variables and `opts`, running `cat >/dev/null`.
fn tlsd(pair: &Pair, extra: &[(&str, OsString)], opts: &[&str]) -> TinyListener {
    let mut args: Vec<OsString> = opts.iter().map(OsString::from).collect();
    args.extend(["--", "/bin/sh", "-c", "exec cat >/dev/null"].map(OsString::from));
    let mut s = Spawn::tlsd(
        &args,
        &[
            ("CERTFILE", pair.cert.as_path()),
            ("KEYFILE", pair.key.as_path()),
        ],
    );
    for (k, v) in extra {
        s = s.env(k, v);
    }
    TinyListener::start(s)
}

fn var(k: &'static str, v: impl Into<OsString>) -> (&'static str, OsString) {
    (k, v.into())
}

fn path_var(k: &'static str, p: &Path) -> (&'static str, OsString) {
    (k, p.as_os_str().to_os_string())
}

/// `openssl s_client` to the listener, stdin at EOF at once: the handshake, then a close.
/// stdout and stderr together (`-brief` writes its summary on stderr).
fn s_client(l: &TinyListener, args: &[&str]) -> (Outcome, String) {
    let mut c = Command::new("openssl");
    c.arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", l.port()))
        .args(args);
    c.env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
    );
    let o = proc::run(&mut c, Some(b""), T);
    let all = format!("{}{}", o.stdout_str(), o.stderr_str());
    (o, all)
}

/// The session's negotiated cipher according to `s_client -brief`.
fn brief_cipher(all: &str) -> Option<String> {
    all.lines()
        .find_map(|l| l.strip_prefix("Ciphersuite: "))
        .map(|s| s.trim().to_string())
}

/// `Server Temp Key: X25519, 253 bits` and the like.
fn temp_key(all: &str) -> Option<String> {
    all.lines()
        .find_map(|l| l.strip_prefix("Server Temp Key: "))
        .map(|s| s.trim().to_string())
}

fn session_code(l: &TinyListener) -> (i32, String) {
    let s = l.next_session(WAIT);
    (s.code(), s.stderr_str())
}

/// A bad value: tlsd exits 96 at start with one line that names `item`.
fn assert_tlsd_rejects(k: &'static str, v: &str, item: &str) {
    let l = tlsd(&pki().ec, &[var(k, v)], &[]);
    let mut s = l.connect();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    let (code, err) = session_code(&l);
    assert_eq!(code, 96, "{k}={v}: tlsd exit {code}, stderr {err}");
    assert!(one_fatal_line(&err, "tlsd"), "{k}={v}: {err}");
    assert!(err.contains(item) && err.contains(k), "{k}={v}: {err}");
}

/// tlsc against the listener: `-k name`, prog prints the session.
fn tlsc(l: &TinyListener, name: &str, extra: &[(&str, OsString)]) -> Outcome {
    let mut t = Tlsc::new(&[
        "-k",
        name,
        "--",
        "/bin/sh",
        "-c",
        "echo \"proto=$SSL_PROTOCOL cipher=$SSL_CIPHER\"",
    ])
    .without_env("CAFILE")
    .env("CAFILE", ca().path("ca.pem"));
    for (k, v) in extra {
        t = t.env(k, v);
    }
    t.run(l.port(), None)
}

// ------------------------------------------------------------------ the default, from outside

/// One sslscan run: the accepted ciphers and the key-exchange groups.
fn sslscan(l: &TinyListener) -> (Vec<String>, Vec<String>, String) {
    let mut c = Command::new("sslscan");
    c.args(["--no-colour", "--no-heartbleed"])
        .arg(format!("127.0.0.1:{}", l.port()));
    let o = proc::run(&mut c, None, Duration::from_secs(180));
    let out = o.stdout_str();
    assert_eq!(o.code(), 0, "sslscan: {out} {}", o.stderr_str());
    let mut ciphers = Vec::new();
    let mut groups = Vec::new();
    let mut in_groups = false;
    for line in out.lines() {
        if line.contains("Server Key Exchange Group") {
            in_groups = true;
            continue;
        }
        if in_groups && line.trim().is_empty() {
            in_groups = false;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        if matches!(w.first(), Some(&"Accepted") | Some(&"Preferred")) && w.len() >= 5 {
            ciphers.push(w[4].to_string());
        } else if in_groups && w.len() >= 4 && w[0].starts_with("TLSv") {
            groups.push(w[3..].join(" "));
        }
    }
    (ciphers, groups, out)
}

fn hardened(c: &str) -> bool {
    c.starts_with("TLS_")
        || (c.starts_with("ECDHE-") && (c.contains("GCM") || c.contains("CHACHA20")))
}

#[test]
fn sslscan_sees_only_ecdhe_aead_and_no_finite_field_group() {
    if !require("sslscan") {
        return;
    }
    for (pair, kind) in [(&pki().ec, "-ECDSA-"), (&pki().rsa, "-RSA-")] {
        let l = tlsd(pair, &[], &[]);
        let (ciphers, groups, out) = sslscan(&l);
        assert!(ciphers.iter().any(|c| c.contains(kind)), "{kind}: {out}");
        assert!(ciphers.iter().any(|c| c.starts_with("TLS_")), "{out}");
        for c in &ciphers {
            assert!(hardened(c), "{kind}: sslscan accepted {c}: {out}");
        }
        assert!(!groups.is_empty(), "{out}");
        for g in &groups {
            assert!(
                !g.contains("ffdhe") && !g.contains("DH "),
                "{kind}: group {g}: {out}"
            );
        }
    }
    // The same scan sees a static-RSA CBC suite and ffdhe2048 when they are asked for.
    let l = tlsd(
        &pki().rsa,
        &[
            var("TLS_CIPHERS", "ECDHE+AESGCM:AES128-SHA"),
            var("TLS_GROUPS", "X25519:ffdhe2048"),
        ],
        &[],
    );
    let (ciphers, groups, out) = sslscan(&l);
    assert!(ciphers.iter().any(|c| c == "AES128-SHA"), "{out}");
    assert!(groups.iter().any(|g| g.contains("ffdhe2048")), "{out}");
}

#[test]
fn ffdhe2048_refused_by_default_accepted_with_tls_groups() {
    if !require("openssl") {
        return;
    }
    let l = tlsd(&pki().ec, &[], &[]);
    let (o, all) = s_client(&l, &["-brief", "-groups", "ffdhe2048"]);
    assert_ne!(o.code(), 0, "ffdhe2048 accepted by default: {all}");
    assert_eq!(session_code(&l).0, 97);
    let l = tlsd(&pki().ec, &[var("TLS_GROUPS", "ffdhe2048")], &[]);
    let (o, all) = s_client(&l, &["-brief", "-groups", "ffdhe2048"]);
    assert_eq!(o.code(), 0, "{all}");
    assert!(
        temp_key(&all).is_some_and(|k| k.contains("DH") && k.contains("2048")),
        "{all}"
    );
    assert_eq!(session_code(&l).0, 0);
}

#[test]
fn tls_groups_chooses_the_group_and_rejects_unknown_ones() {
    if !require("openssl") {
        return;
    }
    let l = tlsd(&pki().ec, &[], &[]);
    let (_, all) = s_client(&l, &["-brief"]);
    assert!(
        temp_key(&all).is_some_and(|k| k.starts_with("X25519")),
        "{all}"
    );
    let l = tlsd(&pki().ec, &[var("TLS_GROUPS", "P-384")], &[]);
    let (o, all) = s_client(&l, &["-brief"]);
    assert_eq!(o.code(), 0, "{all}");
    assert!(
        temp_key(&all).is_some_and(|k| k.contains("secp384r1")),
        "{all}"
    );
    assert_tlsd_rejects("TLS_GROUPS", "X25519:ffdhe1234", "ffdhe1234");
}

#[test]
fn tls12_handshakes_carry_no_ticket() {
    if !require("openssl") {
        return;
    }
    let hint = "TLS session ticket lifetime hint";
    let l = tlsd(&pki().ec, &[], &[]);
    let (o, all) = s_client(&l, &["-tls1_2", "-CAfile", &pki().ca.to_string_lossy()]);
    assert!(all.contains("Protocol  : TLSv1.2"), "{} {all}", o.code());
    assert!(!all.contains(hint), "tlsd issued a TLS 1.2 ticket: {all}");
    // The probe sees a ticket where there is one: openssl s_server issues them.
    let (mut server, port) = peers::s_server(&pki().ec, &["-tls1_2"], b"");
    let mut c = Command::new("openssl");
    c.args(["s_client", "-tls1_2", "-connect"])
        .arg(format!("127.0.0.1:{port}"));
    let o = proc::run(&mut c, Some(b""), T);
    assert!(o.stdout_str().contains(hint), "{}", o.stdout_str());
    let _ = server.child.kill();
}

#[test]
fn a_client_that_prefers_chacha20_gets_it() {
    if !require("openssl") {
        return;
    }
    let l = tlsd(&pki().ec, &[], &[]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"],
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ),
        (
            &["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"],
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
        // Server preference otherwise: AES-256-GCM although the client lists AES-128 first.
        (
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384"],
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
        (
            &["-ciphersuites", "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"],
            "TLS_AES_256_GCM_SHA384",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["-brief"];
        a.extend_from_slice(args);
        let (_, all) = s_client(&l, &a);
        assert_eq!(brief_cipher(&all).as_deref(), Some(want), "{args:?}: {all}");
    }
}

#[test]
fn tls_ciphers_and_ciphersuites_change_the_handshake_and_reject_typos() {
    if !require("openssl") {
        return;
    }
    let l = tlsd(
        &pki().ec,
        &[var("TLS_CIPHERS", "ECDHE-ECDSA-AES128-GCM-SHA256")],
        &[],
    );
    let (_, all) = s_client(&l, &["-brief", "-tls1_2"]);
    assert_eq!(
        brief_cipher(&all).as_deref(),
        Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{all}"
    );
    let l = tlsd(
        &pki().ec,
        &[var("TLS_CIPHERSUITES", "TLS_AES_128_GCM_SHA256")],
        &[],
    );
    let (_, all) = s_client(&l, &["-brief", "-tls1_3"]);
    assert_eq!(
        brief_cipher(&all).as_deref(),
        Some("TLS_AES_128_GCM_SHA256"),
        "{all}"
    );
    assert_tlsd_rejects("TLS_CIPHERS", "ECDHE+AESGCM:ECDHE-BOGUS", "ECDHE-BOGUS");
    assert_tlsd_rejects(
        "TLS_CIPHERSUITES",
        "TLS_AES_128_GCM_SHA256:TLS_AES_999",
        "TLS_AES_999",
    );
}

#[test]
fn tls_min_version_13_refuses_tls12() {
    if !require("openssl") {
        return;
    }
    let l = tlsd(&pki().ec, &[], &[]);
    let (o, all) = s_client(&l, &["-brief", "-tls1_2"]);
    assert_eq!(o.code(), 0, "{all}");
    let l = tlsd(&pki().ec, &[var("TLS_MIN_VERSION", "1.3")], &[]);
    let (o, all) = s_client(&l, &["-brief", "-tls1_2"]);
    assert_ne!(
        o.code(),
        0,
        "TLS 1.2 accepted under TLS_MIN_VERSION=1.3: {all}"
    );
    assert_eq!(session_code(&l).0, 97);
    let (o, all) = s_client(&l, &["-brief", "-tls1_3"]);
    assert_eq!(o.code(), 0, "{all}");
    assert_tlsd_rejects("TLS_MIN_VERSION", "1.1", "1.1");
}

#[test]
fn openssl_conf_keeps_working_and_the_variables_win_over_it() {
    if !require("openssl") {
        return;
    }
    let dir = scratch("policy-openssl-conf");
    let conf = dir.join("openssl.cnf");
    std::fs::write(
        &conf,
        "openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n\
         [tls]\nGroups = P-384\n",
    )
    .expect("writing openssl.cnf");
    let l = tlsd(&pki().ec, &[path_var("OPENSSL_CONF", &conf)], &[]);
    let (o, all) = s_client(&l, &["-brief"]);
    assert_eq!(o.code(), 0, "{all}");
    assert!(
        temp_key(&all).is_some_and(|k| k.contains("secp384r1")),
        "{all}"
    );
    let l = tlsd(
        &pki().ec,
        &[path_var("OPENSSL_CONF", &conf), var("TLS_GROUPS", "X25519")],
        &[],
    );
    let (_, all) = s_client(&l, &["-brief"]);
    assert!(
        temp_key(&all).is_some_and(|k| k.starts_with("X25519")),
        "{all}"
    );
}

#[test]
fn policy_variables_are_stripped_from_prog() {
    let vars = [
        ("TLS_CIPHERS", "ECDHE+AESGCM"),
        ("TLS_CIPHERSUITES", "TLS_AES_128_GCM_SHA256"),
        ("TLS_GROUPS", "X25519"),
        ("TLS_MIN_VERSION", "1.2"),
        ("OCSPFILE", "/nonexistent.ocsp"),
        ("CRLFILE", "/nonexistent.crl"),
    ];
    for keep in [false, true] {
        let mut args: Vec<&str> = if keep { vec!["-Z"] } else { vec![] };
        args.extend(["--", "/bin/sh", "-c", "env"]);
        let mut s = Spawn::tlsd(
            &args,
            &[
                ("CERTFILE", pki().ec.cert.as_path()),
                ("KEYFILE", pki().ec.key.as_path()),
            ],
        );
        for (k, v) in vars {
            // CRLFILE is the client's: tlsd does not read it, and strips it all the same.
            s = s.env(k, v);
        }
        let l = TinyListener::start(s);
        let o = stls_tests::client::connect(l.addr, &stls_tests::client::ClientOpts::tls13())
            .map(|mut c| c.read_to_end().0)
            .expect("connect");
        let out = String::from_utf8_lossy(&o).into_owned();
        for (k, _) in vars {
            assert_eq!(
                out.contains(&format!("{k}=")),
                keep,
                "-Z {keep}: {k} in {out}"
            );
        }
        assert_eq!(session_code(&l).0, 0);
    }
}

// ------------------------------------------------------------------ tlsc

#[test]
fn tlsc_host_names_are_strict() {
    if !have_tools() {
        return;
    }
    let ca = ca();
    let cases = [
        ("partial", "www.example.test", 97),
        ("cnonly", "localhost", 97),
        ("wildcard", "a.example.test", 0),
        ("server", "localhost", 0),
    ];
    for (name, host, want) in cases {
        let l = tlsd(&ca.pair(name), &[], &[]);
        let o = tlsc(&l, host, &[]);
        assert_eq!(o.code(), want, "{name} as {host}: {}", o.stderr_str());
        if want != 0 {
            assert!(
                one_fatal_line(&o.stderr_str(), "tlsc"),
                "{}",
                o.stderr_str()
            );
        }
        let _ = l.try_session(WAIT);
    }
}

#[test]
fn tlsc_policy_variables() {
    if !have_tools() {
        return;
    }
    let pair = ca().pair("server");
    let l = tlsd(&pair, &[], &[]);
    let o = tlsc(&l, "localhost", &[var("TLS_MIN_VERSION", "1.2")]);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert!(
        o.stdout_str()
            .contains("proto=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384"),
        "{}",
        o.stdout_str()
    );
    let _ = l.try_session(WAIT);
    // Each variable, against the same server.
    let cases = [
        (
            var("TLS_CIPHERSUITES", "TLS_CHACHA20_POLY1305_SHA256"),
            "cipher=TLS_CHACHA20_POLY1305_SHA256",
        ),
        (
            var("TLS_CIPHERS", "ECDHE-ECDSA-AES128-GCM-SHA256"),
            "cipher=TLS_AES_256_GCM_SHA384",
        ),
        (var("TLS_GROUPS", "P-384"), "proto=TLSv1.3"),
    ];
    for (v, want) in cases {
        let o = tlsc(&l, "localhost", std::slice::from_ref(&v));
        assert_eq!(o.code(), 0, "{v:?}: {}", o.stderr_str());
        assert!(o.stdout_str().contains(want), "{v:?}: {}", o.stdout_str());
        let _ = l.try_session(WAIT);
    }
    // A static-RSA-only TLS 1.2 server: refused by default, accepted when TLS_CIPHERS asks.
    let (mut srv, port) = peers::s_server(
        &pki().rsa,
        &["-tls1_2", "-cipher", "AES128-GCM-SHA256"],
        b"",
    );
    let mut t = Tlsc::new(&["-k", "localhost", "--", "/bin/true"]);
    t = t.env("TLS_CIPHERS", "AES128-GCM-SHA256");
    let o = t.run(port, None);
    assert_eq!(o.code(), 0, "static RSA when asked for: {}", o.stderr_str());
    let _ = srv.child.kill();
    let (mut srv, port) = peers::s_server(
        &pki().rsa,
        &["-tls1_2", "-cipher", "AES128-GCM-SHA256"],
        b"",
    );
    let o = Tlsc::new(&["-k", "localhost", "--", "/bin/true"]).run(port, None);
    assert_eq!(o.code(), 97, "static RSA by default: {}", o.stderr_str());
    let _ = srv.child.kill();
    // TLS_MIN_VERSION=1.3 against a TLS 1.2 server; the group shows in tlsd's view.
    let (mut srv, port) = peers::s_server(&pki().ec, &["-tls1_2"], b"");
    let o = Tlsc::new(&["-k", "localhost", "--", "/bin/true"])
        .env("TLS_MIN_VERSION", "1.3")
        .run(port, None);
    assert_eq!(o.code(), 97, "{}", o.stderr_str());
    let _ = srv.child.kill();
    let (mut srv, port) = peers::s_server(&pki().ec, &["-tls1_2"], b"");
    let o = Tlsc::new(&["-k", "localhost", "--", "/bin/true"]).run(port, None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    let _ = srv.child.kill();
    // Bad values: 96 at start, naming the item.
    for (k, v) in [
        ("TLS_GROUPS", "P-999"),
        ("TLS_CIPHERS", "NOT-A-CIPHER"),
        ("TLS_CIPHERSUITES", "TLS_NOPE"),
        ("TLS_MIN_VERSION", "2"),
    ] {
        let o = tlsc(&l, "localhost", &[var(k, v)]);
        assert_eq!(o.code(), 96, "{k}={v}: {}", o.stderr_str());
        let err = o.stderr_str();
        assert!(
            one_fatal_line(&err, "tlsc") && err.contains(k) && err.contains(v),
            "{err}"
        );
    }
}

#[test]
fn tlsc_tls_groups_chooses_what_is_offered() {
    if !require("openssl") {
        return;
    }
    // An X25519-only server: the default offers X25519; TLS_GROUPS=P-384 does not.
    for (groups, want) in [(None, 0), (Some("P-384"), 97), (Some("P-384:X25519"), 0)] {
        let (mut srv, port) = peers::s_server(&pki().ec, &["-groups", "X25519"], b"");
        let mut t = Tlsc::new(&["-k", "localhost", "--", "/bin/true"]);
        if let Some(g) = groups {
            t = t.env("TLS_GROUPS", g);
        }
        let o = t.run(port, None);
        assert_eq!(o.code(), want, "TLS_GROUPS={groups:?}: {}", o.stderr_str());
        let _ = srv.child.kill();
    }
}

// ------------------------------------------------------------------ OCSP and CRLs

fn status_of(l: &TinyListener, extra: &[&str]) -> String {
    // Not -brief: it leaves out the OCSP block.
    let mut a = vec!["-status"];
    a.extend_from_slice(extra);
    let (_, all) = s_client(l, &a);
    all
}

const STAPLED: &str = "OCSP Response Status: successful";
const NOT_STAPLED: &str = "OCSP response: no response sent";

#[test]
fn ocsp_response_is_stapled_while_fresh() {
    if !have_tools() {
        return;
    }
    let ca = ca();
    let pair = ca.pair("server");
    let l = tlsd(&pair, &[path_var("OCSPFILE", &ca.path("server.ocsp"))], &[]);
    for v in [&["-tls1_3"][..], &["-tls1_2"][..]] {
        let all = status_of(&l, v);
        assert!(all.contains(STAPLED), "{v:?}: {all}");
        assert!(all.contains("Cert Status: good"), "{all}");
        assert_eq!(session_code(&l).0, 0);
    }
    // Stale, without nextUpdate, unreadable, another certificate's: not stapled.
    for (file, what) in [
        ("server-stale.ocsp", "stale"),
        ("server-nonext.ocsp", "no nextUpdate"),
        ("missing.ocsp", "unreadable"),
        ("staple.ocsp", "another certificate's"),
    ] {
        let l = tlsd(&pair, &[path_var("OCSPFILE", &ca.path(file))], &["-v", "2"]);
        let all = status_of(&l, &[]);
        assert!(all.contains(NOT_STAPLED), "{what}: {all}");
        let (code, err) = session_code(&l);
        assert_eq!(code, 0, "{what}: {err}");
        let infos: Vec<&str> = err.lines().filter(|l| l.contains("OCSP")).collect();
        assert_eq!(infos.len(), 1, "{what}: logged once at -v 2: {err}");
        assert!(infos[0].starts_with("tlsd: info: "), "{err}");
        // At the default verbosity, nothing.
        let l = tlsd(&pair, &[path_var("OCSPFILE", &ca.path(file))], &[]);
        let _ = status_of(&l, &[]);
        let (_, err) = session_code(&l);
        assert!(!err.contains("OCSP"), "{what}: {err}");
    }
}

#[test]
fn ocsp_file_per_sni_name() {
    if !have_tools() {
        return;
    }
    let ca = ca();
    let named = ca.pair("server");
    let s = Spawn::tlsd(
        &["-k", "1", "--", "/bin/sh", "-c", "exec cat >/dev/null"],
        &[
            ("CERTFILE", pki().ec.cert.as_path()),
            ("KEYFILE", pki().ec.key.as_path()),
            ("CERTFILE:localhost", named.cert.as_path()),
            ("KEYFILE:localhost", named.key.as_path()),
            ("OCSPFILE:localhost", ca.path("server.ocsp").as_path()),
        ],
    );
    let l = TinyListener::start(s);
    let all = status_of(&l, &["-servername", "localhost"]);
    assert!(all.contains(STAPLED), "{all}");
    // The default certificate has no response of its own: nothing stapled for it.
    let all = status_of(&l, &["-servername", "other.test"]);
    assert!(all.contains(NOT_STAPLED), "{all}");
}

#[test]
fn tlsc_must_staple_fails_closed() {
    if !have_tools() {
        return;
    }
    let ca = ca();
    let staple = ca.pair("staple");
    let cases = [
        (None, 97, "no staple"),
        (Some("staple-stale.ocsp"), 97, "stale staple"),
        (Some("server.ocsp"), 97, "another certificate's staple"),
        (Some("staple.ocsp"), 0, "good staple"),
    ];
    for (file, want, what) in cases {
        let extra: Vec<_> = file
            .map(|f| path_var("OCSPFILE", &ca.path(f)))
            .into_iter()
            .collect();
        let l = tlsd(&staple, &extra, &[]);
        let o = tlsc(&l, "localhost", &[]);
        assert_eq!(o.code(), want, "{what}: {}", o.stderr_str());
        if want != 0 {
            let err = o.stderr_str();
            assert!(
                one_fatal_line(&err, "tlsc") && err.contains("OCSP"),
                "{what}: {err}"
            );
        }
        let _ = l.try_session(WAIT);
    }
    // A certificate without must-staple needs no staple, but a revoked staple fails it.
    let l = tlsd(&ca.pair("server"), &[], &[]);
    assert_eq!(tlsc(&l, "localhost", &[]).code(), 0);
    let _ = l.try_session(WAIT);
    let l = tlsd(
        &ca.pair("revoked"),
        &[path_var("OCSPFILE", &ca.path("revoked.ocsp"))],
        &[],
    );
    let o = tlsc(&l, "localhost", &[]);
    assert_eq!(o.code(), 97, "revoked staple: {}", o.stderr_str());
    assert!(o.stderr_str().contains("revoked"), "{}", o.stderr_str());
}

#[test]
fn tlsc_crlfile_fails_closed_on_a_revoked_server() {
    if !have_tools() {
        return;
    }
    let ca = ca();
    let crl = path_var("CRLFILE", &ca.path("crl.pem"));
    let l = tlsd(&ca.pair("revoked"), &[], &[]);
    assert_eq!(tlsc(&l, "localhost", &[]).code(), 0, "revoked, no CRLFILE");
    let _ = l.try_session(WAIT);
    let o = tlsc(&l, "localhost", std::slice::from_ref(&crl));
    assert_eq!(o.code(), 97, "revoked with CRLFILE: {}", o.stderr_str());
    assert!(o.stderr_str().contains("revoked"), "{}", o.stderr_str());
    let _ = l.try_session(WAIT);
    let l = tlsd(&ca.pair("server"), &[], &[]);
    let o = tlsc(&l, "localhost", &[crl]);
    assert_eq!(o.code(), 0, "good with CRLFILE: {}", o.stderr_str());
    let _ = l.try_session(WAIT);
    // An unreadable or unparsable CRLFILE: 96 at start.
    for f in ["missing.pem", "ca.cnf"] {
        let o = tlsc(&l, "localhost", &[path_var("CRLFILE", &ca.path(f))]);
        assert_eq!(o.code(), 96, "{f}: {}", o.stderr_str());
        assert!(
            one_fatal_line(&o.stderr_str(), "tlsc"),
            "{}",
            o.stderr_str()
        );
    }
}

// ------------------------------------------------------------------ testssl.sh (slow)

/// Findings about the test certificate itself (its validity, its missing revocation URIs,
/// its trust, CAA records) and HTTP headers: not the policy's.
fn about_certificate_or_http(id: &str) -> bool {
    id.starts_with("cert_")
        || id.starts_with("DNS_CAA")
        || matches!(
            id,
            "HSTS"
                | "HPKP"
                | "banner_server"
                | "banner_application"
                | "cookie_count"
                | "security_headers"
        )
}

#[test]
fn slow_testssl_reports_nothing_low_or_above() {
    if !require("testssl") || !have_tools() {
        return;
    }
    let ca = ca();
    let l = tlsd(
        &ca.pair("server"),
        &[path_var("OCSPFILE", &ca.path("server.ocsp"))],
        &[],
    );
    let dir = scratch("testssl");
    let json = dir.join("testssl.json");
    let mut c = Command::new("testssl");
    c.args([
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "--fast",
        "--connect-timeout",
        "10",
        "--openssl-timeout",
        "10",
        "--severity",
        "LOW",
    ])
    .arg("--add-ca")
    .arg(ca.path("ca.pem"))
    .arg("--jsonfile")
    .arg(&json)
    .arg(format!("127.0.0.1:{}", l.port()));
    c.env("TERM", "dumb");
    // Bounded: a run takes under a minute here; kill it (and its group) after five.
    let o = proc::run(&mut c, None, Duration::from_secs(300));
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no {}: {e}; {}",
            json.display(),
            o.stdout_str()
        )
    });
    let mut bad = Vec::new();
    let mut seen = 0;
    for entry in text.split('{').skip(1) {
        let field = |name: &str| {
            entry
                .split(&format!("\"{name}\""))
                .nth(1)
                .and_then(|r| r.split('"').nth(1))
                .unwrap_or("")
                .to_string()
        };
        let (id, sev) = (field("id"), field("severity"));
        seen += 1;
        if matches!(sev.as_str(), "LOW" | "MEDIUM" | "HIGH" | "CRITICAL")
            && !about_certificate_or_http(&id)
        {
            bad.push(format!("{sev} {id}: {}", field("finding")));
        }
    }
    assert!(seen > 0, "testssl's JSON has no finding: {text}");
    assert!(bad.is_empty(), "testssl findings: {bad:#?}");
}
