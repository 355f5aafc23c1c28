//! `stls::run`: the full-duplex relay between clear text and a TLS session.
//!
//! Each direction is one explicit state (`state::A2n` for the app's output towards the
//! network, `state::N2a` for the peer's data towards the app); `state` draws their
//! transitions and lists their invariants. This module does the I/O: it tries every
//! operation the states allow, reports the result through a transition, polls for what the
//! states wait for, and reports what poll saw through transitions again. Which descriptors
//! are open follows from the states, and so does the end of the relay.
//!
//! Invariants (see stls(7)):
//! - Every operation is tried until it would block; a blocked operation waits for poll to
//!   report its fd, so nothing is polled that is ready and nothing is retried blindly.
//! - OpenSSL is drained (`SSL_read` until it wants to read) whenever there is room: a record
//!   already inside OpenSSL never waits for the next network event.
//! - The engine follows the pipes, not the pid: it ends when the app's output reached EOF
//!   and was sent, and the peer's data was delivered or can no longer be.
//! - Bytes the app wrote are never dropped while the peer can still take them.

mod state;

use crate::fd;
use crate::http_host::Verdict;
use crate::tls::{Io, Tls};
use state::{A2n, N2a, Wait};
use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

/// The five fds: clear text in and out (the app's side), ciphertext in and out (the
/// network), and the selfpipe that receives SIGCHLD. A side may be one socket on both fds.
#[derive(Clone, Copy, Debug)]
pub struct Fds {
    /// What the app writes: read by the engine and sent to the peer.
    pub clear_in: RawFd,
    /// What the app reads: the peer's data, decrypted, written by the engine.
    pub clear_out: RawFd,
    /// The network's read side: ciphertext from the peer.
    pub cipher_in: RawFd,
    /// The network's write side: ciphertext to the peer (may be `cipher_in`, one socket).
    pub cipher_out: RawFd,
    /// The read end of the pipe SIGCHLD writes to; may be -1 when `run` gets no child.
    pub selfpipe: RawFd,
}

/// How the engine closes and times out a session (the wrappers' `-S`/`-s`, `-J`/`-j`,
/// `--idle-timeout`, and two fixed bounds).
#[derive(Clone, Debug)]
pub struct Config {
    /// At local EOF send close_notify before shutting down the network's write side (`-S`).
    pub close_notify: bool,
    /// A TCP EOF without close_notify is a truncation error (`-J`).
    pub enforce_close_notify: bool,
    /// No data either way for this long: close as at local EOF.
    pub idle_timeout: Option<Duration>,
    /// When the app has gone and our direction is closed, drain the network at most this
    /// long; also how long what is buffered still goes to the app after the peer's
    /// direction failed.
    pub linger: Duration,
    /// After an error, how long the child gets between closing its pipes, SIGTERM and SIGKILL.
    pub reap_grace: Duration,
    /// Hold the app's first bytes until an HTTP/1.x request among them is judged against a
    /// host (autossl-shim's tlsc); None: send from the first byte.
    pub hold: Option<Hold>,
}

/// The app's first request held for its host (see `state`'s `Holding`).
#[derive(Clone, Debug)]
pub struct Hold {
    /// The name the connection was made and verified for.
    pub host: String,
    /// Told the verdict once, before anything of it happens: `None` passed (or the app's
    /// output ended with nothing held), `Some(why)` refused.
    pub decided: fn(Option<&str>),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            close_notify: true,
            enforce_close_notify: false,
            idle_timeout: None,
            linger: Duration::from_secs(5),
            reap_grace: Duration::from_secs(1),
            hold: None,
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
    /// The peer rejected this side's certificate, or its absence, after the handshake had
    /// completed on this side (a TLS 1.3 server sends that verdict after the client's last
    /// flight): a failed handshake in the user's terms (exit 97).
    Rejected(String),
    /// A local system error (exit 111).
    System(String),
}

/// What `run` reports: how the relay ended and how the child did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How the relay ended.
    pub end: End,
    /// The child's wait status, if there was a child and it was reaped.
    pub child_status: Option<libc::c_int>,
    /// True when the idle timeout closed the session.
    pub idle_expired: bool,
}

/// The size of each of the engine's two buffers (app to network, network to app).
pub const BUF: usize = 64 * 1024;

/// One direction's bytes: read into `spare`, written from `pending`. Fresh pages, so
/// that an idle connection holds only the pages its data touched.
struct Buf {
    data: crate::pages::Pages,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: crate::pages::Pages::new(BUF),
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

fn wait_for(io: Io) -> Wait {
    match io {
        Io::WantRead => Wait::Read,
        Io::WantWrite => Wait::Write,
        _ => Wait::No,
    }
}

/// The app's process, as far as the engine knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Child {
    /// No child was given, or someone else reaped it (ECHILD): nothing to wait for.
    Absent,
    /// Not reaped yet.
    Running(libc::pid_t),
    /// Reaped, with its wait status.
    Reaped(libc::c_int),
}

impl Child {
    fn new(pid: Option<libc::pid_t>) -> Child {
        match pid {
            // waitpid and kill give 0 and negative pids a meaning (a process group) that
            // is never ours to wait for or signal.
            Some(pid) if pid > 0 => Child::Running(pid),
            _ => Child::Absent,
        }
    }

    fn alive(self) -> bool {
        matches!(self, Child::Running(_))
    }

    fn status(self) -> Option<libc::c_int> {
        match self {
            Child::Reaped(st) => Some(st),
            _ => None,
        }
    }

    /// Reap the child if it exited (`block`: wait until it does).
    fn reap(&mut self, block: bool) {
        let Child::Running(pid) = *self else {
            return;
        };
        let mut st = 0;
        loop {
            // SAFETY: waitpid only writes the status to `st`, a live local c_int.
            let r = unsafe { libc::waitpid(pid, &mut st, if block { 0 } else { libc::WNOHANG }) };
            if r == pid {
                *self = Child::Reaped(st);
                return;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if r < 0 {
                // ECHILD: someone else reaped it; nothing to report.
                *self = Child::Absent;
            }
            return;
        }
    }

    /// Send `sig` to the child if it is still running; true if it was sent.
    fn signal(self, sig: libc::c_int) -> bool {
        match self {
            // SAFETY: kill takes plain integers; `pid` is our unreaped child (positive),
            // so the number cannot have been reused by another process.
            Child::Running(pid) => unsafe { libc::kill(pid, sig) == 0 },
            _ => false,
        }
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
/// ignored and SIGCHLD must write to the selfpipe (see `child::Selfpipe`). `child` is the
/// app's pid, reaped whenever it exits and waited for at the end.
pub fn run(tls: &mut Tls, fds: Fds, child: Option<libc::pid_t>, cfg: &Config) -> Outcome {
    run_sending(tls, fds, child, cfg, &[])
}

/// [`run`], with `first` (at most [`BUF`] bytes, already read from the app) sent before
/// anything the app writes from now on; `cfg.hold` does not apply to them.
pub fn run_sending(
    tls: &mut Tls,
    fds: Fds,
    child: Option<libc::pid_t>,
    cfg: &Config,
    first: &[u8],
) -> Outcome {
    let mut a2n_buf = Buf::new();
    let n = first.len().min(BUF);
    a2n_buf.spare()[..n].copy_from_slice(&first[..n]);
    a2n_buf.end = n;
    let mut e = Engine {
        fds,
        cfg,
        child: Child::new(child),
        a2n: A2n::new(cfg.hold.is_some() && first.is_empty()),
        n2a: N2a::new(),
        a2n_buf,
        n2a_buf: Buf::new(),
        last_activity: Instant::now(),
        idle_expired: false,
        rejected: None,
    };
    let end = e.relay(tls);
    e.finish(end)
}

struct Engine<'a> {
    fds: Fds,
    cfg: &'a Config,
    child: Child,
    /// The app's output towards the network; clear_in is open exactly while it is `Open`.
    a2n: A2n,
    /// The peer's data towards the app; clear_out is open exactly while it `delivers`.
    n2a: N2a,
    /// Read from the app, not yet taken by `SSL_write`.
    a2n_buf: Buf,
    /// Decrypted, not yet written to the app; when discarding, the place reads drop into.
    n2a_buf: Buf,
    last_activity: Instant,
    /// The idle timeout fired (it fires once).
    idle_expired: bool,
    /// The peer's verdict on this side's certificate, when a failure of the relay was that.
    rejected: Option<String>,
}

/// What one poll reported, for `Engine::on_events`.
#[derive(Clone, Copy, Debug, Default)]
struct Events {
    /// The selfpipe is readable: SIGCHLD arrived.
    child: bool,
    /// clear_in is readable (or in error: the next read tells).
    app_readable: bool,
    /// clear_out is writable.
    app_writable: bool,
    /// clear_out reported POLLERR or POLLHUP: the app stopped reading.
    app_hangup: bool,
    /// cipher_in, watched while not read, reported POLLERR: a reset.
    net_error: bool,
    /// cipher_in, watched while not read, reported POLLHUP alone.
    net_hup: bool,
    /// cipher_in is ready for a call that waits to read.
    net_readable: bool,
    /// cipher_out is ready for a call that waits to write.
    net_writable: bool,
}

impl Engine<'_> {
    /// The reason of a failed network operation: OpenSSL's queue, else errno.
    fn net_reason(&mut self) -> String {
        let os = std::io::Error::last_os_error();
        let (r, verdict) = crate::exit::ssl_failure();
        if verdict && self.rejected.is_none() {
            self.rejected = Some(r.clone());
        }
        if r == "unknown TLS error" {
            match os.raw_os_error() {
                Some(0) | None => "the connection was closed".into(),
                _ => crate::exit::io_text(&os),
            }
        } else {
            r
        }
    }

    fn relay(&mut self, tls: &mut Tls) -> End {
        loop {
            self.progress(tls);
            if let Some(why) = self.n2a.failure(self.n2a_buf.is_empty(), Instant::now) {
                return match &self.rejected {
                    Some(verdict) => End::Rejected(format!("handshake failed: {verdict}")),
                    None => End::Tls(why.to_string()),
                };
            }
            if state::done(self.a2n, &self.n2a, Instant::now) {
                return End::Clean;
            }
            match self.poll() {
                Ok(ev) => self.on_events(ev),
                Err(end) => return end,
            }
        }
    }

    /// Move our direction to `next`; leaving `Open` closes clear_in, the one place it is
    /// closed during the relay.
    fn set_a2n(&mut self, next: A2n) {
        if self.a2n.reads_app() && !next.reads_app() {
            fd::close(self.fds.clear_in);
        }
        self.a2n = next;
    }

    /// The app's output ended (EOF, a read error, the idle timeout). Only the idle timeout
    /// can leave bytes in the buffer (the app is read only when it is empty); they are
    /// dropped, as the session is being closed.
    fn app_eof(&mut self) {
        if let (true, Some(hold)) = (self.a2n.holds(), &self.cfg.hold) {
            (hold.decided)(None);
        }
        self.a2n_buf.clear();
        self.set_a2n(self.a2n.on_app_eof(self.cfg.close_notify));
    }

    /// Move the peer's direction on with `f`. When it stops delivering, the buffer is dropped
    /// and clear_out closed, here only during the relay (`eof`: the app is to read an EOF,
    /// so a socket is shut down for writing first: closing one of its two fds alone would
    /// send nothing).
    fn set_n2a(&mut self, f: impl FnOnce(N2a) -> N2a, eof: bool) {
        let was_delivering = self.n2a.delivers();
        self.n2a = f(std::mem::replace(&mut self.n2a, N2a::Done));
        if was_delivering && !self.n2a.delivers() {
            self.n2a_buf.clear();
            if !(eof && fd::shut_write(self.fds.clear_out)) {
                fd::close(self.fds.clear_out);
            }
        }
    }

    /// The peer's direction failed with `why`: see `N2a::FailedUntilDrained`.
    fn fail_net(&mut self, why: String) {
        let until = Instant::now() + self.cfg.linger;
        self.set_n2a(|s| s.on_failure(until, why), false);
    }

    fn app_stopped_reading(&mut self) {
        self.set_n2a(N2a::on_app_stopped_reading, false);
    }

    /// The verdict on the held bytes (`eof`: the app's output ends after them). A pass
    /// releases them; a refusal drops them, sends nothing more, and fails the relay.
    fn judge(&mut self, eof: bool) {
        let Some(hold) = &self.cfg.hold else {
            self.a2n = self.a2n.on_passed();
            return;
        };
        let verdict = crate::http_host::judge(&hold.host, self.a2n_buf.pending(), eof);
        let why = match verdict {
            Verdict::Pass => {
                (hold.decided)(None);
                self.a2n = self.a2n.on_passed();
                return;
            }
            Verdict::More if self.a2n_buf.end < BUF => return,
            Verdict::More => "the request head does not end within 64 KiB".to_string(),
            Verdict::Refuse(why) => why,
        };
        (hold.decided)(Some(&why));
        self.a2n_buf.clear();
        self.set_a2n(self.a2n.on_refused());
        self.fail_net(why);
    }

    /// Do everything that can be done without blocking.
    fn progress(&mut self, tls: &mut Tls) {
        loop {
            let mut moved = false;

            // App -> buffer (while holding, into the room left).
            let room = if self.a2n.holds() {
                self.a2n_buf.end < BUF
            } else {
                self.a2n_buf.is_empty()
            };
            if self.a2n.may_read_app() && room {
                match fd::read(self.fds.clear_in, self.a2n_buf.spare()) {
                    Ok(0) if self.a2n.holds() && !self.a2n_buf.is_empty() => self.judge(true),
                    Ok(0) => self.app_eof(),
                    Ok(n) => {
                        self.a2n_buf.end += n;
                        self.last_activity = Instant::now();
                        if self.a2n.holds() {
                            self.judge(false);
                        }
                    }
                    Err(e) if fd::would_block(&e) => self.a2n = self.a2n.on_app_blocked(),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // A reset on a clear-side socket ends the app's output like an EOF.
                    Err(_) => self.app_eof(),
                }
                moved = true;
            }

            // Buffer -> TLS.
            if !self.a2n_buf.is_empty() && self.a2n.may_send() {
                match tls.write(self.a2n_buf.pending()) {
                    Io::Done(n) => {
                        self.a2n_buf.consume(n);
                        moved = true;
                    }
                    io @ (Io::WantRead | Io::WantWrite) => {
                        self.a2n = self.a2n.on_send_blocked(wait_for(io));
                    }
                    // Nothing more can reach the peer; what it sent still goes to the app.
                    // Our direction ends without close_notify (the block below shuts the
                    // network's write side).
                    _ => {
                        let why = self.net_reason();
                        self.fail_net(format!("unable to send to the peer: {why}"));
                        self.a2n_buf.clear();
                        self.set_a2n(self.a2n.on_send_failed());
                        moved = true;
                    }
                }
            }

            // App EOF, all sent: close our direction.
            if self.a2n.may_send_close_notify() {
                match tls.shutdown() {
                    io @ (Io::WantRead | Io::WantWrite) => {
                        self.a2n = self.a2n.on_close_notify_blocked(wait_for(io));
                    }
                    Io::Done(_) => self.a2n = self.a2n.on_close_notify_done(),
                    // The peer is gone: nothing more to send. If its direction was still
                    // open, the reset cut it short; the kernel reports the error only once,
                    // so the next read would take it for a FIN.
                    _ => {
                        let why = self.net_reason();
                        self.a2n = self.a2n.on_close_notify_done();
                        if self.n2a.is_open() {
                            self.fail_net(format!("unable to send close_notify: {why}"));
                        }
                    }
                }
            }
            if self.a2n == A2n::Flushed {
                let closed = fd::shut_write(self.fds.cipher_out);
                self.a2n = self.a2n.on_shut(closed);
                moved = true;
            }

            // TLS -> buffer (or discarded when the app stopped reading).
            if self.n2a.may_read_net(self.n2a_buf.end < BUF) {
                // When discarding the buffer is empty for good: it serves as the discard area.
                match tls.read(self.n2a_buf.spare()) {
                    Io::Done(n) => {
                        if self.n2a.keeps_data() {
                            self.n2a_buf.end += n;
                        }
                        self.last_activity = Instant::now();
                        moved = true;
                    }
                    Io::Closed => {
                        self.set_n2a(N2a::on_peer_eof, false);
                        moved = true;
                    }
                    Io::Truncated if !self.cfg.enforce_close_notify => {
                        self.set_n2a(N2a::on_peer_eof, false);
                        moved = true;
                    }
                    Io::Truncated => {
                        self.fail_net(
                            "the peer closed the connection without close_notify (truncation)"
                                .into(),
                        );
                        moved = true;
                    }
                    io @ (Io::WantRead | Io::WantWrite) => {
                        let w = wait_for(io);
                        self.set_n2a(|s| s.on_read_blocked(w), false);
                    }
                    Io::Error => {
                        // Our side is closed and the app gone: a reset now loses nothing.
                        if self.a2n.is_shut() && self.n2a.is_discarding() {
                            let _ = self.net_reason();
                            self.set_n2a(N2a::on_peer_eof, false);
                        } else {
                            let why = self.net_reason();
                            self.fail_net(format!("unable to receive from the peer: {why}"));
                        }
                        moved = true;
                    }
                }
            }

            // Buffer -> app.
            if !self.n2a_buf.is_empty() && !self.n2a.out_blocked() {
                match fd::write(self.fds.clear_out, self.n2a_buf.pending()) {
                    Ok(n) => {
                        self.n2a_buf.consume(n);
                        moved = true;
                    }
                    Err(e) if fd::would_block(&e) => self.set_n2a(N2a::on_out_blocked, false),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.app_stopped_reading();
                        moved = true;
                    }
                }
            }

            // Peer EOF, all delivered: EOF to the app.
            if matches!(self.n2a, N2a::Eof { .. }) && self.n2a_buf.is_empty() {
                self.set_n2a(N2a::on_delivered, true);
                moved = true;
            }

            if self.a2n.is_shut() && self.n2a.wants_linger() {
                let until = Instant::now() + self.cfg.linger;
                self.set_n2a(|s| s.on_linger(until), false);
            }

            if !moved {
                return;
            }
        }
    }

    /// Poll for whatever the states wait for and report what poll saw. Changes nothing.
    fn poll(&self) -> Result<Events, End> {
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
        if self.a2n.app_blocked() && (self.a2n_buf.is_empty() || self.a2n.holds()) {
            p[CIN] = pfd(self.fds.clear_in, libc::POLLIN);
        }
        if self.n2a.delivers() {
            // Polled even with nothing to write: POLLERR/POLLHUP say the app stopped reading.
            let ev = if !self.n2a_buf.is_empty() && self.n2a.out_blocked() {
                libc::POLLOUT
            } else {
                0
            };
            p[COUT] = pfd(self.fds.clear_out, ev);
        }
        let waits = [self.a2n.wait(), self.n2a.wait()];
        if waits.contains(&Wait::Read) {
            p[NIN] = pfd(self.fds.cipher_in, libc::POLLIN);
        } else if self.n2a.watches_net() {
            // Not reading (the app's pipe is full): still watch for a reset, which would
            // otherwise go unnoticed for as long as the app does not read.
            p[NIN] = pfd(self.fds.cipher_in, 0);
        }
        if waits.contains(&Wait::Write) {
            p[NOUT] = pfd(self.fds.cipher_out, libc::POLLOUT);
        }

        let mut deadline = self.n2a.deadline();
        if let Some(idle) = self.cfg.idle_timeout {
            if !self.idle_expired {
                let d = self.last_activity + idle;
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        }
        if p.iter().all(|x| x.fd < 0) && deadline.is_none() {
            // Nothing can change any more: a state the relay should never reach.
            return Err(End::System("internal error: nothing to wait for".into()));
        }
        if let Err(e) = fd::poll(&mut p, fd::poll_timeout(deadline)) {
            return Err(End::System(format!(
                "unable to poll: {}",
                crate::exit::io_text(&e)
            )));
        }
        let ready = |i: usize| p[i].fd >= 0 && p[i].revents != 0;
        let hangup = libc::POLLERR | libc::POLLHUP;
        let watched = ready(NIN) && p[NIN].events == 0;
        Ok(Events {
            child: ready(SELF),
            app_readable: ready(CIN),
            app_writable: ready(COUT) && p[COUT].revents & hangup == 0,
            app_hangup: ready(COUT) && p[COUT].revents & hangup != 0,
            net_error: watched && p[NIN].revents & libc::POLLERR != 0,
            net_hup: watched && p[NIN].revents & libc::POLLERR == 0,
            net_readable: ready(NIN),
            net_writable: ready(NOUT),
        })
    }

    /// Take what poll reported (and the idle timeout) through the states' transitions.
    fn on_events(&mut self, ev: Events) {
        if let Some(idle) = self.cfg.idle_timeout {
            if !self.idle_expired && Instant::now() >= self.last_activity + idle {
                // Idle: close as at local EOF, and stop the app's input too.
                self.idle_expired = true;
                self.app_eof();
                self.app_stopped_reading();
            }
        }
        if ev.child {
            drain_selfpipe(self.fds.selfpipe);
            self.child.reap(false);
        }
        if ev.app_readable {
            self.a2n = self.a2n.on_app_ready();
        }
        if ev.app_hangup {
            self.app_stopped_reading();
        } else if ev.app_writable {
            self.set_n2a(N2a::on_out_ready, false);
        }
        if ev.net_error {
            let why = socket_error(self.fds.cipher_in);
            self.fail_net(format!("the connection to the peer failed: {why}"));
        } else if ev.net_hup {
            // POLLHUP alone (a pipe's writer closed, or FIN after our SHUT_WR): an EOF
            // that the next read will see in order.
            self.set_n2a(N2a::on_net_hup, false);
        }
        for (ready, w) in [
            (ev.net_readable, Wait::Read),
            (ev.net_writable, Wait::Write),
        ] {
            if ready {
                self.a2n = self.a2n.on_net_ready(w);
                self.set_n2a(|s| s.on_net_ready(w), false);
            }
        }
    }

    /// Close what is left, reap the child (bounded after an error), report.
    fn finish(mut self, end: End) -> Outcome {
        let clean = end == End::Clean;
        if self.a2n.reads_app() {
            fd::close(self.fds.clear_in);
        }
        if self.n2a.delivers() {
            fd::close(self.fds.clear_out);
        }
        let cipher_out_closed = match self.a2n {
            A2n::Shut { cipher_out_closed } => cipher_out_closed,
            _ => fd::shut_write(self.fds.cipher_out),
        };
        fd::close(self.fds.cipher_in);
        if self.fds.cipher_out != self.fds.cipher_in && !cipher_out_closed {
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
            child_status: self.child.status(),
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
        self.child.signal(libc::SIGTERM);
        if self.wait_child(Some(Instant::now() + grace)) {
            return;
        }
        if self.child.signal(libc::SIGKILL) {
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
    // SAFETY: getsockopt writes at most `len` bytes (the size of `err`) to `err` and the
    // length to `len`, both live locals.
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
