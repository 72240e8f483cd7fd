//! The table every run prints, one row per run. Its columns and widths are fixed: the rows in
//! docs/BENCHMARKS.md were printed by it, and a new run is only comparable with them when it
//! reads the same.

use crate::stats::{ms, Histogram};

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
