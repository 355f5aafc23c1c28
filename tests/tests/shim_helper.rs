//! The shim's pre-started helper (`tlsc --serve`): what must be refused is refused (another
//! user), a killed helper ends only its own connections, many processes starting at once
//! start one helper, and a program that is PID 1 of its namespace is left no zombie.

use std::process::Command;
use std::time::Duration;

use stls_tests::shim::{self, is_pre_started_helper, python_arg, quiet, tls_server, with, NAME};
use stls_tests::{pki, proc, scratch};

fn app(name: &str) -> String {
    stls_tests::bins::workspace()
        .join("tests/apps/shim")
        .join(name)
        .display()
        .to_string()
}

/// A variable unique to this call: its own helper (the environment is the helper's key).
/// These tests are of the helper: in `make test`'s second pass (AUTOSSL_HELPER=0 in the
/// environment, which `shim_vars` passes on) their programs still use it.
fn own_helper(mut vars: Vec<(String, String)>, what: &str) -> Vec<(String, String)> {
    vars.retain(|(k, _)| k != "AUTOSSL_HELPER");
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    with(
        vars,
        "STLS_TEST_HELPER",
        &format!("{what}-{}-{n}", std::process::id()),
    )
}

/// The helpers (session leaders running `tlsc --serve`) whose environment holds `k=v`.
fn helpers_with(entry: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if is_pre_started_helper(pid)
            && proc::alive(pid)
            && env.split(|&b| b == 0).any(|x| x == entry.as_bytes())
        {
            v.push(pid);
        }
    }
    v
}

/// Five runs in a row of a Python program as PID 1 of its PID namespace making 500
/// connections through the shim: every one answered, and no zombie left.
#[test]
fn pid1_makes_500_connections_and_keeps_no_zombie() {
    let Some(s) = tls_server(&[], &pki::pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    for run in 0..5 {
        let vars = own_helper(with(quiet(s.vars()), "AUTOSSL_SNI", NAME), "pid1");
        let mut c = Command::new("unshare");
        c.args(["-pf", "--mount-proc", "env"]);
        c.args(vars.iter().map(|(k, v)| format!("{k}={v}")));
        c.args([
            python_arg().as_str(),
            &app("pid1-many.py"),
            &port,
            "500",
            NAME,
        ]);
        c.env_remove("LD_PRELOAD");
        let o = proc::run(&mut c, None, Duration::from_secs(240));
        let out = o.stdout_str();
        assert_eq!(o.code(), 0, "run {run}: {out}\n{}", o.stderr_str());
        assert!(
            out.contains("pid=1 ok=500 zombies=0"),
            "run {run}: {out}\n{}",
            o.stderr_str()
        );
    }
}

/// Eight processes making their first connection at once start one helper between them.
#[test]
fn many_processes_at_once_start_one_helper() {
    let Some(s) = tls_server(&[], &pki::pki().ec) else {
        return;
    };
    let vars = own_helper(with(quiet(s.vars()), "AUTOSSL_SNI", NAME), "once");
    let entry = vars
        .last()
        .map(|(k, v)| format!("{k}={v}"))
        .unwrap_or_default();
    let port = s.port.to_string();
    let runs: Vec<proc::Running> = (0..8)
        .map(|_| {
            let mut c = shim::namespaced(
                &[
                    python_arg().as_str(),
                    &app("pid1-many.py"),
                    &port,
                    "3",
                    NAME,
                ],
                &vars,
            );
            proc::Running::start(&mut c)
        })
        .collect();
    for r in runs {
        let o = r.finish(Duration::from_secs(60));
        assert!(
            o.stdout_str().contains("ok=3 "),
            "{}\n{}",
            o.stdout_str(),
            o.stderr_str()
        );
    }
    let h = helpers_with(&entry);
    assert_eq!(h.len(), 1, "helpers: {h:?}");
}

const HOLD: &str = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall(b"ECHO\n")
print("connected", flush=True)
sys.stdin.readline()
try:
    s.sendall(b"more")
    s.shutdown(socket.SHUT_WR)
    data = s.recv(65536)
    print("after:", "data" if data else "closed", flush=True)
except OSError as e:
    print("after: error", e.errno, flush=True)
"#;

/// A helper killed while it serves a connection: that connection ends with an error (its
/// process ends with the helper), and the next connect starts a new helper that serves it.
#[test]
fn a_killed_helper_ends_its_connections_and_the_next_starts_anew() {
    let Some(s) = tls_server(&[], &pki::pki().ec) else {
        return;
    };
    let vars = own_helper(with(quiet(s.vars()), "AUTOSSL_SNI", NAME), "killed");
    let entry = vars
        .last()
        .map(|(k, v)| format!("{k}={v}"))
        .unwrap_or_default();
    let port = s.port.to_string();
    let mut c = shim::namespaced(&[python_arg().as_str(), "-c", HOLD, &port], &vars);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("client");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("read");
    assert_eq!(line.trim(), "connected");
    let h = helpers_with(&entry);
    assert_eq!(h.len(), 1, "helpers: {h:?}");
    // SAFETY: kill with plain integers, on the helper found above.
    unsafe { libc::kill(h[0] as libc::pid_t, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"go\n").expect("go");
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    let _ = child.wait();
    assert!(
        rest.contains("after: closed") || rest.contains("after: error"),
        "the connection outlived its helper: {rest}"
    );
    // The next connection: a new helper, served.
    let o = proc::run(
        &mut shim::namespaced(
            &[
                python_arg().as_str(),
                &app("pid1-many.py"),
                &port,
                "2",
                NAME,
            ],
            &vars,
        ),
        None,
        Duration::from_secs(60),
    );
    assert!(
        o.stdout_str().contains("ok=2 "),
        "{}\n{}",
        o.stdout_str(),
        o.stderr_str()
    );
    let again = helpers_with(&entry);
    assert_eq!(again.len(), 1, "helpers: {again:?}");
    assert_ne!(again[0], h[0]);
}

const REACH: &str = r#"
import os, socket, sys
path = sys.argv[1]
try:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.connect(path)
except OSError as e:
    print("connect:", e.errno)
    sys.exit(0)
# Reached: a connection of ours handed over, as the library would.
t = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
a, b = socket.socketpair()
msg = b"stls-helper/1\0" + b"0 1 6 7\0" + b"-k\0" + sys.argv[3].encode() + b"\0"
try:
    socket.send_fds(c, [msg], [b.fileno(), b.fileno(), t.fileno(), t.fileno()])
    a.settimeout(3)
    a.sendall(b"ECHO\n")
    a.shutdown(socket.SHUT_WR)
    print("served:", a.recv(100))
except OSError as e:
    print("send:", e.errno)
"#;

/// Another user can neither reach nor use a user's helper: its directory and socket are
/// closed to others, and when the test opens them, the helper still refuses a peer of
/// another uid before reading a byte.
#[test]
fn another_user_can_neither_reach_nor_use_the_helper() {
    let Some(s) = tls_server(&["setpriv"], &pki::pki().ec) else {
        return;
    };
    let dir = scratch("helper-owner");
    let run = dir.join("run");
    std::fs::create_dir(&run).expect("run dir");
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let vars = own_helper(
        with(
            with(quiet(s.vars()), "AUTOSSL_SNI", NAME),
            "XDG_RUNTIME_DIR",
            &run.display().to_string(),
        ),
        "owner",
    );
    let port = s.port.to_string();
    let o = proc::run(
        &mut shim::namespaced(
            &[
                python_arg().as_str(),
                &app("pid1-many.py"),
                &port,
                "1",
                NAME,
            ],
            &vars,
        ),
        None,
        Duration::from_secs(60),
    );
    assert!(
        o.stdout_str().contains("ok=1 "),
        "{}\n{}",
        o.stdout_str(),
        o.stderr_str()
    );
    let sock = std::fs::read_dir(run.join("stls"))
        .expect("the helper's directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("the helper's socket");
    let as_nobody = |what: &str| {
        let o = proc::run(
            Command::new("setpriv")
                .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(python_arg())
                .args(["-c", REACH, sock.to_str().expect("utf-8"), &port, NAME]),
            None,
            Duration::from_secs(30),
        );
        let out = o.stdout_str();
        assert!(
            !out.contains("served:"),
            "{what}: another user was served: {out}"
        );
        out
    };
    // Closed: the directory (0700) keeps another user out.
    let out = as_nobody("closed directory");
    assert!(out.contains(&format!("connect: {}", libc::EACCES)), "{out}");
    // Opened by the test: the helper checks the peer's uid, and reads nothing of it.
    for d in [dir.as_path(), run.as_path(), run.join("stls").as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .expect("chmod");
    }
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .expect("chmod");
    let out = as_nobody("open socket");
    assert!(out.contains("send:"), "{out}");
}
