//! In-process TLS peers on the openssl crate: a client that can half-close (send
//! close_notify, keep reading to EOF), and a one-shot server for tlsc's tests.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, ShutdownResult, Ssl, SslContext, SslFiletype, SslMethod, SslMode, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;

use crate::payload::Hasher;
use crate::pki::{pki, Pair};

/// How a stream of data from the peer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The peer sent close_notify.
    CloseNotify,
    /// TCP EOF without close_notify.
    Eof,
    /// The read timed out.
    Timeout,
    /// Any other error (reset, TLS alert...).
    Error(String),
}

#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// Trust anchors; `None` = no chain verification.
    pub ca: Option<PathBuf>,
    /// SNI to send.
    pub sni: Option<String>,
    /// Name to verify (`None` = no name check).
    pub verify_name: Option<String>,
    pub min: Option<SslVersion>,
    pub max: Option<SslVersion>,
    /// Client certificate to present.
    pub cert: Option<Pair>,
    /// Timeout of each socket read/write and of the connect.
    pub timeout: Duration,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            ca: Some(pki().ca.clone()),
            sni: Some("localhost".into()),
            verify_name: Some("localhost".into()),
            min: None,
            max: None,
            cert: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl ClientOpts {
    pub fn tls12() -> ClientOpts {
        ClientOpts {
            min: Some(SslVersion::TLS1_2),
            max: Some(SslVersion::TLS1_2),
            ..Default::default()
        }
    }
    pub fn tls13() -> ClientOpts {
        ClientOpts {
            min: Some(SslVersion::TLS1_3),
            max: Some(SslVersion::TLS1_3),
            ..Default::default()
        }
    }
    pub fn version(v: SslVersion) -> ClientOpts {
        ClientOpts {
            min: Some(v),
            max: Some(v),
            ..Default::default()
        }
    }
    pub fn sni(mut self, name: Option<&str>) -> ClientOpts {
        self.sni = name.map(str::to_string);
        self
    }
    pub fn no_verify(mut self) -> ClientOpts {
        self.ca = None;
        self.verify_name = None;
        self
    }
    pub fn with_cert(mut self, p: &Pair) -> ClientOpts {
        self.cert = Some(p.clone());
        self
    }
}

pub struct TlsClient {
    pub stream: SslStream<TcpStream>,
}

fn ssl_err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Connect and handshake; `Err` carries a description of the failure.
pub fn connect(addr: SocketAddr, o: &ClientOpts) -> Result<TlsClient, String> {
    let tcp = TcpStream::connect_timeout(&addr, o.timeout).map_err(ssl_err("connect"))?;
    handshake(tcp, o)
}

/// Handshake as a client over an already connected socket.
pub fn handshake(tcp: TcpStream, o: &ClientOpts) -> Result<TlsClient, String> {
    tcp.set_read_timeout(Some(o.timeout))
        .expect("set_read_timeout");
    tcp.set_write_timeout(Some(o.timeout))
        .expect("set_write_timeout");
    let _ = tcp.set_nodelay(true);
    let mut b = SslContext::builder(SslMethod::tls_client()).map_err(ssl_err("context"))?;
    b.set_min_proto_version(o.min).map_err(ssl_err("min"))?;
    b.set_max_proto_version(o.max).map_err(ssl_err("max"))?;
    b.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    match &o.ca {
        Some(ca) => {
            b.set_ca_file(ca).map_err(ssl_err("CA file"))?;
            b.set_verify(SslVerifyMode::PEER);
        }
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if let Some(c) = &o.cert {
        b.set_certificate_chain_file(&c.cert)
            .map_err(ssl_err("client cert"))?;
        b.set_private_key_file(&c.key, SslFiletype::PEM)
            .map_err(ssl_err("client key"))?;
    }
    let ctx = b.build();
    let mut ssl = Ssl::new(&ctx).map_err(ssl_err("ssl"))?;
    if let Some(s) = &o.sni {
        ssl.set_hostname(s).map_err(ssl_err("sni"))?;
    }
    if let Some(n) = &o.verify_name {
        if let Ok(ip) = n.parse::<std::net::IpAddr>() {
            ssl.param_mut().set_ip(ip).map_err(ssl_err("ip"))?;
        } else {
            ssl.param_mut().set_host(n).map_err(ssl_err("host"))?;
        }
    }
    let mut s = SslStream::new(ssl, tcp).map_err(ssl_err("stream"))?;
    // A signal interrupts a socket call with a timeout (never restarted by the kernel);
    // OpenSSL keeps its state, so the handshake resumes. Bounded.
    let mut tries = 0;
    loop {
        match s.connect() {
            Ok(()) => break,
            Err(e) if interrupted(&e) && tries < 100 => tries += 1,
            Err(e) => return Err(format!("handshake: {e}")),
        }
    }
    Ok(TlsClient { stream: s })
}

fn interrupted(e: &openssl::ssl::Error) -> bool {
    e.io_error().map(|io| io.kind()) == Some(io::ErrorKind::Interrupted)
}

fn classify(e: &openssl::ssl::Error) -> End {
    if e.code() == ErrorCode::ZERO_RETURN {
        return End::CloseNotify;
    }
    if let Some(io) = e.io_error() {
        return match io.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Timeout,
            _ => End::Error(io.to_string()),
        };
    }
    if e.code() == ErrorCode::SYSCALL {
        return End::Eof;
    }
    let s = e.to_string();
    if s.contains("unexpected eof") {
        End::Eof
    } else {
        End::Error(s)
    }
}

impl TlsClient {
    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)?;
        self.stream.flush()
    }

    /// Write in steps of `chunk` bytes (each a separate `SSL_write`).
    pub fn write_chunked(&mut self, data: &[u8], chunk: usize) -> io::Result<()> {
        for c in data.chunks(chunk) {
            self.stream.write_all(c)?;
        }
        Ok(())
    }

    /// Send close_notify (our direction ends; we can still read).
    pub fn close_notify(&mut self) -> Result<(), String> {
        match self.stream.shutdown() {
            Ok(ShutdownResult::Sent) | Ok(ShutdownResult::Received) => Ok(()),
            Err(e) => Err(format!("shutdown: {e}")),
        }
    }

    /// TCP-level half-close (FIN), without close_notify unless sent before.
    pub fn shutdown_tcp_write(&mut self) {
        let _ = self.stream.get_ref().shutdown(Shutdown::Write);
    }

    /// Half-close the way a careful client does: close_notify, then FIN.
    pub fn half_close(&mut self) -> Result<(), String> {
        self.close_notify()?;
        self.shutdown_tcp_write();
        Ok(())
    }

    /// Read one chunk (up to `buf.len()`); `Ok(0)` never returned: the end is an `Err(End)`.
    pub fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        loop {
            match self.stream.ssl_read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.code() == ErrorCode::WANT_READ && e.io_error().is_none() => continue,
                // A signal interrupted a read with a timeout (never restarted by the kernel).
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(classify(&e)),
            }
        }
    }

    /// Read until the peer's end; everything received and how it ended.
    pub fn read_to_end(&mut self) -> (Vec<u8>, End) {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.read_some(&mut buf) {
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(end) => return (out, end),
            }
        }
    }

    /// Read until the end, hashing instead of keeping; `pause` between reads (slow reader).
    pub fn hash_to_end(&mut self, pause: Option<(usize, Duration)>) -> (Hasher, End) {
        let mut h = Hasher::new();
        let bufsize = pause.map(|p| p.0).unwrap_or(256 * 1024);
        let mut buf = vec![0u8; bufsize];
        loop {
            match self.read_some(&mut buf) {
                Ok(n) => h.update(&buf[..n]),
                Err(end) => return (h, end),
            }
            if let Some((_, d)) = pause {
                thread::sleep(d);
            }
        }
    }

    /// Read exactly `n` bytes (or fail).
    pub fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, End> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            got += self.read_some(&mut out[got..])?;
        }
        Ok(out)
    }

    pub fn peer_cert(&self) -> Option<X509> {
        self.stream.ssl().peer_certificate()
    }

    /// The peer certificate's common name.
    pub fn peer_cn(&self) -> Option<String> {
        let c = self.peer_cert()?;
        let e = c
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()?;
        e.data().to_string().ok()
    }

    pub fn version(&self) -> &'static str {
        self.stream.ssl().version_str()
    }

    pub fn cipher(&self) -> String {
        self.stream
            .ssl()
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default()
    }

    /// Full duplex: write all of `data` while reading whatever comes back, until the peer
    /// ends. After the last byte is written, `close_notify` (if `half_close`) and FIN.
    /// Returns the hash of what was received and how it ended.
    pub fn duplex(&mut self, data: &[u8], half_close: bool, timeout: Duration) -> (Hasher, End) {
        let fd = self.stream.get_ref().as_raw_fd();
        self.stream
            .get_ref()
            .set_nonblocking(true)
            .expect("set_nonblocking");
        let deadline = Instant::now() + timeout;
        let mut h = Hasher::new();
        let mut off = 0usize;
        let mut closed = false;
        let mut buf = vec![0u8; 64 * 1024];
        let end = 'outer: loop {
            if Instant::now() > deadline {
                break End::Timeout;
            }
            let mut want_write = false;
            // write as much as possible
            while off < data.len() {
                let n = (data.len() - off).min(64 * 1024);
                match self.stream.ssl_write(&data[off..off + n]) {
                    Ok(w) => off += w,
                    Err(e) if e.code() == ErrorCode::WANT_WRITE => {
                        want_write = true;
                        break;
                    }
                    Err(e) if e.code() == ErrorCode::WANT_READ => break,
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => break 'outer End::Error(format!("write: {e}")),
                }
            }
            if off == data.len() && !closed {
                if half_close {
                    match self.stream.shutdown() {
                        Ok(_) => {}
                        Err(e)
                            if e.code() == ErrorCode::WANT_WRITE
                                || e.code() == ErrorCode::WANT_READ =>
                        {
                            want_write = true;
                        }
                        Err(e) => break 'outer End::Error(format!("shutdown: {e}")),
                    }
                }
                if !want_write {
                    let _ = self.stream.get_ref().shutdown(Shutdown::Write);
                    closed = true;
                }
            }
            // read everything available
            loop {
                match self.stream.ssl_read(&mut buf) {
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) if e.code() == ErrorCode::WANT_READ => break,
                    Err(e) if e.code() == ErrorCode::WANT_WRITE => {
                        want_write = true;
                        break;
                    }
                    Err(e) => break 'outer classify(&e),
                }
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe {
                libc::poll(&mut pfd, 1, 100);
            }
        };
        self.stream
            .get_ref()
            .set_nonblocking(false)
            .expect("set_nonblocking");
        (h, end)
    }
}

/// Options of the in-process one-shot server.
#[derive(Clone)]
pub struct ServerOpts {
    pub pair: Pair,
    pub min: Option<SslVersion>,
    pub max: Option<SslVersion>,
    /// Security level 0 and all ciphers (to offer TLS 1.0/1.1).
    pub permissive: bool,
    /// Require a client certificate verified against this CA.
    pub client_ca: Option<PathBuf>,
}

impl ServerOpts {
    pub fn new(pair: &Pair) -> ServerOpts {
        ServerOpts {
            pair: pair.clone(),
            min: None,
            max: None,
            permissive: false,
            client_ca: None,
        }
    }
}

/// What the server saw.
#[derive(Debug)]
pub struct ServerReport {
    /// Handshake error, if the handshake failed.
    pub handshake: Result<(), String>,
    /// Whatever the handler returned.
    pub result: Option<Vec<u8>>,
}

/// A server on 127.0.0.1 (or `[::1]`) that accepts one connection, handshakes and
/// runs `handler` on the stream.
pub struct OneShotServer {
    pub addr: SocketAddr,
    handle: Option<thread::JoinHandle<ServerReport>>,
}

pub type Handler = Box<dyn FnOnce(&mut SslStream<TcpStream>) -> Vec<u8> + Send>;

impl OneShotServer {
    pub fn start(o: ServerOpts, handler: Handler) -> OneShotServer {
        Self::start_on("127.0.0.1:0", o, handler)
    }

    pub fn start_on(bind: &str, o: ServerOpts, handler: Handler) -> OneShotServer {
        let l = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = l.local_addr().expect("local_addr");
        let mut b = SslContext::builder(SslMethod::tls_server()).expect("server context");
        if o.permissive {
            b.set_security_level(0);
            b.set_cipher_list("ALL:@SECLEVEL=0").expect("cipher list");
        }
        b.set_min_proto_version(o.min).expect("min");
        b.set_max_proto_version(o.max).expect("max");
        b.set_certificate_chain_file(&o.pair.cert)
            .expect("server cert");
        b.set_private_key_file(&o.pair.key, SslFiletype::PEM)
            .expect("server key");
        if let Some(ca) = &o.client_ca {
            b.set_ca_file(ca).expect("client CA");
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        let ctx = b.build();
        let handle = thread::spawn(move || {
            l.set_nonblocking(true).expect("nonblocking listener");
            let deadline = Instant::now() + Duration::from_secs(60);
            let tcp = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            return ServerReport {
                                handshake: Err("no connection within 60 s".into()),
                                result: None,
                            };
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            };
            tcp.set_nonblocking(false).expect("blocking");
            tcp.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            tcp.set_write_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let ssl = Ssl::new(&ctx).expect("ssl");
            let mut s = SslStream::new(ssl, tcp).expect("stream");
            if let Err(e) = s.accept() {
                return ServerReport {
                    handshake: Err(e.to_string()),
                    result: None,
                };
            }
            let r = handler(&mut s);
            ServerReport {
                handshake: Ok(()),
                result: Some(r),
            }
        });
        OneShotServer {
            addr,
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Wait (bounded) for the server thread's report.
    pub fn report(mut self, timeout: Duration) -> ServerReport {
        let h = self.handle.take().expect("report taken once");
        let deadline = Instant::now() + timeout;
        while !h.is_finished() {
            if Instant::now() > deadline {
                panic!("in-process server: no report within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
        h.join().expect("server thread panicked")
    }
}

/// Helpers for handlers: read until the peer's end.
pub fn server_read_to_end(s: &mut SslStream<TcpStream>) -> (Vec<u8>, End) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.ssl_read(&mut buf) {
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.code() == ErrorCode::WANT_READ && e.io_error().is_none() => {}
            Err(e) => return (out, classify(&e)),
        }
    }
}
