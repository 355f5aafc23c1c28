//! The pre-started helper: one `tlsc --serve` per user and TLS configuration, found (or
//! started) on first use, and handed each upgraded connection's descriptors over its Unix
//! socket (`SCM_RIGHTS`) with tlsc's arguments, so that a connection costs a fork of a
//! ready process instead of a new program and a new context.
//!
//! - Where: `$XDG_RUNTIME_DIR/stls` when that is a directory of this user's that nobody
//!   else can enter, else `/tmp/stls-UID` (made 0700; refused unless it is a directory,
//!   not a link, owned by this user, mode 0700). The socket's name carries a hash of the
//!   environment tlsc reads its configuration from (every variable but a few that say
//!   where a shell is), of tlsc's path and of its file's size and time: another trust
//!   store, client certificate, policy or build is another helper.
//! - Who: the helper's uid is checked (`SO_PEERCRED`) before anything is sent; the helper
//!   checks ours before it reads.
//! - Failure: until the helper answers that a process of its own has the connection,
//!   the caller keeps its descriptors, and when the helper ends without that answer (it
//!   was ending itself), the caller starts tlsc with them (as with `AUTOSSL_HELPER=0`);
//!   once answered, the helper owns the connection, and its failure is the connection's.
//! - A host that adopts orphans (PID 1, a subreaper) starts a helper that never idles out:
//!   its keeper (see `spawn`) then never ends, and leaves no zombie behind.

use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::State;
use crate::fds::{errno, Fd};
use crate::{real, spawn};

const MAGIC: &[u8] = b"stls-helper/1";
/// How long a helper just started has to answer.
const START_WAIT: Duration = Duration::from_secs(2);

/// The helper could not be started: this process starts tlsc itself from now on.
static GAVE_UP: AtomicBool = AtomicBool::new(false);

/// Hand the connection to the helper: `args` are tlsc's arguments (without argv[0]), `fds`
/// the (source, target) descriptors as tlsc would have them. Err(errno) with nothing
/// sent: the caller starts tlsc itself.
pub fn hand(st: &State, args: &[CString], fds: &[(c_int, c_int)]) -> Result<(), c_int> {
    if GAVE_UP.load(Ordering::Relaxed) {
        return Err(libc::EAGAIN);
    }
    let path = socket_path(st).ok_or(libc::EACCES)?;
    let sock = match reach(path) {
        Ok(s) => s,
        Err(_) => {
            start(st, path)?;
            let deadline = Instant::now() + START_WAIT;
            loop {
                match reach(path) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() >= deadline => {
                        GAVE_UP.store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
    };
    send(&sock, args, fds)?;
    acknowledged(&sock)
}

/// The helper's word that a process of its own has the connection: a byte. Its end
/// without a word (it was ending) means nothing of the connection was taken: the caller
/// starts tlsc itself with the same descriptors. No word within the bound (a helper
/// stopped, not ended) counts as taken: starting a second tlsc on the socket could be
/// worse than a connection that times out.
fn acknowledged(sock: &Fd) -> Result<(), c_int> {
    let mut p = libc::pollfd {
        fd: sock.0,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + START_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        // SAFETY: one pollfd, ours.
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as c_int) };
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        if r <= 0 {
            return Ok(());
        }
        let mut b = [0u8; 1];
        // SAFETY: read writes at most one byte into `b`.
        let n = unsafe { libc::read(sock.0, b.as_mut_ptr() as *mut libc::c_void, 1) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return if n == 1 && b[0] == b'k' {
            Ok(())
        } else {
            Err(libc::ECONNRESET)
        };
    }
}

/// A connection to the helper at `path`, whose uid is ours.
fn reach(path: &CStr) -> Result<Fd, c_int> {
    // SAFETY: socket takes plain integers.
    let s =
        Fd(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) });
    if s.0 < 0 {
        return Err(errno());
    }
    // SAFETY: sockaddr_un is plain data: all zeros is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let b = path.to_bytes();
    if b.len() >= sa.sun_path.len() {
        return Err(libc::ENAMETOOLONG);
    }
    for (d, s) in sa.sun_path.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    let connect = real::connect().ok_or(libc::ENOSYS)?;
    // SAFETY: connect reads `sa`, a sockaddr_un of the size given.
    let r = unsafe {
        connect(
            s.0,
            &sa as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(errno());
    }
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let get = real::getsockopt().ok_or(libc::ENOSYS)?;
    // SAFETY: SO_PEERCRED writes at most `len` bytes (a ucred) into `cred`.
    let r = unsafe {
        get(
            s.0,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    // SAFETY: geteuid cannot fail.
    if r != 0 || cred.uid != unsafe { libc::geteuid() } {
        return Err(libc::EPERM);
    }
    Ok(s)
}

/// The message: `stls-helper/1`, the targets, the arguments, each ended by NUL; the
/// sources as its descriptors.
fn send(sock: &Fd, args: &[CString], fds: &[(c_int, c_int)]) -> Result<(), c_int> {
    let mut msg = Vec::with_capacity(256);
    msg.extend_from_slice(MAGIC);
    msg.push(0);
    let targets: Vec<String> = fds.iter().map(|f| f.1.to_string()).collect();
    msg.extend_from_slice(targets.join(" ").as_bytes());
    msg.push(0);
    for a in args {
        msg.extend_from_slice(a.as_bytes_with_nul());
    }
    if msg.len() > 4096 || fds.len() > 8 {
        return Err(libc::E2BIG);
    }
    let sources: Vec<c_int> = fds.iter().map(|f| f.0).collect();
    let data_len = std::mem::size_of_val(sources.as_slice());
    let mut cbuf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // SAFETY: msghdr is plain data: all zeros is a valid value, filled in below; the
    // control buffer (128 bytes) holds one SCM_RIGHTS message of at most 8 descriptors.
    unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        m.msg_controllen = libc::CMSG_SPACE(data_len as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(data_len as u32) as usize;
        std::ptr::copy_nonoverlapping(sources.as_ptr() as *const u8, libc::CMSG_DATA(c), data_len);
        loop {
            let r = libc::sendmsg(sock.0, &m, libc::MSG_NOSIGNAL);
            if r == msg.len() as isize {
                return Ok(());
            }
            if r < 0 && errno() == libc::EINTR {
                continue;
            }
            return Err(if r < 0 { errno() } else { libc::EMSGSIZE });
        }
    }
}

/// `tlsc --serve=PATH`, detached (its own session; in a host that adopts orphans, kept
/// for ever: see the module's documentation).
fn start(st: &State, path: &CStr) -> Result<(), c_int> {
    let tlsc = st.tlsc().ok_or(libc::ENOENT)?;
    let mut arg = b"--serve=".to_vec();
    arg.extend_from_slice(path.to_bytes());
    let mut argv = vec![
        tlsc.to_owned(),
        CString::new(arg).map_err(|_| libc::EINVAL)?,
    ];
    if spawn::adopts_orphans() {
        argv.push(c"--serve-idle=0".to_owned());
    }
    let p = spawn::Prepared::new(tlsc.to_owned(), argv, spawn::helper_env(st.lib()));
    // SAFETY: open on a constant NUL-terminated path.
    let null = Fd(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) });
    if null.0 < 0 {
        return Err(errno());
    }
    spawn::spawn(&p, &[(null.0, 0), (null.0, 1), (null.0, 2)], 3, true)
}

/// This process's helper socket, worked out once: None when there is no private place
/// for it (or `AUTOSSL_HELPER=0`).
fn socket_path(st: &State) -> Option<&'static CStr> {
    static PATH: OnceLock<Option<CString>> = OnceLock::new();
    PATH.get_or_init(|| {
        if !st.cfg.helper {
            return None;
        }
        let dir = private_dir()?;
        let key = config_key(st.tlsc()?);
        let mut p = dir.into_bytes();
        p.extend_from_slice(format!("/helper-{key:016x}.sock").as_bytes());
        CString::new(p).ok()
    })
    .as_deref()
}

/// `$XDG_RUNTIME_DIR/stls` or `/tmp/stls-UID`, made if missing, and only if private.
fn private_dir() -> Option<CString> {
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut tries = Vec::new();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        use std::os::unix::ffi::OsStrExt;
        if x.as_bytes().starts_with(b"/") {
            let mut p = x.as_bytes().to_vec();
            p.extend_from_slice(b"/stls");
            tries.push(p);
        }
    }
    tries.push(format!("/tmp/stls-{uid}").into_bytes());
    for p in tries {
        let Ok(c) = CString::new(p) else { continue };
        // SAFETY: mkdir on a NUL-terminated path; EEXIST is checked below like success.
        unsafe { libc::mkdir(c.as_ptr(), 0o700) };
        // SAFETY: stat is plain data: all zeros is a valid value.
        let mut sb: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: lstat writes a stat into `sb`.
        if unsafe { libc::lstat(c.as_ptr(), &mut sb) } != 0 {
            continue;
        }
        if sb.st_mode & libc::S_IFMT == libc::S_IFDIR && sb.st_uid == uid && sb.st_mode & 0o077 == 0
        {
            return Some(c);
        }
    }
    None
}

/// FNV-1a over tlsc's path, size and time, and the environment (sorted) but for the
/// variables that only say where a shell is and the library's own.
fn config_key(tlsc: &CStr) -> u64 {
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b.iter().chain([0u8].iter()) {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(tlsc.to_bytes());
    // SAFETY: stat is plain data: all zeros is a valid value; stat writes into it.
    let mut sb: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat on a NUL-terminated path.
    if unsafe { libc::stat(tlsc.as_ptr(), &mut sb) } == 0 {
        eat(&sb.st_size.to_le_bytes());
        eat(&sb.st_mtime.to_le_bytes());
        eat(&sb.st_mtime_nsec.to_le_bytes());
    }
    let mut vars: Vec<&[u8]> = Vec::new();
    // SAFETY: environ is the C library's NULL-terminated array of C strings (read as the
    // helper's environment is: see spawn::helper_env).
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            vars.push(CStr::from_ptr(*p).to_bytes());
            p = p.add(1);
        }
    }
    const WHERE: [&[u8]; 8] = [
        b"PWD=",
        b"OLDPWD=",
        b"SHLVL=",
        b"_=",
        b"TERM=",
        b"COLUMNS=",
        b"LINES=",
        b"AUTOSSL_",
    ];
    vars.retain(|v| !WHERE.iter().any(|w| v.starts_with(w)));
    vars.sort_unstable();
    for v in vars {
        eat(v);
    }
    h
}
