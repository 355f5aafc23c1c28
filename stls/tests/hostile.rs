//! Property tests with a seeded generator, bounded in count: option and environment
//! parsing, SNI matching, the session wire form, and the engine fed random schedules
//! and random bytes. Each seed is printed on failure so a case can be replayed.

mod common;

use common::*;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::thread;
use std::time::Duration;
use stls::engine::{Config, End};
use stls::options::{parse, Command, Groups};

const SERVER: Command = Command {
    name: "server",
    groups: Groups::COMMON.with(Groups::SERVER),
    usage: "",
};
const CLIENT: Command = Command {
    name: "client",
    groups: Groups::COMMON.with(Groups::CLIENT).with(Groups::CLIENT_FDS),
    usage: "",
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len() as u64) as usize])
            .collect()
    }
}

const OPT_ALPHABET: &[u8] = b"-=sSjJzZkKvyYdh67V0123456789abcxtimeoutsni.:,\xff";

#[test]
fn option_parsing_never_panics_and_errors_are_usage() {
    let mut r = Rng(0x9e3779b97f4a7c15);
    for case in 0..20_000 {
        let n = r.below(5) as usize;
        let args: Vec<OsString> = (0..n)
            .map(|_| {
                let len = r.below(14) as usize;
                let mut b = r.bytes(len, OPT_ALPHABET);
                if r.below(2) == 0 {
                    b.insert(0, b'-');
                }
                OsString::from_vec(b)
            })
            .collect();
        for cmd in [&SERVER, &CLIENT] {
            if let Err(e) = parse(cmd, &args) {
                assert_eq!(e.code, 100, "case {case}: {args:?}");
                assert!(!e.msg.contains('\n'), "case {case}: multi-line message");
            }
        }
    }
}

#[test]
fn environment_parsing_never_panics() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let keys: &[&[u8]] = &[
        b"CERTFILE",
        b"KEYFILE",
        b"CERTFILE:",
        b"KEYFILE:",
        b"TLS_UID",
        b"TLS_GID",
        b"CADIR",
        b"CAFILE",
        b"TCPREMOTEIP",
        b"X",
    ];
    for case in 0..20_000 {
        let n = r.below(6) as usize;
        let vars: Vec<(OsString, OsString)> = (0..n)
            .map(|_| {
                let mut k = keys[r.below(keys.len() as u64) as usize].to_vec();
                if k.ends_with(b":") {
                    let l = r.below(6) as usize;
                    k.extend(r.bytes(l, b"aAb.*\xc3\xa9"));
                }
                let l = r.below(8) as usize;
                (
                    OsString::from_vec(k),
                    OsString::from_vec(r.bytes(l, b"0123456789-/ab\xff")),
                )
            })
            .collect();
        if let Err(e) = stls::env::Env::from_vars(vars.clone()) {
            assert_eq!(e.code, 100, "case {case}: {vars:?}");
        }
    }
}

#[test]
fn sni_matching_properties() {
    let mut r = Rng(42);
    let pairs: Vec<(String, u32)> = vec![
        ("a.test".into(), 1),
        ("*.wild.test".into(), 2),
        ("*.test".into(), 3),
    ];
    for _ in 0..50_000 {
        let len = r.below(20) as usize;
        let name = String::from_utf8_lossy(&r.bytes(len, b"aAwild.test*.-x\xc3\xa9")).into_owned();
        let m = stls::context::match_sni(&pairs, &name);
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        match m {
            Some(1) => assert_eq!(lower, "a.test"),
            Some(2) => {
                let (first, rest) = lower.split_once('.').expect("a label");
                assert_eq!(rest, "wild.test");
                assert!(!first.is_empty(), "{name}");
            }
            Some(3) => assert_eq!(lower.split_once('.').map(|x| x.1), Some("test")),
            Some(_) => unreachable!(),
            None => assert_ne!(lower, "a.test"),
        }
        // A wildcard covers exactly one label.
        if lower.matches('.').count() > 2 && lower.ends_with(".wild.test") {
            assert_ne!(m, Some(&2), "{name}");
        }
    }
}

#[test]
fn session_wire_form_never_panics() {
    let mut r = Rng(7);
    for _ in 0..50_000 {
        let len = r.below(40) as usize;
        let b = r.bytes(len, b"\0=AB_x");
        if let Some(d) = stls::session::Description::decode(&b) {
            assert_eq!(stls::session::Description::decode(&d.encode()), Some(d));
        }
    }
}

/// Random write sizes and pauses on both sides; everything arrives, in order.
#[test]
fn engine_random_schedules_keep_every_byte() {
    for seed in 1..=12u64 {
        let mut r = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let up = payload(r.below(600_000) as usize, seed);
        let down = payload(r.below(600_000) as usize, seed + 100);
        let sched_up: Vec<usize> = (0..64).map(|_| 1 + r.below(70_000) as usize).collect();
        let sched_down: Vec<usize> = (0..64).map(|_| 1 + r.below(70_000) as usize).collect();
        let pauses: Vec<u64> = (0..64).map(|_| r.below(3)).collect();
        let (peer_sock, nin, nout) = peer_over_socket();
        let (mut to_engine, from_engine, h) = engine_server(nin, nout, Config::default());
        let down2 = down.clone();
        let p2 = pauses.clone();
        let app = thread::spawn(move || {
            let reader = thread::spawn(move || read_all(from_engine));
            let mut off = 0;
            let mut i = 0;
            while off < down2.len() {
                let n = sched_down[i % 64].min(down2.len() - off);
                to_engine
                    .write_all(&down2[off..off + n])
                    .expect("app write");
                off += n;
                thread::sleep(Duration::from_millis(p2[i % 64]));
                i += 1;
            }
            drop(to_engine);
            reader.join().expect("reader")
        });
        let mut s = connector()
            .connect("engine.test", peer_sock)
            .expect("connect");
        let mut off = 0;
        let mut i = 0;
        while off < up.len() {
            let n = sched_up[i % 64].min(up.len() - off);
            s.write_all(&up[off..off + n]).expect("peer write");
            off += n;
            thread::sleep(Duration::from_millis(pauses[(i + 7) % 64]));
            i += 1;
        }
        s.shutdown().expect("close_notify");
        let got_down = read_all(&mut s);
        let got_up = app.join().expect("app");
        let out = h.join().expect("engine");
        assert_eq!(out.end, End::Clean, "seed {seed}");
        assert_eq!(sha(&got_up), sha(&up), "seed {seed}");
        assert_eq!(sha(&got_down), sha(&down), "seed {seed}");
    }
}

/// Random bytes from the network after the handshake: a TLS error, no panic, no hang.
#[test]
fn engine_random_bytes_end_in_a_tls_error() {
    for seed in 1..=20u64 {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9));
        let (peer_sock, nin, nout) = peer_over_socket();
        let (to_engine, from_engine, h) = engine_server(nin, nout, Config::default());
        let reader = thread::spawn(move || read_all(from_engine));
        let mut raw = peer_sock.try_clone().expect("clone");
        let s = connector()
            .connect("engine.test", peer_sock)
            .expect("connect");
        let len = 1 + r.below(4000) as usize;
        let junk = r.bytes(len, &(0..=255).collect::<Vec<u8>>());
        // Short records of random content are rejected as bad records or MACs.
        let _ = raw.write_all(&junk);
        let _ = raw.shutdown(std::net::Shutdown::Write);
        let got = reader.join().expect("reader");
        drop(to_engine);
        let out = h.join().expect("engine");
        assert!(got.is_empty(), "seed {seed}: junk reached the app");
        // Junk that happens to look like nothing (e.g. an incomplete header followed by
        // EOF) is a truncation, accepted by default: the session ends cleanly.
        assert!(
            matches!(out.end, End::Tls(_) | End::Clean),
            "seed {seed}: {:?}",
            out.end
        );
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest);
        drop(s);
    }
}
