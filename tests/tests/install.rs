//! `make install` and `make uninstall`, as the README gives them: one multi-call binary
//! under the six programs' names (hard links) and the shim beside links to tlsc and tlsd,
//! within the size the README states; each name runs its own program (the same `--help`,
//! `--version` and messages as the program's own binary); a handshake between the
//! installed tlsd and tlsc; the installed shim upgrading a connection with the tlsc
//! beside it; and `make uninstall` leaving no file behind.
//!
//! The binaries installed are the ones under test (`STLS_BIN_DIR`'s), given to make as
//! `RELEASE` with `-o build`: make does not build them again in the middle of the suite.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stls_tests::pki::{pki, scratch};
use stls_tests::proc::{self, Outcome, Running};
use stls_tests::shim::{self, upgraded_lines, NAME};
use stls_tests::{bins, listener, require};

const WAIT: Duration = Duration::from_secs(60);

/// The six names `make install` puts in BINDIR.
const NAMES: [&str; 6] = [
    "tlsd",
    "tlsserver",
    "ucspitlsd",
    "tlsc",
    "tlsclient",
    "ucspitlsc",
];

/// The most the installed programs and the shim may take, in bytes (8 MB).
const MAX_BYTES: u64 = 8_000_000;

/// `make -o build -o build-vendored TARGET VARS...` in the workspace, with the binaries
/// under test as RELEASE; fails the test unless make exits 0.
fn make(target: &str, vars: &[String]) -> Outcome {
    let mut c = Command::new("make");
    c.args(["-s", "-o", "build", "-o", "build-vendored", target])
        .arg(format!("RELEASE={}", bins::bin_dir().display()))
        .args(vars)
        .current_dir(bins::workspace());
    let o = proc::run(&mut c, None, WAIT);
    assert_eq!(o.code(), 0, "make {target} {vars:?}: {}", o.stderr_str());
    o
}

/// Every file and link under `dir`, with the bytes they take: a file's size counted once
/// however many names it has (as `du -b`, directories aside), a link's target's length.
fn files_under(dir: &Path) -> (Vec<PathBuf>, u64) {
    let mut found = Vec::new();
    let mut inodes = BTreeSet::new();
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    // Bounded by the tree: each directory is read once.
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            if m.is_dir() {
                stack.push(p);
                continue;
            }
            if m.is_file() && !inodes.insert((m.dev(), m.ino())) {
                found.push(p);
                continue;
            }
            bytes += m.len();
            found.push(p);
        }
    }
    found.sort();
    (found, bytes)
}

/// `--help` and `--version` of `path` run as `name`: the same as the program's own binary.
fn same_answers(path: &Path, name: &str) {
    for flag in ["--version", "--help"] {
        let run = |p: &Path| proc::run(Command::new(p).arg(flag), None, WAIT);
        let installed = run(path);
        let own = run(&bins::bin(name));
        assert_eq!(
            installed.code(),
            0,
            "{name} {flag}: {}",
            installed.stderr_str()
        );
        assert_eq!(
            installed.stdout_str(),
            own.stdout_str(),
            "{} {flag} differs from {name}'s own binary",
            path.display()
        );
    }
    let v = proc::run(Command::new(path).arg("--version"), None, WAIT);
    assert!(
        v.stdout_str().starts_with(&format!("{name} ")),
        "{}: {}",
        path.display(),
        v.stdout_str()
    );
    // A usage error: the program's own name starts its message, with its exit code.
    let o = proc::run(Command::new(path).arg("--no-such-option"), None, WAIT);
    assert_eq!(o.code(), 100, "{name}: {}", o.stderr_str());
    assert!(
        o.stderr_str().starts_with(&format!("{name}: fatal: ")),
        "{name}: {}",
        o.stderr_str()
    );
}

/// A handshake between the installed tlsc (its ADDR PORT form, a line on its stdin) and
/// the installed tlsd (on the connection the test accepted), which runs a shell that
/// answers with the protocol and the line.
fn handshake(bin: &Path) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("local address").port();
    l.set_nonblocking(true).expect("non-blocking");
    let mut client = Command::new(bin.join("tlsc"));
    client
        .args(["-k", "localhost", "127.0.0.1", &port.to_string()])
        .env("CAFILE", &pki().ca)
        .stdin(Stdio::piped());
    let mut c = Running::start(&mut client);
    if let Some(mut stdin) = c.child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(b"hello\n");
    }
    let deadline = Instant::now() + WAIT;
    // Bounded by the deadline.
    let conn = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "tlsc did not connect");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).expect("blocking");
    let out = conn.try_clone().expect("dup");
    let mut server = Command::new(bin.join("tlsd"));
    server
        .args(["--", "/bin/sh", "-c", "read l; echo \"$SSL_PROTOCOL $l\""])
        .env("CERTFILE", &pki().ec.cert)
        .env("KEYFILE", &pki().ec.key)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(conn)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(out)))
        .stderr(Stdio::piped());
    // Not Running::start, which would put a pipe on fd 1.
    let s = Running::adopt(proc::spawn(&mut server));
    let co = c.finish(WAIT);
    let so = s.finish(WAIT);
    let both = format!("tlsd: {}\ntlsc: {}", so.stderr_str(), co.stderr_str());
    assert_eq!(so.code(), 0, "installed tlsd: {both}");
    assert_eq!(co.code(), 0, "installed tlsc: {both}");
    assert_eq!(co.stdout_str(), "TLSv1.3 hello\n", "{}", co.stderr_str());
}

/// The installed shim (`lib/stls/libautossl.so`, tlsc beside it) upgrades a client's
/// connection to the installed tlsserver, with the pre-started helper and without it.
fn shim_upgrades(prefix: &Path) {
    let bin = prefix.join("bin");
    let (srv, port) = listener::serve_on_free_port("tlsserver", "127.0.0.1", |port| {
        let mut c = Command::new(bin.join("tlsserver"));
        c.args(["127.0.0.1", &port.to_string(), "/bin/sh", "-c"])
            .arg("echo \"sni=$SSL_TLS_SNI_SERVERNAME proto=$SSL_PROTOCOL\"")
            .env("CERTFILE", &pki().ec.cert)
            .env("KEYFILE", &pki().ec.key);
        c
    });
    // IPv4 only: the server listens on 127.0.0.1, and the name maps to ::1 too.
    let client = "import socket,sys\n\
        a = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), socket.AF_INET, socket.SOCK_STREAM)[0]\n\
        s = socket.socket(a[0], a[1]); s.settimeout(30); s.connect(a[4])\n\
        sys.stdout.write(s.makefile('rb').read().decode())\n";
    let lib = prefix.join("lib/stls/libautossl.so");
    for helper in ["1", "0"] {
        let vars: Vec<(String, String)> = [
            ("LD_PRELOAD", lib.display().to_string()),
            ("AUTOSSL_UPGRADE_PORTS", port.to_string()),
            ("AUTOSSL_VERBOSE", "1".into()),
            ("AUTOSSL_HELPER", helper.into()),
            ("CAFILE", pki().ca.display().to_string()),
            // Only the tlsc beside the library can be found.
            ("PATH", "/usr/bin:/bin".into()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec();
        let py = shim::python_arg();
        let o = shim::run(&[&py, "-c", client, NAME, &port.to_string()], &vars, None);
        let what = format!("the installed shim, AUTOSSL_HELPER={helper}");
        assert_eq!(o.code(), 0, "{what}: {}", o.stderr_str());
        assert_eq!(
            o.stdout_str(),
            format!("{}\n", shim::tag(NAME)),
            "{what}: {}",
            o.stderr_str()
        );
        assert!(!upgraded_lines(&o).is_empty(), "{what}: {}", o.stderr_str());
    }
    drop(srv);
}

#[test]
fn make_install_puts_one_binary_under_six_names_and_uninstall_removes_it() {
    if !require("make") {
        return;
    }
    // Staged (DESTDIR): the layout, the size, the names, then nothing left.
    let dest = scratch("destdir");
    let vars = [format!("DESTDIR={}", dest.display())];
    make("install", &vars);
    let bin = dest.join("usr/local/bin");
    let shimdir = dest.join("usr/local/lib/stls");
    let (mut files, bin_bytes) = files_under(&bin);
    let (shim_files, shim_bytes) = files_under(&shimdir);
    files.extend(shim_files);
    let total = bin_bytes + shim_bytes;
    eprintln!("installed: {total} bytes (bin {bin_bytes}, shim's directory {shim_bytes})");
    assert!(
        total <= MAX_BYTES,
        "the programs and the shim take {total} bytes, more than {MAX_BYTES}"
    );
    let inode = |n: &str| std::fs::metadata(bin.join(n)).expect(n).ino();
    for n in NAMES {
        assert_eq!(
            inode(n),
            inode("tlsd"),
            "{n} is not a link to the one binary"
        );
        same_answers(&bin.join(n), n);
    }
    assert_eq!(
        std::fs::metadata(bin.join("tlsd")).expect("tlsd").nlink(),
        6,
        "a seventh name for the binary"
    );
    for (n, to) in [
        ("tlsc", "/usr/local/bin/tlsc"),
        ("tlsd", "/usr/local/bin/tlsd"),
    ] {
        let t = std::fs::read_link(shimdir.join(n)).expect("the shim's link");
        assert_eq!(t, Path::new(to), "{n} beside the shim");
    }
    // A name that is not a program's: the binary's own message, with the six names.
    let other = dest.join("usr/local/bin/stls-other");
    std::fs::hard_link(bin.join("tlsd"), &other).expect("link");
    let o = proc::run(&mut Command::new(&other), None, WAIT);
    std::fs::remove_file(&other).expect("rm");
    assert_eq!(o.code(), 100, "{}", o.stderr_str());
    let err = o.stderr_str();
    assert!(err.starts_with("stls: fatal: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(NAMES.iter().all(|n| err.contains(n)), "{err}");
    make("uninstall", &vars);
    let (left, _) = files_under(&dest);
    assert!(left.is_empty(), "left by make uninstall: {left:?}");
    assert!(!shimdir.exists(), "{} left", shimdir.display());
    assert!(!files.is_empty());

    // In place (PREFIX): the links beside the shim lead to the installed programs.
    let prefix = scratch("prefix");
    let vars = [format!("PREFIX={}", prefix.display())];
    make("install", &vars);
    handshake(&prefix.join("bin"));
    if require("python3") && shim::namespaces() {
        shim_upgrades(&prefix);
    }
    make("uninstall", &vars);
    let (left, _) = files_under(&prefix);
    assert!(left.is_empty(), "left by make uninstall: {left:?}");
}

/// `stls NAME ARGS...` (the README's `target/release/stls tlsc --version`): the multi-call
/// binary run by its own name runs NAME.
#[test]
fn stls_name_args_runs_that_program() {
    let stls = bins::bin("stls");
    let o = proc::run(Command::new(&stls).args(["tlsc", "--version"]), None, WAIT);
    assert_eq!(o.code(), 0, "{}", o.stderr_str());
    assert!(o.stdout_str().starts_with("tlsc "), "{}", o.stdout_str());
    let o = proc::run(Command::new(&stls).args(["ucspitlsd"]), None, WAIT);
    assert_eq!(o.code(), 100, "{}", o.stderr_str());
    assert!(
        o.stderr_str()
            .starts_with("ucspitlsd: fatal: no program to run"),
        "{}",
        o.stderr_str()
    );
    let o = proc::run(Command::new(&stls).arg("--version"), None, WAIT);
    assert_eq!(o.code(), 100, "{}", o.stderr_str());
    assert!(
        o.stderr_str().starts_with("stls: fatal: "),
        "{}",
        o.stderr_str()
    );
}
