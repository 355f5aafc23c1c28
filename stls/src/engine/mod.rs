//! `stls::run`: the full-duplex relay between clear text and a TLS session.
//!
//! Invariants (see stls(7)):
//! - Every operation is tried until it would block; a blocked operation waits for poll to
//!   report its fd, so nothing is polled that is ready and nothing is retried blindly.
//! - OpenSSL is drained (`SSL_read` until it wants to read) whenever there is room: a record
//!   already inside OpenSSL never waits for the next network event.
//! - The engine follows the pipes, not the pid: it ends when the app's output reached EOF
//!   and was sent, and the peer's data was delivered or can no longer be.
//! - Bytes the app wrote are never dropped while the peer can still take them.

use crate::fd;
use crate::handshake::{Io, Tls};
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

/// The five fds: clear text in and out (the app's side), ciphertext in and out (the
/// network), and the selfpipe that receives SIGCHLD. A side may be one socket on both fds.
#[derive(Clone, Copy, Debug)]
pub struct Fds {
    pub clear_in: RawFd,
    pub clear_out: RawFd,
    pub cipher_in: RawFd,
    pub cipher_out: RawFd,
    pub selfpipe: RawFd,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// At local EOF send close_notify before shutting down the network's write side (`-S`).
    pub close_notify: bool,
    /// A TCP EOF without close_notify is a truncation error (`-J`).
    pub enforce_close_notify: bool,
    /// No data either way for this long: close as at local EOF.
    pub idle_timeout: Option<Duration>,
    /// When the app has gone and our direction is closed, drain the network at most this long.
    pub linger: Duration,
    /// After an error, how long the child gets between closing its pipes, SIGTERM and SIGKILL.
    pub reap_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            close_notify: true,
            enforce_close_notify: false,
            idle_timeout: None,
            linger: Duration::from_secs(5),
            reap_grace: Duration::from_secs(1),
        }
    }
}

/// How the relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both directions closed in order.
    Clean,
    /// A TLS or network error (exit 98).
    Tls(String),
    /// A local system error (exit 111).
    System(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: End,
    /// The child's wait status, if there was a child and it was reaped.
    pub child_status: Option<libc::c_int>,
    /// True when the idle timeout closed the session.
    pub idle_expired: bool,
}

/// The size of each of the engine's two buffers (app to network, network to app).
pub const BUF: usize = 64 * 1024;

struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: vec![0u8; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }
    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// Which network readiness a blocked OpenSSL call waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wait {
    No,
    Read,
    Write,
}

impl Wait {
    fn from(io: Io) -> Wait {
        match io {
            Io::WantRead => Wait::Read,
            Io::WantWrite => Wait::Write,
            _ => Wait::No,
        }
    }
}

struct Child {
    pid: libc::pid_t,
    status: Option<libc::c_int>,
}

impl Child {
    fn reap(&mut self, block: bool) {
        if self.status.is_some() || self.pid <= 0 {
            return;
        }
        let mut st = 0;
        loop {
            let r =
                unsafe { libc::waitpid(self.pid, &mut st, if block { 0 } else { libc::WNOHANG }) };
            if r == self.pid {
                self.status = Some(st);
                return;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if r < 0 {
                // ECHILD: someone else reaped it; nothing to report.
                self.pid = 0;
            }
            return;
        }
    }
    fn alive(&self) -> bool {
        self.pid > 0 && self.status.is_none()
    }
}

fn drain_selfpipe(fd: RawFd) {
    let mut b = [0u8; 64];
    while let Ok(n) = fd::read(fd, &mut b) {
        if n < b.len() {
            break;
        }
    }
}

/// Run the relay until both directions are done and the child (if any) is reaped.
///
/// The handshake must be complete and the four data fds non-blocking. The four data fds
/// are closed when this returns; the selfpipe is not. The process's SIGPIPE must be
/// ignored and SIGCHLD must write to the selfpipe (see `child::Selfpipe`).
pub fn run(tls: &mut Tls, fds: Fds, child: Option<libc::pid_t>, cfg: &Config) -> Outcome {
    let mut e = Engine {
        fds,
        cfg,
        child: Child {
            pid: child.unwrap_or(0),
            status: None,
        },
        a2n: Buf::new(),
        n2a: Buf::new(),
        clear_in_open: true,
        clear_out_open: true,
        cipher_out_closed: false,
        clear_in_blocked: false,
        clear_out_blocked: false,
        a2n_eof: false,
        a2n_shut: false,
        close_notify_sent: !cfg.close_notify,
        net_eof: false,
        app_gone: false,
        write_wait: Wait::No,
        read_wait: Wait::No,
        shutdown_wait: Wait::No,
        last_activity: Instant::now(),
        linger_deadline: None,
        idle_expired: false,
        net_hup_seen: false,
        net_failed: None,
    };
    let end = e.relay(tls);
    e.finish(end)
}

struct Engine<'a> {
    fds: Fds,
    cfg: &'a Config,
    child: Child,
    a2n: Buf,
    n2a: Buf,
    clear_in_open: bool,
    clear_out_open: bool,
    cipher_out_closed: bool,
    clear_in_blocked: bool,
    clear_out_blocked: bool,
    /// The app's output reached EOF.
    a2n_eof: bool,
    /// Our direction of the network is closed (close_notify if asked, then SHUT_WR).
    a2n_shut: bool,
    close_notify_sent: bool,
    /// The peer's direction ended (close_notify, or an accepted TCP EOF).
    net_eof: bool,
    /// The app stopped reading: what the peer sends is discarded.
    app_gone: bool,
    write_wait: Wait,
    read_wait: Wait,
    shutdown_wait: Wait,
    last_activity: Instant,
    linger_deadline: Option<Instant>,
    idle_expired: bool,
    /// The network fd reported POLLHUP while we were not reading from it: stop watching it
    /// for errors, or poll would return at once forever.
    net_hup_seen: bool,
    /// The peer's direction failed: a reset seen while not reading (the app's pipe full)
    /// or on our close_notify, or a truncation under -J. Nothing more is read once it is
    /// set; what is buffered still goes to the app until the deadline, then the session
    /// ends with this error (never as a clean EOF the app could mistake for the end).
    net_failed: Option<(Instant, String)>,
}

impl Engine<'_> {
    fn relay(&mut self, tls: &mut Tls) -> End {
        loop {
            if let Err(end) = self.progress(tls) {
                return end;
            }
            if let Some((d, msg)) = &self.net_failed {
                if self.n2a.is_empty() || !self.clear_out_open || Instant::now() >= *d {
                    return End::Tls(msg.clone());
                }
            }
            if self.done() {
                return End::Clean;
            }
            if let Err(end) = self.wait() {
                return end;
            }
        }
    }

    fn done(&self) -> bool {
        let n2a_done = !self.clear_out_open && (self.net_eof || self.app_gone_expired());
        self.a2n_shut && n2a_done
    }

    fn app_gone_expired(&self) -> bool {
        self.app_gone && self.linger_deadline.is_some_and(|d| Instant::now() >= d)
    }

    fn close_clear_in(&mut self) {
        if self.clear_in_open {
            fd::close(self.fds.clear_in);
            self.clear_in_open = false;
        }
    }

    /// The peer's direction failed with `msg`: see `net_failed`.
    fn fail_net(&mut self, msg: String) {
        if self.net_failed.is_none() {
            self.net_failed = Some((Instant::now() + self.cfg.linger, msg));
        }
    }

    fn app_stopped_reading(&mut self) {
        self.app_gone = true;
        self.n2a.clear();
        if self.clear_out_open {
            fd::close(self.fds.clear_out);
            self.clear_out_open = false;
        }
    }

    /// Do everything that can be done without blocking.
    fn progress(&mut self, tls: &mut Tls) -> Result<(), End> {
        loop {
            let mut moved = false;

            // App -> buffer.
            if self.clear_in_open && !self.a2n_eof && self.a2n.is_empty() && !self.clear_in_blocked
            {
                match fd::read(self.fds.clear_in, self.a2n.spare()) {
                    Ok(0) => {
                        self.a2n_eof = true;
                        self.close_clear_in();
                    }
                    Ok(n) => {
                        self.a2n.end += n;
                        self.last_activity = Instant::now();
                    }
                    Err(e) if fd::would_block(&e) => self.clear_in_blocked = true,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // A reset on a clear-side socket ends the app's output like an EOF.
                    Err(_) => {
                        self.a2n_eof = true;
                        self.close_clear_in();
                    }
                }
                moved = true;
            }

            // Buffer -> TLS.
            if !self.a2n.is_empty() && self.write_wait == Wait::No {
                match tls.write(self.a2n.pending()) {
                    Io::Done(n) => {
                        self.a2n.consume(n);
                        moved = true;
                    }
                    io @ (Io::WantRead | Io::WantWrite) => self.write_wait = Wait::from(io),
                    // Nothing more can reach the peer; what it sent still goes to the app.
                    // Our direction ends as at app EOF, without close_notify (the block
                    // below shuts the network's write side).
                    _ => {
                        let why = net_reason();
                        self.fail_net(format!("unable to send to the peer: {why}"));
                        self.a2n.clear();
                        self.a2n_eof = true;
                        self.close_clear_in();
                        self.close_notify_sent = true;
                        moved = true;
                    }
                }
            }

            // App EOF, all sent: close our direction.
            if self.a2n_eof && self.a2n.is_empty() && !self.a2n_shut {
                if !self.close_notify_sent && self.shutdown_wait == Wait::No {
                    match tls.shutdown() {
                        io @ (Io::WantRead | Io::WantWrite) => self.shutdown_wait = Wait::from(io),
                        Io::Done(_) => self.close_notify_sent = true,
                        // The peer is gone: nothing more to send. If its direction had not
                        // ended, the reset cut it short; the kernel reports the error only
                        // once, so the next read would take it for a FIN.
                        _ => {
                            let why = net_reason();
                            self.close_notify_sent = true;
                            if !self.net_eof && !self.app_gone {
                                self.fail_net(format!("unable to send close_notify: {why}"));
                            }
                        }
                    }
                }
                if self.close_notify_sent {
                    self.cipher_out_closed = fd::shut_write(self.fds.cipher_out);
                    self.a2n_shut = true;
                    moved = true;
                }
            }

            // TLS -> buffer (or discarded when the app stopped reading).
            if !self.net_eof
                && self.net_failed.is_none()
                && self.read_wait == Wait::No
                && (self.app_gone || self.n2a.end < BUF)
            {
                // Once the app is gone n2a is empty for good: it serves as the discard area.
                match tls.read(self.n2a.spare()) {
                    Io::Done(n) => {
                        if !self.app_gone {
                            self.n2a.end += n;
                        }
                        self.last_activity = Instant::now();
                        moved = true;
                    }
                    Io::Closed => {
                        self.net_eof = true;
                        moved = true;
                    }
                    Io::Truncated if !self.cfg.enforce_close_notify => {
                        self.net_eof = true;
                        moved = true;
                    }
                    Io::Truncated => {
                        self.fail_net(
                            "the peer closed the connection without close_notify (truncation)"
                                .into(),
                        );
                        moved = true;
                    }
                    io @ (Io::WantRead | Io::WantWrite) => self.read_wait = Wait::from(io),
                    Io::Error => {
                        // Our side is closed and the app gone: a reset now loses nothing.
                        if self.a2n_shut && (self.app_gone || !self.clear_out_open) {
                            let _ = net_reason();
                            self.net_eof = true;
                        } else {
                            let why = net_reason();
                            self.fail_net(format!("unable to receive from the peer: {why}"));
                        }
                        moved = true;
                    }
                }
            }

            // Buffer -> app.
            if !self.n2a.is_empty() && self.clear_out_open && !self.clear_out_blocked {
                match fd::write(self.fds.clear_out, self.n2a.pending()) {
                    Ok(n) => {
                        self.n2a.consume(n);
                        moved = true;
                    }
                    Err(e) if fd::would_block(&e) => self.clear_out_blocked = true,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.app_stopped_reading();
                        moved = true;
                    }
                }
            }

            // Peer EOF, all delivered: EOF to the app.
            if self.net_eof && self.n2a.is_empty() && self.clear_out_open {
                if !fd::shut_write(self.fds.clear_out) {
                    fd::close(self.fds.clear_out);
                }
                self.clear_out_open = false;
                moved = true;
            }

            if self.app_gone && self.a2n_shut && self.linger_deadline.is_none() {
                self.linger_deadline = Some(Instant::now() + self.cfg.linger);
            }

            if !moved {
                return Ok(());
            }
        }
    }

    /// Poll for whatever the blocked operations wait for; unblock what became ready.
    fn wait(&mut self) -> Result<(), End> {
        const SELF: usize = 0;
        const CIN: usize = 1;
        const COUT: usize = 2;
        const NIN: usize = 3;
        const NOUT: usize = 4;
        let mut p = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; 5];
        if self.child.alive() {
            p[SELF] = pfd(self.fds.selfpipe, libc::POLLIN);
        }
        if self.clear_in_open && !self.a2n_eof && self.a2n.is_empty() && self.clear_in_blocked {
            p[CIN] = pfd(self.fds.clear_in, libc::POLLIN);
        }
        if self.clear_out_open {
            // Polled even with nothing to write: POLLERR/POLLHUP say the app stopped reading.
            let ev = if !self.n2a.is_empty() && self.clear_out_blocked {
                libc::POLLOUT
            } else {
                0
            };
            p[COUT] = pfd(self.fds.clear_out, ev);
        }
        let waits = [self.write_wait, self.read_wait, self.shutdown_wait];
        if waits.contains(&Wait::Read) {
            p[NIN] = pfd(self.fds.cipher_in, libc::POLLIN);
        } else if !self.net_eof && !self.net_hup_seen && self.net_failed.is_none() {
            // Not reading (the app's pipe is full): still watch for a reset, which would
            // otherwise go unnoticed for as long as the app does not read.
            p[NIN] = pfd(self.fds.cipher_in, 0);
        }
        if waits.contains(&Wait::Write) {
            p[NOUT] = pfd(self.fds.cipher_out, libc::POLLOUT);
        }

        let mut deadline = self.linger_deadline;
        if let Some(idle) = self.cfg.idle_timeout {
            if !self.idle_expired {
                let d = self.last_activity + idle;
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        }
        if let Some((d, _)) = &self.net_failed {
            deadline = Some(deadline.map_or(*d, |x| x.min(*d)));
        }
        if p.iter().all(|x| x.fd < 0) && deadline.is_none() {
            // Nothing can change any more: a state the relay should never reach.
            return Err(End::System("internal error: nothing to wait for".into()));
        }
        match fd::poll(&mut p, fd::poll_timeout(deadline)) {
            Ok(_) => {}
            Err(e) => {
                return Err(End::System(format!(
                    "unable to poll: {}",
                    crate::exit::io_text(&e)
                )))
            }
        }
        if let Some(idle) = self.cfg.idle_timeout {
            if !self.idle_expired && Instant::now() >= self.last_activity + idle {
                // Idle: close as at local EOF, and stop the app's input too.
                self.idle_expired = true;
                self.a2n_eof = true;
                self.a2n.clear();
                self.close_clear_in();
                self.app_stopped_reading();
            }
        }
        let ready = |i: usize| p[i].fd >= 0 && p[i].revents != 0;
        if ready(SELF) {
            drain_selfpipe(self.fds.selfpipe);
            self.child.reap(false);
        }
        if ready(CIN) {
            self.clear_in_blocked = false;
        }
        if ready(COUT) {
            if p[COUT].revents & (libc::POLLERR | libc::POLLHUP) != 0 {
                self.app_stopped_reading();
            } else {
                self.clear_out_blocked = false;
            }
        }
        if ready(NIN) && p[NIN].events == 0 {
            if p[NIN].revents & libc::POLLERR != 0 {
                let why = socket_error(self.fds.cipher_in);
                self.fail_net(format!("the connection to the peer failed: {why}"));
            } else {
                // POLLHUP alone (a pipe's writer closed, or FIN after our SHUT_WR): an EOF
                // that the next read will see in order.
                self.net_hup_seen = true;
            }
        }
        for (i, w) in [(NIN, Wait::Read), (NOUT, Wait::Write)] {
            if ready(i) {
                for slot in [
                    &mut self.write_wait,
                    &mut self.read_wait,
                    &mut self.shutdown_wait,
                ] {
                    if *slot == w {
                        *slot = Wait::No;
                    }
                }
            }
        }
        Ok(())
    }

    /// Close what is left, reap the child (bounded after an error), report.
    fn finish(mut self, end: End) -> Outcome {
        let clean = end == End::Clean;
        self.close_clear_in();
        if self.clear_out_open {
            fd::close(self.fds.clear_out);
            self.clear_out_open = false;
        }
        if !self.a2n_shut {
            self.cipher_out_closed = fd::shut_write(self.fds.cipher_out);
        }
        fd::close(self.fds.cipher_in);
        if self.fds.cipher_out != self.fds.cipher_in && !self.cipher_out_closed {
            fd::close(self.fds.cipher_out);
        }
        if self.child.alive() {
            if clean {
                self.wait_child(None);
            } else {
                self.reap_bounded();
            }
        }
        Outcome {
            end,
            child_status: self.child.status,
            idle_expired: self.idle_expired,
        }
    }

    /// Wait for SIGCHLD on the selfpipe until `deadline`; true if the child was reaped.
    fn wait_child(&mut self, deadline: Option<Instant>) -> bool {
        loop {
            self.child.reap(false);
            if !self.child.alive() {
                return true;
            }
            let t = fd::poll_timeout(deadline);
            if t == 0 {
                return false;
            }
            let mut p = [pfd(self.fds.selfpipe, libc::POLLIN)];
            if fd::poll(&mut p, t).is_err() {
                // No selfpipe to wait on: block in waitpid instead.
                self.child.reap(deadline.is_none());
                return !self.child.alive();
            }
            if p[0].revents != 0 {
                drain_selfpipe(self.fds.selfpipe);
            }
        }
    }

    fn reap_bounded(&mut self) {
        let grace = self.cfg.reap_grace;
        if self.wait_child(Some(Instant::now() + grace)) {
            return;
        }
        unsafe { libc::kill(self.child.pid, libc::SIGTERM) };
        if self.wait_child(Some(Instant::now() + grace)) {
            return;
        }
        if unsafe { libc::kill(self.child.pid, libc::SIGKILL) } == 0 {
            self.child.reap(true);
        }
    }
}

fn pfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The pending error of a socket (SO_ERROR), as text.
fn socket_error(fd: RawFd) -> String {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 && err != 0 {
        crate::exit::io_text(&std::io::Error::from_raw_os_error(err))
    } else {
        "the connection was reset".into()
    }
}

/// The reason of a failed network operation: OpenSSL's queue, else errno.
fn net_reason() -> String {
    let os = std::io::Error::last_os_error();
    let r = crate::exit::ssl_reason();
    if r == "unknown TLS error" {
        match os.raw_os_error() {
            Some(0) | None => "the connection was closed".into(),
            _ => crate::exit::io_text(&os),
        }
    } else {
        r
    }
}
