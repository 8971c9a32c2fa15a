//! Hot-path metrics: per-command call counts and client-observed latency histograms, and backend
//! latency histograms, kept in relaxed atomics sharded by worker thread so two threads never
//! fight over one cache line; rendered in Prometheus text format when scraped.

use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Histogram bucket upper bounds in microseconds: 50 us .. 1 s.
pub const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Shards per histogram set or counter; threads beyond this share shards.
pub(crate) const SHARDS: usize = 8;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard index.
#[inline]
pub(crate) fn shard() -> usize {
    SHARD.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
        s.set(v);
        v
    })
}

/// A latency histogram: counts per bucket, plus total count and sum (microseconds).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records `n` observations of `d`.
    #[inline]
    pub fn record(&self, d: Duration, n: u64) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_us.fetch_add(us.saturating_mul(n), Ordering::Relaxed);
    }

    fn add_into(&self, acc: &mut HistogramSnapshot) {
        for (a, b) in acc.buckets.iter_mut().zip(self.buckets.iter()) {
            *a += b.load(Ordering::Relaxed);
        }
        acc.count += self.count.load(Ordering::Relaxed);
        acc.sum_us += self.sum_us.load(Ordering::Relaxed);
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::default();
        self.add_into(&mut s);
        s
    }
}

/// Values of a histogram at one moment (buckets not cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Count per bucket of [`BUCKETS_US`] (observations above 1 s are only in `count`).
    pub buckets: [u64; BUCKETS_US.len()],
    /// Observations.
    pub count: u64,
    /// Sum of observations in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Adds another snapshot.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
    }

    /// Appends this histogram in Prometheus text format (`name_bucket`, `_sum`, `_count`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BUCKETS_US.iter().zip(self.buckets.iter()) {
            cumulative += n;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug)]
struct CommandShard {
    calls: Box<[AtomicU64]>,
    latency: Box<[Histogram]>,
}

/// Per-command counters, indexed by [`keyhop_router::command::index_of`].
#[derive(Debug)]
pub struct CommandMetrics {
    shards: Box<[CommandShard]>,
}

impl CommandMetrics {
    /// Counters for `commands` commands (plus one slot for "unknown").
    pub fn new(commands: usize) -> CommandMetrics {
        let n = commands + 1;
        let shards = (0..SHARDS)
            .map(|_| CommandShard {
                calls: (0..n).map(|_| AtomicU64::new(0)).collect(),
                latency: (0..n).map(|_| Histogram::default()).collect(),
            })
            .collect();
        CommandMetrics { shards }
    }

    /// The slot used for commands that are not in the table.
    pub fn unknown(&self) -> usize {
        self.shards[0].calls.len() - 1
    }

    /// Counts a call and its client-observed latency.
    #[inline]
    pub fn record(&self, cmd: usize, latency: Duration) {
        let s = &self.shards[shard()];
        let cmd = cmd.min(s.calls.len() - 1);
        s.calls[cmd].fetch_add(1, Ordering::Relaxed);
        s.latency[cmd].record(latency, 1);
    }

    /// Calls and merged latency of command `cmd` (0 calls: `None`).
    pub fn get(&self, cmd: usize) -> Option<(u64, HistogramSnapshot)> {
        let mut calls = 0;
        let mut h = HistogramSnapshot::default();
        for s in self.shards.iter() {
            calls += s.calls.get(cmd)?.load(Ordering::Relaxed);
            s.latency.get(cmd)?.add_into(&mut h);
        }
        (calls > 0).then_some((calls, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_render() {
        let h = Histogram::default();
        h.record(Duration::from_micros(40), 2);
        h.record(Duration::from_micros(700), 1);
        h.record(Duration::from_secs(3), 1);
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets[0], 2);
        assert_eq!(s.buckets[4], 1);
        let mut out = String::new();
        s.render(&mut out, "x_seconds", "command=\"get\"");
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"0.00005\"} 2\n"));
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"0.001\"} 3\n"));
        assert!(out.contains("x_seconds_bucket{command=\"get\",le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_seconds_count{command=\"get\"} 4\n"));
    }

    #[test]
    fn commands_merge_shards() {
        let m = CommandMetrics::new(3);
        m.record(1, Duration::from_micros(10));
        std::thread::scope(|s| {
            s.spawn(|| m.record(1, Duration::from_micros(10)));
        });
        let (calls, h) = m.get(1).expect("recorded");
        assert_eq!(calls, 2);
        assert_eq!(h.count, 2);
        assert_eq!(m.get(0), None);
        m.record(99, Duration::ZERO);
        assert_eq!(m.get(m.unknown()).map(|c| c.0), Some(1));
    }
}
