//! autossl-shim end to end: real, unmodified clients with `libautossl.so`
//! preloaded, against tlsd (wrapping a small responder) on 127.0.0.1 and ::1, with the
//! test name `tls.test` mapped in a private mount namespace. Every client's answer carries
//! the server's view of the session (`sni=... proto=...`), which a plain-text connection
//! can never produce: that is the proof that interception happened and which name was sent.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stls_tests::listener::{free_port, TinyListener};
use stls_tests::shim::{
    self, assert_tls, library, python_arg, quiet, ready, server, shim_vars, tag, tls_server,
    upgraded_lines, url, with, Blackhole, Marker, NAME, NAME4, TLS_TAG,
};
use stls_tests::{payload, pki, proc, require, scratch};

fn port_vars(port: u16) -> Vec<(String, String)> {
    shim_vars(&port.to_string())
}

// ------------------------------------------------------------------ HTTP clients

/// `cc -O` of `source` into a scratch directory named after `label`; the executable.
fn compile_c(label: &str, name: &str, source: &str, libs: &[&str]) -> std::path::PathBuf {
    let dir = scratch(label);
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("source");
    let exe = dir.join(name);
    let o = proc::run(
        Command::new("cc")
            .arg("-O")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .args(libs),
        None,
        Duration::from_secs(120),
    );
    assert_eq!(o.code(), 0, "cc: {}", o.stderr_str());
    exe
}

#[test]
fn curl_resolved_name_ipv4_ipv6_and_default() {
    let Some(s) = tls_server(&["curl"], &pki().ec) else {
        return;
    };
    let u = s.url(NAME);
    for (flag, ip) in [("-4", Some("127.0.0.1")), ("-6", Some("::1")), ("", None)] {
        let mut cmd = vec!["curl", "-sS", "--max-time", "30"];
        if !flag.is_empty() {
            cmd.push(flag);
        }
        cmd.push(&u);
        let o = s.expect_tls(&format!("curl {flag}"), &cmd, NAME);
        if let Some(ip) = ip {
            let lines = upgraded_lines(&o);
            assert!(
                lines
                    .iter()
                    .all(|l| l.contains(&format!(": {ip} port {}", s.port))),
                "curl {flag}: {lines:?}"
            );
            assert!(
                lines.iter().all(|l| l.contains(&format!("name {NAME}"))),
                "{lines:?}"
            );
        }
    }
}

#[test]
fn wget_and_busybox_wget() {
    let Some(s) = tls_server(&["wget", "busybox"], &pki().rsa) else {
        return;
    };
    let u = s.url(NAME);
    s.expect_tls(
        "wget",
        &["wget", "-qO-", "--tries=1", "--timeout=30", &u],
        NAME,
    );
    s.expect_tls("busybox wget", &["busybox", "wget", "-qO-", &u], NAME);
}

#[test]
fn python_urllib_and_asyncio() {
    let Some(s) = tls_server(&[], &pki().ec) else {
        return;
    };
    let py = python_arg();
    let u = s.url(NAME);
    s.expect_tls(
        "urllib",
        &[
            &py,
            "-c",
            "import sys,urllib.request;sys.stdout.write(urllib.request.urlopen(sys.argv[1],timeout=30).read().decode())",
            &u,
        ],
        NAME,
    );
    // asyncio: resolves in an executor thread, non-blocking connect, TCP_NODELAY after it.
    let script = r#"
import asyncio, socket, sys
async def main():
    r, w = await asyncio.open_connection(sys.argv[1], int(sys.argv[2]))
    sock = w.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    w.write(b"GET / HTTP/1.0\r\n\r\n")
    await w.drain()
    sys.stdout.write((await asyncio.wait_for(r.read(), 30)).decode())
    w.close()
asyncio.run(main())
"#;
    let port = s.port.to_string();
    s.expect_tls("asyncio", &[&py, "-c", script, NAME, &port], NAME);
}

#[test]
fn git_clone_over_dumb_http() {
    if !ready(&["git"]) {
        return;
    }
    let root = scratch("git-root");
    let work = scratch("git-work");
    let git = |dir: &Path, args: &[&str]| {
        let o = proc::run(
            Command::new("git")
                .args(args)
                .current_dir(dir)
                .env("HOME", &work)
                .env("GIT_CONFIG_NOSYSTEM", "1"),
            None,
            Duration::from_secs(60),
        );
        assert_eq!(o.code(), 0, "git {args:?}: {}", o.stderr_str());
    };
    let src = work.join("src");
    std::fs::create_dir_all(&src).expect("src dir");
    git(&src, &["init", "-q"]);
    std::fs::write(src.join("greeting.txt"), "through the shim\n").expect("file");
    git(&src, &["add", "greeting.txt"]);
    git(
        &src,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "one",
        ],
    );
    let bare = root.join("repo.git");
    git(
        &work,
        &[
            "clone",
            "-q",
            "--bare",
            "--no-local",
            src.to_str().expect("utf-8"),
            bare.to_str().expect("utf-8"),
        ],
    );
    git(&bare, &["update-server-info"]);
    let s = server(Some(&pki().ec), Some(&root));
    let dest = work.join("dest");
    let vars = with(s.vars(), "HOME", &work.display().to_string());
    let vars = with(vars, "GIT_CONFIG_NOSYSTEM", "1");
    let vars = with(vars, "GIT_TERMINAL_PROMPT", "0");
    let repo_url = format!("http://{NAME}:{}/repo.git", s.port);
    let o = shim::run(
        &[
            "git",
            "clone",
            "-q",
            &repo_url,
            dest.to_str().expect("utf-8"),
        ],
        &vars,
        None,
    );
    assert_eq!(o.code(), 0, "git clone: {}", o.stderr_str());
    assert_eq!(
        std::fs::read_to_string(dest.join("greeting.txt")).expect("cloned file"),
        "through the shim\n"
    );
    let lines = upgraded_lines(&o);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(&format!("name {NAME}"))),
        "git clone: {}",
        o.stderr_str()
    );
}

#[test]
fn text_browsers_and_perl() {
    let Some(s) = tls_server(&["lynx", "w3m", "perl"], &pki().ec) else {
        return;
    };
    let u = s.url(NAME);
    // lynx resolves in a forked child: the name must reach its parent.
    s.expect_tls("lynx", &["lynx", "-dump", &u], NAME);
    s.expect_tls("w3m", &["w3m", "-dump", &u], NAME);
    s.expect_tls(
        "perl LWP",
        &[
            "perl",
            "-MLWP::Simple",
            "-e",
            "print get($ARGV[0]) // die 'no body'",
            &u,
        ],
        NAME,
    );
}

#[test]
fn node_with_tcp_options_after_connect() {
    let Some(s) = tls_server(&["node"], &pki().ec) else {
        return;
    };
    let script = r#"
const net = require('net');
const [host, port] = process.argv.slice(1);
const s = net.connect({host, port: +port}, () => {
  s.setNoDelay(true);
  s.setKeepAlive(true, 1000);
  if (s.remotePort !== +port) { console.error('remotePort', s.remotePort); process.exit(3); }
  s.write('GET / HTTP/1.0\r\n\r\n');
});
s.on('data', d => process.stdout.write(d));
s.on('error', e => { console.error('error', e.message); process.exit(2); });
"#;
    let port = s.port.to_string();
    s.expect_tls("node net", &["node", "-e", script, NAME, &port], NAME);
    s.expect_tls(
        "node http",
        &[
            "node",
            "-e",
            "require('http').get(process.argv[1], r => r.pipe(process.stdout)).on('error', e => { console.error(e.message); process.exit(2); })",
            &s.url(NAME),
        ],
        NAME,
    );
}

// ------------------------------------------------------------------ stream clients

fn echo_payload() -> (Vec<u8>, String) {
    let body: String = (0..2000)
        .map(|i| format!("line {i:05} of the echo\n"))
        .collect();
    let mut input = b"ECHO\n".to_vec();
    input.extend_from_slice(body.as_bytes());
    (input, body)
}

/// `cmd` sends the echo payload through the shim and gets exactly its echo back, upgraded.
fn expect_echo(s: &shim::Server, what: &str, cmd: &[&str]) {
    let (input, body) = echo_payload();
    let expect = format!("{} len={}\n{body}", tag(NAME), body.len());
    let o = shim::run(cmd, &s.vars(), Some(&input));
    assert_eq!(o.code(), 0, "{what}: {}", o.stderr_str());
    assert!(
        o.stdout_str() == expect,
        "{what}: reply differs ({} bytes)",
        o.stdout.len()
    );
    assert!(!upgraded_lines(&o).is_empty(), "{what}: {}", o.stderr_str());
}

#[test]
fn netcat_half_close_and_socat() {
    let Some(s) = tls_server(&["nc", "socat"], &pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    // nc -N shuts down its writing side at EOF and keeps reading: the server answers only
    // after it has read to the end.
    expect_echo(&s, "nc", &["nc", "-N", "-w", "30", NAME, &port]);
    let target = format!("TCP:{NAME}:{port}");
    expect_echo(&s, "socat", &["socat", "-t", "30", "-", &target]);
}

#[test]
fn redis_cli_second_connect() {
    let Some(s) = tls_server(&["redis-cli"], &pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    let o = s.expect_tls(
        "redis-cli",
        &["redis-cli", "-h", NAME, "-p", &port, "PING"],
        NAME,
    );
    assert!(o.stdout_str().starts_with("PONG "), "{}", o.stdout_str());
}

// ------------------------------------------------------------------ the socket API after the swap

const API_SCRIPT: &str = include_str!("../apps/shim/socket-api.py");

#[test]
fn socket_api_after_the_swap() {
    let Some(s) = tls_server(&[], &pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    let o = s.run(&[&python_arg(), "-c", API_SCRIPT, NAME, &port, "localhost"]);
    let out = o.stdout_str();
    assert_eq!(o.code(), 0, "stdout: {out}\nstderr: {}", o.stderr_str());
    let line = |what: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no {what} line:\n{out}\n{}", o.stderr_str()))
            .to_string()
    };
    for what in [
        "named:",
        "blocking:",
        "nonblocking:",
        "mapped:",
        "byname:",
        "fastopen:",
    ] {
        let l = line(what);
        assert!(l.contains("HTTP/1.0 200 OK") && l.contains(TLS_TAG), "{l}");
    }
    assert!(line("named:").contains(&tag(NAME)), "{out}");
    assert!(line("byname:").contains(&tag("localhost")), "{out}");
    assert!(line("fastopen:").contains(&tag(NAME)), "{out}");
    assert!(
        out.contains("sigchld=0 wait=none"),
        "the host saw the helper: {out}"
    );
    // Six TCP connections upgraded, the UDP one not.
    assert_eq!(upgraded_lines(&o).len(), 6, "{}", o.stderr_str());
}

// ------------------------------------------------------------------ failures fail closed

#[test]
fn closed_port_gives_the_same_error_as_without_the_shim() {
    if !ready(&["curl"]) {
        return;
    }
    let port = free_port("127.0.0.1");
    let u = url(NAME, port);
    let cmd = ["curl", "-sS", "--max-time", "30", u.as_str()];
    let with = shim::run(&cmd, &port_vars(port), None);
    let without = shim::run(&cmd, &[], None);
    assert_eq!(without.code(), 7, "{}", without.stderr_str());
    assert_eq!(with.code(), without.code(), "{}", with.stderr_str());
    for o in [&with, &without] {
        assert!(
            o.stderr_str().contains("Couldn't connect"),
            "{}",
            o.stderr_str()
        );
    }
    assert!(upgraded_lines(&with).is_empty());
}

#[test]
fn refused_address_falls_back_to_the_next() {
    if !ready(&["curl", "wget"]) {
        return;
    }
    // Only 127.0.0.1 listens: ::1 (tried first) is refused with the real errno.
    let l = TinyListener::start_on("127.0.0.1:0", shim::spawn_for(Some(&pki().ec), None));
    let u = url(NAME, l.port());
    let o = shim::run(
        &["curl", "-sS", "--max-time", "30", &u],
        &port_vars(l.port()),
        None,
    );
    assert_tls(&o, "curl fallback", NAME);
    let o = shim::run(
        &["wget", "-qO-", "--tries=1", "--timeout=30", &u],
        &port_vars(l.port()),
        None,
    );
    assert_tls(&o, "wget fallback", NAME);
    assert!(upgraded_lines(&o).iter().all(|l| l.contains("127.0.0.1")));
}

#[test]
fn untrusted_certificate_or_wrong_name_fails_connect_never_plain() {
    let Some(s) = tls_server(&["curl", "busybox"], &pki().untrusted) else {
        return;
    };
    let o = s.run(&["curl", "-sS", "--max-time", "30", &s.url(NAME)]);
    assert_eq!(o.code(), 7, "curl: {}", o.stderr_str());
    assert!(
        o.stderr_str().contains("Couldn't connect"),
        "{}",
        o.stderr_str()
    );
    assert!(!o.stdout_str().contains("hello"), "{}", o.stdout_str());
    assert!(upgraded_lines(&o).is_empty());
    // tlsc's reason, with the destination and the name checked, comes before connect()
    // returns: before the program's own report of the failure.
    let py = "import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)\nexcept OSError as e:\n    sys.stderr.write('CONNECT FAILED %s\\n' % e)\n";
    let o = s.run(&[&python_arg(), "-c", py, NAME4, &s.port.to_string()]);
    let err = o.stderr_str();
    let reason = format!(
        "autossl: 127.0.0.1 port {} (name {NAME4}): tlsc: fatal: ",
        s.port
    );
    let (Some(r), Some(f)) = (err.find(&reason), err.find("CONNECT FAILED")) else {
        panic!("no reason with the destination, or no failure: {err}");
    };
    assert!(r < f, "the reason came after connect() returned: {err}");
    // The server saw a TLS client that gave up in the handshake: tlsd exits 97 and the
    // app never ran.
    let sess = s.sessions(Duration::from_secs(8));
    assert!(!sess.is_empty(), "no connection reached the server");
    assert!(
        sess.iter().all(|x| x.code() == 97),
        "{:?}",
        sess.iter()
            .map(|x| (x.code(), x.stderr_str()))
            .collect::<Vec<_>>()
    );
    // The same with a trusted certificate but another name than the one asked for.
    let s = server(Some(&pki().a), None);
    let o = s.run(&["busybox", "wget", "-qO-", &s.url(NAME4)]);
    assert_ne!(o.code(), 0, "{}", o.stdout_str());
    assert!(!o.stdout_str().contains("hello"));
    // A failure chosen by AUTOSSL_ERRNO (EACCES).
    let vars = with(s.vars(), "AUTOSSL_ERRNO", "13");
    let o = shim::run(&["busybox", "wget", "-qO-", &s.url(NAME4)], &vars, None);
    assert!(
        o.stderr_str().contains("ermission denied"),
        "{}",
        o.stderr_str()
    );
}

// ------------------------------------------------------------------ many connections

const MANY_SCRIPT: &str = include_str!("../apps/shim/many.py");

#[test]
fn many_connections_leave_no_fd_no_zombie_no_helper() {
    let Some(s) = tls_server(&[], &pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    let marker = Marker::new("SHIM_TEST_MARK", "many", s.port);
    let vars = marker.on(quiet(s.vars()));
    let o = proc::run(
        &mut shim::namespaced(
            &[&python_arg(), "-c", MANY_SCRIPT, NAME, &port, "200", "50"],
            &vars,
        ),
        None,
        Duration::from_secs(600),
    );
    let out = o.stdout_str();
    assert_eq!(o.code(), 0, "stdout: {out}\nstderr: {}", o.stderr_str());
    assert!(
        out.contains("seq=200/200 par=50/50 fds_same=True children=0 sigchld=0 wait=none"),
        "{out}\n{}",
        o.stderr_str()
    );
    // Every helper ends with its connection.
    marker.assert_gone("helpers still running");
}

// ------------------------------------------------------------------ command mode

#[test]
fn tls_cmd_openssl_wrapper_and_tlsc() {
    let Some(s) = tls_server(&["curl", "openssl"], &pki().ec) else {
        return;
    };
    let dir = scratch("tls-cmd");
    let script = dir.join("s_client.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nexec openssl s_client -quiet -verify_return_error -CAfile \"$CAFILE\" -connect \"$1:$2\" 2>/dev/null\n",
    )
    .expect("script");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let u = s.url(NAME4);
    for cmd in [
        script.display().to_string(),
        stls_tests::tlsc().display().to_string(),
    ] {
        let vars = with(s.vars(), "AUTOSSL_TLS_CMD", &cmd);
        let o = shim::run(&["curl", "-sS", "--max-time", "30", &u], &vars, None);
        assert_eq!(o.code(), 0, "{cmd}: {}", o.stderr_str());
        assert!(
            o.stdout_str().contains(TLS_TAG),
            "{cmd}: {}",
            o.stdout_str()
        );
        assert!(
            o.stderr_str().contains("handed to"),
            "{cmd}: {}",
            o.stderr_str()
        );
    }
}

// ------------------------------------------------------------------ what is not ours

#[test]
fn unlisted_ports_pass_through_in_the_same_process() {
    if !ready(&["curl"]) {
        return;
    }
    let tls = server(Some(&pki().ec), None);
    let plain = server(None, None);
    let o = shim::run(
        &[
            "curl",
            "-sS",
            "--max-time",
            "30",
            &tls.url(NAME),
            &plain.url(NAME),
        ],
        &quiet(tls.vars()),
        None,
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    let out = o.stdout_str();
    assert!(out.contains(&format!("hello {}", tag(NAME))), "{out}");
    assert!(
        out.contains("hello sni= proto=\n"),
        "the plain port was not plain: {out}"
    );
    // Quiet by default.
    assert_eq!(o.stderr_str(), "", "messages without AUTOSSL_VERBOSE");
}

#[test]
fn bad_configuration_one_line_then_plain_or_errno() {
    if !ready(&["curl"]) {
        return;
    }
    let plain = server(None, None);
    let u = plain.url(NAME4);
    let mut vars = quiet(shim_vars(&format!("{} nonsense", plain.port)));
    let o = shim::run(&["curl", "-sS", "--max-time", "30", &u], &vars, None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert!(
        o.stdout_str().contains("hello sni= proto=\n"),
        "{}",
        o.stdout_str()
    );
    let err = o.stderr_str();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("autossl: ")
            && lines[0].contains("nonsense")
            && lines[0].contains("clear text"),
        "{err}"
    );
    // With AUTOSSL_ERRNO, what matches fails with it instead; nothing reaches the server.
    vars.push(("AUTOSSL_ERRNO".into(), "111".into()));
    let o = shim::run(&["curl", "-sS", "--max-time", "30", &u], &vars, None);
    assert_eq!(o.code(), 7, "{}", o.stderr_str());
    // A list whose entry for this port is unreadable (`18443,PORTx`): the line names the
    // entry and says the connection goes out in clear text; with AUTOSSL_ERRNO, any port
    // could have been meant, so this one fails too.
    let garbled = format!("18443,{}x", plain.port);
    let bad = quiet(shim_vars(&garbled));
    let o = shim::run(&["curl", "-sS", "--max-time", "30", &u], &bad, None);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    let err = o.stderr_str();
    assert!(
        err.contains(&format!("not understood: {}x", plain.port)) && err.contains("clear text"),
        "{err}"
    );
    let o = shim::run(
        &["curl", "-sS", "--max-time", "30", &u],
        &with(bad, "AUTOSSL_ERRNO", "111"),
        None,
    );
    assert_eq!(o.code(), 7, "{}", o.stderr_str());
    assert!(
        o.stderr_str().contains("fails with errno 111"),
        "{}",
        o.stderr_str()
    );
    // AUTOSSL_SILENT: not a word.
    vars.push(("AUTOSSL_SILENT".into(), String::new()));
    let o = shim::run(&["curl", "-sS", "--max-time", "30", &u], &vars, None);
    assert!(!o.stderr_str().contains("autossl:"), "{}", o.stderr_str());
}

// ------------------------------------------------------------------ the library itself

#[test]
fn exports_only_the_hooks() {
    let lib = library();
    if !require("nm") {
        return;
    }
    let o = proc::run(
        Command::new("nm").arg("-D").arg("--defined-only").arg(&lib),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    let mut names: Vec<String> = o
        .stdout_str()
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3 && w[1] == "T" && !w[2].starts_with('_')).then(|| w[2].to_string())
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "accept",
            "accept4",
            "autossl_session",
            "connect",
            "gai_error",
            "getaddrinfo",
            "getaddrinfo_a",
            "gethostbyname",
            "gethostbyname2",
            "gethostbyname2_r",
            "gethostbyname_r",
            "getpeername",
            "getsockname",
            "getsockopt",
            "sendmsg",
            "sendto",
            "setsockopt"
        ]
    );
}

#[test]
fn man_page_is_lint_clean() {
    if !require("mandoc") {
        return;
    }
    let page = stls_tests::bins::workspace().join("man/autossl-shim.8");
    let o = proc::run(
        Command::new("mandoc")
            .args(["-T", "lint", "-W", "style"])
            .arg(&page),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(
        format!("{}{}", o.stdout_str(), o.stderr_str()),
        "",
        "mandoc -T lint -W style"
    );
}

// ------------------------------------------------------------------ the helper itself

const HOLD_SCRIPT: &str = include_str!("../apps/shim/hold.py");

#[test]
fn helper_runs_without_the_library_and_ends_with_the_connection() {
    let Some(s) = tls_server(&[], &pki().ec) else {
        return;
    };
    let dir = scratch("hold");
    let port = s.port.to_string();
    let marker = Marker::new("SHIM_TEST_MARK", "hold", s.port);
    let vars = marker.on(s.vars());
    let mut cmd = shim::namespaced(
        &[
            &python_arg(),
            "-c",
            HOLD_SCRIPT,
            NAME,
            &port,
            dir.to_str().expect("utf-8"),
        ],
        &vars,
    );
    let run = proc::Running::start(&mut cmd);
    let ready_file = dir.join("ready");
    let go = || std::fs::write(dir.join("go"), "").expect("go file");
    if !proc::wait_for(Duration::from_secs(60), || ready_file.exists()) {
        go();
        let o = run.finish(Duration::from_secs(30));
        panic!("the client never connected: {}", o.stderr_str());
    }
    let client: u32 = std::fs::read_to_string(&ready_file)
        .expect("ready file")
        .trim()
        .parse()
        .expect("client pid");
    let helpers: Vec<u32> = marker
        .processes()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.trim() == "tlsc")
                .unwrap_or(false)
        })
        .collect();
    let report = |pid: u32| -> (String, Vec<String>, Vec<(String, String)>) {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env: Vec<String> = env
            .split(|&b| b == 0)
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mut fds = Vec::new();
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for e in rd.flatten() {
                let target = std::fs::read_link(e.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                fds.push((e.file_name().to_string_lossy().into_owned(), target));
            }
        }
        fds.sort();
        (status, env, fds)
    };
    let checked = std::panic::catch_unwind(|| {
        assert_eq!(
            helpers.len(),
            1,
            "one tlsc for the one connection: {helpers:?}"
        );
        // The program's stderr is let go once its first bytes are judged, which happens
        // in tlsc just after the program sent them: wait for it (bounded).
        proc::wait_for(Duration::from_secs(10), || {
            report(helpers[0])
                .2
                .get(2)
                .is_some_and(|f| f.1 == "/dev/null")
        });
        let (status, env, fds) = report(helpers[0]);
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(|p| p.trim().to_string())
            .unwrap_or_default();
        assert_ne!(ppid, client.to_string(), "tlsc is the client's child");
        assert!(
            !env.iter()
                .any(|e| e.starts_with("LD_PRELOAD=") && e.contains("libautossl")),
            "the helper has the library preloaded: {env:?}"
        );
        assert!(env.iter().any(|e| e == "AUTOSSL_NESTED=1"), "{env:?}");
        let numbers: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            numbers,
            ["0", "1", "2", "6", "7"],
            "the helper's fds: {fds:?}"
        );
        assert_eq!(
            fds[2].1, "/dev/null",
            "stderr still held after the handshake: {fds:?}"
        );
    });
    go();
    let o = run.finish(Duration::from_secs(60));
    if let Err(e) = checked {
        std::panic::resume_unwind(e);
    }
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert!(o.stdout_str().contains(&tag(NAME)), "{}", o.stdout_str());
    marker.assert_gone("tlsc outlived its connection");
}

// ------------------------------------------------------------------ the other variables

#[test]
fn address_lists_fixed_name_and_the_singular_port_variable() {
    let Some(s) = tls_server(&["curl"], &pki().ec) else {
        return;
    };
    let u = s.url(NAME);
    // Only ::1 is listed: the IPv6 connection is upgraded, the IPv4 one goes out plain
    // (and tlsd refuses plain HTTP).
    let vars = with(s.vars(), "AUTOSSL_UPGRADE_IPS", "[::1]");
    let o6 = shim::run(&["curl", "-sS", "-6", "--max-time", "30", &u], &vars, None);
    assert_tls(&o6, "curl -6 with ::1 listed", NAME);
    let o4 = shim::run(&["curl", "-sS", "-4", "--max-time", "30", &u], &vars, None);
    assert!(upgraded_lines(&o4).is_empty(), "{}", o4.stderr_str());
    assert!(!o4.stdout_str().contains(TLS_TAG), "{}", o4.stdout_str());
    // A network in CIDR form, IPv4.
    let vars = with(s.vars(), "AUTOSSL_UPGRADE_IPS", "10.0.0.0/8, 127.0.0.0/8");
    let o = shim::run(&["curl", "-sS", "-4", "--max-time", "30", &u], &vars, None);
    assert_tls(&o, "curl -4 with 127.0.0.0/8 listed", NAME);
    // AUTOSSL_UPGRADE_PORT (with another port in AUTOSSL_UPGRADE_PORTS) and AUTOSSL_SNI
    // for a program that connects to a bare address.
    let vars = with(shim_vars("1"), "AUTOSSL_UPGRADE_PORT", &s.port.to_string());
    let vars = with(vars, "AUTOSSL_SNI", NAME);
    let o = shim::run(
        &["curl", "-sS", "--max-time", "30", &url("127.0.0.1", s.port)],
        &vars,
        None,
    );
    assert_tls(&o, "curl to an address with AUTOSSL_SNI", NAME);
    // Without AUTOSSL_SNI, a bare address is verified as such and sends no SNI.
    s.expect_tls(
        "curl to an address",
        &["curl", "-sS", "--max-time", "30", &s.url("127.0.0.1")],
        "",
    );
}

const ERRNO_SCRIPT: &str = include_str!("../apps/shim/errno.py");

#[test]
fn handshake_timeout_is_etimedout_and_missing_helper_is_refused() {
    if !ready(&[]) {
        return;
    }
    let py = python_arg();
    let py = py.as_str();
    // A server that accepts and never speaks TLS.
    let silent = TinyListener::start_on(
        "127.0.0.1:0",
        stls_tests::listener::Spawn {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            env: Vec::new(),
            groups: None,
            timeout: Duration::from_secs(60),
        },
    );
    let port = silent.port().to_string();
    let vars = with(port_vars(silent.port()), "AUTOSSL_TIMEOUT", "1500ms");
    let vars = with(vars, "AUTOSSL_SILENT", "");
    let o = shim::run(&[py, "-c", ERRNO_SCRIPT, NAME4, &port], &vars, None);
    let out = o.stdout_str();
    assert!(
        out.starts_with("errno=ETIMEDOUT"),
        "{out}\n{}",
        o.stderr_str()
    );
    let after: f64 = out
        .trim()
        .rsplit('=')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("elapsed");
    assert!((1.0..20.0).contains(&after), "{out}");
    assert_eq!(o.stderr_str(), "", "AUTOSSL_SILENT");

    // The library in a directory without tlsc, and no tlsc on PATH: refused, one message.
    let dir = scratch("no-tlsc");
    let lib = dir.join("libautossl.so");
    std::fs::copy(library(), &lib).expect("copy the library");
    let s = server(Some(&pki().ec), None);
    let port = s.port.to_string();
    let mut vars = with(s.vars(), "PATH", "/usr/bin:/bin");
    assert_eq!(vars[0].0, "LD_PRELOAD");
    vars[0].1 = lib.display().to_string();
    let two = format!(
        "import socket,sys\n{}\nexec(s)\nexec(s)",
        "s = compile(open(sys.argv[3]).read(), 'x', 'exec')"
    );
    let script = dir.join("errno.py");
    std::fs::write(&script, ERRNO_SCRIPT).expect("script");
    let o = shim::run(
        &[
            py,
            "-c",
            &two,
            NAME4,
            &port,
            script.to_str().expect("utf-8"),
        ],
        &vars,
        None,
    );
    let out = o.stdout_str();
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("errno=ECONNREFUSED"))
            .count(),
        2,
        "{out}\n{}",
        o.stderr_str()
    );
    let err = o.stderr_str();
    assert_eq!(
        err.lines().filter(|l| l.contains("tlsc not found")).count(),
        1,
        "{err}"
    );
}

// ------------------------------------------------------------------ a C client

const C_CLIENT: &str = include_str!("../apps/shim/client.c");

#[test]
fn c_client_sockaddr_storage_length_timeouts_owner_and_gethostbyname() {
    if !ready(&["cc"]) {
        return;
    }
    let exe = compile_c("c-client", "client", C_CLIENT, &[]);
    let s = server(Some(&pki().ec), None);
    let port = s.port.to_string();
    let exe = exe.to_str().expect("utf-8");
    let o = s.run(&[exe, NAME4, &port]);
    // gethostbyname's name was recorded: tls4.test is not in the certificate, so the
    // connection fails closed with the name that proves it.
    assert_ne!(o.code(), 0, "{}", o.stdout_str());
    assert!(
        o.stderr_str().contains("name tls4.test"),
        "{}",
        o.stderr_str()
    );
    let o = s.run(&[exe, "localhost", &port]);
    assert_eq!(o.code(), 0, "{}\n{}", o.stdout_str(), o.stderr_str());
    assert_tls(&o, "C client", "localhost");
}

// ------------------------------------------------------------------ names across fork

const FORK_SCRIPT: &str = include_str!("../apps/shim/fork-names.py");

#[test]
fn names_cross_fork_both_ways() {
    let Some(s) = tls_server(&[], &pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    let o = s.run(&[&python_arg(), "-c", FORK_SCRIPT, NAME, &port]);
    let out = o.stdout_str();
    assert_eq!(o.code(), 0, "{out}\n{}", o.stderr_str());
    for who in ["parent:", "child:"] {
        let l = out.lines().find(|l| l.starts_with(who)).unwrap_or_default();
        assert!(l.contains(&tag(NAME)), "{who} {out}\n{}", o.stderr_str());
    }
}

// ------------------------------------------------------------------ virtual hosts on one address

/// Each answer in `dir/0`, `dir/1`, ...: the SNI the server saw, or None (no answer).
fn answers_in(dir: &Path, n: usize) -> Vec<Option<String>> {
    (0..n)
        .map(|i| {
            std::fs::read_to_string(dir.join(i.to_string()))
                .ok()
                .and_then(|t| shim::sni_of(&t))
        })
        .collect()
}

/// Lines `I BODY` (or `I ERR ...`) a client printed: the SNI of each request's answer.
fn answers_by_line(out: &str, n: usize) -> Vec<Option<String>> {
    let mut v = vec![None; n];
    for l in out.lines() {
        let Some((i, rest)) = l.split_once(' ') else {
            continue;
        };
        if let Ok(i) = i.parse::<usize>() {
            if i < n && !rest.starts_with("ERR") {
                v[i] = shim::sni_of(rest);
            }
        }
    }
    v
}

/// Three names on one address, one certificate each: curl with its DNS cache (a.test,
/// b.test, a.test in one run: its resolver thread looks up, the main thread connects), then
/// `-Z` with all three at once. Every request reaches the host it named or fails closed
/// with the message that says why and what settles it; the first, when a.test is the only
/// name known for the address, succeeds.
#[test]
fn vhosts_curl_dns_cache_and_parallel() {
    if !ready(&["curl"]) {
        return;
    }
    let s = shim::vhost_server();
    let vars = s.vars();
    let seq = ["a.test", "b.test", "a.test"];
    let dir = scratch("vhost-curl");
    let mut cmd: Vec<String> = ["curl", "-sS", "--max-time", "10"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    for (i, n) in seq.iter().enumerate() {
        cmd.extend(["-o".into(), dir.join(i.to_string()).display().to_string()]);
        cmd.push(s.url(n));
    }
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let o = shim::run(&args, &vars, None);
    let err = o.stderr_str();
    assert!(!err.contains("cannot be preloaded"), "{err}");
    let got = answers_in(&dir, seq.len());
    assert_eq!(got[0].as_deref(), Some("a.test"), "{err}");
    shim::assert_every_host("curl a b a", &got, &seq, &err);

    let par = ["a.test", "b.test", "c.wild.test", "b.test"];
    let dir = scratch("vhost-curl-parallel");
    let mut cmd: Vec<String> = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-Z",
        "--parallel-max",
        "4",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    for (i, n) in par.iter().enumerate() {
        cmd.extend(["-o".into(), dir.join(i.to_string()).display().to_string()]);
        cmd.push(s.url(n));
    }
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let o = shim::run(&args, &vars, None);
    let err = o.stderr_str();
    shim::assert_every_host("curl -Z", &answers_in(&dir, par.len()), &par, &err);
}

const NODE_ALL: &str = include_str!("../apps/shim/promise-all.js");

/// node resolves on its thread pool and connects on the main thread, all at once.
#[test]
fn vhosts_node_promise_all() {
    if !ready(&["node"]) {
        return;
    }
    let s = shim::vhost_server();
    let names = ["a.test", "b.test", "c.wild.test"];
    let urls: Vec<String> = names.iter().map(|n| s.url(n)).collect();
    let mut cmd = vec!["node", "-e", NODE_ALL];
    cmd.extend(urls.iter().map(String::as_str));
    let o = s.run(&cmd);
    let out = o.stdout_str();
    let err = o.stderr_str();
    assert_eq!(o.code(), 0, "{out}\n{err}");
    assert_eq!(out.lines().count(), names.len(), "{out}\n{err}");
    shim::assert_every_host("node", &answers_by_line(&out, names.len()), &names, &err);
    // One name alone on its address: node's lookups in another thread are enough.
    let o = s.run(&["node", "-e", NODE_ALL, &urls[2], &urls[2]]);
    let out = o.stdout_str();
    let got = answers_by_line(&out, 2);
    assert!(
        got.iter().all(|g| g.as_deref() == Some("c.wild.test")),
        "{out}\n{}",
        o.stderr_str()
    );
}

const JAVA_SEQ: &str = include_str!("../apps/shim/Vhosts.java");

/// Java in a row, a.test, b.test, a.test: its own thread looks up (the third from
/// InetAddress's cache, which cannot be told from b.test).
#[test]
fn vhosts_java_requests_in_a_row() {
    if !ready(&["java"]) {
        return;
    }
    let s = shim::vhost_server();
    let dir = scratch("vhost-java");
    let src = dir.join("Vhosts.java");
    std::fs::write(&src, JAVA_SEQ).expect("source");
    let names = ["a.test", "b.test", "a.test"];
    let urls: Vec<String> = names.iter().map(|n| s.url(n)).collect();
    let src = src.display().to_string();
    let mut cmd = vec!["java", src.as_str()];
    cmd.extend(urls.iter().map(String::as_str));
    let o = s.run(&cmd);
    let out = o.stdout_str();
    let err = o.stderr_str();
    assert_eq!(o.code(), 0, "{out}\n{err}");
    let got = answers_by_line(&out, names.len());
    assert_eq!(got[0].as_deref(), Some("a.test"), "{out}\n{err}");
    assert_eq!(got[1].as_deref(), Some("b.test"), "{out}\n{err}");
    shim::assert_every_host("java", &got, &names, &err);
}

const AIOHTTP_GATHER: &str = include_str!("../apps/shim/aiohttp-gather.py");

/// aiohttp resolves in an executor thread, `gather` connects to all at once.
#[test]
fn vhosts_aiohttp_gather() {
    if !ready(&[]) {
        return;
    }
    let py = python_arg();
    let probe = proc::run(
        Command::new(&py).args(["-c", "import aiohttp"]),
        None,
        Duration::from_secs(30),
    );
    if probe.code() != 0 && !stls_tests::bins::skip("python3-aiohttp not installed") {
        return;
    }
    let s = shim::vhost_server();
    let names = ["a.test", "b.test", "c.wild.test"];
    let urls: Vec<String> = names.iter().map(|n| s.url(n)).collect();
    let mut cmd = vec![py.as_str(), "-c", AIOHTTP_GATHER];
    cmd.extend(urls.iter().map(String::as_str));
    let o = s.run(&cmd);
    let out = o.stdout_str();
    let err = o.stderr_str();
    assert_eq!(o.code(), 0, "{out}\n{err}");
    shim::assert_every_host("aiohttp", &answers_by_line(&out, names.len()), &names, &err);
}

const GAI_A_CLIENT: &str = include_str!("../apps/shim/getaddrinfo-a.c");

/// A C client that resolves with getaddrinfo_a (waiting, then not waiting).
#[test]
fn vhosts_getaddrinfo_a_client() {
    if !ready(&["cc"]) {
        return;
    }
    let exe = compile_c("gai-a", "client", GAI_A_CLIENT, &["-lanl"]);
    let s = shim::vhost_server();
    let port = s.port.to_string();
    let o = s.run(&[exe.to_str().expect("utf-8"), &port]);
    let out = o.stdout_str();
    let err = o.stderr_str();
    assert_eq!(o.code(), 0, "{out}\n{err}");
    let names = ["a.test", "b.test", "a.test"];
    let got = answers_by_line(&out, 3);
    shim::assert_every_host("getaddrinfo_a", &got, &names, &err);
}

/// The client with its own DNS cache (`tests/apps/shim/vhost-cache.py`), one scenario: its lines.
fn vhost_cache(s: &shim::Server, scenario: &str) -> (Vec<String>, String) {
    let app = stls_tests::bins::workspace().join("tests/apps/shim/vhost-cache.py");
    let py = python_arg();
    let port = s.port.to_string();
    let o = s.run(&[py.as_str(), app.to_str().expect("utf-8"), &port, scenario]);
    let out = o.stdout_str();
    let err = o.stderr_str();
    assert_eq!(o.code(), 0, "{scenario}: {out}\n{err}");
    (out.lines().map(str::to_string).collect(), err)
}

/// A lookup says which names gave an address, not which name a later connect is for: a
/// client that fetched a.test, then resolved b.test (same address), then connects to
/// a.test's cached address; or resolved a.test, then 600 other names (the shim forgets the
/// oldest), then b.test; or whose threads resolve at once while it connects. Each request
/// reaches a.test (its own Host says so), or fails closed where a.test was forgotten; never
/// b.test.
#[test]
fn vhosts_cached_address_never_reaches_a_later_lookups_host() {
    if !ready(&[]) {
        return;
    }
    let s = shim::vhost_server();
    for (scenario, n) in [("later", 2), ("forgotten", 1), ("threads", 10)] {
        let (lines, err) = vhost_cache(&s, scenario);
        let got = answers_by_line(&lines.join("\n"), n);
        let want = vec!["a.test"; n];
        if scenario == "forgotten" {
            // a.test was forgotten: its request cannot name a known candidate, and fails
            // closed with the candidates and the remedy.
            assert_eq!(shim::assert_right_hosts(scenario, &got, &want, &err), 0);
            assert!(err.contains("(b.test, ...)"), "{err}");
        } else {
            let err = format!("{err}\nstdout: {}", lines.join("\n"));
            shim::assert_every_host(scenario, &got, &want, &err);
        }
    }
}

/// What the request says is checked before any of it leaves: a.test is the only name that
/// gave the address, the request names b.test: nothing is sent, the program sees the
/// connection closed, and its stderr says why. Several names and a first line that is not
/// an HTTP request: no name can be told, it fails closed with the candidates.
#[test]
fn vhosts_request_for_another_host_is_never_sent() {
    if !ready(&[]) {
        return;
    }
    let s = shim::vhost_server();
    let (lines, err) = vhost_cache(&s, "mismatch");
    assert_eq!(lines.len(), 1, "{lines:?}\n{err}");
    assert!(lines[0].starts_with("0 ERR"), "{lines:?}\n{err}");
    assert!(
        err.contains("names host b.test") && err.contains("verified for a.test"),
        "{err}"
    );
    let (lines, err) = vhost_cache(&s, "plain");
    assert!(lines[0].starts_with("0 ERR"), "{lines:?}\n{err}");
    assert!(
        err.contains("several names gave this address (a.test, b.test)")
            && err.contains("not an HTTP/1.x request")
            && err.contains("AUTOSSL_SNI"),
        "{err}"
    );
}

/// aria2c against a certificate with DNS names only: with its getaddrinfo (which it
/// follows with a numeric lookup of the address), the name; with c-ares (its default, a
/// resolver the library cannot see), a refusal that names the remedy, and AUTOSSL_NAMES.
#[test]
fn vhosts_aria2c_dns_name_only_certificate() {
    if !ready(&["aria2c"]) {
        return;
    }
    let s = shim::vhost_server();
    let dir = scratch("aria2c");
    let u = s.url("a.test");
    let d = dir.display().to_string();
    let fetch = |vars: &[(String, String)], extra: &[&str], out: &str| {
        let mut cmd = vec![
            "aria2c",
            "-q",
            "--allow-overwrite=true",
            "--max-tries=1",
            "--connect-timeout=10",
            "--timeout=10",
            "-d",
            d.as_str(),
            "-o",
            out,
        ];
        cmd.extend(extra);
        cmd.push(u.as_str());
        let o = shim::run(&cmd, vars, None);
        let body = std::fs::read_to_string(dir.join(out)).unwrap_or_default();
        (o, shim::sni_of(&body))
    };
    let (o, sni) = fetch(&s.vars(), &["--async-dns=false"], "sync");
    assert_eq!(sni.as_deref(), Some("a.test"), "{}", o.stderr_str());
    let (o, sni) = fetch(&s.vars(), &[], "cares");
    let err = o.stderr_str();
    assert_eq!(sni, None, "{err}");
    assert!(
        err.contains("no host name the program resolved") && err.contains("AUTOSSL_NAMES"),
        "{err}"
    );
    let named = with(
        s.vars(),
        "AUTOSSL_NAMES",
        &format!("a.test=127.0.0.1:{}", s.port),
    );
    let (o, sni) = fetch(&named, &[], "named");
    assert_eq!(sni.as_deref(), Some("a.test"), "{}", o.stderr_str());
}

/// curl --resolve bypasses getaddrinfo: the address alone is verified (and fails against
/// a DNS-only certificate), AUTOSSL_NAMES names it, a bad entry is one line.
#[test]
fn names_map_for_a_resolver_the_library_cannot_see() {
    if !ready(&["curl"]) {
        return;
    }
    let s = shim::vhost_server();
    let resolve = format!("b.test:{}:127.0.0.1", s.port);
    let u = s.url("b.test");
    let cmd = ["curl", "-sS", "--max-time", "10", "--resolve", &resolve, &u];
    let o = s.run(&cmd);
    let err = o.stderr_str();
    assert_ne!(o.code(), 0, "{}", o.stdout_str());
    assert!(
        err.contains(&format!("AUTOSSL_NAMES=\"NAME=127.0.0.1:{}\"", s.port)),
        "{err}"
    );
    let names = format!("a.test=127.0.0.1:1 b.test=127.0.0.1:{}", s.port);
    let o = shim::run(&cmd, &with(s.vars(), "AUTOSSL_NAMES", &names), None);
    assert_tls(&o, "AUTOSSL_NAMES", "b.test");
    let o = shim::run(
        &cmd,
        &with(quiet(s.vars()), "AUTOSSL_NAMES", "b.test=127.0.0.1:x"),
        None,
    );
    let err = o.stderr_str();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("autossl:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("AUTOSSL_NAMES: not understood: b.test=127.0.0.1:x")
            && lines[0].contains("clear text"),
        "{err}"
    );
}

// ------------------------------------------------------------------ PID 1 and subreapers

const PID1_CLIENT: &str = include_str!("../apps/shim/pid1.c");

/// A program as PID 1 of a PID namespace (a container without an init), then as a
/// subreaper, making 200 upgraded connections (and as PID 1 in command mode, 50): no
/// zombie accumulates, no SIGCHLD arrives for a helper, and its wait() sees only its own
/// child.
#[test]
fn pid1_and_subreaper_see_no_helper() {
    let Some(s) = tls_server(&["cc"], &pki().ec) else {
        return;
    };
    let exe = compile_c("pid1", "pid1", PID1_CLIENT, &[]);
    let port = s.port.to_string();
    let env: Vec<String> = quiet(s.vars())
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let tls_cmd = format!("AUTOSSL_TLS_CMD={}", stls_tests::bins::tlsc().display());
    let pid1 = &["unshare", "-pf", "--mount-proc", "env"][..];
    for (what, prefix, extra, n) in [
        ("PID 1", pid1, None, "200"),
        ("subreaper", &["env"][..], Some("subreaper"), "200"),
        // Command mode: the helper command (tlsc ADDR PORT) connects by itself.
        ("PID 1, command mode", pid1, None, "50"),
    ] {
        let mut c = Command::new(prefix[0]);
        c.args(&prefix[1..]).args(&env);
        if what.contains("command") {
            c.arg(&tls_cmd);
        }
        c.arg(&exe).arg(&port).arg(n);
        if let Some(x) = extra {
            c.arg(x);
        }
        c.env_remove("LD_PRELOAD");
        let o = proc::run(&mut c, None, Duration::from_secs(180));
        let out = o.stdout_str();
        let err = o.stderr_str();
        assert_eq!(o.code(), 0, "{what}: {out}\n{err}");
        if extra.is_none() {
            assert!(out.contains("pid=1 "), "{what}: not PID 1: {out}");
        }
        let ok = format!("ok={n} ");
        for want in [
            ok.as_str(),
            "seen=0 ",
            "endz=0 ",
            "endall=1 ",
            "chld_before=0 ",
            "own=1 ",
            "echild=1",
        ] {
            assert!(
                out.contains(want),
                "{what}: {want:?} expected: {out}\n{err}"
            );
        }
        let maxz: u32 = out
            .split("maxz=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(u32::MAX);
        assert!(maxz <= 3, "{what}: zombies accumulate: {out}");
    }
}

// ------------------------------------------------------------------ the program's own timing

const TIMING_CLIENT: &str = include_str!("../apps/shim/timing.c");

/// A blocking connect to a server that accepts TCP and never answers TLS keeps the
/// program's timing: alarm(2) with a handler without SA_RESTART interrupts it (EINTR, the
/// helper ended), with SA_RESTART it goes on to the handshake timeout, and SO_SNDTIMEO
/// bounds connection and handshake together.
#[test]
fn blocking_connect_keeps_signals_and_send_timeout() {
    if !ready(&["cc"]) {
        return;
    }
    let exe = compile_c("timing", "timing", TIMING_CLIENT, &[]);
    let silent = TinyListener::start_on(
        "127.0.0.1:0",
        stls_tests::listener::Spawn {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            env: Vec::new(),
            groups: None,
            timeout: Duration::from_secs(60),
        },
    );
    let port = silent.port().to_string();
    let exe = exe.to_str().expect("utf-8");
    for (how, timeout, errno, low, high) in [
        ("alarm", "30s", "Interrupted system call", 1.5, 6.0),
        ("restart", "3s", "Connection timed out", 2.5, 8.0),
        ("sndtimeo", "30s", "Connection timed out", 1.5, 6.0),
    ] {
        let marker = Marker::new("STLS_TIMING", how, silent.port());
        let vars = marker.on(with(
            quiet(port_vars(silent.port())),
            "AUTOSSL_TIMEOUT",
            timeout,
        ));
        let o = shim::run(&[exe, &port, how], &vars, None);
        let out = o.stdout_str();
        assert!(
            out.contains(&format!("{how} r=-1 errno={errno} ")),
            "{how}: {out}\n{}",
            o.stderr_str()
        );
        let after: f64 = out
            .trim()
            .rsplit('=')
            .next()
            .and_then(|x| x.parse().ok())
            .expect("elapsed");
        assert!((low..high).contains(&after), "{how}: {out}");
        marker.assert_gone(&format!("{how}: the helper outlived the connect"));
    }
    // The same in the TCP connection itself, to an address that drops the SYN: the
    // kernel's own EINTR and send timeout (SO_SNDTIMEO's expiry is EINPROGRESS).
    for (how, errno) in [
        ("bh-alarm", "Interrupted system call"),
        ("bh-sndtimeo", "Operation now in progress"),
    ] {
        let hole = free_port("127.0.0.1");
        let vars = quiet(port_vars(hole));
        let o = shim::run(&[exe, &hole.to_string(), how], &vars, None);
        let out = o.stdout_str();
        let short = &how[3..];
        assert!(
            out.contains(&format!("{short} r=-1 errno={errno} ")),
            "{how}: {out}\n{}",
            o.stderr_str()
        );
        let after: f64 = out
            .trim()
            .rsplit('=')
            .next()
            .and_then(|x| x.parse().ok())
            .expect("elapsed");
        assert!((1.5..6.0).contains(&after), "{how}: {out}");
    }
}

// ------------------------------------------------------------------ non-blocking connects

/// `cmd` under the shim, and how long it took (seconds).
fn timed_run(cmd: &[&str], vars: &[(String, String)]) -> (proc::Outcome, f64) {
    let t = Instant::now();
    let o = shim::run(cmd, vars, None);
    (o, t.elapsed().as_secs_f64())
}

const PY_CONNECT_TIMEOUT: &str = "import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('failed', type(e).__name__)\n";

/// The program's own connect timeout holds, with AUTOSSL_TIMEOUT far longer: curl
/// `--connect-timeout 2` and Python's `create_connection(timeout=2)` (a non-blocking
/// connect and poll underneath) give up after about 2 s, against a blackholed address (the
/// TCP connect never ends) and against a server that accepts and never answers TLS (the
/// handshake never ends); the helper ends with the program's socket.
#[test]
fn nonblocking_connects_keep_the_programs_timeout() {
    if !ready(&["curl"]) {
        return;
    }
    let py = python_arg();
    let hole = Blackhole::on("127.0.0.1", 0).expect("a blackhole");
    let silent = TinyListener::start_on(
        "127.0.0.1:0",
        stls_tests::listener::Spawn {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            env: Vec::new(),
            groups: None,
            timeout: Duration::from_secs(60),
        },
    );
    for (what, port) in [("blackholed", hole.port), ("silent", silent.port())] {
        let marker = Marker::new("STLS_NB_TIMEOUT", what, port);
        let vars = marker.on(with(quiet(port_vars(port)), "AUTOSSL_TIMEOUT", "30s"));
        let u = url(NAME4, port);
        let (o, took) = timed_run(&["curl", "-sS", "--connect-timeout", "2", &u], &vars);
        assert_eq!(o.code(), 28, "{what}: curl: {}", o.stderr_str());
        assert!((1.5..6.0).contains(&took), "{what}: curl took {took:.1} s");
        eprintln!("measured: {what}: curl --connect-timeout 2 took {took:.2} s");
        let p = port.to_string();
        let (o, took) = timed_run(&[&py, "-c", PY_CONNECT_TIMEOUT, NAME4, &p], &vars);
        assert_eq!(
            o.stdout_str(),
            "failed TimeoutError\n",
            "{what}: python: {}",
            o.stderr_str()
        );
        assert!(
            (1.5..6.0).contains(&took),
            "{what}: python took {took:.1} s"
        );
        eprintln!("measured: {what}: create_connection(timeout=2) took {took:.2} s");
        marker.assert_gone(&format!("{what}: a helper outlived the program's socket"));
    }
}

/// curl's happy eyeballs through the shim: tls.test gives a blackholed ::1 first and a
/// server on 127.0.0.1 second; curl starts the second attempt after its own short delay
/// and is served over it, as without the library, far within AUTOSSL_TIMEOUT.
#[test]
fn happy_eyeballs_fall_back_at_curls_own_pace() {
    if !ready(&["curl"]) {
        return;
    }
    let (srv, _hole) = (0..20)
        .find_map(|_| {
            let srv = TinyListener::start_on("127.0.0.1:0", shim::spawn_for(Some(&pki().ec), None));
            let hole = Blackhole::on("::1", srv.port())?;
            Some((srv, hole))
        })
        .expect("a port for both the server and the blackhole");
    let port = srv.port();
    let marker = Marker::new("STLS_NB_EYEBALLS", "curl", port);
    let vars = marker.on(with(port_vars(port), "AUTOSSL_TIMEOUT", "30s"));
    let u = url(NAME, port);
    let (o, took) = timed_run(&["curl", "-sSv", "--max-time", "20", &u], &vars);
    assert_eq!(o.code(), 0, "curl: {}", o.stderr_str());
    assert!(o.stdout_str().contains(&tag(NAME)), "{}", o.stdout_str());
    assert!(
        o.stderr_str().contains("::1"),
        "no IPv6 attempt: {}",
        o.stderr_str()
    );
    let up = upgraded_lines(&o);
    assert!(
        !up.is_empty() && up.iter().all(|l| l.contains("127.0.0.1")),
        "{}",
        o.stderr_str()
    );
    assert!(took < 5.0, "the fallback took {took:.1} s");
    eprintln!("measured: happy eyeballs from a blackholed ::1 took {took:.2} s");
    marker.assert_gone("the blackholed attempt's helper outlived curl");
}

const NB_CLIENT: &str = include_str!("../apps/shim/nonblocking.c");

/// A C client with a non-blocking connect, once waiting with poll and once with epoll (the
/// socket registered right after EINPROGRESS): unwritable and EALREADY while the connect
/// and handshake go on, then writable with SO_ERROR 0, then 1 MiB of random bytes echoed,
/// checked by hash both ways.
#[test]
fn nonblocking_c_client_with_poll_and_epoll() {
    if !ready(&["cc"]) {
        return;
    }
    let exe = compile_c("nb-client", "nb", NB_CLIENT, &[]);
    let s = server(Some(&pki().ec), None);
    let port = s.port.to_string();
    let exe = exe.to_str().expect("utf-8");
    for (i, how) in ["poll", "epoll"].into_iter().enumerate() {
        let data = payload::bytes(0x6e62 + i as u64, 1 << 20);
        let o = shim::run(&[exe, NAME, &port, how], &s.vars(), Some(&data));
        assert_eq!(o.code(), 0, "{how}: {}", o.stderr_str());
        assert!(
            o.stderr_str().contains("connected: EINPROGRESS"),
            "{how}: {}",
            o.stderr_str()
        );
        let head = format!("{} len={}\n", tag(NAME), data.len());
        let out = &o.stdout;
        assert!(
            out.starts_with(head.as_bytes()),
            "{how}: {:?}",
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
        assert_eq!(
            payload::sha256_hex(&out[head.len()..]),
            payload::sha256_hex(&data),
            "{how}: the echo differs ({} bytes back)",
            out.len() - head.len()
        );
        assert_eq!(upgraded_lines(&o).len(), 1, "{how}: {}", o.stderr_str());
    }
}

const FORK_PENDING: &str = include_str!("../apps/shim/fork-pending.py");

/// A non-blocking connect pending across a fork: the child's own connect (which tidies
/// its copy of the table of pending connects) leaves the parent's outcome to the parent.
#[test]
fn pending_connect_across_fork() {
    let Some(s) = tls_server(&[], &pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    let o = s.run(&[&python_arg(), "-c", FORK_PENDING, &port]);
    let out = o.stdout_str();
    assert_eq!(o.code(), 0, "{out}\n{}", o.stderr_str());
    for who in ["parent:", "child:"] {
        let l = out.lines().find(|l| l.starts_with(who)).unwrap_or_default();
        assert!(
            l.contains(&tag("localhost")),
            "{who} {out}\n{}",
            o.stderr_str()
        );
    }
}

const JAVA_TIMEOUT: &str = include_str!("../apps/shim/Timeout.java");

/// Java's `Socket.connect(addr, 2000)` (a non-blocking connect and poll in the JVM) keeps
/// its own timeout through the shim, against a blackholed address and against a server
/// that accepts and never answers TLS.
#[test]
fn java_connect_timeout_is_its_own() {
    if !ready(&["java"]) {
        return;
    }
    let dir = scratch("java-timeout");
    let src = dir.join("Timeout.java");
    std::fs::write(&src, JAVA_TIMEOUT).expect("source");
    let src = src.display().to_string();
    let hole = Blackhole::on("127.0.0.1", 0).expect("a blackhole");
    let silent = TinyListener::start_on(
        "127.0.0.1:0",
        stls_tests::listener::Spawn {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            env: Vec::new(),
            groups: None,
            timeout: Duration::from_secs(60),
        },
    );
    for (what, port) in [("blackholed", hole.port), ("silent", silent.port())] {
        let marker = Marker::new("STLS_JAVA_TIMEOUT", what, port);
        let vars = marker.on(with(quiet(port_vars(port)), "AUTOSSL_TIMEOUT", "30s"));
        let p = port.to_string();
        let o = shim::run(&["java", &src, NAME4, &p], &vars, None);
        let out = o.stdout_str();
        assert!(
            out.starts_with("failed SocketTimeoutException after="),
            "{what}: {out}\n{}",
            o.stderr_str()
        );
        let after: f64 = out
            .trim()
            .rsplit('=')
            .next()
            .and_then(|x| x.parse().ok())
            .expect("elapsed");
        assert!((1.5..6.0).contains(&after), "{what}: {out}");
        eprintln!("measured: {what}: Java connect(addr, 2000) took {after:.2} s");
        marker.assert_gone(&format!("{what}: a helper outlived the JVM's socket"));
    }
}

const CONNECT_ONCE: &str = "import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])))\nexcept OSError as e:\n    sys.stderr.write('CONNECT FAILED %s\\n' % e)\n";
/// The same with a non-blocking connect, its outcome taken from SO_ERROR.
const CONNECT_NONBLOCKING: &str = "import os, select, socket, sys\ns = socket.socket()\ns.setblocking(False)\ntry:\n    s.connect((sys.argv[1], int(sys.argv[2])))\nexcept BlockingIOError:\n    pass\nselect.select([], [s], [], 20)\ne = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)\nif e:\n    sys.stderr.write('CONNECT FAILED %s\\n' % os.strerror(e))\n";

/// The shim's messages say the real cause, in the shim's own terms: a server certificate
/// that nothing here trusts (no CAFILE) is a matter of CAFILE, not of the name, even when
/// no name was known; a name the certificate was not issued for points at AUTOSSL_SNI and
/// AUTOSSL_NAMES, never at tlsc's -k, which a shim user cannot pass.
#[test]
fn the_shim_advises_the_variables_that_fix_the_failure() {
    let Some(s) = tls_server(&[], &pki().ec) else {
        return;
    };
    let port = s.port.to_string();
    // No CAFILE: the system's trust store does not hold the test CA.
    let untrusting: Vec<(String, String)> = s
        .vars()
        .into_iter()
        .filter(|(k, _)| k != "CAFILE")
        .collect();
    let wrong = with(s.vars(), "AUTOSSL_SNI", "wrong.test");
    // A blocking connect (the outcome awaited in connect) and a non-blocking one (the
    // outcome given when the program asks for SO_ERROR): tlsc says why on either path.
    for program in [CONNECT_ONCE, CONNECT_NONBLOCKING] {
        let o = shim::run(
            &[&python_arg(), "-c", program, "127.0.0.1", &port],
            &untrusting,
            None,
        );
        let err = o.stderr_str();
        assert!(err.contains("CONNECT FAILED"), "{err}");
        assert!(err.contains("CAFILE"), "{err}");
        assert!(
            !err.contains("AUTOSSL_SNI"),
            "the name blamed for a trust failure: {err}"
        );
        // Trusted, but asked for another name.
        let o = shim::run(
            &[&python_arg(), "-c", program, "127.0.0.1", &port],
            &wrong,
            None,
        );
        let err = o.stderr_str();
        assert!(err.contains("CONNECT FAILED"), "{err}");
        assert!(
            err.contains("not for wrong.test") && err.contains("AUTOSSL_SNI=NAME"),
            "{err}"
        );
        assert!(!err.contains("-k"), "a shim user cannot pass -k: {err}");
    }
    // No name known for the address, and no trust: the advice is about trust alone.
    let o = shim::run(
        &[&python_arg(), "-c", CONNECT_NONBLOCKING, "127.0.0.1", &port],
        &untrusting,
        None,
    );
    let err = o.stderr_str();
    assert!(
        err.contains("CAFILE") && !err.contains("AUTOSSL_NAMES"),
        "{err}"
    );
}
