//! stls: the six programs in one binary, which runs the one the last component of its
//! `argv[0]` names. `make install` installs it once and gives it the six names (hard links),
//! so that they share one copy of OpenSSL and of the engine. Each program is its crate's
//! own `main` (`tlsd::programs`, `tlsc::programs`), the same code as its binary alone:
//! its messages, `--help` and `--version` are its own. `stls NAME ARGS...` runs NAME
//! with ARGS, as if called by that name.

#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use stls::exit::{self, Error};
use stls::log;

/// Each name and the program it runs.
const PROGRAMS: [(&str, fn() -> !); 6] = [
    ("tlsd", tlsd::programs::tlsd::main),
    ("tlsserver", tlsd::programs::tlsserver::main),
    ("ucspitlsd", tlsd::programs::ucspitlsd::main),
    ("tlsc", tlsc::programs::tlsc::main),
    ("tlsclient", tlsc::programs::tlsclient::main),
    ("ucspitlsc", tlsc::programs::ucspitlsc::main),
];

/// The program `name` (a path's last component) names.
fn program(name: &OsStr) -> Option<(&'static str, fn() -> !)> {
    let b = name.as_bytes();
    let base = b.rsplit(|&c| c == b'/').next().unwrap_or(b);
    PROGRAMS.iter().find(|(n, _)| n.as_bytes() == base).copied()
}

fn main() {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    if let Some((_, main)) = program(&arg0) {
        main()
    }
    let names = PROGRAMS.map(|(n, _)| n).join(", ");
    let called = arg0.to_string_lossy().into_owned();
    let first = args.next();
    let Some((name, _)) = first.as_deref().and_then(program) else {
        log::exit_with(
            "stls",
            Err(Error::usage(format!(
                "called as '{called}', which names no program of stls: run it by one of \
                 the names {names} (a link to it), or as 'stls NAME [ARGS...]'"
            ))),
        )
    };
    // Each program reads its own command line from the process: the simplest way to give
    // it one that starts with its name is to run this binary again by that name.
    let err = match std::env::current_exe() {
        Ok(me) => std::process::Command::new(me).arg0(name).args(args).exec(),
        Err(e) => e,
    };
    log::exit_with(
        "stls",
        Err(Error::new(
            exit::SYSTEM,
            format!("cannot run this binary again as {name}: {err}"),
        )),
    )
}
