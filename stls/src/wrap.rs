//! The two wrappers' whole flow, shared: options, environment, context, the launcher,
//! the privilege drop, the handshake, the session description, the engine, the exit code.
//! `tlsd` and `tlsc` main functions only call `tlsd()` / `tlsc()`.

use crate::child::{Launcher, Selfpipe};
use crate::context;
use crate::engine::{self, End, Fds, Outcome};
use crate::env::{self, Env};
use crate::exit::{self, Error};
use crate::fd;
use crate::handshake::{nonblocking, Tls};
use crate::options::{self, Options, Program};
use crate::session::Description;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::io::{AsRawFd, IntoRawFd, RawFd};
use std::time::Instant;

/// Print `prog: fatal: msg` (always, whatever the verbosity).
pub fn report(prog: Program, e: &Error) {
    eprintln!("{}: fatal: {}", prog.name(), e.msg);
}

fn warn(prog: Program, opts: &Options, msg: &str) {
    if opts.verbosity >= 1 {
        eprintln!("{}: warning: {msg}", prog.name());
    }
}

fn info(prog: Program, opts: &Options, msg: &str) {
    if opts.verbosity >= 2 {
        eprintln!("{}: info: {msg}", prog.name());
    }
}

/// OpenSSL's start-up, trimmed for a process that serves one connection (issue 5: it is a
/// large part of the per-handshake CPU). Everything skipped here is looked up on demand:
/// - the system configuration (`openssl.cnf`) is not read unless OPENSSL_CONF names one;
/// - the error strings (thousands of hash-table inserts) are loaded by `exit::ssl_reason`
///   only when a message is about to be printed;
/// - the legacy name table of all ciphers is not filled: libssl 3 fetches its ciphers from
///   the providers by name. (The digests' table is needed: the security level check of a
///   CA-signed certificate looks its signature digest up there, and fails without it.)
/// - no atexit handler: the process exits without tearing OpenSSL down.
///
/// Must run before any other OpenSSL call: the first caller's flags win.
pub fn init_openssl(load_config: bool) {
    const NO_LOAD_CRYPTO_STRINGS: u64 = 0x01;
    const NO_ADD_ALL_CIPHERS: u64 = 0x10;
    const NO_LOAD_CONFIG: u64 = 0x80;
    const NO_ATEXIT: u64 = 0x0008_0000;
    const NO_LOAD_SSL_STRINGS: u64 = 0x0010_0000;
    let mut flags = NO_LOAD_CRYPTO_STRINGS | NO_LOAD_SSL_STRINGS | NO_ADD_ALL_CIPHERS | NO_ATEXIT;
    if !load_config {
        flags |= NO_LOAD_CONFIG;
    }
    unsafe { openssl_sys::OPENSSL_init_ssl(flags, std::ptr::null()) };
    // rust-openssl's own once-only initialisation; OpenSSL's parts of it are done already.
    openssl::init();
}

/// After the handshake: give the heap's free memory (context building, certificate and key
/// parsing, handshake scratch) back to the kernel, so that an idle connection costs only
/// what it still uses (issue 5, memory per idle connection). From here on, blocks of the
/// engine's buffer size come from mmap: calloc would zero a recycled heap chunk page by
/// page, while fresh mapped pages are touched only as far as data goes (64 kB per idle
/// connection, measured).
fn trim_heap() {
    unsafe {
        libc::malloc_trim(0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, crate::engine::BUF as libc::c_int);
    }
}

fn exit_with(prog: Program, r: Result<i32, Error>) -> ! {
    let code = match r {
        Ok(c) => c,
        Err(e) => {
            report(prog, &e);
            e.code
        }
    };
    std::process::exit(code)
}

/// Parse the command line; `None` when --help or --version was answered.
fn parse_args(prog: Program) -> Result<Option<Options>, Error> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let opts = options::parse(prog, &args)?;
    if opts.help {
        print!("{}", options::help(prog));
        return Ok(None);
    }
    if opts.version {
        println!("{} {}", prog.name(), env!("CARGO_PKG_VERSION"));
        return Ok(None);
    }
    Ok(Some(opts))
}

fn engine_config(opts: &Options) -> engine::Config {
    engine::Config {
        close_notify: opts.close_notify,
        enforce_close_notify: opts.enforce_close_notify,
        idle_timeout: opts.idle_timeout,
        ..engine::Config::default()
    }
}

fn deadline(opts: &Options) -> Option<Instant> {
    opts.handshake_timeout.map(|d| Instant::now() + d)
}

/// The child's environment edits: the session, then the secrets removed unless `-Z`.
fn child_description(opts: &Options, mut desc: Description) -> Description {
    if !opts.keep_env {
        for (k, _) in std::env::vars_os() {
            if env::is_secret(&k) {
                desc.unset(&k);
            }
        }
    }
    desc
}

/// The exit code of a finished relay.
fn conclude(prog: Program, opts: &Options, out: Outcome) -> i32 {
    match out.end {
        End::Tls(m) => {
            report(prog, &Error::tls(m));
            exit::TLS
        }
        End::System(m) => {
            report(prog, &Error::new(exit::SYSTEM, m));
            exit::SYSTEM
        }
        End::Clean => {
            if out.idle_expired {
                info(prog, opts, "idle timeout: session closed");
            }
            match out.child_status {
                Some(st) => {
                    if libc::WIFSIGNALED(st) {
                        warn(
                            prog,
                            opts,
                            &format!("child was killed by signal {}", libc::WTERMSIG(st)),
                        );
                    }
                    exit::from_wait_status(st)
                }
                None => 0,
            }
        }
    }
}

fn session_line(desc: &Description) -> String {
    let get = |k| desc.get(k).map(|v| v.to_string_lossy().into_owned());
    let mut s = format!(
        "{} {}",
        get("SSL_PROTOCOL").unwrap_or_default(),
        get("SSL_CIPHER").unwrap_or_default()
    );
    if let Some(n) = get("SSL_TLS_SNI_SERVERNAME") {
        s.push_str(&format!(" sni={n}"));
    }
    if let Ok(ip) = std::env::var("TCPREMOTEIP") {
        s.push_str(&format!(" peer={ip}"));
    }
    s
}

// ---------------------------------------------------------------------------------------
// tlsd

pub fn tlsd() -> ! {
    exit_with(Program::Tlsd, tlsd_inner())
}

fn tlsd_inner() -> Result<i32, Error> {
    let prog = Program::Tlsd;
    let Some(opts) = parse_args(prog)? else {
        return Ok(0);
    };
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
        silence_stderr();
    }
    let env = Env::from_process()?;
    init_openssl(env.openssl_conf);
    // The launcher is forked before the context is built (issue 5: about 10 % of a
    // connection's CPU): the fork then shares a small heap, and the parent's later writes to
    // its heap do not each take a copy-on-write fault. A configuration error aborts it.
    let selfpipe = Selfpipe::install()?;
    let mut launcher = Launcher::spawn("tlsd", &opts.operands, 0, 1, &[selfpipe.rfd])?;
    let server = match context::server(&opts, &env) {
        Ok(s) => s,
        Err(e) => {
            launcher.abort();
            return Err(e);
        }
    };
    let prepared = (|| {
        env::drop_privileges(env.uid, env.gid)?;
        nonblocking(&[0, 1, launcher.to_app, launcher.from_app])?;
        fd::nodelay(1);
        let mut tls = Tls::new(&server.ctx, 0, 1)?;
        tls.ssl_mut().set_accept_state();
        tls.handshake(deadline(&opts))?;
        Ok(tls)
    })();
    let mut tls = match prepared {
        Ok(t) => t,
        Err(e) => {
            launcher.abort();
            let sni = server.sni_error.lock().ok().and_then(|mut s| s.take());
            return Err(sni.unwrap_or(e));
        }
    };
    trim_heap();
    let desc = Description::of(tls.ssl(), None);
    info(prog, &opts, &session_line(&desc));
    launcher.start(&child_description(&opts, desc));
    let fds = Fds {
        clear_in: launcher.from_app,
        clear_out: launcher.to_app,
        cipher_in: 0,
        cipher_out: 1,
        selfpipe: selfpipe.rfd,
    };
    let out = engine::run(&mut tls, fds, Some(launcher.pid), &engine_config(&opts));
    Ok(conclude(prog, &opts, out))
}

fn silence_stderr() {
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        if f.as_raw_fd() == 2 {
            // fd 2 was closed and /dev/null landed on it: keep it.
            let _ = f.into_raw_fd();
            return;
        }
        // `f` is closed when it goes out of scope: only fd 2 keeps /dev/null open.
        let _ = fd::dup2(f.as_raw_fd(), 2);
    }
}

// ---------------------------------------------------------------------------------------
// tlsc

enum Form {
    /// `tlsc [opts] [--] prog...`
    Prog,
    /// `tlsc [opts]`: clear text on fd 0/1.
    Io,
    /// `tlsc [opts] ADDR PORT`: connect, then the io form.
    Connect(SocketAddr),
}

/// An IP literal as found in TCPREMOTEIP, -k or an ADDR operand: IPv4, IPv6 with an
/// optional `%zone` and brackets; a v4-mapped IPv6 address is its IPv4 address.
pub fn parse_ip(s: &str) -> Option<(IpAddr, u32)> {
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let scope = match zone {
        None => 0,
        Some(z) if !ip.is_ipv6() || z.is_empty() => return None,
        Some(z) => match z.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let c = std::ffi::CString::new(z).ok()?;
                let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
                if i == 0 {
                    return None;
                }
                i
            }
        },
    };
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    Some((ip, scope))
}

fn form_of(opts: &Options) -> Result<Form, Error> {
    let ops = &opts.operands;
    if opts.dashdash {
        if ops.is_empty() {
            return Err(Error::usage("no program after --"));
        }
        return Ok(Form::Prog);
    }
    if ops.is_empty() {
        return Ok(Form::Io);
    }
    if ops.len() == 2 {
        let a = ops[0].to_str().and_then(parse_ip);
        let p = ops[1].to_str().and_then(|p| p.parse::<u16>().ok());
        if let (Some((ip, scope)), Some(port)) = (a, p) {
            let sa = match ip {
                IpAddr::V4(v4) => SocketAddr::from((v4, port)),
                IpAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, 0, scope)),
            };
            return Ok(Form::Connect(sa));
        }
    }
    Ok(Form::Prog)
}

pub fn tlsc() -> ! {
    exit_with(Program::Tlsc, tlsc_inner())
}

/// Fork once: the first process exits 0 at once, so whoever spawned tlsc never has to
/// wait for the long-lived one (autossl-shim keeps it out of the host's children).
fn detach() -> Result<(), Error> {
    match unsafe { libc::fork() } {
        -1 => Err(Error::sys(
            "unable to fork",
            std::io::Error::last_os_error(),
        )),
        0 => Ok(()),
        _ => unsafe { libc::_exit(0) },
    }
}

fn tlsc_inner() -> Result<i32, Error> {
    let prog = Program::Tlsc;
    let Some(opts) = parse_args(prog)? else {
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
    let r = tlsc_session(prog, &opts, form);
    if let (Err(_), Some(n)) = (&r, notify) {
        fd::close(n);
    }
    r
}

fn tlsc_session(prog: Program, opts: &Options, form: Form) -> Result<i32, Error> {
    if opts.detach {
        detach()?;
    }
    let env = Env::from_process()?;
    init_openssl(env.openssl_conf);
    let ctx = context::client(opts, &env)?;

    // The name verified: -k, else the address connected to, else TCPREMOTEIP.
    let name = match (&opts.servername, &form) {
        (Some(n), _) => Some(n.trim_end_matches('.').to_string()),
        (None, Form::Connect(sa)) => Some(sa.ip().to_string()),
        (None, _) => env.tcpremoteip.clone(),
    };
    let name_ip = name.as_deref().and_then(parse_ip).map(|(ip, _)| ip);
    if name.is_none() && opts.verify_cert && opts.verify_name {
        return Err(Error::usage(
            "no server name to verify: use -k name, set TCPREMOTEIP, or --no-verify-name",
        ));
    }
    // SNI only for host names (RFC 6066).
    let sni = match (&name, name_ip) {
        (Some(n), None) => Some(n.clone()),
        _ => None,
    };

    let (rfd, wfd) = match &form {
        Form::Connect(sa) => connect(*sa, opts)?,
        _ => {
            let (r, w) = (opts.read_fd, opts.write_fd);
            if !fd::is_network(r) || !fd::is_network(w) {
                return Err(Error::new(
                    exit::SYSTEM,
                    format!(
                        "the network must be on fd {r} and fd {w}, and they are closed or /dev/null"
                    ),
                ));
            }
            (r, w)
        }
    };

    let mut launcher = None;
    let selfpipe = match form {
        Form::Prog => {
            let sp = Selfpipe::install()?;
            let close: Vec<RawFd> = [Some(sp.rfd), opts.notification_fd]
                .into_iter()
                .flatten()
                .collect();
            launcher = Some(Launcher::spawn("tlsc", &opts.operands, rfd, wfd, &close)?);
            sp.rfd
        }
        _ => {
            crate::child::ignore_sigpipe();
            -1
        }
    };
    let prepared = (|| {
        env::drop_privileges(env.uid, env.gid)?;
        let mut fds = vec![rfd, wfd];
        match &launcher {
            Some(l) => fds.extend([l.to_app, l.from_app]),
            None => fds.extend([0, 1]),
        }
        nonblocking(&fds)?;
        fd::nodelay(wfd);
        let mut tls = Tls::new(&ctx, rfd, wfd)?;
        let ssl = tls.ssl_mut();
        ssl.set_connect_state();
        if let Some(s) = &sni {
            ssl.set_hostname(s)
                .map_err(|_| Error::usage(format!("invalid server name: {s}")))?;
        }
        if opts.verify_cert && opts.verify_name {
            let p = ssl.param_mut();
            let r = match (name_ip, &name) {
                (Some(ip), _) => p.set_ip(ip),
                (None, Some(n)) => p.set_host(n),
                (None, None) => Ok(()),
            };
            r.map_err(|_| Error::usage("invalid server name"))?;
        }
        tls.handshake(deadline(opts))?;
        Ok(tls)
    })();
    let mut tls = match prepared {
        Ok(t) => t,
        Err(e) => {
            if let Some(l) = launcher {
                l.abort();
            }
            return Err(e);
        }
    };
    trim_heap();
    let desc = Description::of(tls.ssl(), sni.as_deref());
    info(prog, opts, &session_line(&desc));
    if let Some(n) = opts.notification_fd {
        let r = fd::write_all(n, &desc.encode());
        fd::close(n);
        if let Err(e) = r {
            if let Some(l) = launcher {
                l.abort();
            }
            return Err(Error::sys("unable to write the session description", e));
        }
    }
    if opts.detach {
        // The caller's stderr must not be held open for the connection's lifetime.
        silence_stderr();
    }
    let (fds, pid) = match &mut launcher {
        Some(l) => {
            l.start(&child_description(opts, desc));
            (
                Fds {
                    clear_in: l.from_app,
                    clear_out: l.to_app,
                    cipher_in: rfd,
                    cipher_out: wfd,
                    selfpipe,
                },
                Some(l.pid),
            )
        }
        None => (
            Fds {
                clear_in: 0,
                clear_out: 1,
                cipher_in: rfd,
                cipher_out: wfd,
                selfpipe,
            },
            None,
        ),
    };
    let out = engine::run(&mut tls, fds, pid, &engine_config(opts));
    Ok(conclude(prog, opts, out))
}

/// The `ADDR PORT` form: connect, bounded by the handshake timeout.
fn connect(sa: SocketAddr, opts: &Options) -> Result<(RawFd, RawFd), Error> {
    let s = match opts.handshake_timeout {
        Some(t) => TcpStream::connect_timeout(&sa, t),
        None => TcpStream::connect(sa),
    }
    .map_err(|e| {
        Error::new(
            exit::SYSTEM,
            format!("unable to connect to {sa}: {}", exit::io_text(&e)),
        )
    })?;
    let _ = s.set_nodelay(true);
    let w = s
        .try_clone()
        .map_err(|e| Error::sys("unable to dup the socket", e))?;
    Ok((s.into_raw_fd(), w.into_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::parse_ip;
    use std::net::IpAddr;

    #[test]
    fn ip_forms() {
        let v4: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(parse_ip("127.0.0.1"), Some((v4, 0)));
        assert_eq!(parse_ip("::ffff:127.0.0.1"), Some((v4, 0)));
        assert_eq!(parse_ip("[::1]").map(|x| x.0), "::1".parse().ok());
        assert_eq!(parse_ip("fe80::1%7").map(|x| x.1), Some(7));
        assert_eq!(parse_ip("127.0.0.1%1"), None);
        assert_eq!(parse_ip("localhost"), None);
    }
}
