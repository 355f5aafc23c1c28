//! The options every binary must document (notes/CONTRACT.md), and a checker for
//! `--help` output and man pages.

use std::path::PathBuf;

/// Options of both tlsd and tlsc.
pub const COMMON: &[&str] = &[
    "-S",
    "--close-notify",
    "-s",
    "--no-close-notify",
    "-J",
    "--enforce-close-notify",
    "-j",
    "--no-enforce-close-notify",
    "-Z",
    "--keep",
    "-z",
    "--no-keep",
    "-K",
    "--handshake-timeout",
    "--idle-timeout",
    "-v",
    "--verbosity",
    "-h",
    "--help",
    "-V",
    "--version",
];

pub const TLSD: &[&str] = &[
    "-Y",
    "--optional-client-cert",
    "-y",
    "--require-client-cert",
    "-k",
    "--sni-level",
    "--sni",
    "--mandatory-sni",
];

pub const TLSC: &[&str] = &[
    "-y",
    "--client-cert",
    "-Y",
    "--no-client-cert",
    "-k",
    "--servername",
    "-6",
    "--read-fd",
    "-7",
    "--write-fd",
    "--no-verify-cert",
    "--no-verify-name",
    "-d",
    "--notification-fd",
    "--detach",
];

/// All options of `prog` ("tlsd" or "tlsc").
pub fn all(prog: &str) -> Vec<&'static str> {
    let own = match prog {
        "tlsd" => TLSD,
        "tlsc" => TLSC,
        _ => panic!("unknown program {prog}"),
    };
    COMMON.iter().chain(own.iter()).copied().collect()
}

/// Roff source to plain text enough to find option names: `\-` is `-`, font escapes and
/// zero-width `\&` go away.
pub fn roff_to_text(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut it = src.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('-') => out.push('-'),
            Some('&') | Some('%') | Some('c') => {}
            Some('e') | Some('\\') => out.push('\\'),
            Some('f') => match it.next() {
                Some('(') => {
                    it.next();
                    it.next();
                }
                Some('[') => {
                    for c in it.by_ref() {
                        if c == ']' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            Some('(') => {
                let a = it.next();
                let b = it.next();
                if matches!(
                    (a, b),
                    (Some('e'), Some('m')) | (Some('e'), Some('n')) | (Some('h'), Some('y'))
                ) {
                    out.push('-');
                }
            }
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => {}
        }
    }
    out
}

/// Does `text` mention option `opt` as a word of its own (not inside a longer option)?
pub fn mentions(text: &str, opt: &str) -> bool {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(opt) {
        let s = from + i;
        let e = s + opt.len();
        let before_ok = s == 0 || !(b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'-');
        let after_ok = e >= b.len() || !(b[e].is_ascii_alphanumeric() || b[e] == b'-');
        if before_ok && after_ok {
            return true;
        }
        from = s + 1;
    }
    false
}

/// The options of `prog` missing from `text`.
pub fn missing(prog: &str, text: &str) -> Vec<&'static str> {
    all(prog)
        .into_iter()
        .filter(|o| !mentions(text, o))
        .collect()
}

/// `<workspace>/man/<name>`.
pub fn man_page(name: &str) -> PathBuf {
    crate::bins::workspace().join("man").join(name)
}
