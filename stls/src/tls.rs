//! The TLS session over raw fds ([`Tls`]): an `Ssl` bound to the network's read and write
//! fds (OpenSSL's own fd BIOs: no Rust callback on the hot path), its non-blocking I/O and
//! its handshake with a deadline.

use crate::exit::{ssl_reason, Error};
use crate::fd;
use foreign_types::ForeignType;
use openssl::ssl::{Ssl, SslContextRef, SslRef};
use std::os::unix::io::RawFd;
use std::time::Instant;

extern "C" {
    fn SSL_set_rfd(s: *mut openssl_sys::SSL, fd: libc::c_int) -> libc::c_int;
    fn SSL_set_wfd(s: *mut openssl_sys::SSL, fd: libc::c_int) -> libc::c_int;
    fn ERR_peek_error() -> libc::c_ulong;
}

/// OpenSSL 3's reason code for a TCP EOF without close_notify (not in openssl-sys).
const SSL_R_UNEXPECTED_EOF_WHILE_READING: libc::c_int = 294;

/// The outcome of one non-blocking OpenSSL call.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Io {
    /// The call succeeded; for reads and writes, with this many bytes.
    Done(usize),
    /// The call must be retried when the network's read fd is readable.
    WantRead,
    /// The call must be retried when the network's write fd is writable.
    WantWrite,
    /// close_notify received (or a TCP EOF that OpenSSL was told to accept).
    Closed,
    /// A TCP EOF without close_notify, under `-J`.
    Truncated,
    /// A TLS or network error; the reason is on OpenSSL's error queue.
    Error,
}

/// A TLS session over a read fd and a write fd (one socket, or a pipe pair).
pub struct Tls {
    ssl: Ssl,
    /// The fd the network is read from.
    pub rfd: RawFd,
    /// The fd the network is written to (the same as `rfd` for one socket).
    pub wfd: RawFd,
}

impl Tls {
    /// A session of `ctx` over `rfd` and `wfd`; the fds stay the caller's to close (the
    /// engine closes them when it ends).
    pub fn new(ctx: &SslContextRef, rfd: RawFd, wfd: RawFd) -> Result<Tls, Error> {
        let ssl = Ssl::new(ctx).map_err(|_| {
            Error::handshake(format!("unable to create a TLS session: {}", ssl_reason()))
        })?;
        // SAFETY: `ssl` is a live session; SSL_set_rfd/SSL_set_wfd only record the fd
        // numbers in fd BIOs that do not close them.
        unsafe {
            if SSL_set_rfd(ssl.as_ptr(), rfd) != 1 || SSL_set_wfd(ssl.as_ptr(), wfd) != 1 {
                return Err(Error::handshake(format!(
                    "unable to attach the network fds: {}",
                    ssl_reason()
                )));
            }
        }
        Ok(Tls { ssl, rfd, wfd })
    }

    /// The OpenSSL session, to read what the handshake negotiated.
    pub fn ssl(&self) -> &SslRef {
        &self.ssl
    }

    /// The OpenSSL session, to set it up before the handshake (role, SNI, names).
    pub fn ssl_mut(&mut self) -> &mut SslRef {
        &mut self.ssl
    }

    fn classify(&self, ret: libc::c_int) -> Io {
        // SAFETY: `ssl` is a live session and `ret` the return value of its last call.
        let code = unsafe { openssl_sys::SSL_get_error(self.ssl.as_ptr(), ret) };
        match code {
            openssl_sys::SSL_ERROR_WANT_READ => Io::WantRead,
            openssl_sys::SSL_ERROR_WANT_WRITE => Io::WantWrite,
            openssl_sys::SSL_ERROR_ZERO_RETURN => Io::Closed,
            openssl_sys::SSL_ERROR_SYSCALL => {
                let err = std::io::Error::last_os_error();
                // SAFETY: ERR_peek_error only reads this thread's error queue.
                if unsafe { ERR_peek_error() } == 0 && err.raw_os_error() == Some(0) {
                    Io::Truncated
                } else {
                    Io::Error
                }
            }
            openssl_sys::SSL_ERROR_SSL => {
                // OpenSSL 3 reports a TCP EOF without close_notify as an SSL error.
                // SAFETY: ERR_peek_error only reads this thread's error queue.
                let e = unsafe { ERR_peek_error() };
                if openssl_sys::ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING {
                    Io::Truncated
                } else {
                    Io::Error
                }
            }
            _ => Io::Error,
        }
    }

    fn clear_errno() {
        // SAFETY: __errno_location returns this thread's errno slot, valid to write.
        unsafe { *libc::__errno_location() = 0 };
    }

    /// One step of the handshake on the non-blocking fds.
    pub fn handshake_step(&mut self) -> Io {
        Self::clear_errno();
        // SAFETY: `ssl` is a live session with its fds set.
        let r = unsafe { openssl_sys::SSL_do_handshake(self.ssl.as_ptr()) };
        if r == 1 {
            Io::Done(0)
        } else {
            self.classify(r)
        }
    }

    /// Decrypt into `buf`: what is buffered inside OpenSSL first, then the network.
    pub fn read(&mut self, buf: &mut [u8]) -> Io {
        Self::clear_errno();
        let mut n = 0usize;
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes and `n` for one write.
        let r = unsafe {
            openssl_sys::SSL_read_ex(
                self.ssl.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut n,
            )
        };
        if r == 1 {
            Io::Done(n)
        } else {
            self.classify(r)
        }
    }

    /// Encrypt and send (part of) `buf`; partial writes are allowed and a retry may
    /// pass a moved buffer.
    pub fn write(&mut self, buf: &[u8]) -> Io {
        Self::clear_errno();
        let mut n = 0usize;
        // SAFETY: `buf` is valid for `buf.len()` bytes of reads and `n` for one write.
        let r = unsafe {
            openssl_sys::SSL_write_ex(self.ssl.as_ptr(), buf.as_ptr().cast(), buf.len(), &mut n)
        };
        if r == 1 {
            Io::Done(n)
        } else {
            self.classify(r)
        }
    }

    /// Send close_notify. `Done` once it is written (whether or not the peer's came).
    pub fn shutdown(&mut self) -> Io {
        Self::clear_errno();
        // SAFETY: `ssl` is a live session with its fds set.
        let r = unsafe { openssl_sys::SSL_shutdown(self.ssl.as_ptr()) };
        if r >= 0 {
            Io::Done(0)
        } else {
            self.classify(r)
        }
    }

    /// Handshake on non-blocking fds, bounded by `deadline`.
    /// Errors: 97 for a failed handshake or verification, 98 for the timeout.
    pub fn handshake(&mut self, deadline: Option<Instant>) -> Result<(), Error> {
        loop {
            let (fd, ev) = match self.handshake_step() {
                Io::Done(_) => return Ok(()),
                Io::WantRead => (self.rfd, libc::POLLIN),
                Io::WantWrite => (self.wfd, libc::POLLOUT),
                Io::Closed | Io::Truncated => {
                    let _ = ssl_reason();
                    return Err(Error::handshake(
                        "handshake failed: the peer closed the connection",
                    ));
                }
                Io::Error => return Err(self.handshake_error()),
            };
            let mut p = [libc::pollfd {
                fd,
                events: ev,
                revents: 0,
            }];
            loop {
                let t = fd::poll_timeout(deadline);
                if t == 0 {
                    return Err(Error::tls("handshake timed out"));
                }
                match fd::poll(&mut p, t) {
                    Ok(0) => continue,
                    Ok(_) => break,
                    Err(e) => return Err(Error::sys("unable to poll", e)),
                }
            }
        }
    }

    fn handshake_error(&self) -> Error {
        let os = std::io::Error::last_os_error();
        let reason = ssl_reason();
        let v = self.ssl.verify_result();
        if v.as_raw() != 0 {
            return Error::handshake(crate::explain::verification(&self.ssl, v))
                .because(crate::explain::cause(v));
        }
        if reason == "unknown TLS error" && os.raw_os_error().unwrap_or(0) != 0 {
            return Error::handshake(format!("handshake failed: {}", crate::exit::io_text(&os)));
        }
        Error::handshake(format!("handshake failed: {reason}"))
    }
}

/// Set the fds of a session non-blocking (the engine and the handshake need it).
pub fn nonblocking(fds: &[RawFd]) -> Result<(), Error> {
    for &f in fds {
        fd::set_nonblock(f, true).map_err(|e| Error::sys("unable to set O_NONBLOCK", e))?;
    }
    Ok(())
}
