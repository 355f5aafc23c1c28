//! The process itself: OpenSSL's start-up trimmed to what a connection uses, the heap
//! handed back once the handshake is done, OpenSSL's tables filled before a server's forks;
//! forking, detaching, leaving at once, reaping children, the open-files limit.

/// OpenSSL's start-up, trimmed for a process that serves one connection (it is a large part
/// of the CPU of a handshake). Everything skipped here is looked up on demand:
/// - the system configuration (`openssl.cnf`) is not read unless `load_config` (the
///   programs pass whether OPENSSL_CONF is set);
/// - the error strings (thousands of hash-table inserts) are loaded by
///   [`crate::exit::ssl_reason`] only when a message is about to be printed;
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
    // SAFETY: OPENSSL_init_ssl takes plain flags and a null settings pointer (no config
    // file name); it is safe to call at any time and only its first call's flags matter.
    unsafe { openssl_sys::OPENSSL_init_ssl(flags, std::ptr::null()) };
    // rust-openssl's own once-only initialisation; OpenSSL's parts of it are done already.
    openssl::init();
}

/// After the handshake: give the heap's free memory (context building, certificate and key
/// parsing, handshake scratch) back to the kernel, so that an idle connection costs only
/// what it still uses. From here on, blocks of the engine's buffer size come from mmap:
/// calloc would zero a recycled heap chunk page by page, while fresh mapped pages are
/// touched only as far as data goes (64 kB per idle connection, measured).
pub fn trim_heap() {
    // SAFETY: malloc_trim and mallopt only adjust glibc's allocator; no pointer is passed
    // and every live allocation stays valid.
    unsafe {
        if TRIM.load(std::sync::atomic::Ordering::Relaxed) {
            libc::malloc_trim(0);
        }
        libc::mallopt(libc::M_MMAP_THRESHOLD, crate::engine::BUF as libc::c_int);
    }
}

static TRIM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// In a process forked from one that built the context (tlsc's helper): the heap is
/// mostly the parent's, shared until written; trimming it would only write to it.
pub fn keep_heap() {
    TRIM.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// Which side of a [`fork`] this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The process that forked, and the child's pid.
    Parent(libc::pid_t),
}

/// fork(2). For a single-threaded process (tlsserver's loop, tlsc before it starts any
/// thread): the child is a copy of it that goes on with its own work and leaves by exit.
pub fn fork() -> std::io::Result<Forked> {
    // SAFETY: fork takes no argument; the callers are single-threaded when they fork, so the
    // child holds no lock another thread had taken.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Fork once: the first process exits 0 at once, so whoever spawned the program never has
/// to wait for the long-lived one (autossl-shim keeps it out of the host's children).
pub fn detach() -> std::io::Result<()> {
    match fork()? {
        Forked::Child => Ok(()),
        Forked::Parent(_) => exit_now(0),
    }
}

/// _exit(2): the process ends at once, without running destructors or flushing anything;
/// for a process that has nothing of its own to finish (a parent left by [`detach`], a
/// watcher thread that must stop everything).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running any code.
    unsafe { libc::_exit(code) }
}

/// Kill child `pid` with SIGKILL and reap it at once. A killed process exits without
/// running any code of its own, so the wait is the kernel's teardown.
pub fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: kill and waitpid on a child of this process, with a local status.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        while libc::waitpid(pid, &mut st, 0) < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
    }
}

/// Reap one finished child, if any, without waiting: its pid and wait status.
pub fn reap_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut st = 0;
    // SAFETY: waitpid writes the status into a local integer.
    let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
    (pid > 0).then_some((pid, st))
}

/// The soft RLIMIT_NOFILE: raised to the hard limit by [`Nofile::raise`] (a server's pool
/// of idle connections), put back by [`Nofile::restore`] (in a forked process, for prog).
pub struct Nofile {
    start: libc::rlimit,
    /// The soft limit now.
    pub now: u64,
}

impl Nofile {
    /// Raise the soft limit to the hard one; on failure the limit stays (1024 assumed when
    /// it cannot even be read).
    pub fn raise() -> Nofile {
        // SAFETY: getrlimit and setrlimit read and write a local struct.
        unsafe {
            let mut start: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut start) < 0 {
                return Nofile { start, now: 1024 };
            }
            let raised = libc::rlimit {
                rlim_cur: start.rlim_max,
                rlim_max: start.rlim_max,
            };
            let now = if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                raised.rlim_cur
            } else {
                start.rlim_cur
            };
            Nofile { start, now }
        }
    }

    /// The limit the process was started with, back.
    pub fn restore(&self) {
        // SAFETY: setrlimit reads a struct owned by self.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.start) };
    }
}

/// One side's end of an in-memory connection: reads what the other side wrote.
struct Memory {
    rx: std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<u8>>>,
    tx: std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<u8>>>,
}

impl std::io::Read for Memory {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut rx = self.rx.borrow_mut();
        if rx.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(rx.len());
        for (b, x) in buf.iter_mut().zip(rx.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
}

impl std::io::Write for Memory {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx.borrow_mut().extend(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One handshake of a server context with a client, in memory, in a server that forks a
/// process per connection, before it listens. OpenSSL builds
/// the implementations a handshake fetches (key exchange, signature, key derivation, MAC)
/// at their first use and files them in its global tables: built here once, every
/// connection's process inherits them instead of building them again and writing those
/// tables' pages (copy-on-write faults). A handshake that fails here (a context that
/// wants SNI or a client certificate) has still fetched most of them; nothing is reported,
/// and the caller clears what the context's callbacks may have kept of it.
pub fn warm_up(ctx: &openssl::ssl::SslContextRef) {
    use openssl::ssl::{SslContext, SslMethod};
    let Ok(mut b) = SslContext::builder(SslMethod::tls_client()) else {
        return;
    };
    b.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let client_ctx = b.build();
    handshake_in_memory(&client_ctx, ctx);
}

/// [`warm_up`] for a client context, in a helper that forks a process per connection
/// (`tlsc --serve`): against a server with a key and certificate made for it (which the
/// client's verification refuses, after most of the handshake has fetched what it needs).
pub fn warm_up_client(ctx: &openssl::ssl::SslContextRef) {
    let Some(server) = throwaway_server() else {
        return;
    };
    handshake_in_memory(ctx, &server);
}

/// A server context with a P-256 key and a self-signed certificate, in memory.
fn throwaway_server() -> Option<openssl::ssl::SslContext> {
    use openssl::{ec, hash, pkey, ssl, x509};
    let group = ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).ok()?;
    let key = pkey::PKey::from_ec_key(ec::EcKey::generate(&group).ok()?).ok()?;
    let mut name = x509::X509NameBuilder::new().ok()?;
    name.append_entry_by_text("CN", "warm-up.invalid").ok()?;
    let name = name.build();
    let mut c = x509::X509Builder::new().ok()?;
    c.set_version(2).ok()?;
    c.set_subject_name(&name).ok()?;
    c.set_issuer_name(&name).ok()?;
    c.set_pubkey(&key).ok()?;
    c.set_not_before(openssl::asn1::Asn1Time::days_from_now(0).ok()?.as_ref())
        .ok()?;
    c.set_not_after(openssl::asn1::Asn1Time::days_from_now(1).ok()?.as_ref())
        .ok()?;
    c.sign(&key, hash::MessageDigest::sha256()).ok()?;
    let cert = c.build();
    let mut b = ssl::SslContext::builder(ssl::SslMethod::tls_server()).ok()?;
    b.set_private_key(&key).ok()?;
    b.set_certificate(&cert).ok()?;
    Some(b.build())
}

/// One handshake between a client and a server context, in memory; its outcome does not
/// matter (see [`warm_up`]).
fn handshake_in_memory(
    client_ctx: &openssl::ssl::SslContextRef,
    ctx: &openssl::ssl::SslContextRef,
) {
    use openssl::ssl::{HandshakeError, MidHandshakeSslStream, Ssl};
    let (a, z) = (Default::default(), std::rc::Rc::default());
    let c = Memory {
        rx: std::rc::Rc::clone(&z),
        tx: std::rc::Rc::clone(&a),
    };
    let s = Memory { rx: a, tx: z };
    type Mid = MidHandshakeSslStream<Memory>;
    let step = |r: Result<openssl::ssl::SslStream<Memory>, HandshakeError<Memory>>| -> Option<Option<Mid>> {
        match r {
            Ok(_) => Some(None),
            Err(HandshakeError::WouldBlock(m)) => Some(Some(m)),
            Err(_) => None,
        }
    };
    let (Ok(cs), Ok(ss)) = (Ssl::new(client_ctx), Ssl::new(ctx)) else {
        return;
    };
    let Some(mut client) = step(cs.connect(c)) else {
        return;
    };
    let Some(mut srv) = step(ss.accept(s)) else {
        return;
    };
    // A TLS 1.3 handshake takes two flights each way; the bound is only a safety net.
    for _ in 0..8 {
        if client.is_none() && srv.is_none() {
            break;
        }
        if let Some(m) = client.take() {
            match step(m.handshake()) {
                Some(next) => client = next,
                None => break,
            }
        }
        if let Some(m) = srv.take() {
            match step(m.handshake()) {
                Some(next) => srv = next,
                None => break,
            }
        }
    }
    // Nothing of this handshake may show in a connection's error report.
    let _ = openssl::error::ErrorStack::get();
}
