//! The interface as documented against the interface as built: for every program, the
//! option table, `--help` and the manual page agree on each option's names, value name
//! and default, and the variables' table, `--help` and the page on the variables the
//! program reads, removes from prog's environment unless `-Z` (stls(7) too) and sets for
//! prog, in both directions; the exit codes of `--help` (generated from
//! the exit codes' table) are those of the page, of stls(7) and of the README; the README's
//! package list is the one CI installs.

use std::collections::{BTreeMap, BTreeSet};
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

/// The program's description in its crate: its groups say its options and variables.
fn command(prog: &str) -> stls::options::Command {
    match prog {
        "tlsd" => tlsd::TLSD,
        "tlsserver" => tlsd::TLSSERVER,
        "ucspitlsd" => tlsd::UCSPITLSD,
        "tlsc" => tlsc::TLSC,
        "tlsclient" => tlsc::TLSCLIENT,
        "ucspitlsc" => tlsc::UCSPITLSC,
        p => panic!("no command for {p}"),
    }
}

/// The table's options of `cmd`, in the readers' terms.
fn table_options(cmd: &stls::options::Command) -> BTreeMap<String, options::OptionDoc> {
    use stls::options::Initially;
    cmd.options()
        .map(|o| {
            let doc = options::OptionDoc {
                short: o.short.map(|c| format!("-{c}")),
                value: o.arg.map(str::to_ascii_lowercase),
                default: match o.default {
                    Initially::Unsaid => String::new(),
                    Initially::Set => "default".into(),
                    Initially::Value(v) | Initially::Words(v) => v.into(),
                },
            };
            (format!("--{}", o.long), doc)
        })
        .collect()
}

/// Where two readings of the same options differ: an option in one only, or its forms,
/// value name or default.
fn option_differences(
    a: &BTreeMap<String, options::OptionDoc>,
    a_name: &str,
    b: &BTreeMap<String, options::OptionDoc>,
    b_name: &str,
) -> Vec<String> {
    let keys = |m: &BTreeMap<String, options::OptionDoc>| m.keys().cloned().collect();
    let mut out = differences(&keys(a), a_name, &keys(b), b_name);
    for (k, x) in a {
        if let Some(y) = b.get(k) {
            if x != y {
                out.push(format!("{k}: {a_name} says {x:?}, {b_name} says {y:?}"));
            }
        }
    }
    out
}

fn names(vars: impl Iterator<Item = &'static stls::variables::Var>) -> BTreeSet<String> {
    vars.map(|v| v.name.to_string()).collect()
}

/// Every option of every program: its names, its value's name and its default are the
/// same in the option table, in `--help` and in the manual page.
#[test]
fn table_help_and_man_page_agree_on_every_option() {
    let mut wrong = Vec::new();
    for (prog, page) in PROGRAMS {
        let table = table_options(&command(prog));
        let h = options::help_option_docs(&help(prog));
        let path = options::man_page(page);
        let m = options::man_option_docs(&read(&path));
        assert!(m.len() >= 10, "{}: only {m:?} found", path.display());
        let (t_name, h_name) = (format!("{prog}'s table"), format!("{prog} --help"));
        wrong.extend(option_differences(&table, &t_name, &h, &h_name));
        wrong.extend(option_differences(
            &table,
            &t_name,
            &m,
            &path.display().to_string(),
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every program's variables: those it reads, those removed from prog's environment
/// unless `-Z` (the page's `-Z` paragraph names each one) and those it sets for prog are
/// the same in the variables' table, in `--help` and in the page's ENVIRONMENT; stls(7)
/// names the same removed ones.
#[test]
fn table_help_and_man_page_agree_on_every_variable() {
    use stls::variables;
    let secrets = names(variables::secrets());
    let mut wrong = Vec::new();
    for (prog, page) in PROGRAMS {
        let groups = command(prog).groups;
        let h = help(prog);
        let path = options::man_page(page);
        let src = read(&path);
        let shown = path.display().to_string();
        let lists = [
            (
                "read",
                names(variables::read_by(groups)),
                options::help_list(&h, stls::help::READ),
                options::man_variables(&src, "Read"),
            ),
            (
                "removed unless -Z",
                secrets.clone(),
                options::help_list(&h, stls::help::REMOVED),
                options::man_keep_list(&src),
            ),
            (
                "set for prog",
                names(variables::given_by(groups)),
                options::help_list(&h, stls::help::GIVEN),
                options::man_variables(&src, "Exported to prog"),
            ),
        ];
        for (what, table, in_help, in_page) in lists {
            assert!(!table.is_empty(), "{prog}: no variable {what} in the table");
            let t = format!("{prog}'s table ({what})");
            wrong.extend(differences(
                &table,
                &t,
                &in_help,
                &format!("{prog} --help ({what})"),
            ));
            wrong.extend(differences(
                &table,
                &t,
                &in_page,
                &format!("{shown} ({what})"),
            ));
        }
    }
    let stls7 = bins::workspace().join("man/stls.7");
    let removed = options::stls7_removed(&read(&stls7));
    wrong.extend(differences(
        &secrets,
        "the table (removed unless -Z)",
        &removed,
        "stls(7) (removed unless -Z)",
    ));
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

/// The packages of `tests/packages.txt` (the first word of each line, comments aside).
fn listed_packages(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split('#').next()?.split_whitespace().next())
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

/// A new user installs what the README says; CI and `make test` install
/// `tests/packages.txt` through `tests/install-peers`: the lists must be one, or the tests
/// pass in CI and are skipped on a fresh machine.
#[test]
fn readme_installs_what_ci_installs() {
    let root = bins::workspace();
    let listed = listed_packages(&read(&root.join("tests/packages.txt")));
    assert!(listed.len() >= 30, "tests/packages.txt: only {listed:?}");
    let readme = readme_packages(&read(&root.join("README.md")));
    let diff = differences(
        &listed,
        "tests/packages.txt",
        &readme,
        "README's apt-get line",
    );
    assert!(diff.is_empty(), "{}", diff.join("\n"));
    let ci = read(&root.join(".ci/run"));
    assert!(
        ci.lines().any(|l| l.trim() == "tests/install-peers --ci"),
        ".ci/run does not install through tests/install-peers --ci"
    );
    assert!(
        !ci.contains("apt-get install"),
        ".ci/run has a package list of its own"
    );
    let make = read(&root.join("Makefile"));
    assert!(
        make.contains("\ttests/install-peers\n"),
        "make test does not run tests/install-peers"
    );
    let o = proc::run(
        Command::new(root.join("tests/install-peers")).arg("--list"),
        None,
        WAIT,
    );
    assert_eq!(o.code(), 0, "install-peers --list: {}", o.stderr_str());
    let printed: BTreeSet<String> = o.stdout_str().lines().map(str::to_string).collect();
    assert_eq!(printed, listed, "install-peers --list");
}

/// Called by [`a_skip_is_seen_and_counted`] in a process of its own; does nothing when
/// run by hand.
#[test]
#[ignore = "run by a_skip_is_seen_and_counted"]
fn skipping_for_haproxy() {
    if std::env::var_os("STLS_SKIP_SELF_TEST").is_some() {
        assert!(!bins::skip("haproxy not installed"));
    }
}

/// A skipped test passes, and libtest shows nothing a passing test printed with
/// `eprintln!`: the skip must reach the real stderr, with the package that would run it,
/// and the file `make test` summarises.
#[test]
fn a_skip_is_seen_and_counted() {
    let log = stls_tests::scratch("skip-log").join("skips.txt");
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut c = Command::new(exe);
    c.args(["--ignored", "--exact", "skipping_for_haproxy"])
        .env("STLS_SKIP_SELF_TEST", "1")
        .env(bins::SKIP_LOG, &log)
        // Under CI=true a skip is a failure by design: the child runs as a user's would.
        .env_remove("CI");
    let o = proc::run(&mut c, None, WAIT);
    assert_eq!(o.code(), 0, "{}{}", o.stdout_str(), o.stderr_str());
    assert!(o.stdout_str().contains("1 passed"), "{}", o.stdout_str());
    let seen = format!("{}{}", o.stdout_str(), o.stderr_str());
    assert!(
        seen.contains(
            "SKIP: docs::skipping_for_haproxy: haproxy not installed (apt-get install haproxy)"
        ),
        "{seen}"
    );
    assert_eq!(
        read(&log),
        "docs::skipping_for_haproxy\thaproxy not installed\thaproxy\n"
    );
    assert_eq!(
        bins::packages_named("unshare not installed (util-linux)"),
        ["util-linux"]
    );
    assert_eq!(
        bins::packages_named("python3-aiohttp not installed"),
        ["python3-aiohttp"]
    );
}

/// The README's layout names every file and directory at the top of the tree, and
/// nothing that is not there (what `.gitignore` lists, such as `target/`, aside).
#[test]
fn readme_layout_is_the_tree() {
    let root = bins::workspace();
    let readme = read(&root.join("README.md"));
    let start = readme.find("## Layout\n").expect("README has ## Layout");
    let body = &readme[start..];
    let open = body.find("```\n").expect("a block under ## Layout") + 4;
    let close = open + body[open..].find("```").expect("the block ends");
    let listed: BTreeSet<String> = body[open..close]
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.trim_end_matches('/').to_string())
        .collect();
    let ignored: Vec<String> = read(&root.join(".gitignore"))
        .lines()
        .map(|l| l.trim().trim_matches('/').to_string())
        .collect();
    let entries = std::fs::read_dir(&root).expect("the workspace directory");
    let on_disk: BTreeSet<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".git" && n != ".gitignore" && !ignored.contains(n))
        .collect();
    let diff = differences(&on_disk, "the tree", &listed, "README's layout");
    assert!(diff.is_empty(), "{}", diff.join("\n"));
}
