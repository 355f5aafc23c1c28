//! Security: privileges really dropped (the handshake included), key files
//! that only root can read still work because they are read before the drop, no key
//! material or secret variable and no descriptor of a key file reaches the app, TLS < 1.2
//! refused by tlsd (tlsc's side is in tlsc.rs), verification failures fail closed.
//! tests/README.md maps every case to its test.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use openssl::ssl::SslStream;
use stls_tests::bins::is_root;
use stls_tests::client::{self, ClientOpts, End, OneShotServer, ServerOpts};
use stls_tests::faults::{close_other_fds, status_field};
use stls_tests::listener::{Session, Spawn, TinyListener};
use stls_tests::peers::{self, one_fatal_line, Tlsc};
use stls_tests::pki::Pair;
use stls_tests::proc::{self, Outcome, Running};
use stls_tests::{pki, require, scratch, skip};

const WAIT: Duration = Duration::from_secs(60);
const NOBODY: &str = "65534";

// ------------------------------------------------------------------ helpers

fn sh_args(opts: &[&str], script: &str) -> Vec<OsString> {
    let mut v: Vec<OsString> = opts.iter().map(OsString::from).collect();
    v.extend(["--", "/bin/sh", "-c", script].map(OsString::from));
    v
}

fn pair_env(p: &Pair) -> Vec<(&'static str, PathBuf)> {
    vec![("CERTFILE", p.cert.clone()), ("KEYFILE", p.key.clone())]
}

/// tlsd `opts -- sh -c script` with `env` under the suite's listener.
fn tlsd(opts: &[&str], script: &str, env: &[(&str, PathBuf)]) -> TinyListener {
    let refs: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let mut spawn = Spawn::tlsd(&sh_args(opts, script), &refs);
    spawn.timeout = Duration::from_secs(60);
    TinyListener::start(spawn)
}

fn assert_fatal(s: &Session, code: i32, what: &str) {
    assert!(!s.killed, "{what}: tlsd hung");
    assert_eq!(s.code(), code, "{what}: {}", s.stderr_str());
    assert!(
        one_fatal_line(&s.stderr_str(), "tlsd"),
        "{what}: {:?}",
        s.stderr_str()
    );
}

/// Uid, Gid and Groups of `pid`, as /proc/<pid>/status has them.
fn creds(pid: u32) -> (String, String, String) {
    (
        status_field(pid, "Uid").unwrap_or_default(),
        status_field(pid, "Gid").unwrap_or_default(),
        status_field(pid, "Groups").unwrap_or_default(),
    )
}

fn dropped(pid: u32) -> bool {
    let (u, g, groups) = creds(pid);
    u == "65534 65534 65534 65534"
        && g == "65534 65534 65534 65534"
        && (groups.is_empty() || groups == NOBODY)
}

/// Copies of `files` in a fresh root-only directory (0700), each 0400: what the dropped
/// user cannot read. Returns the new paths in order.
fn root_only(files: &[&Path]) -> Vec<PathBuf> {
    let dir = scratch("root-only");
    let priv_dir = dir.join("private");
    std::fs::create_dir(&priv_dir).expect("mkdir");
    let out: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = format!("{i}-{}", f.file_name().unwrap().to_string_lossy());
            let p = priv_dir.join(name);
            std::fs::copy(f, &p).expect("copy");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).expect("chmod");
            p
        })
        .collect();
    std::fs::set_permissions(&priv_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // the test can fail: the dropped user really cannot read them
    for p in &out {
        let mut c = Command::new("/bin/cat");
        c.arg(p).uid(65534).gid(65534).stdout(Stdio::null());
        let o = proc::run(&mut c, None, WAIT);
        assert_ne!(o.code(), 0, "uid 65534 can read {}", p.display());
    }
    out
}

fn needs_root() -> bool {
    if is_root() {
        true
    } else {
        skip("needs root (privilege drop)")
    }
}

// ------------------------------------------------------------------ privileges

/// tlsd: the engine runs as TLS_UID/TLS_GID from before the handshake: with a client that
/// connected but has not sent its ClientHello yet, the tlsd process already has uid, gid
/// and groups 65534 only. Then the handshake completes on that very connection.
#[test]
fn tlsd_handshake_already_runs_as_the_dropped_user() {
    if !needs_root() {
        return;
    }
    let mut env = pair_env(&pki().ec);
    env.push(("TLS_UID", NOBODY.into()));
    env.push(("TLS_GID", NOBODY.into()));
    let refs: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let mut spawn = Spawn::tlsd(&sh_args(&[], "echo \"app uid=$(id -u)\""), &refs);
    spawn.groups = Some(vec![4242, 27]);
    let l = TinyListener::start(spawn);
    let tcp = l.connect();
    let pid = l.next_started(WAIT);
    let ok = proc::wait_for(Duration::from_secs(10), || dropped(pid));
    assert!(
        ok,
        "before the handshake, tlsd still has {:?} (want 65534 everywhere)",
        creds(pid)
    );
    let mut c = client::handshake(tcp, &ClientOpts::default()).expect("handshake");
    let (reply, end) = c.read_to_end();
    assert_eq!(
        reply, b"app uid=0\n",
        "the app keeps the original credentials"
    );
    assert_eq!(end, End::CloseNotify);
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 0, "{}", s.stderr_str());
}

/// tlsc with TLS_UID/TLS_GID: after the handshake the engine (the tlsc process) has uid,
/// gid and groups 65534 only; the app keeps root and its supplementary groups.
#[test]
fn tlsc_privilege_drop_after_handshake() {
    if !needs_root() {
        return;
    }
    let (line_tx, line_rx) = mpsc::channel::<Vec<u8>>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let srv = OneShotServer::start(
        ServerOpts::new(&pki().ec),
        Box::new(move |s: &mut SslStream<TcpStream>| {
            let mut line = Vec::new();
            let mut b = [0u8; 256];
            while !line.ends_with(b"\n") {
                match s.ssl_read(&mut b) {
                    Ok(n) => line.extend_from_slice(&b[..n]),
                    Err(_) => break,
                }
            }
            let _ = line_tx.send(line);
            let _ = go_rx.recv_timeout(Duration::from_secs(30));
            let _ = s.shutdown();
            let (rest, _) = client::server_read_to_end(s);
            rest
        }),
    );
    let sock = TcpStream::connect(srv.addr).expect("connect");
    let mut c = Tlsc::new(&sh_args(
        &["-k", "localhost"],
        "echo \"uid=$(id -u) groups=$(id -G)\" >&7; cat <&6 >/dev/null; echo bye >&7",
    ))
    .env("TLS_UID", NOBODY)
    .env("TLS_GID", NOBODY)
    .command();
    c.env("TCPREMOTEIP", "127.0.0.1");
    let fd = sock.as_raw_fd();
    proc::map_fds(&mut c, &[(fd, 6), (fd, 7)]);
    // SAFETY: setgroups is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            let g: [libc::gid_t; 2] = [4242, 27];
            if libc::setgroups(2, g.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.stdin(Stdio::null());
    let r = Running::start(&mut c);
    drop(c);
    drop(sock);
    let line = line_rx
        .recv_timeout(WAIT)
        .expect("the app's first line through tlsc");
    let line = String::from_utf8_lossy(&line).into_owned();
    let engine = creds(r.pid());
    let _ = go_tx.send(());
    let o = r.finish(WAIT);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert!(
        line.starts_with("uid=0 ") && line.contains("4242"),
        "the app keeps root and its groups: {line}"
    );
    assert_eq!(engine.0, "65534 65534 65534 65534", "engine uid");
    assert_eq!(engine.1, "65534 65534 65534 65534", "engine gid");
    assert!(
        engine.2.is_empty() || engine.2 == NOBODY,
        "engine keeps supplementary groups: {:?}",
        engine.2
    );
    let rep = srv.report(WAIT);
    assert_eq!(rep.result.as_deref(), Some(&b"bye\n"[..]));
}

/// tlsc: the handshake too runs as the dropped user (the server accepted and stays
/// silent: tlsc waits for its ServerHello already as 65534).
#[test]
fn tlsc_handshake_already_runs_as_the_dropped_user() {
    if !needs_root() {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let sock = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (held, _) = l.accept().expect("accept");
    let r = Tlsc::new(&sh_args(&["-k", "localhost", "-K", "20000"], "true"))
        .env("TLS_UID", NOBODY)
        .env("TLS_GID", NOBODY)
        .spawn(sock, Stdio::null());
    let pid = r.pid();
    let ok = proc::wait_for(Duration::from_secs(10), || dropped(pid));
    let seen = creds(pid);
    drop(held);
    let o = r.finish(WAIT);
    assert!(ok, "during the handshake tlsc has {seen:?}");
    assert_eq!(o.code(), 97, "{}", o.stderr_str());
}

// ------------------------------------------------------------------ root-only key files

/// CERTFILE/KEYFILE (and the SNI pair) readable only by root, TLS_UID set: tlsd reads them
/// before the drop and serves. With -k 1 the named pair is chosen after the drop, so its
/// files must have been opened before it too.
#[test]
fn tlsd_root_only_key_files_work_with_tls_uid() {
    if !needs_root() {
        return;
    }
    let p = pki();
    let files = root_only(&[&p.ec.cert, &p.ec.key, &p.a.cert, &p.a.key, &p.ca]);
    let env = vec![
        ("CERTFILE", files[0].clone()),
        ("KEYFILE", files[1].clone()),
        ("CERTFILE:a.test", files[2].clone()),
        ("KEYFILE:a.test", files[3].clone()),
        ("CAFILE", files[4].clone()),
        ("TLS_UID", NOBODY.into()),
        ("TLS_GID", NOBODY.into()),
    ];
    let l = tlsd(
        &["-k", "1", "-Y"],
        "echo \"ok ${SSL_PEER_CERT_SUBJECT-}\"",
        &env,
    );
    for (sni, cn) in [("localhost", &p.ec.cn), ("a.test", &p.a.cn)] {
        let o = ClientOpts {
            sni: Some(sni.into()),
            verify_name: Some(sni.into()),
            ..Default::default()
        }
        .with_cert(&p.client);
        let mut c = client::connect(l.addr, &o).unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert_eq!(c.peer_cn().as_ref(), Some(cn), "{sni}");
        let (reply, end) = c.read_to_end();
        assert_eq!(reply, b"ok CN=client,O=Test\n", "{sni}");
        assert_eq!(end, End::CloseNotify);
        let s = l.next_session(WAIT);
        assert_eq!(s.code(), 0, "{sni}: {}", s.stderr_str());
    }
}

/// tlsc with a root-only client certificate, key and CAFILE and TLS_UID set: it still
/// verifies the server and presents its certificate.
#[test]
fn tlsc_root_only_key_files_work_with_tls_uid() {
    if !needs_root() {
        return;
    }
    let p = pki();
    let files = root_only(&[&p.client.cert, &p.client.key, &p.ca]);
    let server_env = {
        let mut e = pair_env(&p.ec);
        e.push(("CAFILE", p.ca.clone()));
        e
    };
    let l = tlsd(&["-y"], "echo \"$SSL_PEER_CERT_SUBJECT\"", &server_env);
    let o = Tlsc::bare(&sh_args(&["-k", "localhost", "-y"], "cat <&6"))
        .env("CERTFILE", &files[0])
        .env("KEYFILE", &files[1])
        .env("CAFILE", &files[2])
        .env("TLS_UID", NOBODY)
        .env("TLS_GID", NOBODY)
        .run(l.port(), None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "CN=client,O=Test\n");
    assert_eq!(l.next_session(WAIT).code(), 0);
}

// ------------------------------------------------------------------ what the app inherits

/// Check what process `pid` (the app, exec'd into `cat`) inherited: no secret variable,
/// nothing naming or holding key material in its environment, no descriptor to a key
/// file, and no descriptor but `fds_allowed`.
fn check_inherited(pid: u32, secret_paths: &[&Path], fds_allowed: &[&str], who: &str) {
    // the app printed its pid, then exec'd cat: look at cat, not at the shell, and only
    // once its exec is complete (comm changes before the new environment is in place)
    let is_cat = || {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        comm.trim() == "cat" && !environ.is_empty()
    };
    assert!(
        proc::wait_for(Duration::from_secs(10), is_cat),
        "{who}: the app did not exec cat"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let env: BTreeMap<String, String> = environ
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let e = String::from_utf8_lossy(e).into_owned();
            match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e, String::new()),
            }
        })
        .collect();
    assert!(env.contains_key("SSL_PROTOCOL"), "{who}: {env:?}");
    for (k, v) in &env {
        for secret in [
            "CERTFILE", "KEYFILE", "CAFILE", "CADIR", "TLS_UID", "TLS_GID",
        ] {
            assert!(!k.starts_with(secret), "{who}: {k} reached the app");
        }
        assert!(
            !v.contains("PRIVATE KEY") && !v.contains("-----BEGIN"),
            "{who}: PEM material in {k}"
        );
        for p in secret_paths {
            assert!(
                !v.contains(&*p.to_string_lossy()),
                "{who}: {k}={v} names a key file"
            );
        }
    }
    // Read after the app's dynamic loader is done: while it maps the app's libraries it
    // holds each one open (e.g. fd 3 -> libc.so.6) for a moment. An inherited descriptor
    // stays; so the reading is retried (bounded) until no extra one is seen.
    let read_fds = || {
        let mut seen = Vec::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the app's fds")
            .flatten()
        {
            let fd = e.file_name().to_string_lossy().into_owned();
            let target = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            for p in secret_paths {
                assert!(
                    !target.contains(&*p.to_string_lossy()),
                    "{who}: fd {fd} -> {target} is a key file"
                );
            }
            seen.push((fd, target));
        }
        let extra: Vec<String> = seen
            .iter()
            .filter(|(fd, _)| !fds_allowed.contains(&fd.as_str()))
            .map(|(fd, t)| format!("{fd} -> {t}"))
            .collect();
        (seen, extra)
    };
    let mut reading = read_fds();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !reading.1.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        reading = read_fds();
    }
    let (seen, extra) = reading;
    assert!(
        extra.is_empty(),
        "{who}: the app inherited descriptors beyond {fds_allowed:?}: {extra:?}"
    );
    assert_eq!(seen.len(), fds_allowed.len(), "{who}: {seen:?}");
}

/// Read a decimal pid line from `read_some`-style chunks until a newline.
fn pid_line(mut next: impl FnMut(&mut [u8]) -> Option<usize>) -> u32 {
    let mut line = Vec::new();
    let mut b = [0u8; 64];
    while !line.ends_with(b"\n") {
        match next(&mut b) {
            Some(n) => line.extend_from_slice(&b[..n]),
            None => break,
        }
    }
    String::from_utf8_lossy(&line)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid line: {line:?}"))
}

/// tlsd: by default the app gets neither the secret variables nor anything naming or
/// holding the key material, and no descriptor but 0, 1, 2.
#[test]
fn tlsd_app_inherits_no_secrets_and_no_descriptors() {
    let p = pki();
    let mut env = pair_env(&p.ec);
    env.extend([
        ("CAFILE", p.ca.clone()),
        ("CADIR", p.cadir.clone()),
        ("CERTFILE:a.test", p.a.cert.clone()),
        ("KEYFILE:a.test", p.a.key.clone()),
    ]);
    if is_root() {
        env.push(("TLS_UID", NOBODY.into()));
        env.push(("TLS_GID", NOBODY.into()));
    }
    // tlsd spawned here, not by the listener: with nothing open but 0, 1, 2
    let lst = TcpListener::bind("127.0.0.1:0").expect("bind");
    let tcp = TcpStream::connect(lst.local_addr().expect("addr")).expect("connect");
    let (srv, _) = lst.accept().expect("accept");
    let mut cmd = Command::new(stls_tests::tlsd());
    cmd.args(sh_args(&["-k", "1", "-Y"], "echo $$; exec cat"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    for (k, v) in &env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::from(std::os::fd::OwnedFd::from(
        srv.try_clone().expect("dup"),
    )))
    .stdout(Stdio::from(std::os::fd::OwnedFd::from(srv)))
    .stderr(Stdio::piped());
    close_other_fds(&mut cmd, &[]);
    let run = Running::adopt(proc::spawn(&mut cmd));
    drop(cmd);
    let mut c =
        client::handshake(tcp, &ClientOpts::default().with_cert(&p.client)).expect("handshake");
    let pid = pid_line(|b| c.read_some(b).ok());
    let keys = [p.ec.key.as_path(), p.a.key.as_path(), p.ec.cert.as_path()];
    check_inherited(pid, &keys, &["0", "1", "2"], "tlsd");
    c.half_close().expect("half-close");
    let (_, end) = c.read_to_end();
    assert_eq!(end, End::CloseNotify);
    let o = run.finish(WAIT);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
}

/// tlsc: the same with a client certificate; the app's descriptors are 0, 1, 2, 6, 7.
#[test]
fn tlsc_app_inherits_no_secrets_and_no_descriptors() {
    let p = pki();
    let (pid_tx, pid_rx) = mpsc::channel::<u32>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let mut sopts = ServerOpts::new(&p.ec);
    sopts.client_ca = Some(p.ca.clone());
    let srv = OneShotServer::start(
        sopts,
        Box::new(move |s: &mut SslStream<TcpStream>| {
            let pid = pid_line(|b| s.ssl_read(b).ok());
            let _ = pid_tx.send(pid);
            let _ = go_rx.recv_timeout(Duration::from_secs(30));
            let _ = s.shutdown();
            client::server_read_to_end(s).0
        }),
    );
    let mut t = Tlsc::new(&sh_args(
        &["-k", "localhost", "-y"],
        "echo $$ >&7; exec cat <&6 >&7",
    ))
    .env("CADIR", &p.cadir)
    .env("CERTFILE", &p.client.cert)
    .env("KEYFILE", &p.client.key);
    if is_root() {
        t = t.env("TLS_UID", NOBODY).env("TLS_GID", NOBODY);
    }
    let sock = TcpStream::connect(srv.addr).expect("connect");
    let mut cmd = t.command();
    cmd.env("TCPREMOTEIP", "127.0.0.1");
    proc::map_fds(&mut cmd, &[(sock.as_raw_fd(), 6), (sock.as_raw_fd(), 7)]);
    close_other_fds(&mut cmd, &[6, 7]);
    cmd.stdin(Stdio::null());
    let r = Running::start(&mut cmd);
    drop(cmd);
    drop(sock);
    let pid = pid_rx.recv_timeout(WAIT).expect("the app's pid");
    let keys = [p.client.key.as_path(), p.client.cert.as_path()];
    let checked = std::panic::catch_unwind(|| {
        check_inherited(pid, &keys, &["0", "1", "2", "6", "7"], "tlsc")
    });
    let _ = go_tx.send(());
    let o = r.finish(WAIT);
    if let Err(e) = checked {
        std::panic::resume_unwind(e);
    }
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    let _ = srv.report(WAIT);
}

// ------------------------------------------------------------------ TLS < 1.2

/// Does a permissive openssl pair (SECLEVEL=0) negotiate `name` with `flag` on this
/// system? Then a refusal by tlsd means something.
fn permissive_pair_negotiates(flag: &str, name: &str) -> bool {
    let extra = [flag, "-cipher", "DEFAULT@SECLEVEL=0"];
    let (srv, port) = peers::s_server(&pki().ec, &extra, b"");
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .arg("-CAfile")
        .arg(&pki().ca);
    let o = proc::run(&mut c, Some(b""), WAIT);
    drop(srv);
    peers::negotiated(&o.stdout_str(), name)
}

/// tlsd refuses TLS 1.0 and 1.1 clients, even permissive ones: 97, one line, the app never
/// runs; the permissive client first shown to get 1.0/1.1 from a permissive server.
#[test]
fn tlsd_refuses_tls10_and_tls11_clients() {
    if !require("openssl") {
        return;
    }
    for (flag, name) in [("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")] {
        if !permissive_pair_negotiates(flag, name) {
            skip(&format!(
                "this OpenSSL cannot negotiate {name} even at SECLEVEL=0: the refusal would prove nothing"
            ));
            continue;
        }
        let dir = scratch("old-tls");
        let marker = peers::marker(&dir);
        let l = tlsd(
            &[],
            &format!("touch '{}'; echo ran", marker.display()),
            &pair_env(&pki().ec),
        );
        let mut c = Command::new("openssl");
        c.args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{}", l.port()))
            .args([flag, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile"])
            .arg(&pki().ca);
        let o = proc::run(&mut c, Some(b""), WAIT);
        assert!(
            !peers::negotiated(&o.stdout_str(), name),
            "{name} negotiated with tlsd: {}",
            o.stdout_str()
        );
        assert!(!o.stdout_str().contains("ran"));
        let s = l.next_session(WAIT);
        assert_fatal(&s, 97, name);
        assert!(!marker.exists(), "{name}: the app ran");
    }
}

// ------------------------------------------------------------------ fail closed

/// tlsd -Y (optional client certificate): a client that presents a certificate from an
/// unknown CA is refused (97), not treated as a client without one.
#[test]
fn tlsd_optional_client_cert_untrusted_is_refused() {
    let p = pki();
    let dir = scratch("Y-untrusted");
    let marker = peers::marker(&dir);
    let mut env = pair_env(&p.ec);
    env.push(("CAFILE", p.ca.clone()));
    let l = tlsd(
        &["-Y"],
        &format!(
            "touch '{}'; echo \"${{SSL_PEER_CERT_SUBJECT-none}}\"",
            marker.display()
        ),
        &env,
    );
    for o in [
        ClientOpts::tls12().with_cert(&p.untrusted_client),
        ClientOpts::tls13().with_cert(&p.untrusted_client),
    ] {
        if let Ok(mut c) = client::connect(l.addr, &o) {
            let (reply, _) = c.read_to_end();
            assert!(reply.is_empty(), "the app ran: {:?}", reply);
        }
        let s = l.next_session(WAIT);
        assert_fatal(&s, 97, "-Y with an untrusted client certificate");
    }
    assert!(!marker.exists(), "the app ran");
}

/// tlsc fails closed in every form: with the app (prog), in the io form and in the
/// `ADDR PORT` form, an untrusted server gets none of the client's data, the client's
/// stdout stays empty, exit 97 with one line. `--no-verify-name` still verifies the chain.
#[test]
fn tlsc_fails_closed_in_every_form() {
    let p = pki();
    let cases: Vec<(&str, Vec<&str>, bool)> = vec![
        ("prog form", vec!["-k", "localhost"], true),
        ("io form", vec!["-k", "localhost"], false),
        ("--no-verify-name", vec!["--no-verify-name"], false),
    ];
    for (what, opts, prog_form) in cases {
        let dir = scratch("fail-closed");
        let marker = peers::marker(&dir);
        let srv = OneShotServer::start(
            ServerOpts::new(&p.untrusted),
            Box::new(|s: &mut SslStream<TcpStream>| client::server_read_to_end(s).0),
        );
        let args: Vec<OsString> = if prog_form {
            sh_args(
                &opts,
                &format!("touch '{}'; echo secret >&7", marker.display()),
            )
        } else {
            opts.iter().map(OsString::from).collect()
        };
        let o = Tlsc::new(&args).run(srv.port(), Some(b"secret from stdin\n"));
        check_closed(&o, what);
        assert!(!marker.exists(), "{what}: the app ran");
        let rep = srv.report(WAIT);
        assert!(
            rep.result.as_deref().unwrap_or_default().is_empty(),
            "{what}: the untrusted server got data"
        );
    }
    // ADDR PORT form
    let srv = OneShotServer::start(
        ServerOpts::new(&p.untrusted),
        Box::new(|s: &mut SslStream<TcpStream>| client::server_read_to_end(s).0),
    );
    let mut c = Tlsc::new(&["-k", "localhost", "127.0.0.1", &srv.port().to_string()]).command();
    let o = proc::run(&mut c, Some(b"secret from stdin\n"), WAIT);
    check_closed(&o, "ADDR PORT form");
    let rep = srv.report(WAIT);
    assert!(rep.result.as_deref().unwrap_or_default().is_empty());
}

fn check_closed(o: &Outcome, what: &str) {
    assert_eq!(o.code(), 97, "{what}: {}", o.stderr_str());
    assert!(
        one_fatal_line(&o.stderr_str(), "tlsc"),
        "{what}: {:?}",
        o.stderr_str()
    );
    assert!(o.stdout.is_empty(), "{what}: stdout {:?}", o.stdout_str());
}

/// A root-only copy of the hashed CA directory.
fn root_only_cadir() -> PathBuf {
    let p = pki();
    let dir = scratch("root-only-cadir");
    let cadir = dir.join("cadir");
    std::fs::create_dir(&cadir).expect("mkdir");
    for e in std::fs::read_dir(&p.cadir).expect("cadir").flatten() {
        let to = cadir.join(e.file_name());
        std::fs::copy(e.path(), &to).expect("copy");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    }
    std::fs::set_permissions(&cadir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut c = Command::new("/bin/ls");
    c.arg(&cadir).uid(65534).gid(65534).stdout(Stdio::null());
    assert_ne!(
        proc::run(&mut c, None, WAIT).code(),
        0,
        "uid 65534 reads it"
    );
    cadir
}

/// CADIR readable only by root, TLS_UID set: OpenSSL looks certificates up in a hashed
/// directory lazily, during the handshake, i.e. after the drop. tlsd -y must still verify
/// the client (read the directory before the drop, or fail at start-up with 96, never
/// reject good clients at handshake time).
#[test]
fn tlsd_root_only_cadir_works_with_tls_uid() {
    if !needs_root() {
        return;
    }
    let mut env = pair_env(&pki().ec);
    env.push(("CADIR", root_only_cadir()));
    env.push(("TLS_UID", NOBODY.into()));
    env.push(("TLS_GID", NOBODY.into()));
    let l = tlsd(&["-y"], "echo \"$SSL_PEER_CERT_SUBJECT\"", &env);
    let r = client::connect(l.addr, &ClientOpts::default().with_cert(&pki().client))
        .map(|mut c| c.read_to_end());
    let s = l.next_session(WAIT);
    assert_eq!(s.code(), 0, "{}", s.stderr_str());
    let (reply, _) = r.expect("handshake");
    assert_eq!(reply, b"CN=client,O=Test\n");
}

/// The same for tlsc verifying the server against a root-only CADIR.
#[test]
fn tlsc_root_only_cadir_works_with_tls_uid() {
    if !needs_root() {
        return;
    }
    let l = tlsd(&[], "echo ok", &pair_env(&pki().ec));
    let o = Tlsc::bare(&sh_args(&["-k", "localhost"], "cat <&6"))
        .env("CADIR", root_only_cadir())
        .env("TLS_UID", NOBODY)
        .env("TLS_GID", NOBODY)
        .run(l.port(), None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert_eq!(o.stdout_str(), "ok\n");
}
