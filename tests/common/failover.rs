//! What the failover tests share: a client writing continuously through keyhop and recording
//! every reply, subscribers timing `+switch-master`, and the checks run on what they saw
//! (outages, acknowledged writes missing on a server). Used by `failover_proxy.rs` (data safety
//! through failovers) and `failover_fence.rs` (the fence and the re-check as a client sees them).

use super::{Raw, Reply, SentinelCluster as Cluster, cmd, group_of, role, wait_until};

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Generous bound for anything Sentinel does (detection, election, promotion) on a loaded machine.
pub const FAILOVER_BOUND: Duration = Duration::from_secs(30);
/// Bound for links (re)connecting and sentinels discovering each other.
pub const LINK_BOUND: Duration = Duration::from_secs(15);
/// Pause between two writes of the writer: fine enough to time an outage to a few ms, light
/// enough not to starve Sentinel on a 2-core machine.
pub const WRITE_PACE: Duration = Duration::from_micros(700);
/// No writer runs longer than this, whatever happens to the test.
pub const WRITER_MAX: Duration = Duration::from_secs(100);

impl Cluster {
    /// The cluster, with every sentinel knowing the others and the replicas.
    pub fn new() -> Cluster {
        Cluster::new_ready(LINK_BOUND)
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }
}

pub fn is_master(port: u16) -> bool {
    role(port) == "master"
}

/// A replica of someone, with its replication link up.
pub fn is_linked_replica(port: u16) -> bool {
    role(port) == "slave" && cmd(port, &["INFO", "replication"]).contains("master_link_status:up")
}

/// A unique key of `group` for write number `i`.
pub fn key_for(group: usize, i: u64) -> String {
    (0..1000)
        .map(|j| format!("w{i}.{j}"))
        .find(|k| group_of(k) == group)
        .expect("a key of the group among 1000 candidates")
}

/// One write through keyhop.
#[derive(Clone, Debug)]
pub struct Write {
    pub group: usize,
    pub key: String,
    pub value: String,
    pub sent: Instant,
    pub done: Instant,
    /// `Err` holds the error reply.
    pub result: Result<(), String>,
}

impl Write {
    pub fn ok(&self) -> bool {
        self.result.is_ok()
    }
}

/// What a [`Writer`] sends.
#[derive(Clone)]
pub enum Op {
    /// SETs alternating between g1 and g2 keys, each with a unique key and value.
    Sets,
    /// GETs of one key, expecting `value`.
    Gets { key: String, value: String },
}

/// A client connection writing (or reading) continuously through keyhop on a thread of its own.
pub struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Write>>>,
    handle: Option<JoinHandle<Option<String>>>,
}

impl Writer {
    /// Starts writing through keyhop on `port`: SETs alternating between g1 and g2 keys.
    pub fn start(port: u16) -> Writer {
        Writer::start_op(port, Op::Sets)
    }

    /// Starts sending `op` through keyhop on `port`.
    pub fn start_op(port: u16, op: Op) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Write>>> = Arc::default();
        let mut raw = Raw::connect(port);
        let (s, l) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0u64;
            // Returns why the connection ended, if it did.
            while !s.load(Ordering::Relaxed) && started.elapsed() < WRITER_MAX && i < 1_000_000 {
                let (group, key, value, cmd): (usize, String, String, &[u8]) = match &op {
                    Op::Sets => {
                        let group = (i % 2) as usize;
                        let value = format!("v{i}-{}", started.elapsed().as_nanos());
                        (group, key_for(group, i), value, b"SET")
                    }
                    Op::Gets { key, value } => (group_of(key), key.clone(), value.clone(), b"GET"),
                };
                let sent = Instant::now();
                match &op {
                    Op::Sets => raw.send(&[cmd, key.as_bytes(), value.as_bytes()]),
                    Op::Gets { .. } => raw.send(&[cmd, key.as_bytes()]),
                }
                let result = match raw.try_read() {
                    Ok(Reply::Status(s)) if s == "OK" => Ok(()),
                    Ok(Reply::Bulk(Some(b))) if b == value.as_bytes() => Ok(()),
                    Ok(Reply::Error(e)) => Err(e),
                    Ok(other) => Err(format!("unexpected reply {other:?}")),
                    Err(e) => return Some(format!("connection ended: {e}")),
                };
                let w = Write { group, key, value, sent, done: Instant::now(), result };
                l.lock().unwrap_or_else(|e| e.into_inner()).push(w);
                i += 1;
                std::thread::sleep(WRITE_PACE);
            }
            None
        });
        Writer { stop, log, handle: Some(handle) }
    }

    pub fn snapshot(&self) -> Vec<Write> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn ok_count(&self) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|w| w.ok()).count()
    }

    /// Waits until `n` more writes succeeded (panics after `bound`).
    pub fn wait_progress(&self, n: usize, bound: Duration) {
        let base = self.ok_count();
        let ok = wait_until(bound, || self.ok_count() >= base + n);
        assert!(ok, "writer made no progress: {:?}", self.snapshot().last());
    }

    /// Stops the writer; returns every write and asserts keyhop never closed the connection.
    pub fn finish(mut self) -> Vec<Write> {
        self.stop.store(true, Ordering::Relaxed);
        let ended = self.handle.take().map(|h| h.join().expect("writer thread"));
        assert_eq!(ended, Some(None), "keyhop closed the client's connection");
        self.snapshot()
    }
}

/// `+switch-master` of one group as seen by subscribers on several sentinels: the earliest.
pub struct SwitchWatch {
    stop: Arc<AtomicBool>,
    /// Every message for the group: when it arrived, and the new master's `host:port`.
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    handles: Vec<JoinHandle<()>>,
}

impl SwitchWatch {
    /// Subscribes to `+switch-master` on every sentinel port (reconnecting if a sentinel goes
    /// away and comes back) and records the messages about `group`.
    pub fn start(ports: &[u16], group: &str) -> SwitchWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let mut subscribed = Vec::new();
        let handles = ports
            .iter()
            .map(|&port| {
                let (stop, seen, group) = (stop.clone(), seen.clone(), group.to_string());
                let (tx, rx) = std::sync::mpsc::channel();
                subscribed.push(rx);
                std::thread::spawn(move || subscribe_loop(port, &group, &stop, &seen, tx))
            })
            .collect();
        // Subscribed before the test goes on, so no event can be missed.
        for rx in subscribed {
            assert!(rx.recv_timeout(LINK_BOUND).is_ok(), "could not subscribe to a sentinel");
        }
        SwitchWatch { stop, seen, handles }
    }

    /// The earliest `+switch-master` seen at or after `since`, and the new master.
    pub fn first_since(&self, since: Instant) -> Option<(Instant, String)> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().filter(|(t, _)| *t >= since).min_by_key(|(t, _)| *t).cloned()
    }

    /// Waits for a `+switch-master` at or after `since` (panics after `bound`).
    pub fn wait_since(&self, since: Instant, bound: Duration) -> (Instant, String) {
        let ok = wait_until(bound, || self.first_since(since).is_some());
        assert!(ok, "no +switch-master within {bound:?}");
        self.first_since(since).expect("seen")
    }
}

impl Drop for SwitchWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn subscribe_loop(
    port: u16,
    group: &str,
    stop: &AtomicBool,
    seen: &Mutex<Vec<(Instant, String)>>,
    subscribed: std::sync::mpsc::Sender<()>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let Ok(reader) = s.try_clone() else { continue };
        let mut raw = Raw { reader: std::io::BufReader::new(reader), writer: s };
        if raw.try_call(&["PSUBSCRIBE", "+switch-master"]).is_none() {
            continue;
        }
        let _ = subscribed.send(());
        while !stop.load(Ordering::Relaxed) {
            match raw.try_read() {
                Ok(Reply::Array(Some(items))) => {
                    let at = Instant::now();
                    // pmessage, pattern, channel, "name old-ip old-port new-ip new-port".
                    let Some(Reply::Bulk(Some(payload))) = items.get(3) else { continue };
                    let text = String::from_utf8_lossy(payload);
                    let words: Vec<&str> = text.split_whitespace().collect();
                    if words.len() == 5 && words[0] == group {
                        let new = format!("{}:{}", words[3], words[4]);
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push((at, new));
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    }
}

/// A group's outage as the writer saw it.
#[derive(Debug)]
pub struct Outage {
    pub errors: usize,
    /// The first failed write at or after `since` (sent time).
    pub first_fail: Option<Instant>,
    /// The first successful write after that failure (reply time).
    pub first_ok_after: Option<Instant>,
    /// The last failed write (reply time).
    pub last_fail: Option<Instant>,
}

pub fn outage(writes: &[Write], group: usize, since: Instant) -> Outage {
    let mine: Vec<&Write> = writes.iter().filter(|w| w.group == group && w.sent >= since).collect();
    let errors = mine.iter().filter(|w| !w.ok()).count();
    let first_fail_idx = mine.iter().position(|w| !w.ok());
    let first_fail = first_fail_idx.map(|i| mine[i].sent);
    let first_ok_after =
        first_fail_idx.and_then(|i| mine[i..].iter().find(|w| w.ok()).map(|w| w.done));
    let last_fail = mine.iter().rev().find(|w| !w.ok()).map(|w| w.done);
    Outage { errors, first_fail, first_ok_after, last_fail }
}

/// The first successful write of `group` whose reply came at or after `at`.
pub fn first_ok_at_or_after(writes: &[Write], group: usize, at: Instant) -> Option<&Write> {
    writes.iter().find(|w| w.group == group && w.ok() && w.done >= at)
}

/// Signed milliseconds from `a` to `b`.
pub fn ms(a: Instant, b: Instant) -> f64 {
    if b >= a {
        b.duration_since(a).as_secs_f64() * 1000.0
    } else {
        -(a.duration_since(b).as_secs_f64() * 1000.0)
    }
}

/// The values of `keys` on the server at `port` (pipelined GETs).
pub fn get_many(port: u16, keys: &[&str]) -> Vec<Option<Vec<u8>>> {
    let mut raw = Raw::connect(port);
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let mut bytes = Vec::new();
        for k in chunk {
            bytes.extend_from_slice(&super::encode(&[b"GET", k.as_bytes()]));
        }
        raw.send_raw(&bytes);
        for _ in chunk {
            out.push(match raw.read() {
                Reply::Bulk(b) => b,
                other => panic!("GET answered {other:?}"),
            });
        }
    }
    out
}

/// The acknowledged writes among `writes` whose value is not on the server at `port`.
pub fn missing_on<'a>(port: u16, writes: &[&'a Write]) -> Vec<&'a Write> {
    let keys: Vec<&str> = writes.iter().map(|w| w.key.as_str()).collect();
    let values = get_many(port, &keys);
    writes
        .iter()
        .zip(values)
        .filter(|(w, v)| v.as_deref() != Some(w.value.as_bytes()))
        .map(|(w, _)| *w)
        .collect()
}

/// The acknowledged writes of `group`.
pub fn acked(writes: &[Write], group: usize) -> Vec<&Write> {
    writes.iter().filter(|w| w.group == group && w.ok()).collect()
}

/// Waits until the newest acknowledged write of `group` sent after `after` is on `port`.
pub fn wait_writes_land(
    w: &Writer,
    group: usize,
    port: u16,
    after: Instant,
    bound: Duration,
) -> bool {
    wait_until(bound, || {
        let last =
            w.snapshot().into_iter().rev().find(|x| x.group == group && x.ok() && x.sent > after);
        last.is_some_and(|x| cmd(port, &["GET", &x.key]) == x.value)
    })
}

/// The first error replies of `group`, for failure messages.
pub fn errors_of(writes: &[Write], group: usize) -> Vec<String> {
    writes
        .iter()
        .filter(|w| w.group == group)
        .filter_map(|w| w.result.clone().err())
        .take(5)
        .collect()
}

/// Whether keyhop (any client connection of it) is subscribed to sentinel `port`'s events: it
/// is the only client subscribing to this many channels.
pub fn keyhop_subscribed(port: u16) -> bool {
    cmd(port, &["CLIENT", "LIST"]).lines().any(|l| l.contains(" sub=17 "))
}

/// The refusal a client gets for a fenced master at `addr` of g1.
pub fn fenced_error(addr: &str) -> String {
    format!(
        "ERR keyhop: backend {addr} of group g1 is being replaced by a Sentinel failover; \
         requests are refused until the new master is known, retry shortly"
    )
}

/// Asserts that every error of g1 (group 0) in `writes` is the fence's refusal for
/// `old_master` (never a replica's -READONLY, never a lost connection).
pub fn assert_g1_only_fenced(writes: &[Write], old_master: &str) {
    let fence = fenced_error(old_master);
    let other: Vec<&String> = writes
        .iter()
        .filter(|w| w.group == 0)
        .filter_map(|w| w.result.as_ref().err())
        .filter(|e| **e != fence)
        .collect();
    assert!(other.is_empty(), "g1 errors other than the fence's: {other:?}");
}

/// How keyhop adopted `new` as `group`'s master (`RolePoll`, `SwitchEvent`, `Majority`), from its
/// "switched master" log line, if it did.
pub fn switched_via(log: &str, group: &str, new: &str) -> Option<String> {
    let (g, n) = (format!("group={group} "), format!("new={new} "));
    let line =
        log.lines().find(|l| l.contains("switched master") && l.contains(&g) && l.contains(&n))?;
    let via = line.split_whitespace().find_map(|w| w.strip_prefix("via="))?;
    Some(via.to_string())
}

/// The `flags` sentinel `port` lists for the replica `addr` of `group` ("" when not listed).
pub fn replica_flags(port: u16, group: &str, addr: &str) -> String {
    let Some(mut raw) = Raw::try_connect(port) else { return String::new() };
    let Some(Reply::Array(Some(replicas))) = raw.try_call(&["SENTINEL", "REPLICAS", group]) else {
        return String::new();
    };
    let field = |fields: &[Reply], name: &str| {
        fields.chunks(2).find(|kv| kv[0].text() == name).map(|kv| kv[1].text())
    };
    replicas
        .iter()
        .filter_map(|r| match r {
            Reply::Array(Some(fields)) => Some(fields.as_slice()),
            _ => None,
        })
        .find(|f| field(f, "name").as_deref() == Some(addr))
        .and_then(|f| field(f, "flags"))
        .unwrap_or_default()
}
