//! Latencies, kept in a small histogram: a run measures millions of them, on many threads,
//! and reports three quantiles.

use std::time::Duration;

/// A latency histogram with about 3% precision over nanoseconds to hours, in 1 KiB: each
/// power of two is split into 32 buckets. Receivers keep one each, merged at the end, so
/// millions of samples cost no memory and no lock.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

const SUB: u64 = 32;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; (64 * SUB) as usize],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, sample: Duration) {
        let nanos = sample.as_nanos().min(u64::MAX as u128) as u64;
        self.buckets[bucket(nanos)] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// The latency below which `q` (0 to 1) of the samples fall: the bucket's upper edge.
    pub fn quantile(&self, q: f64) -> Duration {
        let wanted = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return Duration::from_nanos(upper_edge(index).min(self.max));
            }
        }
        self.max()
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }
}

fn bucket(nanos: u64) -> usize {
    if nanos < SUB {
        return nanos as usize;
    }
    let power = 63 - nanos.leading_zeros() as u64; // nanos in [2^power, 2^(power+1))
    let within = (nanos >> (power - 5)) & (SUB - 1);
    ((power - 4) * SUB + within) as usize
}

fn upper_edge(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let power = index / SUB + 4;
    let within = index % SUB;
    ((SUB + within + 1) << (power - 5)) - 1
}

/// Formats a duration in milliseconds with enough digits for loopback latencies.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_few_percent() {
        let mut h = Histogram::default();
        for micros in 1..=1000u64 {
            h.record(Duration::from_micros(micros));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.04, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.04, "p99 {p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert_eq!(h.count, 1000);
        for nanos in [0, 1, 31, 32, 33, 1 << 20, u64::MAX / 2] {
            assert!(upper_edge(bucket(nanos)) >= nanos);
        }
    }
}
