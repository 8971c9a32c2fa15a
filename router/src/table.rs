//! The routing table: which group owns each slot, and each group's master and replicas.
//!
//! A table is an immutable value. The control plane builds a new one for every change of topology
//! and publishes it through [`SharedTable`]; the data plane loads it without locks.

use std::fmt;
use std::sync::Arc;

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
        Ok(RoutingTable { epoch, groups, owner })
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

    /// A copy of this table with another epoch and the same slot ownership.
    pub fn with_groups(&self, epoch: u64, groups: Vec<Group>) -> RoutingTable {
        RoutingTable { epoch, groups, owner: self.owner.clone() }
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

    #[test]
    fn out_of_range_slot() {
        let err = RoutingTable::new(1, vec![group("a")], &[vec![(0, 16384)]]).unwrap_err();
        assert_eq!(err, TableError::SlotOutOfRange(16384));
    }
}
