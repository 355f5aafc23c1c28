//! Every environment variable the programs read or give prog, defined once, beside the
//! option table ([`crate::options::OPTIONS`]) and in its terms: which programs read a
//! variable is a set of option [`Groups`], as which programs take an option is. The
//! table drives `--help`'s environment lines, the variables `-z` (the default) removes
//! from prog's environment ([`is_secret`]), and the documentation test that compares
//! both with every manual page.

use crate::options::Groups;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// One variable, or a family of them.
pub struct Var {
    /// The name; `NAME:name` stands for every variable `NAME:` followed by a name.
    pub name: &'static str,
    /// The programs that read it: those that take every option group of this set.
    /// `None`: no program reads it (a variable only given to prog).
    pub read_by: Option<Groups>,
    /// Removed from prog's environment unless `-Z`: it carries a secret, a privilege or
    /// the wrapper's own TLS settings, not prog's.
    pub secret: bool,
    /// The programs that set it for prog (same rule as `read_by`); `None`: none does.
    pub to_prog: Option<Groups>,
    /// What it is, in one line.
    pub doc: &'static str,
}

/// Read by the programs of `by`, and removed from prog's environment unless `-Z`.
const fn secret(name: &'static str, by: Groups, doc: &'static str) -> Var {
    Var {
        name,
        read_by: Some(by),
        secret: true,
        to_prog: None,
        doc,
    }
}

/// Read by the programs of `by`, and left in prog's environment.
const fn read(name: &'static str, by: Groups, doc: &'static str) -> Var {
    Var {
        name,
        read_by: Some(by),
        secret: false,
        to_prog: None,
        doc,
    }
}

/// Set for prog by the programs of `by`.
const fn given(name: &'static str, by: Groups, doc: &'static str) -> Var {
    Var {
        name,
        read_by: None,
        secret: false,
        to_prog: Some(by),
        doc,
    }
}

const COMMON: Groups = Groups::COMMON;
const SERVER: Groups = Groups::SERVER;
const CLIENT: Groups = Groups::CLIENT;
const CLIENT_FDS: Groups = Groups::CLIENT_FDS;
const LISTEN: Groups = Groups::LISTEN;
const CONNECT: Groups = Groups::CONNECT;
const PROXY: Groups = Groups::PROXY;
/// The programs whose prog gets the session in its environment (every one but the
/// delayed wrappers, whose prog reads it on SSLCTLFD).
const NOT_DELAYED: Groups = Groups::NOT_DELAYED;
/// The programs whose prog may ask for TLS itself (UCSPI-TLS).
const DELAYED: Groups = Groups::DELAYED;

/// Every variable of every program.
#[rustfmt::skip]
pub static VARIABLES: &[Var] = &[
    secret("CERTFILE", COMMON, "the certificate (chain), PEM or DER: the server's, or the client's with -y"),
    secret("KEYFILE", COMMON, "the private key of CERTFILE"),
    secret("CERTFILE:name", SERVER, "the certificate for the server name `name` (SNI)"),
    secret("KEYFILE:name", SERVER, "the private key of CERTFILE:name"),
    secret("CADIR", COMMON, "trusted certificates, a hashed directory (wins over CAFILE)"),
    secret("CAFILE", COMMON, "trusted certificates, a PEM file"),
    read("SSL_CERT_DIR", CLIENT, "the system store's directories, without CADIR and CAFILE"),
    read("SSL_CERT_FILE", CLIENT, "a file of the system store, without CADIR and CAFILE"),
    read("TCPREMOTEIP", CLIENT_FDS, "the server's address, verified without -k"),
    secret("TLS_UID", COMMON, "the TLS engine's user id, when run as root"),
    secret("TLS_GID", COMMON, "the TLS engine's group id, when run as root"),
    secret("TLS_CIPHERS", COMMON, "the TLS 1.2 cipher list"),
    secret("TLS_CIPHERSUITES", COMMON, "the TLS 1.3 cipher suites"),
    secret("TLS_GROUPS", COMMON, "the key-exchange groups"),
    secret("TLS_MIN_VERSION", COMMON, "the lowest TLS version, 1.2 or 1.3"),
    secret("OCSPFILE", SERVER, "a DER OCSP response to staple for CERTFILE"),
    secret("OCSPFILE:name", SERVER, "a DER OCSP response to staple for CERTFILE:name"),
    secret("CRLFILE", CLIENT, "certificate revocation lists for the verification"),
    secret("TICKETKEYFILE", SERVER, "session ticket keys shared by every server"),
    secret("TICKETLIFETIME", SERVER, "how long a session ticket resumes (default 2h)"),
    read("OPENSSL_CONF", COMMON, "OpenSSL's configuration file, loaded only when set"),
    read("LISTEN_PID", LISTEN, "socket activation: this process's id"),
    read("LISTEN_FDS", LISTEN, "socket activation: 1, the listener on fd 3"),
    read("UID", LISTEN, "with -U: prog's user id"),
    read("GID", LISTEN, "with -U: prog's group id"),
    read("GIDLIST", LISTEN, "with -U: prog's supplementary groups"),
    given("SSL_PROTOCOL", NOT_DELAYED, "the TLS version of the session"),
    given("SSL_CIPHER", NOT_DELAYED, "the cipher suite"),
    given("SSL_GROUP", NOT_DELAYED, "the key exchange's group (X25519MLKEM768: post-quantum)"),
    given("SSL_TLS_SNI_SERVERNAME", NOT_DELAYED, "the server name (SNI)"),
    given("SSL_PEER_CERT_HASH", NOT_DELAYED, "SHA256: and the peer certificate's digest"),
    given("SSL_PEER_CERT_SUBJECT", NOT_DELAYED, "the peer certificate's subject"),
    given("SSL_SESSION_RESUMED", NOT_DELAYED.with(SERVER), "1 in a resumed session"),
    given("SSLCTLFD", DELAYED, "UCSPI-TLS: prog's end of the control socket"),
    given("SSLREADFD", DELAYED, "UCSPI-TLS: where prog reads the peer's clear text"),
    given("SSLWRITEFD", DELAYED, "UCSPI-TLS: where prog writes clear text for the peer"),
    given("PROTO", LISTEN, "TCP"),
    given("TCPLOCALIP", LISTEN, "the local end's address"),
    given("TCPLOCALPORT", LISTEN, "the local end's port"),
    given("TCPREMOTEIP", LISTEN, "the client's address"),
    given("TCPREMOTEPORT", LISTEN, "the client's port"),
    given("TCPCONNNUM", LISTEN, "connections from the client's address, this one included"),
    given("PROTO", PROXY, "with -L, TCP"),
    given("TCPLOCALIP", PROXY, "with -L, the header's destination address"),
    given("TCPLOCALPORT", PROXY, "with -L, the header's destination port"),
    given("TCPREMOTEIP", PROXY, "with -L, the header's client address"),
    given("TCPREMOTEPORT", PROXY, "with -L, the header's client port"),
    given("PROTO", CONNECT, "TCP"),
    given("TCPLOCALIP", CONNECT, "the local end's address"),
    given("TCPLOCALPORT", CONNECT, "the local end's port"),
    given("TCPREMOTEIP", CONNECT, "the server's address"),
    given("TCPREMOTEPORT", CONNECT, "the server's port"),
];

/// Whether a program of `groups` is one of `set`'s.
fn of(set: Option<Groups>, groups: Groups) -> bool {
    set.is_some_and(|s| groups.contains(s))
}

/// The variables a program of `groups` reads, in the table's order.
pub fn read_by(groups: Groups) -> impl Iterator<Item = &'static Var> {
    VARIABLES.iter().filter(move |v| of(v.read_by, groups))
}

/// The variables a program of `groups` sets for prog, in the table's order, once each.
pub fn given_by(groups: Groups) -> impl Iterator<Item = &'static Var> {
    VARIABLES
        .iter()
        .enumerate()
        .filter(move |(i, v)| {
            of(v.to_prog, groups)
                && !VARIABLES[..*i]
                    .iter()
                    .any(|w| w.name == v.name && of(w.to_prog, groups))
        })
        .map(|(_, v)| v)
}

/// The variables removed from prog's environment unless `-Z`, in the table's order.
pub fn secrets() -> impl Iterator<Item = &'static Var> {
    VARIABLES.iter().filter(|v| v.secret)
}

/// Whether `key` names `v`: its name, or for `NAME:name` any `NAME:` followed by a name
/// (an empty name too: such a variable is refused, and never passed on).
fn names(v: &Var, key: &[u8]) -> bool {
    match v.name.strip_suffix(":name") {
        Some(prefix) => key
            .strip_prefix(prefix.as_bytes())
            .is_some_and(|r| r.starts_with(b":")),
        None => key == v.name.as_bytes(),
    }
}

/// Whether `-z` (the default) removes `key` from prog's environment: the table's secret
/// variables (certificates, keys, trust, the engine's ids, the TLS policy, revocation and
/// ticket files).
pub fn is_secret(key: &OsStr) -> bool {
    let k = key.as_bytes();
    // Asked for every variable of the environment at each connection (hundreds with
    // many SNI pairs): the first byte sets most of them aside before any comparison.
    let Some(first) = k.first() else {
        return false;
    };
    secrets().any(|v| v.name.as_bytes().first() == Some(first) && names(v, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_by_name_and_family() {
        for k in [
            "CADIR",
            "CERTFILE:x",
            "CERTFILE:",
            "KEYFILE",
            "TLS_GID",
            "TLS_GROUPS",
            "TLS_CIPHERSUITES",
            "OCSPFILE",
            "OCSPFILE:x",
            "CRLFILE",
            "TICKETKEYFILE",
            "TICKETLIFETIME",
        ] {
            assert!(is_secret(OsStr::new(k)), "{k}");
        }
        for k in [
            "CERTFILEX",
            "OCSPFILEX",
            "TLS_UIDX",
            "OPENSSL_CONF",
            "SSL_CERT_DIR",
            "PATH",
        ] {
            assert!(!is_secret(OsStr::new(k)), "{k}");
        }
    }

    #[test]
    fn every_variable_is_read_or_given() {
        for v in VARIABLES {
            assert!(v.read_by.is_some() || v.to_prog.is_some(), "{}", v.name);
            assert!(!v.secret || v.read_by.is_some(), "{}", v.name);
        }
    }
}
