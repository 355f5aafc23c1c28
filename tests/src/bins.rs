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

/// `<target>/release/<name>`; panics with the build command when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join("release").join(name);
    if !p.is_file() {
        panic!(
            "{} not found: run `cargo build --release --workspace` first",
            p.display()
        );
    }
    p
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
/// Missing elsewhere: print a visible `SKIP:` line on stderr and return false.
pub fn require(peer: &str) -> bool {
    if which(peer).is_some() {
        return true;
    }
    skip(&format!("{peer} not installed"))
}

/// Skip the current test with a reason (a failure under `CI=true`).
pub fn skip(reason: &str) -> bool {
    let name = test_name();
    if ci() {
        panic!("{name}: {reason} (CI=true: this is a failure, not a skip)");
    }
    eprintln!("SKIP: {name}: {reason}");
    false
}

/// Are we root? (privilege-drop tests need it.)
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}
