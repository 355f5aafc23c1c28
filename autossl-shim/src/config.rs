//! The configuration, once per process: the `AUTOSSL_*` variables (one table, [`VARS`]),
//! parsed into [`Config`], and the paths the upgrade needs ([`State`]).

use std::ffi::{CStr, CString};
use std::sync::OnceLock;
use std::time::Duration;

use crate::rules::{
    parse_duration, parse_errno, parse_ips, parse_names, parse_ports, valid_name, Cidr, Named,
    Ports,
};
use crate::say::message;

/// One variable the library reads.
pub struct Var {
    /// Its name.
    pub name: &'static str,
    /// What an unset (or empty) variable means.
    pub default: &'static str,
    /// What it does, in a line.
    pub doc: &'static str,
}

/// Every variable the library reads, once: [`Vars::read`] reads exactly these, and the
/// ENVIRONMENT section of autossl-shim(8) names exactly these (both checked by tests).
pub static VARS: &[Var] = &[
    Var {
        name: "AUTOSSL_UPGRADE_PORTS",
        default: "none: nothing is upgraded",
        doc: "the TCP ports whose connections are upgraded (a list)",
    },
    Var {
        name: "AUTOSSL_UPGRADE_PORT",
        default: "none",
        doc: "one more port, as autossl.so spelt it",
    },
    Var {
        name: "AUTOSSL_UPGRADE_IPS",
        default: "every address",
        doc: "the addresses (and CIDR ranges) whose connections are upgraded",
    },
    Var {
        name: "AUTOSSL_ACCEPT_PORTS",
        default: "none: no accepted connection is upgraded",
        doc: "the listening TCP ports whose accepted connections get TLS from tlsd (a list)",
    },
    Var {
        name: "AUTOSSL_ACCEPT_CLIENT_CERT",
        default: "none: no client certificate asked for",
        doc: "`optional` or `required`: ask accepted clients for a certificate (CAFILE, CADIR)",
    },
    Var {
        name: "AUTOSSL_TLS_CMD",
        default: "none: tlsc, natively",
        doc: "a command run as `cmd IP PORT` with clear text on its stdin and stdout",
    },
    Var {
        name: "AUTOSSL_SNI",
        default: "none: the evidence decides",
        doc: "the server name for every upgraded connection",
    },
    Var {
        name: "AUTOSSL_NAMES",
        default: "none",
        doc: "NAME=ADDRESS[:PORT] pairs: the server name of a destination",
    },
    Var {
        name: "AUTOSSL_TIMEOUT",
        default: "30s",
        doc: "the bound on the handshake and on a non-blocking connect",
    },
    Var {
        name: "AUTOSSL_ERRNO",
        default: "none: a broken configuration upgrades nothing",
        doc: "the errno of the connections a broken configuration could have meant",
    },
    Var {
        name: "AUTOSSL_SILENT",
        default: "unset: messages on stderr",
        doc: "set: no message at all",
    },
    Var {
        name: "AUTOSSL_VERBOSE",
        default: "unset or 0: failures only",
        doc: "a line for every upgraded connection",
    },
    Var {
        name: "AUTOSSL_NO_SANDBOX",
        default: "unset or 0: tlsc's engine is confined",
        doc: "tlsc runs with --no-sandbox (a debugging aid)",
    },
    Var {
        name: "AUTOSSL_HELPER",
        default: "on: connections go to the pre-started helper",
        doc: "0: start tlsc for every connection instead",
    },
    Var {
        name: "AUTOSSL_NESTED",
        default: "unset",
        doc: "set by the library in tlsc's environment: upgrade nothing there",
    },
];

/// The raw variables, as read from the environment (`None` = unset).
#[derive(Default, Debug, Clone)]
pub struct Vars {
    pub ports: Option<String>,
    pub port: Option<String>,
    pub ips: Option<String>,
    pub tls_cmd: Option<String>,
    pub errno: Option<String>,
    pub silent: bool,
    pub sni: Option<String>,
    pub timeout: Option<String>,
    pub verbose: Option<String>,
    pub helper: Option<String>,
    pub names: Option<String>,
    pub nested: bool,
    /// `AUTOSSL_NO_SANDBOX`: set, not empty and not `0`.
    pub no_sandbox: bool,
    pub accept_ports: Option<String>,
    pub accept_client_cert: Option<String>,
}

impl Vars {
    /// The variables of [`VARS`], through `get` (the environment, or a test's map).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Vars {
        Vars {
            ports: get("AUTOSSL_UPGRADE_PORTS"),
            port: get("AUTOSSL_UPGRADE_PORT"),
            ips: get("AUTOSSL_UPGRADE_IPS"),
            tls_cmd: get("AUTOSSL_TLS_CMD"),
            errno: get("AUTOSSL_ERRNO"),
            silent: get("AUTOSSL_SILENT").is_some(),
            sni: get("AUTOSSL_SNI"),
            timeout: get("AUTOSSL_TIMEOUT"),
            verbose: get("AUTOSSL_VERBOSE"),
            helper: get("AUTOSSL_HELPER"),
            names: get("AUTOSSL_NAMES"),
            nested: get("AUTOSSL_NESTED").is_some(),
            no_sandbox: matches!(get("AUTOSSL_NO_SANDBOX").as_deref(), Some(x) if !x.is_empty() && x != "0"),
            accept_ports: get("AUTOSSL_ACCEPT_PORTS"),
            accept_client_cert: get("AUTOSSL_ACCEPT_CLIENT_CERT"),
        }
    }
}

/// The parsed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub ports: Ports,
    /// Empty: every address.
    pub ips: Vec<Cidr>,
    pub tls_cmd: Option<String>,
    pub errno: Option<i32>,
    pub silent: bool,
    pub verbose: bool,
    /// Hand connections to the pre-started helper (`AUTOSSL_HELPER` not `0`).
    pub helper: bool,
    pub sni: Option<String>,
    pub timeout: Duration,
    /// `AUTOSSL_NAMES`: the server name of a destination.
    pub names: Vec<Named>,
    /// Something could not be parsed: plain connects (or `errno`) for what matches.
    pub broken: Option<String>,
    /// An entry of the port list, or of the address list, could not be read: with a broken
    /// configuration, any port (any address) could have been meant.
    pub ports_unknown: bool,
    pub ips_unknown: bool,
    /// `AUTOSSL_NO_SANDBOX`: tlsc runs with `--no-sandbox` (a debugging aid).
    pub no_sandbox: bool,
    /// `AUTOSSL_ACCEPT_PORTS`: the listening ports of the server side.
    pub accept_ports: Ports,
    /// `AUTOSSL_ACCEPT_CLIENT_CERT`: tlsd's `-Y` or `-y`, if any.
    pub accept_client_cert: Option<&'static str>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Config {
    pub fn parse(v: &Vars) -> Config {
        let mut ports = Ports::default();
        let mut bad = Vec::new();
        if !v.nested {
            if let Some(s) = &v.ports {
                bad.extend(parse_ports("AUTOSSL_UPGRADE_PORTS", s, &mut ports));
            }
            if let Some(s) = &v.port {
                bad.extend(parse_ports("AUTOSSL_UPGRADE_PORT", s, &mut ports));
            }
        }
        let ports_unknown = !bad.is_empty();
        let mut accept_ports = Ports::default();
        if let (false, Some(s)) = (v.nested, &v.accept_ports) {
            bad.extend(parse_ports("AUTOSSL_ACCEPT_PORTS", s, &mut accept_ports));
        }
        let (ips, b) = match &v.ips {
            Some(s) => parse_ips("AUTOSSL_UPGRADE_IPS", s),
            None => (Vec::new(), Vec::new()),
        };
        let ips_all_bad = ips.is_empty() && !b.is_empty();
        let ips_unknown = !b.is_empty();
        bad.extend(b);
        let (names, b) = match &v.names {
            Some(s) => parse_names("AUTOSSL_NAMES", s),
            None => (Vec::new(), Vec::new()),
        };
        bad.extend(b);
        let mut problems: Vec<String> = bad
            .iter()
            .map(|b| format!("{}: not understood: {}", b.var, b.entry))
            .collect();
        let errno = match &v.errno {
            Some(s) if !s.is_empty() => {
                let e = parse_errno(s);
                if e.is_none() {
                    problems.push(format!("AUTOSSL_ERRNO: not a number: {s}"));
                }
                e
            }
            _ => None,
        };
        let timeout = match &v.timeout {
            Some(s) if !s.is_empty() => match parse_duration(s) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    problems.push(format!("AUTOSSL_TIMEOUT: not a duration: {s}"));
                    DEFAULT_TIMEOUT
                }
            },
            _ => DEFAULT_TIMEOUT,
        };
        let sni = match &v.sni {
            Some(s) if !s.is_empty() => match valid_name(s.as_bytes()) {
                Some(n) => Some(String::from_utf8_lossy(n).into_owned()),
                None => {
                    problems.push(format!("AUTOSSL_SNI: not a host name: {s}"));
                    None
                }
            },
            _ => None,
        };
        let accept_client_cert = match v.accept_client_cert.as_deref().map(str::trim) {
            None | Some("" | "none" | "0") => None,
            Some("optional") => Some("-Y"),
            Some("required") => Some("-y"),
            Some(s) => {
                problems.push(format!(
                    "AUTOSSL_ACCEPT_CLIENT_CERT: not none, optional or required: {s}"
                ));
                None
            }
        };
        let tls_cmd = v.tls_cmd.clone().filter(|c| !c.trim().is_empty());
        let mut c = Config {
            ports,
            ips,
            tls_cmd,
            errno,
            silent: v.silent,
            verbose: matches!(v.verbose.as_deref(), Some(x) if !x.is_empty() && x != "0"),
            helper: v.helper.as_deref() != Some("0"),
            sni,
            timeout,
            names,
            broken: None,
            ports_unknown: ports_unknown && !v.nested,
            ips_unknown,
            no_sandbox: v.no_sandbox,
            accept_ports,
            accept_client_cert,
        };
        if !problems.is_empty() {
            let mut msg = problems.join("; ");
            if msg.len() > 300 {
                let mut end = 300;
                while !msg.is_char_boundary(end) {
                    end -= 1;
                }
                msg.truncate(end);
                msg.push_str("...");
            }
            c.broken = Some(msg);
        }
        if ips_all_bad {
            // A list of addresses of which none could be read must not widen to "all".
            c.ports = Ports::default();
        }
        c
    }

    /// Does any connection match at all?
    pub fn active(&self) -> bool {
        !self.ports.is_empty()
    }

    /// Is any accepted connection upgraded (a readable configuration with
    /// `AUTOSSL_ACCEPT_PORTS`)?
    pub fn accepting(&self) -> bool {
        !self.accept_ports.is_empty() && self.broken.is_none()
    }

    /// Does a TCP connection to (address key, port) match the rules?
    pub fn matches(&self, ip: u128, port: u16) -> bool {
        self.ports.contains(port)
            && (self.ips.is_empty() || self.ips.iter().any(|c| c.contains(ip)))
    }

    /// With a broken configuration and `AUTOSSL_ERRNO`, the connections that fail: those
    /// the lists could have meant (any port when a port entry was unreadable, any address
    /// when an address entry was).
    pub fn could_match(&self, ip: u128, port: u16) -> bool {
        (self.ports_unknown || self.ports.contains(port))
            && (self.ips_unknown || self.ips.is_empty() || self.ips.iter().any(|c| c.contains(ip)))
    }

    /// Is anything of ours needed in a connect() at all?
    pub fn engaged(&self) -> bool {
        self.active() || (self.broken.is_some() && self.errno.is_some() && self.ports_unknown)
    }

    /// The name `AUTOSSL_NAMES` gives a destination: the entry for its port, else the one
    /// for every port.
    pub fn named(&self, ip: u128, port: u16) -> Option<&str> {
        let exact = self.names.iter().find(|n| n.key == ip && n.port == port);
        let any = || self.names.iter().find(|n| n.key == ip && n.port == 0);
        exact.or_else(any).map(|n| n.name.as_str())
    }
}

/// What the library knows once per process.
pub struct State {
    /// The configuration from the environment.
    pub cfg: Config,
    /// Our own file, found at first use: dladdr searches our symbol table, which would
    /// cost every process that loads the library, upgrading or not.
    lib: OnceLock<Option<CString>>,
    /// tlsc beside the library, else on PATH, found at first use.
    tlsc: OnceLock<Option<CString>>,
}

impl State {
    /// Our own file, to take it out of a helper's LD_PRELOAD and to find tlsc and tlsd
    /// beside it.
    pub fn lib(&self) -> Option<&CStr> {
        self.lib.get_or_init(own_path).as_deref()
    }

    /// The tlsc of the native mode (None in the command mode, or when there is none).
    pub fn tlsc(&self) -> Option<&CStr> {
        self.tlsc
            .get_or_init(|| {
                if self.cfg.active() && self.cfg.tls_cmd.is_none() {
                    find_program(self.lib(), b"tlsc")
                } else {
                    None
                }
            })
            .as_deref()
    }
}

static STATE: OnceLock<State> = OnceLock::new();

pub fn var(k: &str) -> Option<String> {
    std::env::var_os(k).map(|v| v.to_string_lossy().into_owned())
}

pub fn load() -> State {
    let v = Vars::read(var);
    let cfg = Config::parse(&v);
    if let Some(why) = &cfg.broken {
        if !cfg.silent && !v.nested {
            let then = match cfg.errno {
                Some(e) => format!(
                    "every connection it could have meant fails with errno {e} (AUTOSSL_ERRNO)"
                ),
                None => "connections go out in clear text, not upgraded (set AUTOSSL_ERRNO to make them fail instead)".to_string(),
            };
            message(&format!("bad configuration: {why}; {then}"));
        }
    }
    State {
        cfg,
        lib: OnceLock::new(),
        tlsc: OnceLock::new(),
    }
}

/// Whether the environment asks for any upgrade at all (a list of ports set, outside a
/// helper): looked up without allocating, for the constructor.
pub fn wanted() -> bool {
    let set = |k: &CStr| {
        // SAFETY: getenv on a NUL-terminated name; the result is only compared with null.
        !unsafe { libc::getenv(k.as_ptr()) }.is_null()
    };
    !set(c"AUTOSSL_NESTED")
        && (set(c"AUTOSSL_UPGRADE_PORTS")
            || set(c"AUTOSSL_UPGRADE_PORT")
            || set(c"AUTOSSL_ACCEPT_PORTS"))
}

/// The configuration, parsed at the first intercepted call.
pub fn state() -> &'static State {
    STATE.get_or_init(load)
}

pub fn own_path() -> Option<CString> {
    // SAFETY: Dl_info is plain data (pointers and integers): all zeros is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr fills the Dl_info it is given, for an address inside this object.
    let found = unsafe { libc::dladdr(own_path as *const libc::c_void, &mut info) } != 0;
    if !found || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is the loader's NUL-terminated name of this object, which stays
    // loaded (and the name with it) while we copy it.
    Some(unsafe { CStr::from_ptr(info.dli_fname) }.to_owned())
}

pub fn executable(p: &[u8]) -> Option<CString> {
    let c = CString::new(p).ok()?;
    // SAFETY: access on a NUL-terminated path.
    (unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0).then_some(c)
}

/// `name` (tlsc, tlsd) beside the library, else on PATH.
pub fn find_program(lib: Option<&CStr>, name: &[u8]) -> Option<CString> {
    if let Some(lib) = lib {
        let b = lib.to_bytes();
        if let Some(i) = b.iter().rposition(|&c| c == b'/') {
            let mut p = b[..=i].to_vec();
            p.extend_from_slice(name);
            if let Some(c) = executable(&p) {
                return Some(c);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    use std::os::unix::ffi::OsStrExt;
    path.as_bytes()
        .split(|&b| b == b':')
        .filter(|d| !d.is_empty())
        .find_map(|d| {
            let mut p = d.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            executable(&p)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::key_of;

    fn k(s: &str) -> u128 {
        key_of(s.parse().expect("ip"))
    }

    #[test]
    fn config() {
        let v = Vars {
            ports: Some("443".into()),
            port: Some("8443".into()),
            ips: Some("127.0.0.0/8, [::1]".into()),
            ..Vars::default()
        };
        let c = Config::parse(&v);
        assert!(c.broken.is_none());
        assert!(c.matches(k("127.0.0.1"), 443));
        assert!(c.matches(k("::1"), 8443));
        assert!(!c.matches(k("::2"), 8443));
        assert!(!c.matches(k("127.0.0.1"), 80));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);

        let c = Config::parse(&Vars {
            ports: Some("443 nope".into()),
            errno: Some("13".into()),
            ..Vars::default()
        });
        assert!(c.broken.is_some());
        assert!(c.matches(k("192.0.2.1"), 443));
        assert_eq!(c.errno, Some(13));

        let c = Config::parse(&Vars {
            ports: Some("443".into()),
            ips: Some("nothing-valid".into()),
            ..Vars::default()
        });
        assert!(c.broken.is_some());
        assert!(
            !c.active(),
            "an unreadable address list must not mean every address"
        );

        let c = Config::parse(&Vars {
            ports: Some("443".into()),
            nested: true,
            ..Vars::default()
        });
        assert!(!c.active());

        let c = Config::parse(&Vars::default());
        assert!(!c.active() && c.broken.is_none());

        // One bad port entry: the rest counts; with AUTOSSL_ERRNO any port could be meant.
        let c = Config::parse(&Vars {
            ports: Some("18443,8443x".into()),
            errno: Some("111".into()),
            ..Vars::default()
        });
        assert!(c.broken.as_deref().is_some_and(|b| b.contains("8443x")));
        assert!(c.could_match(k("192.0.2.1"), 8443));
        assert!(c.engaged());
        let c = Config::parse(&Vars {
            ports: Some("8443x".into()),
            errno: Some("111".into()),
            ..Vars::default()
        });
        assert!(!c.active() && c.engaged() && c.could_match(k("::1"), 1));
        let c = Config::parse(&Vars {
            ports: Some("443".into()),
            ips: Some("10.0.0.0/8 bad".into()),
            errno: Some("13".into()),
            ..Vars::default()
        });
        assert!(c.could_match(k("192.0.2.1"), 443) && !c.could_match(k("192.0.2.1"), 80));
    }

    #[test]
    fn accept_side() {
        let c = Config::parse(&Vars {
            accept_ports: Some("6379, 11211".into()),
            accept_client_cert: Some("required".into()),
            ..Vars::default()
        });
        assert!(c.broken.is_none() && c.accepting() && !c.active());
        assert!(c.accept_ports.contains(6379) && !c.accept_ports.contains(443));
        assert_eq!(c.accept_client_cert, Some("-y"));
        let c = Config::parse(&Vars {
            accept_ports: Some("6379".into()),
            accept_client_cert: Some("maybe".into()),
            ..Vars::default()
        });
        assert!(c.broken.is_some() && !c.accepting());
        let c = Config::parse(&Vars {
            accept_ports: Some("6379".into()),
            nested: true,
            ..Vars::default()
        });
        assert!(!c.accepting());
    }

    #[test]
    fn names_map() {
        let (n, bad) = parse_names(
            "N",
            "a.test=192.0.2.1:443 b.test.=[2001:db8::1]:8443, c.test=192.0.2.3 d.test=[::1] e.test=::2",
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(n.len(), 5);
        let c = Config {
            names: n,
            ..Config::parse(&Vars::default())
        };
        assert_eq!(c.named(k("192.0.2.1"), 443), Some("a.test"));
        assert_eq!(c.named(k("192.0.2.1"), 444), None);
        assert_eq!(c.named(k("::ffff:192.0.2.1"), 443), Some("a.test"));
        assert_eq!(c.named(k("2001:db8::1"), 8443), Some("b.test"));
        assert_eq!(c.named(k("192.0.2.3"), 1), Some("c.test"));
        assert_eq!(c.named(k("::1"), 5), Some("d.test"));
        assert_eq!(c.named(k("::2"), 5), Some("e.test"));
        for b in [
            "a.test",
            "=192.0.2.1:443",
            "a.test=",
            "a.test=host:443",
            "a.test=192.0.2.1:0",
            "a.test=192.0.2.1:x",
            "a.test=[192.0.2.1]:443",
            "a.test=2001:db8::1:443x",
            "caf\u{e9}.test=192.0.2.1",
        ] {
            let (n, bad) = parse_names("N", b);
            assert!(n.is_empty() && bad.len() == 1, "{b}");
        }
        // Two names for one destination: the second is refused.
        let (n, bad) = parse_names("N", "a.test=192.0.2.1:443 b.test=192.0.2.1:443");
        assert_eq!((n.len(), bad.len()), (1, 1));
        let c = Config::parse(&Vars {
            ports: Some("443".into()),
            names: Some("a.test=192.0.2.1:443 oops".into()),
            ..Vars::default()
        });
        assert!(c
            .broken
            .as_deref()
            .is_some_and(|b| b.contains("AUTOSSL_NAMES") && b.contains("oops")));
    }

    /// The variables read are the table's, and the man page's ENVIRONMENT section names
    /// the same ones.
    #[test]
    fn one_table_of_variables() {
        let asked = std::cell::RefCell::new(Vec::new());
        Vars::read(|k| {
            asked.borrow_mut().push(k.to_string());
            None
        });
        let mut asked = asked.into_inner();
        asked.sort();
        let mut table: Vec<String> = VARS.iter().map(|v| v.name.to_string()).collect();
        table.sort();
        assert_eq!(asked, table, "Vars::read and VARS");
        let page = include_str!("../../man/autossl-shim.8");
        let env = page
            .split(".SH ENVIRONMENT")
            .nth(1)
            .and_then(|s| s.split("\n.SH ").next())
            .expect("an ENVIRONMENT section");
        let mut named: Vec<String> = env
            .lines()
            .filter(|l| l.starts_with(".B ") || l.starts_with(".BR "))
            .flat_map(|l| l.split(|c: char| !(c.is_ascii_uppercase() || c == '_')))
            .filter(|w| w.starts_with("AUTOSSL_"))
            .map(str::to_string)
            .collect();
        named.sort();
        named.dedup();
        assert_eq!(named, table, "autossl-shim(8) ENVIRONMENT and VARS");
    }
}
