//! Process-wide counters of the data plane. Sessions add to them once per batch, not per command,
//! so the hot path pays a few relaxed atomic adds per read.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for INFO, metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients_current: AtomicU64,
    /// Clients accepted since start.
    pub clients_total: AtomicU64,
    /// Clients refused because of `max_clients`.
    pub clients_rejected: AtomicU64,
    /// Commands received.
    pub commands: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Malformed requests (client disconnected).
    pub errors_protocol: AtomicU64,
    /// Multi-key commands refused because keys span groups.
    pub errors_crossslot: AtomicU64,
    /// Commands refused as unsupported or unknown.
    pub errors_unsupported: AtomicU64,
    /// Replies that were a backend failure (unreachable, lost).
    pub errors_backend: AtomicU64,
    /// Replies that were a backend timeout.
    pub errors_timeout: AtomicU64,
}

impl Stats {
    /// Adds `n` to `counter`.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
