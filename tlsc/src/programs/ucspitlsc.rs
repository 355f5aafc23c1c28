//! ucspitlsc: delayed TLS on the client side of a UCSPI connection (the UCSPI-TLS
//! protocol, for STARTTLS). The network is on fd 6/7 (after tcpclient; `-6`/`-7` say
//! otherwise); prog runs at once, as a child, with the network still on those fds and
//! `SSLCTLFD`, `SSLREADFD`, `SSLWRITEFD` in its environment. When prog writes `Y` or `y` on
//! SSLCTLFD, the handshake runs on the network fds, the server verified as tlsc verifies
//! it, and the engine relays between the network and prog's two pipes. The interface is
//! ucspitlsc(1).
//!
//! The story:
//! 1. the command line, the notification fd, the network fds;
//! 2. the environment and the context (trust, the client certificate), and the name to
//!    verify (`-k`, else TCPREMOTEIP), before prog starts;
//! 3. prog started, with the program's own credentials and the secrets stripped;
//! 4. prog's command awaited: EOF declines TLS and ucspitlsc only waits for prog;
//! 5. the engine's credentials dropped, then the handshake with SNI and verification, its
//!    timeout counted from the command; the description on SSLCTLFD after `Y` (and `-d`);
//! 6. the engine relays; the exit code is prog's unless the engine failed.

use crate::Peer;
use stls::cli;
use stls::env::Env;
use stls::exit::{self, Error};
use stls::log::{self, Log};
use stls::{fd, process};

/// ucspitlsc, on this process's command line and environment; exits with its status.
pub fn main() -> ! {
    log::exit_with(crate::UCSPITLSC.name, ucspitlsc())
}

fn ucspitlsc() -> Result<i32, Error> {
    let Some(opts) = cli::parse_args(&crate::UCSPITLSC)? else {
        return Ok(0);
    };
    if opts.operands.is_empty() {
        return Err(Error::usage(
            "no program to run (usage: ucspitlsc [options] [--] prog...)",
        ));
    }
    let net = (opts.read_fd, opts.write_fd);
    if !fd::is_network(net.0) || !fd::is_network(net.1) {
        return Err(Error::new(
            exit::SYSTEM,
            format!(
                "the network must be on fd {} and fd {}, and they are closed or /dev/null \
                 (run ucspitlsc under tcpclient, or give -6 and -7)",
                net.0, net.1
            ),
        ));
    }
    crate::with_notification(&opts, || {
        let log = Log::new(&crate::UCSPITLSC, &opts);
        if opts.detach {
            crate::detach()?;
        }
        let env = Env::from_process()?;
        process::init_openssl(env.openssl_conf);
        let ctx = crate::client_context(&opts, &env)?;
        let peer = Peer::named(&opts, env.tcpremoteip.clone())?;
        let launched = crate::launch_delayed(crate::UCSPITLSC.name, &opts)?;
        crate::serve_delayed(log, &opts, &env, &ctx, &peer, net, launched)
    })
}
