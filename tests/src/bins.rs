//! Locating the toolkit's binaries and the peer programs the tests talk to.

use std::env;
use std::path::{Path, PathBuf};

/// The workspace root (the parent of this crate's directory).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` (relative to the workspace when
/// relative) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                workspace().join(p)
            }
        }
        _ => workspace().join("target"),
    }
}

/// The variable naming the directory of the toolkit's binaries under test; unset, they
/// are `<target>/release`. `make test-vendored` points it at the vendored build
/// (`<target>/vendored/release`), so that the same tests run on either build.
pub const BIN_DIR: &str = "STLS_BIN_DIR";

/// The directory of the binaries under test: `$STLS_BIN_DIR`, else `<target>/release`.
pub fn bin_dir() -> PathBuf {
    match env::var_os(BIN_DIR) {
        Some(d) if !d.is_empty() => {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                workspace().join(p)
            }
        }
        _ => target_dir().join("release"),
    }
}

/// `<bin_dir>/<name>`; panics with the build command when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    if !p.is_file() {
        let how = if env::var_os(BIN_DIR).is_some_and(|d| !d.is_empty()) {
            "build it first (STLS_BIN_DIR names it; `make build-vendored` for the vendored build)"
        } else {
            "run `cargo build --release --workspace` first"
        };
        panic!("{} not found: {how}", p.display());
    }
    p
}

/// Are the binaries under test the vendored build's (OpenSSL 3.5 or later, with
/// X25519MLKEM768)? Asked of tlsd itself: its `--version` says.
pub fn hybrid_build() -> bool {
    let out = std::process::Command::new(tlsd()).arg("--version").output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).contains("X25519MLKEM768: yes"),
        Err(e) => panic!("{}: {e}", tlsd().display()),
    }
}

pub fn tlsd() -> PathBuf {
    bin("tlsd")
}

pub fn tlsc() -> PathBuf {
    bin("tlsc")
}

/// True when running in CI (`CI=true`): a missing peer is then a failure, not a skip.
pub fn ci() -> bool {
    matches!(env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// The program's path on `PATH`, if any.
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The current test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Is `peer` installed? Missing under `CI=true`: panic (the CI must install it).
/// Missing elsewhere: print a visible `SKIP:` line and return false.
pub fn require(peer: &str) -> bool {
    if which(peer).is_some() {
        return true;
    }
    skip(&format!("{peer} not installed"))
}

/// The Debian packages of `tests/packages.txt`, each with the programs the tests look
/// for in it.
const PACKAGES: &str = include_str!("../packages.txt");

/// The packages a skip's reason names, by package or by program (`haproxy not
/// installed`, `unshare not installed (util-linux)`), as `tests/packages.txt` lists them.
pub fn packages_named(reason: &str) -> Vec<String> {
    let words: Vec<&str> = reason
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-._+".contains(c)))
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::new();
    for line in PACKAGES.lines() {
        let mut fields = line.split('#').next().unwrap_or("").split_whitespace();
        let Some(package) = fields.next() else {
            continue;
        };
        let mut names = std::iter::once(package).chain(fields);
        if names.any(|n| words.contains(&n)) && !out.iter().any(|p| p == package) {
            out.push(package.to_string());
        }
    }
    out
}

/// The test binary's name without cargo's hash (`deploy` for `deploy-0123abcd`).
fn binary_name() -> String {
    let exe = env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    }
}

/// Write `text` to the process's real stderr. libtest captures what `eprintln!` prints
/// and shows it only for a failing test, and a skipped test passes: fd 2 itself is what
/// `cargo test` inherited, so a write there is seen in the default output.
fn to_real_stderr(text: &str) {
    let mut rest = text.as_bytes();
    // Bounded: a short write is retried, an error or a stall ends it.
    for _ in 0..16 {
        if rest.is_empty() {
            return;
        }
        // SAFETY: the pointer and length describe `rest`, a live byte slice.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// The variable that names the file each skip is added to (one line: test, reason,
/// packages, separated by tabs); `make test` sets it and summarises the file at the end.
pub const SKIP_LOG: &str = "STLS_SKIP_LOG";

/// Skip the current test with a reason (a failure under `CI=true`): a `SKIP:` line on the
/// real stderr, with the packages that would run it, and a line in `$STLS_SKIP_LOG`.
pub fn skip(reason: &str) -> bool {
    let name = format!("{}::{}", binary_name(), test_name());
    if ci() {
        panic!("{name}: {reason} (CI=true: this is a failure, not a skip)");
    }
    let packages = packages_named(reason).join(" ");
    let hint = if packages.is_empty() {
        String::new()
    } else {
        format!(" (apt-get install {packages})")
    };
    to_real_stderr(&format!("SKIP: {name}: {reason}{hint}\n"));
    if let Some(log) = env::var_os(SKIP_LOG).filter(|l| !l.is_empty()) {
        use std::io::Write;
        let line = format!("{name}\t{reason}\t{packages}\n");
        // One write of one line with O_APPEND: the tests of a binary run in threads.
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = r {
            to_real_stderr(&format!(
                "SKIP: cannot add to {} ({SKIP_LOG}): {e}\n",
                Path::new(&log).display()
            ));
        }
    }
    false
}

/// Are we root? (privilege-drop tests need it.)
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}
