// Link the binary as a position-dependent executable (issue 5, benchmarks): with OpenSSL
// linked statically, a PIE still pays for hundreds of thousands of relative relocations
// at every start, and this binary starts once per connection. `-no-pie` removes them.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
