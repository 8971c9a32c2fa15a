//! The mover's connection to one server (source or target) and the walk over its keys: which
//! dbs hold keys (`INFO keyspace`), `SELECT`, and `SCAN` pages filtered to a window of slots.
//! Vanilla Redis has no per-slot index, so every key is read and its slot computed here.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keyhop_router::{SLOT_COUNT, key_slot};
use redis_protocol::resp2::types::BytesFrame;

use super::MoveError;
use crate::sentinel::resp::{Conn, text};

/// Connect (and AUTH) timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one ordinary command (`SCAN`, `INFO`, `SELECT`, `UNLINK`).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys asked for per `SCAN` call: large enough that the round trips do not dominate, small
/// enough that one call stays well under a millisecond of the server's time.
const SCAN_COUNT: &[u8] = b"1000";

/// Which end of a move a server is, for the error it produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    /// The server keys are moved from (or swept, or counted).
    Source,
    /// The server keys are moved to.
    Target,
}

/// The slots of a window as a bitmap, for a cheap test per scanned key.
pub(super) struct SlotSet {
    bits: Vec<u64>,
}

impl SlotSet {
    /// The set of the inclusive `ranges`; an error names a range out of order or past the last
    /// slot.
    pub(super) fn new(ranges: &[(u16, u16)]) -> Result<SlotSet, MoveError> {
        let mut bits = vec![0u64; SLOT_COUNT / 64];
        for &(lo, hi) in ranges {
            if lo > hi || usize::from(hi) >= SLOT_COUNT {
                return Err(MoveError::Invalid(format!(
                    "slot range {lo}-{hi} is not valid; give ranges low-high with \
                     0 <= low <= high <= {}",
                    SLOT_COUNT - 1
                )));
            }
            for s in lo..=hi {
                bits[usize::from(s) / 64] |= 1 << (s % 64);
            }
        }
        if ranges.is_empty() {
            return Err(MoveError::Invalid("no slots given; name at least one slot range".into()));
        }
        Ok(SlotSet { bits })
    }

    /// Whether `key`'s slot (hash tags included, as routing computes it) is in the set.
    pub(super) fn has_key(&self, key: &[u8]) -> bool {
        let s = key_slot(key);
        self.bits[usize::from(s) / 64] & (1 << (s % 64)) != 0
    }
}

/// One connection to a server, with errors that say which server and what to do.
pub(super) struct Link {
    conn: Conn,
    /// `host:port`, as given.
    pub(super) addr: String,
    side: Side,
}

/// What to do about an I/O failure talking to a server.
fn fix_for(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        "check the backend password"
    } else {
        "check that the server is up and reachable at that address"
    }
}

impl Link {
    /// Connects to `addr` and authenticates with `password`.
    pub(super) async fn open(
        side: Side,
        addr: &str,
        password: Option<&str>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<Link, MoveError> {
        match Conn::open(addr, password, tls, CONNECT_TIMEOUT).await {
            Ok(conn) => Ok(Link { conn, addr: addr.to_string(), side }),
            Err(e) => Err(error(side, addr, format!("cannot connect ({e}); {}", fix_for(&e)))),
        }
    }

    /// An error about this link's server.
    pub(super) fn error(&self, what: String) -> MoveError {
        error(self.side, &self.addr, what)
    }

    /// Sends `args` and waits up to `timeout` for the reply; an error reply is an error too.
    pub(super) async fn call_for(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<BytesFrame, MoveError> {
        let name = String::from_utf8_lossy(args.first().copied().unwrap_or(b"?")).into_owned();
        let reply = match tokio::time::timeout(timeout, self.conn.call(args)).await {
            Err(_) => {
                return Err(self.error(format!(
                    "{name} got no reply within {timeout:?}; check the server's load"
                )));
            }
            Ok(Err(e)) => {
                return Err(self.error(format!("{name} failed ({e}); {}", fix_for(&e))));
            }
            Ok(Ok(reply)) => reply,
        };
        Ok(reply)
    }

    /// [`Link::call_for`] with the ordinary timeout, turning an error reply into an error.
    pub(super) async fn call(&mut self, args: &[&[u8]]) -> Result<BytesFrame, MoveError> {
        let reply = self.call_for(args, CALL_TIMEOUT).await?;
        if let BytesFrame::Error(e) = &reply {
            let name = String::from_utf8_lossy(args.first().copied().unwrap_or(b"?")).into_owned();
            let fix = if e.starts_with("NOAUTH") || e.starts_with("WRONGPASS") {
                "check the backend password"
            } else {
                "check the server's version and configuration"
            };
            return Err(self.error(format!("{name} answered \"{}\"; {fix}", &**e)));
        }
        Ok(reply)
    }

    /// Checks that the server answers `PING` (a wrong or missing password shows up here).
    pub(super) async fn ping(&mut self) -> Result<(), MoveError> {
        match self.call(&[b"PING"]).await? {
            BytesFrame::SimpleString(s) if &s[..] == b"PONG" => Ok(()),
            other => Err(self.error(format!("PING answered {other:?}; is it a Redis server?"))),
        }
    }

    /// The dbs that hold keys, from `INFO keyspace` (`db3:keys=10,expires=0,...`).
    pub(super) async fn dbs(&mut self) -> Result<Vec<u32>, MoveError> {
        let reply = self.call(&[b"INFO", b"keyspace"]).await?;
        let Some(info) = text(&reply) else {
            return Err(self.error(format!("INFO keyspace answered {reply:?}")));
        };
        Ok(parse_keyspace(info))
    }

    /// Selects `db` for the following `SCAN`s, `MIGRATE`s and `UNLINK`s.
    pub(super) async fn select(&mut self, db: u32) -> Result<(), MoveError> {
        self.call(&[b"SELECT", db.to_string().as_bytes()]).await.map(|_| ())
    }

    /// One `SCAN` step: the next cursor (`"0"` at the end) and the keys of this page.
    pub(super) async fn scan(&mut self, cursor: &[u8]) -> Result<(Bytes, Vec<Bytes>), MoveError> {
        let reply = self.call(&[b"SCAN", cursor, b"COUNT", SCAN_COUNT]).await?;
        if let BytesFrame::Array(items) = &reply
            && let [BytesFrame::BulkString(next), BytesFrame::Array(keys)] = items.as_slice()
        {
            let keys = keys
                .iter()
                .filter_map(|k| match k {
                    BytesFrame::BulkString(b) => Some(b.clone()),
                    _ => None,
                })
                .collect();
            return Ok((next.clone(), keys));
        }
        Err(self.error(format!("SCAN answered {reply:?}")))
    }

    /// `UNLINK`s `keys` in the selected db; returns how many existed.
    pub(super) async fn unlink(&mut self, keys: &[Bytes]) -> Result<u64, MoveError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        args.push(b"UNLINK");
        args.extend(keys.iter().map(|k| &k[..]));
        match self.call(&args).await? {
            BytesFrame::Integer(n) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(self.error(format!("UNLINK answered {other:?}"))),
        }
    }
}

/// An error about the server at `addr`.
pub(super) fn error(side: Side, addr: &str, what: String) -> MoveError {
    match side {
        Side::Source => MoveError::Source(format!("source {addr}: {what}")),
        Side::Target => MoveError::Target(format!("target {addr}: {what}")),
    }
}

/// The db numbers listed by an `INFO keyspace` reply.
pub(super) fn parse_keyspace(info: &str) -> Vec<u32> {
    let mut dbs: Vec<u32> = info
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect();
    dbs.sort_unstable();
    dbs.dedup();
    dbs
}

/// Whether a `SCAN` cursor is the one that ends a walk.
pub(super) fn is_last(cursor: &[u8]) -> bool {
    cursor == b"0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_lists_dbs() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb3:keys=1,expires=1,avg_ttl=9\r\n";
        assert_eq!(parse_keyspace(info), vec![0, 3]);
        assert_eq!(parse_keyspace("# Keyspace\r\n"), Vec::<u32>::new());
    }

    #[test]
    fn slot_sets() {
        let set = SlotSet::new(&[(0, 8191)]).expect("valid");
        // "foo" is slot 12182, "bar" 5061; a hash tag routes by the tag alone.
        assert!(!set.has_key(b"foo"));
        assert!(set.has_key(b"bar"));
        assert!(set.has_key(b"{bar}.x"));
        let e = SlotSet::new(&[(5, 4)]).err().expect("out of order");
        assert_eq!(
            e.to_string(),
            "bad move: slot range 5-4 is not valid; give ranges low-high with \
             0 <= low <= high <= 16383"
        );
        assert!(SlotSet::new(&[(0, 16384)]).is_err());
        assert!(SlotSet::new(&[]).is_err());
    }
}
