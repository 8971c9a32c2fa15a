//! The watcher's decisions, without I/O: what the sentinels say, which master each group has,
//! when to check a candidate's `ROLE`, and what the routing table's groups should be.
//!
//! The driver in `mod.rs` feeds it [`Msg`]s from the sentinel links and `ROLE` checks, carries
//! out the [`Action`]s it returns, and publishes [`Brain::groups`] when they change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use keyhop_router::{Group, GroupId, Replica};

use super::event::{Event, InstanceKind};

mod promotion;

/// How long a candidate whose `ROLE` check failed is left alone before it is checked again.
const RECHECK_NEGATIVE_AFTER: Duration = Duration::from_millis(500);

/// What one sentinel says about one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupView {
    /// The master's `host:port`.
    pub master: String,
    /// The sentinel's `config-epoch` for the group (a lower bound when learned from an event).
    pub config_epoch: u64,
    /// The replicas and their health, sorted by address.
    pub replicas: Vec<Replica>,
}

/// One poll of one sentinel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PollReport {
    /// Per group (by [`GroupId`]): the sentinel's view, or `None` if it does not know the name.
    pub groups: Vec<Option<GroupView>>,
    /// Other sentinels it knows of, when asked this time.
    pub sentinels: Vec<String>,
}

/// Why a candidate's `ROLE` is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdoptedVia {
    /// A majority of the reachable sentinels agreed on it before any master was known.
    Startup,
    /// A sentinel published `+switch-master` for it (the fast path).
    SwitchEvent,
    /// A majority of the reachable sentinels agreed on it when polled.
    Majority,
    /// The replica a failover leader is promoting answered `ROLE` with `master`, watched every
    /// few milliseconds from the leader's `+selected-slave` on (the fastest path: no waiting for
    /// Sentinel's once-a-second `INFO` to notice the promotion).
    RolePoll,
}

/// What a `ROLE` check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `ROLE` answered `master`.
    Master,
    /// `ROLE` answered `slave` (or `replica`).
    Replica,
    /// Anything else: an error reply, an unexpected role, no connection.
    Unknown(String),
}

/// Input to the brain.
#[derive(Debug)]
pub(crate) enum Msg {
    /// A sentinel link subscribed and is ready to poll.
    Up { sentinel: String },
    /// A sentinel link failed (or could not connect); its views are forgotten.
    Down { sentinel: String, error: String },
    /// An event arrived on a sentinel's pub/sub.
    Event { sentinel: String, event: Event, at: Instant },
    /// A sentinel answered a poll.
    Poll { sentinel: String, report: PollReport },
    /// A `ROLE` check finished.
    Role { group: GroupId, addr: String, via: AdoptedVia, role: Role },
}

/// A group's master changed: the driver logs it once the new table is published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Adoption {
    pub group: GroupId,
    pub old: Option<String>,
    pub new: String,
    pub via: AdoptedVia,
    /// When the `+switch-master` for `new` was first received.
    pub event_at: Option<Instant>,
    /// When the old master was first reported `+sdown`/`+odown`.
    pub down_at: Option<Instant>,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Ask `addr` for its `ROLE` and report back with [`Msg::Role`].
    CheckRole { group: GroupId, addr: String, via: AdoptedVia },
    /// Start a link to a newly discovered sentinel.
    AddSentinel(String),
    /// Ask every sentinel link to poll now.
    Recheck,
    /// A master was adopted.
    Adopted(Adoption),
    /// A failover of `group`'s adopted master `addr` is under way (`on`) or was given up: the
    /// data plane must stop (or may resume) sending it requests.
    Fence { group: GroupId, addr: String, on: bool },
    /// Ask `addr`, the replica a failover of `group` promotes, for its `ROLE` every few
    /// milliseconds until it says `master` or a bound passes, and report the last answer with
    /// [`Msg::Role`] via [`AdoptedVia::RolePoll`]. Replaces the group's previous watch.
    WatchPromotion { group: GroupId, addr: String },
    /// Stop `group`'s [`Action::WatchPromotion`], if one runs.
    StopWatching { group: GroupId },
}

/// Where starting stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StartState {
    /// Every group has a master.
    Ready,
    /// Still waiting; the text says for what.
    Waiting(String),
    /// No sentinel that answered knows this group name.
    UnknownGroup { group: String, asked: Vec<String> },
}

/// What the brain knows of one sentinel.
#[derive(Clone, Debug, Default)]
pub(crate) struct SentinelState {
    /// The link is subscribed.
    pub up: bool,
    /// It answered a poll or failed at least once (start-up waits for every configured one).
    pub reported: bool,
    /// The last connection or poll error.
    pub last_error: Option<String>,
    /// Its views per group from the last poll (updated by its events); `None` while unreachable.
    pub views: Option<Vec<Option<GroupView>>>,
}

/// What the brain knows of one group.
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupState {
    /// The adopted master.
    pub master: Option<String>,
    /// Config epoch of the adopted master (lower bound); older claims are ignored.
    pub epoch: u64,
    /// Replicas as published.
    pub replicas: Vec<Replica>,
    /// Addresses with a `ROLE` check in flight.
    checking: HashSet<String>,
    /// Last failed `ROLE` check: address and when.
    negative: Option<(String, Instant)>,
    /// First `+switch-master` seen for a new address, and when.
    switch_seen: Option<(String, Instant)>,
    /// When the current master was first reported down.
    down_seen: Option<Instant>,
    /// The failover of the adopted master whose promoted replica is watched (promotion.rs).
    promotion: Option<promotion::Promotion>,
}

/// The watcher's state machine.
pub(crate) struct Brain {
    names: Vec<String>,
    by_name: HashMap<String, GroupId>,
    /// Per group, indexed by [`GroupId`].
    pub groups: Vec<GroupState>,
    /// Known sentinels by address (configured and discovered).
    pub sentinels: BTreeMap<String, SentinelState>,
    configured: Vec<String>,
}

impl Brain {
    /// A brain for groups `names`, starting from the `configured` sentinels.
    pub fn new(names: Vec<String>, configured: Vec<String>) -> Brain {
        let by_name = names.iter().enumerate().map(|(i, n)| (n.clone(), i as GroupId)).collect();
        let groups = vec![GroupState::default(); names.len()];
        let sentinels = configured.iter().map(|a| (a.clone(), SentinelState::default())).collect();
        Brain { names, by_name, groups, sentinels, configured }
    }

    /// The group names, by [`GroupId`].
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Handles one message and says what to do next.
    pub fn handle(&mut self, msg: Msg, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match msg {
            Msg::Up { sentinel } => {
                self.sentinels.entry(sentinel).or_default().up = true;
            }
            Msg::Down { sentinel, error } => {
                let s = self.sentinels.entry(sentinel).or_default();
                s.up = false;
                s.reported = true;
                s.views = None;
                s.last_error = Some(error);
                self.evaluate_all(now, &mut out);
            }
            Msg::Poll { sentinel, mut report } => {
                for other in report.sentinels.drain(..) {
                    if !self.sentinels.contains_key(&other) {
                        self.sentinels.insert(other.clone(), SentinelState::default());
                        out.push(Action::AddSentinel(other));
                    }
                }
                report.groups.resize(self.names.len(), None);
                let s = self.sentinels.entry(sentinel).or_default();
                s.reported = true;
                s.last_error = None;
                s.views = Some(report.groups);
                self.evaluate_all(now, &mut out);
            }
            Msg::Event { sentinel, event, at } => {
                self.on_event(&sentinel, event, at, now, &mut out)
            }
            Msg::Role { group, addr, via, role } => {
                self.on_role(group, addr, via, role, now, &mut out);
            }
        }
        out
    }

    fn on_event(
        &mut self,
        sentinel: &str,
        event: Event,
        at: Instant,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        match event {
            Event::SwitchMaster { group, old, new } => {
                let Some(&g) = self.by_name.get(&group) else { return };
                if let Some(v) = self.view_mut(sentinel, g) {
                    v.master = new.clone();
                    // The failover bumped the epoch; the next poll gives the exact value.
                    v.config_epoch += 1;
                    v.replicas.retain(|r| r.addr != new);
                    // The old master is down or being reconfigured: not a replica to read from yet.
                    match v.replicas.iter_mut().find(|r| r.addr == old) {
                        Some(r) => r.healthy = false,
                        None => v.replicas.push(Replica { addr: old, healthy: false }),
                    }
                    v.replicas.sort_by(|a, b| a.addr.cmp(&b.addr));
                }
                self.promotion_announced(g, &new, out);
                let st = &mut self.groups[g as usize];
                if st.master.as_deref() != Some(new.as_str())
                    && st.switch_seen.as_ref().is_none_or(|(a, _)| *a != new)
                {
                    st.switch_seen = Some((new.clone(), at));
                }
                if st.master.as_deref() != Some(new.as_str()) && st.checking.insert(new.clone()) {
                    out.push(Action::CheckRole {
                        group: g,
                        addr: new,
                        via: AdoptedVia::SwitchEvent,
                    });
                }
                // The other sentinels (and this one's replica list) are worth asking right away.
                out.push(Action::Recheck);
                self.evaluate(g, now, out);
            }
            Event::Failover { group, master, aborted, replica } => {
                let Some(&g) = self.by_name.get(&group) else { return };
                let step = promotion::Step { master, aborted, replica };
                self.on_failover(sentinel, g, step, now, out);
            }
            Event::Instance { channel, kind, addr, group } => {
                if kind == InstanceKind::Sentinel {
                    if channel == "+sentinel" && !self.sentinels.contains_key(&addr) {
                        self.sentinels.insert(addr.clone(), SentinelState::default());
                        out.push(Action::AddSentinel(addr));
                    }
                    return;
                }
                let Some(&g) = self.by_name.get(&group) else { return };
                match kind {
                    InstanceKind::Replica => {
                        if channel == "+convert-to-slave" {
                            self.promotion_converted(g, &addr, now, out);
                        }
                        if let Some(v) = self.view_mut(sentinel, g) {
                            let healthy = match channel.as_str() {
                                "+sdown" => Some(false),
                                "-sdown" => Some(true),
                                _ => None,
                            };
                            match v.replicas.iter_mut().find(|r| r.addr == addr) {
                                Some(r) => {
                                    if let Some(h) = healthy {
                                        r.healthy = h;
                                    }
                                }
                                None if v.master != addr => {
                                    let healthy = healthy.unwrap_or(true);
                                    v.replicas.push(Replica { addr, healthy });
                                    v.replicas.sort_by(|a, b| a.addr.cmp(&b.addr));
                                }
                                None => {}
                            }
                        }
                        self.evaluate(g, now, out);
                    }
                    InstanceKind::Master => {
                        let st = &mut self.groups[g as usize];
                        let current = st.master.as_deref() == Some(addr.as_str());
                        match channel.as_str() {
                            "+sdown" | "+odown" if current => {
                                st.down_seen.get_or_insert(at);
                            }
                            "-sdown" if current => st.down_seen = None,
                            "+failover-end" => out.push(Action::Recheck),
                            _ => {}
                        }
                    }
                    InstanceKind::Sentinel => {}
                }
            }
        }
    }

    fn on_role(
        &mut self,
        g: GroupId,
        addr: String,
        via: AdoptedVia,
        role: Role,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if via == AdoptedVia::RolePoll {
            self.on_promotion_role(g, addr, role, now, out);
            return;
        }
        let Some(st) = self.groups.get_mut(g as usize) else { return };
        st.checking.remove(&addr);
        if st.master.as_deref() == Some(addr.as_str()) {
            return;
        }
        let adopt = match (&role, via) {
            (Role::Master, _) => true,
            // A majority of the sentinels is trusted unless the server itself says it is a
            // replica; one sentinel's event alone needs the server's confirmation.
            (Role::Unknown(_), AdoptedVia::Startup | AdoptedVia::Majority) => true,
            _ => false,
        };
        let claim = self.best_epoch(g, &addr);
        let st = &mut self.groups[g as usize];
        // Once a master is known, a candidate needs a reachable sentinel naming it with an epoch
        // at least as new: a check that raced with a newer change must not win.
        let current_enough = match (st.master.is_some(), claim) {
            (false, _) => true,
            (true, Some(e)) => e >= st.epoch,
            (true, None) => false,
        };
        if adopt && current_enough {
            let old = st.master.replace(addr.clone());
            st.epoch = st.epoch.max(claim.unwrap_or(0));
            st.replicas.retain(|r| r.addr != addr);
            let event_at = match &st.switch_seen {
                Some((a, t)) if *a == addr => Some(*t),
                _ => None,
            };
            let down_at = st.down_seen.take();
            st.switch_seen = None;
            st.negative = None;
            if st.promotion.take().is_some() {
                out.push(Action::StopWatching { group: g });
            }
            out.push(Action::Adopted(Adoption {
                group: g,
                old,
                new: addr,
                via,
                event_at,
                down_at,
            }));
            self.evaluate(g, now, out);
        } else {
            tracing::warn!(
                group = %self.names[g as usize],
                candidate = %addr,
                ?role,
                ?via,
                "not adopting a master candidate"
            );
            // Only a definite "no" pauses the majority path; an unanswered fast-path check
            // leaves it to the majority.
            if role == Role::Replica || adopt {
                st.negative = Some((addr, now));
            }
        }
    }

    /// The highest config epoch any reachable sentinel claims for `addr` as `g`'s master.
    fn best_epoch(&self, g: GroupId, addr: &str) -> Option<u64> {
        self.reachable_views(g).filter(|v| v.master == addr).map(|v| v.config_epoch).max()
    }

    fn view_mut(&mut self, sentinel: &str, g: GroupId) -> Option<&mut GroupView> {
        self.sentinels.get_mut(sentinel)?.views.as_mut()?.get_mut(g as usize)?.as_mut()
    }

    /// Views of group `g` from sentinels that are subscribed and answered their last poll.
    fn reachable_views(&self, g: GroupId) -> impl Iterator<Item = &GroupView> {
        self.sentinels
            .values()
            .filter(|s| s.up)
            .filter_map(move |s| s.views.as_ref()?.get(g as usize)?.as_ref())
    }

    fn evaluate_all(&mut self, now: Instant, out: &mut Vec<Action>) {
        for g in 0..self.names.len() {
            self.evaluate(g as GroupId, now, out);
        }
    }

    /// Re-derives group `g`: asks for a `ROLE` check when a majority names another master, and
    /// recomputes the replicas.
    fn evaluate(&mut self, g: GroupId, now: Instant, out: &mut Vec<Action>) {
        let mut tally: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        let mut n = 0;
        for v in self.reachable_views(g) {
            n += 1;
            let e = tally.entry(v.master.as_str()).or_default();
            e.0 += 1;
            e.1 = e.1.max(v.config_epoch);
        }
        let majority = tally
            .iter()
            .find(|(_, (count, _))| count * 2 > n)
            .map(|(addr, (_, epoch))| (addr.to_string(), *epoch));

        // Replicas as seen by the sentinels that agree with the adopted master.
        let st = &self.groups[g as usize];
        let replicas = st.master.as_ref().and_then(|m| {
            let mut merged: BTreeMap<&str, bool> = BTreeMap::new();
            let mut any = false;
            for v in self.reachable_views(g).filter(|v| v.master == *m) {
                any = true;
                for r in &v.replicas {
                    *merged.entry(r.addr.as_str()).or_insert(true) &= r.healthy;
                }
            }
            any.then(|| {
                merged
                    .into_iter()
                    .filter(|(a, _)| a != m)
                    .map(|(a, healthy)| Replica { addr: a.to_string(), healthy })
                    .collect::<Vec<_>>()
            })
        });

        let st = &mut self.groups[g as usize];
        if let Some(r) = replicas {
            st.replicas = r;
        }
        promotion::spare_the_promoted(st);
        let Some((addr, epoch)) = majority else { return };
        if st.master.as_deref() == Some(addr.as_str()) {
            st.epoch = st.epoch.max(epoch);
            promotion::confirmed(st);
            return;
        }
        if st.master.is_some() && epoch < st.epoch {
            // A majority still on an older configuration (e.g. not yet told of a failover
            // adopted through the fast path): wait for them to catch up.
            return;
        }
        if let Some((a, t)) = &st.negative
            && *a == addr
            && now.duration_since(*t) < RECHECK_NEGATIVE_AFTER
        {
            return;
        }
        if st.checking.insert(addr.clone()) {
            let via = if st.master.is_none() { AdoptedVia::Startup } else { AdoptedVia::Majority };
            out.push(Action::CheckRole { group: g, addr, via });
        }
    }

    /// The groups for a routing table, once every group has a master.
    pub fn groups(&self) -> Option<Vec<Group>> {
        self.groups
            .iter()
            .zip(&self.names)
            .map(|(st, name)| {
                Some(Group {
                    name: name.clone(),
                    master: st.master.clone()?,
                    replicas: st.replicas.clone(),
                })
            })
            .collect()
    }

    /// Where starting stands.
    pub fn start_state(&self) -> StartState {
        if self.groups.iter().all(|g| g.master.is_some()) {
            return StartState::Ready;
        }
        let answered: Vec<&String> =
            self.sentinels.iter().filter(|(_, s)| s.views.is_some()).map(|(a, _)| a).collect();
        let all_reported =
            self.configured.iter().all(|a| self.sentinels.get(a).is_some_and(|s| s.reported));
        if all_reported && !answered.is_empty() {
            for (g, name) in self.names.iter().enumerate() {
                let known = self.sentinels.values().any(|s| {
                    s.views.as_ref().is_some_and(|v| v.get(g).is_some_and(Option::is_some))
                });
                if !known {
                    return StartState::UnknownGroup {
                        group: name.clone(),
                        asked: answered.iter().map(|a| a.to_string()).collect(),
                    };
                }
            }
        }
        if answered.is_empty() {
            let errors: Vec<String> = self
                .sentinels
                .iter()
                .map(|(a, s)| {
                    format!("{a}: {}", s.last_error.as_deref().unwrap_or("no answer yet"))
                })
                .collect();
            return StartState::Waiting(format!("no sentinel answered ({})", errors.join("; ")));
        }
        let missing: Vec<&str> = self
            .groups
            .iter()
            .zip(&self.names)
            .filter(|(st, _)| st.master.is_none())
            .map(|(_, n)| n.as_str())
            .collect();
        StartState::Waiting(format!(
            "no agreed master yet for {} (answering sentinels: {})",
            missing.join(", "),
            answered.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
        ))
    }
}

#[cfg(test)]
mod tests;
