//! `natchat bench`: a load generator for both servers, in one process.
//!
//! - `bench room`: room users, some sending, as fast as possible or at a set rate;
//! - `bench p2p`: P2P clients registering at a steady pace; the cost of one join;
//! - `bench chat`: two real `natchat client` processes chatting over loopback;
//! - `bench all`: the standard set (`make bench`), each run against a fresh server that the
//!   bench starts itself, printed as one table; `bench scale` (`make bench-scale`): the same
//!   for 10,000 clients.
//!
//! Each run reports clients, senders, messages, intact deliveries per second, one-way latency
//! (p50, p99, max), lost and corrupted messages, and the server's peak RSS and thread count
//! (read from /proc when the server runs on this machine: give its pid with `--server-pid`).

mod chat;
mod p2p;
mod room;
mod stats;
mod suite;

pub use chat::ChatRun;
pub use p2p::P2pRun;
pub use room::RoomRun;
pub use suite::run as all;

/// `bench room`: one run against a running room server; prints the table.
pub fn room(server: SocketAddr, run: &RoomRun, server_pid: Option<u32>) -> Result<(), String> {
    ensure_limits(run.clients)?;
    let report = room::run(server, run, &Monitor::start(server_pid))?;
    crate::say!("{}\n{}", header(), report.row());
    Ok(())
}

/// `bench p2p`: registration against a running server; prints the table and the join cost.
pub fn p2p(server: SocketAddr, run: &P2pRun, server_pid: Option<u32>) -> Result<(), String> {
    ensure_limits(run.clients)?;
    let result = p2p::run(server, run, &Monitor::start(server_pid))?;
    crate::say!("{}\n{}", header(), result.report.row());
    crate::say!(
        "one more join: {} bytes sent by the server, heard by {} of {} clients",
        result.bytes_per_join,
        result.heard,
        run.clients
    );
    Ok(())
}

/// `bench chat`: two client processes against a running server; prints the table.
pub fn chat(server: SocketAddr, run: &ChatRun, server_pid: Option<u32>) -> Result<(), String> {
    let report = chat::run(server, run, &Monitor::start(server_pid))?;
    crate::say!("{}\n{}", header(), report.row());
    Ok(())
}

use crate::listener::{MAPPINGS_PER_THREAD, THREADS_PER_CONNECTION};
use stats::{ms, process_usage, Histogram};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// One row of the table.
pub struct Report {
    pub name: String,
    pub clients: usize,
    pub senders: usize,
    pub messages: u64,
    pub deliveries_per_sec: f64,
    pub latency: Histogram,
    pub lost: u64,
    pub corrupted: u64,
    /// Peak server RSS in MiB and thread count, when the server's pid is known.
    pub usage: Option<(f64, u64)>,
}

/// The table's header.
pub fn header() -> String {
    format!(
        "{:<26} {:>7} {:>7} {:>9} {:>13} {:>8} {:>8} {:>8} {:>6} {:>7} {:>9} {:>8}",
        "run",
        "clients",
        "senders",
        "messages",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "lost",
        "corrupt",
        "RSS MiB",
        "threads"
    )
}

impl Report {
    pub fn row(&self) -> String {
        let (rss, threads) = match self.usage {
            Some((rss, threads)) => (format!("{rss:.1}"), threads.to_string()),
            None => ("-".into(), "-".into()),
        };
        format!(
            "{:<26} {:>7} {:>7} {:>9} {:>13.0} {:>8} {:>8} {:>8} {:>6} {:>7} {:>9} {:>8}",
            self.name,
            self.clients,
            self.senders,
            self.messages,
            self.deliveries_per_sec,
            ms(self.latency.quantile(0.50)),
            ms(self.latency.quantile(0.99)),
            ms(self.latency.max()),
            self.lost,
            self.corrupted,
            rss,
            threads
        )
    }
}

/// A process the bench started, killed when dropped, whatever happened.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Nanoseconds since the bench started: senders stamp messages with it, receivers in the same
/// process subtract, and so measure one-way latency on one clock.
pub fn epoch_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Connections opened per second: steady, so that the kernel's accept queue (4096 here) is
/// never what a run measures.
const CONNECT_RATE: f64 = 2000.0;

/// Runs `each(0..count)` at a steady pace of [`CONNECT_RATE`] a second (or slower, when
/// `each` takes longer).
pub fn paced(
    count: usize,
    mut each: impl FnMut(usize) -> Result<(), String>,
) -> Result<(), String> {
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / CONNECT_RATE);
    for i in 0..count {
        if let Some(wait) = (start + gap * i as u32).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        each(i)?;
    }
    Ok(())
}

/// Opens `count` connections at a steady pace, handing each to `setup`.
pub fn connect_paced<T>(
    server: SocketAddr,
    count: usize,
    mut setup: impl FnMut(TcpStream) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(count);
    paced(count, |i| {
        let stream = TcpStream::connect(server)
            .map_err(|e| format!("connection {} of {count} to {server} failed: {e}", i + 1))?;
        let _ = stream.set_nodelay(true);
        out.push(setup(stream)?);
        Ok(())
    })?;
    Ok(out)
}

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

/// The server takes two threads per client and the bench one, and each server thread about
/// four memory mappings (the counts `listener::cap` uses): `kernel.pid_max` and
/// `vm.max_map_count` must allow that. When they do not and we are root, raise them (and
/// say so); otherwise explain.
pub fn ensure_limits(clients: usize) -> Result<(), String> {
    /// Room for everything else: the other processes' threads, the programs' own mappings.
    const SLACK: usize = 5000;
    let server_threads = clients * THREADS_PER_CONNECTION;
    let limits = [
        (
            "kernel.pid_max",
            "/proc/sys/kernel/pid_max",
            server_threads + clients + SLACK,
            4_194_304,
        ),
        (
            "vm.max_map_count",
            "/proc/sys/vm/max_map_count",
            server_threads * MAPPINGS_PER_THREAD + SLACK,
            262_144,
        ),
    ];
    for (name, path, needed, raised) in limits {
        let current: usize = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(usize::MAX);
        if current >= needed {
            continue;
        }
        std::fs::write(path, raised.to_string()).map_err(|e| {
            format!(
                "{clients} clients need {name} of at least {needed}, but it is {current} and cannot be raised ({e}); run as root or with fewer clients"
            )
        })?;
        eprintln!("raised {name} from {current} to {raised} for {clients} clients");
    }
    Ok(())
}
