//! tlsd: the server side of a UCSPI connection. The network is on fd 0/1 (tcpserver,
//! s6-tcpserver, inetd `nowait`, systemd `Accept=yes`); after the handshake, prog runs as a
//! child with clear text on its fd 0/1 and the `SSL_*` variables, and the engine relays until
//! both directions are closed and prog is reaped. The interface is tlsd(1).
//!
//! The story of a connection:
//! 1. the command line and the environment, checked before any network I/O;
//! 2. the launcher forked (it will exec prog with the program's own credentials);
//! 3. the context built from CERTFILE/KEYFILE, the SNI pairs and the client CA;
//! 4. the engine's credentials dropped to TLS_UID/TLS_GID, the PROXY protocol header read
//!    with -L (the client's address for prog), then the handshake;
//! 5. the heap trimmed, prog started with the session's description;
//! 6. the engine relays; the exit code is prog's unless the engine failed.

use stls::child::{Launcher, Selfpipe};
use stls::cli::{self, Log};
use stls::context::{self, ServerSettings};
use stls::env::{self, Env};
use stls::exit::{self, Error};
use stls::options::{Command, Groups, Options};
use stls::session;
use stls::{fd, process, Fds, Tls};

const TLSD: Command = Command {
    name: "tlsd",
    groups: Groups::COMMON.with(Groups::SERVER).with(Groups::PROXY),
    usage: "usage: tlsd [options] [--] prog...\n\
            TLS server side of a UCSPI connection: the network on fd 0/1, prog gets clear text on its fd 0/1.\n",
};

fn main() {
    cli::exit_with(TLSD.name, tlsd())
}

fn tlsd() -> Result<i32, Error> {
    let Some(opts) = cli::parse_args(&TLSD)? else {
        return Ok(0);
    };
    let log = Log::new(&TLSD, &opts);
    if opts.operands.is_empty() {
        return Err(Error::usage(
            "no program to run (usage: tlsd [options] [--] prog...)",
        ));
    }
    if !fd::is_network(0) || !fd::is_network(1) {
        return Err(Error::new(
            exit::SYSTEM,
            "the network must be on fd 0 and fd 1, and they are closed or /dev/null",
        ));
    }
    // inetd `nowait` puts the socket on fd 2 too: messages must not enter the TLS stream.
    if fd::is_socket(2) && fd::same_file(0, 2) {
        cli::silence_stderr();
    }
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);

    // The launcher is forked before the context is built: the fork then shares a small
    // heap, and the parent's later writes to its heap do not each take a copy-on-write
    // fault (about a tenth of a connection's CPU). A configuration error aborts it.
    let selfpipe = Selfpipe::install()?;
    let mut launcher = Launcher::spawn(TLSD.name, &opts.operands, 0, 1, &[selfpipe.rfd])?;
    let (proxied, mut tls) = match handshake(&opts, &env, &launcher, log) {
        Ok(t) => t,
        Err(e) => {
            launcher.abort();
            return Err(e);
        }
    };

    process::trim_heap();
    let mut desc = session::describe(tls.ssl(), None);
    if let Some(p) = proxied {
        stls::proxy::describe(p, &mut desc);
    }
    log.info(&cli::session_line(&desc));
    launcher.start(&cli::child_description(&opts, desc));
    let fds = Fds {
        clear_in: launcher.from_app,
        clear_out: launcher.to_app,
        cipher_in: 0,
        cipher_out: 1,
        selfpipe: selfpipe.rfd,
    };
    let out = stls::run(
        &mut tls,
        fds,
        Some(launcher.pid),
        &cli::engine_config(&opts),
    );
    Ok(cli::conclude(&log, out))
}

/// Build the context, drop the engine's privileges, read the PROXY protocol header (-L),
/// and run the handshake on fd 0/1.
fn handshake(
    opts: &Options,
    env: &Env,
    launcher: &Launcher,
    log: Log,
) -> Result<(Option<stls::proxy::Proxied>, Tls), Error> {
    let settings = ServerSettings {
        log,
        client_cert: opts.client_cert,
        sni_level: opts.sni_level,
        enforce_close_notify: opts.enforce_close_notify,
    };
    let server = context::server(&settings, env)?;
    let run = || {
        env::drop_privileges(env.uid, env.gid)?;
        // The header and the handshake behind it share one deadline.
        let deadline = cli::deadline(opts);
        let proxied = cli::proxy_header(opts, 0, deadline)?;
        stls::nonblocking(&[0, 1, launcher.to_app, launcher.from_app])?;
        fd::nodelay(1);
        let mut tls = Tls::new(&server.ctx, 0, 1)?;
        tls.ssl_mut().set_accept_state();
        tls.handshake(deadline)?;
        Ok((proxied, tls))
    };
    run().map_err(|e| server.handshake_error(e))
}
