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

use crate::{form_of, Form};
use stls::cli;
use stls::env::Env;
use stls::exit::Error;
use stls::log::{self, Log};
use stls::options::Options;
use stls::process;

/// tlsc, on this process's command line and environment; exits with its status.
pub fn main() -> ! {
    log::exit_with(crate::TLSC.name, tlsc())
}

fn tlsc() -> Result<i32, Error> {
    // Nothing at all: the user is asking what tlsc is, not for the io form.
    if std::env::args_os().len() < 2 {
        return Err(Error::usage(
            "no arguments: tlsc [options] [--] prog... | tlsc [options] | \
             tlsc [options] ADDR PORT (see tlsc --help)",
        ));
    }
    let Some(opts) = cli::parse_args(&crate::TLSC)? else {
        return Ok(0);
    };
    if opts.serve.is_some() {
        return crate::serve::serve(&crate::TLSC, &opts);
    }
    let form = form_of(&opts)?;
    // Operands that look like a mistyped ADDR PORT, with no network on fd 6/7: say what is
    // wrong with them rather than that the fds are missing.
    if form == Form::Prog && crate::network_fds(&opts).is_none() {
        return Err(match crate::connect_form_problem(&opts.operands) {
            Some(why) if !opts.dashdash => Error::usage(why),
            _ => crate::no_network_fds(&opts),
        });
    }
    crate::with_notification(&opts, || session(&opts, form))
}

fn session(opts: &Options, form: Form) -> Result<i32, Error> {
    let log = Log::new(&crate::TLSC, opts);
    if opts.detach {
        crate::detach()?;
    }
    if opts.pending_connect {
        crate::watch_clear_side(opts.no_sandbox);
    }
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    let ctx = crate::client_context(opts, &env)?;
    crate::connected(log, opts, &form, &env, &ctx)
}
