//! The routing table: which group owns each slot, and each group's master and replicas.
//!
//! A table is an immutable value. The control plane builds a new one for every change of topology
//! and publishes it through [`SharedTable`]; the data plane loads it without locks.

use std::fmt;
use std::sync::Arc;

use crate::flux::{Flux, FluxRange};
use crate::slot::{SLOT_COUNT, key_slot};

/// Index of a group in [`RoutingTable::groups`].
pub type GroupId = u16;

/// The routing table as published by the control plane and read by the data plane.
pub type SharedTable = Arc<arc_swap::ArcSwap<RoutingTable>>;

/// Most groups a table may hold (SCAN cursors reserve 10 bits for the group).
pub const MAX_GROUPS: usize = 1024;

/// A replica of a group's master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// `host:port` of the replica.
    pub addr: String,
    /// False while Sentinel flags it `s_down`/`o_down`/`disconnected`.
    pub healthy: bool,
}

/// One master and its replicas, owning a set of slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The group's name (the Sentinel master name in Sentinel mode).
    pub name: String,
    /// `host:port` of the current master.
    pub master: String,
    /// Known replicas of the master.
    pub replicas: Vec<Replica>,
}

/// Why a routing table could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    /// No groups at all.
    NoGroups,
    /// More groups than [`MAX_GROUPS`].
    TooManyGroups(usize),
    /// Slots that no group owns, as inclusive ranges.
    Unowned(Vec<(u16, u16)>),
    /// Slots owned by more than one group: (first, last, group names).
    DoublyOwned(Vec<(u16, u16, Vec<String>)>),
    /// A slot number outside 0..=16383.
    SlotOutOfRange(u32),
    /// An owner or flux entry names a group index the table does not have.
    UnknownGroup(GroupId),
    /// A flux range that cannot be: overlapping, from == to, or whose source is not the owner.
    BadFlux(String),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::NoGroups => {
                write!(f, "no groups are configured (add at least one [[groups]])")
            }
            TableError::TooManyGroups(n) => {
                write!(f, "{n} groups configured; keyhop supports at most {MAX_GROUPS}")
            }
            TableError::Unowned(ranges) => write!(
                f,
                "slots not owned by any group: {} (every slot 0-16383 needs exactly one owner)",
                format_ranges(ranges.iter().map(|&(a, b)| (a, b)))
            ),
            TableError::DoublyOwned(ranges) => {
                let parts: Vec<String> = ranges
                    .iter()
                    .map(|(a, b, names)| {
                        format!("{} by {}", format_ranges([(*a, *b)]), names.join(" and "))
                    })
                    .collect();
                write!(f, "slots owned by more than one group: {}", parts.join("; "))
            }
            TableError::SlotOutOfRange(s) => {
                write!(f, "slot {s} is out of range (slots are 0-16383)")
            }
            TableError::UnknownGroup(g) => {
                write!(f, "group index {g} does not exist (the table has fewer groups)")
            }
            TableError::BadFlux(why) => write!(f, "invalid slot migration entry: {why}"),
        }
    }
}

impl std::error::Error for TableError {}

/// Formats inclusive slot ranges as `0-8191,9000`.
pub fn format_ranges(ranges: impl IntoIterator<Item = (u16, u16)>) -> String {
    let parts: Vec<String> = ranges
        .into_iter()
        .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
        .collect();
    parts.join(",")
}

/// Which group owns each slot, plus the groups' addresses, stamped with an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    /// Grows by one with every published change; the data plane uses it to notice a new table.
    pub epoch: u64,
    /// The groups, indexed by [`GroupId`].
    pub groups: Vec<Group>,
    owner: Box<[GroupId]>,
    /// Slots being handed between groups; None when nothing is in flux, so the data path pays
    /// one branch per command.
    pub flux: Option<Arc<Flux>>,
    /// The etcd revision of the fleet's slot map this table reflects; 0 without etcd.
    pub fleet_revision: u64,
}

impl RoutingTable {
    /// Builds a table from each group's owned slot ranges (inclusive), checking that every slot
    /// has exactly one owner.
    pub fn new(
        epoch: u64,
        groups: Vec<Group>,
        ranges: &[Vec<(u32, u32)>],
    ) -> Result<RoutingTable, TableError> {
        if groups.is_empty() {
            return Err(TableError::NoGroups);
        }
        if groups.len() > MAX_GROUPS {
            return Err(TableError::TooManyGroups(groups.len()));
        }
        // Owners per slot, as a small list so double ownership can be reported precisely.
        let mut owners: Vec<Vec<GroupId>> = vec![Vec::new(); SLOT_COUNT];
        for (g, group_ranges) in ranges.iter().enumerate() {
            for &(a, b) in group_ranges {
                for s in [a, b] {
                    if s as usize >= SLOT_COUNT {
                        return Err(TableError::SlotOutOfRange(s));
                    }
                }
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                for slot in lo..=hi {
                    let list = &mut owners[slot as usize];
                    if !list.contains(&(g as GroupId)) {
                        list.push(g as GroupId);
                    }
                }
            }
        }
        let unowned = runs(&owners, |o| o.is_empty());
        if !unowned.is_empty() {
            return Err(TableError::Unowned(unowned));
        }
        let doubly = runs_by_key(&owners, |o| (o.len() > 1).then(|| o.clone()));
        if !doubly.is_empty() {
            return Err(TableError::DoublyOwned(
                doubly
                    .into_iter()
                    .map(|(a, b, ids)| {
                        let names = ids.iter().map(|&i| groups[i as usize].name.clone()).collect();
                        (a, b, names)
                    })
                    .collect(),
            ));
        }
        let owner: Box<[GroupId]> = owners.iter().map(|o| o[0]).collect();
        Ok(RoutingTable { epoch, groups, owner, flux: None, fleet_revision: 0 })
    }

    /// Builds a table from owned ranges `(first, last, group)` (inclusive) and the slots in
    /// flux, checking that every slot has exactly one owner and that each flux range is
    /// disjoint from the others, moves between two different groups, and starts from the
    /// slots' owner.
    pub fn from_parts(
        epoch: u64,
        groups: Vec<Group>,
        owners: &[(u16, u16, GroupId)],
        flux: Vec<FluxRange>,
        fleet_revision: u64,
    ) -> Result<RoutingTable, TableError> {
        let mut ranges: Vec<Vec<(u32, u32)>> = vec![Vec::new(); groups.len()];
        for &(a, b, g) in owners {
            let Some(list) = ranges.get_mut(g as usize) else {
                return Err(TableError::UnknownGroup(g));
            };
            list.push((u32::from(a), u32::from(b)));
        }
        let mut table = RoutingTable::new(epoch, groups, &ranges)?;
        table.fleet_revision = fleet_revision;
        if flux.is_empty() {
            return Ok(table);
        }
        let n = table.groups.len();
        for r in &flux {
            for g in [r.from, r.to] {
                if g as usize >= n {
                    return Err(TableError::UnknownGroup(g));
                }
            }
            if r.first > r.last || r.last as usize >= SLOT_COUNT {
                return Err(TableError::BadFlux(format!(
                    "slots {}-{} are not a valid range (0-16383, first <= last)",
                    r.first, r.last
                )));
            }
            if r.from == r.to {
                return Err(TableError::BadFlux(format!(
                    "slots {} move from group {} to itself",
                    format_ranges([(r.first, r.last)]),
                    table.groups[r.from as usize].name
                )));
            }
            if let Some(s) = (r.first..=r.last).find(|&s| table.group_for_slot(s) != r.from) {
                return Err(TableError::BadFlux(format!(
                    "slot {s} moves from group {} but is owned by {}",
                    table.groups[r.from as usize].name,
                    table.groups[table.group_for_slot(s) as usize].name
                )));
            }
        }
        let fx = Flux::new(flux);
        if let Some(w) = fx.ranges().windows(2).find(|w| w[0].last >= w[1].first) {
            return Err(TableError::BadFlux(format!(
                "slots {} and {} overlap",
                format_ranges([(w[0].first, w[0].last)]),
                format_ranges([(w[1].first, w[1].last)])
            )));
        }
        table.flux = Some(Arc::new(fx));
        Ok(table)
    }

    /// The flux range holding `slot`, when it is in flux.
    #[inline]
    pub fn flux_of(&self, slot: u16) -> Option<&FluxRange> {
        self.flux.as_deref().and_then(|f| f.range_of(slot))
    }

    /// Every slot range in flux, sorted; empty when none.
    pub fn flux_ranges(&self) -> &[FluxRange] {
        self.flux.as_deref().map(|f| f.ranges()).unwrap_or(&[])
    }

    /// This table as it routes once the keys of every `Migrating` range have moved: those
    /// slots owned by their target, and nothing in flux. The data path routes a command with
    /// it after moving the command's keys.
    pub fn after_move(&self) -> RoutingTable {
        let mut owner = self.owner.clone();
        for r in self.flux_ranges() {
            if r.state == crate::flux::FluxState::Migrating {
                owner[r.first as usize..=r.last as usize].fill(r.to);
            }
        }
        RoutingTable {
            epoch: self.epoch,
            groups: self.groups.clone(),
            owner,
            flux: None,
            fleet_revision: self.fleet_revision,
        }
    }

    /// Splits the slots evenly over `groups`, in order (the default when no group names slots).
    pub fn even_ranges(groups: usize) -> Vec<Vec<(u32, u32)>> {
        let n = groups.max(1) as u32;
        let total = SLOT_COUNT as u32;
        (0..n)
            .map(|i| {
                let lo = i * total / n;
                let hi = (i + 1) * total / n - 1;
                vec![(lo, hi)]
            })
            .collect()
    }

    /// The group that owns `slot`.
    #[inline]
    pub fn group_for_slot(&self, slot: u16) -> GroupId {
        self.owner[slot as usize & (SLOT_COUNT - 1)]
    }

    /// The group that owns `key`.
    #[inline]
    pub fn group_for_key(&self, key: &[u8]) -> GroupId {
        self.group_for_slot(key_slot(key))
    }

    /// The inclusive slot ranges owned by `group`.
    pub fn slot_ranges(&self, group: GroupId) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        let mut start: Option<u16> = None;
        for slot in 0..SLOT_COUNT {
            let mine = self.owner[slot] == group;
            match (mine, start) {
                (true, None) => start = Some(slot as u16),
                (false, Some(s)) => {
                    out.push((s, slot as u16 - 1));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, (SLOT_COUNT - 1) as u16));
        }
        out
    }

    /// A copy of this table with another epoch and the same slot ownership, flux and fleet
    /// revision.
    pub fn with_groups(&self, epoch: u64, groups: Vec<Group>) -> RoutingTable {
        RoutingTable {
            epoch,
            groups,
            owner: self.owner.clone(),
            flux: self.flux.clone(),
            fleet_revision: self.fleet_revision,
        }
    }

    /// The index of the group called `name`.
    pub fn group_by_name(&self, name: &str) -> Option<GroupId> {
        self.groups.iter().position(|g| g.name == name).map(|i| i as GroupId)
    }
}

/// Inclusive runs of consecutive slots for which `pred` holds.
fn runs(owners: &[Vec<GroupId>], pred: impl Fn(&Vec<GroupId>) -> bool) -> Vec<(u16, u16)> {
    runs_by_key(owners, |o| pred(o).then_some(())).into_iter().map(|(a, b, ())| (a, b)).collect()
}

/// Inclusive runs of consecutive slots with the same `Some(key)`.
fn runs_by_key<K: PartialEq>(
    owners: &[Vec<GroupId>],
    key: impl Fn(&Vec<GroupId>) -> Option<K>,
) -> Vec<(u16, u16, K)> {
    let mut out: Vec<(u16, u16, K)> = Vec::new();
    for (slot, o) in owners.iter().enumerate() {
        let Some(k) = key(o) else { continue };
        match out.last_mut() {
            Some((_, end, last)) if *end as usize + 1 == slot && *last == k => *end = slot as u16,
            _ => out.push((slot as u16, slot as u16, k)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::FluxState;

    fn group(name: &str) -> Group {
        Group { name: name.into(), master: "127.0.0.1:1".into(), replicas: vec![] }
    }

    #[test]
    fn even_split_covers_everything() {
        for n in 1..=7 {
            let ranges = RoutingTable::even_ranges(n);
            let groups = (0..n).map(|i| group(&format!("g{i}"))).collect();
            let t = RoutingTable::new(1, groups, &ranges).expect("even split is valid");
            assert_eq!(t.group_for_slot(0), 0);
            assert_eq!(t.group_for_slot(16383) as usize, n - 1);
        }
        assert_eq!(RoutingTable::even_ranges(2), vec![vec![(0, 8191)], vec![(8192, 16383)]]);
    }

    #[test]
    fn reports_unowned_and_double() {
        let err = RoutingTable::new(
            1,
            vec![group("a"), group("b")],
            &[vec![(0, 8000)], vec![(8100, 16383)]],
        )
        .unwrap_err();
        assert_eq!(err, TableError::Unowned(vec![(8001, 8099)]));
        assert!(err.to_string().contains("8001-8099"));

        let err = RoutingTable::new(
            1,
            vec![group("a"), group("b")],
            &[vec![(0, 9000)], vec![(8192, 16383)]],
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "slots owned by more than one group: 8192-9000 by a and b");
    }

    #[test]
    fn ranges_round_trip() {
        let t = RoutingTable::new(
            1,
            vec![group("a"), group("b")],
            &[vec![(0, 99), (200, 16383)], vec![(100, 199)]],
        )
        .expect("valid");
        assert_eq!(t.slot_ranges(0), vec![(0, 99), (200, 16383)]);
        assert_eq!(t.slot_ranges(1), vec![(100, 199)]);
        assert_eq!(t.group_for_key(b"foo"), 0); // 12182
        assert_eq!(t.group_by_name("b"), Some(1));
    }

    fn moving(first: u16, last: u16, from: GroupId, to: GroupId, state: FluxState) -> FluxRange {
        FluxRange { first, last, from, to, state }
    }

    #[test]
    fn from_parts_with_flux() {
        let owners = [(0, 8191, 0), (8192, 16383, 1)];
        let t = RoutingTable::from_parts(
            3,
            vec![group("a"), group("b"), group("c")],
            &owners,
            vec![
                moving(8192, 8200, 1, 2, FluxState::Locked),
                moving(0, 99, 0, 2, FluxState::Migrating),
            ],
            41,
        )
        .expect("valid");
        assert_eq!(t.fleet_revision, 41);
        assert_eq!(t.group_for_slot(50), 0, "the source owns until the flip");
        assert_eq!(t.flux_of(50).map(|r| (r.to, r.state)), Some((2, FluxState::Migrating)));
        assert_eq!(t.flux_of(8195).map(|r| r.state), Some(FluxState::Locked));
        assert!(t.flux_of(100).is_none());
        assert_eq!(t.flux_ranges().iter().map(|r| r.first).collect::<Vec<_>>(), vec![0, 8192]);
        let kept = t.with_groups(4, t.groups.clone());
        assert_eq!(kept.flux_ranges(), t.flux_ranges());
        assert_eq!(kept.fleet_revision, 41);
        let moved = t.after_move();
        assert_eq!(moved.group_for_slot(50), 2);
        assert_eq!(moved.group_for_slot(8195), 1, "locked slots stay with the source");
        assert!(moved.flux.is_none());
        // Without flux: nothing to look up.
        let plain =
            RoutingTable::from_parts(1, vec![group("a"), group("b")], &owners, vec![], 0).unwrap();
        assert!(plain.flux.is_none() && plain.flux_ranges().is_empty());
        assert_eq!(
            plain,
            RoutingTable::new(1, vec![group("a"), group("b")], &RoutingTable::even_ranges(2))
                .unwrap()
        );
    }

    #[test]
    fn from_parts_rejects_bad_flux() {
        let groups = || vec![group("a"), group("b"), group("c")];
        let owners = [(0, 8191, 0), (8192, 16383, 1)];
        let err = |flux| RoutingTable::from_parts(1, groups(), &owners, flux, 0).unwrap_err();
        assert_eq!(
            err(vec![moving(0, 10, 1, 2, FluxState::Migrating)]).to_string(),
            "invalid slot migration entry: slot 0 moves from group b but is owned by a"
        );
        assert_eq!(
            err(vec![moving(0, 10, 0, 0, FluxState::Locked)]).to_string(),
            "invalid slot migration entry: slots 0-10 move from group a to itself"
        );
        assert_eq!(
            err(vec![
                moving(0, 10, 0, 2, FluxState::Locked),
                moving(5, 20, 0, 1, FluxState::Locked)
            ])
            .to_string(),
            "invalid slot migration entry: slots 0-10 and 5-20 overlap"
        );
        assert_eq!(err(vec![moving(0, 10, 0, 7, FluxState::Locked)]), TableError::UnknownGroup(7));
        assert_eq!(
            RoutingTable::from_parts(1, groups(), &[(0, 16383, 9)], vec![], 0).unwrap_err(),
            TableError::UnknownGroup(9)
        );
        assert_eq!(
            RoutingTable::from_parts(1, groups(), &[(0, 100, 0)], vec![], 0).unwrap_err(),
            TableError::Unowned(vec![(101, 16383)])
        );
    }

    #[test]
    fn out_of_range_slot() {
        let err = RoutingTable::new(1, vec![group("a")], &[vec![(0, 16384)]]).unwrap_err();
        assert_eq!(err, TableError::SlotOutOfRange(16384));
    }
}
