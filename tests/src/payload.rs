//! Deterministic payloads and hashes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use openssl::sha::Sha256;

/// Xorshift64* pseudo-random bytes: the same seed gives the same stream.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// `len` deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorShift::new(seed).fill(&mut v);
    v
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    hex(&h.finish())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Streaming SHA-256 that also counts bytes.
pub struct Hasher {
    h: Sha256,
    pub len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher {
            h: Sha256::new(),
            len: 0,
        }
    }
    pub fn update(&mut self, b: &[u8]) {
        self.h.update(b);
        self.len += b.len() as u64;
    }
    pub fn hex(self) -> String {
        hex(&self.h.finish())
    }
}

/// Write `len` bytes of seeded data to `dir/name` in 1 MiB steps; returns the path and the
/// hash of the content.
pub fn file(dir: &Path, name: &str, seed: u64, len: usize) -> (PathBuf, String) {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut rng = XorShift::new(seed);
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        left -= n;
    }
    (path, h.hex())
}

/// The hash in the first word of a `sha256sum` output line.
pub fn sha256sum_word(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;
