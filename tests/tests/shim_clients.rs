//! autossl-shim with more real, unmodified clients: PHP (`file_get_contents`,
//! `fsockopen`), Ruby (`Net::HTTP`), pip (`pip download` from a simple index the test
//! makes, of a wheel it builds), apt (`apt-get update` and `apt-get download` from a flat
//! repository it builds with `dpkg-scanpackages`) and psql against a real PostgreSQL
//! server (`sslmode=disable`: its plain protocol, which the shim upgrades).
//!
//! Each one talks to `tls.test` (mapped in a private mount namespace) on a port the shim
//! upgrades, and the server side reports what it saw: the responder of `shim::server`
//! answers with `sni=... proto=...`, and the servers of this file (files for pip and apt, a
//! tlsd in front of postgres) write that line per connection into a log. Only tlsd knows
//! the session's protocol and name: a line there is the proof that the client's bytes
//! went through TLS with the right name. Loopback only: pip and apt are given the local
//! server as their only source, and every option that could reach further is turned off.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stls_tests::listener::{Spawn, TinyListener};
use stls_tests::proc::{self, Outcome, Running};
use stls_tests::shim::{self, python, python_arg, ready, tls_server, upgraded_lines, NAME};
use stls_tests::{bins, pki, scratch};

// ------------------------------------------------------------------ servers

/// A static file server per connection (under tlsd): one HTTP/1.0 request, the file under
/// argv[1] (a directory's `index.html`), and one line per request appended to argv[2]:
/// `sni=NAME proto=PROTO METHOD PATH STATUS`.
const FILES: &str = r#"
import os, sys
sni = os.environ.get("SSL_TLS_SNI_SERVERNAME", "")
proto = os.environ.get("SSL_PROTOCOL", "")
root, log = os.path.normpath(sys.argv[1]), sys.argv[2]
inp, out = sys.stdin.buffer, sys.stdout.buffer
line = inp.readline()
for _ in range(200):
    h = inp.readline()
    if h in (b"\r\n", b"\n", b""):
        break
parts = line.split()
method = parts[0].decode("latin-1") if parts else "?"
path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
f = os.path.normpath(os.path.join(root, path.split("?")[0].lstrip("/")))
if os.path.isdir(f):
    f = os.path.join(f, "index.html")
status, body, ctype = b"404 Not Found", b"not found\n", b"text/plain"
if f.startswith(root + os.sep) and os.path.isfile(f):
    status, body = b"200 OK", open(f, "rb").read()
    ctype = b"text/html" if f.endswith(".html") else b"application/octet-stream"
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, ("sni=%s proto=%s %s %s %s\n" % (sni, proto, method, path, status[:3].decode())).encode())
os.close(fd)
out.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
if method != "HEAD":
    out.write(body)
out.flush()
"#;

/// tlsd (the test CA's EC pair) running `cmd` per connection, on 127.0.0.1 and ::1 with one
/// port (`tls.test` has both addresses).
fn tlsd_server(cmd: &[OsString]) -> shim::Server {
    let pair = &pki().ec;
    let mut args: Vec<OsString> = vec!["--".into()];
    args.extend(cmd.iter().cloned());
    let spawn = || Spawn::tlsd(&args, &[("CERTFILE", &pair.cert), ("KEYFILE", &pair.key)]);
    // A port from 127.0.0.1:0, then the same one on ::1; taken there meanwhile: another.
    for _ in 0..20 {
        let v4 = TinyListener::start_on("127.0.0.1:0", spawn());
        let port = v4.port();
        if TcpListener::bind(("::1", port)).is_err() {
            continue;
        }
        let v6 = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            TinyListener::start_on(&format!("[::1]:{port}"), spawn())
        }));
        if let Ok(v6) = v6 {
            return shim::Server { v4, v6, port };
        }
    }
    panic!("no port could be bound on both 127.0.0.1 and ::1 after 20 tries");
}

/// A [`FILES`] server for `root`, logging to `log`.
fn files_server(root: &Path, log: &Path) -> shim::Server {
    let script = scratch("files-script").join("files.py");
    std::fs::write(&script, FILES).expect("writing the file server");
    tlsd_server(&[
        python().into(),
        "-S".into(),
        script.into(),
        root.into(),
        log.into(),
    ])
}

/// The lines of a server's log (empty if none was written).
fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Every connection the server logged was TLS 1.3 with `tls.test` as its name, and each
/// of `wanted` (`GET /path`) was served (200). The log, for the failure messages.
fn assert_served(what: &str, log: &Path, wanted: &[&str], o: &Outcome) -> Vec<String> {
    let lines = log_lines(log);
    let err = o.stderr_str();
    assert!(!lines.is_empty(), "{what}: the server saw nothing\n{err}");
    for l in &lines {
        assert!(
            l.starts_with(&format!("{} ", shim::tag(NAME))),
            "{what}: a connection without TLS or without the name {NAME}: {l:?}\n\
             log: {lines:#?}\nstderr: {err}"
        );
    }
    for w in wanted {
        assert!(
            lines.iter().any(|l| l.ends_with(&format!(" {w} 200"))),
            "{what}: {w} not served\nlog: {lines:#?}\nstderr: {err}"
        );
    }
    lines
}

/// The library reported an upgrade to `tls.test` (it reports on the client's stderr with
/// `AUTOSSL_VERBOSE=1`, as [`shim::shim_vars`] sets).
fn assert_upgraded(what: &str, o: &Outcome) {
    let lines = upgraded_lines(o);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(&format!("name {NAME}"))),
        "{what}: no upgrade to {NAME} reported\nstderr: {}",
        o.stderr_str()
    );
}

/// Run `cmd` under the shim in the namespace with `vars`, in `dir` (bounded).
fn run_in(dir: &Path, cmd: &[&str], vars: &[(String, String)]) -> Outcome {
    let mut c = shim::namespaced(cmd, vars);
    c.current_dir(dir);
    proc::run(&mut c, None, Duration::from_secs(90))
}

/// `sh -c script` (`$0` = `arg`), which must succeed (bounded); not under the shim.
fn sh_ok(what: &str, script: &str, arg: &Path) -> Outcome {
    let o = proc::run(
        proc::sh(script).arg(arg).env_remove("LD_PRELOAD"),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(o.code(), 0, "{what}: {}{}", o.stdout_str(), o.stderr_str());
    o
}

// ------------------------------------------------------------------ PHP and Ruby

#[test]
fn php_file_get_contents_and_fsockopen() {
    let Some(s) = tls_server(&["php"], &pki().ec) else {
        return;
    };
    // -n: no php.ini (allow_url_fopen is on by default; no extension is needed).
    s.expect_tls(
        "php file_get_contents",
        &[
            "php",
            "-n",
            "-r",
            "$b = file_get_contents($argv[1]); if ($b === false) exit(2); echo $b;",
            &s.url(NAME),
        ],
        NAME,
    );
    let port = s.port.to_string();
    s.expect_tls(
        "php fsockopen",
        &[
            "php",
            "-n",
            "-r",
            r#"$f = fsockopen($argv[1], (int)$argv[2], $no, $msg, 30);
               if (!$f) { fwrite(STDERR, "$no $msg\n"); exit(2); }
               fwrite($f, "GET / HTTP/1.0\r\nHost: $argv[1]\r\n\r\n");
               echo stream_get_contents($f);"#,
            NAME,
            &port,
        ],
        NAME,
    );
}

#[test]
fn ruby_net_http() {
    let Some(s) = tls_server(&["ruby"], &pki().ec) else {
        return;
    };
    // Net::HTTP: open_timeout through Timeout (a thread of its own), then TCPSocket.open.
    let o = s.expect_tls(
        "ruby Net::HTTP",
        &[
            "ruby",
            "-rnet/http",
            "-e",
            "r = Net::HTTP.start(URI(ARGV[0]).host, URI(ARGV[0]).port, open_timeout: 30, read_timeout: 30) { |h| h.get('/') }; \
             abort(r.code) unless r.code == '200'; print r.body",
            &s.url(NAME),
        ],
        NAME,
    );
    assert!(o.stdout_str().starts_with("hello "), "{}", o.stdout_str());
}

// ------------------------------------------------------------------ pip

/// Makes `root/files/stls_probe-1.0-py3-none-any.whl` (METADATA, WHEEL, RECORD and a
/// module) and `root/simple/stls-probe/index.html` linking to it with its sha256.
const MAKE_INDEX: &str = r#"
import base64, hashlib, os, sys, zipfile
root = sys.argv[1]
name, ver = "stls_probe", "1.0"
di = "%s-%s.dist-info" % (name, ver)
files = {
    "stls_probe.py": b"GREETING = 'through the shim'\n",
    di + "/METADATA": b"Metadata-Version: 2.1\nName: stls-probe\nVersion: 1.0\nSummary: fetched through the shim\n",
    di + "/WHEEL": b"Wheel-Version: 1.0\nGenerator: stls-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = ""
for k, v in files.items():
    h = base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b"=").decode()
    record += "%s,sha256=%s,%d\n" % (k, h, len(v))
files[di + "/RECORD"] = (record + di + "/RECORD,,\n").encode()
os.makedirs(os.path.join(root, "files"))
os.makedirs(os.path.join(root, "simple", "stls-probe"))
whl = "%s-%s-py3-none-any.whl" % (name, ver)
with zipfile.ZipFile(os.path.join(root, "files", whl), "w") as z:
    for k, v in files.items():
        z.writestr(k, v)
sha = hashlib.sha256(open(os.path.join(root, "files", whl), "rb").read()).hexdigest()
with open(os.path.join(root, "simple", "stls-probe", "index.html"), "w") as f:
    f.write('<!DOCTYPE html>\n<html><body><a href="../../files/%s#sha256=%s">%s</a></body></html>\n' % (whl, sha, whl))
"#;

#[test]
fn pip_download_from_a_simple_index() {
    if !ready(&[]) {
        return;
    }
    // The system's pip, for the system's Python (a pyenv's pip3 on PATH is not it).
    let py = python_arg();
    let v = proc::run(
        Command::new(&py).args(["-m", "pip", "--version"]),
        None,
        Duration::from_secs(60),
    );
    if v.code() != 0 && !bins::skip(&format!("pip not installed for {py} (python3-pip)")) {
        return;
    }
    let root = scratch("pip-root");
    let work = scratch("pip-work");
    let log = work.join("server.log");
    let o = proc::run(
        Command::new(&py).args(["-S", "-c", MAKE_INDEX]).arg(&root),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(
        o.code(),
        0,
        "building the wheel and the index: {}",
        o.stderr_str()
    );
    let s = files_server(&root, &log);
    let dest = work.join("dl");
    let index = format!("{}simple/", s.url(NAME));
    let dest_s = dest.to_str().expect("utf-8");
    // --isolated: no configuration file or PIP_* variable; the local index only, no cache,
    // no version check (it would ask an index of its own). --trusted-host: pip takes
    // http:// to a name other than localhost for insecure; the shim made it TLS.
    let vars = shim::with(s.vars(), "HOME", work.to_str().expect("utf-8"));
    let o = run_in(
        &work,
        &[
            &py,
            "-m",
            "pip",
            "download",
            "--isolated",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--timeout",
            "30",
            "--retries",
            "0",
            "--no-deps",
            "--index-url",
            &index,
            "--trusted-host",
            NAME,
            "-d",
            dest_s,
            "stls-probe",
        ],
        &vars,
    );
    assert_eq!(
        o.code(),
        0,
        "pip download: {}{}",
        o.stdout_str(),
        o.stderr_str()
    );
    let whl = "stls_probe-1.0-py3-none-any.whl";
    assert_eq!(
        std::fs::read(dest.join(whl)).expect("the downloaded wheel"),
        std::fs::read(root.join("files").join(whl)).expect("the served wheel"),
        "pip download: the wheel differs"
    );
    assert_served(
        "pip download",
        &log,
        &["GET /simple/stls-probe/", &format!("GET /files/{whl}")],
        &o,
    );
    assert_upgraded("pip download", &o);
}

// ------------------------------------------------------------------ apt

/// Builds a package `stls-probe` 1.0 with `dpkg-deb` in `$0/pkg`, and a flat repository
/// in `$0/repo`: the .deb, `Packages` from `dpkg-scanpackages`, a `Release` with its hash.
const MAKE_REPO: &str = r#"set -e
cd "$0"
mkdir -p pkg/DEBIAN pkg/usr/share/doc/stls-probe repo
printf 'Package: stls-probe\nVersion: 1.0\nArchitecture: all\nMaintainer: stls tests <root@localhost>\nDescription: fetched through the shim\n' >pkg/DEBIAN/control
echo 'through the shim' >pkg/usr/share/doc/stls-probe/greeting
dpkg-deb --build -Zgzip --root-owner-group pkg repo/stls-probe_1.0_all.deb >/dev/null
cd repo
dpkg-scanpackages -m . /dev/null >Packages 2>/dev/null
{
  printf 'Origin: stls\nLabel: stls\nSuite: stls\nCodename: stls\nDate: %s\n' "$(date -Ru)"
  printf 'Architectures: all amd64\nSHA256:\n %s %s Packages\n' \
    "$(sha256sum Packages | cut -d' ' -f1)" "$(stat -c %s Packages)"
} >Release
"#;

#[test]
fn apt_get_update_and_download_from_a_flat_repository() {
    if !ready(&["apt-get", "dpkg-deb", "dpkg-scanpackages"]) {
        return;
    }
    let dir = scratch("apt");
    sh_ok("building the repository", MAKE_REPO, &dir);
    let log = dir.join("server.log");
    let s = files_server(&dir.join("repo"), &log);
    for d in ["lists/partial", "cache", "parts", "dl"] {
        std::fs::create_dir_all(dir.join(d)).expect("apt directories");
    }
    let sources = dir.join("sources.list");
    std::fs::write(
        &sources,
        format!("deb [trusted=yes] http://{NAME}:{}/ ./\n", s.port),
    )
    .expect("sources.list");
    // APT_CONFIG is read before anything else: with it, none of the system's apt.conf.d
    // (its proxies, its hooks after an update) and none of its sources; lists and caches
    // of the test's own, no lock (others may run apt on this machine), no SRV lookup (that
    // is DNS), no proxy, one try. No drop to _apt: its http method would need to read the
    // library, tlsc and the CA file wherever the build put them (a target directory under
    // /root it cannot); where it can, the shim works under _apt too (tried by hand).
    let p = |d: &str| dir.join(d).display().to_string();
    let config = dir.join("apt.conf");
    std::fs::write(
        &config,
        format!(
            "Dir::Etc::main \"/dev/null\";\n\
             Dir::Etc::parts \"{parts}\";\n\
             Dir::Etc::sourcelist \"{sources}\";\n\
             Dir::Etc::sourceparts \"{parts}\";\n\
             Dir::State::Lists \"{lists}\";\n\
             Dir::Cache \"{cache}\";\n\
             Debug::NoLocking \"true\";\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::EnableSrvLookup \"false\";\n\
             Acquire::http::Proxy \"DIRECT\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::Retries \"0\";\n\
             Acquire::http::Timeout \"30\";\n",
            parts = p("parts"),
            sources = sources.display(),
            lists = p("lists"),
            cache = p("cache"),
        ),
    )
    .expect("apt.conf");
    let config = config.display().to_string();
    let vars = shim::with(s.vars(), "APT_CONFIG", &config);
    let apt = |args: &[&str]| {
        let mut cmd = vec!["apt-get", "-q"];
        cmd.extend(args);
        let o = run_in(&dir.join("dl"), &cmd, &vars);
        assert_eq!(
            o.code(),
            0,
            "apt-get {args:?}: {}{}",
            o.stdout_str(),
            o.stderr_str()
        );
        assert_upgraded(&format!("apt-get {args:?}"), &o);
        o
    };
    let o = apt(&["update"]);
    assert_served(
        "apt-get update",
        &log,
        &["GET /./Release", "GET /./Packages"],
        &o,
    );
    let show = proc::run(
        Command::new("apt-cache")
            .args(["show", "stls-probe"])
            .env("APT_CONFIG", &config)
            .env_remove("LD_PRELOAD"),
        None,
        Duration::from_secs(60),
    );
    assert!(
        show.code() == 0
            && show
                .stdout_str()
                .contains("Filename: ./stls-probe_1.0_all.deb"),
        "apt-get update: no index with stls-probe: {}{}\napt-get update: {}",
        show.stdout_str(),
        show.stderr_str(),
        o.stdout_str()
    );
    let o = apt(&["download", "stls-probe"]);
    let deb = "stls-probe_1.0_all.deb";
    assert_eq!(
        std::fs::read(dir.join("dl").join(deb)).expect("the downloaded .deb"),
        std::fs::read(dir.join("repo").join(deb)).expect("the served .deb"),
        "apt-get download: the package differs"
    );
    assert_served("apt-get download", &log, &[&format!("GET /./{deb}")], &o);
}

// ------------------------------------------------------------------ psql

/// The newest `/usr/lib/postgresql/VERSION/bin` with `initdb` and `postgres`.
fn postgres_bin() -> Option<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file()).then_some((n, bin))
        })
        .collect();
    v.sort();
    v.pop().map(|(_, b)| b)
}

/// The uid and gid of `postgres` (Debian's server package makes it), else `nobody`:
/// initdb and postgres refuse to run as root.
fn unprivileged() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let find = |user: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0] != user {
                return None;
            }
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        })
    };
    find("postgres")
        .or_else(|| find("nobody"))
        .expect("neither postgres nor nobody in /etc/passwd")
}

/// A postgres server on a unix socket only, stopped (fast shutdown, bounded) when dropped.
struct Postgres {
    run: Option<Running>,
    socket_dir: PathBuf,
}

impl Postgres {
    /// initdb (trust, user `stls`, no fsync) and postgres in `dir` as an unprivileged user;
    /// ready when a plain psql over the socket answers (bounded).
    fn start(bin: &Path, dir: &Path) -> Postgres {
        let (uid, gid) = unprivileged();
        let data = dir.join("data");
        let socket_dir = dir.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("socket directory");
        for d in [dir, &socket_dir] {
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown");
        }
        let o = proc::run(
            Command::new(bin.join("initdb"))
                .args(["-A", "trust", "-U", "stls", "-E", "UTF8", "--locale=C"])
                .args(["--no-sync", "--no-instructions", "-D"])
                .arg(&data)
                .current_dir(dir)
                .uid(uid)
                .gid(gid),
            None,
            Duration::from_secs(120),
        );
        assert_eq!(o.code(), 0, "initdb: {}{}", o.stdout_str(), o.stderr_str());
        let run = Running::start(
            Command::new(bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&socket_dir)
                .args(["-c", "listen_addresses=", "-c", "fsync=off"])
                .args(["-c", "max_connections=10", "-c", "shared_buffers=16MB"])
                .current_dir(dir)
                .uid(uid)
                .gid(gid),
        );
        let mut pg = Postgres {
            run: Some(run),
            socket_dir,
        };
        let up = proc::wait_for(Duration::from_secs(60), || {
            pg.plain_psql("select 1").stdout_str().trim() == "1"
        });
        if !up {
            let said = pg.run.take().map(Running::kill);
            panic!(
                "postgres did not answer within 60 s: {}",
                said.map(|o| o.stderr_str()).unwrap_or_default()
            );
        }
        pg
    }

    /// The server's unix socket.
    fn socket(&self) -> PathBuf {
        self.socket_dir.join(".s.PGSQL.5432")
    }

    /// psql over the unix socket, without the shim: `sql`'s unaligned rows.
    fn plain_psql(&self, sql: &str) -> Outcome {
        let conn = format!(
            "host={} user=stls dbname=postgres connect_timeout=10",
            self.socket_dir.display()
        );
        proc::run(
            Command::new("psql")
                .args(["-X", "-A", "-t", "-c", sql, &conn])
                .env_remove("LD_PRELOAD"),
            None,
            Duration::from_secs(30),
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(r) = self.run.take() {
            // SAFETY: kill(2) of our own child's pid, which we have not waited for yet.
            unsafe { libc::kill(r.pid() as libc::pid_t, libc::SIGINT) };
            let _ = r.finish_or_kill(Duration::from_secs(20));
        }
    }
}

/// A query whose answer is large (2,000 md5 sums, 64 KiB) and known: the same over the
/// socket and through the shim, byte for byte.
const QUERY: &str =
    "select string_agg(md5(i::text), '' order by i) from generate_series(1, 2000) i";

#[test]
fn psql_plain_protocol_to_a_real_postgres() {
    if !ready(&["psql", "socat"]) {
        return;
    }
    let Some(bin) = postgres_bin() else {
        bins::skip("postgresql not installed (no /usr/lib/postgresql/*/bin/initdb)");
        return;
    };
    let dir = scratch("psql");
    let pg = Postgres::start(&bin, &dir);
    let log = scratch("psql-log").join("server.log");
    // tlsd, then per connection one line with what tlsd saw, then the bytes to the
    // server's socket.
    let s = tlsd_server(&[
        "/bin/sh".into(),
        "-c".into(),
        "printf 'sni=%s proto=%s\\n' \"$SSL_TLS_SNI_SERVERNAME\" \"$SSL_PROTOCOL\" >>\"$0\" \
         && exec socat - \"UNIX-CONNECT:$1\""
            .into(),
        log.clone().into(),
        pg.socket().into(),
    ]);
    let want = pg.plain_psql(QUERY);
    assert_eq!(want.code(), 0, "plain psql: {}", want.stderr_str());
    assert!(want.stdout.len() > 64_000, "{}", want.stdout_str());
    // sslmode=disable: libpq's plain protocol (no SSLRequest); gssencmode=disable: no
    // GSSAPI attempt first.
    let conn = format!(
        "host={NAME} port={} user=stls dbname=postgres sslmode=disable gssencmode=disable connect_timeout=30",
        s.port
    );
    let o = shim::run(
        &[
            "psql",
            "-X",
            "-A",
            "-t",
            "-c",
            "select 'through the shim as ' || current_user",
            "-c",
            QUERY,
            &conn,
        ],
        &s.vars(),
        None,
    );
    assert_eq!(o.code(), 0, "psql: {}{}", o.stdout_str(), o.stderr_str());
    let out = o.stdout_str();
    assert!(
        out.starts_with("through the shim as stls\n"),
        "psql: {out}\n{}",
        o.stderr_str()
    );
    assert!(
        out.ends_with(&want.stdout_str()),
        "psql: the large answer differs from the one over the socket"
    );
    assert_upgraded("psql", &o);
    let lines = log_lines(&log);
    assert!(
        !lines.is_empty() && lines.iter().all(|l| *l == shim::tag(NAME)),
        "psql: the server side saw {lines:?}\nstderr: {}",
        o.stderr_str()
    );
    drop(pg);
}
