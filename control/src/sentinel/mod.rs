//! Following masters through Redis Sentinel.
//!
//! [`start`] asks the sentinels for every group's master and replicas, publishes the first
//! routing table, then keeps following: it subscribes to every sentinel it knows (configured and
//! discovered), polls them all every `poll_interval` as a safety net, and adopts a new master when
//! a majority of the reachable sentinels agree on it or, faster, when one sentinel publishes
//! `+switch-master` and the new address itself answers `ROLE` with `master`, or fastest, when the
//! replica a failover leader promotes answers `ROLE` with `master` (watched every few
//! milliseconds from the leader's `+selected-slave`, see `brain/promotion.rs`). An address whose
//! `ROLE` says replica is never adopted, and a majority still on an older configuration epoch than
//! the adopted master is ignored. Losing every sentinel keeps the last table.

mod brain;
mod event;
mod link;
pub mod lookup;
pub(crate) mod resp;
mod role_poll;
mod status;
mod tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use keyhop_router::{Group, GroupId, RoutingTable, SharedTable, TableError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

pub use brain::AdoptedVia;
use brain::{Action, Adoption, Brain, Msg, StartState};
pub use status::{GroupStatus, SentinelLinkStatus, SentinelStatus, SwitchInfo};
pub use tls::WatcherTls;
use tls::watcher_tls;

use crate::config::{Config, ConfigError};

/// Called after each publish with the old and the new table, on the watcher's task: it must be
/// quick (e.g. signal the data plane to drop connections to demoted masters).
pub type OnPublish = Arc<dyn Fn(&RoutingTable, &RoutingTable) + Send + Sync>;

/// Called on the watcher's task when a failover of a group's adopted master starts
/// (`fenced` true: from then on that master must take no request, since a write it acknowledges
/// would be lost when Sentinel demotes it) or is given up (`fenced` false). A fence ends when the
/// table moves the group to the new master; the callee should also bound it in time, in case
/// the failover's end is never heard of.
pub type FenceHook = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// A group the watcher follows: its Sentinel name and the slots it owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    /// The name the sentinels monitor the master under.
    pub name: String,
    /// Owned slots as inclusive ranges.
    pub ranges: Vec<(u32, u32)>,
}

/// Everything the watcher needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherConfig {
    /// Sentinels to start from.
    pub sentinels: Vec<String>,
    /// Password for `AUTH` to the sentinels.
    pub sentinel_password: Option<String>,
    /// Safety-net poll interval.
    pub poll_interval: Duration,
    /// The groups, in [`GroupId`] order.
    pub groups: Vec<GroupSpec>,
    /// Password for `AUTH` to the redis-servers (for the `ROLE` check).
    pub backend_password: Option<String>,
    /// Timeout for each connect, poll round and `ROLE` check.
    pub io_timeout: Duration,
    /// How long [`start`] may take to learn every group's master.
    pub start_timeout: Duration,
    /// TLS to the servers and sentinels.
    pub tls: WatcherTls,
}

impl WatcherConfig {
    /// The watcher configuration of a Sentinel-mode [`Config`].
    pub fn from_config(cfg: &Config) -> Result<WatcherConfig, ConfigError> {
        let Some(s) = &cfg.sentinel else {
            return Err(ConfigError::Invalid {
                path: None,
                problems: vec![crate::config::Problem {
                    key: "sentinel".into(),
                    message: "is missing: the Sentinel watcher needs a [sentinel] section".into(),
                }],
            });
        };
        cfg.validate()?;
        let ranges = cfg.slot_ranges()?;
        Ok(WatcherConfig {
            sentinels: s.addrs.clone(),
            sentinel_password: s.password.clone(),
            poll_interval: s.poll_interval(),
            groups: cfg
                .groups
                .iter()
                .zip(ranges)
                .map(|(g, ranges)| GroupSpec { name: g.name.clone(), ranges })
                .collect(),
            backend_password: cfg.backend_password.clone(),
            // Sentinel replies are small and local; allow a loaded machine some slack.
            io_timeout: Duration::from_millis(cfg.connect_timeout_ms.clamp(500, 10_000)),
            start_timeout: Duration::from_secs(10),
            tls: WatcherTls { config: cfg.tls.clone(), sentinels: cfg.sentinel_tls() },
        })
    }
}

/// Why the watcher could not start.
#[derive(Debug)]
pub enum ControlError {
    /// The configuration is unusable.
    Config(ConfigError),
    /// No sentinel that answered knows a master by this name.
    UnknownGroup {
        /// The group name.
        group: String,
        /// The sentinels that answered.
        asked: Vec<String>,
    },
    /// Not every group's master was learned in time.
    StartTimeout {
        /// How long it waited.
        after: Duration,
        /// What it was still waiting for.
        waiting_for: String,
    },
    /// The learned topology does not make a routing table.
    Table(TableError),
    /// The watcher's task ended unexpectedly.
    Stopped,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Config(e) => write!(f, "{e}"),
            ControlError::UnknownGroup { group, asked } => write!(
                f,
                "no sentinel knows a master named \"{group}\" (asked {}): the group name must match a \
                 `sentinel monitor {group} ...` line of the sentinels",
                asked.join(", ")
            ),
            ControlError::StartTimeout { after, waiting_for } => write!(
                f,
                "could not learn every group's master from Sentinel within {} ms: {waiting_for}",
                after.as_millis()
            ),
            ControlError::Table(e) => write!(f, "{e}"),
            ControlError::Stopped => write!(f, "the Sentinel watcher stopped unexpectedly"),
        }
    }
}

impl std::error::Error for ControlError {}

impl From<ConfigError> for ControlError {
    fn from(e: ConfigError) -> Self {
        ControlError::Config(e)
    }
}

struct Inner {
    table: SharedTable,
    fence_hook: Arc<Mutex<Option<FenceHook>>>,
    recheck: Arc<watch::Sender<u64>>,
    status: Arc<Mutex<SentinelStatus>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The driver owns the links and checks; aborting it stops them all.
        self.task.abort();
    }
}

/// A running watcher. Clones share it; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct WatcherHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for WatcherHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatcherHandle").field("status", &self.status()).finish()
    }
}

impl WatcherHandle {
    /// The routing table the watcher publishes into.
    pub fn table(&self) -> SharedTable {
        self.inner.table.clone()
    }

    /// Asks for an immediate re-check of `group` (e.g. its master answered `-READONLY` or
    /// `-MASTERDOWN`): every sentinel is polled at once. Cheap, never blocks, and storms coalesce
    /// into at most one poll per sentinel every 50 ms.
    pub fn recheck(&self, group: GroupId) {
        tracing::debug!(group, "re-check requested");
        self.inner.recheck.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sets the callback for failovers in progress (see [`FenceHook`]).
    pub fn set_fence_hook(&self, hook: FenceHook) {
        *self.inner.fence_hook.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// A snapshot of the watcher's state.
    pub fn status(&self) -> SentinelStatus {
        self.inner.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops the watcher now (also done when the last handle is dropped); the table stays.
    pub fn shutdown(&self) {
        self.inner.task.abort();
    }
}

/// Starts watching: learns every group's master from the sentinels, publishes the first table
/// (epoch 1) into a new [`SharedTable`] (see [`WatcherHandle::table`]), and keeps following.
/// `on_publish` is called for every later table. Must run inside a Tokio runtime.
pub async fn start(
    cfg: WatcherConfig,
    on_publish: OnPublish,
) -> Result<WatcherHandle, ControlError> {
    launch(cfg, None, on_publish).await
}

/// Like [`start`], publishing into an existing table: the first table gets the next epoch and
/// `on_publish` is called for it too.
pub async fn start_with_table(
    cfg: WatcherConfig,
    table: SharedTable,
    on_publish: OnPublish,
) -> Result<WatcherHandle, ControlError> {
    launch(cfg, Some(table), on_publish).await
}

async fn launch(
    cfg: WatcherConfig,
    table: Option<SharedTable>,
    on_publish: OnPublish,
) -> Result<WatcherHandle, ControlError> {
    if cfg.sentinels.is_empty() {
        return Err(ControlError::StartTimeout {
            after: Duration::ZERO,
            waiting_for: "no sentinel addresses are configured".into(),
        });
    }
    let tls = watcher_tls(&cfg.tls).map_err(ControlError::Config)?;
    // Slot errors are configuration errors: catch them before talking to anyone.
    let ranges: Vec<Vec<(u32, u32)>> = cfg.groups.iter().map(|g| g.ranges.clone()).collect();
    let probe = cfg
        .groups
        .iter()
        .map(|g| Group { name: g.name.clone(), master: String::new(), replicas: vec![] })
        .collect();
    RoutingTable::new(0, probe, &ranges).map_err(ControlError::Table)?;

    let status = Arc::new(Mutex::new(SentinelStatus::default()));
    let waiting = Arc::new(Mutex::new(String::from("no sentinel answered yet")));
    let (recheck, _) = watch::channel(0u64);
    let recheck = Arc::new(recheck);
    let (ready_tx, ready_rx) = oneshot::channel();
    let fence_hook: Arc<Mutex<Option<FenceHook>>> = Arc::default();
    let names: Vec<String> = cfg.groups.iter().map(|g| g.name.clone()).collect();
    let driver = Driver {
        brain: Brain::new(names.clone(), cfg.sentinels.clone()),
        ranges,
        table,
        on_publish,
        status: status.clone(),
        waiting: waiting.clone(),
        recheck: recheck.clone(),
        backend_password: cfg.backend_password.clone(),
        backend_tls: tls.backends,
        io_timeout: cfg.io_timeout,
        ready: Some(ready_tx),
        switches: names.iter().map(|_| (0, None)).collect(),
        first_table: None,
        fence_hook: fence_hook.clone(),
        promotion_watches: HashMap::new(),
    };
    let start_timeout = cfg.start_timeout;
    let sentinel_tls = tls.sentinels;
    // Also stops the driver if this future is dropped before start-up is over.
    let mut guard = AbortOnDrop(Some(tokio::spawn(driver.run(cfg, sentinel_tls)).abort_handle()));
    let result = match tokio::time::timeout(start_timeout, ready_rx).await {
        Ok(Ok(Ok(table))) => {
            if let Some(task) = guard.0.take() {
                return Ok(WatcherHandle {
                    inner: Arc::new(Inner { table, fence_hook, recheck, status, task }),
                });
            }
            Err(ControlError::Stopped)
        }
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err(ControlError::Stopped),
        Err(_) => Err(ControlError::StartTimeout {
            after: start_timeout,
            waiting_for: waiting.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }),
    };
    drop(guard);
    result
}

/// Aborts a task when dropped, unless the handle was taken out.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Runs the brain: receives messages, carries out actions, publishes tables.
struct Driver {
    brain: Brain,
    ranges: Vec<Vec<(u32, u32)>>,
    table: Option<SharedTable>,
    on_publish: OnPublish,
    status: Arc<Mutex<SentinelStatus>>,
    /// What start-up still waits for, for the start timeout's message.
    waiting: Arc<Mutex<String>>,
    recheck: Arc<watch::Sender<u64>>,
    backend_password: Option<String>,
    /// TLS for the `ROLE` checks on servers.
    backend_tls: Option<Arc<rustls::ClientConfig>>,
    io_timeout: Duration,
    /// Present until the first table is published (or start-up fails).
    ready: Option<oneshot::Sender<Result<SharedTable, ControlError>>>,
    /// Per group: master changes and the latest one.
    switches: Vec<(u64, Option<SwitchInfo>)>,
    /// The table just published for the first time, to hand to [`start`].
    first_table: Option<SharedTable>,
    /// See [`WatcherHandle::set_fence_hook`].
    fence_hook: Arc<Mutex<Option<FenceHook>>>,
    /// The running watch of a replica being promoted, per group.
    promotion_watches: HashMap<GroupId, tokio::task::AbortHandle>,
}

impl Driver {
    /// Runs until aborted, or until start-up fails.
    async fn run(mut self, cfg: WatcherConfig, tls: Option<Arc<rustls::ClientConfig>>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let shared = Arc::new(link::LinkShared {
            groups: self.brain.names().to_vec(),
            password: cfg.sentinel_password.clone(),
            tls,
            timeout: cfg.io_timeout,
            poll_interval: cfg.poll_interval,
            tx: tx.clone(),
        });
        // Owned here so that aborting the driver stops every link and check.
        let mut tasks = JoinSet::new();
        for addr in &cfg.sentinels {
            tasks.spawn(link::run(addr.clone(), shared.clone(), self.recheck.subscribe()));
        }
        self.update_status();
        while let Some(msg) = rx.recv().await {
            let actions = self.brain.handle(msg, Instant::now());
            let mut adoptions = Vec::new();
            for action in actions {
                match action {
                    Action::CheckRole { group, addr, via } => {
                        let (tx, pw, t) =
                            (tx.clone(), self.backend_password.clone(), self.io_timeout);
                        let tls = self.backend_tls.clone();
                        tasks.spawn(async move {
                            let role =
                                link::check_role(&addr, pw.as_deref(), tls.as_ref(), t).await;
                            let _ = tx.send(Msg::Role { group, addr, via, role });
                        });
                    }
                    Action::WatchPromotion { group, addr } => {
                        let (tx, pw, t) =
                            (tx.clone(), self.backend_password.clone(), self.io_timeout);
                        let tls = self.backend_tls.clone();
                        let task = tasks.spawn(role_poll::watch(group, addr, pw, tls, t, tx));
                        if let Some(old) = self.promotion_watches.insert(group, task) {
                            old.abort();
                        }
                    }
                    Action::StopWatching { group } => {
                        if let Some(task) = self.promotion_watches.remove(&group) {
                            task.abort();
                        }
                    }
                    Action::AddSentinel(addr) => {
                        tracing::info!(sentinel = %addr, "discovered a sentinel");
                        tasks.spawn(link::run(addr, shared.clone(), self.recheck.subscribe()));
                    }
                    Action::Recheck => self.recheck.send_modify(|n| *n = n.wrapping_add(1)),
                    Action::Adopted(a) => adoptions.push(a),
                    Action::Fence { group, addr, on } => {
                        let name = &self.brain.names()[group as usize];
                        if on {
                            tracing::debug!(group = %name, master = %addr, "failover in progress");
                        } else {
                            tracing::info!(group = %name, master = %addr, "failover given up");
                        }
                        let hook =
                            self.fence_hook.lock().unwrap_or_else(PoisonError::into_inner).clone();
                        if let Some(hook) = hook {
                            hook(&addr, on);
                        }
                    }
                }
            }
            // Reap finished ROLE checks so the set does not grow.
            while tasks.try_join_next().is_some() {}
            if let Err(e) = self.publish() {
                // Cannot happen after the slot check in `launch`; fail start-up loudly if it does.
                tracing::error!(error = %e, "cannot build a routing table");
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(ControlError::Table(e)));
                    return;
                }
            }
            self.record_adoptions(adoptions);
            self.update_status();
            // Start-up returns only once the status reflects the first table.
            if let Some(table) = self.first_table.take()
                && let Some(ready) = self.ready.take()
            {
                let _ = ready.send(Ok(table));
            }
            if self.ready.is_some() {
                match self.brain.start_state() {
                    StartState::Ready => {}
                    StartState::Waiting(why) => {
                        *self.waiting.lock().unwrap_or_else(PoisonError::into_inner) = why;
                    }
                    StartState::UnknownGroup { group, asked } => {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Err(ControlError::UnknownGroup { group, asked }));
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Publishes the brain's groups when every group has a master and something changed.
    fn publish(&mut self) -> Result<(), TableError> {
        let Some(groups) = self.brain.groups() else { return Ok(()) };
        let shared = match &self.table {
            None => {
                let first = RoutingTable::new(1, groups, &self.ranges)?;
                tracing::info!(epoch = 1, "published the first routing table");
                let shared: SharedTable = Arc::new(ArcSwap::from_pointee(first));
                self.table = Some(shared.clone());
                shared
            }
            Some(shared) => {
                let old = shared.load_full();
                if self.ready.is_none() && old.groups == groups {
                    return Ok(());
                }
                let epoch = old.epoch + 1;
                // The first publish into a caller's table also sets the slot ownership.
                let new = if self.ready.is_some() {
                    RoutingTable::new(epoch, groups, &self.ranges)?
                } else {
                    old.with_groups(epoch, groups)
                };
                let new = Arc::new(new);
                shared.store(new.clone());
                tracing::debug!(epoch, "published a routing table");
                (self.on_publish)(&old, &new);
                shared.clone()
            }
        };
        self.first_table = Some(shared);
        Ok(())
    }

    /// Logs adopted masters (after their table is published) and keeps them for the status.
    fn record_adoptions(&mut self, adoptions: Vec<Adoption>) {
        let now = Instant::now();
        let epoch = self.table.as_ref().map_or(0, |t| t.load().epoch);
        for a in adoptions {
            let name = &self.brain.names()[a.group as usize];
            let Some(old) = a.old else {
                tracing::info!(group = %name, master = %a.new, ?a.via, "learned the master");
                continue;
            };
            let event_to_swap = a.event_at.map(|t| now.saturating_duration_since(t));
            let down_to_swap = a.down_at.map(|t| now.saturating_duration_since(t));
            tracing::info!(
                group = %name,
                old = %old,
                new = %a.new,
                event_to_swap_ms = event_to_swap.map(|d| d.as_millis() as u64),
                down_to_swap_ms = down_to_swap.map(|d| d.as_millis() as u64),
                via = ?a.via,
                epoch,
                "switched master"
            );
            let entry = &mut self.switches[a.group as usize];
            entry.0 += 1;
            entry.1 = Some(SwitchInfo {
                from: old,
                to: a.new,
                at: SystemTime::now(),
                via: a.via,
                event_to_swap,
                down_to_swap,
            });
        }
    }

    fn update_status(&self) {
        let sentinels: Vec<SentinelLinkStatus> = self
            .brain
            .sentinels
            .iter()
            .map(|(addr, s)| SentinelLinkStatus {
                addr: addr.clone(),
                connected: s.up,
                last_error: s.last_error.clone(),
            })
            .collect();
        let groups = self
            .brain
            .names()
            .iter()
            .zip(&self.brain.groups)
            .zip(&self.switches)
            .map(|((name, st), (n, last))| GroupStatus {
                name: name.clone(),
                master: st.master.clone(),
                switches: *n,
                last_switch: last.clone(),
            })
            .collect();
        let status = SentinelStatus {
            connected_sentinels: sentinels.iter().filter(|s| s.connected).count(),
            known_sentinels: sentinels.len(),
            epoch: self.table.as_ref().map_or(0, |t| t.load().epoch),
            sentinels,
            groups,
        };
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_config_from_a_sentinel_config() {
        let cfg = Config::parse(
            "connect_timeout_ms = 100\nbackend_password = \"b\"\n[sentinel]\naddrs = [\"127.0.0.1:26379\"]\npassword = \"s\"\npoll_interval_ms = 250\n[[groups]]\nname = \"g1\"\n[[groups]]\nname = \"g2\"\n",
        )
        .expect("valid");
        let w = WatcherConfig::from_config(&cfg).expect("watcher config");
        assert_eq!(w.sentinels, ["127.0.0.1:26379"]);
        assert_eq!(w.sentinel_password.as_deref(), Some("s"));
        assert_eq!(w.backend_password.as_deref(), Some("b"));
        assert_eq!(w.poll_interval, Duration::from_millis(250));
        assert_eq!(w.io_timeout, Duration::from_millis(500));
        assert_eq!(
            w.groups,
            vec![
                GroupSpec { name: "g1".into(), ranges: vec![(0, 8191)] },
                GroupSpec { name: "g2".into(), ranges: vec![(8192, 16383)] },
            ]
        );
        let static_cfg =
            Config::parse("[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\n").expect("valid");
        let err = WatcherConfig::from_config(&static_cfg).expect_err("no [sentinel]");
        assert!(err.to_string().contains("[sentinel]"), "{err}");
    }

    #[tokio::test]
    async fn start_rejects_bad_slots_and_no_sentinels() {
        let noop: OnPublish = Arc::new(|_: &RoutingTable, _: &RoutingTable| {});
        let mut cfg = WatcherConfig {
            sentinels: vec![],
            sentinel_password: None,
            poll_interval: Duration::from_secs(1),
            groups: vec![GroupSpec { name: "g".into(), ranges: vec![(0, 100)] }],
            backend_password: None,
            io_timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(1),
            tls: WatcherTls::default(),
        };
        let err = start(cfg.clone(), noop.clone()).await.expect_err("no sentinels");
        assert!(err.to_string().contains("no sentinel addresses"), "{err}");
        cfg.sentinels = vec!["127.0.0.1:1".into()];
        let err = start(cfg, noop).await.expect_err("slots 101-16383 unowned");
        assert!(matches!(err, ControlError::Table(TableError::Unowned(_))), "{err:?}");
    }
}
