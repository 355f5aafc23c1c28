//! Child processes with bounded waits: every wait has a deadline, and a process that
//! overstays it is killed together with its process group.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How a finished process ended, with everything it printed.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Outcome {
    /// The exit code, or 128 + the signal number for a process killed by a signal
    /// (the shell's convention, and the wrappers' exit status for a killed child).
    pub fn code(&self) -> i32 {
        exit_code(self.status)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Exit code, or 128 + signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => -1,
    }
}

/// Kill a child's whole process group (children are spawned as group leaders by
/// [`spawn`]), then the child itself in case it is not a group leader.
pub fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) calls.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
}

/// Wait until `deadline` for the child to exit. `None` if it is still running.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Wait at most `timeout`; on expiry kill the process group and panic naming `what`.
pub fn wait_or_kill(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    match wait_until(child, Instant::now() + timeout) {
        Some(st) => st,
        None => {
            kill_group(child);
            let _ = child.wait();
            panic!("{what}: still running after {timeout:?}; killed");
        }
    }
}

/// Spawn `cmd` in its own process group with stdin/stdout/stderr as configured by the caller
/// (defaults: stdin null, stdout and stderr piped).
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.process_group(0);
    let prog = format!("{:?}", cmd.get_program());
    // A script a test has just written can be "busy" for a moment: another test's thread
    // forked while the file was open for writing, and its child holds that descriptor
    // until it execs. Bounded: 50 tries, 10 ms apart.
    for _ in 0..50 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            r => return r.unwrap_or_else(|e| panic!("cannot spawn {prog}: {e}")),
        }
    }
    panic!("cannot spawn {prog}: the file stayed busy (ETXTBSY) for 500 ms")
}

/// A running child whose stdout and stderr are being collected by threads.
pub struct Running {
    pub child: Child,
    out: Option<mpsc::Receiver<Vec<u8>>>,
    err: Option<mpsc::Receiver<Vec<u8>>>,
    what: String,
}

fn collector<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

impl Running {
    /// Spawn with stdout and stderr piped and collected; stdin as the caller set it
    /// (null when unset).
    pub fn start(cmd: &mut Command) -> Running {
        let what = format!("{:?}", cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn(cmd);
        let out = child.stdout.take().map(collector);
        let err = child.stderr.take().map(collector);
        Running {
            child,
            out,
            err,
            what,
        }
    }

    /// Take over an already spawned child; its stdout/stderr pipes, if still there, are
    /// collected.
    pub fn adopt(mut child: Child) -> Running {
        let out = child.stdout.take().map(collector);
        let err = child.stderr.take().map(collector);
        let what = format!("pid {}", child.id());
        Running {
            child,
            out,
            err,
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the exit (bounded; kill and panic on timeout) and collect the output.
    /// Output still held open by a grandchild is abandoned after a short grace period.
    pub fn finish(mut self, timeout: Duration) -> Outcome {
        let status = wait_or_kill(&mut self.child, timeout, &self.what);
        self.collect(status)
    }

    /// Like [`finish`](Self::finish) but returns `None` (after killing) instead of panicking.
    pub fn finish_or_kill(mut self, timeout: Duration) -> Option<Outcome> {
        match wait_until(&mut self.child, Instant::now() + timeout) {
            Some(st) => Some(self.collect(st)),
            None => {
                kill_group(&mut self.child);
                let _ = self.child.wait();
                None
            }
        }
    }

    /// Kill the process group now and collect what it printed.
    pub fn kill(mut self) -> Outcome {
        kill_group(&mut self.child);
        let st = wait_or_kill(&mut self.child, Duration::from_secs(10), &self.what);
        self.collect(st)
    }

    fn collect(&mut self, status: ExitStatus) -> Outcome {
        let grace = Duration::from_secs(5);
        let get = |rx: Option<mpsc::Receiver<Vec<u8>>>| match rx {
            Some(rx) => rx.recv_timeout(grace).unwrap_or_default(),
            None => Vec::new(),
        };
        let stdout = get(self.out.take());
        let stderr = get(self.err.take());
        Outcome {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill_group(&mut self.child);
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` to completion: feed `input` on stdin (then close it; `None` = /dev/null),
/// collect stdout and stderr, kill and panic after `timeout`.
pub fn run(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Outcome {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut r = Running::start(cmd);
    if let (Some(data), Some(mut stdin)) = (input, r.child.stdin.take()) {
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    r.finish(timeout)
}

/// `sh -c script` as a command (`$0` = "sh").
pub fn sh(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(script);
    c
}

/// True if process `pid` exists (and is not a zombie we could still see).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the parenthesised command name
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Arrange for `fds` (source fd, target fd) to be dup'ed onto their target numbers in the
/// child (without close-on-exec). The caller keeps the sources open until the spawn.
pub fn map_fds(cmd: &mut Command, fds: &[(std::os::fd::RawFd, std::os::fd::RawFd)]) {
    let fds = fds.to_vec();
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above the targets, so that a source that happens to
            // be a target number is not clobbered (nor left close-on-exec).
            let mut high = [0 as libc::c_int; 16];
            for (i, (src, _)) in fds.iter().enumerate().take(16) {
                let h = libc::fcntl(*src, libc::F_DUPFD, 100);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, (_, dst)) in fds.iter().enumerate().take(16) {
                if libc::dup2(high[i], *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for h in high.iter().take(fds.len().min(16)) {
                libc::close(*h);
            }
            Ok(())
        });
    }
}

/// A pipe (read end, write end), both close-on-exec.
pub fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        panic!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}
