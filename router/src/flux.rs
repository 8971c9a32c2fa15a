//! Slots in flux: the part of a routing table that says which slots are being handed from one
//! group to another, and in which state (see docs/fleet-plan.md §2.2).
//!
//! The data plane asks "is this slot in flux?" for every key while any migration exists, so the
//! answer is a bit test; only a hit searches the (few, sorted) ranges.

use crate::slot::SLOT_COUNT;
use crate::table::GroupId;

/// What an instance does with a command on a slot in flux.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FluxState {
    /// Hold the command until the next table (the handover is being agreed on).
    Locked,
    /// Move the command's keys from the source with MIGRATE, then run it on the target.
    Migrating,
}

/// An inclusive range of slots moving from one group to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FluxRange {
    /// First slot of the range.
    pub first: u16,
    /// Last slot of the range (inclusive).
    pub last: u16,
    /// The source group: still the slots' owner until the flip.
    pub from: GroupId,
    /// The target group.
    pub to: GroupId,
    /// Whether commands are held or moved.
    pub state: FluxState,
}

/// Every slot in flux: a bitset of the 16384 slots plus the sorted, disjoint ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flux {
    bits: Box<[u64; SLOT_COUNT / 64]>,
    ranges: Vec<FluxRange>,
}

impl Flux {
    /// Builds the set from ranges that are already checked to be valid and disjoint.
    pub(crate) fn new(mut ranges: Vec<FluxRange>) -> Flux {
        ranges.sort_by_key(|r| r.first);
        let mut bits = Box::new([0u64; SLOT_COUNT / 64]);
        for r in &ranges {
            for s in r.first..=r.last {
                bits[s as usize / 64] |= 1 << (s % 64);
            }
        }
        Flux { bits, ranges }
    }

    /// True when `slot` is in some range.
    #[inline]
    pub fn contains(&self, slot: u16) -> bool {
        let s = slot as usize & (SLOT_COUNT - 1);
        self.bits[s / 64] & (1 << (s % 64)) != 0
    }

    /// The range holding `slot`, if any.
    #[inline]
    pub fn range_of(&self, slot: u16) -> Option<&FluxRange> {
        if !self.contains(slot) {
            return None;
        }
        let i = self.ranges.partition_point(|r| r.last < slot);
        self.ranges.get(i).filter(|r| r.first <= slot)
    }

    /// The ranges, sorted by first slot.
    pub fn ranges(&self) -> &[FluxRange] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(first: u16, last: u16, state: FluxState) -> FluxRange {
        FluxRange { first, last, from: 0, to: 1, state }
    }

    #[test]
    fn lookup_finds_the_range() {
        let f = Flux::new(vec![
            range(100, 199, FluxState::Migrating),
            range(0, 9, FluxState::Locked),
            range(16383, 16383, FluxState::Locked),
        ]);
        assert_eq!(f.ranges()[0].first, 0, "sorted");
        assert_eq!(f.range_of(5).map(|r| r.state), Some(FluxState::Locked));
        assert_eq!(f.range_of(150).map(|r| r.first), Some(100));
        assert_eq!(f.range_of(16383).map(|r| r.last), Some(16383));
        assert!(f.range_of(10).is_none());
        assert!(f.range_of(200).is_none());
        assert!(!f.contains(99));
    }

    proptest! {
        #[test]
        fn bitset_agrees_with_ranges(cuts in proptest::collection::btree_set(0u16..16384, 0..12), probe in 0u16..16384) {
            // Consecutive pairs of cut points become disjoint ranges.
            let cuts: Vec<u16> = cuts.into_iter().collect();
            let ranges: Vec<FluxRange> =
                cuts.chunks(2).filter(|c| c.len() == 2).map(|c| range(c[0], c[1], FluxState::Migrating)).collect();
            let f = Flux::new(ranges.clone());
            let expect = ranges.iter().find(|r| r.first <= probe && probe <= r.last);
            prop_assert_eq!(f.range_of(probe), expect);
            prop_assert_eq!(f.contains(probe), expect.is_some());
        }
    }
}
