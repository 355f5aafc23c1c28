//! Prints where the OpenSSL that build.rs compiled is, as make variables:
//! `OPENSSL_LIB_DIR=...`, `OPENSSL_INCLUDE_DIR=...`, `OPENSSL_SRC_VERSION=...`.
fn main() {
    println!("OPENSSL_LIB_DIR={}", env!("STLS_OPENSSL_LIB_DIR"));
    println!("OPENSSL_INCLUDE_DIR={}", env!("STLS_OPENSSL_INCLUDE_DIR"));
    println!("OPENSSL_SRC_VERSION={}", env!("STLS_OPENSSL_VERSION"));
}
