//! Process-wide tuning for a program that serves one connection: OpenSSL's start-up
//! trimmed to what a connection uses, and the heap handed back once the handshake is done.

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
        libc::malloc_trim(0);
        libc::mallopt(libc::M_MMAP_THRESHOLD, crate::engine::BUF as libc::c_int);
    }
}
