//! The upgrade of one matching `connect()`, in steps that the two modes share:
//!
//! - native (`AUTOSSL_TLS_CMD` unset), a blocking socket: [`connect_tcp`], the real TCP
//!   connect on the caller's socket; [`start_helper`], tlsc's io form on it with `-d`;
//!   [`await_blocking`], the handshake's outcome on the `-d` pipe; [`swap`], the socketpair
//!   end in the place of the caller's descriptor;
//! - native, a non-blocking socket: [`pending_connect`], the real connect started, tlsc
//!   handed the connecting socket, the swap, EINPROGRESS; the program's own wait and
//!   SO_ERROR check complete it (see `pending`). With every entry of that table live, the
//!   blocking steps, the wait bounded by AUTOSSL_TIMEOUT;
//! - command (`AUTOSSL_TLS_CMD` set): [`start_helper`], `cmd IP PORT` (which connects by
//!   itself), then [`swap`].

use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::addr::{Dest, Target};
use crate::config::{Config, State};
use crate::fds::{
    errno, int_opt, millis, pipe, poll_until, sockaddr_bytes, socketpair, timeo, Carried, Fd,
};
use crate::names::Chosen;
use crate::outcome::{await_blocking, await_description};
use crate::say::{say, say_once};
use crate::{handoff, names, pending, real, socks, spawn};
use stls_desc::Cause;

/// The helper's stderr: /dev/null, added to `fds` as its fd 2, when the caller must not see
/// its messages (AUTOSSL_SILENT, or the connection is on fd 2 itself); else the caller's. The
/// returned descriptor must stay open until the spawn.
fn quiet_stderr(cfg: &Config, fd: c_int, fds: &mut Vec<(c_int, c_int)>) -> Fd {
    if !(cfg.silent || fd == 2) || fds.iter().any(|f| f.1 == 2) {
        return Fd(-1);
    }
    // SAFETY: open on a constant NUL-terminated path.
    let devnull =
        Fd(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) });
    if devnull.0 >= 0 {
        fds.push((devnull.0, 2));
    }
    devnull
}

fn cstr(s: &str) -> Result<CString, c_int> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

static NO_TLSC: AtomicBool = AtomicBool::new(false);
static SPAWN_FAILED: AtomicBool = AtomicBool::new(false);
static NO_HANDOFF: AtomicBool = AtomicBool::new(false);

/// One matching connect(): the caller's socket and destination as they were when it was
/// called.
struct Call<'a> {
    st: &'a State,
    fd: c_int,
    dest: Dest<'a>,
    t: Target,
    /// The socket's file status flags (F_GETFL) and descriptor flags (F_GETFD).
    fl: c_int,
    fd_flags: c_int,
    /// The socket's family, for getsockopt(SO_DOMAIN) after the swap.
    domain: c_int,
    ip_text: String,
    port_text: String,
    /// When connect() was called.
    started: Instant,
}

impl<'a> Call<'a> {
    fn new(st: &'a State, fd: c_int, dest: Dest<'a>, t: Target) -> Result<Call<'a>, c_int> {
        // SAFETY: F_GETFL takes no argument.
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: F_GETFD takes no argument.
        let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if fl < 0 || fd_flags < 0 {
            return Err(errno());
        }
        Ok(Call {
            st,
            fd,
            dest,
            t,
            fl,
            fd_flags,
            domain: int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(libc::AF_INET),
            ip_text: t.ip().to_string(),
            port_text: t.port.to_string(),
            started: Instant::now(),
        })
    }

    fn cfg(&self) -> &'a Config {
        &self.st.cfg
    }

    /// Is the caller's socket blocking?
    fn blocking(&self) -> bool {
        self.fl & libc::O_NONBLOCK == 0
    }

    /// The bound on the handshake: AUTOSSL_TIMEOUT; for a blocking socket with a send
    /// timeout, what is left of it since connect() was called, when that is shorter.
    fn handshake_timeout(&self) -> Duration {
        let t = self.cfg().timeout;
        if !self.blocking() {
            return t;
        }
        match timeo(self.fd, libc::SO_SNDTIMEO) {
            Some(tv) => {
                let d = Duration::from_secs(tv.tv_sec.max(0) as u64)
                    + Duration::from_micros(tv.tv_usec.max(0) as u64);
                t.min(d.saturating_sub(self.started.elapsed()))
                    .max(Duration::from_millis(1))
            }
            None => t,
        }
    }

    /// The errno connect() returns for a failure after a rule matched: AUTOSSL_ERRNO, else
    /// `e`.
    fn fail(&self, e: c_int) -> c_int {
        self.cfg().errno.unwrap_or(e)
    }

    /// With AUTOSSL_VERBOSE, the line `fd N: IP port P<rest>`.
    fn verbose(&self, rest: &str) {
        let cfg = self.cfg();
        if cfg.verbose {
            say(
                cfg.silent,
                &format!(
                    "fd {}: {} port {}{rest}",
                    self.fd, self.ip_text, self.port_text
                ),
            );
        }
    }
}

/// Upgrade a matching connect. Err(errno) for connect() to return.
pub fn upgrade(st: &State, fd: c_int, dest: Dest<'_>, t: Target) -> Result<(), c_int> {
    let call = Call::new(st, fd, dest, t)?;
    match &st.cfg.tls_cmd {
        Some(cmd) => command_mode(&call, cmd).map_err(|e| call.fail(e)),
        None => native_mode(&call),
    }
}

/// autossl.so's contract: `cmd IP PORT`, clear text on its stdin/stdout; it connects.
fn command_mode(c: &Call, cmd: &str) -> Result<(), c_int> {
    let (app, helper) = socketpair()?;
    let argv = vec![
        cstr("/bin/sh")?,
        cstr("-c")?,
        cstr(&format!("{cmd} \"$@\""))?,
        cstr("autossl")?,
        cstr(&c.ip_text)?,
        cstr(&c.port_text)?,
    ];
    let fds = [(helper.0, 0), (helper.0, 1)];
    start_helper(c, cstr("/bin/sh")?, argv, &fds, 3, cmd)?;
    drop(helper);
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    swap(c, app, &local[..local_len])?;
    c.verbose(&format!(": handed to {cmd}"));
    Ok(())
}

/// tlsc on a TCP connection made here: connect() returns once the handshake is done.
fn native_mode(c: &Call) -> Result<(), c_int> {
    let Some(tlsc) = c.st.tlsc() else {
        say_once(
            &NO_TLSC,
            c.cfg().silent,
            "tlsc not found beside the library nor on PATH: refusing the connection",
        );
        return Err(c.fail(libc::ECONNREFUSED));
    };
    if !c.blocking() {
        if let Some(entry) = pending::reserve() {
            return pending_connect(c, tlsc, entry);
        }
    }
    // The real connect, on the caller's socket: its errno is the caller's.
    connect_tcp(c)?;
    // From here on the TCP connection exists: every failure shuts it down (never plain),
    // which also ends tlsc's handshake on it. A signal handler's EINTR stays EINTR.
    over_tcp(c, tlsc).map_err(|e| {
        // SAFETY: shutdown on the caller's socket, which holds the connection made above.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        if e == libc::EINTR {
            e
        } else {
            c.fail(e)
        }
    })
}

/// The real TCP connect on the caller's socket: Ok, or the real errno. A blocking socket
/// gets the kernel's own blocking connect (its SO_SNDTIMEO, its EINTR and SA_RESTART
/// rules, exactly as without the library); a non-blocking one is waited for here, bounded
/// by AUTOSSL_TIMEOUT.
fn connect_tcp(c: &Call) -> Result<(), c_int> {
    let connect = real::connect().ok_or(libc::ENOSYS)?;
    // SAFETY: the caller's own arguments to connect(), valid during the call (Dest).
    let r = unsafe { connect(c.fd, c.dest.addr, c.dest.len) };
    if r == 0 {
        return Ok(());
    }
    let res = match errno() {
        libc::EINPROGRESS | libc::EALREADY if !c.blocking() => {
            match poll_until(c.fd, libc::POLLOUT, Instant::now() + c.cfg().timeout) {
                Ok(_) => match int_opt(c.fd, libc::SOL_SOCKET, libc::SO_ERROR) {
                    Some(0) => Ok(()),
                    Some(e) => Err(e),
                    None => Err(errno()),
                },
                Err(e) => Err(e),
            }
        }
        e => Err(e),
    };
    if let Err(libc::EINTR | libc::EINPROGRESS | libc::EALREADY | libc::ETIMEDOUT) = res {
        // The kernel would go on connecting after these: a connection that completes
        // later would be plain, so it is aborted instead.
        // SAFETY: shutdown on the caller's socket; on a connecting one it aborts.
        unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
    }
    res
}

/// A non-blocking socket: the kernel's connect started on it, tlsc given the connecting
/// socket ([`hand_over`]), EINPROGRESS; `entry` keeps the outcome for the program's own
/// SO_ERROR check. A connect that fails at once gives its own errno, as without the
/// library.
fn pending_connect(c: &Call, tlsc: &CStr, entry: pending::Reservation) -> Result<(), c_int> {
    let connect = real::connect().ok_or(libc::ENOSYS)?;
    // SAFETY: the caller's own arguments to connect(), valid during the call (Dest).
    let r = unsafe { connect(c.fd, c.dest.addr, c.dest.len) };
    if r != 0 && errno() != libc::EINPROGRESS {
        return Err(errno());
    }
    match hand_over(c, tlsc, entry) {
        Ok(()) => Err(libc::EINPROGRESS),
        Err(e) => {
            // The connect under way must never become a plain connection.
            // SAFETY: shutdown on the caller's descriptor (either socket); it aborts.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            Err(c.fail(e))
        }
    }
}

/// Fill the send buffer of `fd` (the program's end of the socketpair, before the swap)
/// until it takes no more: the program's poll sees it unwritable, as a connecting socket
/// is, until tlsc drops these bytes after the handshake. Returns how many were written.
fn fill(fd: c_int) -> Result<usize, c_int> {
    static ZEROS: [u8; 16384] = [0; 16384];
    let mut n = 0usize;
    // Bounded: a send buffer of at most 64 MiB.
    for _ in 0..4096 {
        // SAFETY: send reads ZEROS.len() bytes of a static buffer.
        let r = unsafe {
            libc::send(
                fd,
                ZEROS.as_ptr() as *const libc::c_void,
                ZEROS.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if r > 0 {
            n += r as usize;
            continue;
        }
        match errno() {
            libc::EAGAIN if n > 0 => return Ok(n),
            libc::EINTR => continue,
            libc::EAGAIN => return Err(libc::ENOBUFS),
            e => return Err(e),
        }
    }
    Err(libc::ENOBUFS)
}

/// tlsc started on the connecting socket (`--pending-connect`, `--discard` of the filler),
/// the program's end filled and swapped in, the entry published with the notification
/// pipe and what the messages about the outcome need.
fn hand_over(c: &Call, tlsc: &CStr, entry: pending::Reservation) -> Result<(), c_int> {
    let cfg = c.cfg();
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    let chosen = server_name(c);
    let name = chosen.shown();
    let timeout = cfg.timeout;
    let (app, helper) = socketpair()?;
    let filler = fill(app.0)?;
    let (nr, nw) = pipe()?;
    let mut argv = vec![
        tlsc.to_owned(),
        cstr("--detach")?,
        cstr("--pending-connect")?,
        cstr(&format!("--discard={filler}"))?,
        cstr("-K")?,
        cstr(&millis(timeout).to_string())?,
        cstr("-d")?,
        cstr("3")?,
    ];
    argv.extend(name_args(&chosen)?);
    // tlsc's io form on the connecting socket (fd 6 and 7), the socketpair as its stdin
    // and stdout, the pipe's writing end as its -d fd, on which it also reports failures.
    let mut fds = vec![
        (helper.0, 0),
        (helper.0, 1),
        (nw.0, 3),
        (c.fd, 6),
        (c.fd, 7),
    ];
    late_log(c, &mut argv, &mut fds)?;
    sandbox_off(c, &mut argv)?;
    start_helper(c, tlsc.to_owned(), argv, &fds, 8, &tlsc.to_string_lossy())?;
    drop(helper);
    drop(nw);
    let checked = chosen.checked();
    let info = Box::new(pending::Info {
        started: c.started,
        timeout,
        fail_errno: cfg.errno,
        silent: cfg.silent || c.fd == 2,
        verbose: cfg.verbose.then(|| {
            format!(
                "fd {}: {} port {} name {name}",
                c.fd, c.ip_text, c.port_text
            )
        }),
        dest: format!("{} port {} ({checked})", c.ip_text, c.port_text),
        advice: chosen
            .unknown()
            .map(|cands| names::unknown_name_advice(c.t, cands)),
    });
    swap(c, app, &local[..local_len])?;
    entry.publish(c.fd, nr.0, info)?;
    // The entry owns the pipe's reading end now.
    std::mem::forget(nr);
    Ok(())
}

/// The connection's name ([`names::choose`]), said with AUTOSSL_VERBOSE when none is
/// certain.
fn server_name(c: &Call) -> Chosen {
    let chosen = names::choose(c.cfg(), c.t, &c.ip_text);
    match &chosen {
        Chosen::FromRequest(cands) => c.verbose(&format!(
            ": several names ({}): the request's host picks one",
            names::candidate_list(cands)
        )),
        Chosen::Address(_, cands) => c.verbose(&format!(
            ": no single name known ({}): verifying the address",
            names::candidate_list(cands)
        )),
        Chosen::Named(_) => {}
    }
    chosen
}

/// tlsc's options for the name: `-k NAME --check-host`, `--host-from-request=NAMES`, or
/// `-k ADDRESS`.
fn name_args(chosen: &Chosen) -> Result<Vec<CString>, c_int> {
    Ok(match chosen {
        Chosen::FromRequest(_) => {
            vec![cstr(&format!("--host-from-request={}", chosen.shown()))?]
        }
        Chosen::Address(a, _) => vec![cstr("-k")?, cstr(a)?],
        Chosen::Named(n) => vec![cstr("-k")?, cstr(n)?, cstr("--check-host")?],
    })
}

/// `AUTOSSL_NO_SANDBOX`: tlsc's engine is not confined (`--no-sandbox`).
fn sandbox_off(c: &Call, argv: &mut Vec<CString>) -> Result<(), c_int> {
    if c.cfg().no_sandbox {
        argv.push(cstr("--no-sandbox")?);
    }
    Ok(())
}

/// Messages that come after the connection is ready (the verdict on the program's request)
/// go to the program's stderr, as tlsc's fd 4: not with AUTOSSL_SILENT, nor when the
/// connection is on fd 2 itself.
fn late_log(c: &Call, argv: &mut Vec<CString>, fds: &mut Vec<(c_int, c_int)>) -> Result<(), c_int> {
    if !c.cfg().silent && c.fd != 2 {
        argv.push(cstr("--log-fd=4")?);
        fds.push((2, 4));
    }
    Ok(())
}

/// The name comes from the program's own request: tlsc is started on the connected socket
/// and the swap made at once; tlsc reads the request, then makes the handshake for the
/// name it gives. A failure from here on reaches the program as a closed connection, and
/// tlsc says why on its stderr.
fn over_tcp_from_request(c: &Call, tlsc: &CStr, chosen: &Chosen) -> Result<(), c_int> {
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    let ms = millis(c.cfg().timeout).to_string();
    let mut argv = vec![tlsc.to_owned(), cstr("--detach")?, cstr("-K")?, cstr(&ms)?];
    argv.extend(name_args(chosen)?);
    let (app, helper) = socketpair()?;
    let mut fds = vec![(helper.0, 0), (helper.0, 1), (c.fd, 6), (c.fd, 7)];
    late_log(c, &mut argv, &mut fds)?;
    sandbox_off(c, &mut argv)?;
    start_helper(c, tlsc.to_owned(), argv, &fds, 8, &tlsc.to_string_lossy())?;
    drop(helper);
    swap(c, app, &local[..local_len])?;
    c.verbose(&format!(": {}", chosen.checked()));
    Ok(())
}

/// On the connected socket: tlsc started, its handshake awaited, the swap.
fn over_tcp(c: &Call, tlsc: &CStr) -> Result<(), c_int> {
    let cfg = c.cfg();
    let chosen = server_name(c);
    if let Chosen::FromRequest(_) = chosen {
        return over_tcp_from_request(c, tlsc, &chosen);
    }
    let (local, local_len) = sockaddr_bytes(c.fd, false);
    let name = chosen.shown();
    let timeout = c.handshake_timeout();
    let ms = millis(timeout).to_string();
    let mut argv = vec![
        tlsc.to_owned(),
        cstr("--detach")?,
        cstr("-K")?,
        cstr(&ms)?,
        cstr("-d")?,
        cstr("3")?,
    ];
    argv.extend(name_args(&chosen)?);
    let (app, helper) = socketpair()?;
    let (nr, nw) = pipe()?;
    // tlsc's messages come through a pipe: each is given with the destination, before
    // connect() returns. (Not when connect() is on fd 2 itself: that is the network.)
    let relay = !cfg.silent && c.fd != 2;
    let (er, ew) = if relay { pipe()? } else { (Fd(-1), Fd(-1)) };
    // tlsc's io form on the connected socket (fd 6 and 7), the socketpair as its stdin and
    // stdout, the pipe's writing end as its -d fd; --detach also keeps it off the caller's
    // stderr after the handshake.
    let mut fds = vec![
        (helper.0, 0),
        (helper.0, 1),
        (nw.0, 3),
        (c.fd, 6),
        (c.fd, 7),
    ];
    if relay {
        fds.push((ew.0, 2));
    }
    late_log(c, &mut argv, &mut fds)?;
    sandbox_off(c, &mut argv)?;
    start_helper(c, tlsc.to_owned(), argv, &fds, 8, &tlsc.to_string_lossy())?;
    drop(helper);
    drop(nw);
    drop(ew);
    let outcome = if c.blocking() {
        await_blocking(&nr, relay.then_some(&er), timeout)
    } else {
        await_description(&nr, relay.then_some(&er), timeout)
    };
    drop(nr);
    drop(er);
    let checked = chosen.checked();
    for line in String::from_utf8_lossy(&outcome.said).lines() {
        if !line.trim().is_empty() {
            say(
                cfg.silent,
                &format!("{} port {} ({checked}): {line}", c.ip_text, c.port_text),
            );
        }
    }
    let desc = match outcome.desc {
        Ok(d) => d,
        Err(e) => {
            c.verbose(&format!(" name {name}: TLS failed"));
            // The name is advised on only when the name can be what failed: a certificate
            // not trusted at all is no matter of names.
            let trust = outcome.cause == Cause::Untrusted;
            if let (Some(cands), true) = (chosen.unknown(), c.fd != 2 && !trust) {
                say(cfg.silent, &names::unknown_name_advice(c.t, cands));
            }
            return Err(e);
        }
    };
    swap(c, app, &local[..local_len])?;
    let get = |k| desc.get(k).map(|v| v.to_string_lossy()).unwrap_or_default();
    c.verbose(&format!(
        " name {name}: {} {} {}",
        get("SSL_PROTOCOL"),
        get("SSL_CIPHER"),
        get("SSL_GROUP")
    ));
    Ok(())
}

/// Start a helper: `path` with `argv`, the (source, target) descriptors `fds` in place, its
/// stderr the caller's or /dev/null ([`quiet_stderr`]), every descriptor from
/// `first_closed` up closed, through a short-lived middle process (see spawn.rs: no
/// SIGCHLD, no zombie). A helper that cannot be started (`what` names it, once per
/// process): ECONNREFUSED.
fn start_helper(
    c: &Call,
    path: CString,
    argv: Vec<CString>,
    fds: &[(c_int, c_int)],
    first_closed: c_int,
    what: &str,
) -> Result<(), c_int> {
    let mut fds = fds.to_vec();
    let devnull = quiet_stderr(c.cfg(), c.fd, &mut fds);
    if c.st.tlsc() == Some(path.as_c_str()) {
        // The pre-started helper takes it, with the caller's stderr as tlsc's own.
        if !fds.iter().any(|f| f.1 == 2) {
            fds.push((2, 2));
        }
        match handoff::hand(c.st, &argv[1..], &fds) {
            Ok(()) => return Ok(()),
            Err(e) => {
                if c.cfg().verbose {
                    say_once(
                        &NO_HANDOFF,
                        c.cfg().silent,
                        &format!("the pre-started helper cannot be used (errno {e}): starting tlsc for each connection"),
                    );
                }
                fds.retain(|f| *f != (2, 2));
            }
        }
    }
    let p = spawn::Prepared::new(path, argv, spawn::helper_env(c.st.lib()));
    let r = spawn::spawn(&p, &fds, first_closed, true);
    drop(devnull);
    r.map_err(|e| {
        say_once(
            &SPAWN_FAILED,
            c.cfg().silent,
            &format!("cannot start {what}: errno {e}"),
        );
        libc::ECONNREFUSED
    })
}

/// The swap: the socketpair end `app` takes the place of the caller's descriptor (same
/// number, same flags, owner, signal and timeouts), and the table of upgraded sockets
/// learns what it answers as the TCP socket (`local`: its getsockname).
fn swap(c: &Call, app: Fd, local: &[u8]) -> Result<(), c_int> {
    let carried = Carried::of(c.fd, c.fl, c.fd_flags);
    carried.swap(app.0, c.fd)?;
    drop(app);
    socks::insert(c.fd, c.domain, c.dest.peer(), local);
    Ok(())
}
