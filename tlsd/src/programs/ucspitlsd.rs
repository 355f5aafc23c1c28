//! ucspitlsd: delayed TLS on the server side of a UCSPI connection (the UCSPI-TLS
//! protocol, for STARTTLS). The network is on fd 0/1; prog runs at once, as a child, with
//! the network still on its fd 0/1 and `SSLCTLFD`, `SSLREADFD`, `SSLWRITEFD` in its
//! environment. When prog writes `Y` or `y` on SSLCTLFD, the handshake runs on fd 0/1 and
//! the engine relays between the network and prog's two pipes. The interface is
//! ucspitlsd(1).
//!
//! The story of a connection:
//! 1. the command line and the environment, checked before any network I/O;
//! 2. the context built from CERTFILE/KEYFILE, the SNI pairs and the client CA, before prog
//!    starts: a configuration error never reaches a client half-way through its session;
//! 3. with -L, the PROXY protocol header read (the first bytes on the connection, before
//!    prog's clear text) and the client it names put in prog's TCP variables;
//! 4. prog started, with the program's own credentials and the secrets stripped;
//! 5. prog's command awaited: EOF declines TLS and ucspitlsd only waits for prog;
//! 6. the engine's credentials dropped to TLS_UID/TLS_GID, then the handshake, its timeout
//!    counted from the command; the description on SSLCTLFD after `Y`;
//! 7. the engine relays; the exit code is prog's unless the engine failed.

use stls::child::Credentials;
use stls::cli;
use stls::context;
use stls::env::Env;
use stls::exit::Error;
use stls::log::{self, Log};
use stls::process;

/// ucspitlsd, on this process's command line and environment; exits with its status.
pub fn main() -> ! {
    log::exit_with(crate::UCSPITLSD.name, ucspitlsd())
}

fn ucspitlsd() -> Result<i32, Error> {
    let Some(opts) = cli::parse_args(&crate::UCSPITLSD)? else {
        return Ok(0);
    };
    let log = Log::new(&crate::UCSPITLSD, &opts);
    if opts.operands.is_empty() {
        return Err(Error::usage(
            "no program to run (usage: ucspitlsd [options] [--] prog...)",
        ));
    }
    crate::check_network()?;
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    let server = context::server(&crate::settings(&opts, log), &env)?;
    crate::proxy_header_first(&opts)?;
    let launched = crate::launch_delayed(
        crate::UCSPITLSD.name,
        &opts.operands,
        &opts,
        &Credentials::default(),
    )?;
    crate::serve_delayed(&opts, &env, log, &server, launched)
}
