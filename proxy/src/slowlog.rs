//! SLOWLOG as seen by the proxy: commands whose client-observed latency passed the threshold,
//! with the group that served them, answered in Redis's reply format.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::resp;

/// Entries added per second at most (see [`SlowLog::room`]).
pub const MAX_PER_SECOND: usize = 1000;

/// Arguments kept per entry, and bytes kept per argument (as Redis).
const MAX_ARGS: usize = 32;
const MAX_ARG_LEN: usize = 128;

/// One slow command.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Unique, growing id.
    pub id: u64,
    /// Unix time the command finished.
    pub time: u64,
    /// Client-observed duration.
    pub duration: Duration,
    /// The command's arguments, shortened like Redis does.
    pub args: Vec<Bytes>,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's name (CLIENT SETNAME).
    pub name: Bytes,
    /// The group that served it (empty when keyhop answered itself).
    pub group: String,
}

/// A bounded log of slow commands, newest first.
#[derive(Debug, Default)]
pub struct SlowLog {
    entries: VecDeque<Entry>,
    next_id: u64,
    /// The second (Unix time) `pushed` counts entries for.
    second: u64,
    pushed: usize,
}

/// Shortens arguments the way Redis's SLOWLOG does.
pub fn shorten_args<'a>(args: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<Bytes> {
    let total = args.len();
    let mut out = Vec::with_capacity(total.min(MAX_ARGS));
    for (i, a) in args.enumerate() {
        if i == MAX_ARGS - 1 && total > MAX_ARGS {
            out.push(Bytes::from(format!("... ({} more arguments)", total - MAX_ARGS + 1)));
            break;
        }
        if a.len() > MAX_ARG_LEN {
            let mut s = a[..MAX_ARG_LEN].to_vec();
            s.extend_from_slice(format!("... ({} more bytes)", a.len() - MAX_ARG_LEN).as_bytes());
            out.push(Bytes::from(s));
        } else {
            out.push(Bytes::copy_from_slice(a));
        }
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl SlowLog {
    /// Adds an entry, keeping at most `max_len`.
    pub fn push(&mut self, mut e: Entry, max_len: usize) {
        e.id = self.next_id;
        self.next_id += 1;
        e.time = unix_now();
        if e.time != self.second {
            self.second = e.time;
            self.pushed = 0;
        }
        self.pushed += 1;
        self.entries.push_front(e);
        self.entries.truncate(max_len);
    }

    /// How many more entries may be added this second: at most [`MAX_PER_SECOND`] (or
    /// `max_len`, if larger). When keyhop is overloaded every command is slow (its latency
    /// includes queueing), and building an entry for each one only to evict it (copied
    /// arguments, a lock) cost 3% of the CPU with 1,000 clients and 35,000 requests/s.
    pub fn room(&self, max_len: usize) -> usize {
        self.room_at(max_len, unix_now())
    }

    fn room_at(&self, max_len: usize, now: u64) -> usize {
        let budget = max_len.max(MAX_PER_SECOND);
        if now != self.second { budget } else { budget.saturating_sub(self.pushed) }
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every entry.
    pub fn reset(&mut self) {
        self.entries.clear();
    }

    /// The reply to `SLOWLOG GET n` (`n < 0`: all): Redis's six fields plus the group.
    pub fn get_reply(&self, n: i64) -> Bytes {
        let take = if n < 0 { self.entries.len() } else { (n as usize).min(self.entries.len()) };
        let mut out = BytesMut::new();
        resp::push_array_len(&mut out, take);
        for e in self.entries.iter().take(take) {
            resp::push_array_len(&mut out, 7);
            resp::push_int(&mut out, e.id as i64);
            resp::push_int(&mut out, e.time as i64);
            resp::push_int(&mut out, e.duration.as_micros().min(i64::MAX as u128) as i64);
            resp::push_array_len(&mut out, e.args.len());
            for a in &e.args {
                resp::push_bulk(&mut out, a);
            }
            resp::push_bulk(&mut out, e.client.to_string().as_bytes());
            resp::push_bulk(&mut out, &e.name);
            resp::push_bulk(&mut out, e.group.as_bytes());
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_newest_first_and_bounded() {
        let mut log = SlowLog::default();
        let client: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        for i in 0..5 {
            let args = shorten_args([b"GET".as_slice(), format!("k{i}").as_bytes()].into_iter());
            let e = Entry {
                id: 0,
                time: 0,
                duration: Duration::from_millis(20),
                args,
                client,
                name: Bytes::new(),
                group: "g1".into(),
            };
            log.push(e, 3);
        }
        assert_eq!(log.len(), 3);
        let reply = log.get_reply(1);
        assert!(reply.starts_with(b"*1\r\n*7\r\n:4\r\n"), "{reply:?}");
        assert!(reply.windows(2).any(|w| w == b"k4"));
        log.reset();
        assert!(log.is_empty());
    }

    #[test]
    fn admits_a_bounded_number_per_second() {
        let mut log = SlowLog::default();
        assert_eq!(log.room(3), MAX_PER_SECOND);
        assert_eq!(log.room(5000), 5000, "a longer log gets a larger budget");
        log.second = 1000;
        log.pushed = MAX_PER_SECOND - 2;
        assert_eq!(log.room_at(3, 1000), 2);
        log.pushed = MAX_PER_SECOND;
        assert_eq!(log.room_at(3, 1000), 0);
        assert_eq!(log.room_at(3, 1001), MAX_PER_SECOND, "a new second: a full budget again");
    }

    #[test]
    fn shortens_like_redis() {
        let long = vec![b'a'; 200];
        let args: Vec<&[u8]> = std::iter::repeat_n(long.as_slice(), 40).collect();
        let out = shorten_args(args.into_iter());
        assert_eq!(out.len(), 32);
        assert!(out[0].ends_with(b"... (72 more bytes)"));
        assert_eq!(out[31], Bytes::from("... (9 more arguments)"));
    }
}
