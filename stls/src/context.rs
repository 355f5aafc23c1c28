//! SslContext construction for both sides: protocol floor, modes, trust, verification
//! and, for the server, certificate selection by SNI.

use crate::env::{Env, Material, Pair};
use crate::exit::{ssl_reason, Error};
use crate::log::Log;
use crate::options::ClientCert;
use openssl::ssl::{
    NameType, SniError, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions,
    SslSessionCacheMode, SslVerifyMode, SslVersion,
};

use std::ffi::CStr;
use std::sync::{Arc, Mutex};

/// What a server context is built from, besides the environment.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Where the context's callbacks report (an OCSP response it could not staple).
    pub log: Log,
    /// Whether to ask for a client certificate.
    pub client_cert: ClientCert,
    /// 0: always the default pair; 1: the named pair matching SNI, else the default;
    /// 2: only named pairs.
    pub sni_level: u8,
    /// Keep a TCP EOF without close_notify an error (`-J`) instead of a clean EOF.
    pub enforce_close_notify: bool,
    /// The engine will enter the sandbox: nothing may be left to read from files later.
    pub sandbox: bool,
    /// Read every `CERTFILE:name` pair when the context is built (a server that builds it
    /// once and checks the pairs at start and at each reload: tlsserver), instead of only
    /// the pair the client's name selects, when it arrives (a program per connection: its
    /// start-up then does not grow with the number of names).
    pub sni_preload: bool,
}

/// What a client context is built from, besides the environment.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Verify the server's certificate chain.
    pub verify_cert: bool,
    /// Send CERTFILE/KEYFILE as a client certificate.
    pub send_cert: bool,
    /// Keep a TCP EOF without close_notify an error (`-J`) instead of a clean EOF.
    pub enforce_close_notify: bool,
    /// The engine will enter the sandbox: nothing may be left to read from files later.
    pub sandbox: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            verify_cert: true,
            send_cert: false,
            enforce_close_notify: false,
            sandbox: false,
        }
    }
}

fn builder(method: SslMethod, enforce_close_notify: bool) -> Result<SslContextBuilder, Error> {
    let e = |_| Error::handshake(format!("unable to create a TLS context: {}", ssl_reason()));
    let mut b = SslContextBuilder::new(method).map_err(e)?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(e)?;
    let mut o = SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE;
    if !enforce_close_notify {
        // A TCP EOF without close_notify becomes a clean EOF and the session stays writable.
        o |= SslOptions::IGNORE_UNEXPECTED_EOF;
    }
    b.set_options(o);
    // Partial writes with a moving buffer: the engine retries from wherever its buffer is.
    // RELEASE_BUFFERS: OpenSSL frees its 16 KiB record buffers whenever they are
    // empty, so an idle connection holds none (memory per idle connection); the cost is a
    // malloc/free pair per record under bulk load, which glibc serves from its free lists.
    b.set_mode(
        SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::RELEASE_BUFFERS,
    );
    // Read-ahead: one read(2) takes a record's header and body, and whatever
    // follows, instead of a 5-byte read then the body: fewer system calls per record, for
    // bulk and for round trips. Safe with the engine: it asks OpenSSL for data whenever it
    // has room and waits for the socket only after OpenSSL said WANT_READ.
    b.set_read_ahead(true);
    // One process per connection: a session cache or tickets could never be used again.
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    Ok(b)
}

fn use_pair(b: &mut SslContextBuilder, p: &Pair) -> Result<(), Error> {
    let e = |_| Error::config(format!("unable to use the certificate: {}", ssl_reason()));
    b.set_certificate(&p.leaf).map_err(e)?;
    for c in &p.chain {
        b.add_extra_chain_cert(c.clone()).map_err(e)?;
    }
    b.set_private_key(&p.key).map_err(e)?;
    Ok(())
}

/// A CADIR or CAFILE that cannot be used is an error at start, in the system's words: an
/// unusable directory would otherwise only show as every peer rejected later.
fn check_trust_path(var: &str, path: &std::ffi::OsStr, dir: bool) -> Result<(), Error> {
    let shown = path.to_string_lossy();
    let meta = std::fs::metadata(path)
        .map_err(|err| Error::config(format!("{var} {shown}: {}", crate::exit::io_text(&err))))?;
    match (dir, meta.is_dir()) {
        (true, false) => Err(Error::config(format!(
            "CADIR {shown} is not a directory (a PEM file of CA certificates goes in CAFILE)"
        ))),
        (false, true) => Err(Error::config(format!(
            "CAFILE {shown} is a directory (a hashed directory of CA certificates goes in CADIR)"
        ))),
        _ => Ok(()),
    }
}

fn trust_locations(b: &mut SslContextBuilder, env: &Env, sandbox: bool) -> Result<bool, Error> {
    let e = |what: &str| Error::config(format!("unable to load {what}: {}", ssl_reason()));
    if let Some(dir) = &env.cadir {
        check_trust_path("CADIR", dir, true)?;
    }
    if let Some(file) = &env.cafile {
        check_trust_path("CAFILE", file, false)?;
    }
    if let Some(dir) = &env.cadir {
        let d = dir
            .to_str()
            .ok_or_else(|| Error::config("CADIR is not valid UTF-8"))?;
        if env.uid.is_some() || env.gid.is_some() || sandbox {
            load_cadir_now(b, dir)?;
        } else {
            b.load_verify_locations(None, Some(std::path::Path::new(d)))
                .map_err(|_| e(&format!("CADIR {d}")))?;
        }
        return Ok(true);
    }
    if let Some(file) = &env.cafile {
        b.set_ca_file(file)
            .map_err(|_| e(&format!("CAFILE {}", file.to_string_lossy())))?;
        return Ok(true);
    }
    Ok(false)
}

/// A hashed directory is read lazily, during the handshake, which runs after the privilege
/// drop (with TLS_UID/TLS_GID a CADIR only root can read would reject every peer) and in
/// the sandbox (which opens no file). So its `HASH.N` files are read now, and parsed when
/// the handshake looks a name up ([`crate::hashdir`]).
fn load_cadir_now(b: &mut SslContextBuilder, dir: &std::ffi::OsStr) -> Result<(), Error> {
    crate::hashdir::add(b, &[std::path::Path::new(dir)], true).map_err(|err| {
        Error::config(format!(
            "unable to read CADIR {}: {}",
            dir.to_string_lossy(),
            crate::exit::io_text(&err)
        ))
    })
}

/// A server context, and a slot where the SNI callback leaves the precise error (a named
/// pair that fails to parse is a 96; no pair for the name under -k 2 says which name).
pub struct Server {
    /// The context every connection's session is made from.
    pub ctx: SslContext,
    /// The SNI callback's error for the last failed handshake, if it failed there.
    pub sni_error: Arc<Mutex<Option<Error>>>,
}

impl Server {
    /// The error to report for a failed handshake: the SNI callback's, if it left one,
    /// else `e`.
    pub fn handshake_error(&self, e: Error) -> Error {
        let sni = self.sni_error.lock().ok().and_then(|mut s| s.take());
        sni.unwrap_or(e)
    }
}

/// Find the pair for `name`: exact, then `*.rest` for one label; case-insensitive.
pub fn match_sni<'a, T>(pairs: &'a [(String, T)], name: &str) -> Option<&'a T> {
    sni_index(pairs.len(), |i| &pairs[i].0, name).map(|i| &pairs[i].1)
}

/// [`match_sni`] over `count` names, `name_of` giving each: the index of the match.
fn sni_index<'a>(count: usize, name_of: impl Fn(usize) -> &'a str, name: &str) -> Option<usize> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(i) = (0..count).find(|&i| name_of(i) == name) {
        return Some(i);
    }
    let (first, rest) = name.split_once('.')?;
    if first.is_empty() || rest.is_empty() {
        return None;
    }
    let wild = format!("*.{rest}");
    (0..count).find(|&i| name_of(i) == wild)
}

/// A server context: the default pair (unless `sni_level` is 2), the named pairs chosen by
/// SNI, the trust for client certificates. Files are read now, the named pairs parsed only
/// when a client asks for one.
pub fn server(opts: &ServerSettings, env: &Env) -> Result<Server, Error> {
    let mut b = builder(SslMethod::tls_server(), opts.enforce_close_notify)?;
    crate::policy::apply_server(&mut b, &env.policy)?;
    crate::ocsp::server(&mut b, &env.revocation, opts.log)?;
    let default = env.default_material()?;
    if opts.sni_level < 2 && default.is_none() {
        return Err(Error::usage(
            "CERTFILE and KEYFILE must be set (or use --mandatory-sni with CERTFILE:name pairs)",
        ));
    }
    if opts.sni_level == 2 && env.pairs.is_empty() {
        return Err(Error::usage(
            "--mandatory-sni needs CERTFILE:name and KEYFILE:name pairs",
        ));
    }
    let default_pair = match &default {
        Some(m) => Some(m.parse()?),
        None => None,
    };
    if let Some(p) = &default_pair {
        use_pair(&mut b, p)?;
    }
    if opts.client_cert != ClientCert::None {
        if !trust_locations(&mut b, env, opts.sandbox)? {
            return Err(Error::usage("-y and -Y need CADIR or CAFILE"));
        }
        let mut mode = SslVerifyMode::PEER;
        if opts.client_cert == ClientCert::Required {
            mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
        }
        b.set_verify(mode);
    }
    // Tickets only with keys that other processes share: a process that serves one
    // connection could never resume a session from a ticket of its own.
    match &env.tickets.keyfile {
        Some(path) => {
            let keys = crate::tickets::Keys::load(path, opts.log)?;
            let lifetime = env
                .tickets
                .lifetime
                .unwrap_or(crate::tickets::DEFAULT_LIFETIME);
            // A session made without client certificates must not resume where one is
            // required, nor the other way round.
            let sid: &[u8] = match opts.client_cert {
                ClientCert::None => b"stls/none",
                ClientCert::Optional => b"stls/optional",
                ClientCert::Required => b"stls/required",
            };
            crate::tickets::enable(&mut b, keys, lifetime, sid)?;
        }
        None => crate::tickets::disable(&mut b),
    }
    let sni_error = Arc::new(Mutex::new(None));
    if opts.sni_level > 0 {
        // The pairs' files are read now when asked to, or when the engine drops its
        // privileges before the handshake (a key only root can read must be read first);
        // otherwise only the chosen pair's, when the client's name arrives. Either way only
        // the chosen pair is parsed. The sandbox opens no file but reads one open before:
        // with it, each distinct file is opened now and read when a name chooses it.
        let preload = opts.sni_preload || crate::env::will_drop_privileges(env.uid, env.gid);
        // The callback shares the pairs with the environment's reading: no copy of
        // hundreds of names and paths.
        let pairs = env.pairs.clone();
        let files = if preload {
            let read = pairs.iter().map(|(_, c, k)| Material::load(c, k));
            PairFiles::Read(read.collect::<Result<_, _>>()?)
        } else if opts.sandbox {
            PairFiles::Opened(Opened::open(&pairs))
        } else {
            PairFiles::Paths
        };
        let mandatory = opts.sni_level == 2;
        let slot = sni_error.clone();
        b.set_servername_callback(move |ssl, _alert| {
            let sent = ssl.servername(NameType::HOST_NAME).map(str::to_string);
            let chosen = sent
                .as_deref()
                .and_then(|n| sni_index(pairs.len(), |i| &pairs[i].0, n));
            let Some(chosen) = chosen else {
                if !mandatory {
                    return Ok(());
                }
                let why = match sent {
                    Some(n) => format!("handshake failed: no certificate for the server name {n}"),
                    None => "handshake failed: the client sent no server name (SNI)".into(),
                };
                if let Ok(mut s) = slot.lock() {
                    *s = Some(Error::handshake(why));
                }
                return Err(SniError::ALERT_FATAL);
            };
            // A pair that cannot be read or parsed fails this connection (96, the file
            // named), not the ones that ask for another name.
            let applied = files
                .material(&pairs, chosen)
                .and_then(|m| m.parse())
                .and_then(|p| {
                    let e = |_| {
                        Error::config(format!("unable to use the certificate: {}", ssl_reason()))
                    };
                    ssl.set_certificate(&p.leaf).map_err(e)?;
                    for c in p.chain {
                        ssl.add_chain_cert(c).map_err(e)?;
                    }
                    ssl.set_private_key(&p.key).map_err(e)
                });
            match applied {
                Ok(()) => Ok(()),
                Err(err) => {
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(err);
                    }
                    Err(SniError::ALERT_FATAL)
                }
            }
        });
    }
    Ok(Server {
        ctx: b.build(),
        sni_error,
    })
}

/// The `CERTFILE:name` pairs' files: all read, read from their paths when a name
/// chooses them, or [`Opened`] now and read then.
enum PairFiles {
    Read(Vec<Material>),
    Paths,
    Opened(Opened),
}

impl PairFiles {
    /// Pair `i`'s files' contents, of `pairs` (the environment's).
    fn material<'a>(
        &'a self,
        pairs: &[crate::env::NamedPair],
        i: usize,
    ) -> Result<std::borrow::Cow<'a, Material>, Error> {
        use std::borrow::Cow;
        match self {
            PairFiles::Read(m) => m
                .get(i)
                .map(Cow::Borrowed)
                .ok_or_else(|| Error::config("no such certificate pair")),
            PairFiles::Paths => match pairs.get(i) {
                Some((_, c, k)) => Material::load(c, k).map(Cow::Owned),
                None => Err(Error::config("no such certificate pair")),
            },
            PairFiles::Opened(f) => f.material(i).map(Cow::Owned),
        }
    }
}

/// The pairs' files for a process that enters the sandbox before the client's name
/// arrives: each distinct path opened once, before entering (a hosting setup names one
/// certificate under many names), and read only when a name chooses it (read(2) on an
/// open descriptor is allowed in the sandbox). Beyond half the descriptor limit the
/// rest are read now. A file that cannot be opened or read fails only the connections
/// whose name chooses it.
struct Opened {
    /// For each pair, in order: its certificate's and its key's index in `files`.
    pairs: Vec<(usize, usize)>,
    files: Vec<std::sync::Mutex<OpenedFile>>,
}

struct OpenedFile {
    path: std::ffi::OsString,
    state: FileState,
}

enum FileState {
    /// Open, not read yet.
    Open(std::os::unix::io::RawFd),
    Read(Vec<u8>),
    /// The error to report (the file named) to the client that chooses it.
    Failed(i32, String),
}

impl Opened {
    fn open<'a>(pairs: &'a [crate::env::NamedPair]) -> Opened {
        use std::collections::HashMap;
        use std::ffi::OsStr;
        let mut index: HashMap<&'a OsStr, usize> = HashMap::new();
        let mut files: Vec<std::sync::Mutex<OpenedFile>> = Vec::new();
        let room = open_files_room();
        // A hosting setup names the same files pair after pair: the last ones are
        // checked before the map.
        let mut last: [Option<(&'a OsStr, usize)>; 2] = [None, None];
        let mut at = |p: &'a std::ffi::OsString, role: usize| -> usize {
            if let Some((q, i)) = last[role] {
                if q == p.as_os_str() {
                    return i;
                }
            }
            let i = *index.entry(p.as_os_str()).or_insert_with(|| {
                let state = if files.len() < room {
                    open_file(p)
                } else {
                    match read_path(p) {
                        Ok(b) => FileState::Read(b),
                        Err(e) => FileState::Failed(e.code, e.msg),
                    }
                };
                files.push(std::sync::Mutex::new(OpenedFile {
                    path: p.clone(),
                    state,
                }));
                files.len() - 1
            });
            last[role] = Some((p.as_os_str(), i));
            i
        };
        let pairs = pairs.iter().map(|(_, c, k)| (at(c, 0), at(k, 1))).collect();
        Opened { pairs, files }
    }

    /// Pair `i`'s files' contents, read now if they were not yet.
    fn material(&self, i: usize) -> Result<Material, Error> {
        let (c, k) = self
            .pairs
            .get(i)
            .copied()
            .ok_or_else(|| Error::config("no such certificate pair"))?;
        let (cert_path, cert) = self.contents(c)?;
        let (key_path, key) = self.contents(k)?;
        Ok(Material {
            cert_path,
            cert,
            key_path,
            key,
        })
    }

    fn contents(&self, i: usize) -> Result<(std::ffi::OsString, Vec<u8>), Error> {
        let Some(slot) = self.files.get(i) else {
            return Err(Error::config("no such certificate file"));
        };
        let mut f = slot
            .lock()
            .map_err(|_| Error::config("the certificate's file is unusable"))?;
        if let FileState::Open(fd) = f.state {
            let read = crate::fd::read_to_end(fd, usize::MAX);
            crate::fd::close(fd);
            f.state = match read {
                Ok(b) => FileState::Read(b),
                Err(e) => {
                    let e = unreadable(&f.path, &e);
                    FileState::Failed(e.code, e.msg)
                }
            };
        }
        match &f.state {
            FileState::Read(b) => Ok((f.path.clone(), b.clone())),
            FileState::Failed(code, msg) => Err(Error::new(*code, msg.clone())),
            FileState::Open(_) => Err(Error::config("the certificate's file is unusable")),
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        for f in &mut self.files {
            if let Ok(f) = f.get_mut() {
                if let FileState::Open(fd) = f.state {
                    crate::fd::close(fd);
                }
            }
        }
    }
}

/// How many files the pairs may hold open: half the soft descriptor limit, the rest left
/// to the connection, the app's pipes and the libraries.
fn open_files_room() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the local `r`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    usize::try_from(r.rlim_cur / 2).unwrap_or(usize::MAX)
}

fn open_file(p: &std::ffi::OsStr) -> FileState {
    use std::os::unix::io::IntoRawFd;
    // std opens with O_CLOEXEC: the app never inherits it.
    match std::fs::File::open(p) {
        Ok(f) => FileState::Open(f.into_raw_fd()),
        Err(e) => {
            let e = unreadable(p, &e);
            FileState::Failed(e.code, e.msg)
        }
    }
}

fn read_path(p: &std::ffi::OsStr) -> Result<Vec<u8>, Error> {
    std::fs::read(p).map_err(|e| unreadable(p, &e))
}

/// The error of a certificate or key file that cannot be read, as [`Material::load`]
/// says it.
fn unreadable(p: &std::ffi::OsStr, e: &std::io::Error) -> Error {
    Error::config(format!(
        "unable to read {}: {}",
        p.to_string_lossy(),
        crate::exit::io_text(e)
    ))
}

extern "C" {
    fn X509_get_default_cert_dir() -> *const libc::c_char;
    fn X509_get_default_cert_file() -> *const libc::c_char;
}

fn same_path(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// OpenSSL's compiled-in default CA directory and bundle.
#[derive(Clone, Copy)]
enum CaDefault {
    Dir,
    File,
}

fn openssl_default(which: CaDefault) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: both functions return a pointer to a static NUL-terminated string.
    let c = unsafe {
        CStr::from_ptr(match which {
            CaDefault::Dir => X509_get_default_cert_dir(),
            CaDefault::File => X509_get_default_cert_file(),
        })
    };
    std::ffi::OsStr::from_bytes(c.to_bytes()).into()
}

/// A client context. Trust: CADIR, else CAFILE, else the system store through its hashed
/// directory (looked up lazily, never the whole bundle) plus SSL_CERT_FILE when set.
pub fn client(opts: &ClientSettings, env: &Env) -> Result<SslContext, Error> {
    let mut b = builder(SslMethod::tls_client(), opts.enforce_close_notify)?;
    crate::policy::apply_client(&mut b, &env.policy)?;
    crate::ocsp::client(&mut b, &env.revocation, opts.verify_cert)?;
    if opts.verify_cert {
        if !trust_locations(&mut b, env, opts.sandbox)? {
            let default_dir = openssl_default(CaDefault::Dir);
            let dir = match &env.ssl_cert_dir {
                Some(d) => d.to_string_lossy().into_owned(),
                None => default_dir.to_string_lossy().into_owned(),
            };
            // A colon-separated list, as OpenSSL's own SSL_CERT_DIR.
            let dirs: Vec<&std::path::Path> = dir
                .split(':')
                .filter(|d| !d.is_empty())
                .map(std::path::Path::new)
                .collect();
            if opts.sandbox {
                // Read now, parsed on demand: the sandbox opens no file.
                let _ = crate::hashdir::add(&mut b, &dirs, false);
            } else {
                for d in &dirs {
                    let _ = b.load_verify_locations(None, Some(d));
                }
            }
            // SSL_CERT_FILE naming the system's own bundle while the system's hashed
            // directory is searched adds no certificate, only the parse of the whole
            // store (~40 ms): distributions export it that way, so it is skipped.
            let redundant = |f: &std::ffi::OsString| {
                let bundle = openssl_default(CaDefault::File);
                same_path(f.as_ref(), &bundle) && dirs.iter().any(|d| same_path(d, &default_dir))
            };
            if let Some(f) = env.ssl_cert_file.as_ref().filter(|f| !redundant(f)) {
                b.set_ca_file(f).map_err(|_| {
                    Error::config(format!(
                        "unable to load SSL_CERT_FILE {}: {}",
                        f.to_string_lossy(),
                        ssl_reason()
                    ))
                })?;
            }
            // Errors from a missing directory are not errors: the lookup just finds nothing.
            let _ = openssl::error::ErrorStack::get();
        }
        b.set_verify(SslVerifyMode::PEER);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    if opts.send_cert {
        let m = env
            .default_material()?
            .ok_or_else(|| Error::usage("-y needs CERTFILE and KEYFILE"))?;
        use_pair(&mut b, &m.parse()?)?;
    }
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::match_sni;

    #[test]
    fn sni_matching() {
        let pairs = vec![("a.test".to_string(), 1), ("*.wild.test".to_string(), 2)];
        assert_eq!(match_sni(&pairs, "A.TEST"), Some(&1));
        assert_eq!(match_sni(&pairs, "a.test."), Some(&1));
        assert_eq!(match_sni(&pairs, "x.wild.test"), Some(&2));
        assert_eq!(match_sni(&pairs, "y.x.wild.test"), None);
        assert_eq!(match_sni(&pairs, "wild.test"), None);
        assert_eq!(match_sni(&pairs, "b.test"), None);
        assert_eq!(match_sni(&pairs, ""), None);
        assert_eq!(match_sni(&pairs, ".wild.test"), None);
    }
}
