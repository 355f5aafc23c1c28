//! The deployments the README and tlsd(1) document, run as written (paths and ports
//! substituted): tlsd under a real openbsd-inetd, from its `inetd.conf` line and from the
//! wrapper script that keeps the log; under `systemd-socket-activate --inetd` (the
//! `Accept=yes` model), where the verbose line names the peer from the socket; and the
//! README's execline client chain with execline's own `fdmove`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stls_tests::bins::is_root;
use stls_tests::listener::serve_on_free_port;
use stls_tests::listener::{Spawn, TinyListener};
use stls_tests::proc::{self, Outcome};
use stls_tests::{bins, pki, require, scratch, skip};

const WAIT: Duration = Duration::from_secs(30);

/// An executable script in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The documented application: answers one HTTP request with a fixed body.
fn httpd(dir: &Path) -> PathBuf {
    script(
        dir,
        "httpd",
        "#!/bin/sh\nread line\nprintf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nhello from %s\\n' \"${line%% *}\"\n",
    )
}

/// curl to https://tls.test:PORT/ verified against the test CA.
fn curl(port: u16) -> Outcome {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&pki().ca)
        .arg("--resolve")
        .arg(format!("tls.test:{port}:127.0.0.1"))
        .arg(format!("https://tls.test:{port}/"));
    proc::run(&mut c, None, WAIT)
}

/// Wait for `path` to hold `needle` (a log written by another process).
fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = fs::read_to_string(path).unwrap_or_default();
        if s.contains(needle) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn can_run_inetd() -> bool {
    if !require("inetd") || !require("curl") {
        return false;
    }
    // The documented line runs the service as root.
    if !is_root() {
        return skip("openbsd-inetd with a `root` service line needs root");
    }
    true
}

/// openbsd-inetd in the foreground (`-d`) with a private configuration of one line.
fn inetd(dir: &Path, line: impl Fn(u16) -> String) -> (proc::Running, u16) {
    serve_on_free_port("inetd", "127.0.0.1", |port| {
        let conf = dir.join(format!("inetd-{port}.conf"));
        fs::write(&conf, format!("{}\n", line(port))).unwrap();
        let mut c = Command::new("inetd");
        c.arg("-d").arg(&conf);
        c
    })
}

#[test]
fn under_openbsd_inetd_the_documented_line() {
    if !can_run_inetd() {
        return;
    }
    let dir = scratch("inetd");
    let p = pki();
    let app = httpd(&dir);
    // README and tlsd(1): `https stream tcp nowait root /usr/bin/env env CERTFILE=...
    // KEYFILE=... /usr/local/bin/tlsd -- /usr/local/bin/httpd`
    let (srv, port) = inetd(&dir, |port| {
        format!(
            "127.0.0.1:{port} stream tcp nowait root /usr/bin/env env CERTFILE={} KEYFILE={} {} -- {}",
            p.ec.cert.display(),
            p.ec.key.display(),
            bins::tlsd().display(),
            app.display()
        )
    });
    for i in 0..3 {
        let o = curl(port);
        assert_eq!(o.code(), 0, "curl {i}: {}", o.stderr_str());
        assert_eq!(o.stdout_str(), "hello from GET\n", "curl {i}");
    }
    srv.kill();
}

#[test]
fn under_openbsd_inetd_the_wrapper_script_keeps_the_log() {
    if !can_run_inetd() {
        return;
    }
    let dir = scratch("inetd-log");
    let p = pki();
    let app = httpd(&dir);
    let log = dir.join("tlsd.log");
    // README: the wrapper script, as the server program of a one-word line.
    let wrapper = script(
        &dir,
        "tlsd-https",
        &format!(
            "#!/bin/sh\nexec 2>>{}\nCERTFILE={} KEYFILE={} \\\n  exec {} -v 2 -- {}\n",
            log.display(),
            p.ec.cert.display(),
            p.ec.key.display(),
            bins::tlsd().display(),
            app.display()
        ),
    );
    let (srv, port) = inetd(&dir, |port| {
        format!(
            "127.0.0.1:{port} stream tcp nowait root {} tlsd-https",
            wrapper.display()
        )
    });
    let o = curl(port);
    assert_eq!(o.code(), 0, "curl: {}", o.stderr_str());
    assert_eq!(o.stdout_str(), "hello from GET\n");
    // The verbose line went to the log, with the peer read from the socket (inetd sets
    // no TCPREMOTEIP), and nothing of it to the client.
    let text = wait_for_text(&log, "peer=127.0.0.1");
    assert!(
        text.contains("tlsd: info: TLSv1.3") && text.contains("peer=127.0.0.1"),
        "log: {text:?}"
    );
    srv.kill();
}

#[test]
fn under_systemd_socket_activate_inetd_mode() {
    if !require("systemd-socket-activate") || !require("curl") {
        return;
    }
    let dir = scratch("systemd");
    let p = pki();
    let app = httpd(&dir);
    let log = dir.join("stderr.log");
    // tlsd@.service's ExecStart with StandardInput=socket, StandardOutput=socket and
    // StandardError to a file (the journal here).
    let (srv, port) = serve_on_free_port("systemd-socket-activate", "127.0.0.1", |port| {
        let mut c = Command::new("systemd-socket-activate");
        c.args(["--inetd", "-a", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("--setenv=CERTFILE={}", p.ec.cert.display()))
            .arg(format!("--setenv=KEYFILE={}", p.ec.key.display()))
            .arg("/bin/sh")
            .arg("-c")
            .arg(format!(
                "exec {} -v 2 -- {} 2>>{}",
                bins::tlsd().display(),
                app.display(),
                log.display()
            ));
        c
    });
    for i in 0..3 {
        let o = curl(port);
        assert_eq!(o.code(), 0, "curl {i}: {}", o.stderr_str());
        assert_eq!(o.stdout_str(), "hello from GET\n", "curl {i}");
    }
    let text = wait_for_text(&log, "peer=127.0.0.1");
    assert!(text.contains("peer=127.0.0.1"), "log: {text:?}");
    srv.kill();
}

#[test]
fn execline_client_chain_from_the_readme() {
    if !require("execlineb") || !require("tcpclient") {
        return;
    }
    let dir = scratch("execline");
    let p = pki();
    // The server answers what the client sent, upper-cased.
    let l = TinyListener::start(Spawn::tlsd(
        &["--", "/bin/sh", "-c", "read line; echo \"got $line\""],
        &[("CERTFILE", &p.ec.cert), ("KEYFILE", &p.ec.key)],
    ));
    let out = dir.join("reply");
    // The client talks on stdin/stdout: after `fdmove 1 7` its stdout is the network.
    let client = script(
        &dir,
        "client",
        &format!(
            "#!/bin/sh\necho hello\nread reply\necho \"$reply\" > {}\n",
            out.display()
        ),
    );
    // README: tcpclient -RHl0 ADDR PORT / tlsc -k NAME -- / fdmove 0 6 / fdmove 1 7 / client
    let chain = script(
        &dir,
        "chain",
        &format!(
            "#!/bin/execlineb -P\ntcpclient -RHl0 127.0.0.1 {}\n{} -k localhost --\nfdmove 0 6\nfdmove 1 7\n{}\n",
            l.port(),
            bins::tlsc().display(),
            client.display()
        ),
    );
    let mut c = Command::new(&chain);
    c.env("CAFILE", &p.ca);
    let o = proc::run(&mut c, None, WAIT);
    assert_eq!(o.code(), 0, "chain: {}", o.stderr_str());
    assert_eq!(fs::read_to_string(&out).unwrap_or_default(), "got hello\n");
    assert_eq!(l.next_session(WAIT).code(), 0);
}
