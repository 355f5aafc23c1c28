//! The interface as documented against the interface as built: every option `--help`
//! lists (it is generated from the option table) is in the program's manual page and every
//! option the page documents is in `--help`; the exit codes of `--help` (generated from
//! the exit codes' table) are those of the page, of stls(7) and of the README; the README's
//! package list is the one CI installs.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use stls_tests::bins;
use stls_tests::options::{self, PROGRAMS};
use stls_tests::proc;

const WAIT: Duration = Duration::from_secs(10);

fn help(prog: &str) -> String {
    let o = proc::run(Command::new(bins::bin(prog)).arg("--help"), None, WAIT);
    assert_eq!(o.code(), 0, "{prog} --help: {}", o.stderr_str());
    o.stdout_str()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn differences<T: Ord + std::fmt::Debug>(
    a: &BTreeSet<T>,
    a_name: &str,
    b: &BTreeSet<T>,
    b_name: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for x in a.difference(b) {
        out.push(format!("{x:?} is in {a_name} but not in {b_name}"));
    }
    for x in b.difference(a) {
        out.push(format!("{x:?} is in {b_name} but not in {a_name}"));
    }
    out
}

#[test]
fn help_and_man_page_list_the_same_options() {
    let mut wrong = Vec::new();
    for (prog, page) in PROGRAMS {
        let h = options::help_options(&help(prog));
        // A reader that finds nothing would make the comparison pass vacuously.
        assert!(h.len() >= 10, "{prog} --help: only {h:?} found");
        let path = options::man_page(page);
        let m = options::man_options(&read(&path));
        assert!(m.len() >= 10, "{}: only {m:?} found", path.display());
        let help_name = format!("{prog} --help");
        wrong.extend(differences(&h, &help_name, &m, &path.display().to_string()));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn help_man_pages_and_readme_list_the_same_exit_codes() {
    let ws = bins::workspace();
    let stls7 = ws.join("man/stls.7");
    let readme = ws.join("README.md");
    let common = [
        (
            stls7.display().to_string(),
            options::man_exit_codes(&read(&stls7)),
        ),
        (
            readme.display().to_string(),
            options::readme_exit_codes(&read(&readme)),
        ),
    ];
    let mut wrong = Vec::new();
    for (prog, page) in PROGRAMS {
        let h = options::help_exit_codes(&help(prog));
        assert!(h.len() >= 5, "{prog} --help: only exit codes {h:?} found");
        let path = options::man_page(page);
        let own = (
            path.display().to_string(),
            options::man_exit_codes(&read(&path)),
        );
        let help_name = format!("{prog} --help");
        for (name, codes) in common.iter().chain([&own]) {
            assert!(codes.len() >= 5, "{name}: only exit codes {codes:?} found");
            wrong.extend(differences(&h, &help_name, codes, name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The packages `.ci/run` installs (the words of its `packages=(...)` list).
fn ci_packages(text: &str) -> BTreeSet<String> {
    let start = text
        .find("packages=(")
        .expect(".ci/run has a packages=( list")
        + 10;
    let end = start + text[start..].find(')').expect("the list ends with )");
    text[start..end]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The packages of the README's `apt-get install` line (its continuation lines included).
fn readme_packages(text: &str) -> BTreeSet<String> {
    let start = text
        .find("apt-get install ")
        .expect("README has an apt-get install line");
    let mut out = BTreeSet::new();
    for line in text[start..].lines() {
        let body = line.trim_end_matches('\\');
        out.extend(
            body.split_whitespace()
                .filter(|w| !w.starts_with('-') && !["apt-get", "install"].contains(w))
                .map(str::to_string),
        );
        if !line.ends_with('\\') {
            break;
        }
    }
    out
}

/// A new user installs what the README says; CI installs what `.ci/run` says: the two
/// lists must be one, or the tests pass in CI and fail on a fresh machine.
#[test]
fn readme_installs_what_ci_installs() {
    let root = bins::workspace();
    let ci = ci_packages(&read(&root.join(".ci/run")));
    let readme = readme_packages(&read(&root.join("README.md")));
    let diff = differences(&ci, ".ci/run", &readme, "README's apt-get line");
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}
