//! The handshake's outcome as tlsc reports it on its `-d` pipe: a session description, or
//! a failure (its report, or EOF with nothing), within the handshake's bound; and what
//! tlsc said on its stderr meanwhile.

use std::os::raw::c_int;
use std::time::{Duration, Instant};

use stls_desc::{Cause, Description, Failure, MAX_NOTIFICATION};

use crate::fds::{errno, millis, poll_until, Fd};

/// The handshake's outcome, read from the `-d` pipe `nr`: the session description tlsc
/// writes after a handshake (then it closes the pipe); EOF with nothing written, a failed
/// handshake (ECONNREFUSED, or ETIMEDOUT when tlsc gave up at its own handshake timeout
/// `timeout`); nothing within `timeout` and a second, ETIMEDOUT. What does not decode as a
/// description of at most 4 KiB counts as a failed handshake. With `er`, tlsc's stderr:
/// what it wrote until it closed it (at most 4 KiB; a second at most once the outcome is
/// known), returned with the outcome.
pub fn await_description(nr: &Fd, er: Option<&Fd>, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + timeout + Duration::from_secs(1);
    // One byte more than a description may have: to see that there is more.
    let mut buf = [0u8; MAX_NOTIFICATION + 1];
    let mut got = 0usize;
    let mut said = Vec::new();
    let mut outcome: Option<(Result<Description, c_int>, Cause)> = None;
    let mut err_open = er.is_some();
    let mut end = deadline;
    loop {
        if outcome.is_some() && !err_open {
            break;
        }
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut p = [
            libc::pollfd {
                fd: if outcome.is_none() { nr.0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: match er {
                    Some(e) if err_open => e.0,
                    _ => -1,
                },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds, ours.
        let r = unsafe { libc::poll(p.as_mut_ptr(), 2, millis(end - now).max(1)) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            break;
        }
        if p[1].revents != 0 {
            if let Some(e) = er {
                let mut chunk = [0u8; 512];
                // SAFETY: read writes at most 512 bytes into our buffer.
                let n = unsafe { libc::read(e.0, chunk.as_mut_ptr() as *mut libc::c_void, 512) };
                if n > 0 {
                    let room = 4096usize.saturating_sub(said.len());
                    said.extend_from_slice(&chunk[..(n as usize).min(room)]);
                } else if n == 0 || (errno() != libc::EINTR && errno() != libc::EAGAIN) {
                    err_open = false;
                }
            }
        }
        if p[0].revents == 0 {
            continue;
        }
        let room = &mut buf[got..];
        // SAFETY: read writes at most room.len() bytes into our buffer.
        let n = unsafe { libc::read(nr.0, room.as_mut_ptr() as *mut libc::c_void, room.len()) };
        let done = if n < 0 {
            if errno() == libc::EINTR || errno() == libc::EAGAIN {
                continue;
            }
            (Err(libc::ECONNREFUSED), Cause::Other)
        } else if n == 0 {
            ended(&buf[..got], started, timeout)
        } else {
            got += n as usize;
            if got <= MAX_NOTIFICATION {
                continue;
            }
            (Err(libc::ECONNREFUSED), Cause::Other)
        };
        outcome = Some(done);
        end = end.min(Instant::now() + Duration::from_secs(1));
    }
    let (desc, cause) = outcome.unwrap_or((Err(libc::ETIMEDOUT), Cause::Other));
    Outcome { desc, cause, said }
}

/// What a handshake came to.
pub struct Outcome {
    /// The session's description, or the errno the program's connect gets.
    pub desc: Result<Description, c_int>,
    /// Why it failed, when tlsc reported it ([`Cause::Other`] otherwise).
    pub cause: Cause,
    /// What tlsc wrote on its stderr meanwhile.
    pub said: Vec<u8>,
}

/// The pipe at EOF after `data`: a description, a failure report, or nothing (a failure);
/// a failure when tlsc gave up at its handshake timeout (`timeout` since `started`) is a
/// timeout.
fn ended(data: &[u8], started: Instant, timeout: Duration) -> (Result<Description, c_int>, Cause) {
    let failed = || {
        if started.elapsed() + Duration::from_millis(50) >= timeout {
            // tlsc gave up at its handshake timeout (-K): a timeout.
            libc::ETIMEDOUT
        } else {
            libc::ECONNREFUSED
        }
    };
    if data.is_empty() {
        return (Err(failed()), Cause::Other);
    }
    if let Some(f) = Failure::decode(data) {
        return (Err(failed()), f.cause);
    }
    let d = Description::decode_notification(data).map_err(|_| libc::ECONNREFUSED);
    (d, Cause::Other)
}

/// [`await_description`] for a blocking socket: the `-d` pipe read with blocking reads, so
/// that a signal handler interrupts the wait exactly as it would interrupt a blocking
/// connect (restarted under SA_RESTART, else EINTR); tlsc's own handshake timeout
/// (`timeout`) bounds it. Then tlsc's stderr as there.
pub fn await_blocking(nr: &Fd, er: Option<&Fd>, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut buf = [0u8; MAX_NOTIFICATION + 1];
    let mut got = 0usize;
    let outcome = loop {
        let room = &mut buf[got..];
        // SAFETY: read writes at most room.len() bytes into our buffer.
        let n = unsafe { libc::read(nr.0, room.as_mut_ptr() as *mut libc::c_void, room.len()) };
        if n < 0 {
            // EINTR: a handler without SA_RESTART ran (with it, the kernel restarts).
            let e = if errno() == libc::EINTR {
                libc::EINTR
            } else {
                libc::ECONNREFUSED
            };
            break (Err(e), Cause::Other);
        }
        if n == 0 {
            break ended(&buf[..got], started, timeout);
        }
        got += n as usize;
        if got > MAX_NOTIFICATION {
            break (Err(libc::ECONNREFUSED), Cause::Other);
        }
        // tlsc writes its description at once: complete, it needs no EOF (which a copy of
        // the pipe inherited by a fork elsewhere in the host would hold back).
        if let Ok(d) = Description::decode_notification(&buf[..got]) {
            break (Ok(d), Cause::Other);
        }
    };
    let (desc, cause) = outcome;
    let mut said = Vec::new();
    if let (Some(e), false) = (er, desc == Err(libc::EINTR)) {
        let end = Instant::now() + Duration::from_secs(1);
        while poll_until(e.0, libc::POLLIN, end).is_ok() {
            let mut chunk = [0u8; 512];
            // SAFETY: read writes at most 512 bytes into our buffer.
            let n = unsafe { libc::read(e.0, chunk.as_mut_ptr() as *mut libc::c_void, 512) };
            if n <= 0 {
                break;
            }
            let room = 4096usize.saturating_sub(said.len());
            said.extend_from_slice(&chunk[..(n as usize).min(room)]);
        }
    }
    Outcome { desc, cause, said }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds::pipe;

    #[test]
    fn description_from_the_pipe() {
        let (r, w) = pipe().expect("pipe");
        let d = b"SSL_PROTOCOL=TLSv1.3\0SSL_CIPHER=X\0SSL_PEER_CERT_HASH\0\0";
        // SAFETY: write reads d.len() bytes of d.
        let n = unsafe { libc::write(w.0, d.as_ptr() as *const libc::c_void, d.len()) };
        assert_eq!(n, d.len() as isize);
        drop(w);
        let got = await_description(&r, None, Duration::from_secs(5))
            .desc
            .expect("description");
        assert_eq!(
            got.get("SSL_PROTOCOL"),
            Some(std::ffi::OsStr::new("TLSv1.3"))
        );
        assert_eq!(got.get("SSL_CIPHER"), Some(std::ffi::OsStr::new("X")));

        // EOF with nothing: a failed handshake.
        let (r, w) = pipe().expect("pipe");
        drop(w);
        assert_eq!(
            await_description(&r, None, Duration::from_secs(5))
                .desc
                .err(),
            Some(libc::ECONNREFUSED)
        );
        // Malformed, or longer than 4 KiB: failed too.
        for bad in [
            &b"SSL_PROTOCOL=TLSv1.3\0"[..],
            &[b'x'; MAX_NOTIFICATION + 1][..],
        ] {
            let (r, w) = pipe().expect("pipe");
            // SAFETY: write reads bad.len() bytes of bad (less than a pipe's buffer).
            let n = unsafe { libc::write(w.0, bad.as_ptr() as *const libc::c_void, bad.len()) };
            assert_eq!(n, bad.len() as isize);
            drop(w);
            assert_eq!(
                await_description(&r, None, Duration::from_secs(5))
                    .desc
                    .err(),
                Some(libc::ECONNREFUSED)
            );
        }
        // A failure report: refused, with its cause.
        let (r, w) = pipe().expect("pipe");
        let report = Failure {
            errno: 0,
            cause: Cause::Untrusted,
            msg: "certificate verification failed".into(),
        }
        .encode();
        // SAFETY: write reads report.len() bytes of report.
        let n = unsafe { libc::write(w.0, report.as_ptr().cast(), report.len()) };
        assert_eq!(n, report.len() as isize);
        drop(w);
        let o = await_blocking(&r, None, Duration::from_secs(5));
        assert_eq!(
            (o.desc.err(), o.cause),
            (Some(libc::ECONNREFUSED), Cause::Untrusted)
        );
        // Nothing at all within the time: a timeout.
        let (r, _w) = pipe().expect("pipe");
        assert_eq!(
            await_description(&r, None, Duration::from_millis(1))
                .desc
                .err(),
            Some(libc::ETIMEDOUT)
        );
    }
}
