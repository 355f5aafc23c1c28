//! The engine's two directions as explicit states, and their transitions as pure functions.
//!
//! Nothing here touches a descriptor: a transition takes a state and an event and returns the
//! next state. The engine (`super`) performs the I/O, reports what happened through these
//! functions, and derives from the states which descriptors are still open, what to poll for
//! and when the relay is over. The states hold the data buffers' control, not the buffers.
//!
//! # App to network (`A2n`)
//!
//! ```text
//!          app EOF, read error,           close_notify written,
//!          idle timeout (-S)              or SSL_shutdown failed
//!  +------+ ------------> +--------------------+ ------------> +---------+
//!  | Open |               | SendingCloseNotify |               | Flushed |
//!  +------+               +--------------------+               +---------+
//!    |  |  app EOF, read error, idle timeout (-s),               ^    |
//!    |  |  or SSL_write failed                                   |    | SHUT_WR
//!    |  +--------------------------------------------------------+    v
//!    |                                                             +------+
//!    +--> Open: bytes read and sent, a call would block            | Shut |
//!                                                                  +------+
//! ```
//!
//! With a first request to judge, the direction starts one step earlier:
//!
//! ```text
//!  +---------+  the first bytes passed              +------+
//!  | Holding | -----------------------------------> | Open |
//!  +---------+                                      +------+
//!    |  |  the first bytes refused: nothing sent,   +---------+
//!    |  +-----------------------------------------> | Flushed |
//!    |     no close_notify                          +---------+
//!    +--> app EOF with nothing held, read error, idle timeout: as from Open
//! ```
//!
//! `Holding` is the start only when the engine is given a host to hold the first request
//! for (`Config::hold`): the app's first bytes are read and kept until
//! `http_host::judge` passes them (not HTTP/1.x, or a request for that host) or refuses
//! them (another host: nothing is sent and the relay fails).
//!
//! Invariants:
//! - clear_in is open exactly while the state is `Holding` or `Open`; leaving them closes it.
//! - Nothing is sent while `Holding`: `SSL_write` is tried only in `Open`.
//! - In `Open` the app's bytes are read only when the buffer is empty, so the app's EOF is
//!   always seen with nothing of its output left unsent: there is no state "EOF with data
//!   still to send". In `Holding` the app is read into the buffer's spare room; an EOF there
//!   with bytes held is judged, and a pass leaves the EOF to be read again in `Open` (pipes
//!   and sockets repeat it).
//! - A pending `SSL_write` wait (`Open::send`) implies bytes in the buffer: OpenSSL wants the
//!   same bytes again.
//! - `Flushed` never survives a pass of the engine's progress loop: the network's write side
//!   is shut in the same pass, so poll never sees it.
//! - `Shut` is final; the engine ends our direction once, in one place.
//!
//! # Network to app (`N2a`)
//!
//! ```text
//!          close_notify,               all delivered: EOF to the app,
//!          TCP EOF (-j)                or the app stopped reading
//!  +------+ ---------> +-----+ -----------------------------------> +------+
//!  | Open |            | Eof |                                      | Done |
//!  +------+            +-----+                                      +------+
//!    |  |                 | failed send                               ^   |
//!    |  | reset,          |                                           |   |
//!    |  | truncation (-J),|                                           |   |
//!    |  | failed close_   v                                           |   |
//!    |  | notify or +--------------------+                            |   |
//!    |  +---------> | FailedUntilDrained | drained or past the        |   |
//!    |     send     +--------------------+ deadline: the error        |   |
//!    |                    | app stopped reading                       |   | failed
//!    |                    v                                           |   | send
//!    |                +--------+ <------------------------------------|---+
//!    |                | Failed |  the error at once                   |
//!    |                +--------+                                      |
//!    |                    ^ truncation (-J), a reset before our       |
//!    | app stopped        | side is Shut, failed send                 |
//!    | reading      +------------+ close_notify, TCP EOF, a reset     |
//!    +------------> | Discarding | once our side is Shut -------------+
//!                   +------------+ (past the linger: counts as done)
//! ```
//!
//! Invariants:
//! - clear_out is open exactly in `Open`, `Eof` and `FailedUntilDrained`; the buffer holds
//!   bytes only in these states (leaving them empties it).
//! - The network is read only in `Open` and `Discarding`; in `Discarding` what is read is
//!   dropped.
//! - A failure is never replaced by a clean end: from `FailedUntilDrained` and `Failed` only
//!   `Failed` follows, and the first reason is kept.
//! - `Discarding` has a linger deadline once our direction is `Shut`; after it, the
//!   direction counts as done.
//!
//! The relay is done (`done`) when our direction is `Shut` and the peer's is `Done`, or
//! `Discarding` past its linger deadline. A failed peer direction ends the relay with its
//! error, checked before `done`.

use std::time::Instant;

/// Which network readiness a blocked OpenSSL call waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wait {
    /// Not blocked: the call is tried again.
    No,
    /// Retry once cipher_in is readable.
    Read,
    /// Retry once cipher_out is writable.
    Write,
}

impl Wait {
    /// The wait left after the network reported `ready`: a matching wait is over.
    fn after(self, ready: Wait) -> Wait {
        if self == ready {
            Wait::No
        } else {
            self
        }
    }
}

/// The app-to-network direction. See the module documentation for the diagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum A2n {
    /// The app's first bytes are read and held for the verdict on them; nothing is sent.
    /// `app_blocked`: as in `Open`.
    Holding { app_blocked: bool },
    /// The app's output is read and sent. `app_blocked`: its last read would block, so it is
    /// read again once poll says so. `send`: what the pending `SSL_write` waits for.
    Open { app_blocked: bool, send: Wait },
    /// The app's output ended; close_notify is being written. `wait`: what the pending
    /// `SSL_shutdown` waits for.
    SendingCloseNotify { wait: Wait },
    /// Nothing is left to send: the network's write side is shut next.
    Flushed,
    /// The network's write side is shut. `cipher_out_closed`: `shut_write` closed the fd (a
    /// pipe) rather than shutting a socket down, so it must not be closed again.
    Shut { cipher_out_closed: bool },
}

impl A2n {
    /// The state at the start of the relay: `Holding` when the first bytes wait for a
    /// verdict.
    pub(crate) fn new(hold: bool) -> A2n {
        if hold {
            A2n::Holding { app_blocked: false }
        } else {
            A2n::Open {
                app_blocked: false,
                send: Wait::No,
            }
        }
    }

    /// Whether clear_in is open (and read).
    pub(crate) fn reads_app(self) -> bool {
        matches!(self, A2n::Open { .. } | A2n::Holding { .. })
    }

    /// Whether the app's first bytes are being held.
    pub(crate) fn holds(self) -> bool {
        matches!(self, A2n::Holding { .. })
    }

    /// Whether the app's output should be read now (given an empty buffer, or while
    /// holding).
    pub(crate) fn may_read_app(self) -> bool {
        matches!(
            self,
            A2n::Open {
                app_blocked: false,
                ..
            } | A2n::Holding { app_blocked: false }
        )
    }

    /// Whether the app's read waits for poll.
    pub(crate) fn app_blocked(self) -> bool {
        matches!(
            self,
            A2n::Open {
                app_blocked: true,
                ..
            } | A2n::Holding { app_blocked: true }
        )
    }

    /// Whether `SSL_write` may be tried (given bytes in the buffer).
    pub(crate) fn may_send(self) -> bool {
        matches!(self, A2n::Open { send: Wait::No, .. })
    }

    /// Whether `SSL_shutdown` should be tried now.
    pub(crate) fn may_send_close_notify(self) -> bool {
        matches!(self, A2n::SendingCloseNotify { wait: Wait::No })
    }

    /// What the direction's pending OpenSSL call waits for.
    pub(crate) fn wait(self) -> Wait {
        match self {
            A2n::Open { send, .. } => send,
            A2n::SendingCloseNotify { wait } => wait,
            A2n::Holding { .. } | A2n::Flushed | A2n::Shut { .. } => Wait::No,
        }
    }

    /// Whether our direction of the network is shut.
    pub(crate) fn is_shut(self) -> bool {
        matches!(self, A2n::Shut { .. })
    }

    /// The app's read would block.
    pub(crate) fn on_app_blocked(self) -> A2n {
        match self {
            A2n::Open { send, .. } => A2n::Open {
                app_blocked: true,
                send,
            },
            A2n::Holding { .. } => A2n::Holding { app_blocked: true },
            s => s,
        }
    }

    /// Poll reported clear_in readable (or in error: the next read says which).
    pub(crate) fn on_app_ready(self) -> A2n {
        match self {
            A2n::Open { send, .. } => A2n::Open {
                app_blocked: false,
                send,
            },
            A2n::Holding { .. } => A2n::Holding { app_blocked: false },
            s => s,
        }
    }

    /// The held bytes passed: they are sent as any others from now on.
    pub(crate) fn on_passed(self) -> A2n {
        match self {
            A2n::Holding { app_blocked } => A2n::Open {
                app_blocked,
                send: Wait::No,
            },
            s => s,
        }
    }

    /// The held bytes were refused: nothing of them, and no close_notify, is sent.
    pub(crate) fn on_refused(self) -> A2n {
        match self {
            A2n::Holding { .. } => A2n::Flushed,
            s => s,
        }
    }

    /// `SSL_write` would block on `w`.
    pub(crate) fn on_send_blocked(self, w: Wait) -> A2n {
        match self {
            A2n::Open { app_blocked, .. } => A2n::Open {
                app_blocked,
                send: w,
            },
            s => s,
        }
    }

    /// The app's output ended: EOF, a read error (a reset on a clear-side socket), or the
    /// idle timeout. The buffer is empty (or has just been emptied). With `close_notify`
    /// (`-S`) close_notify is written first.
    pub(crate) fn on_app_eof(self, close_notify: bool) -> A2n {
        match self {
            A2n::Open { .. } | A2n::Holding { .. } if close_notify => {
                A2n::SendingCloseNotify { wait: Wait::No }
            }
            A2n::Open { .. } | A2n::Holding { .. } => A2n::Flushed,
            s => s,
        }
    }

    /// `SSL_write` failed: nothing more can reach the peer, close_notify included.
    pub(crate) fn on_send_failed(self) -> A2n {
        match self {
            A2n::Open { .. } | A2n::SendingCloseNotify { .. } => A2n::Flushed,
            s => s,
        }
    }

    /// `SSL_shutdown` would block on `w`.
    pub(crate) fn on_close_notify_blocked(self, w: Wait) -> A2n {
        match self {
            A2n::SendingCloseNotify { .. } => A2n::SendingCloseNotify { wait: w },
            s => s,
        }
    }

    /// `SSL_shutdown` is over: close_notify was written, or it failed and nothing more can
    /// be written. Either way nothing is left to send.
    pub(crate) fn on_close_notify_done(self) -> A2n {
        match self {
            A2n::SendingCloseNotify { .. } => A2n::Flushed,
            s => s,
        }
    }

    /// The network's write side was shut (`cipher_out_closed`: by closing the fd).
    pub(crate) fn on_shut(self, cipher_out_closed: bool) -> A2n {
        match self {
            A2n::Flushed => A2n::Shut { cipher_out_closed },
            s => s,
        }
    }

    /// Poll reported the network ready for `ready`: a call waiting for it may be retried.
    pub(crate) fn on_net_ready(self, ready: Wait) -> A2n {
        match self {
            A2n::Open { app_blocked, send } => A2n::Open {
                app_blocked,
                send: send.after(ready),
            },
            A2n::SendingCloseNotify { wait } => A2n::SendingCloseNotify {
                wait: wait.after(ready),
            },
            s => s,
        }
    }
}

/// The network-to-app direction. See the module documentation for the diagram.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum N2a {
    /// The network is read and what arrives is delivered. `read`: what the pending `SSL_read`
    /// waits for. `hup_seen`: cipher_in reported POLLHUP while it was not read, so it is no
    /// longer watched for errors (poll would return at once forever). `out_blocked`: the
    /// last write to clear_out would block.
    Open {
        read: Wait,
        hup_seen: bool,
        out_blocked: bool,
    },
    /// The peer's direction ended (close_notify, or an accepted TCP EOF); what is buffered is
    /// delivered, then the app gets its EOF.
    Eof { out_blocked: bool },
    /// The peer's direction failed (a reset, a truncation under -J, a failed send). Nothing
    /// more is read; what is buffered goes to the app until `until`, then the relay ends
    /// with `why`, never with a clean EOF the app could mistake for the end.
    FailedUntilDrained {
        until: Instant,
        why: String,
        out_blocked: bool,
    },
    /// The app stopped reading: clear_out is closed, and what the peer sends is read and
    /// dropped, since closing a socket with unread data would reset it. `linger`: set once
    /// our direction is shut; past it the direction counts as done.
    Discarding {
        read: Wait,
        hup_seen: bool,
        linger: Option<Instant>,
    },
    /// The peer's direction failed with nothing left to deliver: the relay ends with `why`.
    Failed { why: String },
    /// The peer's direction ended and the app has its EOF (or stopped reading after it).
    Done,
}

impl N2a {
    /// The state at the start of the relay.
    pub(crate) fn new() -> N2a {
        N2a::Open {
            read: Wait::No,
            hup_seen: false,
            out_blocked: false,
        }
    }

    /// Whether clear_out is open (and written to).
    pub(crate) fn delivers(&self) -> bool {
        matches!(
            self,
            N2a::Open { .. } | N2a::Eof { .. } | N2a::FailedUntilDrained { .. }
        )
    }

    /// Whether clear_out waits for poll to say it is writable.
    pub(crate) fn out_blocked(&self) -> bool {
        match self {
            N2a::Open { out_blocked, .. }
            | N2a::Eof { out_blocked }
            | N2a::FailedUntilDrained { out_blocked, .. } => *out_blocked,
            _ => false,
        }
    }

    /// Whether `SSL_read` should be tried now; `room`: the buffer has space at its end
    /// (ignored when discarding: the buffer is then only a place to drop bytes into).
    pub(crate) fn may_read_net(&self, room: bool) -> bool {
        match self {
            N2a::Open { read, .. } => *read == Wait::No && room,
            N2a::Discarding { read, .. } => *read == Wait::No,
            _ => false,
        }
    }

    /// Whether what is read is kept for the app (else it is dropped).
    pub(crate) fn keeps_data(&self) -> bool {
        matches!(self, N2a::Open { .. })
    }

    /// What the pending `SSL_read` waits for.
    pub(crate) fn wait(&self) -> Wait {
        match self {
            N2a::Open { read, .. } | N2a::Discarding { read, .. } => *read,
            _ => Wait::No,
        }
    }

    /// Whether cipher_in is watched for an error while it is not read: the peer's direction
    /// is still open and no POLLHUP was seen.
    pub(crate) fn watches_net(&self) -> bool {
        matches!(
            self,
            N2a::Open {
                hup_seen: false,
                ..
            } | N2a::Discarding {
                hup_seen: false,
                ..
            }
        )
    }

    /// Whether the peer's direction is still open and its data reaches the app: a failure
    /// now would cut the data short.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self, N2a::Open { .. })
    }

    /// Whether the app stopped reading while the peer's direction was still open.
    pub(crate) fn is_discarding(&self) -> bool {
        matches!(self, N2a::Discarding { .. })
    }

    /// A deadline for poll: the end of the linger, or of the delivery after a failure.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            N2a::Discarding { linger, .. } => *linger,
            N2a::FailedUntilDrained { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// The error that ends the relay now, if any. `drained`: the buffer is empty; `now` is
    /// asked for only when a deadline decides.
    pub(crate) fn failure(&self, drained: bool, now: impl FnOnce() -> Instant) -> Option<&str> {
        match self {
            N2a::Failed { why } => Some(why),
            N2a::FailedUntilDrained { until, why, .. } if drained || now() >= *until => Some(why),
            _ => None,
        }
    }

    /// Whether the direction is over for a clean end; `now` is asked for only in a linger.
    pub(crate) fn is_done(&self, now: impl FnOnce() -> Instant) -> bool {
        match self {
            N2a::Done => true,
            N2a::Discarding {
                linger: Some(d), ..
            } => now() >= *d,
            _ => false,
        }
    }

    /// `SSL_read` would block on `w`.
    pub(crate) fn on_read_blocked(self, w: Wait) -> N2a {
        match self {
            N2a::Open {
                hup_seen,
                out_blocked,
                ..
            } => N2a::Open {
                read: w,
                hup_seen,
                out_blocked,
            },
            N2a::Discarding {
                hup_seen, linger, ..
            } => N2a::Discarding {
                read: w,
                hup_seen,
                linger,
            },
            s => s,
        }
    }

    /// The peer's direction ended: close_notify, a TCP EOF that is not a truncation, or a
    /// reset once nothing can be lost by it.
    pub(crate) fn on_peer_eof(self) -> N2a {
        match self {
            N2a::Open { out_blocked, .. } => N2a::Eof { out_blocked },
            N2a::Discarding { .. } => N2a::Done,
            s => s,
        }
    }

    /// Everything buffered was delivered and the app got its EOF.
    pub(crate) fn on_delivered(self) -> N2a {
        match self {
            N2a::Eof { .. } => N2a::Done,
            s => s,
        }
    }

    /// The peer's direction failed with `why`; what is buffered may still be delivered
    /// until `until`. A failure already recorded keeps its reason.
    pub(crate) fn on_failure(self, until: Instant, why: String) -> N2a {
        match self {
            N2a::Open { out_blocked, .. } | N2a::Eof { out_blocked } => N2a::FailedUntilDrained {
                until,
                why,
                out_blocked,
            },
            N2a::Discarding { .. } | N2a::Done => N2a::Failed { why },
            s @ (N2a::FailedUntilDrained { .. } | N2a::Failed { .. }) => s,
        }
    }

    /// The app stopped reading (EPIPE, POLLERR or POLLHUP on clear_out, the idle timeout):
    /// clear_out is closed and the buffer dropped.
    pub(crate) fn on_app_stopped_reading(self) -> N2a {
        match self {
            N2a::Open { read, hup_seen, .. } => N2a::Discarding {
                read,
                hup_seen,
                linger: None,
            },
            N2a::Eof { .. } => N2a::Done,
            N2a::FailedUntilDrained { why, .. } => N2a::Failed { why },
            s => s,
        }
    }

    /// A write to clear_out would block.
    pub(crate) fn on_out_blocked(self) -> N2a {
        self.with_out_blocked(true)
    }

    /// Poll reported clear_out writable.
    pub(crate) fn on_out_ready(self) -> N2a {
        self.with_out_blocked(false)
    }

    fn with_out_blocked(self, blocked: bool) -> N2a {
        match self {
            N2a::Open { read, hup_seen, .. } => N2a::Open {
                read,
                hup_seen,
                out_blocked: blocked,
            },
            N2a::Eof { .. } => N2a::Eof {
                out_blocked: blocked,
            },
            N2a::FailedUntilDrained { until, why, .. } => N2a::FailedUntilDrained {
                until,
                why,
                out_blocked: blocked,
            },
            s => s,
        }
    }

    /// cipher_in reported POLLHUP alone while it was not read: an EOF the next read will
    /// see in order; it is no longer watched.
    pub(crate) fn on_net_hup(self) -> N2a {
        match self {
            N2a::Open {
                read, out_blocked, ..
            } => N2a::Open {
                read,
                hup_seen: true,
                out_blocked,
            },
            N2a::Discarding { read, linger, .. } => N2a::Discarding {
                read,
                hup_seen: true,
                linger,
            },
            s => s,
        }
    }

    /// Poll reported the network ready for `ready`: a read waiting for it may be retried.
    pub(crate) fn on_net_ready(self, ready: Wait) -> N2a {
        match self {
            N2a::Open {
                read,
                hup_seen,
                out_blocked,
            } => N2a::Open {
                read: read.after(ready),
                hup_seen,
                out_blocked,
            },
            N2a::Discarding {
                read,
                hup_seen,
                linger,
            } => N2a::Discarding {
                read: read.after(ready),
                hup_seen,
                linger,
            },
            s => s,
        }
    }

    /// Our direction is shut while the app is not reading: discard at most until `deadline`.
    /// A linger already running keeps its deadline.
    pub(crate) fn on_linger(self, deadline: Instant) -> N2a {
        match self {
            N2a::Discarding {
                read,
                hup_seen,
                linger: None,
            } => N2a::Discarding {
                read,
                hup_seen,
                linger: Some(deadline),
            },
            s => s,
        }
    }

    /// Whether a linger should start: the app is not reading and none is running.
    pub(crate) fn wants_linger(&self) -> bool {
        matches!(self, N2a::Discarding { linger: None, .. })
    }
}

/// Whether the relay ended cleanly: our direction is shut and the peer's is over.
pub(crate) fn done(a2n: A2n, n2a: &N2a, now: impl FnOnce() -> Instant) -> bool {
    a2n.is_shut() && n2a.is_done(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a2n_app_eof_with_close_notify_goes_through_sending() {
        let s = A2n::new(false).on_app_eof(true);
        assert_eq!(s, A2n::SendingCloseNotify { wait: Wait::No });
        assert!(!s.reads_app() && s.may_send_close_notify());
        let s = s.on_close_notify_blocked(Wait::Read);
        assert!(!s.may_send_close_notify());
        assert_eq!(s.wait(), Wait::Read);
        // A write readiness does not end a read wait; a read readiness does.
        assert_eq!(s.on_net_ready(Wait::Write), s);
        let s = s.on_net_ready(Wait::Read);
        assert!(s.may_send_close_notify());
        let s = s.on_close_notify_done();
        assert_eq!(s, A2n::Flushed);
        assert!(!s.is_shut());
        let s = s.on_shut(true);
        assert_eq!(
            s,
            A2n::Shut {
                cipher_out_closed: true
            }
        );
        assert!(s.is_shut() && !s.reads_app());
    }

    #[test]
    fn a2n_app_eof_without_close_notify_is_flushed_at_once() {
        assert_eq!(A2n::new(false).on_app_eof(false), A2n::Flushed);
    }

    #[test]
    fn a2n_send_failure_skips_close_notify() {
        let s = A2n::new(false).on_send_blocked(Wait::Write);
        assert!(!s.may_send());
        assert_eq!(s.wait(), Wait::Write);
        assert_eq!(s.on_send_failed(), A2n::Flushed);
        assert_eq!(
            A2n::SendingCloseNotify { wait: Wait::No }.on_send_failed(),
            A2n::Flushed
        );
    }

    #[test]
    fn a2n_readiness_of_the_app_and_of_the_network_are_separate() {
        let s = A2n::new(false).on_app_blocked();
        assert!(s.app_blocked() && !s.may_read_app() && s.may_send());
        let s = s.on_send_blocked(Wait::Read);
        let s = s.on_app_ready();
        assert!(s.may_read_app() && !s.may_send());
        let s = s.on_net_ready(Wait::Read);
        assert!(s.may_read_app() && s.may_send());
    }

    #[test]
    fn a2n_later_states_ignore_earlier_events() {
        let shut = A2n::Shut {
            cipher_out_closed: false,
        };
        assert_eq!(shut.on_app_eof(true), shut);
        assert_eq!(shut.on_send_failed(), shut);
        assert_eq!(shut.on_close_notify_done(), shut);
        assert_eq!(shut.on_shut(true), shut);
        assert_eq!(shut.on_app_blocked(), shut);
        assert_eq!(shut.wait(), Wait::No);
        let sending = A2n::SendingCloseNotify { wait: Wait::Write };
        assert_eq!(sending.on_app_eof(false), sending);
        // Only Flushed is shut: a direction still sending close_notify is not.
        assert_eq!(sending.on_shut(false), sending);
    }

    #[test]
    fn a2n_holding_reads_sends_nothing_then_opens_or_ends() {
        let h = A2n::new(true);
        assert!(h.holds() && h.reads_app() && h.may_read_app());
        assert!(!h.may_send());
        assert_eq!(h.wait(), Wait::No);
        let b = h.on_app_blocked();
        assert!(b.app_blocked() && !b.may_read_app());
        assert_eq!(b.on_app_ready(), h);
        // Passed: open, the app's readiness kept.
        assert_eq!(
            b.on_passed(),
            A2n::Open {
                app_blocked: true,
                send: Wait::No
            }
        );
        // Refused: nothing more, not even close_notify.
        assert_eq!(h.on_refused(), A2n::Flushed);
        // The app's output ended with nothing held: as from Open.
        assert_eq!(
            h.on_app_eof(true),
            A2n::SendingCloseNotify { wait: Wait::No }
        );
        assert_eq!(h.on_app_eof(false), A2n::Flushed);
        // The network's readiness concerns no call of a held direction.
        assert_eq!(h.on_net_ready(Wait::Read), h);
        assert_eq!(A2n::new(false).on_refused(), A2n::new(false));
    }

    #[test]
    fn n2a_peer_eof_delivers_then_done() {
        let s = N2a::new().on_out_blocked();
        assert!(s.delivers() && s.out_blocked() && s.keeps_data());
        let s = s.on_peer_eof();
        assert_eq!(s, N2a::Eof { out_blocked: true });
        assert!(s.delivers() && !s.may_read_net(true) && !s.watches_net());
        let s = s.on_out_ready().on_delivered();
        assert_eq!(s, N2a::Done);
        assert!(!s.delivers() && s.is_done(t0));
        assert!(done(
            A2n::Shut {
                cipher_out_closed: false
            },
            &s,
            t0
        ));
        assert!(!done(A2n::new(false), &s, t0));
        assert!(!done(A2n::Flushed, &s, t0));
    }

    #[test]
    fn n2a_reads_only_with_room_unless_discarding() {
        let s = N2a::new();
        assert!(s.may_read_net(true) && !s.may_read_net(false));
        let s = s.on_read_blocked(Wait::Write);
        assert!(!s.may_read_net(true));
        assert_eq!(s.wait(), Wait::Write);
        let s = s.on_net_ready(Wait::Write);
        assert!(s.may_read_net(true));
        let s = s.on_app_stopped_reading();
        assert!(s.is_discarding() && !s.delivers() && !s.keeps_data());
        assert!(s.may_read_net(false));
    }

    #[test]
    fn n2a_app_stopped_reading_keeps_the_read_wait() {
        let s = N2a::new()
            .on_read_blocked(Wait::Read)
            .on_net_hup()
            .on_app_stopped_reading();
        assert_eq!(
            s,
            N2a::Discarding {
                read: Wait::Read,
                hup_seen: true,
                linger: None
            }
        );
        assert!(!s.watches_net());
    }

    #[test]
    fn n2a_discarding_lingers_once_our_side_is_shut() {
        let now = t0();
        let s = N2a::new().on_app_stopped_reading();
        assert!(s.wants_linger() && s.deadline().is_none());
        assert!(!s.is_done(|| now + Duration::from_secs(3600)));
        let d = now + Duration::from_secs(5);
        let s = s.on_linger(d);
        assert!(!s.wants_linger());
        assert_eq!(s.deadline(), Some(d));
        // A second linger does not push the deadline back.
        let s = s.on_linger(d + Duration::from_secs(5));
        assert_eq!(s.deadline(), Some(d));
        assert!(!s.is_done(|| now));
        assert!(s.is_done(|| d));
        let shut = A2n::Shut {
            cipher_out_closed: false,
        };
        assert!(done(shut, &s, || d));
        assert!(!done(A2n::Flushed, &s, || d));
        // The peer's EOF ends the linger early.
        assert_eq!(s.on_peer_eof(), N2a::Done);
    }

    #[test]
    fn n2a_failure_delivers_what_is_buffered_then_ends() {
        let now = t0();
        let until = now + Duration::from_secs(5);
        let s = N2a::new()
            .on_out_blocked()
            .on_failure(until, "reset".into());
        assert_eq!(
            s,
            N2a::FailedUntilDrained {
                until,
                why: "reset".into(),
                out_blocked: true
            }
        );
        assert!(s.delivers() && !s.may_read_net(true) && !s.watches_net());
        assert_eq!(s.deadline(), Some(until));
        // Bytes left and time left: keep delivering.
        assert_eq!(s.failure(false, || now), None);
        // Drained, or out of time: the error.
        assert_eq!(s.failure(true, || now), Some("reset"));
        assert_eq!(s.failure(false, || until), Some("reset"));
        // Never a clean end, whatever follows.
        assert!(!s.is_done(|| until));
        let s = s.on_peer_eof().on_delivered();
        assert!(matches!(s, N2a::FailedUntilDrained { .. }));
        // The first reason wins.
        let s = s.on_failure(until, "later".into());
        assert_eq!(s.failure(true, || now), Some("reset"));
        // The app stops reading: nothing left to deliver, the error at once.
        let s = s.on_app_stopped_reading();
        assert_eq!(
            s,
            N2a::Failed {
                why: "reset".into()
            }
        );
        assert!(!s.delivers());
        assert_eq!(s.failure(false, || now), Some("reset"));
        assert_eq!(
            s.on_failure(until, "later".into()).failure(false, || now),
            Some("reset")
        );
    }

    #[test]
    fn n2a_failure_after_eof_or_while_discarding() {
        let now = t0();
        let s = N2a::new().on_peer_eof().on_failure(now, "send".into());
        assert!(matches!(s, N2a::FailedUntilDrained { .. }) && s.delivers());
        let s = N2a::new().on_app_stopped_reading();
        assert_eq!(
            s.on_failure(now, "x".into()),
            N2a::Failed { why: "x".into() }
        );
        assert_eq!(
            N2a::Done.on_failure(now, "y".into()),
            N2a::Failed { why: "y".into() }
        );
    }

    #[test]
    fn n2a_app_stopped_reading_after_eof_is_done() {
        let s = N2a::new().on_peer_eof().on_app_stopped_reading();
        assert_eq!(s, N2a::Done);
        assert_eq!(N2a::Done.on_app_stopped_reading(), N2a::Done);
    }

    #[test]
    fn n2a_only_an_open_direction_can_be_cut_short() {
        assert!(N2a::new().is_open());
        assert!(!N2a::new().on_peer_eof().is_open());
        assert!(!N2a::new().on_app_stopped_reading().is_open());
    }

    #[test]
    fn n2a_hup_stops_the_error_watch_but_not_the_reads() {
        let s = N2a::new();
        assert!(s.watches_net());
        let s = s.on_net_hup();
        assert!(!s.watches_net() && s.may_read_net(true) && s.is_open());
        assert_eq!(N2a::Done.on_net_hup(), N2a::Done);
    }
}
