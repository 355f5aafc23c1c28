//! One line, one write: many processes logging at once to one pipe (a logger such as
//! s6-log or svlogd reads one) never mix their lines. The writers are this test binary
//! run again, each process writing through `stls::log`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use stls::log::Log;

const PROCESSES: usize = 8;
const LINES: usize = 3000;
const CHILD: &str = "STLS_LOG_TEST_CHILD";

/// A writer, run by [`lines_of_concurrent_processes_never_mix`]; does nothing by hand.
#[test]
#[ignore = "run by lines_of_concurrent_processes_never_mix"]
fn write_many_lines() {
    let Ok(n) = std::env::var(CHILD) else {
        return;
    };
    let log = Log {
        name: "tlsserver",
        verbosity: 2,
    };
    let filler = "x".repeat(60);
    for i in 0..LINES {
        match i % 3 {
            0 => log.info(&format!("writer {n} line {i} {filler}")),
            1 => log.warn(&format!("writer {n} line {i} {filler}")),
            _ => log.fatal(&stls::exit::Error::usage(format!(
                "writer {n} line {i} {filler}"
            ))),
        }
    }
}

#[test]
fn lines_of_concurrent_processes_never_mix() {
    let (r, w) = stls::fd::pipe().expect("pipe");
    // SAFETY: both fds were just made by pipe() and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(r), OwnedFd::from_raw_fd(w)) };
    let exe = std::env::current_exe().expect("the test binary's path");
    let children: Vec<_> = (0..PROCESSES)
        .map(|n| {
            Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "write_many_lines",
                    "--test-threads=1",
                ])
                .env(CHILD, n.to_string())
                .stdout(Stdio::null())
                .stderr(w.try_clone().expect("dup the pipe"))
                .spawn()
                .expect("spawn a writer")
        })
        .collect();
    drop(w);
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut all).expect("read the pipe");
    for mut c in children {
        assert!(c.wait().expect("wait").success());
    }
    let text = String::from_utf8_lossy(&all);
    let filler = "x".repeat(60);
    let mut seen = vec![0usize; PROCESSES];
    let mut mixed = Vec::new();
    for line in text.lines() {
        let ok = ["info", "warning", "fatal"].iter().find_map(|word| {
            let rest = line.strip_prefix(&format!("tlsserver: {word}: writer "))?;
            let (n, rest) = rest.split_once(" line ")?;
            let (_, tail) = rest.split_once(' ')?;
            (tail == filler).then_some(n.parse::<usize>().ok()?)
        });
        match ok {
            Some(n) if n < PROCESSES => seen[n] += 1,
            _ => mixed.push(line.to_string()),
        }
    }
    assert!(
        mixed.is_empty(),
        "{} mixed lines, e.g. {:?}",
        mixed.len(),
        &mixed[..mixed.len().min(3)]
    );
    assert_eq!(seen, vec![LINES; PROCESSES]);
}
