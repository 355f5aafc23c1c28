//! tlsc: the client side of a UCSPI connection. Three forms (tlsc(1)):
//! - `tlsc [options] [--] prog...`: the network on fd 6/7 (after tcpclient); after the
//!   handshake prog runs as a child with clear text on its fd 6/7;
//! - `tlsc [options]`: the io form, clear text on tlsc's own stdin/stdout;
//! - `tlsc [options] ADDR PORT`: connect first, then the io form (autossl's helper).
//!
//! The story:
//! 1. the command line, its form, the notification fd;
//! 2. the environment and the context (trust, the client certificate);
//! 3. the name to verify: `-k`, else the address connected to, else TCPREMOTEIP;
//! 4. the network fds (connected now in the ADDR PORT form; with `--pending-connect`, the
//!    connect the caller started, awaited);
//! 5. in the prog form, the launcher forked (prog keeps the program's credentials);
//! 6. the engine's credentials dropped, then the handshake with SNI and verification;
//! 7. the description written to `-d`, prog started;
//! 8. the engine relays; the exit code is prog's unless the engine failed.

#![forbid(unsafe_code)]

use std::os::unix::io::RawFd;
use stls::cli;
use stls::env::Env;
use stls::exit::{self, Error};
use stls::log::{self, Log};
use stls::options::Options;
use stls::{fd, process};
use tlsc::{form_of, Form, Network, Peer};

fn main() {
    log::exit_with(tlsc::TLSC.name, tlsc())
}

fn tlsc() -> Result<i32, Error> {
    // Nothing at all: the user is asking what tlsc is, not for the io form.
    if std::env::args_os().len() < 2 {
        return Err(Error::usage(
            "no arguments: tlsc [options] [--] prog... | tlsc [options] | \
             tlsc [options] ADDR PORT (see tlsc --help)",
        ));
    }
    let Some(opts) = cli::parse_args(&tlsc::TLSC)? else {
        return Ok(0);
    };
    let form = form_of(&opts)?;
    // Operands that look like a mistyped ADDR PORT, with no network on fd 6/7: say what is
    // wrong with them rather than that the fds are missing.
    if form == Form::Prog && network_fds(&opts).is_none() {
        return Err(match tlsc::connect_form_problem(&opts.operands) {
            Some(why) if !opts.dashdash => Error::usage(why),
            _ => no_network_fds(&opts),
        });
    }
    tlsc::with_notification(&opts, || session(&opts, form))
}

/// `-k`, else the address connected to, else TCPREMOTEIP.
fn peer_name(opts: &Options, form: &Form, env: &Env) -> Result<Peer, Error> {
    let name = match form {
        Form::Connect(sa) => Some(sa.ip().to_string()),
        _ => env.tcpremoteip.clone(),
    };
    Peer::named(opts, name)
}

/// The network's read and write fds: connected now, or the ones the form names.
fn network(opts: &Options, form: &Form) -> Result<(RawFd, RawFd), Error> {
    if let Form::Connect(sa) = form {
        return tlsc::connect(*sa, opts.handshake_timeout);
    }
    network_fds(opts).ok_or_else(|| no_network_fds(opts))
}

/// The fds the options name for the network, if both can carry it.
fn network_fds(opts: &Options) -> Option<(RawFd, RawFd)> {
    let (r, w) = (opts.read_fd, opts.write_fd);
    (fd::is_network(r) && fd::is_network(w)).then_some((r, w))
}

fn no_network_fds(opts: &Options) -> Error {
    let (r, w) = (opts.read_fd, opts.write_fd);
    Error::new(
        exit::SYSTEM,
        format!("the network must be on fd {r} and fd {w}, and they are closed or /dev/null"),
    )
}

fn session(opts: &Options, form: Form) -> Result<i32, Error> {
    let log = Log::new(&tlsc::TLSC, opts);
    if opts.detach {
        tlsc::detach()?;
    }
    if opts.pending_connect {
        tlsc::watch_clear_side();
    }
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    let ctx = tlsc::client_context(opts, &env)?;
    if opts.host_from_request.is_some() && form == Form::Prog {
        return Err(Error::usage(
            "--host-from-request reads the first request on fd 0: the io form only",
        ));
    }
    let peer = match opts.host_from_request {
        None => Some(peer_name(opts, &form, &env)?),
        Some(_) => None,
    };
    let (rfd, wfd) = network(opts, &form)?;
    if opts.pending_connect {
        tlsc::await_connect(rfd, opts.deadline())?;
    }
    let net = Network {
        rfd,
        wfd,
        prog: form == Form::Prog,
    };
    if let Some(peer) = &peer {
        return tlsc::session(log, opts, &env, &ctx, peer, net);
    }
    let names = opts.host_from_request.as_deref().unwrap_or_default();
    let (peer, first) = tlsc::name_from_request(opts, names, rfd)?;
    // The filler is gone and -d was written: the session does neither again.
    let mut rest = opts.clone();
    rest.discard = 0;
    rest.notification_fd = None;
    rest.log_fd = None;
    tlsc::session_sending(log, &rest, &env, &ctx, &peer, net, &first)
}
