//! The server side: a connection that accept() or accept4() gave on a listening socket
//! whose local port is in `AUTOSSL_ACCEPT_PORTS` gets TLS from tlsd, outside the daemon.
//!
//! The steps, all before accept() returns and none waiting on the client:
//! 1. [`on_accept`]: the listener's port (getsockname) and the new socket's kind checked;
//! 2. a clear-text socketpair made, an entry of the session table claimed (`sessions`);
//! 3. tlsd started as the client side starts tlsc (`spawn`: no SIGCHLD, no zombie, no
//!    inherited fd, `AUTOSSL_NESTED=1`) with the real socket on its fd 0/1, its end of the
//!    pair on fd 3 (`--clear-fd=3`), the table on fd 4 (`--session-at=4:OFFSET`);
//! 4. the daemon's end of the pair put in the place of the accepted descriptor (same
//!    number, flags: accept4's SOCK_NONBLOCK and SOCK_CLOEXEC hold), and `socks` told
//!    the real addresses, so that getpeername, getsockname and the TCP options answer as
//!    for the real socket.
//!
//! The handshake then runs in tlsd while the daemon goes on: the first bytes arrive when
//! it is done, and a failed one is a client that closed. A failure here (tlsd missing,
//! no descriptor left) closes the connection: accept() fails with ECONNABORTED, as for a
//! client that left before it was accepted, and the daemon accepts the next one.

use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use crate::config::{self, Config, State};
use crate::fds::{errno, int_opt, millis, sockaddr_bytes, socketpair, Carried, Fd};
use crate::say::{say, say_once};
use crate::{addr, fds, sessions, socks, spawn};

static NO_TLSD: AtomicBool = AtomicBool::new(false);
static SPAWN_FAILED: AtomicBool = AtomicBool::new(false);
static TLSD: OnceLock<Option<CString>> = OnceLock::new();

/// tlsd beside the library, else on PATH (found once).
fn tlsd(st: &State) -> Option<&'static CStr> {
    TLSD.get_or_init(|| config::find_program(st.lib(), b"tlsd"))
        .as_deref()
}

/// The port of an AF_INET/AF_INET6 socket address, as getsockname wrote it.
fn port_of(b: &[u8]) -> Option<u16> {
    if b.len() < 4 {
        return None;
    }
    let family = c_int::from(u16::from_ne_bytes([b[0], b[1]]));
    (family == libc::AF_INET || family == libc::AF_INET6).then(|| u16::from_be_bytes([b[2], b[3]]))
}

/// Is `listener` a listening socket whose local port the configuration chose?
fn chosen(cfg: &Config, listener: c_int) -> bool {
    let (b, n) = sockaddr_bytes(listener, false);
    port_of(&b[..n]).is_some_and(|p| cfg.accept_ports.contains(p))
}

/// After the real accept on `listener` gave `fd`: the upgrade when the listener is chosen.
/// Ok: `fd` is the daemon's (upgraded or untouched); Err(errno): it must be closed and
/// accept() fail with that errno.
pub fn on_accept(listener: c_int, fd: c_int) -> Result<(), c_int> {
    let st = config::state();
    if !st.cfg.accepting() {
        return Ok(());
    }
    // Helpers' keepers that have ended (a host that adopts orphans).
    spawn::reap();
    if !chosen(&st.cfg, listener) || !fds::is_tcp(fd) {
        return Ok(());
    }
    upgrade(st, fd)
}

fn cstr(s: &str) -> Result<CString, c_int> {
    CString::new(s).map_err(|_| libc::EINVAL)
}

fn upgrade(st: &State, fd: c_int) -> Result<(), c_int> {
    let cfg = &st.cfg;
    let Some(tlsd) = tlsd(st) else {
        say_once(
            &NO_TLSD,
            cfg.silent,
            "tlsd not found beside the library nor on PATH: closing the connections accepted on AUTOSSL_ACCEPT_PORTS",
        );
        return Err(libc::ECONNABORTED);
    };
    // SAFETY: F_GETFL takes no argument.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: F_GETFD takes no argument.
    let fd_flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if fl < 0 || fd_flags < 0 {
        return Err(errno());
    }
    let domain = int_opt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(libc::AF_INET);
    let (peer, peer_len) = sockaddr_bytes(fd, true);
    let (local, local_len) = sockaddr_bytes(fd, false);
    let (app, helper) = socketpair()?;
    let claim = sessions::claim(cfg.timeout);
    let mut argv = vec![
        tlsd.to_owned(),
        cstr("--clear-fd=3")?,
        cstr("-K")?,
        cstr(&millis(cfg.timeout).to_string())?,
        cstr(if cfg.verbose { "-v2" } else { "-v1" })?,
        // The CERTFILE:name pair SNI names, else CERTFILE/KEYFILE.
        cstr("--sni")?,
    ];
    if let Some(flag) = cfg.accept_client_cert {
        argv.push(cstr(flag)?);
    }
    if cfg.no_sandbox {
        // AUTOSSL_NO_SANDBOX: tlsd's engine not confined (a debugging aid).
        argv.push(cstr("--no-sandbox")?);
    }
    // tlsd's io form: the accepted socket on fd 0/1, its end of the pair on fd 3, the
    // session table on fd 4.
    let mut fds = vec![(fd, 0), (fd, 1), (helper.0, 3)];
    if let Some(c) = &claim {
        argv.push(cstr(&format!("--session-at=4:{}", c.offset))?);
        fds.push((c.fd, 4));
    }
    let _devnull = if cfg.silent {
        // SAFETY: open on a constant NUL-terminated path.
        let d = Fd(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) });
        if d.0 >= 0 {
            fds.push((d.0, 2));
        }
        d
    } else {
        Fd(-1)
    };
    let p = spawn::Prepared::new(tlsd.to_owned(), argv, spawn::helper_env(st.lib()));
    if let Err(e) = spawn::spawn(&p, &fds, 5, true) {
        say_once(
            &SPAWN_FAILED,
            cfg.silent,
            &format!("cannot start {}: errno {e}", tlsd.to_string_lossy()),
        );
        return Err(libc::ECONNABORTED);
    }
    drop(helper);
    // From here on tlsd holds the connection: the daemon's descriptor becomes its end.
    Carried::of(fd, fl, fd_flags).swap(app.0, fd)?;
    drop(app);
    socks::insert(fd, domain, &peer[..peer_len], &local[..local_len]);
    if let Some(c) = &claim {
        c.bind(fd);
    }
    if cfg.verbose {
        // SAFETY: the bytes getpeername and getsockname wrote, with their lengths.
        let (from, on) = unsafe {
            (
                addr::target(peer.as_ptr() as *const libc::sockaddr, peer_len as _),
                addr::target(local.as_ptr() as *const libc::sockaddr, local_len as _),
            )
        };
        if let (Some(from), Some(on)) = (from, on) {
            say(
                cfg.silent,
                &format!(
                    "fd {fd}: {} port {}: accepted on port {}: TLS by tlsd",
                    from.ip(),
                    from.port,
                    on.port
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::port_of;

    #[test]
    fn ports() {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&6379u16.to_be_bytes());
        assert_eq!(port_of(&b), Some(6379));
        b[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(port_of(&b), None);
        assert_eq!(port_of(&b[..3]), None);
    }
}
