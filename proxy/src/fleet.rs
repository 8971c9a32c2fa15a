//! The fleet's lease gate and drain barrier: what the data plane needs from etcd membership
//! (docs/fleet-plan.md §2.4, §3.4, §3.5) without knowing etcd.
//!
//! The instance's lease task moves the deadline; sessions compare it with the time they already
//! took for the batch (one relaxed load), and report the oldest table epoch they still have
//! requests in flight for, so that an instance acknowledges a slot-map revision only once
//! nothing routed with an older table can still reach a server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No deadline / nothing in flight.
pub(crate) const NONE: u64 = u64::MAX;
/// A session is routing a batch with a table it has not reported yet.
pub(crate) const ROUTING: u64 = 0;

/// The lease fence: past the deadline, slots in flux are held; past deadline + grace, every
/// keyed command is.
pub struct FleetGate {
    /// Nanoseconds since the proxy started; [`NONE`] = no deadline.
    deadline_ns: AtomicU64,
    grace_ns: AtomicU64,
}

impl FleetGate {
    pub(crate) fn new(grace: Duration) -> FleetGate {
        FleetGate { deadline_ns: AtomicU64::new(NONE), grace_ns: AtomicU64::new(nanos(grace)) }
    }

    pub(crate) fn set_grace(&self, grace: Duration) {
        self.grace_ns.store(nanos(grace), Ordering::Relaxed);
    }

    /// Sets the deadline (`None`: healthy, no deadline) relative to `origin`.
    pub(crate) fn set_deadline(&self, origin: Instant, deadline: Option<Instant>) {
        let ns = match deadline {
            None => NONE,
            Some(d) => nanos(d.saturating_duration_since(origin)),
        };
        self.deadline_ns.store(ns, Ordering::Relaxed);
    }

    /// 0 (healthy), 1 (past the deadline) or 2 (past deadline + grace) at `now`.
    #[inline]
    pub(crate) fn level(&self, origin: Instant, now: Instant) -> u8 {
        let d = self.deadline_ns.load(Ordering::Relaxed);
        if d == NONE {
            return 0;
        }
        let t = nanos(now.saturating_duration_since(origin));
        if t < d {
            0
        } else if t < d.saturating_add(self.grace_ns.load(Ordering::Relaxed)) {
            1
        } else {
            2
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NONE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        let origin = Instant::now();
        let g = FleetGate::new(Duration::from_secs(2));
        let at = |s: u64| origin + Duration::from_secs(s);
        assert_eq!(g.level(origin, at(100)), 0, "no deadline");
        g.set_deadline(origin, Some(at(10)));
        assert_eq!(g.level(origin, at(9)), 0);
        assert_eq!(g.level(origin, at(10)), 1);
        assert_eq!(g.level(origin, at(11)), 1);
        assert_eq!(g.level(origin, at(12)), 2);
        g.set_grace(Duration::from_secs(5));
        assert_eq!(g.level(origin, at(12)), 1);
        g.set_deadline(origin, None);
        assert_eq!(g.level(origin, at(100)), 0);
    }
}
