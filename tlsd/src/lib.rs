//! The server side's session, shared by its programs: tlsd runs it once on the connection
//! it was given, tlsserver in a fork of itself for every connection it accepts. The steps,
//! in the order a connection takes them:
//! 1. [`check_network`]: the network is on fd 0/1;
//! 2. [`launch`]: the launcher forked (it will exec prog with the app's credentials);
//! 3. [`handshake`]: the engine's credentials dropped, the PROXY protocol header read (`-L`),
//!    then the handshake on fd 0/1 with a context built before (tlsd builds it after the
//!    launcher, tlsserver once at start);
//! 4. [`relay`]: the heap trimmed, prog started with the session's description, the engine
//!    relaying; the exit code is prog's unless the engine failed.
//!
//! Delayed TLS (UCSPI-TLS) takes other steps: [`proxy_header_first`] (`-L`: the header is
//! the first thing on the connection, before prog's clear text), [`launch_delayed`] (prog
//! running at once), then [`serve_delayed`] (prog's command, the handshake, the relay).
//!
//! autossl-shim's server side takes one step, [`serve_clear_fd`]: no prog, the handshake,
//! then the relay with the daemon's socket.

#![forbid(unsafe_code)]

pub mod programs;

use std::borrow::Borrow;
use stls::child::{Credentials, Launcher, Selfpipe};
use stls::context::{Server, ServerSettings};
use stls::env::{self, Env};
use stls::exit::{self, Error};
use stls::log::{self, Log};
use stls::options::{Command, Groups, Options};
use stls::proxy::Proxied;
use stls::session;
use stls::{fd, process, Fds, Tls};

/// `tlsd`: its name, its groups (the options it takes, the variables it reads and sets)
/// and its usage.
pub const TLSD: Command = Command {
    name: "tlsd",
    groups: Groups::COMMON
        .with(Groups::SERVER)
        .with(Groups::PROXY)
        .with(Groups::SHIM_SERVER)
        .with(Groups::NOT_DELAYED),
    usage: "usage: tlsd [options] [--] prog...\n\
            \x20      tlsd [options] --clear-fd=FD   (autossl-shim: clear text on the socket FD)\n\
            TLS server side of a UCSPI connection: the network on fd 0/1, prog gets clear text on its fd 0/1.\n",
};

/// `tlsserver`: its name, its groups (the options it takes, the variables it reads and sets)
/// and its usage.
pub const TLSSERVER: Command = Command {
    name: "tlsserver",
    groups: Groups::COMMON
        .with(Groups::SERVER)
        .with(Groups::LISTEN)
        .with(Groups::PROXY)
        .with(Groups::NOT_DELAYED)
        .with(Groups::DELAYED),
    usage: "usage: tlsserver [options] [--] ADDR PORT prog...\n\
            \x20      tlsserver [options] [--] prog...   (socket activation: the listener on fd 3)\n\
            TLS server: listen on ADDR PORT and run prog for every connection with clear text on its fd 0/1.\n",
};

/// `ucspitlsd`: its name, its groups (the options it takes, the variables it reads and sets)
/// and its usage.
pub const UCSPITLSD: Command = Command {
    name: "ucspitlsd",
    groups: Groups::COMMON
        .with(Groups::SERVER)
        .with(Groups::PROXY)
        .with(Groups::DELAYED),
    usage: "usage: ucspitlsd [options] [--] prog...\n\
            Delayed TLS (UCSPI-TLS) on the server side: the network on fd 0/1, prog starts at once on it \
            and asks for TLS on SSLCTLFD.\n",
};

/// The network must be on fd 0 and fd 1; fd 2 is silenced when it is the connection too
/// (inetd `nowait` puts the socket there: messages must not enter the TLS stream).
pub fn check_network() -> Result<(), Error> {
    if !fd::is_network(0) || !fd::is_network(1) {
        return Err(Error::new(
            exit::SYSTEM,
            "the network must be on fd 0 and fd 1, and they are closed or /dev/null",
        ));
    }
    if fd::is_socket(2) && fd::same_file(0, 2) {
        fd::silence_stderr();
    }
    Ok(())
}

/// What the server context is built from, out of the command line.
pub fn settings(opts: &Options, log: Log) -> ServerSettings {
    ServerSettings {
        log,
        client_cert: opts.client_cert,
        sni_level: opts.sni_level,
        enforce_close_notify: opts.enforce_close_notify,
        sandbox: !opts.no_sandbox,
        // tlsd and ucspitlsd serve one connection: only the pair its client names.
        sni_preload: false,
    }
}

/// How prog's launcher is made ([`launch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchForm {
    /// A forked launcher that waits for the session's description.
    Fork,
    /// For a process that keeps its credentials across the handshake (no
    /// `TLS_UID`/`TLS_GID`): no launcher process; prog is spawned at the start, sharing
    /// this process's memory until its exec, which saves a fork of this process and its
    /// teardown.
    Deferred,
    /// For a process that is confined before its handshake and keeps its credentials: the
    /// launcher shares this process's memory until its exec instead of copying it, which
    /// costs the connection almost what [`LaunchForm::Deferred`] does.
    Shared,
}

/// The selfpipe and the launcher of prog (the operands), made in `form`, with clear text
/// on its fd 0/1; `creds` are the app's, applied just before its exec; the secrets leave
/// its environment when `strip` (unless `-Z`).
pub fn launch(
    name: &'static str,
    prog: &[std::ffi::OsString],
    creds: &Credentials,
    strip: bool,
    form: LaunchForm,
) -> Result<(Selfpipe, Launcher), Error> {
    let selfpipe = Selfpipe::install()?;
    let closed = [selfpipe.rfd];
    let launcher = match form {
        LaunchForm::Fork => Launcher::spawn_as(name, prog, 0, 1, &closed, creds, strip)?,
        LaunchForm::Deferred => Launcher::deferred_as(name, prog, 0, 1, &closed, creds, strip)?,
        LaunchForm::Shared => Launcher::spawn_shared_as(name, prog, 0, 1, &closed, creds, strip)?,
    };
    Ok((selfpipe, launcher))
}

/// A finished handshake, and the client a PROXY protocol header named (`-L`).
pub struct Handshake {
    /// The session, ready for the engine.
    pub tls: Tls,
    /// The header's addresses, for prog's TCP variables.
    pub proxied: Option<Proxied>,
}

/// Drop the engine's privileges, enter the sandbox (unless `--no-sandbox`), read the PROXY
/// protocol header (`-L`), and run the handshake on fd 0/1 with `server`'s context; the
/// header and the handshake behind it share one deadline. `None`: the connection was a load balancer's health check (a
/// `LOCAL` header, then the end), which has nothing to serve and is not an error.
pub fn handshake(
    opts: &Options,
    env: &Env,
    log: Log,
    server: &Server,
    launcher: &Launcher,
) -> Result<Option<Handshake>, Error> {
    tls_handshake(opts, env, log, server, launcher, opts.proxy_protocol)
}

/// [`handshake`], the header read only when `header` (delayed TLS has read it before prog
/// started).
fn tls_handshake(
    opts: &Options,
    env: &Env,
    log: Log,
    server: &Server,
    launcher: &Launcher,
    header: bool,
) -> Result<Option<Handshake>, Error> {
    let run = || {
        env::drop_privileges(env.uid, env.gid)?;
        // The first byte from the network is read below: from here on, the engine's process
        // touches nothing but its fds. prog was started, or its launcher forked, before.
        stls::sandbox::enter(log, opts.no_sandbox, Some(launcher.pid))?;
        let deadline = opts.deadline();
        let proxied = if header {
            stls::proxy::header(opts, 0, deadline)?
        } else {
            None
        };
        if proxied == Some(Proxied::Local) && stls::proxy::ends_after_header(0, deadline) {
            return Ok(None);
        }
        stls::nonblocking(&[0, 1, launcher.to_app, launcher.from_app])?;
        stls::net::nodelay(1);
        let mut tls = Tls::new(&server.ctx, 0, 1)?;
        tls.ssl_mut().set_accept_state();
        tls.handshake(deadline)?;
        Ok(Some(Handshake { tls, proxied }))
    };
    run().map_err(|e| server.handshake_error(e))
}

/// After the handshake: prog started with the session's description, the engine relaying
/// between fd 0/1 and prog; the exit code of the whole session.
pub fn relay(
    opts: &Options,
    log: Log,
    Handshake { mut tls, proxied }: Handshake,
    mut launcher: Launcher,
    selfpipe: Selfpipe,
) -> i32 {
    process::trim_heap();
    let mut desc = session::describe(tls.ssl(), None);
    if let Some(p) = proxied {
        stls::proxy::describe(p, 0, &mut desc);
    }
    log.info(&log::session_line(&desc, 0));
    if let Err(e) = launcher.try_start(&desc) {
        log.fatal(&e);
        return e.code;
    }
    let fds = Fds {
        clear_in: launcher.from_app,
        clear_out: launcher.to_app,
        cipher_in: 0,
        cipher_out: 1,
        selfpipe: selfpipe.rfd,
    };
    let out = stls::run(&mut tls, fds, Some(launcher.pid), &opts.engine_config());
    log::conclude(&log, out)
}

/// The handshake with `server` (owned or borrowed; an error there is the session's), then
/// the relay; a failed handshake aborts the launcher.
pub fn serve<S: Borrow<Server>>(
    opts: &Options,
    env: &Env,
    log: Log,
    server: Result<S, Error>,
    launched: (Selfpipe, Launcher),
) -> Result<i32, Error> {
    serve_then(opts, env, log, server, launched, || {})
}

/// [`serve`], with `established` called once the handshake is done, before the relay
/// (tlsserver tells its accepting process that this connection is no longer one to close
/// to make room).
pub fn serve_then<S: Borrow<Server>>(
    opts: &Options,
    env: &Env,
    log: Log,
    server: Result<S, Error>,
    (selfpipe, launcher): (Selfpipe, Launcher),
    established: impl FnOnce(),
) -> Result<i32, Error> {
    match server.and_then(|s| handshake(opts, env, log, s.borrow(), &launcher)) {
        Ok(Some(done)) => {
            established();
            Ok(relay(opts, log, done, launcher, selfpipe))
        }
        Ok(None) => {
            launcher.abort();
            log.info("a load balancer's health check: its LOCAL header, then the end");
            Ok(0)
        }
        Err(e) => {
            launcher.abort();
            Err(e)
        }
    }
}

/// Delayed TLS with `-L`: the PROXY protocol header, read before prog starts (prog talks
/// first, in clear text, so the header is the first thing on the connection), bounded by
/// the handshake timeout; the client it names goes into this process's environment
/// (`TCPREMOTEIP`, ...), which prog inherits. Nothing without `-L`.
pub fn proxy_header_first(opts: &Options) -> Result<(), Error> {
    let Some(p) = stls::proxy::header(opts, 0, opts.deadline())? else {
        return Ok(());
    };
    let mut edits = stls::session::Description::default();
    stls::proxy::describe(p, 0, &mut edits);
    for (k, v) in edits.vars {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    Ok(())
}

/// Delayed TLS: the selfpipe, `prog` started at once with the network on its fd 0/1 and
/// the UCSPI-TLS descriptors, and the control socket's end to wait on; `creds` are the
/// app's. The secrets leave prog's environment unless `-Z`.
pub fn launch_delayed(
    name: &'static str,
    prog: &[std::ffi::OsString],
    opts: &Options,
    creds: &Credentials,
) -> Result<(Selfpipe, Launcher, std::os::unix::io::RawFd), Error> {
    let selfpipe = Selfpipe::install()?;
    let (launcher, ctl) =
        Launcher::spawn_ucspi(name, prog, &[selfpipe.rfd], creds, !opts.keep_env)?;
    Ok((selfpipe, launcher, ctl))
}

/// Delayed TLS, after [`launch_delayed`]: prog's command, then the handshake on fd 0/1
/// (its timeout counted from the command; the PROXY protocol header was read before, by
/// [`proxy_header_first`]) and the relay, or prog's own exit when it declines TLS. A
/// failed handshake ends the connection and returns its error once prog is reaped.
pub fn serve_delayed(
    opts: &Options,
    env: &Env,
    log: Log,
    server: &Server,
    (selfpipe, launcher, ctl): (Selfpipe, Launcher, std::os::unix::io::RawFd),
) -> Result<i32, Error> {
    let up = stls::ucspi::upgrade(ctl, launcher, (0, 1), |l| {
        let done = tls_handshake(opts, env, log, server, l, false)?
            .ok_or_else(|| Error::handshake("the peer left after its PROXY header"))?;
        let desc = session::describe(done.tls.ssl(), None);
        Ok((done, desc))
    })?;
    Ok(match up {
        stls::ucspi::Upgrade::Declined(code) => code,
        stls::ucspi::Upgrade::Started(done, launcher, _) => {
            relay(opts, log, done, launcher, selfpipe)
        }
    })
}

/// autossl-shim's server side (`--clear-fd=FD`): no prog. The handshake on fd 0/1 (the
/// connection a daemon accepted), the session's description written where
/// `--session-at` says, then the engine relays between fd 0/1 and the socket `clear`
/// (the other end is the daemon's). A failed handshake closes everything: the daemon
/// sees a client that left.
pub fn serve_clear_fd(
    opts: &Options,
    env: &Env,
    log: Log,
    server: Result<Server, Error>,
    clear: std::os::unix::io::RawFd,
) -> Result<i32, Error> {
    // One connection of a daemon that goes on: its failures are warnings.
    log::one_connection_of_many(opts.verbosity);
    stls::child::ignore_sigpipe();
    let server = server?;
    // The engine closes its clear input and output separately: two descriptors.
    let clear_out =
        fd::dup_above(clear, 3).map_err(|e| Error::sys("unable to duplicate the clear fd", e))?;
    let run = || {
        env::drop_privileges(env.uid, env.gid)?;
        // No prog: nothing of this process's is left to start.
        stls::sandbox::enter(log, opts.no_sandbox, None)?;
        stls::nonblocking(&[0, 1, clear, clear_out])?;
        stls::net::nodelay(1);
        let mut tls = Tls::new(&server.ctx, 0, 1)?;
        tls.ssl_mut().set_accept_state();
        tls.handshake(opts.deadline())?;
        Ok(tls)
    };
    let mut tls = run().map_err(|e| server.handshake_error(e))?;
    process::trim_heap();
    let desc = session::describe(tls.ssl(), None);
    log.info(&shim_session_line(&desc));
    if let Some((to, offset)) = opts.session_at {
        if let Err(e) = write_session_at(to, offset, &desc.encode()) {
            log.warn(&format!("unable to record the session description: {e}"));
        }
        fd::close(to);
    }
    let fds = Fds {
        clear_in: clear,
        clear_out,
        cipher_in: 0,
        cipher_out: 1,
        selfpipe: -1,
    };
    let out = stls::run(&mut tls, fds, None, &opts.engine_config());
    Ok(log::conclude(&log, out))
}

/// The verbosity-2 line of `--clear-fd`: the usual one, with the client certificate a
/// daemon behind autossl-shim cannot read from its environment.
fn shim_session_line(desc: &session::Description) -> String {
    let mut s = log::session_line(desc, 0);
    for (k, name) in [
        ("SSL_PEER_CERT_SUBJECT", "subject"),
        ("SSL_PEER_CERT_HASH", "hash"),
    ] {
        if let Some(v) = desc.get(k) {
            s.push_str(&format!(" {name}={}", v.to_string_lossy()));
        }
    }
    s
}

/// `--session-at`: the wire form at `offset + 4` of `to`, then its length (4 bytes,
/// little-endian) at `offset`, last: a reader that sees the length sees the bytes.
fn write_session_at(to: i32, offset: u64, wire: &[u8]) -> std::io::Result<()> {
    if wire.len() > session::MAX_NOTIFICATION {
        return Err(std::io::Error::other("description too long"));
    }
    fd::pwrite_all(to, wire, offset + 4)?;
    fd::pwrite_all(to, &(wire.len() as u32).to_le_bytes(), offset)
}
