// The build script of tlsd and tlsc (one file, named by both Cargo.toml files).
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
    if linux && std::env::var("STLS_NO_PIE").as_deref() == Ok("1") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
