//! tlsd: the server side of a UCSPI connection. The network is on fd 0/1 (tcpserver,
//! s6-tcpserver, inetd `nowait`, systemd `Accept=yes`); after the handshake, prog runs as a
//! child with clear text on its fd 0/1 and the `SSL_*` variables, and the engine relays until
//! both directions are closed and prog is reaped. The interface is tlsd(1).
//!
//! The story of a connection:
//! 1. the command line checked before any network I/O;
//! 2. the launcher forked (it will exec prog with the program's own credentials);
//! 3. the environment read, and the context built from CERTFILE/KEYFILE, the SNI pairs
//!    and the client CA;
//! 4. the engine's credentials dropped to TLS_UID/TLS_GID, the PROXY protocol header read
//!    with -L (the client's address for prog), then the handshake;
//! 5. the heap trimmed, prog started with the session's description;
//! 6. the engine relays; the exit code is prog's unless the engine failed.
//!
//! With `--clear-fd=FD` (autossl-shim's server side) there is no prog: steps 2 and 5 are
//! skipped and the engine relays with the socket FD.

use stls::child::Credentials;
use stls::cli;
use stls::context;
use stls::env::Env;
use stls::exit::Error;
use stls::log::{self, Log};
use stls::{fd, process};

/// tlsd, on this process's command line and environment; exits with its status.
pub fn main() -> ! {
    log::exit_with(crate::TLSD.name, tlsd())
}

fn tlsd() -> Result<i32, Error> {
    let Some(opts) = cli::parse_args(&crate::TLSD)? else {
        return Ok(0);
    };
    let log = Log::new(&crate::TLSD, &opts);
    if let Some(clear) = opts.clear_fd {
        return clear_fd_form(&opts, log, clear);
    }
    if opts.session_at.is_some() {
        return Err(Error::usage("--session-at goes with --clear-fd"));
    }
    if opts.operands.is_empty() {
        return Err(Error::usage(
            "no program to run (usage: tlsd [options] [--] prog...)",
        ));
    }
    // By hand from a shell, the handshake would wait for its timeout on the keyboard.
    if fd::is_tty(0) {
        return Err(Error::usage(
            "fd 0 is a terminal: tlsd expects a client's connection on fd 0/1, \
             so run it under tcpserver, inetd or systemd (see tlsd(1))",
        ));
    }
    crate::check_network()?;

    // The launcher is forked first: the fork then shares a small heap, and what this
    // process builds afterwards (the environment's reading, OpenSSL's initialisation,
    // the context) is made in pages of its own, not copied on its first write to a page
    // the fork shares (a tenth of a connection's CPU; with hundreds of `CERTFILE:name`
    // pairs, their copies were most of what they cost). An error after it aborts it.
    let launched = crate::launch(
        crate::TLSD.name,
        &opts.operands,
        &Credentials::default(),
        !opts.keep_env,
        crate::LaunchForm::Fork,
    )?;
    let env = match Env::from_process() {
        Ok(env) => env,
        Err(e) => {
            launched.1.abort();
            return Err(e);
        }
    };
    process::init_openssl(env.openssl_conf);
    let server = context::server(&crate::settings(&opts, log), &env);
    crate::serve(&opts, &env, log, server, launched)
}

/// `--clear-fd=FD`: the network on fd 0/1, clear text on FD, no prog.
fn clear_fd_form(opts: &stls::options::Options, log: Log, clear: i32) -> Result<i32, Error> {
    if !opts.operands.is_empty() {
        return Err(Error::usage("--clear-fd runs no prog: give no operand"));
    }
    if opts.proxy_protocol {
        return Err(Error::usage("-L does not go with --clear-fd"));
    }
    if clear < 3 || !fd::is_socket(clear) {
        return Err(Error::usage(format!(
            "--clear-fd={clear}: not a socket above fd 2"
        )));
    }
    if let Some((to, _)) = opts.session_at {
        if to < 3 || to == clear || !fd::is_open(to) {
            return Err(Error::usage(format!(
                "--session-at: fd {to} is not open above fd 2"
            )));
        }
    }
    crate::check_network()?;
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    let server = context::server(&crate::settings(opts, log), &env);
    crate::serve_clear_fd(opts, &env, log, server, clear)
}
