//! Confinement (stls(7), "Confinement"): the process that runs the handshake and the
//! engine is in the sandbox during a session (`Seccomp: 2`, `NoNewPrivs: 1` in its
//! /proc status) in every program, and prog is not; from inside, it can neither open a
//! file, connect, bind, exec nor signal a process outside, and the attempt is one line
//! naming the call and exit 111, prog ended; `--no-sandbox` and a kernel without Landlock.

use std::ffi::OsString;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use stls_tests::client::{self, ClientOpts};
use stls_tests::listener::{Spawn, TinyListener};
use stls_tests::peers::Tlsc;
use stls_tests::tlsserver::Server;
use stls_tests::{bins, pki, proc, require, scratch, shim};

/// prog's report: the engine's (its parent's) confinement and its own, one line.
const REPORT: &str = r#"st() { grep -E '^(NoNewPrivs|Seccomp):' "/proc/$1/status" | tr -d ' \t' | tr '\n' ';'; }
echo "engine=$(st $PPID) prog=$(st $$)""#;

const CONFINED: &str = "engine=NoNewPrivs:1;Seccomp:2;";
const FREE_PROG: &str = "prog=NoNewPrivs:0;Seccomp:0;";

fn sh(script: &str) -> Vec<OsString> {
    ["--", "/bin/sh", "-c", script]
        .iter()
        .map(OsString::from)
        .collect()
}

fn pair_env() -> Vec<(&'static str, PathBuf)> {
    let p = &pki().ec;
    vec![("CERTFILE", p.cert.clone()), ("KEYFILE", p.key.clone())]
}

fn spawn(program: &str, args: &[OsString]) -> Spawn {
    let env = pair_env();
    let env: Vec<(&str, &std::path::Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let mut s = Spawn::tlsd(args, &env);
    s.program = bins::bin(program);
    s
}

/// The first line a TLS client reads from `addr`.
fn first_line(addr: std::net::SocketAddr) -> String {
    let mut c = client::connect(addr, &ClientOpts::default()).expect("handshake");
    let (got, _) = c.read_to_end();
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn assert_confined(line: &str, what: &str) {
    assert!(line.contains(CONFINED), "{what}: the engine: {line}");
    assert!(line.contains(FREE_PROG), "{what}: prog: {line}");
}

#[test]
fn server_side_engines_are_confined_and_prog_is_not() {
    let l = TinyListener::start(spawn("tlsd", &sh(REPORT)));
    let line = first_line(([127, 0, 0, 1], l.port()).into());
    assert_confined(&line, "tlsd");
    assert_eq!(l.next_session(Duration::from_secs(30)).code(), 0);

    let argv = ["/bin/sh", "-c", REPORT];
    for (what, opts) in [("tlsserver", &[][..]), ("tlsserver -u", &["-u", "0"][..])] {
        let s = Server::start(opts, "127.0.0.1", &argv);
        assert_confined(&first_line(s.addr()), what);
        assert_eq!(s.stop(), 0);
    }

    // Delayed TLS: prog asks for TLS at once, waits for the description (the handshake is
    // done), then reports through SSLWRITEFD.
    let delayed =
        format!("printf Y >&$SSLCTLFD; cat <&$SSLCTLFD >/dev/null; exec >&$SSLWRITEFD; {REPORT}");
    // bash: dash takes no fd above 9 in a redirection.
    let s = Server::start(&["-n"], "127.0.0.1", &["/bin/bash", "-c", &delayed]);
    assert_confined(&first_line(s.addr()), "tlsserver -n");
    assert_eq!(s.stop(), 0);
    let bash: Vec<OsString> = ["--", "/bin/bash", "-c", &delayed]
        .iter()
        .map(OsString::from)
        .collect();
    let l = TinyListener::start(spawn("ucspitlsd", &bash));
    assert_confined(&first_line(([127, 0, 0, 1], l.port()).into()), "ucspitlsd");
    assert_eq!(l.next_session(Duration::from_secs(30)).code(), 0);
}

/// A tlsd that answers `hello` and waits for the client to close.
fn echo_server() -> TinyListener {
    TinyListener::start(spawn("tlsd", &sh("echo hello; cat >/dev/null")))
}

#[test]
fn client_side_engines_are_confined_and_prog_is_not() {
    let l = echo_server();
    let script = format!("{REPORT}; exec 7>&-; cat <&6 >/dev/null");
    let o = Tlsc::new(&{
        let mut a: Vec<OsString> = vec!["-k".into(), "localhost".into()];
        a.extend(sh(&script));
        a
    })
    .run(l.port(), None);
    assert_eq!(o.code(), 0, "tlsc: {}", o.stderr_str());
    assert_confined(&o.stdout_str(), "tlsc");

    let mut c = Command::new(bins::bin("tlsclient"));
    c.env("CAFILE", &pki().ca)
        .args(["localhost", &l.port().to_string(), "/bin/sh", "-c", &script]);
    let o = proc::run(&mut c, None, Duration::from_secs(30));
    assert_eq!(o.code(), 0, "tlsclient: {}", o.stderr_str());
    assert_confined(&o.stdout_str(), "tlsclient");

    let delayed = format!("printf Y >&$SSLCTLFD; cat <&$SSLCTLFD >/dev/null; {REPORT}");
    let sock = TcpStream::connect(("127.0.0.1", l.port())).expect("connect");
    let mut c = Command::new(bins::bin("ucspitlsc"));
    c.env("CAFILE", &pki().ca)
        .args(["-k", "localhost", "--", "/bin/bash", "-c", &delayed]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    proc::map_fds(&mut c, &[(fd, 6), (fd, 7)]);
    let o = proc::run(&mut c, None, Duration::from_secs(30));
    drop(sock);
    assert_eq!(o.code(), 0, "ucspitlsc: {}", o.stderr_str());
    assert_confined(&o.stdout_str(), "ucspitlsc");
}

/// The status of the tlsc that runs a shimmed connection (the io form, detached; or a
/// connection's process of the pre-started helper, `helper`), found by a marker in its
/// environment while its session is open (it has no prog to report), with `extra`
/// variables for the shim. The helper itself (`--serve`) is not a connection's process.
fn shim_tlsc_status(helper: bool, extra: &[(&str, &str)], want: &str) -> String {
    let l = TinyListener::start(spawn("tlsd", &sh("sleep 3; echo hello")));
    let port = l.port();
    let what = if helper { "helper" } else { "direct" };
    let marker = shim::Marker::new("STLS_SANDBOX_TEST", what, port);
    let mut vars = marker.on(shim::shim_vars(&port.to_string()));
    if !helper {
        vars = shim::with(vars, "AUTOSSL_HELPER", "0");
    }
    for (k, v) in extra {
        vars = shim::with(vars, k, v);
    }
    let code = format!(
        "import socket; s=socket.create_connection(('127.0.0.1',{port})); print(s.recv(100))"
    );
    let client = std::thread::spawn(move || shim::run(&["python3", "-c", &code], &vars, None));
    let mut seen = String::new();
    let mut found = None;
    let mut all = Vec::new();
    proc::wait_for(Duration::from_secs(20), || {
        for pid in marker.processes() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            all.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            // The helper's connections are forks of it: the same command line, the helper
            // their parent.
            let parent = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .map(|p| p.trim().to_string())
                .unwrap_or_default();
            let parent_exe = std::fs::read_link(format!("/proc/{parent}/exe")).unwrap_or_default();
            let helper_itself = String::from_utf8_lossy(&cmd).contains("--serve=")
                && parent_exe.file_name().is_none_or(|n| n != "tlsc");
            if exe.file_name().is_some_and(|n| n == "tlsc") && !helper_itself {
                found = Some(pid);
                seen = status;
                return seen.contains(want);
            }
        }
        false
    });
    // Looked at again once its handshake is surely done (the server's prog sleeps 3 s).
    std::thread::sleep(Duration::from_millis(700));
    if let Some(pid) = found {
        if let Ok(now) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            seen = now;
        }
    }
    let o = client.join().expect("client");
    assert!(
        o.stdout_str().contains("hello"),
        "{what}: {}",
        o.stderr_str()
    );
    all.dedup();
    format!("{seen}\n(the marked processes: {all:?})")
}

#[test]
fn the_shims_tlsc_is_confined() {
    if !(shim::ready(&["python3"]) && shim::namespaces()) {
        return;
    }
    for helper in [true, false] {
        let seen = shim_tlsc_status(helper, &[], "Seccomp:\t2");
        assert!(seen.contains("Seccomp:\t2"), "helper {helper}: {seen}");
        assert!(seen.contains("NoNewPrivs:\t1"), "helper {helper}: {seen}");
    }
}

/// A library preloaded into tlsd whose SIGUSR2 handler, in the confined engine, tries what
/// STLS_ATTEMPT names; if the call comes back, it says ESCAPED.
const ATTEMPT_C: &str = r#"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
extern char **environ;
static const char *what;
static pid_t outside;
static void attempt(int sig) {
    (void)sig;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(9);
    a.sin_addr.s_addr = htonl(0x7f000001);
    char *argv[] = {"/bin/true", 0};
    if (!strcmp(what, "open")) open("/etc/passwd", O_RDONLY);
    else if (!strcmp(what, "connect")) connect(0, (struct sockaddr *)&a, sizeof a);
    else if (!strcmp(what, "bind")) bind(0, (struct sockaddr *)&a, sizeof a);
    else if (!strcmp(what, "exec")) execve("/bin/true", argv, environ);
    else if (!strcmp(what, "signal")) kill(outside, 0);
    write(2, "ESCAPED\n", 8);
}
__attribute__((constructor)) static void init(void) {
    what = getenv("STLS_ATTEMPT");
    outside = getppid();
    if (!what) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = attempt;
    sigaction(SIGUSR2, &sa, 0);
}
"#;

fn compile(name: &str, source: &str, shared: bool) -> PathBuf {
    let dir = scratch("sandbox");
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("source");
    let out = dir.join(name);
    let mut c = Command::new("cc");
    c.arg("-O").arg("-o").arg(&out).arg(&src);
    if shared {
        c.args(["-shared", "-fPIC"]);
    }
    let o = proc::run(&mut c, None, Duration::from_secs(120));
    assert_eq!(o.code(), 0, "cc: {}", o.stderr_str());
    out
}

#[test]
fn attempts_from_inside_are_stopped_and_reported() {
    if !require("cc") {
        return;
    }
    let lib = compile("libattempt.so", ATTEMPT_C, true);
    for (what, call) in [
        ("open", "openat"),
        ("connect", "connect"),
        ("bind", "bind"),
        ("exec", "execve"),
        ("signal", "kill"),
    ] {
        // prog says its pid and its parent's (the engine), then waits for the end.
        let s = spawn("tlsd", &sh("echo $$ $PPID; exec cat"))
            .env("LD_PRELOAD", &lib)
            .env("STLS_ATTEMPT", what);
        let l = TinyListener::start(s);
        let mut c = client::connect(([127, 0, 0, 1], l.port()).into(), &ClientOpts::default())
            .expect("handshake");
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.contains(&b'\n') && got.len() < buf.len() {
            match c.read_some(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{what}: no pids from prog: {e:?}"),
            }
        }
        let text = String::from_utf8_lossy(&got).to_string();
        let pids: Vec<i32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        assert_eq!(pids.len(), 2, "{what}: {text}");
        let (prog, engine) = (pids[0], pids[1]);
        // SAFETY: kill(2) on the engine's pid, which the test's listener started.
        unsafe { libc::kill(engine, libc::SIGUSR2) };
        let session = l.next_session(Duration::from_secs(30));
        let err = session.stderr_str();
        assert_eq!(session.code(), 111, "{what}: {err}");
        assert!(!err.contains("ESCAPED"), "{what}: {err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one line: {err}");
        assert!(
            lines[0].starts_with(&format!(
                "tlsd: fatal: the sandbox stopped system call {call} ("
            )) && lines[0].contains("report it")
                && lines[0].contains("--no-sandbox"),
            "{what}: {err}"
        );
        let ended = proc::wait_for(Duration::from_secs(10), || !proc::alive(prog as u32));
        assert!(ended, "{what}: prog {prog} still runs");
        let _ = c.read_to_end();
    }
}

#[test]
fn no_sandbox_restores_an_unconfined_engine() {
    let mut args: Vec<OsString> = vec!["--no-sandbox".into()];
    args.extend(sh(REPORT));
    let l = TinyListener::start(spawn("tlsd", &args));
    let line = first_line(([127, 0, 0, 1], l.port()).into());
    assert!(line.contains("engine=NoNewPrivs:0;Seccomp:0;"), "{line}");
    assert_eq!(l.next_session(Duration::from_secs(30)).code(), 0);

    let s = Server::start(&["--no-sandbox"], "127.0.0.1", &["/bin/sh", "-c", REPORT]);
    assert!(first_line(s.addr()).contains("engine=NoNewPrivs:0;Seccomp:0;"));
    assert_eq!(s.stop(), 0);
}

/// Installs a filter that makes landlock_create_ruleset fail with ENOSYS, as on a kernel
/// without Landlock, then runs its arguments.
const NO_LANDLOCK_C: &str = r#"
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#endif
int main(int argc, char **argv) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_landlock_create_ruleset, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog p = {sizeof f / sizeof f[0], f};
    if (argc < 2 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p)) {
        perror("no-landlock");
        return 111;
    }
    execv(argv[1], argv + 1);
    perror("no-landlock: execv");
    return 127;
}
"#;

/// tlsd -v 2 serving one session of `echo hello` (under `wrapper`, which runs tlsd, if
/// given): its stderr, once the session ended with 0.
fn hello_at_verbosity_2(wrapper: Option<PathBuf>) -> String {
    let mut args: Vec<OsString> = Vec::new();
    if wrapper.is_some() {
        args.push(bins::tlsd().into());
    }
    args.extend(["-v".into(), "2".into()]);
    args.extend(sh("echo hello"));
    let mut s = spawn("tlsd", &args);
    if let Some(w) = wrapper {
        s.program = w;
    }
    let l = TinyListener::start(s);
    let mut c = client::connect(([127, 0, 0, 1], l.port()).into(), &ClientOpts::default())
        .expect("handshake");
    let (got, _) = c.read_to_end();
    assert_eq!(String::from_utf8_lossy(&got), "hello\n");
    let session = l.next_session(Duration::from_secs(30));
    assert_eq!(session.code(), 0, "{}", session.stderr_str());
    session.stderr_str()
}

#[test]
fn without_landlock_the_engine_still_serves() {
    if !require("cc") {
        return;
    }
    let wrapper = compile("no-landlock", NO_LANDLOCK_C, false);
    let err = hello_at_verbosity_2(Some(wrapper));
    assert_eq!(
        err.matches("no Landlock").count(),
        1,
        "said once at -v 2: {err}"
    );
}

#[test]
fn a_partial_landlock_is_said_once_at_verbosity_2() {
    let abi = stls::sandbox::landlock_abi();
    let err = hello_at_verbosity_2(None);
    let said = err.matches("does not restrict").count();
    // ABI 10 enforces every rule asked for; no Landlock at all has its own line.
    let expected = usize::from((1..10).contains(&abi));
    assert_eq!(said, expected, "Landlock ABI {abi}: {err}");
    if expected == 1 {
        assert!(err.contains(&format!("Landlock (ABI {abi})")), "{err}");
        assert!(
            err.contains("the seccomp filter stops those calls"),
            "{err}"
        );
    }
}

#[test]
fn the_shim_passes_autossl_no_sandbox_on() {
    if !(shim::ready(&["python3"]) && shim::namespaces()) {
        return;
    }
    for helper in [true, false] {
        let seen = shim_tlsc_status(helper, &[("AUTOSSL_NO_SANDBOX", "1")], "Seccomp:");
        assert!(seen.contains("Seccomp:\t0"), "helper {helper}: {seen}");
    }
}

/// A client naming `name` (no chain or name check): the served certificate's CN, and
/// prog's line (the engine's confinement and prog's).
fn served(addr: std::net::SocketAddr, name: &str) -> Result<(String, String), String> {
    let o = ClientOpts {
        sni: Some(name.into()),
        verify_name: None,
        ..Default::default()
    };
    let mut c = client::connect(addr, &o)?;
    let (got, _) = c.read_to_end();
    let line = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    Ok((c.peer_cn().unwrap_or_default(), line))
}

/// In the sandbox, which opens no file, the pairs' files are opened before it and read
/// when a name chooses them: 300 pairs on two distinct certificates serve the right one
/// to each name, confined; a broken pair (a file missing, a directory, a file that is not
/// a certificate) fails only the connection that names it, with 96 and the file named.
#[test]
fn sni_pairs_are_read_in_the_sandbox_only_when_named() {
    let dir = scratch("sandbox-sni");
    let p = pki();
    let missing = dir.join("nope.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, b"not a certificate\n").expect("write a scratch file");
    let mut args: Vec<OsString> = vec!["--sni".into()];
    args.extend(sh(REPORT));
    let mut s = Spawn::tlsd(
        &args,
        &[
            ("CERTFILE", p.ec.cert.as_path()),
            ("KEYFILE", p.ec.key.as_path()),
            ("CERTFILE:missing.test", missing.as_path()),
            ("KEYFILE:missing.test", p.a.key.as_path()),
            ("CERTFILE:dir.test", dir.as_path()),
            ("KEYFILE:dir.test", p.a.key.as_path()),
            ("CERTFILE:garbage.test", garbage.as_path()),
            ("KEYFILE:garbage.test", p.a.key.as_path()),
        ],
    );
    // 297 names, every third on b.test's files, the others on a.test's: two files each.
    for i in 0..297 {
        let pair = if i % 3 == 0 { &p.b } else { &p.a };
        s = s
            .env(&format!("CERTFILE:n{i}.test"), &pair.cert)
            .env(&format!("KEYFILE:n{i}.test"), &pair.key);
    }
    let l = TinyListener::start(s);
    let addr = ([127, 0, 0, 1], l.port()).into();
    let wait = Duration::from_secs(30);
    for (name, cn) in [
        ("n0.test", "b.test"),
        ("n1.test", "a.test"),
        ("n296.test", "a.test"),
        ("other.test", "localhost"),
    ] {
        let (got, line) = served(addr, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, cn, "{name}");
        assert_confined(&line, name);
        let s = l.next_session(wait);
        assert_eq!(s.code(), 0, "{name}: {}", s.stderr_str());
    }
    for (name, file) in [
        ("missing.test", &missing),
        ("dir.test", &dir),
        ("garbage.test", &garbage),
    ] {
        assert!(served(addr, name).is_err(), "{name} must fail");
        let s = l.next_session(wait);
        let err = s.stderr_str();
        assert_eq!(s.code(), 96, "{name}: {err}");
        assert!(
            stls_tests::peers::one_fatal_line(&err, "tlsd")
                && err.contains(&file.display().to_string()),
            "{name}: the file is named: {err}"
        );
    }
}
