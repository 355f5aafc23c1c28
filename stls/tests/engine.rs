//! The engine driven over socketpairs and pipes against a real OpenSSL peer in-process.
//! The "app" is a pair of pipes driven by test threads; the peer is an `SslStream`.

mod common;

use common::*;
use openssl::ssl::SslStream;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::IntoRawFd;
use std::thread;
use std::time::Duration;
use stls::engine::{Config, End};
use stls::options::Options;

/// Bulk both ways at once, then the half-close ends both directions in order.
#[test]
fn integrity_both_ways_over_a_socket() {
    let (peer_sock, nin, nout) = peer_over_socket();
    let (mut to_engine, from_engine, h) = engine_server(nin, nout, Config::default());
    let up = payload(6 << 20, 1);
    let down = payload(5 << 20, 2);
    let down2 = down.clone();
    let app = thread::spawn(move || {
        let reader = thread::spawn(move || read_all(from_engine));
        for chunk in down2.chunks(100_003) {
            to_engine.write_all(chunk).expect("app write");
        }
        drop(to_engine);
        reader.join().expect("reader")
    });
    let mut s = connector()
        .configure()
        .expect("cfg")
        .verify_hostname(false)
        .connect("engine.test", peer_sock)
        .expect("connect");
    // One SslStream: write, close our direction, then read; the engine keeps both
    // directions moving while the peer is busy with one.
    s.write_all(&up).expect("peer write");
    s.shutdown().expect("close_notify");
    let got_down = read_all(&mut s);
    let got_up = app.join().expect("app");
    let out = h.join().expect("engine");
    assert_eq!(out.end, End::Clean);
    assert_eq!(sha(&got_up), sha(&up));
    assert_eq!(sha(&got_down), sha(&down));
}

/// Half-close: the reply is written only after the app saw the peer's EOF.
#[test]
fn reply_after_peer_close_notify() {
    let (peer_sock, nin, nout) = peer_over_socket();
    let (mut to_engine, from_engine, h) = engine_server(nin, nout, Config::default());
    let app = thread::spawn(move || {
        let req = read_all(from_engine);
        let reply = sha(&req);
        to_engine.write_all(&reply).expect("reply");
    });
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    let req = payload(300_000, 3);
    s.write_all(&req).expect("send");
    s.shutdown().expect("close_notify");
    let reply = read_all(&mut s);
    app.join().expect("app");
    assert_eq!(reply, sha(&req));
    assert_eq!(h.join().expect("engine").end, End::Clean);
}

/// The app stops reading at once: what the peer sends is discarded, the reply still goes out.
#[test]
fn app_that_stops_reading_still_replies() {
    let (peer_sock, nin, nout) = peer_over_socket();
    let (mut to_engine, from_engine, h) = engine_server(nin, nout, Config::default());
    drop(from_engine);
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    let big = payload(2 << 20, 4);
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        to_engine.write_all(b"ok\n").expect("reply");
    });
    s.write_all(&big).expect("send");
    s.shutdown().expect("close_notify");
    let reply = read_all(&mut s);
    writer.join().expect("writer");
    assert_eq!(reply, b"ok\n");
    assert_eq!(h.join().expect("engine").end, End::Clean);
}

/// A TCP EOF without close_notify: a normal EOF by default, a truncation under -J.
#[test]
fn truncation_with_and_without_enforcement() {
    for enforce in [false, true] {
        let cfg = Config {
            enforce_close_notify: enforce,
            ..Config::default()
        };
        let (peer_sock, nin, nout) = peer_over_socket();
        let (to_engine, from_engine, h) = engine_server(nin, nout, cfg);
        let reader = thread::spawn(move || read_all(from_engine));
        let raw = peer_sock.try_clone().expect("clone");
        let mut s = connector()
            .connect("engine.test", peer_sock)
            .expect("connect");
        s.write_all(b"data").expect("send");
        s.flush().expect("flush");
        thread::sleep(Duration::from_millis(50));
        raw.shutdown(std::net::Shutdown::Write).expect("tcp eof");
        let got = reader.join().expect("reader");
        drop(to_engine);
        let out = h.join().expect("engine");
        assert_eq!(got, b"data");
        if enforce {
            assert!(
                matches!(out.end, End::Tls(ref m) if m.contains("truncation")),
                "{:?}",
                out.end
            );
        } else {
            assert_eq!(out.end, End::Clean);
        }
    }
}

/// One byte at a time, lock-step: each byte must be forwarded at once (no batching wait).
#[test]
fn single_bytes_are_forwarded_at_once() {
    let (peer_sock, nin, nout) = peer_over_socket();
    let (mut to_engine, mut from_engine, h) = engine_server(nin, nout, Config::default());
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    let mut b = [0u8; 1];
    for i in 0..200u32 {
        let x = [(i % 251) as u8];
        s.write_all(&x).expect("peer byte");
        from_engine.read_exact(&mut b).expect("app byte");
        assert_eq!(b, x);
        to_engine.write_all(&x).expect("app byte");
        s.read_exact(&mut b).expect("peer byte");
        assert_eq!(b, x);
    }
    drop(to_engine);
    s.shutdown().expect("close_notify");
    assert!(read_all(&mut s).is_empty());
    assert!(read_all(from_engine).is_empty());
    assert_eq!(h.join().expect("engine").end, End::Clean);
}

/// The network side as a pipe pair, not a socket.
#[test]
fn network_over_pipes() {
    let (to_engine_r, to_engine_w) = pipe();
    let (from_engine_r, from_engine_w) = pipe();
    let (mut app_w, app_r, h) = engine_server(
        to_engine_r.into_raw_fd(),
        from_engine_w.into_raw_fd(),
        Config::default(),
    );
    #[derive(Debug)]
    struct Duplex(File, File);
    impl Read for Duplex {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Duplex {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let app = thread::spawn(move || {
        let got = read_all(app_r);
        app_w.write_all(&sha(&got)).expect("reply");
    });
    let mut s: SslStream<Duplex> = connector()
        .connect("engine.test", Duplex(from_engine_r, to_engine_w))
        .expect("connect");
    let data = payload(1 << 20, 5);
    s.write_all(&data).expect("send");
    s.shutdown().expect("close_notify");
    let reply = read_all(&mut s);
    app.join().expect("app");
    assert_eq!(reply, sha(&data));
    assert_eq!(h.join().expect("engine").end, End::Clean);
}

#[test]
fn options_default_engine_config_matches_the_man_page() {
    let o = Options::default();
    assert!(o.close_notify && !o.enforce_close_notify);
    let c = Config::default();
    assert!(c.close_notify && !c.enforce_close_notify && c.idle_timeout.is_none());
}

/// `-s`: at the app's EOF the network's write side is shut without close_notify, and the
/// peer's data still reaches the app until the peer closes.
#[test]
fn no_close_notify_shuts_the_network_and_keeps_reading() {
    let cfg = Config {
        close_notify: false,
        ..Config::default()
    };
    let (peer_sock, nin, nout) = peer_over_socket();
    let (to_engine, from_engine, h) = engine_server(nin, nout, cfg);
    let raw = peer_sock.try_clone().expect("clone");
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    let reader = thread::spawn(move || read_all(from_engine));
    drop(to_engine);
    thread::sleep(Duration::from_millis(100));
    let late = payload(300_000, 6);
    s.write_all(&late).expect("peer write after the app's EOF");
    s.flush().expect("flush");
    raw.shutdown(std::net::Shutdown::Write).expect("tcp eof");
    assert_eq!(sha(&reader.join().expect("reader")), sha(&late));
    assert_eq!(h.join().expect("engine").end, End::Clean);
    // What the peer got was a TCP EOF without close_notify.
    let mut b = [0u8; 16];
    assert!(!matches!(s.read(&mut b), Ok(n) if n > 0));
    assert!(!s
        .get_shutdown()
        .contains(openssl::ssl::ShutdownState::RECEIVED));
}

/// The idle timeout closes the session as at local EOF (close_notify) and stops the app's
/// input; the outcome says so and the end is still clean.
#[test]
fn idle_timeout_closes_as_at_local_eof() {
    let cfg = Config {
        idle_timeout: Some(Duration::from_millis(200)),
        linger: Duration::from_secs(2),
        ..Config::default()
    };
    let (peer_sock, nin, nout) = peer_over_socket();
    let (to_engine, from_engine, h) = engine_server(nin, nout, cfg);
    let raw = peer_sock.try_clone().expect("clone");
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    // Neither side moves a byte: after 200 ms the engine sends close_notify.
    assert!(read_all(&mut s).is_empty());
    raw.shutdown(std::net::Shutdown::Write).expect("tcp eof");
    let out = h.join().expect("engine");
    assert_eq!(out.end, End::Clean);
    assert!(out.idle_expired);
    // The app's pipes were closed by the engine: its output gets EPIPE, its input EOF.
    assert!(read_all(from_engine).is_empty());
    let mut to_engine = to_engine;
    assert!(to_engine.write_all(b"x").is_err());
}

static VERDICTS: std::sync::Mutex<Vec<Option<String>>> = std::sync::Mutex::new(Vec::new());

fn note_verdict(why: Option<&str>) {
    VERDICTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(why.map(str::to_string));
}

fn holding(host: &str) -> Config {
    Config {
        hold: Some(stls::Hold {
            host: host.to_string(),
            decided: note_verdict,
        }),
        ..Config::default()
    }
}

/// A request for another host than the one held for: nothing of it reaches the peer, the
/// relay fails with the reason, and the verdict is told once.
#[test]
fn held_request_for_another_host_sends_nothing() {
    let (peer_sock, nin, nout) = peer_over_socket();
    let (mut to_engine, from_engine, h) = engine_server(nin, nout, holding("a.test"));
    let app = thread::spawn(move || {
        to_engine
            .write_all(b"GET / HTTP/1.1\r\nHost: b.test:443\r\n")
            .expect("app write");
        thread::sleep(Duration::from_millis(50));
        let _ = to_engine.write_all(b"Cookie: secret\r\n\r\nbody");
        drop(to_engine);
        read_all(from_engine)
    });
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "sent: {:?}", String::from_utf8_lossy(&got));
    let out = h.join().expect("engine");
    assert!(
        matches!(&out.end, End::Tls(why) if why.contains("names host b.test")),
        "{:?}",
        out.end
    );
    let _ = app.join();
    let v = VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        v.iter()
            .any(|x| x.as_deref().is_some_and(|w| w.contains("b.test"))),
        "{v:?}"
    );
}

/// The right host in pieces, then a body: held until the head ended, then everything
/// arrives intact. Bytes that are not HTTP pass at once, after the peer spoke first.
#[test]
fn held_request_for_its_host_and_other_protocols_pass() {
    let (peer_sock, nin, nout) = peer_over_socket();
    let (mut to_engine, from_engine, h) = engine_server(nin, nout, holding("a.test"));
    let body = payload(200_000, 7);
    let mut sent = b"POST /x HTTP/1.1\r\nHost: A.Test.\r\nContent-Length: 200000\r\n\r\n".to_vec();
    sent.extend_from_slice(&body);
    let sent2 = sent.clone();
    let app = thread::spawn(move || {
        for piece in [&sent2[..3], &sent2[3..20], &sent2[20..]] {
            to_engine.write_all(piece).expect("app write");
            thread::sleep(Duration::from_millis(20));
        }
        drop(to_engine);
        read_all(from_engine)
    });
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    let got = read_all(&mut s);
    s.shutdown().expect("close_notify");
    assert_eq!(sha(&got), sha(&sent));
    assert_eq!(h.join().expect("engine").end, End::Clean);
    let _ = app.join();

    // Server first: the peer's banner reaches the app while its bytes are held for none.
    let (peer_sock, nin, nout) = peer_over_socket();
    let (mut to_engine, mut from_engine, h) = engine_server(nin, nout, holding("a.test"));
    let app = thread::spawn(move || {
        let mut banner = [0u8; 6];
        from_engine.read_exact(&mut banner).expect("banner");
        to_engine.write_all(b"EHLO x\r\n").expect("app write");
        drop(to_engine);
        banner
    });
    let mut s = connector()
        .connect("engine.test", peer_sock)
        .expect("connect");
    s.write_all(b"220 hi").expect("banner");
    s.flush().expect("flush");
    let got = read_all(&mut s);
    assert_eq!(got, b"EHLO x\r\n");
    assert_eq!(&app.join().expect("app"), b"220 hi");
    s.shutdown().expect("close_notify");
    assert_eq!(h.join().expect("engine").end, End::Clean);
}
