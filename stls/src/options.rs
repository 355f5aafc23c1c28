//! Command-line options of tlsd and tlsc, defined once: the table drives parsing and
//! `--help`, and a test checks that every entry is in the man pages.

use crate::exit::Error;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Program {
    Tlsd,
    Tlsc,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Tlsd => "tlsd",
            Program::Tlsc => "tlsc",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Id {
    CloseNotify(bool),
    Enforce(bool),
    Keep(bool),
    HandshakeTimeout,
    IdleTimeout,
    Verbosity,
    Help,
    Version,
    // tlsd
    ClientCert(ClientCert),
    SniLevel,
    SniLevelIs(u8),
    // tlsc
    SendCert(bool),
    ServerName,
    ReadFd,
    WriteFd,
    NoVerifyCert,
    NoVerifyName,
    NotificationFd,
    Detach,
}

/// One option: its forms, its argument's name (if it takes one), and its help line.
pub struct Opt {
    pub short: Option<char>,
    pub long: &'static str,
    pub arg: Option<&'static str>,
    pub help: &'static str,
    pub tlsd: bool,
    pub tlsc: bool,
    id: Id,
}

const fn both(
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
        tlsd: true,
        tlsc: true,
        id,
    }
}

const fn only(
    prog: Program,
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
        tlsd: matches!(prog, Program::Tlsd),
        tlsc: matches!(prog, Program::Tlsc),
        id,
    }
}

use Program::{Tlsc, Tlsd};

/// Every option of both programs. Short letters may mean different things per program
/// (`-k`, `-y`, `-Y`), as in s6-networking.
pub static OPTIONS: &[Opt] = &[
    both(Some('S'), "close-notify", None, Id::CloseNotify(true),
        "at local EOF send close_notify, then shut down writing and keep reading (default)"),
    both(Some('s'), "no-close-notify", None, Id::CloseNotify(false),
        "at local EOF only shut down writing (no close_notify)"),
    both(Some('J'), "enforce-close-notify", None, Id::Enforce(true),
        "a TCP EOF without close_notify is a truncation error (exit 98)"),
    both(Some('j'), "no-enforce-close-notify", None, Id::Enforce(false),
        "a TCP EOF without close_notify is a normal EOF (default)"),
    both(Some('Z'), "keep", None, Id::Keep(true),
        "keep CADIR, CAFILE, CERTFILE*, KEYFILE*, TLS_UID, TLS_GID in the child's environment"),
    both(Some('z'), "no-keep", None, Id::Keep(false),
        "remove those variables from the child's environment (default)"),
    both(Some('K'), "handshake-timeout", Some("DUR"), Id::HandshakeTimeout,
        "handshake timeout: milliseconds, or a duration such as 10s (default 30s; 0: none)"),
    both(None, "idle-timeout", Some("DUR"), Id::IdleTimeout,
        "close the session as at local EOF after DUR without data either way (default: none)"),
    both(Some('v'), "verbosity", Some("N"), Id::Verbosity,
        "0: fatal errors only, 1: warnings too (default), 2: a line per connection"),
    only(Tlsd, Some('Y'), "optional-client-cert", None, Id::ClientCert(ClientCert::Optional),
        "ask for a client certificate and verify it if given (needs CADIR or CAFILE)"),
    only(Tlsd, Some('y'), "require-client-cert", None, Id::ClientCert(ClientCert::Required),
        "require a client certificate and verify it (needs CADIR or CAFILE)"),
    only(Tlsd, Some('k'), "sni-level", Some("N"), Id::SniLevel,
        "0: always CERTFILE/KEYFILE (default); 1: the CERTFILE:name pair matching SNI, else the default; 2: only named pairs"),
    only(Tlsd, None, "sni", None, Id::SniLevelIs(1), "same as --sni-level=1"),
    only(Tlsd, None, "mandatory-sni", None, Id::SniLevelIs(2), "same as --sni-level=2"),
    only(Tlsc, Some('y'), "client-cert", None, Id::SendCert(true),
        "send CERTFILE/KEYFILE as a client certificate"),
    only(Tlsc, Some('Y'), "no-client-cert", None, Id::SendCert(false),
        "send no client certificate (default)"),
    only(Tlsc, Some('k'), "servername", Some("NAME"), Id::ServerName,
        "the server's name: sent as SNI and verified (an IP address: checked against IP SANs, no SNI)"),
    only(Tlsc, Some('6'), "read-fd", Some("FD"), Id::ReadFd,
        "read the network from FD (default 6)"),
    only(Tlsc, Some('7'), "write-fd", Some("FD"), Id::WriteFd,
        "write the network to FD (default 7)"),
    only(Tlsc, None, "no-verify-cert", None, Id::NoVerifyCert,
        "do not verify the server's certificate chain (insecure)"),
    only(Tlsc, None, "no-verify-name", None, Id::NoVerifyName,
        "do not verify the server's name (insecure)"),
    only(Tlsc, Some('d'), "notification-fd", Some("FD"), Id::NotificationFd,
        "after the handshake write the session description to FD and close it"),
    only(Tlsc, None, "detach", None, Id::Detach,
        "fork at start: the first process exits 0 at once (for autossl-shim)"),
    both(Some('h'), "help", None, Id::Help, "print this help and exit"),
    both(Some('V'), "version", None, Id::Version, "print the version and exit"),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ClientCert {
    #[default]
    None,
    Optional,
    Required,
}

/// Parsed options of either program.
#[derive(Clone, Debug)]
pub struct Options {
    pub close_notify: bool,
    pub enforce_close_notify: bool,
    pub keep_env: bool,
    pub handshake_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub verbosity: u32,
    pub help: bool,
    pub version: bool,
    // tlsd
    pub client_cert: ClientCert,
    pub sni_level: u8,
    // tlsc
    pub send_cert: bool,
    pub servername: Option<String>,
    pub read_fd: i32,
    pub write_fd: i32,
    pub verify_cert: bool,
    pub verify_name: bool,
    pub notification_fd: Option<i32>,
    pub detach: bool,
    /// Whether `--` ended the options (tlsc: always the prog form).
    pub dashdash: bool,
    /// What follows the options.
    pub operands: Vec<OsString>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            close_notify: true,
            enforce_close_notify: false,
            keep_env: false,
            handshake_timeout: Some(Duration::from_secs(30)),
            idle_timeout: None,
            verbosity: 1,
            help: false,
            version: false,
            client_cert: ClientCert::None,
            sni_level: 0,
            send_cert: false,
            servername: None,
            read_fd: 6,
            write_fd: 7,
            verify_cert: true,
            verify_name: true,
            notification_fd: None,
            detach: false,
            dashdash: false,
            operands: Vec::new(),
        }
    }
}

fn applies(o: &Opt, prog: Program) -> bool {
    match prog {
        Program::Tlsd => o.tlsd,
        Program::Tlsc => o.tlsc,
    }
}

/// Parse a duration: a bare number is milliseconds, else humantime (`10s`, `500ms`).
/// Zero means none.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = s.parse().map_err(|_| format!("invalid duration: {s}"))?;
        Duration::from_millis(ms)
    } else {
        humantime::parse_duration(s).map_err(|e| format!("invalid duration: {s}: {e}"))?
    };
    Ok(if d.is_zero() { None } else { Some(d) })
}

fn parse_fd(s: &str, what: &str) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(format!("invalid {what}: {s}")),
    }
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
    }
    Ok(())
}

fn utf8<'a>(s: &'a OsStr, what: &str) -> Result<&'a str, String> {
    s.to_str().ok_or_else(|| format!("{what}: not valid UTF-8"))
}

/// Parse `args` (without argv[0]). Options stop at `--` or at the first operand.
pub fn parse(prog: Program, args: &[OsString]) -> Result<Options, Error> {
    parse_inner(prog, args).map_err(Error::usage)
}

fn parse_inner(prog: Program, args: &[OsString]) -> Result<Options, String> {
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
                .find(|o| o.long == name && applies(o, prog))
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
                .find(|o| o.short == Some(c) && applies(o, prog))
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
    if prog == Program::Tlsc && opts.read_fd == opts.write_fd {
        return Err("the network read and write fds must differ".into());
    }
    if prog == Program::Tlsc && (opts.read_fd < 3 || opts.write_fd < 3) {
        return Err("the network fds must be 3 or more".into());
    }
    Ok(opts)
}

/// The `--help` text, from the table.
pub fn help(prog: Program) -> String {
    let mut s = match prog {
        Program::Tlsd => String::from(
            "usage: tlsd [options] [--] prog...\n\
             TLS server side of a UCSPI connection: the network on fd 0/1, prog gets clear text on its fd 0/1.\n\n",
        ),
        Program::Tlsc => String::from(
            "usage: tlsc [options] [--] prog...   (network on fd 6/7, prog gets clear text on its fd 6/7)\n\
             \x20      tlsc [options]              (io form: clear text on stdin/stdout)\n\
             \x20      tlsc [options] ADDR PORT    (connect first, then the io form)\n\n",
        ),
    };
    s.push_str("options:\n");
    for o in OPTIONS.iter().filter(|o| applies(o, prog)) {
        let mut forms = String::new();
        if let Some(c) = o.short {
            forms.push('-');
            forms.push(c);
            if let Some(a) = o.arg {
                forms.push(' ');
                forms.push_str(a);
            }
            forms.push_str(", ");
        }
        forms.push_str("--");
        forms.push_str(o.long);
        if let Some(a) = o.arg {
            forms.push('=');
            forms.push_str(a);
        }
        s.push_str(&format!("  {forms:<32} {}\n", o.help));
    }
    s.push_str(
        "\nenvironment: CERTFILE KEYFILE CERTFILE:name KEYFILE:name CADIR CAFILE TLS_UID TLS_GID\n\
         exit: the child's status; 96 TLS configuration, 97 handshake, 98 TLS/network or timeout,\n\
         \x20     100 usage, 111 system. See the man page for the whole interface.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(prog: Program, a: &[&str]) -> Result<Options, Error> {
        let v: Vec<OsString> = a.iter().map(OsString::from).collect();
        parse(prog, &v)
    }

    #[test]
    fn defaults() {
        let o = p(Program::Tlsd, &["cat"]).expect("parse");
        assert!(o.close_notify && !o.enforce_close_notify && !o.keep_env);
        assert_eq!(o.handshake_timeout, Some(Duration::from_secs(30)));
        assert_eq!(o.operands, vec![OsString::from("cat")]);
    }

    #[test]
    fn clusters_and_values() {
        let o = p(Program::Tlsd, &["-sJZ", "-K500", "-k", "2", "--", "-x"]).expect("parse");
        assert!(!o.close_notify && o.enforce_close_notify && o.keep_env);
        assert_eq!(o.handshake_timeout, Some(Duration::from_millis(500)));
        assert_eq!(o.sni_level, 2);
        assert!(o.dashdash);
        assert_eq!(o.operands, vec![OsString::from("-x")]);
        let o = p(
            Program::Tlsc,
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
            p(Program::Tlsc, &["-K", "0"])
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
                p(Program::Tlsd, a).map(|_| ()).unwrap_err().code,
                100,
                "{a:?}"
            );
        }
        assert!(p(Program::Tlsc, &["-6", "7"]).is_err());
        assert!(p(Program::Tlsc, &["-6", "1"]).is_err());
    }

    #[test]
    fn help_lists_every_option() {
        for prog in [Program::Tlsd, Program::Tlsc] {
            let h = help(prog);
            for o in OPTIONS.iter().filter(|o| applies(o, prog)) {
                assert!(h.contains(&format!("--{}", o.long)), "{}", o.long);
            }
        }
    }
}
