//! The server's cost while a run lasts: its resident memory and thread count, read from
//! `/proc/<pid>/status` every 50 ms and at the moments that matter, keeping the peak. Only
//! for a server on this machine whose pid the bench knows (it started it, or `--server-pid`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Samples the server's RSS and thread count every 50 ms and keeps the peak.
pub struct Monitor {
    pid: Option<u32>,
    peak_kib: Arc<AtomicU64>,
    peak_threads: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Monitor {
    pub fn start(pid: Option<u32>) -> Monitor {
        let monitor = Monitor {
            pid,
            peak_kib: Arc::default(),
            peak_threads: Arc::default(),
            stop: Arc::default(),
        };
        if let Some(pid) = pid {
            let (kib, threads, stop) = (
                monitor.peak_kib.clone(),
                monitor.peak_threads.clone(),
                monitor.stop.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    record(pid, &kib, &threads);
                    thread::sleep(Duration::from_millis(50));
                }
            });
        }
        monitor
    }

    /// Takes a sample now (at the moments that matter: all connected, all received).
    pub fn sample(&self) {
        if let Some(pid) = self.pid {
            record(pid, &self.peak_kib, &self.peak_threads);
        }
    }

    pub fn peak(&self) -> Option<(f64, u64)> {
        self.pid?;
        let kib = self.peak_kib.load(Ordering::Relaxed);
        Some((
            kib as f64 / 1024.0,
            self.peak_threads.load(Ordering::Relaxed),
        ))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn record(pid: u32, kib: &AtomicU64, threads: &AtomicU64) {
    if let Some((rss_mib, count)) = process_usage(pid) {
        kib.fetch_max((rss_mib * 1024.0) as u64, Ordering::Relaxed);
        threads.fetch_max(count, Ordering::Relaxed);
    }
}

/// The server's resident memory (MiB) and thread count, from /proc, if it runs here.
fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")? as f64 / 1024.0, field("Threads:")?))
}
