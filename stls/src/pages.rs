//! Memory mapped for a purpose the heap does not serve: fresh pages for the engine's buffers
//! and a spawned child's stack ([`Pages`]), and bytes shared with forked processes
//! ([`SharedFlags`]).

use std::sync::atomic::AtomicU8;

/// Fresh anonymous pages from mmap, zero-filled by the kernel and faulted in only as far
/// as they are used, whatever state the heap is in (a recycled heap chunk would be zeroed
/// page by page, and in a forked process copied on write first). Falls back to the heap
/// when the mapping fails.
pub struct Pages {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    mapped: bool,
}

impl Pages {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Pages {
        // SAFETY: an anonymous private mapping of a fresh range; no existing memory is
        // touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(p.cast::<u8>()) {
            Some(ptr) if p != libc::MAP_FAILED && len > 0 => Pages {
                ptr,
                len,
                mapped: true,
            },
            _ => {
                let b: Box<[u8]> = vec![0u8; len].into_boxed_slice();
                let ptr = std::ptr::NonNull::from(Box::leak(b)).cast::<u8>();
                Pages {
                    ptr,
                    len,
                    mapped: false,
                }
            }
        }
    }
}

impl std::ops::Deref for Pages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points at `len` initialised bytes this value owns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Pages {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: the mapping made in `new`, of this length, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        } else {
            let s = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
            // SAFETY: the box leaked in `new`, rebuilt once.
            drop(unsafe { Box::from_raw(s) });
        }
    }
}

/// Bytes in an anonymous shared mapping, made before any fork and never unmapped: each
/// forked process and its parent see the same bytes, accessed only atomically (tlsserver:
/// one byte per connection's process, set once its handshake is done).
pub struct SharedFlags {
    base: std::ptr::NonNull<AtomicU8>,
    len: usize,
}

impl SharedFlags {
    /// `len` zero bytes (at least one), shared with every process forked from here on.
    pub fn new(len: usize) -> std::io::Result<SharedFlags> {
        let len = len.max(1);
        // SAFETY: a new anonymous mapping of a fresh range; no existing memory is touched.
        // It is never unmapped: the processes keep it for their whole life.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(p.cast::<AtomicU8>())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        Ok(SharedFlags { base, len })
    }

    /// Byte `i` (the last one when `i` is past the end).
    pub fn slot(&self, i: usize) -> &AtomicU8 {
        let i = i.min(self.len - 1);
        // SAFETY: `i` is within the mapping, which lives as long as the process; AtomicU8
        // has the layout of u8 and the shared bytes are only ever accessed atomically.
        unsafe { &*self.base.as_ptr().add(i) }
    }
}
