//! A blocking command's timeout argument: where it is, how Redis reads it, and the same
//! command rewritten with what is left of it, so that a command re-issued on a new master after
//! a failover still ends when the client's own timeout would have ended it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keyhop_router::Args;

use crate::pinned::Command;
use crate::resp::{self, Proto};

/// How Redis reads a timeout argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// Seconds, as a float (BLPOP and friends).
    Seconds,
    /// Whole milliseconds (XREAD BLOCK, WAIT).
    Millis,
}

/// A command's timeout: the argument that holds it and how long it is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeout {
    /// The argument index, when the command has a timeout keyhop can read.
    arg: Option<usize>,
    unit: Unit,
    /// `None`: block forever (0), or an argument Redis refuses anyway (it answers at once).
    total: Option<Duration>,
}

impl Timeout {
    /// The timeout of `cmd` (whose lowercased name is `name`).
    pub(super) fn of(name: &str, cmd: &Command) -> Timeout {
        let n = cmd.count();
        let (arg, unit) = match name {
            "blpop" | "brpop" | "blmove" | "brpoplpush" | "bzpopmin" | "bzpopmax" => {
                (n.checked_sub(1), Unit::Seconds)
            }
            "blmpop" | "bzmpop" => ((n > 1).then_some(1), Unit::Seconds),
            "wait" => ((n > 2).then_some(2), Unit::Millis),
            "xread" | "xreadgroup" => (xread_block_arg(cmd), Unit::Millis),
            _ => (None, Unit::Millis),
        };
        let total = arg.and_then(|i| parse(cmd.arg(i), unit));
        Timeout { arg, unit, total }
    }

    /// When the command times out, if it does.
    pub(super) fn deadline(&self, started: Instant) -> Option<Instant> {
        self.total.map(|t| started + t)
    }

    /// `cmd` with its timeout replaced by what is left of it at `now`; `None` once it has run
    /// out (the caller answers what Redis answers on timeout).
    pub(super) fn remaining_frame(
        &self,
        cmd: &Command,
        started: Instant,
        now: Instant,
    ) -> Option<Bytes> {
        let (Some(arg), Some(total)) = (self.arg, self.total) else {
            return Some(cmd.frame.clone());
        };
        let left = total.checked_sub(now.saturating_duration_since(started))?;
        let ms = left.as_millis();
        if ms == 0 {
            return None;
        }
        // Never 0: that would mean "forever".
        let text = match self.unit {
            Unit::Seconds => format!("{}.{:03}", ms / 1000, ms % 1000),
            Unit::Millis => ms.to_string(),
        };
        Some(resp::command(
            (0..cmd.count()).map(|i| if i == arg { text.as_bytes() } else { cmd.arg(i) }),
        ))
    }
}

/// The reply Redis gives a blocking command that timed out (checked against redis-server 7.0:
/// a null array in RESP2 for every list, sorted-set and stream command, including BLMOVE and
/// BRPOPLPUSH; WAIT counts replicas, none of which acknowledged through a failover).
pub(super) fn timed_out(name: &str, proto: Proto) -> Bytes {
    match (name, proto) {
        ("wait", _) => resp::int(0),
        (_, Proto::Resp2) => Bytes::from_static(b"*-1\r\n"),
        (_, Proto::Resp3) => Bytes::from_static(b"_\r\n"),
    }
}

/// The index of XREAD/XREADGROUP's BLOCK value (options come before STREAMS).
fn xread_block_arg(cmd: &Command) -> Option<usize> {
    let mut i = 1;
    while i < cmd.count() {
        let a = cmd.arg(i);
        if a.eq_ignore_ascii_case(b"streams") {
            return None;
        }
        if a.eq_ignore_ascii_case(b"block") {
            return (i + 1 < cmd.count()).then_some(i + 1);
        }
        i += if a.eq_ignore_ascii_case(b"count") {
            2
        } else if a.eq_ignore_ascii_case(b"group") {
            3
        } else {
            1
        };
    }
    None
}

/// A timeout argument as Redis reads it; `None` for 0 (forever) or a value Redis refuses.
fn parse(arg: &[u8], unit: Unit) -> Option<Duration> {
    let text = std::str::from_utf8(arg).ok()?;
    let ms = match unit {
        Unit::Seconds => {
            let s: f64 = text.trim().parse().ok()?;
            if !s.is_finite() || s <= 0.0 {
                return None;
            }
            s * 1000.0
        }
        Unit::Millis => {
            let ms: i64 = text.parse().ok()?;
            if ms <= 0 {
                return None;
            }
            ms as f64
        }
    };
    // Redis rounds a fractional millisecond up only through its event loop: close enough.
    Some(Duration::from_micros((ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{RequestScanner, Scanned};

    fn cmd(args: &[&str]) -> Command {
        let frame = resp::command(args.iter().map(|a| a.as_bytes()));
        let mut s = RequestScanner::default();
        assert!(matches!(s.scan(&frame), Ok(Some(Scanned::Command { .. }))));
        Command { frame, ranges: s.args }
    }

    #[test]
    fn finds_and_rewrites_each_timeout() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(400);
        let c = cmd(&["BLPOP", "a", "b", "1.5"]);
        let t = Timeout::of("blpop", &c);
        let f = t.remaining_frame(&c, t0, later).expect("time left");
        assert_eq!(&f[..], &resp::command([&b"BLPOP"[..], b"a", b"b", b"1.100"])[..]);
        let c = cmd(&["BLMPOP", "2", "1", "k", "LEFT"]);
        let f = Timeout::of("blmpop", &c).remaining_frame(&c, t0, later).expect("time left");
        assert_eq!(&f[..], &resp::command([&b"BLMPOP"[..], b"1.600", b"1", b"k", b"LEFT"])[..]);
        let c = cmd(&["XREADGROUP", "GROUP", "g", "c", "BLOCK", "1000", "STREAMS", "s", ">"]);
        let f = Timeout::of("xreadgroup", &c).remaining_frame(&c, t0, later).expect("time left");
        let want = ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "600", "STREAMS", "s", ">"];
        assert_eq!(&f[..], &resp::command(want.iter().map(|a| a.as_bytes()))[..]);
        let c = cmd(&["WAIT", "1", "300"]);
        assert!(Timeout::of("wait", &c).remaining_frame(&c, t0, later).is_none(), "ran out");
    }

    #[test]
    fn zero_and_bad_timeouts_are_sent_unchanged() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(100);
        for c in [cmd(&["BLPOP", "k", "0"]), cmd(&["BLPOP", "k", "x"]), cmd(&["BLPOP", "k", "-1"])]
        {
            let t = Timeout::of("blpop", &c);
            assert!(t.deadline(t0).is_none());
            assert_eq!(t.remaining_frame(&c, t0, later).as_deref(), Some(&c.frame[..]));
        }
    }
}
