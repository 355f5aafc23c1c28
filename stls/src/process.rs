//! Process-wide tuning for a program that serves one connection: OpenSSL's start-up
//! trimmed to what a connection uses, the heap handed back once the handshake is done,
//! and for a server that forks per connection, OpenSSL's tables filled before the forks.

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

/// Fresh anonymous pages from mmap, zero-filled by the kernel and faulted in only as far
/// as they are used, whatever state the heap is in (a recycled heap chunk would be zeroed
/// page by page, and in a forked process copied on write first). Falls back to the heap
/// when the mapping fails.
pub struct Pages {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    mapped: bool,
}

impl Pages {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Pages {
        // SAFETY: an anonymous private mapping of a fresh range; no existing memory is
        // touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(p.cast::<u8>()) {
            Some(ptr) if p != libc::MAP_FAILED && len > 0 => Pages {
                ptr,
                len,
                mapped: true,
            },
            _ => {
                let b: Box<[u8]> = vec![0u8; len].into_boxed_slice();
                let ptr = std::ptr::NonNull::from(Box::leak(b)).cast::<u8>();
                Pages {
                    ptr,
                    len,
                    mapped: false,
                }
            }
        }
    }
}

impl std::ops::Deref for Pages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` initialised bytes this value owns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Pages {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: the mapping made in `new`, of this length, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        } else {
            let s = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
            // SAFETY: the box leaked in `new`, rebuilt once.
            drop(unsafe { Box::from_raw(s) });
        }
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
