//! tlsclient end to end: it resolves HOST with getaddrinfo (a private hosts file in a
//! mount namespace for names of our own), connects to each address in turn, and runs
//! tlsc's session. Real servers (openssl s_server, tlsd under the suite's listener); both
//! forms; the TCP variables; SNI and verification of HOST; fallback from a refused IPv6
//! address to IPv4; IPv6-only names; `-T` against a blackholed address; wrong name (97,
//! prog never runs); unresolvable and refused (111).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use stls_tests::listener::{free_port, Spawn, TinyListener};
use stls_tests::peers::{self, one_fatal_line};
use stls_tests::pki::Pair;
use stls_tests::proc::{self, Outcome};
use stls_tests::{bins, payload, pki, require, scratch, skip};

const WAIT: Duration = Duration::from_secs(30);

/// `tlsclient args...` with the test CA as CAFILE and nothing else but PATH.
fn tlsclient(args: &[&str]) -> Command {
    let mut c = Command::new(bins::bin("tlsclient"));
    c.args(args).env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
    );
    c.env("CAFILE", &pki().ca);
    c
}

fn run(c: &mut Command, input: Option<&[u8]>) -> Outcome {
    proc::run(c, input, WAIT)
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// tlsd on `bind` running `sh -c script` per connection, with the ECDSA pair.
fn tlsd_on(bind: &str, script: &str) -> TinyListener {
    tlsd_with(bind, script, &pki().ec)
}

fn tlsd_with(bind: &str, script: &str, p: &'static Pair) -> TinyListener {
    let args: Vec<OsString> = ["--", "/bin/sh", "-c", script]
        .iter()
        .map(OsString::from)
        .collect();
    TinyListener::start_on(
        bind,
        Spawn::tlsd(&args, &[("CERTFILE", &p.cert), ("KEYFILE", &p.key)]),
    )
}

fn port_of(l: &TinyListener) -> String {
    l.addr.port().to_string()
}

// ------------------------------------------------------------------ a private hosts file

/// In the namespace: `tls.test` is ::1 then 127.0.0.1, `localhost` is ::1 only (both
/// names are in the test certificate).
fn hosts() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = scratch("hosts").join("hosts");
        std::fs::write(&p, "::1 tls.test\n127.0.0.1 tls.test\n::1 localhost\n")
            .expect("writing the hosts file");
        p
    })
    .clone()
}

/// Can we bind-mount a hosts file in a mount namespace of our own?
fn namespaces() -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        if !bins::is_root() {
            return Err("not root: cannot bind-mount a hosts file".into());
        }
        if bins::which("unshare").is_none() {
            return Err("unshare not installed (util-linux)".into());
        }
        let o = run(&mut namespaced(&["getent", "hosts", "tls.test"]), None);
        if o.code() != 0 || !o.stdout_str().contains("::1") {
            return Err(format!("unshare -m failed: {}", o.stderr_str().trim()));
        }
        Ok(())
    });
    match r {
        Ok(()) => true,
        Err(e) => skip(e),
    }
}

/// `cmd` in a mount namespace where /etc/hosts is [`hosts`], with CAFILE set.
fn namespaced(cmd: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.arg("-m")
        .arg("/bin/sh")
        .arg("-c")
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(hosts())
        .args(cmd)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("CAFILE", &pki().ca);
    c
}

fn tlsclient_path() -> String {
    bins::bin("tlsclient").display().to_string()
}

// ------------------------------------------------------------------ the two forms

#[test]
fn io_form_against_s_server_by_name() {
    if !require("openssl") {
        return;
    }
    let (srv, port) = peers::s_server(&pki().ec, &[], b"from s_server\n");
    // As in the README: `printf 'GET / HTTP/1.0\r\n\r\n' | tlsclient localhost PORT`.
    let o = run(
        &mut tlsclient(&["localhost", &port.to_string()]),
        Some(b"GET / HTTP/1.0\r\n\r\n"),
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "from s_server\n");
    let so = srv
        .finish_or_kill(WAIT)
        .expect("s_server ends after the client's close");
    assert!(
        so.stdout_str().contains("GET / HTTP/1.0"),
        "{}",
        so.stdout_str()
    );
}

#[test]
fn prog_form_on_fds_6_and_7_with_the_tcp_variables() {
    if !require("openssl") {
        return;
    }
    // As in tlsclient(1): `tlsclient -4 -T 2s localhost PORT sh -c 'head -1 <&6'`.
    let (srv, port) = peers::s_server(&pki().ec, &[], b"line one\nline two\n");
    let o = run(
        &mut tlsclient(&[
            "-4",
            "-T",
            "2s",
            "localhost",
            &port.to_string(),
            "sh",
            "-c",
            "head -1 <&6",
        ]),
        None,
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "line one\n");
    drop(srv);

    let (srv, port) = peers::s_server(&pki().ec, &[], b"");
    let o = run(
        &mut tlsclient(&[
            "localhost",
            &port.to_string(),
            "sh",
            "-c",
            "echo from-prog >&7; exec 7>&-; env",
        ]),
        None,
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    let env = parse_env(&o.stdout_str());
    assert_eq!(env.get("PROTO").map(String::as_str), Some("TCP"));
    assert_eq!(
        env.get("TCPREMOTEIP").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(env.get("TCPREMOTEPORT"), Some(&port.to_string()));
    assert_eq!(env.get("TCPLOCALIP").map(String::as_str), Some("127.0.0.1"));
    assert!(
        env.get("TCPLOCALPORT")
            .and_then(|p| p.parse::<u16>().ok())
            .is_some(),
        "{env:?}"
    );
    assert_eq!(
        env.get("SSL_TLS_SNI_SERVERNAME").map(String::as_str),
        Some("localhost")
    );
    assert!(!env.contains_key("CAFILE"), "{env:?}");
    let so = srv.finish_or_kill(WAIT).expect("s_server ends");
    assert!(so.stdout_str().contains("from-prog"), "{}", so.stdout_str());
}

#[test]
fn an_address_with_k_name_and_integrity_both_ways() {
    let l = tlsd_on(
        "127.0.0.1:0",
        "sha256sum | cut -c1-64; head -c 3000000 /dev/zero",
    );
    let data = payload::bytes(7, 4 * payload::MIB + 1);
    // As in tlsclient(1): `tlsclient -k localhost 127.0.0.1 PORT`.
    let o = run(
        &mut tlsclient(&["-k", "localhost", "127.0.0.1", &port_of(&l)]),
        Some(&data),
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert!(o.stdout.len() > 65);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout[..64]),
        payload::sha256_hex(&data)
    );
    assert_eq!(
        payload::sha256_hex(&o.stdout[65..]),
        payload::sha256_hex(&vec![0u8; 3_000_000])
    );
    assert_eq!(l.next_session(WAIT).code(), 0);
}

#[test]
fn an_ip_address_is_verified_against_the_ip_sans_without_sni() {
    let l = tlsd_on("[::1]:0", "echo \"sni=${SSL_TLS_SNI_SERVERNAME:-none}\"");
    let o = run(&mut tlsclient(&["::1", &port_of(&l)]), None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "sni=none\n");
}

// ------------------------------------------------------------------ names of our own

#[test]
fn a_name_from_the_hosts_file_is_sent_as_sni_and_verified() {
    if !namespaces() {
        return;
    }
    let l = tlsd_on("[::]:0", "echo \"$SSL_TLS_SNI_SERVERNAME $TCPREMOTEIP\"");
    let t = tlsclient_path();
    let o = run(&mut namespaced(&[&t, "tls.test", &port_of(&l)]), None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "tls.test ::1\n");
    assert_eq!(o.stderr_str(), "");
}

#[test]
fn a_refused_ipv6_address_falls_back_to_ipv4() {
    if !namespaces() {
        return;
    }
    // Listening on 127.0.0.1 only: tls.test's first address, ::1, refuses.
    let l = tlsd_on("127.0.0.1:0", "echo \"$TCPREMOTEIP\"");
    let t = tlsclient_path();
    let o = run(&mut namespaced(&[&t, "tls.test", &port_of(&l)]), None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "127.0.0.1\n");
    let err = o.stderr_str();
    assert!(
        err.starts_with(&format!(
            "tlsclient: warning: unable to connect to [::1]:{}: Connection refused",
            l.addr.port()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn an_ipv6_only_name_and_the_family_options() {
    if !namespaces() {
        return;
    }
    let l = tlsd_on("[::]:0", "echo \"$TCPREMOTEIP\"");
    let t = tlsclient_path();
    let port = port_of(&l);
    for args in [
        vec![&t[..], "localhost", &port],
        vec![&t[..], "-6", "localhost", &port],
    ] {
        let o = run(&mut namespaced(&args), None);
        assert_eq!(o.code(), 0, "{args:?}: {}", o.stderr_str());
        assert_eq!(o.stdout_str(), "::1\n", "{args:?}");
    }
    let o = run(&mut namespaced(&[&t, "-4", "localhost", &port]), None);
    assert_eq!(o.code(), 111, "{}", o.stderr_str());
    assert!(one_fatal_line(&o.stderr_str(), "tlsclient"));
    assert!(
        o.stderr_str()
            .contains("unable to resolve localhost: it has no IPv4 address"),
        "{}",
        o.stderr_str()
    );
    let o = run(&mut namespaced(&[&t, "-4", "tls.test", &port]), None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    // The suite's listener on [::] shows an IPv4 peer in its mapped form.
    assert_eq!(o.stdout_str(), "::ffff:127.0.0.1\n");
}

// ------------------------------------------------------------------ failures

#[test]
fn a_wrong_name_is_97_and_prog_never_runs() {
    let dir = scratch("wrong-name");
    let marker = dir.join("ran");
    let script = format!("touch '{}'", marker.display());
    // A certificate for localhost, asked for wrong.test; one for a.test only, asked for
    // localhost (HOST itself is the name checked).
    let ec = tlsd_on("127.0.0.1:0", "echo hello");
    let a = tlsd_with("127.0.0.1:0", "echo hello", &pki().a);
    let (pe, pa) = (port_of(&ec), port_of(&a));
    for args in [
        vec!["-k", "wrong.test", "127.0.0.1", &pe, "sh", "-c", &script],
        vec!["localhost", &pa, "sh", "-c", &script],
    ] {
        let o = run(&mut tlsclient(&args), None);
        assert_eq!(o.code(), 97, "{args:?}: {}", o.stderr_str());
        assert!(
            one_fatal_line(&o.stderr_str(), "tlsclient"),
            "{}",
            o.stderr_str()
        );
        assert!(!marker.exists(), "{args:?}: prog ran");
    }
}

#[test]
fn an_unresolvable_name_is_111_with_one_line_naming_it() {
    let o = run(&mut tlsclient(&["no-such-host.invalid", "443"]), None);
    assert_eq!(o.code(), 111, "{}", o.stderr_str());
    let err = o.stderr_str();
    assert!(one_fatal_line(&err, "tlsclient"), "{err}");
    assert!(
        err.starts_with("tlsclient: fatal: unable to resolve no-such-host.invalid: "),
        "{err}"
    );
}

#[test]
fn refused_everywhere_is_111() {
    let port = free_port("127.0.0.1").to_string();
    let o = run(&mut tlsclient(&["127.0.0.1", &port]), None);
    assert_eq!(o.code(), 111, "{}", o.stderr_str());
    let err = o.stderr_str();
    assert!(one_fatal_line(&err, "tlsclient"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
}

/// A listener with a backlog of 0 whose queue is full: further SYNs are dropped, so a
/// connect hangs until its timeout. The listener and the connection filling it.
fn blackhole() -> (OwnedFd, TcpStream, SocketAddr) {
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(s >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `s` was just created and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(s) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sin` is a sockaddr_in of the length given; listen takes integers.
    unsafe {
        assert_eq!(
            libc::bind(s, (&sin as *const libc::sockaddr_in).cast(), len),
            0
        );
        assert_eq!(libc::listen(s, 0), 0);
    }
    let mut bound: libc::sockaddr_in = sin;
    // SAFETY: getsockname writes at most `len` bytes into `bound`.
    unsafe {
        libc::getsockname(s, (&mut bound as *mut libc::sockaddr_in).cast(), &mut len);
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], u16::from_be(bound.sin_port)));
    let filler =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("first connection");
    let hangs = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err();
    assert!(hangs, "the listen queue did not fill: no blackhole here");
    (owned, filler, addr)
}

#[test]
fn connect_timeout_against_a_blackholed_address() {
    let (_listener, _filler, addr) = blackhole();
    let t0 = Instant::now();
    let o = run(
        &mut tlsclient(&["-T", "700ms", "127.0.0.1", &addr.port().to_string()]),
        None,
    );
    let took = t0.elapsed();
    assert_eq!(o.code(), 111, "{}", o.stderr_str());
    let err = o.stderr_str();
    assert!(one_fatal_line(&err, "tlsclient"), "{err}");
    assert!(err.contains("timed out"), "{err}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn usage_errors_are_100() {
    for args in [
        &["localhost"][..],
        &["localhost", "0"],
        &["localhost", "https"],
        &["-T", "x", "localhost", "443"],
        &["-7", "9", "localhost", "443"],
    ] {
        let o = run(&mut tlsclient(args), None);
        assert_eq!(o.code(), 100, "{args:?}: {}", o.stderr_str());
        assert!(one_fatal_line(&o.stderr_str(), "tlsclient"), "{args:?}");
    }
}

#[test]
fn python_ssl_server_hash_of_an_upload_both_versions() {
    if !require("python3") {
        return;
    }
    for tls in peers::Tls::both() {
        let (srv, port) = peers::python_server(&pki().ec, tls, "hash");
        let data = payload::bytes(40, 2 * payload::MIB + 5);
        let o = run(
            &mut tlsclient(&["localhost", &port.to_string()]),
            Some(&data),
        );
        assert_eq!(o.code(), 0, "{tls:?}: {}", o.stderr_str());
        assert_eq!(
            o.stdout_str(),
            format!("{}\n", payload::sha256_hex(&data)),
            "{tls:?}"
        );
        let so = srv.finish(WAIT);
        assert!(
            so.stdout_str().contains(&format!("PROTO {}", tls.name())),
            "{tls:?}: {}",
            so.stdout_str()
        );
    }
}

#[test]
fn against_tlsserver_both_programs_together() {
    // tlsserver on a port the system picks, read from its -v 2 line.
    let dir = scratch("with-tlsserver");
    let log = dir.join("stderr");
    let p = &pki().ec;
    let mut c = Command::new(bins::bin("tlsserver"));
    c.args(["-v", "2", "127.0.0.1", "0", "sh", "-c"])
        .arg("echo \"$TCPREMOTEIP $TCPREMOTEPORT $SSL_TLS_SNI_SERVERNAME\"; exec sha256sum")
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("CERTFILE", &p.cert)
        .env("KEYFILE", &p.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    let srv = proc::Running::adopt(proc::spawn(&mut c));
    let mut port = None;
    proc::wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        port = text
            .lines()
            .find_map(|l| l.strip_prefix("tlsserver: info: listening on 127.0.0.1:"))
            .and_then(|p| p.trim().parse::<u16>().ok());
        port.is_some()
    });
    let port = port.expect("tlsserver said where it listens").to_string();
    let data = payload::bytes(41, 3 * payload::MIB);
    let o = run(
        &mut tlsclient(&[
            "localhost",
            &port,
            "sh",
            "-c",
            "cat >&7; exec 7>&-; cat <&6",
        ]),
        Some(&data),
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    let out = o.stdout_str();
    let mut lines = out.lines();
    let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    assert_eq!(first.first(), Some(&"127.0.0.1"), "{out}");
    assert_eq!(first.get(2), Some(&"localhost"), "{out}");
    assert_eq!(
        lines.next(),
        Some(&format!("{}  -", payload::sha256_hex(&data))[..]),
        "{out}"
    );
    drop(srv);
}

#[test]
fn the_session_description_on_d() {
    let l = tlsd_on("127.0.0.1:0", "echo hi");
    let (r, w) = proc::pipe();
    let mut c = tlsclient(&["-d", "3", "-k", "localhost", "127.0.0.1", &port_of(&l)]);
    use std::os::fd::AsRawFd;
    proc::map_fds(&mut c, &[(w.as_raw_fd(), 3)]);
    let o = run(&mut c, None);
    drop(w);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "hi\n");
    let mut desc = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut desc).expect("read -d");
    let text = String::from_utf8_lossy(&desc);
    assert!(text.contains("SSL_PROTOCOL=TLSv1.3\0"), "{text:?}");
    assert!(text.ends_with("\0\0"), "{text:?}");
}
