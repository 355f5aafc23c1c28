//! The library's messages: one `write(2)` of one line to fd 2, with no std lock (a hook
//! may run in a forked child or a signal-interrupted program), and the once-per-process
//! ones.

use std::sync::atomic::{AtomicBool, Ordering};

pub fn message(text: &str) {
    let mut line = String::with_capacity(text.len() + 10);
    line.push_str("autossl: ");
    line.push_str(text);
    line.push('\n');
    let b = line.as_bytes();
    // SAFETY: write reads b.len() bytes of our own buffer.
    unsafe {
        libc::write(2, b.as_ptr() as *const libc::c_void, b.len());
    }
}

pub fn say(silent: bool, text: &str) {
    if !silent {
        message(text);
    }
}

/// A one-time message (the helper is missing, ...).
pub fn say_once(flag: &AtomicBool, silent: bool, text: &str) {
    if !flag.swap(true, Ordering::Relaxed) {
        say(silent, text);
    }
}
