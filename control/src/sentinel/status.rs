//! What the Sentinel watcher reports about itself (for the admin endpoint, metrics and
//! readiness): the sentinels it follows, each group's master and its latest switch.

use std::time::{Duration, SystemTime};

use super::AdoptedVia;

/// One adoption of a new master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchInfo {
    /// The previous master.
    pub from: String,
    /// The new master.
    pub to: String,
    /// When the new table was published.
    pub at: SystemTime,
    /// What made the watcher adopt it.
    pub via: AdoptedVia,
    /// From the first `+switch-master` for the new master to the publish, when one was seen.
    pub event_to_swap: Option<Duration>,
    /// From the first `+sdown`/`+odown` of the old master to the publish, when one was seen.
    pub down_to_swap: Option<Duration>,
}

/// A group as the watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// The adopted master, once known.
    pub master: Option<String>,
    /// Master changes since start.
    pub switches: u64,
    /// The latest master change.
    pub last_switch: Option<SwitchInfo>,
}

/// A sentinel as the watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelLinkStatus {
    /// `host:port`.
    pub addr: String,
    /// Subscribed right now.
    pub connected: bool,
    /// The last connection or poll error.
    pub last_error: Option<String>,
}

/// The watcher's state, for metrics and readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SentinelStatus {
    /// Sentinels with a live subscription.
    pub connected_sentinels: usize,
    /// Sentinels known (configured and discovered).
    pub known_sentinels: usize,
    /// Epoch of the last published table (0 before the first).
    pub epoch: u64,
    /// Each known sentinel.
    pub sentinels: Vec<SentinelLinkStatus>,
    /// Each group, by [`GroupId`](keyhop_router::GroupId).
    pub groups: Vec<GroupStatus>,
}
