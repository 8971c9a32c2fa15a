//! keyhop's data plane: listener, client sessions, RESP framing, backend pools, fan-out and merge.
//!
//! It reads the routing table the control plane publishes ([`keyhop_router::SharedTable`]) and
//! never depends on the control plane itself; the binary wires the two together.

mod admin;
pub mod backend;
pub mod cancel;
mod clients;
mod fleet;
mod groupstats;
pub mod io;
mod local;
pub mod merge;
pub mod metrics;
mod pinned;
mod render;
pub mod resp;
mod session;
pub mod settings;
pub mod slowlog;
pub mod stats;
pub mod stream;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use keyhop_router::{RoutingTable, SharedTable};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

pub use backend::{BackendError, BackendSettings, Backends, StaleHook};
pub use fleet::FleetGate;
pub use groupstats::GroupStats;
pub use settings::Settings;
pub use stats::Stats;
pub use stream::Stream;

/// State shared by every session.
pub(crate) struct Shared {
    pub settings: ArcSwap<Settings>,
    pub table: SharedTable,
    pub backends: Backends,
    pub stats: Stats,
    pub next_id: AtomicU64,
    pub commands: metrics::CommandMetrics,
    pub slowlog: std::sync::Mutex<slowlog::SlowLog>,
    pub started: std::time::Instant,
    /// Cancelled when the proxy drains: sessions stop reading and finish what is in flight.
    pub drain: cancel::Signal,
    /// Every client session, for CLIENT LIST / INFO / KILL.
    pub clients: clients::Registry,
    /// Dedicated backend connections of pinned modes (transactions, pub/sub, blocking).
    pub pinned: pinned::Pinned,
    /// The epoch of the newest routing table, announced after each publish: pinned modes wait
    /// on it to follow a failover (the fast path re-reads the table per batch instead).
    pub topology: tokio::sync::watch::Sender<u64>,
    /// The etcd lease gate; unset without etcd, and then the data plane never looks at it.
    pub fleet: std::sync::OnceLock<FleetGate>,
}

impl Shared {
    /// The lease fence level at `now`: 0 without a gate or while the lease holds, 1 past its
    /// deadline (slots in flux are held), 2 past deadline + grace (keyed commands are held).
    #[inline]
    pub(crate) fn fence_at(&self, now: std::time::Instant) -> u8 {
        match self.fleet.get() {
            None => 0,
            Some(g) => g.level(self.started, now),
        }
    }
}

/// The Redis version keyhop reports (HELLO, INFO): the first group's master's own, which
/// clients check before using a feature; the command table's until it is known.
pub(crate) fn servers_version(shared: &Shared, table: &RoutingTable) -> Arc<str> {
    table
        .groups
        .first()
        .and_then(|g| shared.backends.version(&g.master))
        .unwrap_or_else(|| Arc::from(keyhop_router::command::REDIS_VERSION))
}

/// The data plane: accepts clients and serves them from the published routing table.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy serving `table` with `settings`.
    pub fn new(settings: Settings, table: SharedTable) -> Proxy {
        let backends = Backends::new(settings.backend.clone());
        Proxy {
            shared: Arc::new(Shared {
                settings: ArcSwap::from_pointee(settings),
                table,
                backends,
                stats: Stats::default(),
                next_id: AtomicU64::new(1),
                commands: metrics::CommandMetrics::new(keyhop_router::command::commands().len()),
                slowlog: std::sync::Mutex::new(slowlog::SlowLog::default()),
                started: std::time::Instant::now(),
                drain: cancel::Signal::new(),
                clients: clients::Registry::default(),
                pinned: pinned::Pinned::default(),
                topology: tokio::sync::watch::Sender::new(0),
                fleet: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Sets the callback run when a backend believed to be master answers -READONLY/-MASTERDOWN.
    pub fn set_stale_hook(&self, hook: StaleHook) {
        self.shared.backends.set_stale_hook(hook);
    }

    /// Counters of the data plane.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The backend pools (for status and metrics).
    pub fn backends(&self) -> &Backends {
        &self.shared.backends
    }

    /// The routing table handle this proxy reads.
    pub fn table(&self) -> &SharedTable {
        &self.shared.table
    }

    /// Replaces the settings that may change at run time; backend settings (timeouts, password,
    /// connections) apply to backend pools created afterwards.
    pub fn set_settings(&self, settings: Settings) {
        self.shared.backends.set_settings(settings.backend.clone());
        self.shared.settings.store(Arc::new(settings));
    }

    /// Called after the control plane published `new`: closes connections to every server that is
    /// no longer a master or (healthy) replica in it, failing their in-flight requests.
    pub fn table_changed(&self, old: &RoutingTable, new: &RoutingTable) {
        let mut keep: HashSet<&str> = HashSet::new();
        for g in &new.groups {
            keep.insert(&g.master);
            keep.extend(g.replicas.iter().filter(|r| r.healthy).map(|r| r.addr.as_str()));
        }
        // Demoted masters must stop taking writes even if they are now replicas in the new table.
        let demoted: HashSet<&str> = old
            .groups
            .iter()
            .zip(new.groups.iter())
            .filter(|(o, n)| o.name == n.name && o.master != n.master)
            .map(|(o, _)| o.master.as_str())
            .collect();
        self.shared.backends.retain(|addr| keep.contains(addr) && !demoted.contains(addr));
        self.shared.pinned.retain(|addr| keep.contains(addr) && !demoted.contains(addr));
        self.shared.topology.send_replace(new.epoch);
    }

    /// Fences the server at `addr` for `duration` (`None` lifts it): its requests fail at once
    /// with a "being failed over" error until the fence ends or a new table retires it.
    pub fn fence(&self, addr: &str, duration: Option<std::time::Duration>) {
        self.shared.backends.fence(addr, duration);
    }

    /// Stops every session from reading new requests, lets in-flight replies reach their clients,
    /// and waits until every client is gone or `grace` passes. True when all were delivered.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        self.shared.drain.cancel();
        self.shared.clients.drain_all();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if Stats::get(&self.shared.stats.clients_current) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// True once [`Proxy::drain`] has started.
    pub fn is_draining(&self) -> bool {
        self.shared.drain.is_cancelled()
    }

    /// Installs the lease gate: past the deadline (see [`Proxy::set_lease_deadline`]) slots in
    /// flux are held as Locked (then `-TRYAGAIN`); past deadline + `grace` every keyed command
    /// gets `-TRYAGAIN keyhop: lost its etcd lease; re-reading the slot map` (keyless ones
    /// still work). Calling it again changes the grace.
    pub fn set_fleet_gate(&self, grace: std::time::Duration) {
        if self.shared.fleet.set(FleetGate::new(grace)).is_err()
            && let Some(g) = self.shared.fleet.get()
        {
            g.set_grace(grace);
        }
    }

    /// Sets the lease deadline (`None`: no deadline, the lease is healthy). Without a gate
    /// installed it does nothing.
    pub fn set_lease_deadline(&self, deadline: Option<std::time::Instant>) {
        if let Some(g) = self.shared.fleet.get() {
            g.set_deadline(self.shared.started, deadline);
        }
    }

    /// The lease fence level now: 0 (healthy or no gate), 1 (slots in flux held), 2 (keyed
    /// commands held), for /topology.
    pub fn fence_level(&self) -> u8 {
        self.shared.fence_at(std::time::Instant::now())
    }

    /// Resolves once no request routed with a table older than `epoch` is still unanswered
    /// (flux steps and open transactions count as in flight). Needs the fleet gate: sessions
    /// report what they have in flight only once it is installed.
    pub async fn drained_to(&self, epoch: u64) {
        while !self.shared.clients.drained_to(epoch) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Appends the data plane's metrics in Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        render::metrics(&self.shared, out);
    }

    /// Connects to every group's master once, with a PING whose reply nobody reads, so that
    /// what keyhop learns when it connects (the servers' version for HELLO, their `databases`
    /// for SELECT) is known before the first client asks.
    fn warm(&self) {
        let table = self.shared.table.load_full();
        for g in &table.groups {
            let conn = self.shared.backends.pool(&g.master).conn(0).clone();
            tokio::spawn(async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let ping = bytes::Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
                let req =
                    backend::Request { payload: backend::Payload::One(ping), count: 1, reply: tx };
                if conn.send(req).await.is_ok() {
                    let _ = rx.await;
                }
            });
        }
    }

    /// Accepts clients on `listener` until `shutdown` completes; returns once the listener is
    /// closed (sessions already running keep going until their clients leave).
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        self.warm();
        tokio::pin!(shutdown);
        let mut failed_since_warning = 0u64;
        let mut last_warning: Option<std::time::Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                _ = self.shared.drain.cancelled() => break,
                a = listener.accept() => a,
            };
            let (mut stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning, and say so
                    // once every 10 s rather than 50 times a second.
                    failed_since_warning += 1;
                    if last_warning
                        .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10))
                    {
                        tracing::warn!(error = %e, failures = failed_since_warning,
                            "accept failed (out of file descriptors? see max_clients and the open-files limit)");
                        last_warning = Some(std::time::Instant::now());
                        failed_since_warning = 0;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            };
            let settings = self.shared.settings.load();
            let stats = &self.shared.stats;
            if Stats::get(&stats.clients_current) >= settings.max_clients as u64 {
                Stats::add(&stats.clients_rejected, 1);
                // A TLS client could not read a plain error: it is just closed.
                let plain = settings.client_tls.is_none();
                tokio::spawn(async move {
                    if plain {
                        let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                    }
                    let _ = stream.shutdown().await;
                });
                continue;
            }
            io::tune_socket(&stream, settings.client_keepalive);
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            stats.clients_current.add(1);
            Stats::add(&stats.clients_total, 1);
            // Two tasks, so a plain client's never carries the TLS handshake's state.
            match settings.client_tls.clone() {
                None => tokio::spawn(async move {
                    session::serve(shared.clone(), stream::Stream::Plain(stream), id, peer).await;
                    shared.stats.clients_current.sub(1);
                }),
                Some(tls) => tokio::spawn(async move {
                    if let Some(stream) = stream::accept(stream, Some(tls), peer).await {
                        session::serve(shared.clone(), stream, id, peer).await;
                    }
                    shared.stats.clients_current.sub(1);
                }),
            };
        }
    }
}
