//! A tlsserver started by a test: on a free port, waited for until it listens, its stderr
//! in a file read while it runs; stopped by SIGTERM, killed with its group if a test
//! leaves it running.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::listener::{free_port, pid_listens};
use crate::{bins, pki, proc, scratch};

const WAIT: Duration = Duration::from_secs(30);

/// A running tlsserver.
pub struct Server {
    /// The server's process.
    pub child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The address it listens on.
    pub ip: &'static str,
    /// Its stderr.
    pub log: PathBuf,
}

/// `prog` with an environment of `PATH` alone.
pub fn base_command(prog: &Path) -> Command {
    let mut c = Command::new(prog);
    c.env_clear().env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
    );
    c
}

impl Server {
    /// `tlsserver opts... IP PORT argv...` on a free port with the ECDSA pair, waited for
    /// until that process listens.
    pub fn start(opts: &[&str], ip: &'static str, argv: &[&str]) -> Server {
        let p = &pki().ec;
        Server::start_env(
            opts,
            ip,
            argv,
            &[("CERTFILE", &p.cert), ("KEYFILE", &p.key)],
        )
    }

    /// The same with `env` as the whole environment (and `PATH`).
    pub fn start_env<A: AsRef<std::ffi::OsStr>>(
        opts: &[&str],
        ip: &'static str,
        argv: &[A],
        env: &[(&str, &Path)],
    ) -> Server {
        let dir = scratch("tlsserver");
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port(ip);
            let log = dir.join(format!("stderr-{port}-{attempt}"));
            let err = fs::File::create(&log).expect("creating the log");
            let mut c = base_command(&bins::bin("tlsserver"));
            c.args(opts).arg(ip).arg(port.to_string()).args(argv);
            for (k, v) in env {
                c.env(k, v);
            }
            c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
            let mut child = proc::spawn(&mut c);
            let pid = child.id();
            let listening = proc::wait_for(Duration::from_secs(10), || {
                pid_listens(pid, port) || matches!(child.try_wait(), Ok(Some(_)))
            });
            if listening && pid_listens(pid, port) {
                return Server {
                    child,
                    port,
                    ip,
                    log,
                };
            }
            proc::kill_group(&mut child);
            let _ = child.wait();
            last = fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("tlsserver did not start listening: {last}");
    }

    /// Where a client connects: 127.0.0.1 for a server on `::`.
    pub fn addr(&self) -> SocketAddr {
        let ip = if self.ip == "::" {
            "127.0.0.1"
        } else {
            self.ip
        };
        SocketAddr::new(ip.parse().expect("ip"), self.port)
    }

    /// `::1` and the port.
    pub fn addr6(&self) -> SocketAddr {
        SocketAddr::new("::1".parse().expect("ip"), self.port)
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) until its stderr contains `words` `n` times or more; whether it did.
    pub fn wait_log(&self, words: &str, n: usize, timeout: Duration) -> bool {
        proc::wait_for(timeout, || self.log().matches(words).count() >= n)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` to the server.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the server's own pid.
        unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
    }

    /// SIGTERM, then the exit code (bounded).
    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let st = proc::wait_or_kill(&mut self.child, WAIT, "tlsserver after SIGTERM");
        proc::exit_code(st)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            proc::kill_group(&mut self.child);
            let _ = self.child.wait();
        }
    }
}
