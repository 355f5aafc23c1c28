//! Real TLS peers: clients (openssl s_client, curl, gnutls-cli, Python) for tlsd and
//! servers (openssl s_server, stunnel4, socat, Python) for tlsc, plus tlsc spawned the way
//! tcpclient runs it (network on fd 6/7).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::listener::serve_on_free_port;
use crate::pki::{pki, Pair};
use crate::proc::{self, Outcome, Running};

/// TLS version selector for the peers' command lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    V12,
    V13,
}

impl Tls {
    pub fn both() -> [Tls; 2] {
        [Tls::V12, Tls::V13]
    }
    /// `SSL_PROTOCOL`'s value for this version.
    pub fn name(self) -> &'static str {
        match self {
            Tls::V12 => "TLSv1.2",
            Tls::V13 => "TLSv1.3",
        }
    }
    pub fn openssl_flag(self) -> &'static str {
        match self {
            Tls::V12 => "-tls1_2",
            Tls::V13 => "-tls1_3",
        }
    }
    pub fn python(self) -> &'static str {
        match self {
            Tls::V12 => "TLSv1_2",
            Tls::V13 => "TLSv1_3",
        }
    }
    pub fn gnutls_priority(self) -> &'static str {
        match self {
            Tls::V12 => "NORMAL:-VERS-ALL:+VERS-TLS1.2",
            Tls::V13 => "NORMAL:-VERS-ALL:+VERS-TLS1.3",
        }
    }
    pub fn ssl_version(self) -> openssl::ssl::SslVersion {
        match self {
            Tls::V12 => openssl::ssl::SslVersion::TLS1_2,
            Tls::V13 => openssl::ssl::SslVersion::TLS1_3,
        }
    }
}

const T: Duration = Duration::from_secs(60);

fn base_env(c: &mut Command) {
    c.env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
    );
}

/// Did `openssl s_client` report a session of version `name` with a real cipher?
pub fn negotiated(stdout: &str, name: &str) -> bool {
    // (the `New, ...` line spells TLS 1.0 "TLSv1.0", the session block "TLSv1")
    stdout.contains(&format!("Protocol  : {name}\n"))
        && stdout.contains("Cipher    : ")
        && !stdout.contains("Cipher    : 0000")
        && !stdout.contains("Cipher is (NONE)")
}

// ---------------------------------------------------------------- clients (for tlsd)

/// `openssl s_client` to 127.0.0.1:port verifying `localhost` against the test CA; sends
/// `input`, then (stdin at EOF, `-quiet` implies `-ign_eof`) reads until the server closes.
pub fn s_client(port: u16, tls: Tls, extra: &[&str], input: &[u8]) -> Outcome {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(&pki().ca)
        .args(["-verify_return_error", "-quiet", tls.openssl_flag()])
        .args(extra);
    base_env(&mut c);
    proc::run(&mut c, Some(input), T)
}

/// Did a peer tool's stderr report an error or an unclean close?
pub fn reports_error(stderr: &str) -> bool {
    let l = stderr.to_ascii_lowercase();
    l.contains("unexpected eof")
        || l.contains("error")
        || l.contains("non-properly terminated")
        || l.contains("fatal")
}

/// `curl` to `https://tls.test:port/` (resolved to 127.0.0.1) with the test CA.
pub fn curl(port: u16, tls: Tls) -> Outcome {
    let (v, max) = match tls {
        Tls::V12 => ("--tlsv1.2", "1.2"),
        Tls::V13 => ("--tlsv1.3", "1.3"),
    };
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "30", v, "--tls-max", max, "--cacert"])
        .arg(&pki().ca)
        .arg("--resolve")
        .arg(format!("tls.test:{port}:127.0.0.1"))
        .arg(format!("https://tls.test:{port}/hello"));
    base_env(&mut c);
    proc::run(&mut c, None, T)
}

/// `gnutls-cli` to 127.0.0.1:port, SNI and verification `localhost`. Its stdin stays open
/// until it exits (gnutls-cli closes the session at stdin EOF): the server closes first.
pub fn gnutls_cli(port: u16, tls: Tls, input: &[u8]) -> Outcome {
    let mut c = Command::new("gnutls-cli");
    c.arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .arg("--sni-hostname=localhost")
        .arg("--verify-hostname=localhost")
        .arg(format!("--x509cafile={}", pki().ca.display()))
        .arg(format!("--priority={}", tls.gnutls_priority()));
    base_env(&mut c);
    c.stdin(Stdio::piped());
    let mut r = Running::start(&mut c);
    let mut stdin = r.child.stdin.take().expect("gnutls-cli stdin");
    let _ = stdin.write_all(input);
    let _ = stdin.flush();
    let out = r.finish(T);
    drop(stdin);
    out
}

/// A Python `ssl` client: connect, verify `localhost`, send `input`, read until EOF.
/// Prints the data received on stdout; on an unclean end prints `PYERR: ...` on stderr
/// and exits 3.
pub fn python_client(port: u16, tls: Tls, input: &[u8]) -> Outcome {
    const SCRIPT: &str = r#"
import socket, ssl, sys
port, ver, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.minimum_version = getattr(ssl.TLSVersion, ver)
ctx.maximum_version = getattr(ssl.TLSVersion, ver)
data = sys.stdin.buffer.read()
with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(data)
        out = bytearray()
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                out += b
        except Exception as e:
            sys.stdout.buffer.write(out)
            print("PYERR: %r" % e, file=sys.stderr)
            sys.exit(3)
        sys.stdout.buffer.write(out)
        print("PYVERSION: %s" % s.version(), file=sys.stderr)
"#;
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(tls.python())
        .arg(&pki().ca);
    base_env(&mut c);
    proc::run(&mut c, Some(input), T)
}

// ---------------------------------------------------------------- servers (for tlsc)

/// `openssl s_server -quiet -naccept 1` on a free port with `pair`: sends its stdin
/// (`input`) to the client, prints what it receives on stdout.
pub fn s_server(pair: &Pair, extra: &[&str], input: &[u8]) -> (Running, u16) {
    let input = input.to_vec();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let (mut r, port) = serve_on_free_port("openssl s_server", "127.0.0.1", |port| {
        let mut c = Command::new("openssl");
        c.args(["s_server", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&pair.cert)
            .arg("-key")
            .arg(&pair.key)
            .args(["-naccept", "1", "-quiet"])
            .args(&extra);
        base_env(&mut c);
        c.stdin(Stdio::piped());
        c
    });
    if let Some(mut stdin) = r.child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
            // keep stdin open a while: s_server must not see EOF before the client is done
            std::thread::sleep(Duration::from_secs(30));
        });
    }
    (r, port)
}

/// `stunnel4` in server mode, foreground, one service that runs `exec` (argv) per
/// connection. `tls_max`: None = default versions.
pub fn stunnel(pair: &Pair, exec: &[&str], tls: Option<Tls>, dir: &Path) -> (Running, u16) {
    let exec: Vec<String> = exec.iter().map(|s| s.to_string()).collect();
    let prog = crate::bins::which(&exec[0])
        .unwrap_or_else(|| panic!("{} not on PATH", exec[0]))
        .display()
        .to_string();
    let dir = dir.to_path_buf();
    serve_on_free_port("stunnel4", "127.0.0.1", |port| {
        let conf = dir.join(format!("stunnel-{port}.conf"));
        let mut text = format!(
            "foreground = yes\npid =\nsyslog = no\ndebug = 4\n\
             [svc]\naccept = 127.0.0.1:{port}\ncert = {}\nkey = {}\nexec = {}\nexecArgs = {}\n",
            pair.cert.display(),
            pair.key.display(),
            prog,
            exec.join(" "),
        );
        if let Some(t) = tls {
            let v = match t {
                Tls::V12 => "TLSv1.2",
                Tls::V13 => "TLSv1.3",
            };
            text.push_str(&format!("sslVersionMin = {v}\nsslVersionMax = {v}\n"));
        }
        std::fs::write(&conf, text).expect("writing stunnel config");
        let mut c = Command::new("stunnel4");
        c.arg(&conf);
        base_env(&mut c);
        c
    })
}

/// `socat OPENSSL-LISTEN` (one connection) relaying to `SYSTEM:cmd`.
pub fn socat(pair: &Pair, system: &str, tls: Tls) -> (Running, u16) {
    let v = match tls {
        Tls::V12 => "TLS1.2",
        Tls::V13 => "TLS1.3",
    };
    serve_on_free_port("socat", "127.0.0.1", |port| {
        let mut c = Command::new("socat");
        c.args(["-t", "10", "-T", "60"])
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={},key={},verify=0,\
                 openssl-min-proto-version={v},openssl-max-proto-version={v}",
                pair.cert.display(),
                pair.key.display()
            ))
            .arg(format!("SYSTEM:{system}"));
        base_env(&mut c);
        c
    })
}

/// A Python `ssl` server for one connection. `mode`: `hash` (read to EOF, reply with the
/// hex SHA-256 and a newline, close cleanly) or `send:PATH` (send the file, close cleanly,
/// then read and discard until EOF). Prints `PROTO <version>` on stdout.
pub fn python_server(pair: &Pair, tls: Tls, mode: &str) -> (Running, u16) {
    const SCRIPT: &str = r#"
import hashlib, socket, ssl, sys
port, ver, cert, key, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.minimum_version = getattr(ssl.TLSVersion, ver)
ctx.maximum_version = getattr(ssl.TLSVersion, ver)
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(1)
ls.settimeout(60)
raw, _ = ls.accept()
raw.settimeout(60)
s = ctx.wrap_socket(raw, server_side=True)
print("PROTO", s.version(), flush=True)
if mode == "hash":
    h = hashlib.sha256()
    while True:
        b = s.recv(65536)
        if not b:
            break
        h.update(b)
    s.sendall((h.hexdigest() + "\n").encode())
    s.unwrap()
elif mode.startswith("send:"):
    with open(mode[5:], "rb") as f:
        while True:
            b = f.read(65536)
            if not b:
                break
            s.sendall(b)
    s.unwrap()
s.close()
print("DONE", flush=True)
"#;
    let mode = mode.to_string();
    serve_on_free_port("python3 ssl server", "127.0.0.1", |port| {
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(SCRIPT)
            .arg(port.to_string())
            .arg(tls.python())
            .arg(&pair.cert)
            .arg(&pair.key)
            .arg(&mode);
        base_env(&mut c);
        c
    })
}

// ---------------------------------------------------------------- tlsc as tcpclient runs it

/// Builder for a `tlsc` run with a connected socket on fd 6 and 7 (as tcpclient does).
pub struct Tlsc {
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Extra fds for the child: (source fd kept open by the caller, target number).
    pub fds: Vec<(i32, i32)>,
}

impl Tlsc {
    pub fn new<A: AsRef<OsStr>>(args: &[A]) -> Tlsc {
        Tlsc {
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            env: vec![("CAFILE".into(), pki().ca.clone().into())],
            fds: Vec::new(),
        }
    }
    /// Start with no variables at all (not even CAFILE).
    pub fn bare<A: AsRef<OsStr>>(args: &[A]) -> Tlsc {
        Tlsc {
            env: Vec::new(),
            ..Tlsc::new(args)
        }
    }
    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Tlsc {
        self.env.push((k.into(), v.as_ref().to_os_string()));
        self
    }
    pub fn without_env(mut self, k: &str) -> Tlsc {
        self.env.retain(|(n, _)| n != k);
        self
    }

    /// The command, without the network fds.
    pub fn command(&self) -> Command {
        let mut c = Command::new(crate::bins::tlsc());
        c.args(&self.args);
        base_env(&mut c);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Spawn with `sock` on fd 6 and 7 and `TCPREMOTEIP`/`TCPREMOTEPORT` set from it
    /// (unless already set); stdin as given, stdout and stderr collected.
    pub fn spawn(&self, sock: TcpStream, stdin: Stdio) -> Running {
        let peer = sock.peer_addr().expect("peer_addr");
        let mut c = self.command();
        if !self.env.iter().any(|(k, _)| k == "TCPREMOTEIP") {
            c.env("TCPREMOTEIP", peer.ip().to_string());
        }
        c.env("TCPREMOTEPORT", peer.port().to_string())
            .env("PROTO", "TCP");
        let mut fds = vec![(sock.as_raw_fd(), 6), (sock.as_raw_fd(), 7)];
        fds.extend(self.fds.iter().copied());
        proc::map_fds(&mut c, &fds);
        c.stdin(stdin);
        let r = Running::start(&mut c);
        drop(c);
        drop(sock);
        r
    }

    /// Connect to 127.0.0.1:port and run to completion with `input` on stdin.
    pub fn run(&self, port: u16, input: Option<&[u8]>) -> Outcome {
        let sock = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        let stdin = if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut r = self.spawn(sock, stdin);
        if let (Some(data), Some(mut w)) = (input, r.child.stdin.take()) {
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = w.write_all(&data);
            });
        }
        r.finish(T)
    }
}

/// Common shape of a fatal message: exactly one non-empty line starting with `prefix`.
pub fn one_fatal_line(stderr: &str, prog: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.len() == 1 && lines[0].starts_with(&format!("{prog}: fatal:"))
}

/// A path under `dir` that a test program creates to prove it ran.
pub fn marker(dir: &Path) -> PathBuf {
    dir.join("prog-ran")
}
