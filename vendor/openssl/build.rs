// Compiles OpenSSL from openssl-src once (cargo re-runs this only when it changes) and
// hands its install directory to main.rs.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    // OPENSSLDIR is compiled into libcrypto: Debian's, so that the default trust store
    // (/usr/lib/ssl/certs, a link to /etc/ssl/certs) and OPENSSL_CONF's usual file are the
    // system's, as with the system build; the default (the build directory) would not
    // exist on the machine the binaries are installed on.
    let artifacts = openssl_src::Build::new()
        .target(&target)
        .host(&host)
        .out_dir(&out)
        .openssl_dir("/usr/lib/ssl")
        .build();
    println!(
        "cargo:rustc-env=STLS_OPENSSL_LIB_DIR={}",
        artifacts.lib_dir().display()
    );
    println!(
        "cargo:rustc-env=STLS_OPENSSL_INCLUDE_DIR={}",
        artifacts.include_dir().display()
    );
    println!("cargo:rustc-env=STLS_OPENSSL_VERSION={}", openssl_src::version());
}
