//! Delayed TLS (the UCSPI-TLS protocol): the app, started before any TLS with the network
//! on its own fds ([`Launcher::spawn_ucspi`]), asks for TLS with one byte on its control
//! socket. `Y`: the handshake, then the session description on the control socket and its
//! write side shut; `y`: the handshake, the control socket closed; EOF before a command:
//! TLS declined, the session stays clear text. The protocol ([`command`]) is kept apart from
//! the I/O ([`wait_command`], [`upgrade`]).

use crate::child::Launcher;
use crate::exit::Error;
use crate::fd;
use crate::session::Description;
use crate::Tls;
use std::os::unix::io::RawFd;

/// What the app asked for on its control socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// EOF before a command: no TLS, the app keeps the network in clear text.
    Declined,
    /// `Y` (`describe`: the description is written back) or `y` (it is not).
    Start {
        /// Whether the app wants the session description on its control socket.
        describe: bool,
    },
}

/// The command a byte means (`None`: EOF); any byte but `Y` and `y` is a usage error.
pub fn command(byte: Option<u8>) -> Result<Command, Error> {
    match byte {
        None => Ok(Command::Declined),
        Some(b'Y') => Ok(Command::Start { describe: true }),
        Some(b'y') => Ok(Command::Start { describe: false }),
        Some(b) => Err(Error::usage(format!(
            "the app wrote {:?} on {}: the UCSPI-TLS commands are Y and y",
            char::from(b),
            crate::child::CONTROL_FD
        ))),
    }
}

/// Wait, without a time limit, for the app's command on the blocking control socket `ctl`.
/// The handshake's own limit starts when it returns.
pub fn wait_command(ctl: RawFd) -> Result<Command, Error> {
    let mut b = [0u8; 1];
    loop {
        match fd::read(ctl, &mut b) {
            Ok(0) => return command(None),
            Ok(_) => return command(Some(b[0])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::sys(
                    &format!("unable to read {}", crate::child::CONTROL_FD),
                    e,
                ))
            }
        }
    }
}

/// Answer a started session on `ctl`: the description (`Y`), its write side shut; or
/// nothing (`y`). `ctl` is closed. An app that is gone already is the engine's to notice.
pub fn reply(ctl: RawFd, desc: Option<&Description>) {
    if let Some(d) = desc {
        let _ = fd::write_all(ctl, &d.encode());
        // SAFETY: shutdown on an fd number this process owns affects only that socket.
        unsafe { libc::shutdown(ctl, libc::SHUT_WR) };
    }
    fd::close(ctl);
}

/// End the connection for every process that holds it: after a failed handshake the app
/// must not go on in clear text on its copy of the network fds.
pub fn cut(net: (RawFd, RawFd)) {
    for f in [net.0, net.1] {
        // SAFETY: shutdown on an fd number this process owns; not a socket: an error, ignored.
        unsafe { libc::shutdown(f, libc::SHUT_RDWR) };
    }
}

/// How a delayed session went on; `S` is the session the handshake made (a [`Tls`], or a
/// program's own type around it).
pub enum Upgrade<S = Tls> {
    /// TLS declined; the app has been reaped: its exit code.
    Declined(i32),
    /// The handshake is done and answered (the session's description is returned too):
    /// the engine relays between the network and the app's pipes.
    Started(S, Launcher, Description),
}

/// The app's command on `ctl`, then the session it asks for: declined, the wrapper lets go
/// of `net` and waits for the app; a start, `handshake` (its deadline counted from now)
/// and the reply. Anything else ends the connection (the app cannot go on in clear text),
/// closes the app's pipes and reaps it before the error is returned.
pub fn upgrade<S>(
    ctl: RawFd,
    launcher: Launcher,
    net: (RawFd, RawFd),
    handshake: impl FnOnce(&Launcher) -> Result<(S, Description), Error>,
) -> Result<Upgrade<S>, Error> {
    let started = wait_command(ctl).and_then(|c| match c {
        Command::Declined => Ok(None),
        Command::Start { describe } => handshake(&launcher).map(|t| Some((t, describe))),
    });
    match started {
        Ok(None) => {
            fd::close(ctl);
            // The app's close of its copies must end the connection.
            fd::close(net.0);
            fd::close(net.1);
            Ok(Upgrade::Declined(launcher.wait()))
        }
        Ok(Some(((tls, desc), describe))) => {
            reply(ctl, describe.then_some(&desc));
            Ok(Upgrade::Started(tls, launcher, desc))
        }
        Err(e) => {
            // The network and the pipes first: the app learns of the failure from its
            // control socket, and by then nothing it writes may go anywhere.
            cut(net);
            let mut launcher = launcher;
            for f in [&mut launcher.to_app, &mut launcher.from_app] {
                fd::close(*f);
                *f = -1;
            }
            fd::close(ctl);
            launcher.abort();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    #[test]
    fn commands() {
        assert_eq!(command(None).ok(), Some(Command::Declined));
        assert_eq!(
            command(Some(b'Y')).ok(),
            Some(Command::Start { describe: true })
        );
        assert_eq!(
            command(Some(b'y')).ok(),
            Some(Command::Start { describe: false })
        );
        for b in [b'N', b'\n', 0, 0xff] {
            assert_eq!(command(Some(b)).map(|_| ()).unwrap_err().code, exit::USAGE);
        }
    }
}
