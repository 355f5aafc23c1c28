//! tlsclient: connect to HOST PORT, then tlsc's session over that connection. The
//! interface is tlsclient(1).
//!
//! The story:
//! 1. the command line: HOST, PORT, and prog if any;
//! 2. the environment and the context (trust, the client certificate);
//! 3. the name to verify and send as SNI: `-k`, else HOST;
//! 4. HOST resolved with getaddrinfo (so /etc/hosts and nsswitch apply), unless it is an
//!    address; every address tried in order, each bounded by `-T`;
//! 5. `PROTO` and the TCP variables exported, the connection moved to fd 6/7 for prog;
//! 6. tlsc's session: with prog, prog on fds 6/7; without, clear text on stdin/stdout.

use crate::{Network, Peer};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::io::IntoRawFd;
use stls::cli;
use stls::env::Env;
use stls::exit::{self, Error};
use stls::log::{self, Log};
use stls::options::{Family, Options};
use stls::{fd, process};

/// tlsclient, on this process's command line and environment; exits with its status.
pub fn main() -> ! {
    log::exit_with(crate::TLSCLIENT.name, tlsclient())
}

fn tlsclient() -> Result<i32, Error> {
    let Some(mut opts) = cli::parse_args(&crate::TLSCLIENT)? else {
        return Ok(0);
    };
    let (host, port) = destination(&mut opts)?;
    crate::with_notification(&opts, || session(&opts, &host, port))
}

/// HOST and PORT off the front of the operands; what remains is prog.
fn destination(opts: &mut Options) -> Result<(String, u16), Error> {
    let usage = "usage: tlsclient [options] [--] HOST PORT [prog...]";
    if opts.operands.len() < 2 {
        return Err(Error::usage(format!("HOST and PORT are needed ({usage})")));
    }
    let rest = opts.operands.split_off(2);
    let ops = std::mem::replace(&mut opts.operands, rest);
    let host = ops[0]
        .to_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::usage(format!("invalid host: {}", ops[0].to_string_lossy())))?
        .to_string();
    let port = ops[1]
        .to_str()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|&p| p != 0)
        .ok_or_else(|| {
            Error::usage(format!(
                "invalid port: {} (give a number from 1 to 65535)",
                ops[1].to_string_lossy()
            ))
        })?;
    Ok((host, port))
}

fn session(opts: &Options, host: &str, port: u16) -> Result<i32, Error> {
    let log = Log::new(&crate::TLSCLIENT, opts);
    let env = Env::from_process()?;
    process::init_openssl(env.openssl_conf);
    let ctx = crate::client_context(opts, &env)?;
    let literal = crate::parse_ip(host);
    let name = match literal {
        Some((ip, _)) => ip.to_string(),
        None => host.trim_end_matches('.').to_string(),
    };
    let peer = Peer::named(opts, Some(name))?;
    let addrs = addresses(host, port, opts.family)?;
    let conn = connect_any(host, &addrs, opts, log)?;
    export_tcp_env(&conn);
    let prog = !opts.operands.is_empty();
    let (rfd, wfd) = if prog {
        // tlsc's prog form: the network on fd 6/7, which the launcher then gives prog's
        // clear text (so no pipe can land there before).
        let s = conn.into_raw_fd();
        for n in [opts.read_fd, opts.write_fd] {
            fd::dup2(s, n).map_err(|e| Error::sys("unable to move the connection", e))?;
        }
        if s != opts.read_fd && s != opts.write_fd {
            fd::close(s);
        }
        (opts.read_fd, opts.write_fd)
    } else {
        crate::split(conn)?
    };
    let net = Network { rfd, wfd, prog };
    crate::session(log, opts, &env, &ctx, &peer, net)
}

/// HOST's addresses in the resolver's order (an address stands for itself), only those of
/// the family `-4`/`-6` ask for.
fn addresses(host: &str, port: u16, family: Family) -> Result<Vec<SocketAddr>, Error> {
    let all: Vec<SocketAddr> = match crate::parse_ip(host) {
        Some((IpAddr::V6(ip), scope)) => vec![SocketAddr::V6(std::net::SocketAddrV6::new(
            ip, port, 0, scope,
        ))],
        Some((ip, _)) => vec![SocketAddr::new(ip, port)],
        None => (host, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::new(
                    exit::SYSTEM,
                    format!(
                        "unable to resolve {host}: {}",
                        resolver_text(&exit::io_text(&e))
                    ),
                )
            })?
            .collect(),
    };
    let wanted: Vec<SocketAddr> = all
        .into_iter()
        .filter(|a| match family {
            Family::Any => true,
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        })
        .collect();
    if wanted.is_empty() {
        let what = match family {
            Family::V4 => "no IPv4 address",
            Family::V6 => "no IPv6 address",
            Family::Any => "no address",
        };
        return Err(Error::new(
            exit::SYSTEM,
            format!("unable to resolve {host}: it has {what}"),
        ));
    }
    Ok(wanted)
}

/// The resolver's reason without the Rust library's prefix.
fn resolver_text(s: &str) -> String {
    s.strip_prefix("failed to lookup address information: ")
        .unwrap_or(s)
        .to_string()
}

/// The first address of `addrs` that accepts within `-T`; each failure is a warning, all of
/// them one fatal line.
fn connect_any(
    host: &str,
    addrs: &[SocketAddr],
    opts: &Options,
    log: Log,
) -> Result<TcpStream, Error> {
    let mut why = Vec::new();
    for sa in addrs {
        match crate::connect_stream(*sa, opts.connect_timeout) {
            Ok(s) => return Ok(s),
            Err(e) => {
                if addrs.len() > 1 {
                    log.warn(&e.msg);
                }
                why.push(e.msg);
            }
        }
    }
    Err(Error::new(
        exit::SYSTEM,
        match why.len() {
            1 => why.remove(0),
            n => format!("unable to connect to {host}: all {n} addresses failed"),
        },
    ))
}

/// `PROTO` and the connection's addresses, as tcpclient and s6-tcpclient set them.
fn export_tcp_env(s: &TcpStream) {
    let show = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4).to_string(),
        v4 => v4.to_string(),
    };
    let set = |k: &str, v: String| std::env::set_var(k, OsString::from(v));
    set("PROTO", "TCP".into());
    if let Ok(r) = s.peer_addr() {
        set("TCPREMOTEIP", show(r.ip()));
        set("TCPREMOTEPORT", r.port().to_string());
    }
    if let Ok(l) = s.local_addr() {
        set("TCPLOCALIP", show(l.ip()));
        set("TCPLOCALPORT", l.port().to_string());
    }
    for k in ["TCPLOCALHOST", "TCPREMOTEHOST", "TCPREMOTEINFO"] {
        std::env::remove_var(k);
    }
}
