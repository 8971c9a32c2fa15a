//! The dashboard's event timeline: a small ring buffer of rare happenings (a failover adopted,
//! a configuration reload, a fleet revision applied), recorded where they already happen.
//! Recording is one mutex push on those rare paths; nothing is recorded per request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use serde_json::{Value, json};

/// Events kept; older ones are dropped.
pub const CAPACITY: usize = 100;

/// One timeline entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Grows by one per event, so a poller can tell new entries from seen ones.
    pub id: u64,
    /// `failover`, `reload` or `fleet`.
    pub kind: &'static str,
    /// The group concerned, if one is.
    pub group: Option<String>,
    /// What happened, for people.
    pub text: String,
    /// When it was recorded (milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
    /// For a failover: how long the old master was fenced (writes refused) before the new one
    /// was adopted, when the fence was seen.
    pub writes_refused_ms: Option<u64>,
}

impl Event {
    /// The event as the dashboard JSON shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "group": self.group,
            "text": self.text,
            "at_unix_ms": self.at_unix_ms,
            "writes_refused_ms": self.writes_refused_ms,
        })
    }
}

/// A bounded buffer of the latest events.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    next_id: u64,
    buf: VecDeque<Event>,
}

impl Ring {
    /// An empty ring keeping at most `cap` events.
    pub const fn new(cap: usize) -> Ring {
        Ring { cap, next_id: 1, buf: VecDeque::new() }
    }

    /// Appends an event, dropping the oldest beyond the capacity; returns its id.
    pub fn push(
        &mut self,
        kind: &'static str,
        group: Option<String>,
        text: String,
        writes_refused_ms: Option<u64>,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let at_unix_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.buf.push_back(Event { id, kind, group, text, at_unix_ms, writes_refused_ms });
        while self.buf.len() > self.cap {
            self.buf.pop_front();
        }
        id
    }

    /// The events, newest first.
    pub fn newest_first(&self) -> Vec<Event> {
        self.buf.iter().rev().cloned().collect()
    }
}

static EVENTS: Mutex<Ring> = Mutex::new(Ring::new(CAPACITY));

/// When each fenced master's fence began (the start of its failover, as keyhop saw it) and,
/// once released, ended.
static FENCED: Mutex<Option<HashMap<String, Fence>>> = Mutex::new(None);

/// A fence's start and, once released, its end.
type Fence = (Instant, Option<Instant>);

/// Records an event in the process-wide timeline.
pub fn record(kind: &'static str, group: Option<String>, text: String, refused: Option<u64>) {
    EVENTS.lock().unwrap_or_else(PoisonError::into_inner).push(kind, group, text, refused);
}

/// The process-wide timeline, newest first.
pub fn recent() -> Vec<Event> {
    EVENTS.lock().unwrap_or_else(PoisonError::into_inner).newest_first()
}

/// Notes that `addr` was fenced (`on`) or released. A fence renewed by a later step of the same
/// failover keeps its first start; one set after a release starts anew.
pub fn fence(addr: &str, on: bool) {
    let now = Instant::now();
    let mut f = FENCED.lock().unwrap_or_else(PoisonError::into_inner);
    let map = f.get_or_insert_with(HashMap::new);
    match (map.get_mut(addr), on) {
        (Some((_, end @ None)), false) => *end = Some(now),
        (Some((start, end @ Some(_))), true) => (*start, *end) = (now, None),
        (None, true) => {
            map.insert(addr.to_string(), (now, None));
        }
        _ => {}
    }
}

/// How long `addr` was (or has been) fenced, forgetting the fence; `None` if it was not.
pub fn take_fence(addr: &str) -> Option<u64> {
    let mut f = FENCED.lock().unwrap_or_else(PoisonError::into_inner);
    let (start, end) = f.as_mut()?.remove(addr)?;
    Some(end.unwrap_or_else(Instant::now).duration_since(start).as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_capacity_events_newest_first() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push("reload", None, format!("e{i}"), None);
        }
        let v = r.newest_first();
        let texts: Vec<&str> = v.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["e4", "e3", "e2"]);
        let ids: Vec<u64> = v.iter().map(|e| e.id).collect();
        assert_eq!(ids, [5, 4, 3]);
        assert!(v[0].at_unix_ms > 1_600_000_000_000, "{}", v[0].at_unix_ms);
    }

    #[test]
    fn event_json_shape() {
        let mut r = Ring::new(CAPACITY);
        r.push("failover", Some("g1".into()), "g1: a -> b".into(), Some(1500));
        let j = r.newest_first()[0].to_json();
        assert_eq!(j["kind"], "failover");
        assert_eq!(j["group"], "g1");
        assert_eq!(j["text"], "g1: a -> b");
        assert_eq!(j["writes_refused_ms"], 1500);
        assert_eq!(j["id"], 1);
    }

    #[test]
    fn fence_duration_is_taken_once() {
        let addr = "127.0.0.1:65001";
        assert_eq!(take_fence(addr), None);
        fence(addr, true);
        fence(addr, true);
        fence(addr, false);
        let ms = take_fence(addr);
        assert!(ms.is_some_and(|ms| ms < 60_000), "{ms:?}");
        assert_eq!(take_fence(addr), None, "taken once");
        fence(addr, false);
        assert_eq!(take_fence(addr), None, "a release alone is no fence");
    }
}
