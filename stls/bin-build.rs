// The build script of tlsd, tlsc and libautossl.so (one file, named by their Cargo.toml
// files).
//
// libgcc's unwinder is linked in (libgcc_eh.a, ahead of libgcc_s on the link line, which
// --as-needed then drops): the programs depend on the C library alone, and every process
// that preloads the library is spared mapping, relocating and initialising libgcc_s.so
// (about 60 us per exec, measured with bench/shim). A compiler without libgcc_eh.a
// changes nothing.
//
// The binaries are position-independent executables by default: the executable's own
// address, OpenSSL's code included (linked statically by `make`, see the Makefile), is
// randomized at every start, and tlsd starts once per connection.
// STLS_NO_PIE=1 links them position-dependent instead: no relative relocations to apply
// and no data pages dirtied by them at each start, which bench/RESULTS.md measures
// (CPU per handshake and memory per connection), at the price of that hardening.
fn main() {
    println!("cargo:rerun-if-changed=../stls/bin-build.rs");
    println!("cargo:rerun-if-env-changed=STLS_NO_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if !linux {
        return;
    }
    if std::env::var("STLS_NO_PIE").as_deref() == Ok("1") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = std::process::Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if let (true, Some(dir)) = (path.is_absolute() && path.is_file(), path.parent()) {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}
