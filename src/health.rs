//! Active health checks of the backends in the routing table, for `/readyz` and `/topology`.
//!
//! Every [`PROBE_INTERVAL`] (and at once when a new table is published) one task sends `PING`
//! to each master and replica of the current table over its own connection, kept open between
//! rounds, and records per address whether the server answered `+PONG` within [`PROBE_TIMEOUT`].
//! A server counts as unreachable when:
//! - the connection is refused, reset, or no reply arrives in time (a stopped or overloaded host);
//! - `AUTH` with `backend_password` fails (the data plane's connections would fail the same way);
//! - it answers `-NOAUTH` (it needs a password keyhop does not have: every command would fail);
//! - it answers `-LOADING` (it refuses commands until its dataset is loaded);
//! - it answers any other error or something that is not a simple reply.
//!
//! A failed probe on a kept connection is retried once on a fresh one, so a connection closed by
//! the server's `timeout` setting never counts as an outage. One failed round flips the state (the
//! orchestrator's own failure threshold is the place to add hysteresis); one good round flips it
//! back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use keyhop_proxy::Stream;
use keyhop_router::{RoutingTable, SharedTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Time between two probe rounds.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe (connect, AUTH, PING) may take; below the interval so rounds never overlap.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// How often the prober looks for a newly published table between rounds.
const TABLE_POLL: Duration = Duration::from_millis(100);
/// A state older than this is not trusted (the prober itself would be stuck).
const STALE_AFTER: Duration = Duration::from_secs(5);
/// Longest reply line accepted from a probed server.
const MAX_LINE: usize = 512;
/// Longest `INFO replication` reply read (a few hundred bytes in practice).
const MAX_BULK: usize = 64 * 1024;

/// What the latest probe of one address found.
#[derive(Clone, Debug)]
pub struct ProbeState {
    /// Whether the server answered `PING` with `+PONG`.
    pub reachable: bool,
    /// Why not, when unreachable.
    pub error: Option<String>,
    /// When the latest probe finished.
    pub checked_at: Instant,
    /// Round-trip time of the latest successful `PING`.
    pub rtt: Option<Duration>,
    /// Replication offset from `INFO replication`: a master's `master_repl_offset`, a
    /// replica's `slave_repl_offset` (how far it has processed its master's stream).
    pub repl_offset: Option<i64>,
}

/// The prober's shared results. Clones share them.
#[derive(Clone)]
pub struct Health {
    states: Arc<Mutex<HashMap<String, ProbeState>>>,
    password: Arc<Mutex<Option<Arc<str>>>>,
    /// TLS to the servers (`backend_tls`), as the data plane's connections use it.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Health {
    /// Results for a prober that authenticates with `password` when set.
    pub fn new(password: Option<String>) -> Health {
        Health {
            states: Arc::default(),
            password: Arc::new(Mutex::new(password.map(Arc::from))),
            tls: None,
        }
    }

    /// The same prober connecting with TLS when `tls` is given.
    pub fn with_tls(mut self, tls: Option<Arc<rustls::ClientConfig>>) -> Health {
        self.tls = tls;
        self
    }

    /// Replaces the password for the next probes (e.g. after a config reload).
    pub fn set_password(&self, password: Option<String>) {
        *self.password.lock().unwrap_or_else(PoisonError::into_inner) = password.map(Arc::from);
    }

    /// The latest probe result for `addr`, if it was probed.
    pub fn get(&self, addr: &str) -> Option<ProbeState> {
        self.lock().get(addr).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProbeState>> {
        self.states.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `Ok` when every group of `table` has a master whose latest probe succeeded recently;
    /// otherwise every failing group, e.g. `group g1: master 127.0.0.1:7001 unreachable: ...`.
    pub fn readiness(&self, table: &RoutingTable) -> Result<(), String> {
        let states = self.lock();
        let mut problems = Vec::new();
        for g in &table.groups {
            match states.get(&g.master) {
                None => {
                    problems.push(format!("group {}: master {} not checked yet", g.name, g.master))
                }
                Some(s) if !s.reachable => problems.push(format!(
                    "group {}: master {} unreachable: {}",
                    g.name,
                    g.master,
                    s.error.as_deref().unwrap_or("unknown error")
                )),
                Some(s) if s.checked_at.elapsed() > STALE_AFTER => problems.push(format!(
                    "group {}: master {} last checked {} ms ago",
                    g.name,
                    g.master,
                    s.checked_at.elapsed().as_millis()
                )),
                Some(_) => {}
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// Starts probing the table in `table` until the returned task is aborted.
    pub fn spawn(&self, table: SharedTable) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move { health.run(table).await })
    }

    async fn run(self, table: SharedTable) {
        let mut conns: HashMap<String, Stream> = HashMap::new();
        let mut authed_with: Option<Arc<str>> = None;
        let mut last_epoch: Option<u64> = None;
        let mut next_round = tokio::time::Instant::now();
        loop {
            let t = table.load_full();
            // A new table may name a new master: check it now rather than up to a second later.
            if last_epoch != Some(t.epoch) || tokio::time::Instant::now() >= next_round {
                next_round = tokio::time::Instant::now() + PROBE_INTERVAL;
                last_epoch = Some(t.epoch);
                let password = self.password.lock().unwrap_or_else(PoisonError::into_inner).clone();
                if password != authed_with {
                    // Kept connections authenticated with the old password would hide a wrong new one.
                    conns.clear();
                    authed_with = password;
                }
                self.round(&t, &mut conns).await;
            }
            tokio::time::sleep(TABLE_POLL).await;
        }
    }

    /// Probes every master and replica of `table` once, concurrently, and records the results;
    /// forgets addresses no longer in the table.
    async fn round(&self, table: &RoutingTable, conns: &mut HashMap<String, Stream>) {
        let mut addrs: Vec<&str> = Vec::new();
        for g in &table.groups {
            addrs.push(&g.master);
            addrs.extend(g.replicas.iter().map(|r| r.addr.as_str()));
        }
        addrs.sort_unstable();
        addrs.dedup();
        conns.retain(|a, _| addrs.binary_search(&a.as_str()).is_ok());
        let password = self.password.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut set = JoinSet::new();
        for addr in &addrs {
            let addr = addr.to_string();
            let conn = conns.remove(&addr);
            let password = password.clone();
            let tls = self.tls.clone();
            set.spawn(async move {
                let (result, conn) = probe(&addr, conn, password.as_deref(), tls.as_ref()).await;
                (addr, result, conn)
            });
        }
        let mut results = Vec::with_capacity(addrs.len());
        while let Some(joined) = set.join_next().await {
            let Ok((addr, result, conn)) = joined else { continue };
            if let Some(c) = conn {
                conns.insert(addr.clone(), c);
            }
            results.push((addr, result));
        }
        let now = Instant::now();
        let mut states = self.lock();
        states.retain(|a, _| addrs.binary_search(&a.as_str()).is_ok());
        for (addr, result) in results {
            let was = states.get(&addr).map(|s| s.reachable);
            let state = match result {
                Ok((rtt, repl_offset)) => {
                    if was == Some(false) {
                        tracing::info!(backend = %addr, "backend reachable again");
                    }
                    ProbeState {
                        reachable: true,
                        error: None,
                        checked_at: now,
                        rtt: Some(rtt),
                        repl_offset,
                    }
                }
                Err(e) => {
                    if was != Some(false) {
                        tracing::warn!(backend = %addr, error = %e, "backend unreachable");
                    }
                    ProbeState {
                        reachable: false,
                        error: Some(e),
                        checked_at: now,
                        rtt: None,
                        repl_offset: None,
                    }
                }
            };
            states.insert(addr, state);
        }
    }
}

/// Probes `addr` on `conn` if given, else (or if that fails) on a new connection. Returns the
/// round trip and the replication offset, or why it failed, and the connection to keep.
async fn probe(
    addr: &str,
    conn: Option<Stream>,
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> (Result<(Duration, Option<i64>), String>, Option<Stream>) {
    let attempt = async {
        let (rtt, mut c) = 'alive: {
            if let Some(mut c) = conn
                && let Ok(rtt) = ping(&mut c).await
            {
                break 'alive (rtt, c);
            }
            match connect(addr, password, tls).await {
                Ok(mut c) => match ping(&mut c).await {
                    Ok(rtt) => (rtt, c),
                    Err(e) => return (Err(e), None),
                },
                Err(e) => return (Err(e), None),
            }
        };
        // Replication lag for the dashboard: one small INFO section per server per round. A
        // failed read may leave the connection mid-reply, so it is not kept then.
        match repl_offset(&mut c).await {
            Ok(offset) => (Ok((rtt, offset)), Some(c)),
            Err(_) => (Ok((rtt, None)), None),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => (Err(format!("no reply within {} ms", PROBE_TIMEOUT.as_millis())), None),
    }
}

/// `INFO replication`'s offset: `slave_repl_offset` on a replica, `master_repl_offset` on a master.
async fn repl_offset(c: &mut Stream) -> Result<Option<i64>, String> {
    c.write_all(b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n").await.map_err(|e| e.to_string())?;
    c.flush().await.map_err(|e| e.to_string())?;
    let text = read_bulk(c).await?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<i64>().ok())
    };
    let replica = text.lines().any(|l| l.trim() == "role:slave");
    Ok(if replica { field("slave_repl_offset") } else { field("master_repl_offset") })
}

/// Reads one bulk string reply (`$N` CRLF, N bytes, CRLF), at most [`MAX_BULK`] bytes.
async fn read_bulk(c: &mut Stream) -> Result<String, String> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let Some(n) = head.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                return Err(format!("unexpected reply to INFO: {}", reply_text(&head)));
            };
            if n > MAX_BULK {
                return Err("INFO reply too long".into());
            }
            if buf.len() >= end + 2 + n + 2 {
                return Ok(String::from_utf8_lossy(&buf[end + 2..end + 2 + n]).into_owned());
            }
        } else if buf.len() > MAX_LINE {
            return Err("reply line too long".into());
        }
        let got = c.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if got == 0 {
            return Err("connection closed by the server".into());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

async fn connect(
    addr: &str,
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Stream, String> {
    let nodelay = |s: &tokio::net::TcpStream| {
        let _ = s.set_nodelay(true);
    };
    let mut c = keyhop_proxy::stream::connect(addr, tls, PROBE_TIMEOUT, nodelay).await?;
    if let Some(pw) = password {
        let mut auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n", pw.len()).into_bytes();
        auth.extend_from_slice(pw.as_bytes());
        auth.extend_from_slice(b"\r\n");
        c.write_all(&auth).await.map_err(|e| e.to_string())?;
        c.flush().await.map_err(|e| e.to_string())?;
        let line = read_line(&mut c).await?;
        if line != "+OK" {
            // The reply never echoes the password; it is safe to show.
            return Err(format!("AUTH failed: {} (check backend_password)", reply_text(&line)));
        }
    }
    Ok(c)
}

async fn ping(c: &mut Stream) -> Result<Duration, String> {
    let start = Instant::now();
    c.write_all(b"*1\r\n$4\r\nPING\r\n").await.map_err(|e| e.to_string())?;
    c.flush().await.map_err(|e| e.to_string())?;
    let line = read_line(c).await?;
    match line.as_str() {
        "+PONG" => Ok(start.elapsed()),
        l if l.starts_with("-NOAUTH") => Err(format!("{} (set backend_password)", reply_text(l))),
        l if l.starts_with("-LOADING") => Err(format!("loading its dataset: {}", reply_text(l))),
        l => Err(format!("unexpected reply to PING: {}", reply_text(l))),
    }
}

/// The reply line without its type byte, shortened for messages.
fn reply_text(line: &str) -> String {
    let t = line.get(1..).unwrap_or("").trim();
    t.chars().take(200).collect()
}

/// Reads one CRLF-terminated line (without the CRLF). Probes send one command at a time, so
/// nothing follows the line.
async fn read_line(c: &mut Stream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 128];
    loop {
        let n = c.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            buf.truncate(end);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_LINE {
            return Err("reply line too long".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhop_router::Group;
    use tokio::net::TcpListener;

    fn table(masters: &[&str]) -> RoutingTable {
        let groups = masters
            .iter()
            .enumerate()
            .map(|(i, m)| Group { name: format!("g{i}"), master: m.to_string(), replicas: vec![] })
            .collect();
        RoutingTable::new(1, groups, &RoutingTable::even_ranges(masters.len())).expect("table")
    }

    /// A fake server answering each request with `reply`.
    async fn fake(reply: &'static [u8]) -> String {
        fake_with(move |_| reply).await
    }

    /// A fake server answering each request (one read) with `answer(request)`.
    async fn fake_with(answer: impl Fn(&[u8]) -> &'static [u8] + Send + Copy + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(answer(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn classifies_replies() {
        let good = fake_with(|req: &[u8]| -> &'static [u8] {
            if req.windows(4).any(|w| w == b"INFO") {
                b"$51\r\n# Replication\r\nrole:slave\r\nslave_repl_offset:1234\r\n\r\n"
            } else {
                b"+PONG\r\n"
            }
        })
        .await;
        let loading = fake(b"-LOADING Redis is loading the dataset in memory\r\n").await;
        let noauth = fake(b"-NOAUTH Authentication required.\r\n").await;
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        let h = Health::new(None);
        let t = table(&[&good, &loading, &noauth, &closed]);
        let mut conns = HashMap::new();
        h.round(&t, &mut conns).await;
        assert!(h.get(&good).expect("probed").reachable);
        // A replica's offset is its slave_repl_offset.
        assert_eq!(h.get(&good).and_then(|s| s.repl_offset), Some(1234));
        let err = |a: &str| h.get(a).and_then(|s| s.error).unwrap_or_default();
        assert!(err(&loading).contains("loading"), "{}", err(&loading));
        assert!(err(&noauth).contains("backend_password"), "{}", err(&noauth));
        assert!(!err(&closed).is_empty());
        let reason = h.readiness(&t).expect_err("not ready");
        assert!(reason.contains("group g1: master") && reason.contains("unreachable"), "{reason}");
        assert!(!reason.contains("g0"), "{reason}");
        // The good server's connection is kept for the next round.
        assert_eq!(conns.len(), 1);
        h.round(&table(&[&good]), &mut conns).await;
        assert!(h.readiness(&table(&[&good])).is_ok());
        assert!(h.get(&loading).is_none(), "addresses not in the table are forgotten");
    }

    #[tokio::test]
    async fn auth_failure_is_unreachable() {
        let wrong = fake(b"-WRONGPASS invalid username-password pair\r\n").await;
        let h = Health::new(Some("hunter2".into()));
        let t = table(&[&wrong]);
        h.round(&t, &mut HashMap::new()).await;
        let reason = h.readiness(&t).expect_err("not ready");
        assert!(reason.contains("AUTH failed: WRONGPASS"), "{reason}");
        assert!(!reason.contains("hunter2"));
    }

    #[tokio::test]
    async fn password_change_applies_to_the_next_round() {
        let addr = fake_with(|req| {
            if req.windows(4).any(|w| w == b"AUTH") {
                if req.windows(4).any(|w| w == b"good") { b"+OK\r\n" } else { b"-WRONGPASS no\r\n" }
            } else {
                b"+PONG\r\n"
            }
        })
        .await;
        let h = Health::new(Some("bad".into()));
        let t: SharedTable = Arc::new(arc_swap::ArcSwap::from_pointee(table(&[&addr])));
        let task = h.spawn(t.clone());
        let ok = |h: &Health| h.readiness(&t.load()).is_ok();
        let waited = async {
            while h.get(&addr).is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(!ok(&h));
            h.set_password(Some("good".into()));
            while !ok(&h) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), waited)
            .await
            .expect("ready with the new password");
        task.abort();
    }

    #[test]
    fn unprobed_master_is_not_ready() {
        let h = Health::new(None);
        let reason = h.readiness(&table(&["127.0.0.1:1"])).expect_err("not ready");
        assert_eq!(reason, "group g0: master 127.0.0.1:1 not checked yet");
    }
}
