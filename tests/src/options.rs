//! Reading the interface out of `--help` and the manual pages, so that a test can compare
//! them in both directions. `--help` is generated from the option table and the exit codes'
//! table in `stls`, so comparing it with a page compares the tables with the page.

use std::collections::{BTreeMap, BTreeSet};
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

/// What one option says of itself: its short form, its value's name (lower case) and its
/// default (`default` for a flag whose state is the default, the value or words of a
/// valued option's, empty when none is stated).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct OptionDoc {
    pub short: Option<String>,
    pub value: Option<String>,
    pub default: String,
}

/// The forms of an option as `--help` prints them and a page's tag renders
/// (`-K DUR, --handshake-timeout=DUR`, `-v n, --verbosity=n`, `--sni`): the long name
/// (or the short one when there is no long form) and what the forms say.
pub fn parse_forms(text: &str) -> Option<(String, OptionDoc)> {
    let mut doc = OptionDoc::default();
    let mut long = None;
    let mut words = text.split_whitespace().peekable();
    while let Some(w) = words.next() {
        let w = w.trim_end_matches(',');
        if let Some(rest) = w.strip_prefix("--") {
            let (name, value) = match rest.split_once('=') {
                Some((n, v)) => (n, Some(v.to_ascii_lowercase())),
                None => (rest, None),
            };
            long = Some(format!("--{name}"));
            doc.value = match (doc.value.take(), value) {
                // The short form's value name and the long form's must be one.
                (Some(a), Some(b)) if a != b => Some(format!("{a}|{b}")),
                (a, b) => b.or(a),
            };
        } else if w.len() == 2 && w.starts_with('-') {
            doc.short = Some(w.to_string());
            let takes_value = words.peek().is_some_and(|n| !n.starts_with('-'));
            if takes_value {
                let v = words.next().unwrap_or_default();
                doc.value = Some(v.trim_end_matches(',').to_ascii_lowercase());
            }
        } else {
            break;
        }
    }
    let name = long.or_else(|| doc.short.clone())?;
    Some((name, doc))
}

/// Every option `--help` lists, with its forms and its default (`(default)` or
/// `(default: X)` at the end of its line).
pub fn help_option_docs(help: &str) -> BTreeMap<String, OptionDoc> {
    let mut out = BTreeMap::new();
    let Some(start) = help.find("\noptions:\n") else {
        return out;
    };
    for line in help[start + 10..].lines() {
        if line.trim().is_empty() {
            break;
        }
        let Some((name, mut doc)) = parse_forms(line) else {
            continue;
        };
        if line.ends_with(" (default)") {
            doc.default = "default".into();
        } else if let Some(i) = line.rfind(" (default: ") {
            doc.default = line[i + 11..].trim_end_matches(')').to_string();
        }
        out.insert(name, doc);
    }
    out
}

/// The words after a heading line of `--help` (`environment read: A B C`).
pub fn help_list(help: &str, heading: &str) -> BTreeSet<String> {
    help.lines()
        .find_map(|l| l.strip_prefix(heading))
        .map(|rest| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Split a macro line's arguments, double quotes grouping words.
fn macro_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One line of a page as text: a font macro's arguments joined as it renders them
/// (`.BR a b` is `ab`, `.B a b` is `a b`), other requests dropped, escapes resolved.
pub fn render_line(line: &str) -> String {
    let Some(req) = line.strip_prefix('.') else {
        return roff_to_text(line);
    };
    let (name, rest) = req.split_once(' ').unwrap_or((req, ""));
    let joined = match name {
        "B" | "I" => macro_args(rest).join(" "),
        "BR" | "BI" | "IR" | "IB" | "RB" | "RI" => macro_args(rest).concat(),
        _ => String::new(),
    };
    roff_to_text(&joined)
}

/// The tags of a subsection's `.TP` entries (and their `.TQ` extra tags), rendered.
fn tags(lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if matches!(l.trim(), ".TP" | ".TQ") {
            if let Some(tag) = lines.get(i + 1) {
                out.push(render_line(tag));
            }
        }
    }
    out
}

/// The environment variables a text names: words in capitals and digits with an
/// underscore or a capital start (`CERTFILE`, `TLS_UID`), `NAME:name` families, `SSL_*`.
pub fn variable_words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | ';'))
        .map(|w| w.trim_end_matches(['.', ':']))
        .map(|w| {
            w.strip_suffix(":name")
                .map_or(w.to_string(), |p| format!("{p}:name"))
        })
        .filter(|w| {
            let base = w.strip_suffix(":name").unwrap_or(w);
            base.len() > 1
                && base.starts_with(|c: char| c.is_ascii_uppercase())
                && base
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '*')
                && !["TLS", "TCP", "PEM", "DER", "SNI", "OCSP", "CRL", "UCSPI"].contains(&base)
        })
        .collect()
}

/// The lines of the subsection `.SS <title>` of section `.SH <section>`.
pub fn subsection<'a>(src: &'a str, section_title: &str, title: &str) -> Vec<&'a str> {
    let lines = section(src, section_title);
    let head = format!(".SS {title}");
    let mut it = lines.into_iter();
    for l in it.by_ref() {
        if l.trim() == head {
            break;
        }
    }
    it.take_while(|l| !l.starts_with(".SS")).collect()
}

/// The variables the tags of a page's ENVIRONMENT subsection `title` name.
pub fn man_variables(src: &str, title: &str) -> BTreeSet<String> {
    tags(&subsection(src, "ENVIRONMENT", title))
        .iter()
        .flat_map(|t| variable_words(t))
        .collect()
}

/// Each option of a page's OPTIONS section with its forms and the default its paragraph
/// states: `This is the default.` (a flag) or `The default is X.`.
pub fn man_option_docs(src: &str) -> BTreeMap<String, OptionDoc> {
    let lines = section(src, "OPTIONS");
    let mut out = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() != ".TP" {
            continue;
        }
        let Some((name, mut doc)) = lines.get(i + 1).and_then(|t| parse_forms(&render_line(t)))
        else {
            continue;
        };
        let body: Vec<String> = lines[i + 2..]
            .iter()
            .take_while(|l| !matches!(l.trim(), ".TP" | ".SS") && !l.starts_with(".SH"))
            .map(|l| render_line(l))
            .collect();
        let text = body.join(" ");
        if text.contains("This is the default.") {
            doc.default = "default".into();
        } else if let Some(i) = text.find("The default is ") {
            let rest = &text[i + 15..];
            let end = rest
                .match_indices('.')
                .find(|(j, _)| rest[j + 1..].starts_with(' ') || j + 1 == rest.len())
                .map_or(rest.len(), |(j, _)| j);
            doc.default = rest[..end].to_string();
        }
        out.insert(name, doc);
    }
    out
}

/// The variables named in the paragraph of a page's OPTIONS section that documents `-Z`.
pub fn man_keep_list(src: &str) -> BTreeSet<String> {
    let lines = section(src, "OPTIONS");
    let Some(i) = lines
        .iter()
        .position(|l| render_line(l).starts_with("-Z, --keep"))
    else {
        return BTreeSet::new();
    };
    let body: Vec<String> = lines[i + 1..]
        .iter()
        .take_while(|l| l.trim() != ".TP" && !l.starts_with(".SH"))
        .map(|l| render_line(l))
        .collect();
    variable_words(&body.join(" "))
}

/// The variables stls(7) says are removed from the application's environment: its
/// ENVIRONMENT paragraph that starts `Unless -Z is given`.
pub fn stls7_removed(src: &str) -> BTreeSet<String> {
    let text: Vec<String> = section(src, "ENVIRONMENT")
        .iter()
        .map(|l| render_line(l))
        .collect();
    let text = text.join(" ");
    let Some(start) = text.find("Unless -Z is given") else {
        return BTreeSet::new();
    };
    let rest = &text[start..];
    let end = rest.find("are removed").unwrap_or(rest.len());
    variable_words(&rest[..end])
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
    fn option_docs_from_help_and_page() {
        let help = "u\n\noptions:\n  -S, --close-notify   send it (default)\n  -K DUR, --handshake-timeout=DUR  time (0: none) (default: 30s)\n  --idle-timeout=DUR   idle\n\nenvironment read: A B:name\n";
        let h = help_option_docs(help);
        assert_eq!(h["--close-notify"].default, "default");
        assert_eq!(h["--handshake-timeout"].short.as_deref(), Some("-K"));
        assert_eq!(h["--handshake-timeout"].value.as_deref(), Some("dur"));
        assert_eq!(h["--handshake-timeout"].default, "30s");
        assert_eq!(h["--idle-timeout"].default, "");
        assert_eq!(help_list(help, "environment read:"), set(&["A", "B:name"]));
        let page = ".SH OPTIONS\n.TP\n.BI \\-K \" ms\" \"\\fR, \\fP\" \\-\\-handshake\\-timeout= DUR\nFail.\nThe default is 30s.\n.TP\n.BR \\-Z \", \" \\-\\-keep\nKeep\n.BR CADIR ,\nevery\n.BI CERTFILE: name\nand\n.BR TLS_UID .\n.TP\n.BR \\-z \", \" \\-\\-no\\-keep\nThis is the default.\n.SH ENVIRONMENT\n.SS Read\n.TP\n.BR CADIR \", \" CAFILE\n.TQ\n.BI KEYFILE: name\nText with TLS and PEM.\n";
        let m = man_option_docs(page);
        assert_eq!(m["--handshake-timeout"].value.as_deref(), Some("ms|dur"));
        assert_eq!(m["--handshake-timeout"].default, "30s");
        assert_eq!(m["--no-keep"].default, "default");
        assert_eq!(
            man_keep_list(page),
            set(&["CADIR", "CERTFILE:name", "TLS_UID"])
        );
        assert_eq!(
            man_variables(page, "Read"),
            set(&["CADIR", "CAFILE", "KEYFILE:name"])
        );
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
