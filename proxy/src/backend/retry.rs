//! When a backend connection slot tries to connect again after a failure.
//!
//! Two needs pull apart: a server that stays down must cost clients only fast errors, not a
//! connect storm, and a server that comes back must be used again at once, not after a backoff
//! that grew while it was down. So a background probe backs off (100 ms doubling to 2 s) and
//! keeps `failing` current when nobody asks; requests that arrive in between fail fast, except
//! that demand itself may try again once per [`DEMAND_RETRY`], and only after a failure that
//! was quick to find out (a refused connect costs microseconds; a connect that timed out would
//! make every request wait for the next timeout, so there demand waits ten times as long as the
//! failed attempt took).
//!
//! A server that accepts the TCP connection but does not answer its set-up (a frozen or
//! overloaded process, e.g. SIGSTOP) is the exception: it is probed again at once, so an attempt
//! is already waiting in its accept queue when it wakes up and requests succeed again within
//! milliseconds, instead of after a backoff that grew while it was frozen (1.6 s after a 10 s
//! freeze, tests/chaos.rs). Each such attempt lasts `connect_timeout_ms`, and they are spaced
//! [`BACKOFF_MIN`] apart at least, so this is no connect storm.

use std::time::{Duration, Instant};

/// First and largest pause between background probes.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shortest pause between connection attempts that requests trigger.
const DEMAND_RETRY: Duration = Duration::from_millis(20);

/// The retry state of one connection slot.
#[derive(Debug, Default)]
pub(super) struct Retry {
    backoff: Duration,
    /// The last failure: when its attempt ended, how long it took, and why it failed.
    failed: Option<(Instant, Duration, String)>,
    /// False after a refused set-up: the server is up and only refuses this connection (e.g.
    /// AUTH), so neither probes nor demand retry before the backoff has passed.
    probe: bool,
}

impl Retry {
    /// A fresh slot: the first request connects at once.
    pub(super) fn new() -> Retry {
        Retry { probe: true, ..Retry::default() }
    }

    /// The attempt that ran from `started` to `now` failed; `refused` when the server answered
    /// but refused the set-up, `stalled` when it accepted the connection but did not answer the
    /// set-up in time. Returns the pause before the next background probe.
    pub(super) fn failed(
        &mut self,
        started: Instant,
        now: Instant,
        why: String,
        refused: bool,
        stalled: bool,
    ) -> Duration {
        let took = now.saturating_duration_since(started);
        self.backoff = if stalled {
            BACKOFF_MIN.saturating_sub(took)
        } else {
            (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
        };
        self.failed = Some((now, took, why));
        self.probe = !refused;
        self.backoff
    }

    /// A connection was established.
    pub(super) fn connected(&mut self) {
        *self = Retry::new();
    }

    /// A working connection was lost: find out at once whether the server is still there.
    pub(super) fn lost(&mut self, now: Instant, why: String) {
        self.failed = Some((now, Duration::ZERO, why));
        self.backoff = Duration::ZERO;
        self.probe = true;
    }

    /// When the background probe is due (`None`: no failure, or probing is off).
    pub(super) fn probe_at(&self) -> Option<Instant> {
        let (end, _, _) = self.failed.as_ref().filter(|_| self.probe)?;
        Some(*end + self.backoff)
    }

    /// For a request arriving at `now`: `None` to try connecting, or the error to fail it with.
    pub(super) fn refuse_request(&self, now: Instant) -> Option<&str> {
        let (end, took, why) = self.failed.as_ref()?;
        if now >= *end + self.backoff {
            return None;
        }
        let demand_after = DEMAND_RETRY.max(*took * 10);
        if self.probe && now >= *end + demand_after {
            return None;
        }
        Some(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quick_refusal_lets_demand_retry_after_20ms_but_not_before() {
        let t = Instant::now();
        let mut r = Retry::new();
        assert_eq!(r.refuse_request(t), None, "a fresh slot connects at once");
        assert_eq!(r.failed(t, t, "refused".into(), false, false), BACKOFF_MIN);
        assert_eq!(r.refuse_request(t), Some("refused"));
        assert_eq!(r.refuse_request(t + ms(19)), Some("refused"));
        assert_eq!(r.refuse_request(t + ms(20)), None);
        assert_eq!(r.probe_at(), Some(t + BACKOFF_MIN));
    }

    #[test]
    fn a_slow_failure_makes_demand_wait_ten_times_as_long() {
        let t = Instant::now();
        let end = t + ms(300); // a connect that timed out after 300 ms
        let mut r = Retry::new();
        for _ in 0..4 {
            r.failed(t, end, "timeout".into(), false, false);
        }
        // Backoff 800 ms; demand alone would wait 3 s.
        assert_eq!(r.refuse_request(end + ms(799)), Some("timeout"));
        assert_eq!(r.refuse_request(end + ms(800)), None, "the backoff has passed");
    }

    #[test]
    fn a_refused_setup_waits_for_the_backoff_and_is_not_probed() {
        let t = Instant::now();
        let mut r = Retry::new();
        r.failed(t, t, "WRONGPASS".into(), true, false);
        assert_eq!(r.probe_at(), None);
        assert_eq!(r.refuse_request(t + ms(50)), Some("WRONGPASS"));
        assert_eq!(r.refuse_request(t + ms(100)), None);
    }

    #[test]
    fn backoff_doubles_to_2s_and_a_connection_resets_it() {
        let t = Instant::now();
        let mut r = Retry::new();
        let pauses: Vec<u128> =
            (0..7).map(|_| r.failed(t, t, "x".into(), false, false).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000]);
        r.connected();
        assert_eq!(r.refuse_request(t), None);
        assert_eq!(r.probe_at(), None);
        r.lost(t, "reset".into());
        assert_eq!(r.probe_at(), Some(t), "a lost connection probes at once");
        assert_eq!(r.refuse_request(t), None);
    }

    #[test]
    fn a_stalled_set_up_is_probed_again_at_once_however_often_it_failed() {
        let t = Instant::now();
        let end = t + ms(500); // the server accepted but answered nothing for connect_timeout
        let mut r = Retry::new();
        for _ in 0..10 {
            assert_eq!(r.failed(t, end, "stalled".into(), false, true), Duration::ZERO);
        }
        assert_eq!(r.probe_at(), Some(end), "no backoff grows while the server is frozen");
        // Gone for good after all: the backoff starts from its minimum again.
        assert_eq!(r.failed(t, t, "refused".into(), false, false), BACKOFF_MIN);
        // A quick stall (tiny connect_timeout) still spaces attempts BACKOFF_MIN apart.
        assert_eq!(r.failed(t, t + ms(30), "stalled".into(), false, true), ms(70));
    }
}
