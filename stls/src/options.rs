//! The programs' command-line options, defined once: each option's names, value name,
//! default, group (which programs take it) and help line. The table drives parsing,
//! [`Options::default`] and `--help` ([`crate::help`]); the environment variables have
//! their table beside it ([`crate::variables`]), in the same groups; the documentation
//! test compares both tables with `--help` and every manual page, in both directions. A
//! program describes itself with a [`Command`] (its name, its [`Groups`], its usage
//! text); the parser knows no program.

use crate::exit::Error;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

/// The groups a program belongs to, which say the options it takes and the variables it
/// reads and sets: every program takes [`Groups::COMMON`], a server side program
/// [`Groups::SERVER`], a client side one [`Groups::CLIENT`]. An option belongs to exactly
/// one group, so one table serves every program.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Groups(u16);

impl Groups {
    /// The engine's and the process's options, taken by every program.
    pub const COMMON: Groups = Groups(1);
    /// The server side's handshake options (client certificates, SNI selection).
    pub const SERVER: Groups = Groups(2);
    /// The client side's options (verification, notification fd).
    pub const CLIENT: Groups = Groups(4);
    /// A client that finds its network on fds (`-6`, `-7`, `--detach`).
    pub const CLIENT_FDS: Groups = Groups(8);
    /// A server that listens and accepts itself (`-c`, `-C`, `-b`, `-u`, `-g`, `-U`, `-n`).
    pub const LISTEN: Groups = Groups(16);
    /// A client that connects itself (`-4`, `-6`, `-T`).
    pub const CONNECT: Groups = Groups(32);
    /// The PROXY protocol (`-L`), for a server side program that reads it.
    pub const PROXY: Groups = Groups(64);
    /// autossl-shim's helper: a connect still in progress, filler to discard (tlsc only).
    pub const SHIM: Groups = Groups(128);
    /// prog gets the session in its environment after the handshake (no option of its own).
    pub const NOT_DELAYED: Groups = Groups(512);
    /// prog starts at once and may ask for TLS on SSLCTLFD (UCSPI-TLS; no option of its
    /// own: `tlsserver -n` or a delayed wrapper).
    pub const DELAYED: Groups = Groups(1024);
    /// autossl-shim's server side: no prog, clear text on a given fd (tlsd only).
    pub const SHIM_SERVER: Groups = Groups(256);

    /// Both sets of groups.
    pub const fn with(self, other: Groups) -> Groups {
        Groups(self.0 | other.0)
    }

    /// Whether every group of `other` is in `self`.
    pub const fn contains(self, other: Groups) -> bool {
        self.0 & other.0 == other.0
    }
}

/// What a program tells the parser and `--help` about itself.
#[derive(Clone, Copy, Debug)]
pub struct Command {
    /// The program's name, used in messages.
    pub name: &'static str,
    /// The option groups it takes.
    pub groups: Groups,
    /// The `--help` text above the options: the usage lines and a one-line summary.
    pub usage: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Id {
    CloseNotify(bool),
    Enforce(bool),
    Keep(bool),
    HandshakeTimeout,
    IdleTimeout,
    Verbosity,
    NoSandbox,
    Help,
    Version,
    // the server side
    ClientCert(ClientCert),
    SniLevel,
    SniLevelIs(u8),
    ProxyProtocol,
    // the client side
    SendCert(bool),
    ServerName,
    ReadFd,
    WriteFd,
    NoVerifyCert,
    NoVerifyName,
    NotificationFd,
    Detach,
    PendingConnect,
    Discard,
    CheckHost,
    HostFromRequest,
    LogFd,
    Serve,
    ServeIdle,
    // autossl-shim's server side
    ClearFd,
    SessionAt,
    // a server that listens
    MaxConn,
    MaxConnPerIp,
    Backlog,
    AppUid,
    AppGid,
    AppFromEnv,
    Delayed,
    // a client that connects
    Family(Family),
    ConnectTimeout,
}

/// An option's default, as the table states it once for parsing, `--help` and the pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Initially {
    /// Nothing to say: the option is off unless given.
    Unsaid,
    /// A flag whose state is the default (`-S`: close_notify is sent unless `-s`).
    Set,
    /// A value, parsed as the option's own by [`Options::default`] (`-K`: `30s`).
    Value(&'static str),
    /// A default that no value of the option says (`-C`: half of `-c`).
    Words(&'static str),
}

/// One option: its forms, its argument's name (if it takes one), its default, its help
/// line and its group.
pub struct Opt {
    /// The short form's letter, if any.
    pub short: Option<char>,
    /// The long form, without its leading `--`.
    pub long: &'static str,
    /// The argument's name in `--help`, for an option that takes one.
    pub arg: Option<&'static str>,
    /// The line in `--help`.
    pub help: &'static str,
    /// The group the option belongs to.
    pub group: Groups,
    /// Its default.
    pub default: Initially,
    id: Id,
}

impl Opt {
    /// The option with the default value `v` (see [`Initially::Value`]).
    const fn default_value(self, v: &'static str) -> Opt {
        Opt {
            default: Initially::Value(v),
            ..self
        }
    }

    /// The option with a default that no value says (see [`Initially::Words`]).
    const fn default_words(self, w: &'static str) -> Opt {
        Opt {
            default: Initially::Words(w),
            ..self
        }
    }

    /// The flag, its state the default (see [`Initially::Set`]).
    const fn default_set(self) -> Opt {
        Opt {
            default: Initially::Set,
            ..self
        }
    }
}

const fn opt(
    group: Groups,
    short: Option<char>,
    long: &'static str,
    arg: Option<&'static str>,
    id: Id,
    help: &'static str,
) -> Opt {
    Opt {
        short,
        long,
        arg,
        help,
        group,
        default: Initially::Unsaid,
        id,
    }
}

const fn both(
    short: Option<char>,
    long: &'static str,
    arg: Option<&'static str>,
    id: Id,
    help: &'static str,
) -> Opt {
    opt(Groups::COMMON, short, long, arg, id, help)
}

const SERVER: Groups = Groups::SERVER;
const CLIENT: Groups = Groups::CLIENT;
const CLIENT_FDS: Groups = Groups::CLIENT_FDS;
const LISTEN: Groups = Groups::LISTEN;
const CONNECT: Groups = Groups::CONNECT;
const PROXY: Groups = Groups::PROXY;
const SHIM: Groups = Groups::SHIM;
const SHIM_SERVER: Groups = Groups::SHIM_SERVER;

/// Every option of every program. Short letters may mean different things in different
/// groups (`-k`, `-y`, `-Y`), as in s6-networking; a program never takes two groups that
/// share a letter.
pub static OPTIONS: &[Opt] = &[
    both(Some('S'), "close-notify", None, Id::CloseNotify(true),
        "at local EOF send close_notify, then shut down writing and keep reading").default_set(),
    both(Some('s'), "no-close-notify", None, Id::CloseNotify(false),
        "at local EOF only shut down writing (no close_notify)"),
    both(Some('J'), "enforce-close-notify", None, Id::Enforce(true),
        "a TCP EOF without close_notify is a truncation error (exit 98)"),
    both(Some('j'), "no-enforce-close-notify", None, Id::Enforce(false),
        "a TCP EOF without close_notify is a normal EOF").default_set(),
    both(Some('Z'), "keep", None, Id::Keep(true),
        "keep the variables of \"removed unless -Z\" below in prog's environment"),
    both(Some('z'), "no-keep", None, Id::Keep(false),
        "remove those variables from prog's environment").default_set(),
    both(Some('K'), "handshake-timeout", Some("DUR"), Id::HandshakeTimeout,
        "handshake timeout: milliseconds, or a duration such as 10s (0: none)")
        .default_value("30s"),
    both(None, "idle-timeout", Some("DUR"), Id::IdleTimeout,
        "close the session as at local EOF after DUR without data either way")
        .default_words("none"),
    both(Some('v'), "verbosity", Some("N"), Id::Verbosity,
        "0: fatal errors only, 1: warnings too, 2: a line per connection").default_value("1"),
    both(None, "no-sandbox", None, Id::NoSandbox,
        "do not confine the engine's process (a debugging aid: see Confinement in stls(7))"),
    opt(SERVER, Some('Y'), "optional-client-cert", None, Id::ClientCert(ClientCert::Optional),
        "ask for a client certificate and verify it if given (needs CADIR or CAFILE)"),
    opt(SERVER, Some('y'), "require-client-cert", None, Id::ClientCert(ClientCert::Required),
        "require a client certificate and verify it (needs CADIR or CAFILE)"),
    opt(SERVER, Some('k'), "sni-level", Some("N"), Id::SniLevel,
        "0: always CERTFILE/KEYFILE; 1: the CERTFILE:name pair matching SNI, else the default; 2: only named pairs")
        .default_value("0"),
    opt(SERVER, None, "sni", None, Id::SniLevelIs(1), "same as --sni-level=1"),
    opt(SERVER, None, "mandatory-sni", None, Id::SniLevelIs(2), "same as --sni-level=2"),
    opt(PROXY, Some('L'), "proxy-protocol", None, Id::ProxyProtocol,
        "read a PROXY protocol header (v1 or v2) before the handshake: the app sees the client's address"),
    opt(CLIENT, Some('y'), "client-cert", None, Id::SendCert(true),
        "send CERTFILE/KEYFILE as a client certificate"),
    opt(CLIENT, Some('Y'), "no-client-cert", None, Id::SendCert(false),
        "send no client certificate").default_set(),
    opt(CLIENT, Some('k'), "servername", Some("NAME"), Id::ServerName,
        "the server's name: sent as SNI and verified (an IP address: checked against IP SANs, no SNI)"),
    opt(CLIENT_FDS, Some('6'), "read-fd", Some("FD"), Id::ReadFd,
        "read the network from FD").default_value("6"),
    opt(CLIENT_FDS, Some('7'), "write-fd", Some("FD"), Id::WriteFd,
        "write the network to FD").default_value("7"),
    opt(CLIENT, None, "no-verify-cert", None, Id::NoVerifyCert,
        "do not verify the server's certificate chain (insecure)"),
    opt(CLIENT, None, "no-verify-name", None, Id::NoVerifyName,
        "do not verify the server's name (insecure)"),
    opt(CLIENT, Some('d'), "notification-fd", Some("FD"), Id::NotificationFd,
        "after the handshake write the session description to FD and close it"),
    opt(CLIENT_FDS, None, "detach", None, Id::Detach,
        "fork at start: the first process exits 0 at once; with -d, a failure is reported there too (for autossl-shim)"),
    opt(SHIM, None, "pending-connect", None, Id::PendingConnect,
        "the network's connect is in progress: wait for it; with -d, report a failure there, not on stderr"),
    opt(SHIM, None, "discard", Some("N"), Id::Discard,
        "after the handshake, drop the first N bytes of clear input (autossl-shim's filler)"),
    opt(SHIM, None, "check-host", None, Id::CheckHost,
        "send nothing if an HTTP/1.x request in the first clear input names a host other than -k's"),
    opt(SHIM, None, "host-from-request", Some("NAMES"), Id::HostFromRequest,
        "no -k: the host an HTTP/1.x request in the first clear input names, if one of NAMES (a,b), is the name"),
    opt(SHIM, None, "log-fd", Some("FD"), Id::LogFd,
        "with --detach: messages after the connection is ready go to FD until the first request is judged"),
    opt(SHIM, None, "serve", Some("PATH"), Id::Serve,
        "autossl-shim's helper: serve the connections handed over the Unix socket PATH"),
    opt(SHIM, None, "serve-idle", Some("DUR"), Id::ServeIdle,
        "with --serve: end after DUR with no connection (0: never)").default_value("60s"),
    opt(SHIM_SERVER, None, "clear-fd", Some("FD"), Id::ClearFd,
        "no prog: after the handshake, clear text on the socket FD (autossl-shim's server side)"),
    opt(SHIM_SERVER, None, "session-at", Some("FD:OFFSET"), Id::SessionAt,
        "after the handshake, write the session description at OFFSET in FD, its length last (autossl-shim)"),
    opt(LISTEN, Some('c'), "maxconn", Some("N"), Id::MaxConn,
        "at most N connections at once; at the limit, end the one longest in its handshake, else wait")
        .default_value("40"),
    opt(LISTEN, Some('C'), "maxconn-per-ip", Some("N"), Id::MaxConnPerIp,
        "at most N connections at once from one address; over it, end its longest handshake, else close the new one (0: no limit)")
        .default_words("half of -c"),
    opt(LISTEN, Some('b'), "backlog", Some("N"), Id::Backlog,
        "the listen queue's length").default_words("the system's maximum"),
    opt(LISTEN, Some('u'), "uid", Some("UID"), Id::AppUid,
        "run prog with user id UID (the engine keeps TLS_UID)"),
    opt(LISTEN, Some('g'), "gid", Some("GID"), Id::AppGid,
        "run prog with group id GID and no supplementary groups (the engine keeps TLS_GID)"),
    opt(LISTEN, Some('U'), "uid-from-env", None, Id::AppFromEnv,
        "run prog with the ids in UID, GID and GIDLIST, as s6-applyuidgid -U"),
    opt(LISTEN, Some('n'), "delayed", None, Id::Delayed,
        "delayed TLS (UCSPI-TLS, for STARTTLS): prog starts at once in clear text and asks for TLS on SSLCTLFD"),
    opt(CONNECT, Some('4'), "ipv4", None, Id::Family(Family::V4),
        "connect over IPv4 only"),
    opt(CONNECT, Some('6'), "ipv6", None, Id::Family(Family::V6),
        "connect over IPv6 only"),
    opt(CONNECT, Some('T'), "connect-timeout", Some("DUR"), Id::ConnectTimeout,
        "give up on an address after DUR and try the next (0: none)").default_value("10s"),
    both(Some('h'), "help", None, Id::Help, "print this help and exit"),
    both(Some('V'), "version", None, Id::Version, "print the version and exit"),
];

/// Whether a server asks for a client certificate.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ClientCert {
    /// Ask for none (the default).
    #[default]
    None,
    /// Ask for one and verify it when given (`-Y`).
    Optional,
    /// Require one and verify it (`-y`).
    Required,
}

/// The address families a client may connect over.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Family {
    /// IPv6 and IPv4, in the resolver's order (the default).
    #[default]
    Any,
    /// IPv4 only (`-4`).
    V4,
    /// IPv6 only (`-6`).
    V6,
}

/// The parsed command line; each field's option is named in its documentation.
#[derive(Clone, Debug)]
pub struct Options {
    /// `-S`/`-s`: send close_notify at local EOF.
    pub close_notify: bool,
    /// `-J`/`-j`: a TCP EOF without close_notify is a truncation error.
    pub enforce_close_notify: bool,
    /// `-Z`/`-z`: keep the secrets in the child's environment.
    pub keep_env: bool,
    /// `-K`: the handshake's time limit; `None` for none.
    pub handshake_timeout: Option<Duration>,
    /// `--idle-timeout`: the session's idle limit; `None` for none.
    pub idle_timeout: Option<Duration>,
    /// `-v`: 0 fatal errors only, 1 warnings, 2 a line per connection.
    pub verbosity: u32,
    /// `--no-sandbox`: the engine's process is not confined.
    pub no_sandbox: bool,
    /// `-h`: print the help and exit.
    pub help: bool,
    /// `-V`: print the version and exit.
    pub version: bool,
    /// Server `-Y`/`-y`: client certificates.
    pub client_cert: ClientCert,
    /// Server `-k`: the SNI level, 0, 1 or 2.
    pub sni_level: u8,
    /// Server `-L`: read a PROXY protocol header before the handshake.
    pub proxy_protocol: bool,
    /// Client `-y`/`-Y`: send CERTFILE/KEYFILE as a client certificate.
    pub send_cert: bool,
    /// Client `-k`: the server's name (SNI and verification).
    pub servername: Option<String>,
    /// Client `-6`: the fd the network is read from.
    pub read_fd: i32,
    /// Client `-7`: the fd the network is written to.
    pub write_fd: i32,
    /// Client: verify the server's certificate chain (`--no-verify-cert` clears it).
    pub verify_cert: bool,
    /// Client: verify the server's name (`--no-verify-name` clears it).
    pub verify_name: bool,
    /// Client `-d`: where the session description goes.
    pub notification_fd: Option<i32>,
    /// Client `--detach`: fork at start, the first process exits 0.
    pub detach: bool,
    /// `--pending-connect`: the network fd's connect(2) is still in progress.
    pub pending_connect: bool,
    /// `--discard=N`: bytes of clear input dropped after the handshake.
    pub discard: u32,
    /// `--check-host`: the first request's host must be the server name.
    pub check_host: bool,
    /// `--host-from-request=NAMES`: the server name is the first request's host, one of
    /// these.
    pub host_from_request: Option<Vec<String>>,
    /// `--log-fd=FD`: where messages go after the connection is ready, until the first
    /// request is judged.
    pub log_fd: Option<i32>,
    /// `--serve=PATH`: the pre-started helper's socket.
    pub serve: Option<std::path::PathBuf>,
    /// `--serve-idle=DUR`: how long the helper waits for a connection; `None`: for ever.
    pub serve_idle: Option<Duration>,
    /// Server `--clear-fd=FD`: no prog; clear text on the socket FD.
    pub clear_fd: Option<i32>,
    /// Server `--session-at=FD:OFFSET`: where the session description is written (a
    /// 4-byte length at OFFSET, written last, then the wire form).
    pub session_at: Option<(i32, u64)>,
    /// Server `-c`: the most connections at once.
    pub maxconn: u32,
    /// Server `-C`: the most connections at once from one address; `None` is the
    /// program's default, `Some(0)` no limit.
    pub maxconn_per_ip: Option<u32>,
    /// Server `-b`: the listen queue's length.
    pub backlog: Option<i32>,
    /// Server `-u`: the app's user id.
    pub app_uid: Option<u32>,
    /// Server `-g`: the app's group id.
    pub app_gid: Option<u32>,
    /// Server `-U`: the app's ids from UID, GID, GIDLIST.
    pub app_ids_from_env: bool,
    /// Server `-n`: delayed TLS (UCSPI-TLS) on every connection.
    pub delayed: bool,
    /// Client `-4`/`-6`: the address families to connect over.
    pub family: Family,
    /// Client `-T`: the time limit of each connection attempt; `None` for none.
    pub connect_timeout: Option<Duration>,
    /// Whether `--` ended the options (for the client side: always the prog form).
    pub dashdash: bool,
    /// What follows the options.
    pub operands: Vec<OsString>,
}

impl Options {
    /// Every field as no option left it: flags off, values unset. The defaults come on top
    /// of it from the table ([`Options::default`]); the fields here are those whose
    /// options state none (`--no-verify-cert` clears a verification that is otherwise on).
    fn unset() -> Options {
        Options {
            close_notify: false,
            enforce_close_notify: false,
            keep_env: false,
            handshake_timeout: None,
            idle_timeout: None,
            verbosity: 0,
            no_sandbox: false,
            help: false,
            version: false,
            client_cert: ClientCert::None,
            sni_level: 0,
            proxy_protocol: false,
            send_cert: false,
            servername: None,
            read_fd: -1,
            write_fd: -1,
            verify_cert: true,
            verify_name: true,
            notification_fd: None,
            detach: false,
            pending_connect: false,
            discard: 0,
            check_host: false,
            host_from_request: None,
            log_fd: None,
            serve: None,
            serve_idle: None,
            clear_fd: None,
            session_at: None,
            maxconn: 1,
            maxconn_per_ip: None,
            backlog: None,
            app_uid: None,
            app_gid: None,
            app_ids_from_env: false,
            delayed: false,
            family: Family::Any,
            connect_timeout: None,
            dashdash: false,
            operands: Vec::new(),
        }
    }

    /// When the handshake must be done by, counted from now (`-K`).
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.handshake_timeout
            .map(|d| std::time::Instant::now() + d)
    }

    /// The engine's settings from the command line (`-S`/`-s`, `-J`/`-j`,
    /// `--idle-timeout`).
    pub fn engine_config(&self) -> crate::engine::Config {
        crate::engine::Config {
            close_notify: self.close_notify,
            enforce_close_notify: self.enforce_close_notify,
            idle_timeout: self.idle_timeout,
            ..crate::engine::Config::default()
        }
    }
}

/// The table's defaults, applied as if given: every program's, whatever its groups (a
/// program without `-6` still has its network's read fd).
impl Default for Options {
    fn default() -> Self {
        let mut opts = Options::unset();
        for o in OPTIONS {
            // The table's own values: the test `every_default_parses` checks each of them.
            let _ = match o.default {
                Initially::Set => apply(&mut opts, o, None),
                Initially::Value(v) => apply(&mut opts, o, Some(v)),
                Initially::Unsaid | Initially::Words(_) => Ok(()),
            };
        }
        opts
    }
}

impl Command {
    /// The options this program takes, in the table's order.
    pub fn options(&self) -> impl Iterator<Item = &'static Opt> + '_ {
        OPTIONS.iter().filter(move |o| applies(o, self))
    }
}

fn applies(o: &Opt, cmd: &Command) -> bool {
    cmd.groups.contains(o.group)
}

/// Parse a duration: a bare number is milliseconds, else humantime (`10s`, `500ms`).
/// Zero means none.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = s.parse().map_err(|_| format!("invalid duration: {s}"))?;
        Duration::from_millis(ms)
    } else {
        // humantime's own wording names its parser's internals; say what is accepted.
        humantime::parse_duration(s).map_err(|_| {
            format!("invalid duration: {s}: give milliseconds (500) or a number with a unit (500ms, 10s, 2m)")
        })?
    };
    Ok(if d.is_zero() { None } else { Some(d) })
}

fn parse_fd(s: &str, what: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(format!("invalid {what}: {s}")),
    }
}

fn parse_count(s: &str, what: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid {what}: {s} (give a number from 1)")),
    }
}

fn parse_id(s: &str, what: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| format!("invalid {what}: {s} (give a number)"))
}

fn apply(opts: &mut Options, o: &Opt, val: Option<&str>) -> Result<(), String> {
    let v = || val.unwrap_or_default();
    match o.id {
        Id::CloseNotify(b) => opts.close_notify = b,
        Id::Enforce(b) => opts.enforce_close_notify = b,
        Id::Keep(b) => opts.keep_env = b,
        Id::HandshakeTimeout => opts.handshake_timeout = parse_duration(v())?,
        Id::IdleTimeout => opts.idle_timeout = parse_duration(v())?,
        Id::Verbosity => {
            opts.verbosity = v()
                .parse()
                .map_err(|_| format!("invalid verbosity: {}", v()))?
        }
        Id::NoSandbox => opts.no_sandbox = true,
        Id::Help => opts.help = true,
        Id::Version => opts.version = true,
        Id::ClientCert(c) => opts.client_cert = c,
        Id::SniLevel => {
            opts.sni_level = match v() {
                "0" => 0,
                "1" => 1,
                "2" => 2,
                s => return Err(format!("invalid SNI level: {s} (use 0, 1 or 2)")),
            }
        }
        Id::SniLevelIs(n) => opts.sni_level = n,
        Id::ProxyProtocol => opts.proxy_protocol = true,
        Id::SendCert(b) => opts.send_cert = b,
        Id::ServerName => {
            if v().is_empty() {
                return Err("empty server name".into());
            }
            opts.servername = Some(v().to_string())
        }
        Id::ReadFd => opts.read_fd = parse_fd(v(), "read fd")?,
        Id::WriteFd => opts.write_fd = parse_fd(v(), "write fd")?,
        Id::NoVerifyCert => opts.verify_cert = false,
        Id::NoVerifyName => opts.verify_name = false,
        Id::NotificationFd => opts.notification_fd = Some(parse_fd(v(), "notification fd")?),
        Id::Detach => opts.detach = true,
        Id::PendingConnect => opts.pending_connect = true,
        Id::Discard => opts.discard = parse_count(v(), "discard")?,
        Id::CheckHost => opts.check_host = true,
        Id::HostFromRequest => {
            let names: Vec<String> = v()
                .split(',')
                // "..." (autossl-shim: names were forgotten) matches no host and stays.
                .map(|n| match n {
                    "..." => n.to_string(),
                    n => n.trim_end_matches('.').to_ascii_lowercase(),
                })
                .collect();
            if names.iter().any(String::is_empty) {
                return Err(format!("invalid host-from-request: {}", v()));
            }
            opts.host_from_request = Some(names)
        }
        Id::LogFd => opts.log_fd = Some(parse_fd(v(), "log fd")?),
        Id::Serve => opts.serve = Some(std::path::PathBuf::from(val.unwrap_or_default())),
        Id::ServeIdle => opts.serve_idle = parse_duration(v())?,
        Id::ClearFd => opts.clear_fd = Some(parse_fd(v(), "clear fd")?),
        Id::SessionAt => {
            let bad = || format!("invalid session-at: {} (give FD:OFFSET)", v());
            let (f, off) = v().split_once(':').ok_or_else(bad)?;
            let off: u64 = off.parse().map_err(|_| bad())?;
            opts.session_at = Some((parse_fd(f, "session-at fd")?, off))
        }
        Id::MaxConn => opts.maxconn = parse_count(v(), "maxconn")?,
        Id::MaxConnPerIp => {
            // 0 turns the per-address limit off (clients behind one NAT); unset is the default.
            opts.maxconn_per_ip = Some(if v() == "0" {
                0
            } else {
                parse_count(v(), "maxconn-per-ip")?
            })
        }
        Id::Backlog => {
            let n = parse_count(v(), "backlog")?;
            opts.backlog = Some(i32::try_from(n).map_err(|_| format!("invalid backlog: {n}"))?)
        }
        Id::AppUid => opts.app_uid = Some(parse_id(v(), "uid")?),
        Id::AppGid => opts.app_gid = Some(parse_id(v(), "gid")?),
        Id::AppFromEnv => opts.app_ids_from_env = true,
        Id::Delayed => opts.delayed = true,
        Id::Family(f) => opts.family = f,
        Id::ConnectTimeout => opts.connect_timeout = parse_duration(v())?,
    }
    Ok(())
}

fn utf8<'a>(s: &'a OsStr, what: &str) -> Result<&'a str, String> {
    s.to_str().ok_or_else(|| format!("{what}: not valid UTF-8"))
}

/// Parse `args` (without `argv[0]`). Options stop at `--` or at the first operand.
pub fn parse(cmd: &Command, args: &[OsString]) -> Result<Options, Error> {
    parse_inner(cmd, args).map_err(|e| Error::usage(format!("{e} (see {} --help)", cmd.name)))
}

fn parse_inner(cmd: &Command, args: &[OsString]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_bytes();
        if arg == b"--" {
            opts.dashdash = true;
            i += 1;
            break;
        }
        if arg.len() < 2 || arg[0] != b'-' {
            break;
        }
        i += 1;
        if let Some(rest) = arg.strip_prefix(b"--") {
            let rest = utf8(OsStr::from_bytes(rest), "option")?;
            let (name, inline) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            let o = OPTIONS
                .iter()
                .find(|o| o.long == name && applies(o, cmd))
                .ok_or_else(|| format!("unknown option: --{name}"))?;
            let val = match (o.arg, inline) {
                (None, Some(_)) => return Err(format!("option --{name} takes no value")),
                (None, None) => None,
                (Some(_), Some(v)) => Some(v.to_string()),
                (Some(_), None) => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| format!("option --{name} needs a value"))?;
                    i += 1;
                    Some(utf8(v, name)?.to_string())
                }
            };
            apply(&mut opts, o, val.as_deref())?;
            continue;
        }
        // A cluster of short options: -SJz, -K500, -K 500.
        let cluster = utf8(OsStr::from_bytes(&arg[1..]), "option")?;
        for (pos, c) in cluster.char_indices() {
            let o = OPTIONS
                .iter()
                .find(|o| o.short == Some(c) && applies(o, cmd))
                .ok_or_else(|| format!("unknown option: -{c}"))?;
            if o.arg.is_none() {
                apply(&mut opts, o, None)?;
                continue;
            }
            let inline = &cluster[pos + c.len_utf8()..];
            let val = if !inline.is_empty() {
                inline.to_string()
            } else {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("option -{c} needs a value"))?;
                i += 1;
                utf8(v, "option value")?.to_string()
            };
            apply(&mut opts, o, Some(&val))?;
            break;
        }
    }
    opts.operands = args[i..].to_vec();
    let client = cmd.groups.contains(Groups::CLIENT_FDS);
    if client && opts.read_fd == opts.write_fd {
        return Err("the network read and write fds must differ".into());
    }
    if client && (opts.read_fd < 3 || opts.write_fd < 3) {
        return Err("the network fds must be 3 or more".into());
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_CMD: Command = Command {
        name: "server",
        groups: Groups::COMMON.with(Groups::SERVER),
        usage: "usage: server\n",
    };
    const CLIENT_CMD: Command = Command {
        name: "client",
        groups: Groups::COMMON.with(Groups::CLIENT).with(Groups::CLIENT_FDS),
        usage: "usage: client\n",
    };

    fn p(cmd: &Command, a: &[&str]) -> Result<Options, Error> {
        let v: Vec<OsString> = a.iter().map(OsString::from).collect();
        parse(cmd, &v)
    }

    #[test]
    fn defaults() {
        let o = p(&SERVER_CMD, &["cat"]).expect("parse");
        assert!(o.close_notify && !o.enforce_close_notify && !o.keep_env);
        assert_eq!(o.handshake_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.operands, vec![OsString::from("cat")]);
    }

    #[test]
    fn maxconn_per_ip_default_zero_and_bad() {
        let listen = Command {
            name: "tlsserver",
            groups: Groups::COMMON.with(Groups::SERVER).with(Groups::LISTEN),
            usage: "",
        };
        // Unset: the program's default (tlsserver: half of -c); 0: no limit at all.
        assert_eq!(p(&listen, &["cat"]).expect("parse").maxconn_per_ip, None);
        let o = p(&listen, &["-C", "0", "cat"]).expect("parse");
        assert_eq!(o.maxconn_per_ip, Some(0));
        let o = p(&listen, &["--maxconn-per-ip=7", "cat"]).expect("parse");
        assert_eq!(o.maxconn_per_ip, Some(7));
        for bad in ["-1", "x", ""] {
            assert!(p(&listen, &["-C", bad, "cat"]).is_err(), "-C {bad:?}");
        }
        // -c still takes no 0: a server that serves no one is a mistake.
        assert!(p(&listen, &["-c", "0", "cat"]).is_err());
    }

    #[test]
    fn clusters_and_values() {
        let o = p(&SERVER_CMD, &["-sJZ", "-K500", "-k", "2", "--", "-x"]).expect("parse");
        assert!(!o.close_notify && o.enforce_close_notify && o.keep_env);
        assert_eq!(o.handshake_timeout, Some(Duration::from_millis(500)));
        assert_eq!(o.sni_level, 2);
        assert!(o.dashdash);
        assert_eq!(o.operands, vec![OsString::from("-x")]);
        let o = p(
            &CLIENT_CMD,
            &[
                "--handshake-timeout=2s",
                "--servername",
                "a.test",
                "-6",
                "3",
                "-7",
                "4",
            ],
        )
        .expect("parse");
        assert_eq!(o.handshake_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.servername.as_deref(), Some("a.test"));
        assert_eq!((o.read_fd, o.write_fd), (3, 4));
        assert_eq!(
            p(&CLIENT_CMD, &["-K", "0"])
                .expect("parse")
                .handshake_timeout,
            None
        );
    }

    #[test]
    fn errors() {
        for a in [
            &["-x"][..],
            &["--sni-level=3"],
            &["-K"],
            &["--sni=1"],
            &["--idle-timeout=abc"],
            &["--servername=x"],
        ] {
            assert_eq!(
                p(&SERVER_CMD, a).map(|_| ()).unwrap_err().code,
                100,
                "{a:?}"
            );
        }
        assert!(p(&CLIENT_CMD, &["-6", "7"]).is_err());
        assert!(p(&CLIENT_CMD, &["-6", "1"]).is_err());
    }

    #[test]
    fn bad_duration_says_what_is_accepted() {
        let e = parse_duration("10x").expect_err("10x");
        assert!(
            e.starts_with("invalid duration: 10x: give milliseconds"),
            "{e}"
        );
    }

    #[test]
    fn every_default_parses() {
        for o in OPTIONS {
            let r = match o.default {
                Initially::Set => apply(&mut Options::unset(), o, None),
                Initially::Value(v) => apply(&mut Options::unset(), o, Some(v)),
                Initially::Unsaid | Initially::Words(_) => Ok(()),
            };
            assert_eq!(r, Ok(()), "--{}", o.long);
            match o.default {
                Initially::Set => assert!(o.arg.is_none(), "--{} takes a value", o.long),
                Initially::Value(_) | Initially::Words(_) => {
                    assert!(o.arg.is_some(), "--{} is a flag", o.long)
                }
                Initially::Unsaid => {}
            }
        }
        let d = Options::default();
        assert!(d.close_notify && !d.enforce_close_notify && !d.keep_env && !d.send_cert);
        assert_eq!(d.handshake_timeout, Some(Duration::from_secs(30)));
        assert_eq!(d.connect_timeout, Some(Duration::from_secs(10)));
        assert_eq!((d.verbosity, d.sni_level, d.maxconn), (1, 0, 40));
        assert_eq!((d.read_fd, d.write_fd), (6, 7));
        assert_eq!(
            (d.idle_timeout, d.maxconn_per_ip, d.backlog),
            (None, None, None)
        );
        assert!(d.verify_cert && d.verify_name);
    }
}
