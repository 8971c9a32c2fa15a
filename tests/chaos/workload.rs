//! The steady client load every chaos test runs through keyhop while it injects a fault: per
//! group one writer (alternating `SET` of a unique key and `INCR` of the group's counter) and one
//! reader (`GET` of a key whose value is known), each on a connection and thread of its own so a
//! stalled group never delays the other group's requests. Every request and its outcome is
//! recorded, and the checks below compare what was acknowledged with what the servers hold.

use crate::common::failover::get_many;
use crate::common::{Raw, Reply, cmd, tag_of, wait_until};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Pause between two requests of one thread: a steady load that leaves the 2-core machine's
/// sentinels and servers room to run.
const PACE: Duration = Duration::from_millis(1);
/// No thread runs longer than this, whatever happens to the test.
const THREAD_MAX: Duration = Duration::from_secs(120);
/// Nor sends more requests than this.
const THREAD_MAX_OPS: u64 = 500_000;

/// What one request was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `SET key value` of a key written once.
    Set { key: String, value: String },
    /// `INCR` of the group's counter.
    Incr,
    /// `GET` of the group's read key.
    Get,
}

/// One request through keyhop and what came back.
#[derive(Clone, Debug)]
pub struct Op {
    pub group: usize,
    pub kind: Kind,
    pub sent: Instant,
    pub done: Instant,
    /// The counter's new value for an acknowledged `INCR` (0 otherwise); `Err` holds the error
    /// reply, or what else was wrong with the reply.
    pub result: Result<i64, String>,
}

impl Op {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// The keys of group `g`: all share one hash tag of the group.
pub fn counter_key(g: usize) -> String {
    format!("{}:counter", tag_of(g))
}

pub fn read_key(g: usize) -> String {
    format!("{}:read", tag_of(g))
}

pub fn read_value(g: usize) -> String {
    format!("known-{g}")
}

fn set_key(g: usize, i: u64) -> String {
    format!("{}:w{i}", tag_of(g))
}

/// The running load.
pub struct Workload {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Op>>>,
    handles: Vec<JoinHandle<Option<String>>>,
}

impl Workload {
    /// Sets the read keys through keyhop on `port`, then starts the four threads.
    pub fn start(port: u16) -> Workload {
        for g in 0..2 {
            assert_eq!(cmd(port, &["SET", &read_key(g), &read_value(g)]), "OK");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Op>>> = Arc::default();
        let mut handles = Vec::new();
        for g in 0..2 {
            for writer in [true, false] {
                let mut raw = Raw::connect(port);
                let (s, l) = (stop.clone(), log.clone());
                handles.push(std::thread::spawn(move || run(&mut raw, g, writer, &s, &l)));
            }
        }
        Workload { stop, log, handles }
    }

    pub fn snapshot(&self) -> Vec<Op> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn ok_count(&self, group: usize) -> usize {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|o| o.group == group && o.ok()).count()
    }

    /// Waits until `n` more requests of `group` succeeded; panics after `bound`.
    pub fn wait_progress(&self, group: usize, n: usize, bound: Duration) {
        let base = self.ok_count(group);
        let ok = wait_until(bound, || self.ok_count(group) >= base + n);
        let last = self.snapshot().into_iter().rev().find(|o| o.group == group);
        assert!(
            ok,
            "group g{} made no progress within {bound:?}; last request: {last:?}",
            group + 1
        );
    }

    /// Waits until a request of `group` sent at or after `since` succeeds; returns its reply
    /// time, or `None` after `bound`.
    pub fn wait_ok_since(&self, group: usize, since: Instant, bound: Duration) -> Option<Instant> {
        let first = || {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.iter().find(|o| o.group == group && o.sent >= since && o.ok()).map(|o| o.done)
        };
        wait_until(bound, || first().is_some());
        first()
    }

    /// Stops the threads; returns every request and asserts keyhop never closed a connection.
    pub fn finish(mut self) -> Ops {
        self.stop.store(true, Ordering::Relaxed);
        let ended: Vec<String> =
            self.handles.drain(..).filter_map(|h| h.join().expect("load thread")).collect();
        assert!(ended.is_empty(), "keyhop closed client connections: {ended:?}");
        Ops(self.snapshot())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// One thread's loop; returns why its connection ended, if it did.
fn run(
    raw: &mut Raw,
    g: usize,
    writer: bool,
    stop: &AtomicBool,
    log: &Mutex<Vec<Op>>,
) -> Option<String> {
    let started = Instant::now();
    let (counter, read) = (counter_key(g), read_key(g));
    let want_read = read_value(g);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < THREAD_MAX && i < THREAD_MAX_OPS {
        let kind = match (writer, i % 2) {
            (false, _) => Kind::Get,
            (true, 0) => Kind::Set { key: set_key(g, i), value: format!("v{g}.{i}") },
            (true, _) => Kind::Incr,
        };
        let sent = Instant::now();
        match &kind {
            Kind::Set { key, value } => raw.send(&[b"SET", key.as_bytes(), value.as_bytes()]),
            Kind::Incr => raw.send(&[b"INCR", counter.as_bytes()]),
            Kind::Get => raw.send(&[b"GET", read.as_bytes()]),
        }
        let reply = match raw.try_read() {
            Ok(r) => r,
            Err(e) => return Some(format!("g{} {kind:?}: {e}", g + 1)),
        };
        let result = match (&kind, reply) {
            (_, Reply::Error(e)) => Err(e),
            (Kind::Set { .. }, Reply::Status(s)) if s == "OK" => Ok(0),
            (Kind::Incr, Reply::Int(n)) => Ok(n),
            (Kind::Get, Reply::Bulk(Some(b))) if b == want_read.as_bytes() => Ok(0),
            (_, other) => Err(format!("wrong reply {other:?}")),
        };
        let op = Op { group: g, kind, sent, done: Instant::now(), result };
        log.lock().unwrap_or_else(|e| e.into_inner()).push(op);
        i += 1;
        std::thread::sleep(PACE);
    }
    None
}

/// Every request a [`Workload`] sent.
pub struct Ops(pub Vec<Op>);

impl Ops {
    /// The requests of `group`.
    pub fn of(&self, group: usize) -> impl DoubleEndedIterator<Item = &Op> {
        self.0.iter().filter(move |o| o.group == group)
    }

    /// Every error of `group`, in order.
    pub fn errors(&self, group: usize) -> Vec<String> {
        self.of(group).filter_map(|o| o.result.clone().err()).collect()
    }

    /// Asserts that every acknowledged write of `group` is on the server at `port` (its master
    /// now) and reads back through keyhop on `proxy`: each acknowledged `SET`'s value, and a
    /// counter at least the number of acknowledged `INCR`s, exactly that when `exact` (no `INCR`
    /// of the group failed, so none can have been applied unacknowledged). Returns (acknowledged
    /// SETs, acknowledged INCRs, counter value) for the report.
    pub fn assert_nothing_lost(
        &self,
        group: usize,
        port: u16,
        proxy: u16,
        exact: bool,
    ) -> (usize, usize, i64) {
        let sets: Vec<(&str, &str)> = self
            .of(group)
            .filter(|o| o.ok())
            .filter_map(|o| match &o.kind {
                Kind::Set { key, value } => Some((key.as_str(), value.as_str())),
                _ => None,
            })
            .collect();
        let keys: Vec<&str> = sets.iter().map(|(k, _)| *k).collect();
        for (where_, at) in [("on the server", port), ("through keyhop", proxy)] {
            let values = get_many(at, &keys);
            let lost: Vec<&(&str, &str)> = sets
                .iter()
                .zip(&values)
                .filter(|((_, v), got)| got.as_deref() != Some(v.as_bytes()))
                .map(|(s, _)| s)
                .collect();
            assert!(
                lost.is_empty(),
                "g{}: {} of {} acknowledged SETs are not readable {where_}, e.g. {:?}",
                group + 1,
                lost.len(),
                sets.len(),
                lost.first()
            );
        }
        let incrs: Vec<i64> = self
            .of(group)
            .filter(|o| o.kind == Kind::Incr)
            .filter_map(|o| o.result.clone().ok())
            .collect();
        // One writer per counter: its acknowledged values only grow.
        assert!(
            incrs.windows(2).all(|w| w[0] < w[1]),
            "g{} INCR replies went backwards",
            group + 1
        );
        let counter: i64 = cmd(port, &["GET", &counter_key(group)]).parse().unwrap_or(0);
        let through: i64 = cmd(proxy, &["GET", &counter_key(group)]).parse().unwrap_or(-1);
        assert_eq!(through, counter, "g{} counter through keyhop vs on the server", group + 1);
        let acked = incrs.len() as i64;
        assert!(
            counter >= acked && counter >= incrs.last().copied().unwrap_or(0),
            "g{}: counter {counter} < {acked} acknowledged INCRs (last reply {:?})",
            group + 1,
            incrs.last()
        );
        if exact {
            assert_eq!(counter, acked, "g{}: counter vs acknowledged INCRs", group + 1);
        }
        (sets.len(), incrs.len(), counter)
    }
}
