//! Starting a helper without disturbing the host.
//!
//! - Everything (path, argv, envp) is built before the child exists.
//! - The child is made with `clone(CLONE_VM | CLONE_VFORK)` and **no exit signal**: the
//!   host gets no SIGCHLD for it and its `wait()`/`waitpid(-1)` never see it (only
//!   `__WALL`/`__WCLONE` waits do); the library reaps it itself with `waitpid(pid, __WALL)`
//!   on that exact pid, tolerating ECHILD.
//! - That child must not exec: `execve` resets the exit signal to SIGCHLD (the kernel's
//!   `de_thread`), so an exec'ed helper would signal the host when it ends. The cloned
//!   child forks once (a raw fork, on a copy of the address space) and exits at once; the
//!   grandchild execs the helper and, its parent gone, belongs to init (or the nearest
//!   subreaper), never to the host.
//! - Between clone and exec only async-signal-safe system calls run: signal dispositions
//!   to default, fds moved into place, every other fd closed (`close_range`), the signal
//!   mask emptied, `execve`.
//! - A host that adopts orphans (PID 1 of its namespace, or a subreaper) would get that
//!   grandchild as its own child: its `wait()` would see it and it would get a SIGCHLD.
//!   There the cloned child (still no exit signal, sharing the address space, on its own
//!   stack) stays: it makes itself a subreaper, starts the helper (a vfork-like clone that
//!   execs), closes every descriptor it had, tells the host it is done, and waits for the
//!   helper and whatever the helper forks, with raw system calls only (it shares the
//!   host's thread pointer, and the host thread may be gone by then). When the helper is
//!   gone it exits; the library reaps it (`waitpid(pid, WNOHANG | __WALL)`) at its next
//!   hook call and only then unmaps its stack. A fixed table of [`KEEPERS`] entries holds
//!   them; when it is full, the first form is used.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// A command ready to be executed: every pointer array is NULL-terminated.
pub struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp: Vec<*const c_char>,
}

impl Prepared {
    pub fn new(path: CString, argv: Vec<CString>, envp: Vec<CString>) -> Prepared {
        let mut a: Vec<*const c_char> = argv.iter().map(|s| s.as_ptr()).collect();
        a.push(ptr::null());
        let mut e: Vec<*const c_char> = envp.iter().map(|s| s.as_ptr()).collect();
        e.push(ptr::null());
        Prepared {
            path,
            _argv: argv,
            argv: a,
            _envp: envp,
            envp: e,
        }
    }
}

/// The environment for a helper: the host's current environment without this library in
/// `LD_PRELOAD`, with `AUTOSSL_NESTED=1` so that nothing below it upgrades again.
pub fn helper_env(lib_path: Option<&CStr>) -> Vec<CString> {
    extern "C" {
        static environ: *const *const c_char;
    }
    let mut out = Vec::new();
    // SAFETY: environ is the C library's NULL-terminated array of C strings. Another thread
    // changing the environment at this very moment is a race the host already has with
    // every getenv.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            p = p.add(1);
            if entry.starts_with(b"AUTOSSL_NESTED=") {
                continue;
            }
            if let Some(v) = entry.strip_prefix(b"LD_PRELOAD=") {
                let kept = strip_preload(v, lib_path.map(|l| l.to_bytes()));
                if kept.is_empty() {
                    continue;
                }
                let mut e = b"LD_PRELOAD=".to_vec();
                e.extend_from_slice(&kept);
                if let Ok(c) = CString::new(e) {
                    out.push(c);
                }
                continue;
            }
            if let Ok(c) = CString::new(entry) {
                out.push(c);
            }
        }
    }
    if let Ok(c) = CString::new("AUTOSSL_NESTED=1") {
        out.push(c);
    }
    out
}

/// `LD_PRELOAD` without this library: entries are separated by spaces or colons; an entry
/// is ours when it is our path or its file name is `libautossl.so`.
pub fn strip_preload(v: &[u8], ours: Option<&[u8]>) -> Vec<u8> {
    let mut kept: Vec<&[u8]> = Vec::new();
    for e in v.split(|&b| b == b' ' || b == b':' || b == b'\t') {
        if e.is_empty() {
            continue;
        }
        let base = e.rsplit(|&b| b == b'/').next().unwrap_or(e);
        if Some(e) == ours || base == b"libautossl.so" {
            continue;
        }
        kept.push(e);
    }
    kept.join(&b' ')
}

const MAX_FDS: usize = 8;

struct ChildArgs {
    /// Keeper form: the top of the helper's stack (the keeper runs above it).
    helper_stack: *mut c_void,
    /// Keeper form: 1 once the keeper holds no descriptor and no longer reads this.
    state: AtomicI32,
    prepared: *const Prepared,
    /// (source, target) pairs; targets are below `first_closed`.
    fds: [(c_int, c_int); MAX_FDS],
    nfds: usize,
    /// Close every fd from here up (after the moves).
    first_closed: c_int,
    /// Fork once more and exit (the exec happens in the grandchild).
    detach: bool,
    /// The exec's (or the fork's) errno, seen by the parent through the shared memory.
    err: AtomicI32,
}

fn errno() -> c_int {
    // SAFETY: the thread's errno location is always valid.
    unsafe { *libc::__errno_location() }
}

/// Default dispositions for every signal (with every signal still blocked): no host
/// handler may run in a process the shim made, and the helper starts with a clean slate.
/// Only system calls: callable between clone and exec.
unsafe fn default_dispositions() {
    // SAFETY: a zeroed sigaction with SIG_DFL is a valid argument; sigaction is
    // async-signal-safe.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, ptr::null_mut());
            }
        }
    }
}

#[allow(clippy::needless_range_loop)]
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the ChildArgs the parent keeps alive until this process has exec'ed or
    // exited (CLONE_VFORK). Only system calls from here on.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        default_dispositions();
        if a.detach {
            let pid = libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
                0 as libc::c_long,
            );
            if pid < 0 {
                a.err.store(errno(), Ordering::Relaxed);
                libc::syscall(libc::SYS_exit, 127 as libc::c_long);
            }
            if pid > 0 {
                libc::syscall(libc::SYS_exit, 0 as libc::c_long);
            }
            // The grandchild, in its own copy of the address space.
        }
        exec_helper(a)
    }
}

/// The helper's side, between clone and exec: descriptors in place, the rest closed, an
/// empty signal mask, execve. Exits 127 when it cannot.
///
/// # Safety
/// In a child made by clone (dispositions already default), with `a` valid until the exec.
#[allow(clippy::needless_range_loop)]
unsafe fn exec_helper(a: &ChildArgs) -> c_int {
    // SAFETY: system calls only, on our own arrays and the caller's ChildArgs.
    unsafe {
        // Move the sources out of the way first, so that a source that is also a target
        // number is not clobbered.
        let mut high = [-1 as c_int; MAX_FDS];
        for i in 0..a.nfds.min(MAX_FDS) {
            high[i] = libc::fcntl(a.fds[i].0, libc::F_DUPFD_CLOEXEC, 16);
            if high[i] < 0 {
                a.err.store(errno(), Ordering::Relaxed);
                libc::syscall(libc::SYS_exit, 127 as libc::c_long);
            }
        }
        for i in 0..a.nfds.min(MAX_FDS) {
            if libc::dup2(high[i], a.fds[i].1) < 0 {
                a.err.store(errno(), Ordering::Relaxed);
                libc::syscall(libc::SYS_exit, 127 as libc::c_long);
            }
        }
        // Nothing else of the host's reaches the helper: below first_closed, close what is
        // not a target (fd 2 stays); from first_closed up, close everything.
        for fd in 0..a.first_closed {
            let is_target = a.fds[..a.nfds.min(MAX_FDS)].iter().any(|f| f.1 == fd);
            if !is_target && fd != 2 {
                libc::close(fd);
            }
        }
        let first = a.first_closed as libc::c_uint;
        if libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        ) != 0
        {
            let mut lim: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(65536) as c_int
            } else {
                4096
            };
            for fd in a.first_closed..max {
                libc::close(fd);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        let p = &*a.prepared;
        libc::execve(p.path.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        if !a.detach {
            a.err.store(errno(), Ordering::Relaxed);
        }
        libc::syscall(libc::SYS_exit, 127 as libc::c_long);
        127
    }
}

extern "C" fn exec_child(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the ChildArgs kept alive until this process has exec'ed or exited
    // (CLONE_VFORK, and the keeper's host waits for the keeper's word).
    unsafe { exec_helper(&*(arg as *const ChildArgs)) }
}

/// A system call that never touches errno (nor anything else outside the registers): the
/// keeper shares the host's thread pointer, whose thread may have ended.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_syscall(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86_64 system call convention; the caller vouches for the call.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

/// As above, for aarch64.
#[cfg(target_arch = "aarch64")]
unsafe fn raw_syscall(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the Linux aarch64 system call convention; the caller vouches for the call.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a => ret,
            in("x1") b,
            in("x2") c,
            in("x3") d,
            options(nostack)
        );
    }
    ret
}

/// Whether the keeper form exists here (it needs [`raw_syscall`]).
const KEEPER_FORM: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn raw_syscall(_: libc::c_long, _: usize, _: usize, _: usize, _: usize) -> isize {
    -(libc::ENOSYS as isize)
}

const FUTEX_WAIT: c_int = 0;
const FUTEX_WAKE: c_int = 1;

/// The keeper: see the module's documentation.
extern "C" fn keeper(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the ChildArgs the host keeps alive until `state` is 1; after that
    // only raw system calls on this process's own stack run.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        default_dispositions();
        // tlsc --detach forks and its first process exits: its orphan comes back here.
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
        let pid = libc::clone(
            exec_child,
            a.helper_stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        );
        if pid < 0 {
            a.err.store(errno(), Ordering::Relaxed);
        }
        // The helper has exec'ed (or failed): nothing of the host's stays open here.
        if libc::syscall(
            libc::SYS_close_range,
            0 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        ) != 0
        {
            for fd in 0..4096 {
                libc::close(fd);
            }
        }
        let state = &a.state as *const AtomicI32 as usize;
        a.state.store(1, Ordering::Release);
        // From here on `a` may be gone.
        raw_syscall(libc::SYS_futex, state, FUTEX_WAKE as usize, 1, 0);
        loop {
            let r = raw_syscall(
                libc::SYS_wait4,
                -1isize as usize,
                0,
                libc::__WALL as usize,
                0,
            );
            if r < 0 && r != -(libc::EINTR as isize) {
                break; // ECHILD: every helper is gone
            }
        }
        raw_syscall(libc::SYS_exit, 0, 0, 0, 0);
        0
    }
}

/// Keepers not yet reaped: (pid, stack). A pid of 0 is a free entry, -1 a reserved one.
pub const KEEPERS: usize = 1024;
static KEEPER_PID: [AtomicI32; KEEPERS] = [const { AtomicI32::new(0) }; KEEPERS];
static KEEPER_STACK: [AtomicUsize; KEEPERS] = [const { AtomicUsize::new(0) }; KEEPERS];
static KEPT: AtomicUsize = AtomicUsize::new(0);
/// The pid of the process whose thread is reaping (a copy inherited across fork belongs
/// to another pid and is taken over).
static REAPING: AtomicI32 = AtomicI32::new(0);

/// Does this process adopt orphans (PID 1 of its namespace, or a subreaper)?
pub fn adopts_orphans() -> bool {
    // SAFETY: getpid cannot fail.
    if unsafe { libc::getpid() } == 1 {
        return true;
    }
    let mut v: c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes an int.
    let r = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut c_int, 0, 0, 0) };
    r == 0 && v != 0
}

/// Reap the keepers that have ended and unmap their stacks (cheap when there are none).
pub fn reap() {
    if KEPT.load(Ordering::Acquire) == 0 {
        return;
    }
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let holder = REAPING.load(Ordering::Acquire);
    if holder == me
        || REAPING
            .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
    {
        return; // another thread of this process is at it
    }
    for i in 0..KEEPERS {
        let pid = KEEPER_PID[i].load(Ordering::Acquire);
        if pid <= 0 {
            continue;
        }
        let mut status = 0;
        // SAFETY: a wait on one pid, without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        // ECHILD: not (or no longer) our child: reaped by someone else, or this is a
        // forked copy of the process; either way that keeper no longer runs on this copy
        // of its stack.
        if r == pid || (r < 0 && errno() == libc::ECHILD) {
            let stack = KEEPER_STACK[i].swap(0, Ordering::AcqRel);
            if stack != 0 {
                // SAFETY: the keeper's own stack mapping; the keeper is dead.
                unsafe { libc::munmap(stack as *mut c_void, 2 * STACK) };
            }
            KEEPER_PID[i].store(0, Ordering::Release);
            KEPT.fetch_sub(1, Ordering::AcqRel);
        }
    }
    REAPING.store(0, Ordering::Release);
}

/// A free keeper entry, reserved (-1); None when the table is full.
fn reserve() -> Option<usize> {
    (0..KEEPERS).find(|&i| {
        KEEPER_PID[i]
            .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// The keeper form of [`spawn`] (see the module's documentation).
fn spawn_kept(args: &mut ChildArgs, slot: usize) -> Result<(), c_int> {
    // SAFETY: plain system calls; the stack mapping stays until the keeper is reaped.
    unsafe {
        let stack = libc::mmap(
            ptr::null_mut(),
            2 * STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            KEEPER_PID[slot].store(0, Ordering::Release);
            return Err(errno());
        }
        args.helper_stack = (stack as *mut u8).add(STACK) as *mut c_void;
        let top = (stack as *mut u8).add(2 * STACK) as *mut c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            keeper,
            top,
            libc::CLONE_VM,
            args as *mut ChildArgs as *mut c_void,
        );
        let clone_err = errno();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            libc::munmap(stack, 2 * STACK);
            KEEPER_PID[slot].store(0, Ordering::Release);
            return Err(clone_err);
        }
        KEEPER_STACK[slot].store(stack as usize, Ordering::Release);
        KEEPER_PID[slot].store(pid, Ordering::Release);
        KEPT.fetch_add(1, Ordering::AcqRel);
        // Its word that the helper runs and it holds nothing of ours (bounded: a keeper
        // that never answers is left to the reaper, and the start counts as failed).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while args.state.load(Ordering::Acquire) == 0 {
            if std::time::Instant::now() >= deadline {
                return Err(libc::ETIMEDOUT);
            }
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            libc::syscall(
                libc::SYS_futex,
                &args.state as *const AtomicI32,
                FUTEX_WAIT,
                0 as c_int,
                &ts as *const libc::timespec,
            );
        }
        match args.err.load(Ordering::Relaxed) {
            0 => Ok(()),
            e => Err(e),
        }
    }
}

const STACK: usize = 256 * 1024;

/// Run `p` with `fds` (source, target) in place, every fd from `first_closed` up closed,
/// and reap the cloned child. With `detach` (always, for helpers that stay) the cloned
/// child forks the process that execs and exits at once; without it, the cloned child
/// execs itself (then the host sees a SIGCHLD when it ends: only for short-lived
/// programs). Returns the errno of a failed start (the exec's only without `detach`).
pub fn spawn(
    p: &Prepared,
    fds: &[(c_int, c_int)],
    first_closed: c_int,
    detach: bool,
) -> Result<(), c_int> {
    if fds.len() > MAX_FDS {
        return Err(libc::EINVAL);
    }
    reap();
    let mut args = ChildArgs {
        helper_stack: ptr::null_mut(),
        state: AtomicI32::new(0),
        prepared: p,
        fds: [(-1, -1); MAX_FDS],
        nfds: fds.len(),
        first_closed,
        detach,
        err: AtomicI32::new(0),
    };
    args.fds[..fds.len()].copy_from_slice(fds);
    if detach && KEEPER_FORM && adopts_orphans() {
        if let Some(slot) = reserve() {
            args.detach = false;
            return spawn_kept(&mut args, slot);
        }
    }
    // SAFETY: plain system calls; the stack mapping outlives the child's use of it (the
    // parent is suspended until the child execs or exits, and unmaps it only after).
    unsafe {
        let stack = libc::mmap(
            ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            return Err(errno());
        }
        let top = (stack as *mut u8).add(STACK) as *mut c_void;
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK,
            &mut args as *mut ChildArgs as *mut c_void,
        );
        let clone_err = errno();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut());
        if pid < 0 {
            libc::munmap(stack, STACK);
            return Err(clone_err);
        }
        // Reap exactly this child (it has no exit signal: __WALL).
        let mut status = 0;
        for _ in 0..1000 {
            let r = libc::waitpid(pid, &mut status, libc::__WALL);
            if r == pid || (r < 0 && errno() != libc::EINTR) {
                break;
            }
        }
        libc::munmap(stack, STACK);
        match args.err.load(Ordering::Relaxed) {
            0 => Ok(()),
            e => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strip_preload;

    #[test]
    fn preload_without_us() {
        let ours = b"/x/target/release/libautossl.so";
        assert_eq!(strip_preload(ours, Some(ours)), b"");
        assert_eq!(
            strip_preload(
                b"/a/liba.so /x/target/release/libautossl.so:/b/libb.so",
                Some(ours)
            ),
            b"/a/liba.so /b/libb.so"
        );
        assert_eq!(strip_preload(b"libautossl.so", None), b"");
        assert_eq!(
            strip_preload(b"/opt/libautossl.so.1", None),
            b"/opt/libautossl.so.1"
        );
    }
}
