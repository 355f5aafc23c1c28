//! A bounded pool of client threads: `count` jobs on `threads` threads, each thread taking
//! the next job until none is left. Every job bounds its own time (socket timeouts and
//! deadlines); the pool only counts, so a test reads what failed and how many ran at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What a pool's run found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per failed job, as the job said it.
    pub failures: Vec<String>,
    /// The most jobs that were running at the same time.
    pub peak: usize,
}

/// Run `job(i)` for every `i` in `0..count` on `threads` threads. A job returns `None`
/// when it succeeded, else what went wrong; a job that panics counts as a failure.
pub fn run<F>(count: usize, threads: usize, job: F) -> Report
where
    F: Fn(usize) -> Option<String> + Sync,
{
    let next = AtomicUsize::new(0);
    let active = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(i)));
                active.fetch_sub(1, Ordering::SeqCst);
                let fail = match r {
                    Ok(f) => f,
                    Err(_) => Some(format!("job {i} panicked")),
                };
                if let Some(f) = fail {
                    failures.lock().unwrap_or_else(|p| p.into_inner()).push(f);
                }
            });
        }
    });
    Report {
        failures: failures.into_inner().unwrap_or_else(|p| p.into_inner()),
        peak: peak.load(Ordering::SeqCst),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_job_runs_once_and_failures_are_kept() {
        let seen = std::sync::Mutex::new(vec![0u8; 100]);
        let r = super::run(100, 4, |i| {
            seen.lock().expect("lock")[i] += 1;
            (i % 10 == 3).then(|| format!("job {i}"))
        });
        assert!(seen.lock().expect("lock").iter().all(|&n| n == 1));
        assert_eq!(r.failures.len(), 10);
        assert!(r.peak >= 1 && r.peak <= 4);
        let r = super::run(3, 2, |i| if i == 1 { panic!("boom") } else { None });
        assert_eq!(r.failures, vec!["job 1 panicked".to_string()]);
    }
}
