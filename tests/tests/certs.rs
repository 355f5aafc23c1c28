//! The README's "Certificates to try things with", as written: its openssl recipe and
//! `make certs CERTDIR=...` each make a CA and a server certificate, and the README's two
//! command lines (tlsserver serving `cat`, tlsclient trusting the CA) work with them, by
//! the name localhost and by the address 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use stls_tests::listener::serve_on_free_port;
use stls_tests::proc;
use stls_tests::{bins, require, scratch};

const WAIT: Duration = Duration::from_secs(30);

/// The README's section: its `sh` blocks, in order.
fn readme_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(bins::workspace().join("README.md"))
        .expect("README.md is readable");
    let start = readme
        .find("## Certificates to try things with\n")
        .expect("README has ## Certificates to try things with");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    // Bounded by the section's length: each turn consumes one block.
    while let Some(i) = rest.find("```sh\n") {
        let body = &rest[i + 6..];
        let end = body.find("```").expect("a block ends");
        blocks.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    blocks
}

/// PATH with the built programs first, as after `make install`.
fn path() -> String {
    let release = bins::target_dir().join("release");
    let old = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    format!("{}:{old}", release.display())
}

/// The README's server and client lines, run in `dir` (which holds `certs/`), on a free
/// port instead of 8443 and in the foreground instead of `&`: the client's output.
fn try_them(dir: &Path, try_block: &str) {
    let lines: Vec<&str> = try_block.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "a server line and a client line: {try_block}"
    );
    let server = lines[0]
        .strip_suffix(" &")
        .expect("the server line ends with &");
    let client = lines[1];
    assert!(
        server.contains(" 8443 ") && client.ends_with(" 8443"),
        "{try_block}"
    );
    let (srv, port) = serve_on_free_port("tlsserver", "127.0.0.1", |port| {
        // `exec env`: the same process becomes tlsserver, whose port is then watched.
        let mut c = proc::sh(&format!(
            "exec env {}",
            server.replace("8443", &port.to_string())
        ));
        c.current_dir(dir).env("PATH", path());
        c
    });
    for host in ["localhost", "127.0.0.1"] {
        let line = client
            .replace("8443", &port.to_string())
            .replace("localhost", host);
        let mut c = proc::sh(&line);
        c.current_dir(dir).env("PATH", path()).stdin(Stdio::null());
        let o = proc::run(&mut c, None, WAIT);
        assert_eq!(o.code(), 0, "{line}: {}", o.stderr_str());
        assert_eq!(o.stdout_str(), "hello\n", "{line}");
    }
    drop(srv);
}

fn certs_in(dir: &Path) -> [PathBuf; 4] {
    ["ca.pem", "ca.key", "server.pem", "server.key"].map(|f| dir.join("certs").join(f))
}

#[test]
fn the_readme_recipe_makes_certificates_that_work() {
    if !require("openssl") {
        return;
    }
    let blocks = readme_blocks();
    assert_eq!(blocks.len(), 2, "the recipe and the lines that try it");
    let dir = scratch("readme-certs");
    let mut c = Command::new("/bin/sh");
    c.args(["-e", "-c", &blocks[0]]).current_dir(&dir);
    let o = proc::run(&mut c, None, WAIT);
    assert_eq!(o.code(), 0, "the recipe: {}", o.stderr_str());
    for f in certs_in(&dir) {
        assert!(f.is_file(), "{} was not made", f.display());
    }
    try_them(&dir, &blocks[1]);
}

#[test]
fn make_certs_makes_certificates_that_work() {
    if !require("openssl") || !require("make") {
        return;
    }
    let dir = scratch("make-certs");
    let mut c = Command::new("make");
    c.arg("-s")
        .arg("certs")
        .arg(format!("CERTDIR={}", dir.join("certs").display()))
        .current_dir(bins::workspace());
    let o = proc::run(&mut c, None, WAIT);
    assert_eq!(o.code(), 0, "make certs: {}", o.stderr_str());
    assert!(
        o.stdout_str().contains("certificates in "),
        "{}",
        o.stdout_str()
    );
    for f in certs_in(&dir) {
        assert!(f.is_file(), "{} was not made", f.display());
    }
    try_them(&dir, &readme_blocks()[1]);
}
