//! Per-group cumulative traffic for the admin dashboard: the same sources as the
//! `keyhop_backend_*` metric families, summed over each group's master and replicas, as numbers
//! instead of Prometheus text. Read only when someone asks; the hot path is unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::backend::Pool;
use crate::metrics::HistogramSnapshot;
use crate::{Proxy, Stats};

/// One group's cumulative backend traffic since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// The group's name.
    pub name: String,
    /// Request batches sent to the group's servers.
    pub requests: u64,
    /// Request batches that failed at the group's servers.
    pub errors: u64,
    /// Backend request latency, merged over the group's servers.
    pub latency: HistogramSnapshot,
    /// Dedicated connections in use now (transactions, pub/sub, blocking).
    pub pinned: u64,
}

impl Proxy {
    /// Cumulative traffic per group of the current table, in table order.
    pub fn group_stats(&self) -> Vec<GroupStats> {
        let shared = &self.shared;
        let table = shared.table.load_full();
        let pools: HashMap<String, Arc<Pool>> =
            shared.backends.pools().into_iter().map(|p| (p.addr.to_string(), p)).collect();
        let pinned = shared.pinned.in_use();
        table
            .groups
            .iter()
            .map(|g| {
                let mut s = GroupStats { name: g.name.clone(), ..GroupStats::default() };
                let addrs = std::iter::once(&g.master).chain(g.replicas.iter().map(|r| &r.addr));
                for addr in addrs {
                    let Some(p) = pools.get(addr.as_str()) else { continue };
                    s.requests += p.state.requests.load(Ordering::Relaxed);
                    s.errors += p.state.errors.load(Ordering::Relaxed);
                    s.latency.merge(&p.state.latency.snapshot());
                }
                s.pinned = pinned
                    .iter()
                    .filter(|(n, _, _)| **n == *g.name)
                    .map(|(_, _, n)| u64::try_from(*n).unwrap_or(0))
                    .sum();
                s
            })
            .collect()
    }

    /// Clients connected now.
    pub fn clients_connected(&self) -> u64 {
        Stats::get(&self.shared.stats.clients_current)
    }
}
