//! The app's process: a launcher forked before the handshake (so the app keeps the
//! program's original credentials when the engine drops them) that waits for the session
//! description and execs `prog` only after a successful handshake; and the SIGCHLD selfpipe.
//!
//! Between fork and exec the launcher does only async-signal-safe work, so that it stays
//! correct in a program with threads: the program's path, argv, the environment and every
//! buffer are made before the fork; the child resets its signals, moves its pipes, reads the
//! description into the buffer made for it, points the environment's entries at it, and
//! calls `execve`.

use crate::exit::{self, Error};
use crate::fd;
use crate::session::Description;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// Signals delivered as bytes on a non-blocking pipe, to poll with the rest: each caught
/// signal writes its number. SIGPIPE is ignored. Must exist before any child is forked.
/// One per process at a time: the handler writes to the pipe installed last.
pub struct Selfpipe {
    /// The read end, to poll: readable after a caught signal.
    pub rfd: RawFd,
    /// The write end, which the handler writes to (for a forked child to close).
    pub wfd: RawFd,
    caught: Vec<libc::c_int>,
}

/// The write end of the installed selfpipe, for the handler.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = [sig as u8];
    // SAFETY: write and errno's location are async-signal-safe; errno is restored so that
    // the interrupted code sees its own. A full pipe loses the byte, not the signal: one
    // byte waiting is enough to wake the poll.
    unsafe {
        let saved = *libc::__errno_location();
        libc::write(SIGNAL_FD.load(Ordering::Relaxed), b.as_ptr().cast(), 1);
        *libc::__errno_location() = saved;
    }
}

impl Selfpipe {
    /// Create the pipe and route SIGCHLD to it; ignore SIGPIPE.
    pub fn install() -> Result<Selfpipe, Error> {
        Selfpipe::catching(&[libc::SIGCHLD])
    }

    /// Create the pipe and route `signals` to it; ignore SIGPIPE.
    pub fn catching(signals: &[libc::c_int]) -> Result<Selfpipe, Error> {
        let (rfd, wfd) = fd::pipe().map_err(|e| Error::sys("unable to create the selfpipe", e))?;
        for f in [rfd, wfd] {
            fd::set_nonblock(f, true).map_err(|e| Error::sys("unable to set O_NONBLOCK", e))?;
        }
        SIGNAL_FD.store(wfd, Ordering::Relaxed);
        ignore_sigpipe();
        for &sig in signals {
            // SAFETY: `sa` is a zeroed sigaction filled in here; the handler only writes a
            // byte to a pipe and restores errno.
            let r = unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut())
            };
            if r < 0 {
                return Err(Error::sys(
                    "unable to catch signals",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(Selfpipe {
            rfd,
            wfd,
            caught: signals.to_vec(),
        })
    }

    /// The signals received since the last call.
    pub fn drain(&self) -> Vec<libc::c_int> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = fd::read(self.rfd, &mut buf) {
            out.extend(buf[..n].iter().map(|&b| libc::c_int::from(b)));
        }
        out
    }

    /// In a forked process that goes its own way (a server's connection): the caught
    /// signals' default dispositions back, the pipe closed.
    pub fn forget(&self) {
        for &sig in &self.caught {
            // SAFETY: restoring a signal's default disposition installs no handler code.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        SIGNAL_FD.store(-1, Ordering::Relaxed);
        fd::close(self.rfd);
        fd::close(self.wfd);
    }
}

/// A peer closing early must be a write error, never a fatal signal.
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// This process's environment entries (`NAME=value`) as the C library holds them, the
/// secrets that the variables' table strips ([`crate::variables::is_secret`]) left out
/// when `strip` (unless the programs' `-Z`): no copy made.
fn environ_entries(strip: bool) -> Vec<*const libc::c_char> {
    let mut all = crate::env::environ();
    if strip {
        all.retain(|&e| {
            // SAFETY: the entries were just read from the environment, unchanged since.
            let kv = unsafe { entry(e) };
            let k = &kv[..kv.iter().position(|&b| b == b'=').unwrap_or(kv.len())];
            !crate::variables::is_secret(OsStr::from_bytes(k))
        });
    }
    all
}

/// An environment entry's bytes, up to its NUL.
///
/// # Safety
/// `e` points to a NUL-terminated string that outlives the returned slice.
unsafe fn entry<'a>(e: *const libc::c_char) -> &'a [u8] {
    // SAFETY: as the caller promises; strlen is async-signal-safe and allocates nothing.
    unsafe { std::ffi::CStr::from_ptr(e).to_bytes() }
}

/// The largest session description the launcher accepts (a `-d` description is at most
/// 4 KiB).
const MAX_DESCRIPTION: usize = 64 * 1024;
/// How many variables the description may set beyond the environment's own.
const MAX_NEW_VARS: usize = 64;

/// Find `prog` as `execvp` would (a name with a slash as it is, else the first match on
/// `PATH`, by default `/bin:/usr/bin`), so that a program that cannot run is reported before
/// the handshake. Not found: 127; found but not executable: 126.
pub fn find_program(prog: &OsStr) -> Result<PathBuf, Error> {
    let shown = prog.to_string_lossy();
    if prog.is_empty() {
        return Err(Error::usage("the program's name is empty"));
    }
    let executable = |p: &Path| -> Result<(), &'static str> {
        let meta = std::fs::metadata(p).map_err(|_| "not found")?;
        if meta.is_dir() {
            return Err("is a directory");
        }
        let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| "not found")?;
        // SAFETY: `c` is a NUL-terminated path that lives across the call.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
            return Err("not executable (permission denied)");
        }
        Ok(())
    };
    if prog.as_bytes().contains(&b'/') {
        let p = PathBuf::from(prog);
        return match executable(&p) {
            Ok(()) => Ok(p),
            Err("not found") => Err(Error::new(
                exit::NOT_FOUND,
                format!("unable to run {shown}: no such file"),
            )),
            Err(why) => Err(Error::new(
                exit::NOT_EXECUTABLE,
                format!("unable to run {shown}: {why}"),
            )),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    let mut denied = None;
    for dir in path.as_bytes().split(|&b| b == b':') {
        // An empty entry is the current directory, as for execvp.
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let p = Path::new(OsStr::from_bytes(dir)).join(prog);
        match executable(&p) {
            Ok(()) => return Ok(p),
            Err("not found") => {}
            Err(why) => denied = denied.or(Some((p, why))),
        }
    }
    Err(match denied {
        Some((p, why)) => Error::new(
            exit::NOT_EXECUTABLE,
            format!("unable to run {shown}: {}: {why}", p.display()),
        ),
        None => Error::new(
            exit::NOT_FOUND,
            format!(
                "unable to run {shown}: not found on PATH ({}); give its full path",
                path.to_string_lossy()
            ),
        ),
    })
}

/// A forked launcher waiting for its session description, or (see
/// [`Launcher::deferred_as`]) the app's exec prepared, to be spawned at the start.
pub struct Launcher {
    /// The launcher's pid; after `start`, the app's (-1 before a deferred start).
    pub pid: libc::pid_t,
    /// The parent's end of the description pipe; closed unwritten on failure.
    notify: RawFd,
    /// The parent writes the app's input here.
    pub to_app: RawFd,
    /// The parent reads the app's output here.
    pub from_app: RawFd,
    /// A deferred launcher's exec, until the start.
    deferred: Option<Box<Deferred>>,
}

/// What a launcher that shares this process's memory uses until its exec: never freed
/// (leaked once per connection's process), so that no path of this process can free it
/// under the launcher.
struct SharedLaunch {
    prep: Prepared,
    pipes: ChildPipes,
    close_in_child: Vec<RawFd>,
    _stack: crate::pages::Pages,
}

/// What a deferred start needs: the exec prepared, the app's ends of its pipes and where
/// they go, the fds it must not inherit.
struct Deferred {
    prep: Prepared,
    in_r: RawFd,
    out_w: RawFd,
    app_in: RawFd,
    app_out: RawFd,
    close_in_child: Vec<RawFd>,
}

/// The stack of a deferred start's child, which runs in the parent's memory until its
/// exec: `exec` and its error path need little.
const SPAWN_STACK: usize = 64 * 1024;

/// The app's credentials, applied by the launcher just before its exec (a server's
/// `-u`, `-g`, `-U`): the engine's own drop (TLS_UID/TLS_GID) happens later, in the parent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user id to run the app as.
    pub uid: Option<libc::uid_t>,
    /// The group id to run the app as.
    pub gid: Option<libc::gid_t>,
    /// The supplementary groups; without them, only `gid` (when set) is kept.
    pub groups: Option<Vec<libc::gid_t>>,
}

/// Everything the launcher's child needs, made before the fork.
struct Prepared {
    path: CString,
    /// Owns the strings `argv_ptrs` points at.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// The app's environment before the description's edits: pointers to this process's
    /// own entries for a launcher forked at once (its copy of the memory keeps them as
    /// they were), else to `_copies`, and to `_added`.
    environ: Vec<*const libc::c_char>,
    /// Owns the strings `environ` points at when they are copies.
    _copies: Vec<CString>,
    /// Owns the entries added for the app (UCSPI-TLS's descriptors).
    _added: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    description: Vec<u8>,
    /// The description's keys, as (offset, length) in `description`, sorted: room made
    /// before the fork, so that the launcher checks each variable of the environment with
    /// a binary search and no allocation (a scan of the description for each would grow
    /// with the product of the numbers of variables and of edits).
    edit_keys: Vec<(usize, usize)>,
    exec_failed: Vec<u8>,
    creds: Credentials,
    creds_failed: Vec<u8>,
}

impl Prepared {
    /// The exec of `argv` with `creds`; the environment's secrets left out when `strip`
    /// (before the fork, rather than unset by the description: hundreds of
    /// `CERTFILE:name` pairs are then neither copied into it nor looked up one by one in
    /// the launcher); the environment's entries copied when `copy` (a launcher that runs
    /// in this process's memory, where they may change before its exec).
    fn new(
        name: &str,
        argv: &[OsString],
        creds: &Credentials,
        strip: bool,
        copy: bool,
    ) -> Result<Prepared, Error> {
        let first = argv
            .first()
            .ok_or_else(|| Error::usage("no program to run"))?;
        let path = find_program(first)?;
        let nul = |_| Error::usage("an argument contains a NUL byte");
        let path = CString::new(path.as_os_str().as_bytes()).map_err(nul)?;
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(nul)?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut environ = environ_entries(strip);
        let mut copies = Vec::new();
        if copy {
            // SAFETY: the entries were just read from the environment, unchanged since.
            copies = environ
                .iter()
                .map(|&e| unsafe { CString::from(std::ffi::CStr::from_ptr(e)) })
                .collect();
            environ = copies.iter().map(|e: &CString| e.as_ptr()).collect();
        }
        let envp = Vec::with_capacity(environ.len() + MAX_NEW_VARS + 1);
        let edit_keys = Vec::with_capacity(environ.len() + MAX_NEW_VARS);
        let (word, _) = crate::log::failure_word();
        let exec_failed = format!(
            "{name}: {word}: unable to exec {}: ",
            first.to_string_lossy()
        );
        Ok(Prepared {
            path,
            _argv: argv,
            argv_ptrs,
            environ,
            _copies: copies,
            _added: Vec::new(),
            edit_keys,
            envp,
            description: Vec::new(),
            exec_failed: exec_failed.into_bytes(),
            creds: creds.clone(),
            creds_failed: format!("{name}: {word}: unable to set the app's user and groups: ")
                .into_bytes(),
        })
    }
}

impl Launcher {
    /// Fork a launcher for `argv` with clear-text pipes on its fds `app_in` and `app_out`.
    /// `close_in_child` are fds the app must not inherit (e.g. a notification fd). `name`
    /// starts the line the launcher prints when the exec fails. The secrets leave the app's
    /// environment when `strip` (unless the programs' `-Z`). A program that cannot be
    /// found or executed fails here, before any fork (127, 126).
    pub fn spawn(
        name: &'static str,
        argv: &[OsString],
        app_in: RawFd,
        app_out: RawFd,
        close_in_child: &[RawFd],
        strip: bool,
    ) -> Result<Launcher, Error> {
        Launcher::spawn_as(
            name,
            argv,
            app_in,
            app_out,
            close_in_child,
            &Credentials::default(),
            strip,
        )
    }

    /// [`Launcher::spawn`], the app running with `creds`.
    pub fn spawn_as(
        name: &'static str,
        argv: &[OsString],
        app_in: RawFd,
        app_out: RawFd,
        close_in_child: &[RawFd],
        creds: &Credentials,
        strip: bool,
    ) -> Result<Launcher, Error> {
        let mut prep = Prepared::new(name, argv, creds, strip, false)?;
        prep.description.reserve_exact(MAX_DESCRIPTION);
        let sys = |what: &str, e| Error::sys(what, e);
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (n_r, n_w) = pipe()?;
        // SAFETY: the child runs only `launcher_child`, which makes async-signal-safe calls
        // on memory prepared before the fork, and leaves by execve or _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(sys("unable to fork", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // The parent's ends first: the description's EOF must reach this process.
            for f in [in_w, out_r, n_w] {
                fd::close(f);
            }
            let pipes = ChildPipes {
                in_r,
                out_w,
                n_r,
                app_in,
                app_out,
            };
            launcher_child(&mut prep, pipes, close_in_child);
        }
        for f in [in_r, out_w, n_r] {
            fd::close(f);
        }
        Ok(Launcher {
            pid,
            notify: n_w,
            to_app: in_w,
            from_app: out_r,
            deferred: None,
        })
    }

    /// [`Launcher::spawn_as`] with a launcher that shares this process's memory until its
    /// exec (clone(2) with `CLONE_VM`, not `CLONE_VFORK`: this process goes on), so that no
    /// copy of the address space is made, nor faulted in page by page as this process
    /// writes to it. For a process that is confined before the handshake (the launcher
    /// is not: it is another process, made before) and would otherwise have spawned the
    /// app after it ([`Launcher::deferred_as`]). The launcher touches only what was made
    /// for it here, allocates nothing, and its system calls fail only where it exits.
    pub fn spawn_shared_as(
        name: &'static str,
        argv: &[OsString],
        app_in: RawFd,
        app_out: RawFd,
        close_in_child: &[RawFd],
        creds: &Credentials,
        strip: bool,
    ) -> Result<Launcher, Error> {
        let mut prep = Prepared::new(name, argv, creds, strip, true)?;
        prep.description.reserve_exact(MAX_DESCRIPTION);
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (n_r, n_w) = pipe()?;
        let launch: &'static mut SharedLaunch = Box::leak(Box::new(SharedLaunch {
            prep,
            pipes: ChildPipes {
                in_r,
                out_w,
                n_r,
                app_in,
                app_out,
            },
            // The parent's ends too: the description's EOF must reach the launcher.
            close_in_child: [close_in_child, &[in_w, out_r, n_w]].concat(),
            _stack: crate::pages::Pages::new(SPAWN_STACK),
        }));
        let top = (launch._stack.as_mut_ptr() as usize + SPAWN_STACK) & !15;
        // SAFETY: `all` and `old` are locals that sigfillset and pthread_sigmask fill in.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let arg: *mut SharedLaunch = launch;
        // SAFETY: `top` is the aligned end of the launch's stack, and the launch is leaked:
        // it outlives the launcher's use of it, and this process does not touch it again.
        // Every signal is blocked across the clone, so no
        // handler runs in the child before it resets them; the child runs only
        // `shared_launcher`, which makes async-signal-safe calls on the launch alone.
        let pid = unsafe {
            libc::clone(
                shared_launcher,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::SIGCHLD,
                arg.cast(),
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if pid < 0 {
            for f in [in_r, in_w, out_r, out_w, n_r, n_w] {
                fd::close(f);
            }
            return Err(Error::sys("unable to start the app's launcher", err));
        }
        for f in [in_r, out_w, n_r] {
            fd::close(f);
        }
        Ok(Launcher {
            pid,
            notify: n_w,
            to_app: in_w,
            from_app: out_r,
            deferred: None,
        })
    }

    /// [`Launcher::spawn_as`] without a process yet: the app's exec is prepared and its
    /// pipes made, and [`Launcher::try_start`] spawns it with the description, sharing this
    /// process's memory until its exec (no copy of the address space, no copy-on-write
    /// faults, no second teardown at the exec). The app then runs with this process's
    /// credentials at the start: only for a process that keeps them across the handshake.
    pub fn deferred_as(
        name: &'static str,
        argv: &[OsString],
        app_in: RawFd,
        app_out: RawFd,
        close_in_child: &[RawFd],
        creds: &Credentials,
        strip: bool,
    ) -> Result<Launcher, Error> {
        let prep = Prepared::new(name, argv, creds, strip, true)?;
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        Ok(Launcher {
            pid: -1,
            notify: -1,
            to_app: in_w,
            from_app: out_r,
            deferred: Some(Box::new(Deferred {
                prep,
                in_r,
                out_w,
                app_in,
                app_out,
                close_in_child: close_in_child.to_vec(),
            })),
        })
    }

    /// [`Launcher::start`]; a deferred launcher's app is spawned here, and a failure to
    /// spawn it is returned (the app's pipes are then closed: the engine sees it gone).
    pub fn try_start(&mut self, desc: &Description) -> Result<(), Error> {
        let Some(mut d) = self.deferred.take() else {
            self.start(desc);
            return Ok(());
        };
        d.prep.description = desc.encode();
        let r = if build_envp(&mut d.prep) {
            spawn_shared(&d)
        } else {
            Err(Error::new(
                exit::SYSTEM,
                "unable to start the app: the session description does not fit its environment",
            ))
        };
        for f in [d.in_r, d.out_w] {
            fd::close(f);
        }
        self.pid = r?;
        Ok(())
    }

    /// Handshake done: let the app run with `desc` applied to its environment. A launcher
    /// from [`Launcher::spawn_ucspi`] started the app already: nothing to do.
    pub fn start(&mut self, desc: &Description) {
        if self.notify < 0 {
            return;
        }
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
        if let Some(d) = &self.deferred {
            for f in [d.in_r, d.out_w] {
                fd::close(f);
            }
            return;
        }
        let mut st = 0;
        // SAFETY: waitpid writes the status into a local integer.
        while unsafe { libc::waitpid(self.pid, &mut st, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

impl Launcher {
    /// Fork prog (`argv`) at once, for delayed TLS (UCSPI-TLS): the network stays on its
    /// fds as the program has it, and its environment gets `SSLCTLFD` (its end of a
    /// socketpair whose other end is returned), `SSLREADFD` (it reads the peer's clear text
    /// there, from [`Launcher::to_app`]) and `SSLWRITEFD` (it writes clear text for the
    /// peer there, to [`Launcher::from_app`]); the secrets are left out of it when `strip`.
    /// The environment is complete before the fork: the child moves no fd, it only clears
    /// close-on-exec on its three ends and execs. [`Launcher::start`] has nothing left to do.
    pub fn spawn_ucspi(
        name: &'static str,
        argv: &[OsString],
        close_in_child: &[RawFd],
        creds: &Credentials,
        strip: bool,
    ) -> Result<(Launcher, RawFd), Error> {
        let mut prep = Prepared::new(name, argv, creds, strip, false)?;
        let sys = |what: &str, e| Error::sys(what, e);
        let (ctl, app_ctl) = socketpair().map_err(|e| sys("unable to create a socketpair", e))?;
        let (app_r, to_app) = pipe()?;
        let (from_app, app_w) = pipe()?;
        // With fd 2 closed, an app's end could land on its stderr.
        let mut ends = [app_ctl, app_r, app_w];
        for f in &mut ends {
            *f = above_stdio(*f).map_err(|e| sys("unable to move a descriptor", e))?;
        }
        let [app_ctl, app_r, app_w] = ends;
        let fds = [(CONTROL_FD, app_ctl), (READ_FD, app_r), (WRITE_FD, app_w)];
        prep.environ.retain(|&e| {
            // SAFETY: the entries are the environment's, unchanged since they were read.
            let kv = unsafe { entry(e) };
            let k = &kv[..kv.iter().position(|&b| b == b'=').unwrap_or(kv.len())];
            !fds.iter().any(|(n, _)| n.as_bytes() == k)
        });
        for (n, f) in fds {
            let kv = CString::new(format!("{n}={f}"))
                .map_err(|_| Error::usage("an environment entry contains a NUL byte"))?;
            prep._added.push(kv);
        }
        prep.envp = prep.environ.clone();
        prep.envp.extend(prep._added.iter().map(|e| e.as_ptr()));
        prep.envp.push(std::ptr::null());
        // SAFETY: the child runs only `ucspi_child`, which makes async-signal-safe calls on
        // memory prepared before the fork, and leaves by execve or _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(sys("unable to fork", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            for f in [ctl, to_app, from_app] {
                fd::close(f);
            }
            ucspi_child(&prep, &[app_ctl, app_r, app_w], close_in_child);
        }
        for f in [app_ctl, app_r, app_w] {
            fd::close(f);
        }
        let launcher = Launcher {
            pid,
            notify: -1,
            to_app,
            from_app,
            deferred: None,
        };
        Ok((launcher, ctl))
    }

    /// The app goes on without the engine: its pipes closed, it is waited for; its exit
    /// code (128+signal when killed).
    pub fn wait(self) -> i32 {
        for f in [self.notify, self.to_app, self.from_app] {
            fd::close(f);
        }
        let mut st = 0;
        loop {
            // SAFETY: waitpid writes the status into a local integer.
            let r = unsafe { libc::waitpid(self.pid, &mut st, 0) };
            if r == self.pid {
                return exit::from_wait_status(st);
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return exit::SYSTEM;
            }
        }
    }
}

/// The UCSPI-TLS variables: the app's control socket, where it reads the peer's clear
/// text, where it writes its own.
pub const CONTROL_FD: &str = "SSLCTLFD";
/// See [`CONTROL_FD`].
pub const READ_FD: &str = "SSLREADFD";
/// See [`CONTROL_FD`].
pub const WRITE_FD: &str = "SSLWRITEFD";

/// A stream socketpair, both ends close-on-exec.
fn socketpair() -> std::io::Result<(RawFd, RawFd)> {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two fds socketpair writes.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            p.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((p[0], p[1]))
}

/// `f` itself when it is 3 or more, else a close-on-exec copy of it there (`f` closed).
fn above_stdio(f: RawFd) -> std::io::Result<RawFd> {
    if f > 2 {
        return Ok(f);
    }
    let g = fd::dup_above(f, 3)?;
    fd::close(f);
    Ok(g)
}

/// The UCSPI-TLS app, between fork and exec: async-signal-safe calls only.
fn ucspi_child(prep: &Prepared, keep: &[RawFd], close_in_child: &[RawFd]) -> ! {
    reset_signals();
    for &f in close_in_child {
        fd::close(f);
    }
    for &f in keep {
        if fd::set_cloexec(f, false).is_err() {
            leave(exit::SYSTEM);
        }
    }
    exec(prep)
}

/// The launcher's ends of its three pipes, and where the app's two go.
#[derive(Clone, Copy)]
struct ChildPipes {
    in_r: RawFd,
    out_w: RawFd,
    n_r: RawFd,
    app_in: RawFd,
    app_out: RawFd,
}

/// A pipe for the app, or the error to report.
fn pipe() -> Result<(RawFd, RawFd), Error> {
    fd::pipe().map_err(|e| Error::sys("unable to create a pipe", e))
}

/// `_exit`: the only way out of the launcher besides execve.
fn leave(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and ends the process without running any code.
    unsafe { libc::_exit(code) }
}

/// In the child, between fork (or clone) and exec: close what the app must not inherit,
/// and put the pipes' ends `(read, write)` on the app's fds `(in, out)`. Async-signal-safe
/// calls only; a failure leaves with 111.
fn attach_pipes(close: &[RawFd], (read, write): (RawFd, RawFd), (app_in, app_out): (RawFd, RawFd)) {
    for &f in close {
        fd::close(f);
    }
    // The targets are the program's network fds, so no pipe end can sit on them.
    if fd::dup2(read, app_in).is_err() || fd::dup2(write, app_out).is_err() {
        leave(exit::SYSTEM);
    }
    for f in [read, write] {
        if f != app_in && f != app_out {
            fd::close(f);
        }
    }
}

/// The launcher, between fork and exec: async-signal-safe calls only, no allocation.
fn launcher_child(prep: &mut Prepared, p: ChildPipes, close_in_child: &[RawFd]) -> ! {
    reset_signals();
    attach_pipes(close_in_child, (p.in_r, p.out_w), (p.app_in, p.app_out));
    if !read_description(p.n_r, &mut prep.description) {
        leave(exit::SYSTEM);
    }
    fd::close(p.n_r);
    if prep.description.is_empty() {
        // No description: the handshake failed and the program reports it.
        leave(0);
    }
    if !build_envp(prep) {
        leave(exit::SYSTEM);
    }
    exec(prep)
}

/// The app's signal mask and dispositions as a freshly started program expects them; the
/// dispositions first, so that no handler of the parent runs once the mask is cleared.
fn reset_signals() {
    // SAFETY: sigemptyset, sigprocmask and signal are async-signal-safe; `set` is a local.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The launcher of [`Launcher::spawn_shared_as`], between clone and exec: the forked
/// launcher's steps, on the launch made for it.
extern "C" fn shared_launcher(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked launch, which the parent no longer touches.
    let l = unsafe { &mut *arg.cast::<SharedLaunch>() };
    let p = l.pipes;
    launcher_child(&mut l.prep, p, &l.close_in_child)
}

/// Spawn a deferred launcher's app: clone(2) with `CLONE_VM | CLONE_VFORK`, as
/// posix_spawn does, so this process is suspended until the child's exec (or exit) and the
/// child, on a stack of its own, shares its memory but has its own fds and signal
/// dispositions. Every signal is blocked across the clone: no handler runs in the child
/// before its dispositions are reset. The child's pid.
fn spawn_shared(d: &Deferred) -> Result<libc::pid_t, Error> {
    // Fresh pages: the child faults in only the few it uses.
    let mut stack = crate::pages::Pages::new(SPAWN_STACK);
    // The stack grows down from its end, 16-byte aligned as the ABI wants.
    let top = (stack.as_mut_ptr() as usize + SPAWN_STACK) & !15;
    // SAFETY: `all` and `old` are locals that sigfillset and pthread_sigmask fill in.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: `top` is the aligned end of `stack`, which outlives the child's use of it
    // (CLONE_VFORK returns only after its exec or exit); `d` stays alive and unchanged
    // meanwhile, and `shared_child` only reads it and makes async-signal-safe calls.
    let pid = unsafe {
        libc::clone(
            shared_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (d as *const Deferred).cast_mut().cast(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(Error::sys("unable to start the app", err));
    }
    Ok(pid)
}

/// A deferred launcher's child, between clone and exec: async-signal-safe calls only, no
/// allocation, nothing of its parent's state changed (errno aside).
extern "C" fn shared_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Deferred` that `spawn_shared` passed, alive until the exec.
    let d = unsafe { &*arg.cast::<Deferred>() };
    reset_signals();
    attach_pipes(&d.close_in_child, (d.in_r, d.out_w), (d.app_in, d.app_out));
    exec(&d.prep)
}

/// The app's credentials, then execve with `prep`'s path, argv and envp; a failure is one
/// line on fd 2 and the exit code of a program that cannot run.
fn exec(prep: &Prepared) -> ! {
    if let Err(errno) = apply_credentials(&prep.creds) {
        say_failure(&prep.creds_failed, errno);
        leave(exit::SYSTEM);
    }
    // SAFETY: path, argv and envp are NUL-terminated strings and null-terminated pointer
    // arrays that point into `prep`, which lives until execve replaces the process.
    unsafe {
        libc::execve(
            prep.path.as_ptr(),
            prep.argv_ptrs.as_ptr(),
            prep.envp.as_ptr(),
        )
    };
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    say_failure(&prep.exec_failed, errno);
    leave(if errno == libc::ENOENT {
        exit::NOT_FOUND
    } else {
        exit::NOT_EXECUTABLE
    })
}

/// `prefix`, errno's text and a newline on fd 2 in one write(2), as the programs' own
/// lines are (see [`crate::log::line`]): assembled on the stack, since the child of a
/// clone shares its parent's memory and must not allocate. A prefix too long for the
/// buffer is cut.
fn say_failure(prefix: &[u8], errno: i32) {
    let mut buf = [0u8; 1024];
    let text = errno_text(errno).as_bytes();
    let room = buf.len() - text.len() - 1;
    let p = prefix.len().min(room);
    buf[..p].copy_from_slice(&prefix[..p]);
    buf[p..p + text.len()].copy_from_slice(text);
    let end = p + text.len();
    buf[end] = b'\n';
    let _ = fd::write_all(2, &buf[..=end]);
}

/// setgroups, setgid, setuid, in that order (each needs the privilege the next drops);
/// the system calls themselves, not libc's wrappers, which may involve other threads (a
/// child sharing its parent's memory must change only its own credentials); no
/// allocation. The errno of the first failure.
fn apply_credentials(c: &Credentials) -> Result<(), i32> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let one = c.gid.map(|g| [g]);
    let groups: Option<&[libc::gid_t]> = c.groups.as_deref().or(one.as_ref().map(|g| &g[..]));
    if let Some(g) = groups {
        // SAFETY: `g` holds `g.len()` gids and lives across the call.
        if unsafe { libc::syscall(libc::SYS_setgroups, g.len(), g.as_ptr()) } < 0 {
            return Err(errno());
        }
    }
    if let Some(g) = c.gid {
        // SAFETY: setgid takes a plain id.
        if unsafe { libc::syscall(libc::SYS_setgid, g) } < 0 {
            return Err(errno());
        }
    }
    if let Some(u) = c.uid {
        // SAFETY: setuid takes a plain id.
        if unsafe { libc::syscall(libc::SYS_setuid, u) } < 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// Read until EOF into `buf`'s reserved capacity, without allocating. False when it does
/// not fit or a read fails.
fn read_description(fd: RawFd, buf: &mut Vec<u8>) -> bool {
    loop {
        let spare = buf.spare_capacity_mut();
        if spare.is_empty() {
            return false;
        }
        // SAFETY: read writes at most `spare.len()` bytes into the vector's reserved,
        // unused capacity; only the bytes it reports are then counted as initialised.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return false;
        }
        if n == 0 {
            return true;
        }
        // SAFETY: read initialised `n` bytes just past the vector's length, within its
        // capacity.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
}

/// The environment after the description's edits, as pointers into `prep.environ` and
/// `prep.description`: every entry whose name the description sets or unsets is left
/// out, then the description's `K=V` entries are added. False when the description is
/// malformed or sets more variables than were reserved.
fn build_envp(prep: &mut Prepared) -> bool {
    let Prepared {
        description,
        edit_keys,
        environ,
        envp,
        ..
    } = prep;
    let desc: &[u8] = description;
    let Ok(edits) = stls_desc::entries(desc) else {
        return false;
    };
    let key = |kv: &[u8]| -> usize { kv.iter().position(|&b| b == b'=').unwrap_or(kv.len()) };
    // Sorted keys within the room made before the fork (sort_unstable and the binary
    // search allocate nothing); more edits than that room: the scan, slower but right.
    edit_keys.clear();
    let mut indexed = true;
    for d in edits.clone() {
        if edit_keys.len() == edit_keys.capacity() {
            indexed = false;
            break;
        }
        edit_keys.push((d.as_ptr() as usize - desc.as_ptr() as usize, key(d)));
    }
    let at = |&(o, l): &(usize, usize)| &desc[o..o + l];
    if indexed {
        edit_keys.sort_unstable_by(|a, b| at(a).cmp(at(b)));
    }
    for &e in environ.iter() {
        // SAFETY: the entries point into this process's copy of the environment or into
        // the prepared copies, both alive until the exec.
        let kv = unsafe { entry(e) };
        let k = &kv[..key(kv)];
        let edited = if indexed {
            edit_keys.binary_search_by(|x| at(x).cmp(k)).is_ok()
        } else {
            edits.clone().any(|d| &d[..key(d)] == k)
        };
        if !edited && envp.len() < envp.capacity() {
            envp.push(e);
        }
    }
    for d in edits {
        if key(d) == d.len() {
            continue;
        }
        // One pointer is kept for the terminating null.
        if envp.len() + 1 >= envp.capacity() {
            return false;
        }
        // Each entry is followed by its NUL in the description's buffer.
        envp.push(d.as_ptr().cast());
    }
    envp.push(std::ptr::null());
    true
}

/// errno's text for an exec failure, from a fixed table (strerror may allocate).
fn errno_text(errno: i32) -> &'static str {
    match errno {
        libc::ENOENT => "No such file or directory",
        libc::EACCES => "Permission denied",
        libc::ENOEXEC => "Exec format error",
        libc::ENOMEM => "Cannot allocate memory",
        libc::E2BIG => "Argument list too long",
        libc::ETXTBSY => "Text file busy",
        libc::ELOOP => "Too many levels of symbolic links",
        libc::ENAMETOOLONG => "File name too long",
        libc::ENOTDIR => "Not a directory",
        libc::EPERM => "Operation not permitted",
        libc::EINVAL => "Invalid argument",
        _ => "exec failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_before_the_fork() {
        assert!(find_program(OsStr::new("sh")).is_ok());
        let missing = find_program(OsStr::new("no-such-program-here")).unwrap_err();
        assert_eq!(missing.code, exit::NOT_FOUND);
        assert!(missing.msg.contains("not found on PATH"), "{}", missing.msg);
        let plain =
            std::env::temp_dir().join(format!("stls-not-executable-{}", std::process::id()));
        std::fs::write(&plain, b"#!/bin/sh\n").expect("write a scratch file");
        let r = find_program(plain.as_os_str()).map_err(|e| e.code).err();
        let _ = std::fs::remove_file(&plain);
        // Root may execute a file with any execute bit, and this one has none.
        assert_eq!(r, Some(exit::NOT_EXECUTABLE));
        assert_eq!(
            find_program(OsStr::new("/")).map_err(|e| e.code).err(),
            Some(exit::NOT_EXECUTABLE)
        );
        assert_eq!(
            find_program(OsStr::new("/no/such"))
                .map_err(|e| e.code)
                .err(),
            Some(exit::NOT_FOUND)
        );
    }
}
