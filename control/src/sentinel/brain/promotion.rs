//! The fast path through a failover: adopting the replica a failover leader promotes as soon as
//! it answers `ROLE` with `master`, instead of waiting about a second for `+switch-master`
//! (Sentinel announces the promotion only after its once-a-second `INFO` of the replica sees it).
//!
//! Why this keeps the fence's guarantee: the old master has been fenced since the leader's first
//! failover event, so nothing it acknowledges is at risk; a replica answering `ROLE` `master` has
//! carried out `REPLICAOF NO ONE` and takes writes. The adoption raises the group's epoch above
//! the old master's, so sentinels still naming the old master (they learn of the new one up to a
//! few seconds after `+switch-master`) are not followed back to it. Until Sentinel announces the
//! new master the adoption stays provisional: if the same leader gives the failover up, or a
//! sentinel turns the promoted replica back into a replica (`+convert-to-slave`, e.g. when the
//! leader died before announcing it), the group goes back to the old master, which Sentinel keeps,
//! and the promoted replica is fenced (a write it took now would be lost).

use std::time::Instant;

use keyhop_router::GroupId;

use super::{Action, AdoptedVia, Adoption, Brain, GroupState, Role};

/// A failover of a group's adopted master whose promoted replica is watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Promotion {
    /// The sentinel leading the failover (only its abort can undo the adoption).
    pub leader: String,
    /// The master being failed over.
    pub old: String,
    /// The group's epoch before the failover.
    pub old_epoch: u64,
    /// The replica being promoted.
    pub replica: String,
    /// Adopted on its `ROLE` before Sentinel announced it.
    pub adopted: bool,
}

/// One failover event of a group (see `Event::Failover`).
pub(super) struct Step {
    pub master: String,
    pub aborted: bool,
    pub replica: Option<String>,
}

/// Reads stay off the replica being promoted: Sentinel's `REPLICAOF NO ONE` closes every
/// client connection of it (the reads in flight there would fail), and a promotion that hangs
/// means a replica that does not answer. The group's other replicas serve the reads meanwhile.
pub(super) fn spare_the_promoted(st: &mut GroupState) {
    let Some(p) = st.promotion.as_ref().filter(|p| !p.adopted) else { return };
    for r in st.replicas.iter_mut().filter(|r| r.addr == p.replica) {
        r.healthy = false;
    }
}

/// The new master is announced (a majority names it): the adoption is final.
pub(super) fn confirmed(st: &mut GroupState) {
    if st.promotion.as_ref().is_some_and(|p| p.adopted && st.master.as_ref() == Some(&p.replica)) {
        st.promotion = None;
    }
}

impl Brain {
    /// A failover step (or abort) from `sentinel` for group `g` whose master is `master`.
    pub(super) fn on_failover(
        &mut self,
        sentinel: &str,
        g: GroupId,
        step: Step,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Step { master, aborted, replica } = step;
        let st = &mut self.groups[g as usize];
        // Only the master keyhop routes to matters; a stale leader's older master is not routed
        // to anyway.
        let current = st.master.as_deref() == Some(master.as_str());
        if aborted {
            if let Some(p) = st.promotion.take_if(|p| p.leader == sentinel && p.old == master) {
                out.push(Action::StopWatching { group: g });
                self.roll_back(g, p, "the leader gave the failover up", out);
            }
            if current {
                out.push(Action::Fence { group: g, addr: master, on: false });
            }
            out.push(Action::Recheck);
            self.evaluate(g, now, out);
            return;
        }
        if !current {
            return;
        }
        out.push(Action::Fence { group: g, addr: master.clone(), on: true });
        let Some(replica) = replica else { return };
        let same = |p: &Promotion| p.old == master && p.replica == replica && p.leader == sentinel;
        if st.promotion.as_ref().is_some_and(same) {
            return;
        }
        let old_epoch = st.epoch;
        st.promotion = Some(Promotion {
            leader: sentinel.to_string(),
            old: master,
            old_epoch,
            replica: replica.clone(),
            adopted: false,
        });
        out.push(Action::WatchPromotion { group: g, addr: replica });
        self.evaluate(g, now, out);
    }

    /// Undoes `p`'s adoption, if it still stands: the sentinels' configuration still names the
    /// old master, and Sentinel turns the promoted replica back into a replica (a write it took
    /// now would be lost), so that replica is fenced and the majority is followed again.
    fn roll_back(&mut self, g: GroupId, p: Promotion, why: &str, out: &mut Vec<Action>) {
        let st = &mut self.groups[g as usize];
        if !p.adopted || st.master.as_deref() != Some(p.replica.as_str()) {
            return;
        }
        tracing::warn!(
            group = %self.names[g as usize],
            promoted = %p.replica,
            old = %p.old,
            why,
            "the promoted replica was not confirmed as master; going back to the old master"
        );
        st.epoch = p.old_epoch;
        out.push(Action::Fence { group: g, addr: p.replica, on: true });
    }

    /// The watch of `addr`, the replica being promoted in group `g`, ended with `role`.
    pub(super) fn on_promotion_role(
        &mut self,
        g: GroupId,
        addr: String,
        role: Role,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(st) = self.groups.get_mut(g as usize) else { return };
        let Some(p) = st.promotion.as_mut().filter(|p| p.replica == addr && !p.adopted) else {
            return;
        };
        // Still the failover of the master keyhop routes to (nothing else moved the group).
        if role != Role::Master || st.master.as_deref() != Some(p.old.as_str()) {
            tracing::info!(
                group = %self.names[g as usize],
                replica = %addr,
                ?role,
                "the replica being promoted was not adopted on its ROLE; waiting for Sentinel"
            );
            st.promotion = None;
            self.evaluate(g, now, out);
            return;
        }
        p.adopted = true;
        // Above every claim for the old master: Sentinel's new configuration epoch is higher.
        st.epoch = p.old_epoch.max(st.epoch) + 1;
        let old = st.master.replace(addr.clone());
        st.replicas.retain(|r| r.addr != addr);
        st.checking.remove(&addr);
        st.negative = None;
        let down_at = st.down_seen.take();
        out.push(Action::Adopted(Adoption {
            group: g,
            old,
            new: addr,
            via: AdoptedVia::RolePoll,
            event_at: None,
            down_at,
        }));
        self.evaluate(g, now, out);
    }

    /// A sentinel turned `addr` (back) into a replica (`+convert-to-slave`): if it is the promoted
    /// replica adopted before any announcement, Sentinel's configuration still names the old
    /// master (e.g. the leader died before announcing the promotion), so the adoption is undone.
    pub(super) fn promotion_converted(
        &mut self,
        g: GroupId,
        addr: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let st = &mut self.groups[g as usize];
        let Some(p) = st.promotion.take_if(|p| p.replica == addr) else { return };
        out.push(Action::StopWatching { group: g });
        self.roll_back(g, p, "a sentinel turned it back into a replica", out);
        out.push(Action::Recheck);
        self.evaluate(g, now, out);
    }

    /// A sentinel announced `new` as group `g`'s master: a watched promotion is over (confirmed
    /// when `new` is the adopted replica; otherwise Sentinel chose another, and the usual
    /// `+switch-master` handling follows it).
    pub(super) fn promotion_announced(&mut self, g: GroupId, new: &str, out: &mut Vec<Action>) {
        let st = &mut self.groups[g as usize];
        if let Some(p) = st.promotion.take() {
            if !p.adopted {
                out.push(Action::StopWatching { group: g });
            } else if p.replica != new {
                tracing::info!(
                    group = %self.names[g as usize],
                    adopted = %p.replica,
                    announced = %new,
                    "Sentinel announced another master than the promoted replica adopted"
                );
            }
        }
    }
}
