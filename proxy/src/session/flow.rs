//! Flow control for one client on shared backend connections.
//!
//! Replies on a shared connection come back in order, so every byte a client has in flight sits
//! in front of other clients' replies. A client that pipelines thousands of big reads must not
//! put gigabytes ahead of everyone else, and one that stops reading must not make keyhop hold
//! gigabytes for it. So a session forwards only a window of commands at a time, sized from the
//! reply bytes its commands have produced so far, and forwards nothing while its unwritten
//! output is above [`PAUSE_BYTES`]. Requests it reads meanwhile wait in its read buffer (as in
//! Redis's query buffer), so a client that writes a whole pipeline before reading never
//! deadlocks. Past `client_output_limit` the client is disconnected, as Redis does.

use std::time::Instant;

use crate::settings::OutputLimit;

/// Expected reply bytes a session may have in flight on backend connections.
const BUDGET: usize = 1 << 20;
/// Commands in flight for a new client (its reply sizes are not known yet).
const INITIAL_WINDOW: usize = 16;
/// Commands in flight at least, however big the replies.
const MIN_WINDOW: usize = 2;
/// Commands in flight at most, however small the replies (a window this deep already keeps a
/// backend busy; a deeper one only lengthens the queue in front of other clients).
const MAX_WINDOW: usize = 1024;
/// Unwritten reply bytes above which nothing more is forwarded until the client reads.
pub(super) const PAUSE_BYTES: usize = 1 << 20;
/// Unprocessed request bytes past which the client is closed (Redis's
/// `client-query-buffer-limit` default).
pub(super) const MAX_QUERY_BYTES: usize = 1 << 30;

/// A session's window and output-limit state.
pub(super) struct Flow {
    /// Expected reply bytes per command: the last batch's average, or half the previous
    /// estimate when that is larger (big replies shrink the window at once, small ones widen
    /// it by doubling).
    per_command: usize,
    /// Commands read and routed whose replies are not yet rendered.
    pub(super) inflight: usize,
    /// While the unwritten output is above the soft limit: when its allowance runs out.
    soft_until: Option<Instant>,
}

impl Default for Flow {
    fn default() -> Flow {
        Flow { per_command: BUDGET / INITIAL_WINDOW, inflight: 0, soft_until: None }
    }
}

/// Why a client is disconnected for its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Over {
    Hard,
    Soft,
}

impl Flow {
    /// How many more commands may be forwarded now, with `unwritten` reply bytes queued.
    #[inline]
    pub(super) fn room(&self, unwritten: usize) -> usize {
        if unwritten >= PAUSE_BYTES {
            return 0;
        }
        let window = (BUDGET / self.per_command.max(1)).clamp(MIN_WINDOW, MAX_WINDOW);
        window.saturating_sub(self.inflight)
    }

    /// A batch of `commands` rendered into `bytes` reply bytes.
    #[inline]
    pub(super) fn rendered(&mut self, commands: usize, bytes: usize) {
        self.inflight = self.inflight.saturating_sub(commands);
        if let Some(avg) = bytes.checked_div(commands) {
            self.per_command = avg.max(self.per_command / 2).max(1);
        }
    }

    /// Checks `unwritten` against `limit` (call after it grows or shrinks).
    #[inline]
    pub(super) fn check(&mut self, unwritten: usize, limit: &OutputLimit) -> Option<Over> {
        if limit.hard > 0 && unwritten > limit.hard {
            return Some(Over::Hard);
        }
        if limit.soft > 0 && unwritten > limit.soft {
            let until = *self.soft_until.get_or_insert_with(|| Instant::now() + limit.soft_for);
            if Instant::now() >= until {
                return Some(Over::Soft);
            }
        } else {
            self.soft_until = None;
        }
        None
    }

    /// When the soft limit runs out, while it is exceeded (kept from the last [`Flow::check`],
    /// so the session loop needs no settings to know it).
    #[inline]
    pub(super) fn soft_deadline(&self) -> Option<Instant> {
        self.soft_until
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_new_client_starts_with_the_initial_window() {
        let f = Flow::default();
        assert_eq!(f.room(0), INITIAL_WINDOW);
        assert_eq!(f.room(PAUSE_BYTES), 0);
    }

    #[test]
    fn big_replies_shrink_the_window_at_once_and_small_ones_widen_it() {
        let mut f = Flow { inflight: 16, ..Flow::default() };
        f.rendered(16, 16 << 20);
        assert_eq!(f.inflight, 0);
        assert_eq!(f.room(0), MIN_WINDOW);
        let mut rooms = Vec::new();
        for _ in 0..12 {
            f.inflight = 1;
            f.rendered(1, 5);
            rooms.push(f.room(0));
        }
        assert_eq!(rooms[..4], [2, 4, 8, 16]);
        assert_eq!(rooms.last(), Some(&MAX_WINDOW));
    }

    #[test]
    fn the_window_counts_commands_in_flight() {
        let mut f = Flow { inflight: 10, ..Flow::default() };
        assert_eq!(f.room(0), INITIAL_WINDOW - 10);
        f.inflight = 40;
        assert_eq!(f.room(0), 0);
    }

    #[test]
    fn hard_and_soft_limits() {
        let limit = OutputLimit { hard: 100, soft: 10, soft_for: Duration::from_secs(3600) };
        let mut f = Flow::default();
        assert_eq!(f.check(101, &limit), Some(Over::Hard));
        assert_eq!(f.check(50, &limit), None);
        assert!(f.soft_deadline().is_some());
        assert_eq!(f.check(5, &limit), None);
        assert!(f.soft_deadline().is_none());
        let now = OutputLimit { soft_for: Duration::ZERO, ..limit };
        assert_eq!(f.check(50, &now), Some(Over::Soft));
        let off = OutputLimit { hard: 0, soft: 0, soft_for: Duration::ZERO };
        assert_eq!(f.check(usize::MAX, &off), None);
    }
}
