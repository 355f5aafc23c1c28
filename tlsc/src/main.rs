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
//! 4. the network fds (connected now in the ADDR PORT form);
//! 5. in the prog form, the launcher forked (prog keeps the program's credentials);
//! 6. the engine's credentials dropped, then the handshake with SNI and verification;
//! 7. the description written to `-d`, prog started;
//! 8. the engine relays; the exit code is prog's unless the engine failed.

use std::net::IpAddr;
use std::os::unix::io::RawFd;
use stls::child::{self, Launcher, Selfpipe};
use stls::cli::{self, Log};
use stls::context::{self, ClientSettings};
use stls::env::{self, Env};
use stls::exit::{self, Error};
use stls::options::{Command, Groups, Options};
use stls::session;
use stls::{fd, process, Fds, Tls};
use tlsc::{form_of, parse_ip, Form};

const TLSC: Command = Command {
    name: "tlsc",
    groups: Groups::COMMON.with(Groups::CLIENT).with(Groups::CLIENT_FDS),
    usage: "usage: tlsc [options] [--] prog...   (network on fd 6/7, prog gets clear text on its fd 6/7)\n\
            \x20      tlsc [options]              (io form: clear text on stdin/stdout)\n\
            \x20      tlsc [options] ADDR PORT    (connect first, then the io form)\n",
};

fn main() {
    cli::exit_with(TLSC.name, tlsc())
}

fn tlsc() -> Result<i32, Error> {
    let Some(opts) = cli::parse_args(&TLSC)? else {
        return Ok(0);
    };
    let form = form_of(&opts)?;
    let notify = opts.notification_fd;
    if let Some(n) = notify {
        if !fd::is_open(n) {
            return Err(Error::usage(format!("notification fd {n} is not open")));
        }
        // The app must not inherit it: its reader waits for EOF.
        let _ = fd::set_cloexec(n, true);
    }
    let r = session(&opts, form);
    if let (Err(_), Some(n)) = (&r, notify) {
        fd::close(n);
    }
    r
}

/// The name verified, and the one sent as SNI (host names only).
struct Peer {
    name: Option<String>,
    ip: Option<IpAddr>,
    sni: Option<String>,
}

/// `-k`, else the address connected to, else TCPREMOTEIP.
fn peer_name(opts: &Options, form: &Form, env: &Env) -> Result<Peer, Error> {
    let name = match (&opts.servername, form) {
        (Some(n), _) => Some(n.trim_end_matches('.').to_string()),
        (None, Form::Connect(sa)) => Some(sa.ip().to_string()),
        (None, _) => env.tcpremoteip.clone(),
    };
    let ip = name.as_deref().and_then(parse_ip).map(|(ip, _)| ip);
    if name.is_none() && opts.verify_cert && opts.verify_name {
        return Err(Error::usage(
            "no server name to verify: use -k name, set TCPREMOTEIP, or --no-verify-name",
        ));
    }
    // SNI only for host names (RFC 6066).
    let sni = match (&name, ip) {
        (Some(n), None) => Some(n.clone()),
        _ => None,
    };
    Ok(Peer { name, ip, sni })
}

/// The network's read and write fds: connected now, or the ones the form names.
fn network(opts: &Options, form: &Form) -> Result<(RawFd, RawFd), Error> {
    if let Form::Connect(sa) = form {
        return tlsc::connect(*sa, opts.handshake_timeout);
    }
    let (r, w) = (opts.read_fd, opts.write_fd);
    if !fd::is_network(r) || !fd::is_network(w) {
        return Err(Error::new(
            exit::SYSTEM,
            format!("the network must be on fd {r} and fd {w}, and they are closed or /dev/null"),
        ));
    }
    Ok((r, w))
}

fn session(opts: &Options, form: Form) -> Result<i32, Error> {
    let log = Log::new(&TLSC, opts);
    if opts.detach {
        tlsc::detach()?;
    }
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    let settings = ClientSettings {
        verify_cert: opts.verify_cert,
        send_cert: opts.send_cert,
        enforce_close_notify: opts.enforce_close_notify,
    };
    let ctx = context::client(&settings, &env)?;
    let peer = peer_name(opts, &form, &env)?;
    let (rfd, wfd) = network(opts, &form)?;

    let mut launcher = None;
    let selfpipe = match form {
        Form::Prog => {
            let sp = Selfpipe::install()?;
            let close: Vec<RawFd> = [Some(sp.rfd), opts.notification_fd]
                .into_iter()
                .flatten()
                .collect();
            launcher = Some(Launcher::spawn(
                TLSC.name,
                &opts.operands,
                rfd,
                wfd,
                &close,
            )?);
            sp.rfd
        }
        _ => {
            child::ignore_sigpipe();
            -1
        }
    };
    let app = match &launcher {
        Some(l) => (l.from_app, l.to_app),
        None => (0, 1),
    };
    let handshake = || {
        env::drop_privileges(env.uid, env.gid)?;
        stls::nonblocking(&[rfd, wfd, app.0, app.1])?;
        fd::nodelay(wfd);
        let mut tls = Tls::new(&ctx, rfd, wfd)?;
        let ssl = tls.ssl_mut();
        ssl.set_connect_state();
        if let Some(s) = &peer.sni {
            ssl.set_hostname(s)
                .map_err(|_| Error::usage(format!("invalid server name: {s}")))?;
        }
        if opts.verify_cert && opts.verify_name {
            let p = ssl.param_mut();
            let r = match (peer.ip, &peer.name) {
                (Some(ip), _) => p.set_ip(ip),
                (None, Some(n)) => p.set_host(n),
                (None, None) => Ok(()),
            };
            r.map_err(|_| Error::usage("invalid server name"))?;
        }
        tls.handshake(cli::deadline(opts))?;
        let desc = session::describe(tls.ssl(), peer.sni.as_deref());
        if let Some(n) = opts.notification_fd {
            let r = fd::write_all(n, &desc.encode());
            fd::close(n);
            r.map_err(|e| Error::sys("unable to write the session description", e))?;
        }
        Ok((tls, desc))
    };
    let (mut tls, desc) = match handshake() {
        Ok(t) => t,
        Err(e) => {
            if let Some(l) = launcher {
                l.abort();
            }
            return Err(e);
        }
    };

    process::trim_heap();
    log.info(&cli::session_line(&desc));
    if opts.detach {
        // The caller's stderr must not be held open for the connection's lifetime.
        cli::silence_stderr();
    }
    let pid = launcher.as_mut().map(|l| {
        l.start(&cli::child_description(opts, desc));
        l.pid
    });
    let fds = Fds {
        clear_in: app.0,
        clear_out: app.1,
        cipher_in: rfd,
        cipher_out: wfd,
        selfpipe,
    };
    let out = stls::run(&mut tls, fds, pid, &cli::engine_config(opts));
    Ok(cli::conclude(&log, out))
}
