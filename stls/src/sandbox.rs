//! Confinement of the process that parses the network's bytes: once its context is built,
//! its connection exists and the app's start is arranged, and before the first byte of the
//! handshake is read, the engine's process enters a sandbox that lasts until it exits:
//! - `no_new_privs`;
//! - Landlock, best effort by the kernel's ABI: no file system access at all, no TCP (and
//!   from ABI 10 UDP) bind or connect, no abstract Unix socket of a process outside (ABI 6),
//!   and no signal to a process outside (ABI 6) unless the process has a child of its own
//!   (the app), which Landlock's scope would forbid it to end after an error: there the
//!   seccomp filter allows `kill` for that one pid only;
//! - a seccomp filter allowing only the system calls the handshake, the relay, reaping and
//!   exiting make ([`ALLOWED`], measured by `bench/syscalls` over real sessions and
//!   confirmed over the test suite). Any other call raises SIGSYS, whose handler writes
//!   one line naming the call on fd 2, ends the app (SIGTERM) and exits 111.
//!
//! The app is never confined: it is started by a process made before the sandbox.
//! Everything the engine needs later is made before entering: `/dev/null` opened (for
//! [`crate::fd::silence_stderr`]), the time zone read, OpenSSL's random generator seeded,
//! hashed CA directories read ahead ([`crate::hashdir`]).
//!
//! A kernel without Landlock or seccomp: the program runs with what it has, and says so
//! at verbosity 2. `--no-sandbox` turns it all off, as a debugging aid.

use crate::exit::{self, Error};
use crate::log::Log;
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// The app's pid, ended by the SIGSYS handler; 0 for none.
static CHILD: AtomicI32 = AtomicI32::new(0);
/// Whether this process is confined.
static ENTERED: AtomicBool = AtomicBool::new(false);
/// The SIGSYS line's start (`prog: fatal: `), made before entering.
static PREFIX: OnceLock<Vec<u8>> = OnceLock::new();

/// How far the sandbox went, for the verbosity-2 line and the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confined {
    /// The seccomp filter is installed.
    pub seccomp: bool,
    /// Landlock enforced every restriction asked for (`false`: some, or none).
    pub landlock_full: bool,
    /// Landlock enforced at least some restrictions.
    pub landlock: bool,
}

/// Whether this process has entered the sandbox.
pub fn entered() -> bool {
    ENTERED.load(Ordering::Relaxed)
}

/// Enter the sandbox, unless `off` (`--no-sandbox`). `child` is the app's pid when this
/// process is its parent (it may end it after an error). What the kernel lacks is said at
/// verbosity 2 and the program goes on with the rest; a failure of a call that the kernel
/// has is a system error (111).
pub fn enter(log: Log, off: bool, child: Option<libc::pid_t>) -> Result<(), Error> {
    if off {
        return Ok(());
    }
    prepare(log)?;
    // A panic's backtrace would look its paths up (getcwd, the binary's symbols), which
    // the filter stops: the panic's own line is what is said. prog's environment was made
    // before (its launcher, or prog itself, runs already).
    std::env::set_var("RUST_BACKTRACE", "0");
    let child = child.filter(|&p| p > 0);
    CHILD.store(child.unwrap_or(0), Ordering::Relaxed);
    let landlock = landlock_ruleset(child.is_none());
    let ll = match landlock {
        Ok(s) => s,
        Err(e) => {
            return Err(Error::new(
                exit::SYSTEM,
                format!(
                    "unable to enter the sandbox (Landlock): {e}; --no-sandbox runs without it"
                ),
            ))
        }
    };
    // Asked before the filter, which stops landlock_create_ruleset.
    let abi = if ll == RulesetStatus::PartiallyEnforced {
        landlock_abi()
    } else {
        0
    };
    let seccomp = install_filter(child)?;
    ENTERED.store(true, Ordering::Relaxed);
    crate::fd::no_more_opens();
    let c = Confined {
        seccomp,
        landlock_full: ll == RulesetStatus::FullyEnforced,
        landlock: ll != RulesetStatus::NotEnforced,
    };
    if !c.seccomp && !c.landlock {
        log.info("this kernel has neither Landlock nor seccomp: the engine runs unconfined");
    } else if !c.landlock {
        log.info("this kernel has no Landlock: the engine is confined by seccomp only");
    } else if !c.seccomp {
        log.info("this kernel has no seccomp: the engine is confined by Landlock only");
    }
    if c.landlock && !c.landlock_full {
        log.info(&partial_landlock(abi));
    }
    Ok(())
}

/// The kernel's Landlock ABI version (0: none). Not once confined: the filter stops the
/// call.
pub fn landlock_abi() -> i64 {
    // SAFETY: with a null attribute, size 0 and LANDLOCK_CREATE_RULESET_VERSION, the call
    // reads no memory and only returns the version (or -1).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    v.max(0)
}

/// What a Landlock of ABI `abi` leaves out of the rules asked for, each covered by the
/// seccomp filter (no `socket`, `connect`, `bind`, `open` or `kill` outside).
fn partial_landlock(abi: i64) -> String {
    let mut lacks = Vec::new();
    if abi < 4 {
        lacks.push("TCP bind and connect");
    }
    if abi < 6 {
        lacks.push("the abstract Unix socket and signal scopes");
    }
    if abi < 9 {
        lacks.push("Unix socket path connects");
    }
    if abi < 10 {
        lacks.push("UDP bind and send");
    }
    format!(
        "this kernel's Landlock (ABI {abi}) does not restrict {}: the seccomp filter \
         stops those calls",
        lacks.join(", ")
    )
}

/// Landlock for the calling thread only (a helper thread that must be confined from its
/// start, before the process enters: Landlock applies per thread, the seccomp filter is
/// synchronised to every thread when the process enters). Nothing when `off`; a failure
/// leaves the thread as it was (the process's entry reports what the kernel lacks).
pub fn confine_this_thread(off: bool) {
    if !off {
        let _ = landlock_ruleset(true);
    }
}

/// What must exist before entering: `/dev/null`, the random generator seeded (OpenSSL
/// would open `/dev/urandom` if `getrandom` failed), the SIGSYS line and its handler.
fn prepare(log: Log) -> Result<(), Error> {
    crate::fd::keep_devnull().map_err(|e| Error::sys("unable to open /dev/null", e))?;
    // glibc reads /etc/localtime at its first time conversion (OpenSSL's certificate
    // dates use gmtime_r): done now.
    // SAFETY: tzset takes no argument and only reads TZ and the zone file.
    unsafe { tzset() };
    let mut b = [0u8; 16];
    openssl::rand::rand_bytes(&mut b)
        .map_err(|_| Error::new(exit::SYSTEM, "unable to seed the random number generator"))?;
    let (word, _) = crate::log::failure_word();
    let _ = PREFIX.set(format!("{}: {word}: ", log.name).into_bytes());
    // SAFETY: `sa` is a zeroed sigaction filled in here; the handler makes only
    // async-signal-safe calls (write, kill, _exit) on static data.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
    };
    if r < 0 {
        return Err(Error::sys(
            "unable to catch SIGSYS",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

extern "C" {
    fn tzset();
}

/// No file system access, no TCP or UDP bind or connect, no abstract Unix socket outside,
/// and (`signals`) no signal outside; for the calling thread, best effort by ABI.
fn landlock_ruleset(signals: bool) -> Result<RulesetStatus, landlock::RulesetError> {
    let abi = ABI::V10;
    let mut scopes: BitFlags<Scope> = Scope::AbstractUnixSocket.into();
    if signals {
        scopes |= Scope::Signal;
    }
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(scopes)?
        .create()?
        .no_new_privs(true)
        .restrict_self()?;
    Ok(status.ruleset)
}

/// `SYS_x` and its name, for the SIGSYS line.
macro_rules! calls {
    ($($n:ident),* $(,)?) => { &[$((libc::$n, strip(stringify!($n)))),*] };
}

const fn strip(s: &'static str) -> &'static str {
    // "SYS_" is four ASCII bytes: the name follows.
    match s.as_bytes() {
        [b'S', b'Y', b'S', b'_', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(n) => n,
            Err(_) => s,
        },
        _ => s,
    }
}

/// The system calls the engine's process makes once confined, without conditions, as
/// `bench/syscalls` measures them (`strace -f` of real sessions of every program, the
/// calls after seccomp(2)) and a build with `STLS_SANDBOX_MEASURE` set confirms over the
/// test suite: the relay and the handshake (read, write, poll, fcntl, shutdown, close,
/// setsockopt and getsockopt on the network socket, getpeername for the session's line,
/// getsockname for `-L`'s LOCAL header: the connection's own addresses),
/// memory (brk, munmap, madvise; mmap is allowed below, without PROT_EXEC), SIGCHLD's
/// handler (rt_sigreturn, restart_syscall for an interrupted poll, sigaltstack), reaping
/// (wait4), exiting (exit_group; exit for tlsc's helper thread), getpid (OpenSSL's fork
/// check). Then the paths the measurement may not cross, each from the code: recvfrom (the
/// PROXY header's peek), dup2 (/dev/null, opened before, onto fd 2), futex (locks shared
/// with tlsc's helper thread), getrandom (OpenSSL's reseed), rt_sigprocmask (abort),
/// pwrite64 (tlsd `--session-at`: the description into autossl-shim's table, an fd it
/// gave).
#[cfg(target_arch = "x86_64")]
pub const ALLOWED: &[(i64, &str)] = calls![
    SYS_read,
    SYS_write,
    SYS_poll,
    SYS_fcntl,
    SYS_shutdown,
    SYS_close,
    SYS_setsockopt,
    SYS_getsockopt,
    SYS_getpeername,
    SYS_getsockname,
    SYS_brk,
    SYS_munmap,
    SYS_madvise,
    SYS_rt_sigreturn,
    SYS_restart_syscall,
    SYS_sigaltstack,
    SYS_wait4,
    SYS_exit_group,
    SYS_exit,
    SYS_getpid,
    SYS_recvfrom,
    SYS_dup2,
    SYS_futex,
    SYS_getrandom,
    SYS_rt_sigprocmask,
    SYS_pwrite64,
];

/// See the x86_64 list; this architecture has ppoll for poll and dup3 for dup2.
#[cfg(target_arch = "aarch64")]
pub const ALLOWED: &[(i64, &str)] = calls![
    SYS_read,
    SYS_write,
    SYS_ppoll,
    SYS_fcntl,
    SYS_shutdown,
    SYS_close,
    SYS_setsockopt,
    SYS_getsockopt,
    SYS_getpeername,
    SYS_getsockname,
    SYS_brk,
    SYS_munmap,
    SYS_madvise,
    SYS_rt_sigreturn,
    SYS_restart_syscall,
    SYS_sigaltstack,
    SYS_wait4,
    SYS_exit_group,
    SYS_exit,
    SYS_getpid,
    SYS_recvfrom,
    SYS_dup3,
    SYS_futex,
    SYS_getrandom,
    SYS_rt_sigprocmask,
    SYS_pwrite64,
];

/// Elsewhere no filter is installed (Landlock and no_new_privs only): the list has not
/// been measured there.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const ALLOWED: &[(i64, &str)] = &[];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NAMED: &[(i64, &str)] = &[];

/// Calls allowed with conditions (see [`install_filter`]), and calls named in the SIGSYS
/// line when they are stopped.
#[cfg(target_arch = "x86_64")]
const NAMED: &[(i64, &str)] = calls![
    SYS_readv,
    SYS_writev,
    SYS_mremap,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_sched_yield,
    SYS_gettid,
    SYS_getcwd,
    SYS_set_robust_list,
    SYS_rseq,
    SYS_ppoll,
    SYS_dup3,
    SYS_getppid,
    SYS_mmap,
    SYS_mprotect,
    SYS_kill,
    SYS_tgkill,
    SYS_tkill,
    SYS_open,
    SYS_openat,
    SYS_openat2,
    SYS_creat,
    SYS_stat,
    SYS_lstat,
    SYS_newfstatat,
    SYS_statx,
    SYS_fstat,
    SYS_access,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_readlink,
    SYS_readlinkat,
    SYS_unlink,
    SYS_unlinkat,
    SYS_rename,
    SYS_renameat,
    SYS_renameat2,
    SYS_mkdir,
    SYS_mkdirat,
    SYS_chdir,
    SYS_socket,
    SYS_socketpair,
    SYS_connect,
    SYS_bind,
    SYS_listen,
    SYS_accept,
    SYS_accept4,
    SYS_sendto,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_execve,
    SYS_execveat,
    SYS_fork,
    SYS_vfork,
    SYS_clone,
    SYS_clone3,
    SYS_ptrace,
    SYS_rt_sigaction,
    SYS_rt_sigqueueinfo,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_ioctl,
    SYS_prctl,
    SYS_setuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_lseek,
    SYS_pipe,
    SYS_pipe2,
    SYS_dup,
    SYS_nanosleep,
    SYS_sysinfo,
    SYS_uname,
    SYS_getuid,
    SYS_geteuid,
    SYS_sched_getaffinity,
];

#[cfg(target_arch = "aarch64")]
const NAMED: &[(i64, &str)] = calls![
    SYS_readv,
    SYS_writev,
    SYS_mremap,
    SYS_clock_gettime,
    SYS_clock_nanosleep,
    SYS_sched_yield,
    SYS_gettid,
    SYS_getcwd,
    SYS_set_robust_list,
    SYS_rseq,
    SYS_getppid,
    SYS_mmap,
    SYS_mprotect,
    SYS_kill,
    SYS_tgkill,
    SYS_tkill,
    SYS_openat,
    SYS_openat2,
    SYS_newfstatat,
    SYS_statx,
    SYS_fstat,
    SYS_faccessat,
    SYS_faccessat2,
    SYS_readlinkat,
    SYS_unlinkat,
    SYS_renameat,
    SYS_renameat2,
    SYS_mkdirat,
    SYS_chdir,
    SYS_socket,
    SYS_socketpair,
    SYS_connect,
    SYS_bind,
    SYS_listen,
    SYS_accept,
    SYS_accept4,
    SYS_sendto,
    SYS_sendmsg,
    SYS_recvmsg,
    SYS_execve,
    SYS_execveat,
    SYS_clone,
    SYS_clone3,
    SYS_ptrace,
    SYS_rt_sigaction,
    SYS_rt_sigqueueinfo,
    SYS_pidfd_open,
    SYS_pidfd_send_signal,
    SYS_ioctl,
    SYS_prctl,
    SYS_setuid,
    SYS_setgid,
    SYS_setgroups,
    SYS_lseek,
    SYS_pipe2,
    SYS_dup,
    SYS_nanosleep,
    SYS_sysinfo,
    SYS_uname,
    SYS_getuid,
    SYS_geteuid,
    SYS_sched_getaffinity,
];

/// The name of system call `nr`, if it is one of those the line can name.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    ALLOWED
        .iter()
        .chain(NAMED)
        .find(|(n, _)| *n == nr)
        .map(|(_, s)| *s)
}

/// The filter: [`ALLOWED`]; mmap without PROT_EXEC (no new code); kill only
/// to `child` with SIGTERM or SIGKILL (the engine's end of the app after an error);
/// tgkill only to this process (abort); anything else raises SIGSYS. False when the
/// kernel has no seccomp filters (EINVAL).
fn install_filter(child: Option<libc::pid_t>) -> Result<bool, Error> {
    if ALLOWED.is_empty() {
        return Ok(false);
    }
    let built = filter(child).map_err(|e| {
        Error::new(
            exit::SYSTEM,
            format!("unable to build the sandbox's filter: {e}; --no-sandbox runs without it"),
        )
    })?;
    let fail = |e: std::io::Error| {
        Error::new(
            exit::SYSTEM,
            format!(
                "unable to enter the sandbox (seccomp): {}; --no-sandbox runs without it",
                exit::io_text(&e)
            ),
        )
    };
    // SAFETY: prctl takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    // Every thread (tlsc's helper too). SPEC_ALLOW: a filter otherwise turns on the
    // speculative store bypass mitigation for the process where the kernel ties it to
    // seccomp, which slows its cryptography; it guards code run inside the process against
    // its own sandbox, and the engine runs none.
    let tsync = libc::SECCOMP_FILTER_FLAG_TSYNC;
    for flags in [tsync | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW, tsync] {
        let prog = libc::sock_fprog {
            len: built.len() as u16,
            filter: built.as_ptr().cast_mut().cast(),
        };
        // SAFETY: seccompiler's sock_filter has the kernel's layout (repr(C): u16, u8, u8,
        // u32); `prog` points at `built`, alive across the call, which the kernel copies.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        match r {
            0 => return Ok(true),
            // A thread that could not be synchronised (its id).
            r if r > 0 => return Err(fail(std::io::Error::from_raw_os_error(libc::ESRCH))),
            _ => {}
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(fail(e));
        }
    }
    // EINVAL with and without SPEC_ALLOW: no seccomp filters in this kernel.
    Ok(false)
}

fn filter(child: Option<libc::pid_t>) -> Result<seccompiler::BpfProgram, seccompiler::Error> {
    let cond = |arg, op, v| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, v);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&(n, _)| (n, Vec::new())).collect();
    let no_exec = SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64);
    rules.insert(
        libc::SYS_mmap,
        vec![SeccompRule::new(vec![cond(2, no_exec, 0)?])?],
    );
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u64;
    rules.insert(
        libc::SYS_tgkill,
        vec![SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, me)?])?],
    );
    if let Some(pid) = child {
        let mut kill = Vec::new();
        for sig in [libc::SIGTERM, libc::SIGKILL] {
            kill.push(SeccompRule::new(vec![
                cond(0, SeccompCmpOp::Eq, pid as u64)?,
                cond(1, SeccompCmpOp::Eq, sig as u64)?,
            ])?);
        }
        rules.insert(libc::SYS_kill, kill);
    }
    let arch = std::env::consts::ARCH.try_into()?;
    // A build with STLS_SANDBOX_MEASURE set logs what the filter would stop (the kernel's
    // log, `type=1326`) instead of stopping it: how the allow list was measured over the
    // test suite. Never set for a build that is used.
    let mismatch = match option_env!("STLS_SANDBOX_MEASURE") {
        Some(_) => SeccompAction::Log,
        None => SeccompAction::Trap,
    };
    SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)?
        .try_into()
        .map_err(seccompiler::Error::Backend)
}

/// The kernel's `siginfo_t` for SIGSYS: the system call's number follows the call's address.
#[repr(C)]
struct SigsysInfo {
    _signo: libc::c_int,
    _errno: libc::c_int,
    _code: libc::c_int,
    #[cfg(target_pointer_width = "64")]
    _pad: libc::c_int,
    _call_addr: *mut libc::c_void,
    syscall: libc::c_int,
    _arch: libc::c_uint,
}

/// A fixed buffer for the SIGSYS line: no allocation in a signal handler.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn number(&mut self, mut v: i64) {
        if v < 0 {
            self.push(b"-");
            v = -v;
        }
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&d[i..]);
    }
}

/// The SIGSYS line, without the program's name: what was stopped, what to do.
fn describe(line: &mut Line, nr: i64) {
    line.push(b"the sandbox stopped system call ");
    match syscall_name(nr) {
        Some(n) => {
            line.push(n.as_bytes());
            line.push(b" (");
            line.number(nr);
            line.push(b")");
        }
        None => line.number(nr),
    }
    line.push(
        b", which the TLS engine must not make: the session is ended; report it as a bug \
          (--no-sandbox works around it)\n",
    );
}

/// SIGSYS from the filter: one line naming the call, the app ended, exit 111. Only
/// async-signal-safe calls, on static data and the stack.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let nr = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a siginfo_t for SIGSYS, whose layout SigsysInfo mirrors.
        i64::from(unsafe { (*info.cast::<SigsysInfo>()).syscall })
    };
    let mut line = Line {
        buf: [0; 512],
        len: 0,
    };
    if let Some(p) = PREFIX.get() {
        line.push(p);
    }
    describe(&mut line, nr);
    // One write of the line, with the raw call: async-signal-safe, and this module
    // imports nothing of `fd`, which imports it.
    // SAFETY: write reads `line.len` bytes of our own buffer.
    let _ = unsafe { libc::write(2, line.buf.as_ptr().cast(), line.len) };
    let child = CHILD.load(Ordering::Relaxed);
    // SAFETY: kill and _exit are async-signal-safe; `child` is this process's own child
    // (the filter allows kill for it alone), and _exit runs no code of the process.
    unsafe {
        if child > 0 {
            libc::kill(child, libc::SIGTERM);
        }
        libc::_exit(exit::SYSTEM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_call() {
        let mut l = Line {
            buf: [0; 512],
            len: 0,
        };
        describe(&mut l, libc::SYS_openat);
        let s = String::from_utf8_lossy(&l.buf[..l.len]).into_owned();
        assert!(
            s.starts_with("the sandbox stopped system call openat ("),
            "{s}"
        );
        assert!(s.ends_with("(--no-sandbox works around it)\n"), "{s}");
        let mut l = Line {
            buf: [0; 512],
            len: 0,
        };
        describe(&mut l, 99_999);
        assert!(String::from_utf8_lossy(&l.buf[..l.len]).contains("call 99999,"));
    }

    #[test]
    fn the_filter_builds() {
        assert!(!filter(None).expect("filter").is_empty());
        assert!(!filter(Some(12345)).expect("filter").is_empty());
        assert_eq!(syscall_name(libc::SYS_connect), Some("connect"));
        for (nr, name) in ALLOWED {
            assert_eq!(syscall_name(*nr), Some(*name));
        }
    }
}
