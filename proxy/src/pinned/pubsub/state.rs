//! What a subscriber is subscribed to, counted as Redis counts it, and the confirmations keyhop
//! writes itself: the servers each see only their share of a client's subscriptions, so their
//! own confirmations carry the wrong totals and are swallowed.

use std::collections::{HashMap, HashSet};

use bytes::{BufMut, Bytes, BytesMut};
use keyhop_router::GroupId;

use crate::resp::{self, Proto};

/// The three subscription namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    /// SUBSCRIBE: a channel, on the group owning its slot.
    Channel,
    /// PSUBSCRIBE: a pattern, on every group.
    Pattern,
    /// SSUBSCRIBE: a shard channel, on the group owning its slot.
    Shard,
}

impl Family {
    /// The family of a (un)subscribe command name (lowercase), and whether it subscribes.
    pub(super) fn of(name: &str) -> Option<(Family, bool)> {
        Some(match name {
            "subscribe" => (Family::Channel, true),
            "unsubscribe" => (Family::Channel, false),
            "psubscribe" => (Family::Pattern, true),
            "punsubscribe" => (Family::Pattern, false),
            "ssubscribe" => (Family::Shard, true),
            "sunsubscribe" => (Family::Shard, false),
            _ => return None,
        })
    }

    /// The confirmation's first element (and the command sent to a server, uppercased).
    pub(super) fn word(self, subscribe: bool) -> &'static str {
        match (self, subscribe) {
            (Family::Channel, true) => "subscribe",
            (Family::Channel, false) => "unsubscribe",
            (Family::Pattern, true) => "psubscribe",
            (Family::Pattern, false) => "punsubscribe",
            (Family::Shard, true) => "ssubscribe",
            (Family::Shard, false) => "sunsubscribe",
        }
    }
}

/// One client's subscriptions. A channel or shard channel remembers the group it was
/// subscribed on (the owner of its slot then).
#[derive(Default)]
pub(super) struct Subs {
    pub channels: HashMap<Bytes, GroupId>,
    pub patterns: HashSet<Bytes>,
    pub shards: HashMap<Bytes, GroupId>,
}

impl Subs {
    /// The count a confirmation of `family` carries: channels and patterns together, shard
    /// channels apart (Redis 7.0's `clientSubscriptionsCount` / `clientShardSubscriptionsCount`).
    pub(super) fn count(&self, family: Family) -> usize {
        match family {
            Family::Shard => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// Moves each channel and shard channel to the group that owns its slot in `table`;
    /// returns the groups that lost or gained one (their links re-subscribe their share).
    pub(super) fn follow_owners(&mut self, table: &keyhop_router::RoutingTable) -> Vec<GroupId> {
        let mut moved = Vec::new();
        for (name, g) in self.channels.iter_mut().chain(self.shards.iter_mut()) {
            let now = table.group_for_key(name);
            if now != *g {
                for x in [*g, now] {
                    if !moved.contains(&x) {
                        moved.push(x);
                    }
                }
                *g = now;
            }
        }
        moved
    }

    /// Every subscription: the client stays in subscribed mode while this is not 0.
    pub(super) fn total(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shards.len()
    }

    /// Adds `name`; false when it was there already.
    pub(super) fn add(&mut self, family: Family, name: &[u8], group: GroupId) -> bool {
        let name = Bytes::copy_from_slice(name);
        match family {
            Family::Channel => self.channels.insert(name, group).is_none(),
            Family::Pattern => self.patterns.insert(name),
            Family::Shard => self.shards.insert(name, group).is_none(),
        }
    }

    /// Removes `name`: `Some(group)` when it was there (a pattern's group is meaningless).
    pub(super) fn remove(&mut self, family: Family, name: &[u8]) -> Option<GroupId> {
        match family {
            Family::Channel => self.channels.remove(name),
            Family::Pattern => self.patterns.remove(name).then_some(0),
            Family::Shard => self.shards.remove(name),
        }
    }

    /// Every name of `family`.
    pub(super) fn names(&self, family: Family) -> Vec<Bytes> {
        match family {
            Family::Channel => self.channels.keys().cloned().collect(),
            Family::Pattern => self.patterns.iter().cloned().collect(),
            Family::Shard => self.shards.keys().cloned().collect(),
        }
    }

    /// The commands that subscribe a fresh connection of `group` to its share of everything,
    /// and how many confirmations the server answers them with.
    pub(super) fn resubscribe(&self, group: GroupId) -> (BytesMut, usize) {
        let mut out = BytesMut::new();
        let mut confirmations = 0;
        let channels: Vec<&[u8]> =
            self.channels.iter().filter(|(_, g)| **g == group).map(|(c, _)| c.as_ref()).collect();
        let patterns: Vec<&[u8]> = self.patterns.iter().map(|p| p.as_ref()).collect();
        let shards: Vec<&[u8]> =
            self.shards.iter().filter(|(_, g)| **g == group).map(|(c, _)| c.as_ref()).collect();
        for (word, names) in
            [(&b"SUBSCRIBE"[..], channels), (b"PSUBSCRIBE", patterns), (b"SSUBSCRIBE", shards)]
        {
            if !names.is_empty() {
                confirmations += names.len();
                out.extend_from_slice(&resp::command(std::iter::once(word).chain(names)));
            }
        }
        (out, confirmations)
    }
}

/// Appends one confirmation (`[word, name, count]`; `name` `None` is the null of "nothing to
/// unsubscribe") in the client's protocol: an array in RESP2, a push in RESP3.
pub(super) fn confirm(
    out: &mut BytesMut,
    proto: Proto,
    word: &str,
    name: Option<&[u8]>,
    count: usize,
) {
    match proto {
        Proto::Resp2 => out.put_slice(b"*3\r\n"),
        Proto::Resp3 => out.put_slice(b">3\r\n"),
    }
    resp::push_bulk(out, word.as_bytes());
    match name {
        Some(n) => resp::push_bulk(out, n),
        None => out.put_slice(&proto.nil()),
    }
    resp::push_int(out, count as i64);
}

/// What a frame from a subscribed server connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Frame {
    /// `message`, `pmessage` or `smessage`: forwarded to the client as it is.
    Message,
    /// A (un)subscribe confirmation: counted, not forwarded.
    Confirmation,
    /// An error reply (to a command keyhop sent).
    Error,
    /// Anything else (ignored).
    Other,
}

/// Classifies a whole reply frame by its type and first element.
pub(super) fn classify(frame: &[u8]) -> Frame {
    match frame.first() {
        Some(b'*' | b'>') => {}
        Some(b'-' | b'!') => return Frame::Error,
        _ => return Frame::Other,
    }
    let Some(cr) = frame.iter().position(|&b| b == b'\r') else { return Frame::Other };
    let Some(first) = frame.get(cr + 2..).and_then(resp::text_of) else { return Frame::Other };
    match first {
        b"message" | b"pmessage" | b"smessage" => Frame::Message,
        b"subscribe" | b"psubscribe" | b"ssubscribe" | b"unsubscribe" | b"punsubscribe"
        | b"sunsubscribe" => Frame::Confirmation,
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_resp2_and_resp3_frames() {
        assert_eq!(classify(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n"), Frame::Message);
        assert_eq!(
            classify(b">4\r\n$8\r\npmessage\r\n$2\r\na*\r\n$1\r\na\r\n$1\r\nx\r\n"),
            Frame::Message
        );
        assert_eq!(classify(b">3\r\n$8\r\nsmessage\r\n$1\r\na\r\n$1\r\nx\r\n"), Frame::Message);
        assert_eq!(classify(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"), Frame::Confirmation);
        assert_eq!(classify(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"), Frame::Confirmation);
        assert_eq!(classify(b"-ERR no\r\n"), Frame::Error);
        assert_eq!(classify(b"+PONG\r\n"), Frame::Other);
        assert_eq!(classify(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), Frame::Other);
    }

    #[test]
    fn counts_as_redis_does() {
        let mut s = Subs::default();
        assert!(s.add(Family::Channel, b"a", 0));
        assert!(!s.add(Family::Channel, b"a", 0));
        assert!(s.add(Family::Pattern, b"p*", 0));
        assert!(s.add(Family::Shard, b"s", 1));
        assert_eq!((s.count(Family::Channel), s.count(Family::Shard), s.total()), (2, 1, 3));
        let (cmds, n) = s.resubscribe(1);
        assert_eq!(n, 2);
        assert_eq!(
            &cmds[..],
            b"*2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\np*\r\n*2\r\n$10\r\nSSUBSCRIBE\r\n$1\r\ns\r\n"
        );
        let mut out = BytesMut::new();
        confirm(&mut out, Proto::Resp3, "unsubscribe", None, 0);
        assert_eq!(&out[..], b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n");
    }
}
