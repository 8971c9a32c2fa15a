//! Process-wide counters of the data plane. Sessions add to them once per batch, not per command,
//! and each counter is split in per-thread shards on their own cache lines: two worker threads
//! adding to one shared atomic cost ~140 ns per add (shared/rust-notes.md), a private one ~1 ns.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{SHARDS, shard};

#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// A counter (or gauge) summed over per-thread shards.
#[derive(Debug, Default)]
pub struct Counter {
    shards: [Padded; SHARDS],
}

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` (for gauges; the sum stays right even when shards wrap).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.shards[shard()].0.fetch_sub(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.shards.iter().fold(0u64, |acc, s| acc.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

/// Counters for INFO, metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients_current: Counter,
    /// Clients accepted since start.
    pub clients_total: Counter,
    /// Clients refused because of `max_clients`.
    pub clients_rejected: Counter,
    /// Commands received.
    pub commands: Counter,
    /// Bytes read from clients.
    pub bytes_in: Counter,
    /// Bytes written to clients.
    pub bytes_out: Counter,
    /// Malformed requests (client disconnected).
    pub errors_protocol: Counter,
    /// Multi-key commands refused because keys span groups.
    pub errors_crossslot: Counter,
    /// Commands refused as unsupported or unknown.
    pub errors_unsupported: Counter,
    /// Replies that were a backend failure (unreachable, lost).
    pub errors_backend: Counter,
    /// Replies that were a backend timeout.
    pub errors_timeout: Counter,
    /// Clients disconnected for passing `client_output_limit` or `pubsub_output_limit`.
    pub output_limit_disconnects: Counter,
    /// Commands on migrating slots whose MIGRATE moved their keys.
    pub migration_moved: Counter,
    /// Keys in the `MIGRATE`s of commands on migrating slots that answered `OK`.
    pub migration_keys: Counter,
    /// Commands on migrating slots whose keys were already gone from the source (`NOKEY`).
    pub migration_nokey: Counter,
    /// Keys found on both groups during a migration (the target's copy kept).
    pub migration_busykey: Counter,
    /// Commands on slots in flux answered `-TRYAGAIN`.
    pub migration_tryagain: Counter,
}

impl Stats {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &Counter, n: u64) {
        if n > 0 {
            counter.add(n);
        }
    }

    /// Reads `counter`.
    pub fn get(counter: &Counter) -> u64 {
        counter.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_threads_and_gauges_go_down() {
        let c = Counter::default();
        c.add(3);
        std::thread::scope(|s| {
            s.spawn(|| c.sub(1));
            s.spawn(|| c.add(5));
        });
        assert_eq!(c.get(), 7);
    }
}
