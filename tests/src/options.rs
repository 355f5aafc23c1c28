//! Reading the interface out of `--help` and the manual pages, so that a test can compare
//! them in both directions. `--help` is generated from the option table and the exit codes'
//! table in `stls`, so comparing it with a page compares the tables with the page.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Every program and its manual page: the list the documentation tests walk.
pub const PROGRAMS: &[(&str, &str)] = &[
    ("tlsd", "tlsd.1"),
    ("tlsc", "tlsc.1"),
    ("tlsserver", "tlsserver.1"),
    ("tlsclient", "tlsclient.1"),
    ("ucspitlsd", "ucspitlsd.1"),
    ("ucspitlsc", "ucspitlsc.1"),
];

/// `<workspace>/man/<name>`.
pub fn man_page(name: &str) -> PathBuf {
    crate::bins::workspace().join("man").join(name)
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

/// The option names in `text`: each `-X` or `--long` standing as a word of its own, with
/// any `=value` dropped. `-` alone and `--` alone are not options.
pub fn option_words(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts_word = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
        if b[i] != b'-' || !starts_word {
            i += 1;
            continue;
        }
        let dashes = if b.get(i + 1) == Some(&b'-') { 2 } else { 1 };
        let name_start = i + dashes;
        let mut e = name_start;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'-') {
            e += 1;
        }
        let name = &text[name_start..e];
        let is_option = match dashes {
            1 => name.len() == 1,
            _ => name.len() > 1 && name.starts_with(|c: char| c.is_ascii_alphabetic()),
        };
        if is_option {
            found.push(text[i..e].to_string());
        }
        i = e.max(i + 1);
    }
    found
}

/// The option forms `--help` lists under `options:`: on each line, the leading forms
/// (`-K DUR, --handshake-timeout=DUR`), up to the help text.
pub fn help_options(help: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(start) = help.find("\noptions:\n") else {
        return out;
    };
    for line in help[start + 10..].lines() {
        if line.trim().is_empty() {
            break;
        }
        let mut after_short = false;
        for tok in line.split_whitespace() {
            let t = tok.trim_end_matches(',');
            if t.starts_with('-') {
                let name = t.split('=').next().unwrap_or(t);
                out.insert(name.to_string());
                after_short = !name.starts_with("--") && !tok.ends_with(',');
            } else if after_short && t.chars().all(|c| c.is_ascii_uppercase()) {
                // The argument of a short option (`-K DUR,`).
                after_short = false;
            } else {
                break;
            }
        }
    }
    out
}

/// The lines of the section `.SH <title>` of a page, up to the next `.SH`.
pub fn section<'a>(src: &'a str, title: &str) -> Vec<&'a str> {
    let mut lines = src.lines();
    let head = format!(".SH {title}");
    for l in lines.by_ref() {
        if l.trim() == head || l.trim() == format!(".SH \"{title}\"") {
            break;
        }
    }
    lines.take_while(|l| !l.starts_with(".SH")).collect()
}

/// The options a page documents: the words of each `.TP` tag line in its OPTIONS section.
pub fn man_options(src: &str) -> BTreeSet<String> {
    let lines = section(src, "OPTIONS");
    let mut out = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == ".TP" {
            if let Some(tag) = lines.get(i + 1) {
                out.extend(option_words(&roff_to_text(tag)));
            }
        }
    }
    out
}

/// The exit codes `--help` lists under `exit status:` (`  96   what`). The earlier
/// one-line form (`exit: the child's status; 96 TLS configuration, 97 ...`) is read too,
/// so that this reader also serves a binary built before the table existed.
pub fn help_exit_codes(help: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    if let Some(start) = help.find("\nexit status:\n") {
        for line in help[start + 14..].lines() {
            if line.trim().is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("  ").and_then(leading_number) {
                out.insert(n);
            }
        }
        return out;
    }
    if let Some(start) = help.find("\nexit: ") {
        let rest = &help[start + 7..];
        let end = rest.find(". ").unwrap_or(rest.len());
        for w in rest[..end].split(|c: char| !c.is_ascii_digit()) {
            if let Ok(n) = w.parse() {
                out.insert(n);
            }
        }
    }
    out
}

fn leading_number(s: &str) -> Option<u32> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let rest = &s[digits.len()..];
    if digits.is_empty() || !rest.starts_with(' ') {
        return None;
    }
    digits.parse().ok()
}

/// The numeric exit codes a page documents: the `.TP` tags of its EXIT STATUS section that
/// are a number.
pub fn man_exit_codes(src: &str) -> BTreeSet<u32> {
    let lines = section(src, "EXIT STATUS");
    let mut out = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == ".TP" {
            if let Some(n) = lines.get(i + 1).and_then(|t| t.trim().parse().ok()) {
                out.insert(n);
            }
        }
    }
    out
}

/// The numeric exit codes of README's `## Exit codes` table (`| 96 | ... |`).
pub fn readme_exit_codes(src: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let mut lines = src.lines();
    if !lines.by_ref().any(|l| l.trim() == "## Exit codes") {
        return out;
    }
    for line in lines {
        if line.starts_with("## ") {
            break;
        }
        if let Some(cell) = line.strip_prefix('|').and_then(|l| l.split('|').next()) {
            if let Ok(n) = cell.trim().parse() {
                out.insert(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_forms() {
        let help = "usage: x\n\noptions:\n  -S, --close-notify     send it (-J too)\n  -K DUR, --handshake-timeout=DUR  time\n  --idle-timeout=DUR     idle\n  -6 FD, --read-fd=FD    fd\n\nenvironment: X\n";
        assert_eq!(
            help_options(help),
            set(&[
                "-S",
                "--close-notify",
                "-K",
                "--handshake-timeout",
                "--idle-timeout",
                "-6",
                "--read-fd"
            ])
        );
        assert!(help_options("no options here").is_empty());
    }

    #[test]
    fn man_forms() {
        let page = ".SH NAME\nx \\- y\n.SH OPTIONS\nSome text with \\-x.\n.TP\n.BR \\-S \", \" \\-\\-close\\-notify\nSend it.\n.TP\n.BI \\-K \" dur\" \", \\-\\-handshake\\-timeout=\" dur\nTime.\n.TP\n.B \\-\\-detach\nFork.\n.SH EXIT STATUS\n.TP\n96\nBad.\n.TP\n.RI 128+ s\nSignal.\n.TP\n111\nSystem.\n.SH SEE ALSO\n.TP\n.B \\-\\-bogus\n";
        assert_eq!(
            man_options(page),
            set(&[
                "-S",
                "--close-notify",
                "-K",
                "--handshake-timeout",
                "--detach"
            ])
        );
        assert_eq!(man_exit_codes(page), [96, 111].into_iter().collect());
    }

    #[test]
    fn exit_code_forms() {
        let new = "x\n\nexit status:\n  the child's status (128+N when it was killed by signal N), or\n  96   config\n  111  system\n\nSee x(1).\n";
        assert_eq!(help_exit_codes(new), [96, 111].into_iter().collect());
        let old = "x\nexit: the child's status; 96 TLS configuration, 97 handshake,\n      100 usage, 111 system. See the man page.\n";
        assert_eq!(
            help_exit_codes(old),
            [96, 97, 100, 111].into_iter().collect()
        );
        let readme = "## Exit codes\n\n| code | meaning |\n|---|---|\n| *n* | prog |\n| 96 | config |\n| 127 | missing |\n\n## Next\n| 5 | no |\n";
        assert_eq!(readme_exit_codes(readme), [96, 127].into_iter().collect());
    }

    #[test]
    fn words() {
        assert_eq!(
            option_words("use -k name, --servername=x, not x-y or -- or - or -kk"),
            vec!["-k", "--servername"]
        );
        assert_eq!(option_words("-6 fd and -7 fd"), vec!["-6", "-7"]);
    }
}
