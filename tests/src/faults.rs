//! Helpers for the fault, load and security tests: TCP resets, closed descriptors in a
//! child, /proc readings (open fds, resident memory, credentials), plain-text peers and
//! stderr checks.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Make the next close of `s` send a TCP RST (SO_LINGER on with a zero timeout).
pub fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Close `s` with a TCP RST.
pub fn reset(s: TcpStream) {
    linger_zero(&s);
    drop(s);
}

/// Close `fds` in the child after the standard streams are set up, just before exec.
pub fn close_in_child(cmd: &mut Command, fds: &[RawFd]) {
    let fds = fds.to_vec();
    // SAFETY: close(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                libc::close(*fd);
            }
            Ok(())
        });
    }
}

/// The number of open descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// A `Name:` field of /proc/<pid>/status, whitespace-normalised.
pub fn status_field(pid: u32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Resident memory of `pid` in KiB (VmRSS).
pub fn vm_rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// The pids of the children of `pid` (all its threads).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            let p = t.path().join("children");
            if let Ok(s) = std::fs::read_to_string(p) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Lines of `stderr` that are not blank.
pub fn lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// What a plain-text (non-TLS) server does with its one connection.
#[derive(Clone, Debug)]
pub enum Plain {
    /// Send these bytes at once, then read and discard until EOF.
    Banner(Vec<u8>),
    /// Read one chunk (the ClientHello), answer with these bytes, close.
    Reply(Vec<u8>),
    /// Send the bytes one at a time with this pause (a slowloris server).
    Trickle(Vec<u8>, Duration),
}

/// A plain TCP server on 127.0.0.1 for one connection, doing `what`; the thread ends
/// within `limit`.
pub fn plain_server(what: Plain, limit: Duration) -> (SocketAddr, thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local_addr");
    let h = thread::spawn(move || {
        l.set_nonblocking(true).expect("nonblocking listener");
        let deadline = Instant::now() + limit;
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).expect("blocking");
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(1);
        s.set_read_timeout(Some(left)).expect("read timeout");
        s.set_write_timeout(Some(left)).expect("write timeout");
        let mut buf = [0u8; 4096];
        match what {
            Plain::Banner(b) => {
                let _ = s.write_all(&b);
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
            Plain::Reply(b) => {
                let _ = s.read(&mut buf);
                let _ = s.write_all(&b);
            }
            Plain::Trickle(b, pause) => {
                for c in b {
                    if s.write_all(&[c]).is_err() || Instant::now() > deadline {
                        break;
                    }
                    thread::sleep(pause);
                }
            }
        }
    });
    (addr, h)
}

/// In the child, just before exec (after any earlier `pre_exec` such as
/// [`crate::proc::map_fds`]), close every descriptor from 3 up to 4095 except `keep`: what
/// the test process happens to have open (OpenSSL opens files without close-on-exec, and
/// tests run in parallel threads) does not leak into the process under test.
pub fn close_other_fds(cmd: &mut Command, keep: &[RawFd]) {
    let keep = keep.to_vec();
    // SAFETY: close(2) is async-signal-safe; `keep` was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for fd in 3..4096 {
                if !keep.contains(&fd) {
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
}
