//! The benchmark harness does not rot: `bench/run --smoke` runs one short
//! iteration of every figure against every peer and must end 0 with the table printed.
//! Nothing is timed here: the figures themselves are not checked, only that each was
//! produced. Exit 77 means a peer is missing: a visible skip, or a failure under CI=true.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stls_tests::bins;

/// Generous: the smoke run takes 10-20 s on an idle 2-core machine.
const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn bench_smoke_run() {
    let run = bins::workspace().join("bench").join("run");
    assert!(run.is_file(), "{} is missing", run.display());
    if !bins::require("python3") {
        return;
    }
    let bin_dir = bins::tlsd()
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let _ = bins::tlsc();
    let mut child = Command::new("python3")
        .arg(&run)
        .arg("--smoke")
        .arg("--bin")
        .arg(&bin_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bench/run");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for bench/run") {
            break st;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bench/run --smoke took more than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().expect("stdout reader");
    let stderr = ereader.join().expect("stderr reader");
    match status.code() {
        Some(0) => {}
        Some(77) => {
            let why = stderr
                .lines()
                .filter(|l| l.contains("skipped") || l.contains("not installed"))
                .collect::<Vec<_>>()
                .join("; ");
            bins::skip(&format!("bench/run --smoke: a peer is missing: {why}"));
            return;
        }
        other => panic!("bench/run --smoke ended {other:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
    }
    // The table and the verdicts were printed, with tlsd's figures filled in.
    assert!(stdout.contains("| target |"), "no targets table:\n{stdout}");
    for label in [
        "server CPU per handshake",
        "64-byte round trip",
        "memory per idle connection",
        "client CPU per GiB",
        "tlsc start",
        "session resumption",
    ] {
        assert!(stdout.contains(label), "no {label} row:\n{stdout}");
    }
    let rtt = stdout
        .lines()
        .find(|l| l.starts_with("| 64-byte round trip"))
        .expect("round trip row");
    // "61.43 (0.57×)": the figure, then its ratio to stunnel-inetd.
    let tlsd_cell = rtt.split('|').nth(2).expect("tlsd column").trim();
    let figure = tlsd_cell.split_whitespace().next().unwrap_or("");
    assert!(
        figure.parse::<f64>().map(|v| v > 0.0).unwrap_or(false),
        "tlsd's round trip is not a number: {rtt}"
    );
}
