//! The app's process: a launcher forked before the handshake (so the app keeps the
//! wrapper's original credentials when the engine drops them) that waits for the session
//! description and execs `prog` only after a successful handshake; and the SIGCHLD selfpipe.

use crate::exit::Error;
use crate::fd;
use crate::session::Description;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;

/// SIGCHLD delivered as a byte on a non-blocking pipe; SIGPIPE ignored.
/// Must exist before any child is forked.
pub struct Selfpipe {
    pub rfd: RawFd,
}

impl Selfpipe {
    pub fn install() -> Result<Selfpipe, Error> {
        let (r, w) = fd::pipe().map_err(|e| Error::sys("unable to create the selfpipe", e))?;
        for f in [r, w] {
            fd::set_nonblock(f, true).map_err(|e| Error::sys("unable to set O_NONBLOCK", e))?;
        }
        signal_hook::low_level::pipe::register_raw(libc::SIGCHLD, w)
            .map_err(|e| Error::sys("unable to catch SIGCHLD", e))?;
        ignore_sigpipe();
        Ok(Selfpipe { rfd: r })
    }
}

/// A peer closing early must be a write error, never a fatal signal.
pub fn ignore_sigpipe() {
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// A forked launcher waiting for its session description.
pub struct Launcher {
    pub pid: libc::pid_t,
    /// The parent's end of the description pipe; closed unwritten on failure.
    notify: RawFd,
    /// The parent writes the app's input here.
    pub to_app: RawFd,
    /// The parent reads the app's output here.
    pub from_app: RawFd,
}

impl Launcher {
    /// Fork a launcher for `argv` with clear-text pipes on its fds `app_in` and `app_out`.
    /// `close_in_child` are fds the app must not inherit (e.g. a notification fd).
    pub fn spawn(
        prog: &'static str,
        argv: &[OsString],
        app_in: RawFd,
        app_out: RawFd,
        close_in_child: &[RawFd],
    ) -> Result<Launcher, Error> {
        let cargv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| Error::usage("an argument contains a NUL byte"))?;
        let sys = |what: &str, e| Error::sys(what, e);
        let (in_r, in_w) = fd::pipe().map_err(|e| sys("unable to create a pipe", e))?;
        let (out_r, out_w) = fd::pipe().map_err(|e| sys("unable to create a pipe", e))?;
        let (n_r, n_w) = fd::pipe().map_err(|e| sys("unable to create a pipe", e))?;
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(sys("unable to fork", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // The wrapper is single-threaded, so the child may allocate before exec.
            // The parent's ends: the description's EOF must reach this process.
            for f in [in_w, out_r, n_w] {
                fd::close(f);
            }
            launcher_child(
                prog,
                &cargv,
                in_r,
                out_w,
                n_r,
                app_in,
                app_out,
                close_in_child,
            );
        }
        for f in [in_r, out_w, n_r] {
            fd::close(f);
        }
        Ok(Launcher {
            pid,
            notify: n_w,
            to_app: in_w,
            from_app: out_r,
        })
    }

    /// Handshake done: let the app run with `desc` applied to its environment.
    pub fn start(&mut self, desc: &Description) {
        // A launcher that died already shows in its wait status; nothing to report here.
        let _ = fd::write_all(self.notify, &desc.encode());
        fd::close(self.notify);
        self.notify = -1;
    }

    /// Handshake failed: the launcher exits without running the app; reap it.
    pub fn abort(self) {
        for f in [self.notify, self.to_app, self.from_app] {
            fd::close(f);
        }
        let mut st = 0;
        while unsafe { libc::waitpid(self.pid, &mut st, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

#[allow(clippy::too_many_arguments)]
fn launcher_child(
    prog: &str,
    argv: &[CString],
    in_r: RawFd,
    out_w: RawFd,
    n_r: RawFd,
    app_in: RawFd,
    app_out: RawFd,
    close_in_child: &[RawFd],
) -> ! {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    }
    for &f in close_in_child {
        fd::close(f);
    }
    // The targets are the wrapper's network fds, so no pipe end can sit on them.
    if fd::dup2(in_r, app_in).is_err() || fd::dup2(out_w, app_out).is_err() {
        unsafe { libc::_exit(crate::exit::SYSTEM) };
    }
    let desc = fd::read_to_end(n_r, 1 << 20)
        .ok()
        .and_then(|b| Description::decode(&b));
    let Some(desc) = desc else {
        // No description: the handshake failed and the wrapper reports it.
        unsafe { libc::_exit(0) };
    };
    for (k, v) in &desc.vars {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    let e = std::io::Error::last_os_error();
    let code = if e.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    let msg = format!(
        "{prog}: fatal: unable to exec {}: {}\n",
        argv[0].to_string_lossy(),
        e
    );
    let _ = fd::write_all(2, msg.as_bytes());
    unsafe { libc::_exit(code) }
}
