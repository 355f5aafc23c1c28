//! Running tlsd (or any UCSPI server) per connection: a tiny listener of our own that
//! records each process's exit status and stderr, and the real `tcpserver`.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::proc::{self, Running};

/// One finished per-connection process.
#[derive(Debug)]
pub struct Session {
    pub pid: u32,
    pub status: ExitStatus,
    pub stderr: Vec<u8>,
    /// The process overstayed the session timeout and was killed.
    pub killed: bool,
    pub peer: SocketAddr,
    pub elapsed: Duration,
}

impl Session {
    pub fn code(&self) -> i32 {
        proc::exit_code(self.status)
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// What to run per connection.
#[derive(Clone, Debug)]
pub struct Spawn {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The environment (after `env_clear`; PATH is always passed).
    pub env: Vec<(OsString, OsString)>,
    /// Supplementary groups to set before exec (needs root).
    pub groups: Option<Vec<libc::gid_t>>,
    /// Kill a session after this long.
    pub timeout: Duration,
}

impl Spawn {
    /// `tlsd args...` (the args include `--` and the program) with `env`.
    pub fn tlsd<A: AsRef<OsStr>>(args: &[A], env: &[(&str, &Path)]) -> Spawn {
        Spawn {
            program: crate::bins::tlsd(),
            args: args.iter().map(|a| a.as_ref().to_os_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (OsString::from(k), v.as_os_str().to_os_string()))
                .collect(),
            groups: None,
            timeout: Duration::from_secs(120),
        }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Spawn {
        self.env.push((k.into(), v.as_ref().to_os_string()));
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args);
        c.env_clear();
        c.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        );
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.process_group(0);
        if let Some(groups) = self.groups.clone() {
            // SAFETY: setgroups is async-signal-safe; the vector is allocated before fork.
            unsafe {
                c.pre_exec(move || {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c
    }
}

/// Accepts connections and runs one process per connection with the socket on its fd 0
/// and 1, and the tcpserver environment (PROTO, TCPREMOTEIP, TCPREMOTEPORT, TCPLOCALIP,
/// TCPLOCALPORT).
pub struct TinyListener {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    sessions: mpsc::Receiver<Session>,
    started: mpsc::Receiver<u32>,
}

impl TinyListener {
    /// Listen on 127.0.0.1.
    pub fn start(spawn: Spawn) -> TinyListener {
        Self::start_on("127.0.0.1:0", spawn)
    }

    /// Listen on `bind` (e.g. `"[::1]:0"`).
    pub fn start_on(bind: &str, spawn: Spawn) -> TinyListener {
        let l = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = l.local_addr().expect("local_addr");
        l.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let (stx, srx) = mpsc::channel();
        let (ptx, prx) = mpsc::channel();
        let stop2 = stop.clone();
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((sock, peer)) => {
                        sock.set_nonblocking(false).expect("blocking socket");
                        launch(&spawn, sock, peer, &stx, &ptx);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        TinyListener {
            addr,
            stop,
            thread: Some(thread),
            sessions: srx,
            started: prx,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A plain TCP connection to the listener.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set_read_timeout");
        s.set_write_timeout(Some(Duration::from_secs(30)))
            .expect("set_write_timeout");
        s
    }

    /// The pid of the next process started (bounded wait).
    pub fn next_started(&self, timeout: Duration) -> u32 {
        self.started
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no connection accepted within {timeout:?}"))
    }

    /// The next finished session (bounded wait).
    pub fn next_session(&self, timeout: Duration) -> Session {
        self.sessions
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no per-connection process ended within {timeout:?}"))
    }

    /// Was a finished session reported within `timeout`?
    pub fn try_session(&self, timeout: Duration) -> Option<Session> {
        self.sessions.recv_timeout(timeout).ok()
    }
}

impl Drop for TinyListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn launch(
    spawn: &Spawn,
    sock: TcpStream,
    peer: SocketAddr,
    sessions: &mpsc::Sender<Session>,
    started: &mpsc::Sender<u32>,
) {
    let local = sock.local_addr().expect("local_addr");
    let mut cmd = spawn.command();
    cmd.env("PROTO", "TCP")
        .env("TCPREMOTEIP", peer.ip().to_string())
        .env("TCPREMOTEPORT", peer.port().to_string())
        .env("TCPLOCALIP", local.ip().to_string())
        .env("TCPLOCALPORT", local.port().to_string());
    let fd_in: OwnedFd = sock.try_clone().expect("dup socket").into();
    let fd_out: OwnedFd = sock.into();
    cmd.stdin(Stdio::from(fd_in))
        .stdout(Stdio::from(fd_out))
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn();
    drop(cmd); // our copies of the socket go with the Command
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!("spawning {}: {e}", spawn.program.display()),
    };
    let pid = child.id();
    let _ = started.send(pid);
    let stderr = child.stderr.take().expect("stderr pipe");
    let (etx, erx) = mpsc::channel();
    thread::spawn(move || {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut stderr = stderr;
        let _ = stderr.read_to_end(&mut buf);
        let _ = etx.send(buf);
    });
    let timeout = spawn.timeout;
    let tx = sessions.clone();
    thread::spawn(move || {
        let (status, killed) = match proc::wait_until(&mut child, start + timeout) {
            Some(st) => (st, false),
            None => {
                proc::kill_group(&mut child);
                (child.wait().expect("wait after kill"), true)
            }
        };
        let elapsed = start.elapsed();
        let stderr = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
        let _ = tx.send(Session {
            pid,
            status,
            stderr,
            killed,
            peer,
            elapsed,
        });
    });
}

/// A port that was free a moment ago (bind 0, release).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("binding {ip}:0: {e}"))
}

/// Inodes of TCP sockets listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for f in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = std::fs::read_to_string(f) else {
            continue;
        };
        for line in s.lines().skip(1) {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() < 10 || w[3] != "0A" {
                continue;
            }
            let Some(p) = w[1].rsplit(':').next() else {
                continue;
            };
            if u16::from_str_radix(p, 16).ok() == Some(port) {
                if let Ok(ino) = w[9].parse() {
                    out.push(ino);
                }
            }
        }
    }
    out
}

/// Does process `pid` (or one of its children) hold a socket listening on `port`?
pub fn pid_listens(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let mut pids = vec![pid];
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    for p in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if inodes.iter().any(|i| i.to_string() == ino) {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// Start a server that listens on a port given on its command line: pick a free port,
/// start, wait until that very process listens on it; retry with another port when it
/// exits early (port taken in between). Returns the running server and its port.
pub fn serve_on_free_port(what: &str, ip: &str, make: impl Fn(u16) -> Command) -> (Running, u16) {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port(ip);
        let mut cmd = make(port);
        let mut r = Running::start(&mut cmd);
        let pid = r.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pid_listens(pid, port) {
                return (r, port);
            }
            if let Ok(Some(_)) = r.child.try_wait() {
                let o = r.finish(Duration::from_secs(1));
                last = format!("exited {}: {}", o.code(), o.stderr_str());
                break;
            }
            if Instant::now() > deadline {
                let o = r.kill();
                last = format!("not listening after 10 s: {}", o.stderr_str());
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("{what}: could not start a listening server: {last}");
}

/// `tcpserver -q -R -H -l0 [-c max] 127.0.0.1 PORT prog...` (ucspi-tcp), with `env` added
/// to the environment.
pub struct TcpServer {
    pub port: u16,
    pub run: Running,
}

impl TcpServer {
    pub fn start<A: AsRef<OsStr>>(max_conns: u32, prog: &[A], env: &[(&str, &Path)]) -> TcpServer {
        let (run, port) = serve_on_free_port("tcpserver", "127.0.0.1", |port| {
            let mut c = Command::new("tcpserver");
            c.args(["-q", "-R", "-H", "-l0", "-c", &max_conns.to_string()])
                .arg("127.0.0.1")
                .arg(port.to_string())
                .args(prog);
            c.env_clear().env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            );
            for (k, v) in env {
                c.env(k, v);
            }
            c.stdin(Stdio::null());
            c
        });
        TcpServer { port, run }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Stop tcpserver (its running children carry on until their connection ends) and
    /// return what it (and they) printed on stderr so far.
    pub fn stop(self) -> String {
        self.run.kill().stderr_str()
    }
}
