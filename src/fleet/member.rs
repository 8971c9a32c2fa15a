//! One keyhop instance as a member of a fleet: it registers under a lease, serves the slot map
//! kept in etcd, and acknowledges each revision once it has applied it and drained the requests
//! routed with older tables.
//!
//! The lease deadline is handed to the data plane: past it, slots in flux are held; past it plus
//! the grace period, every keyed command is. A coordinator only stops waiting for an instance
//! after its lease has been gone for the grace period, so a late instance never serves a slot
//! that has moved on without it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhop_control::EtcdConfig;
use keyhop_control::etcd::{Etcd, EventKind, Op, WatchMsg};
use keyhop_control::fleet::coordinator::JobRecord;
use keyhop_control::fleet::state::static_group;
use keyhop_control::fleet::{Fleet, FleetState, GroupDef, InstanceInfo, InstanceRecord};
use keyhop_proxy::Proxy;
use keyhop_router::{Group, RoutingTable};
use tokio::sync::watch;

/// Gives a group's current addresses: from the fleet state (static mode) or from the Sentinel
/// watcher (Sentinel mode).
pub type Resolve = Arc<dyn Fn(&GroupDef) -> Option<Group> + Send + Sync>;
/// Told the fleet's group names when they include one that cannot be resolved yet (Sentinel
/// mode starts a watcher for them).
pub type OnGroups = Arc<dyn Fn(Vec<String>) + Send + Sync>;

/// The running member: what /topology shows, and how to leave the fleet.
#[derive(Clone)]
pub struct Member {
    inner: Arc<Inner>,
}

struct Inner {
    fleet: Fleet,
    id: String,
    record: InstanceRecord,
    cfg: EtcdConfig,
    lease: std::sync::Mutex<i64>,
    /// The fleet revision applied to the data plane.
    applied: watch::Sender<i64>,
    /// The fleet revision acknowledged in etcd.
    acked: std::sync::atomic::AtomicI64,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The latest state read and its revision (applied or waiting for addresses).
    latest: std::sync::Mutex<Option<(FleetState, i64)>>,
    resolve: std::sync::Mutex<Resolve>,
    on_groups: std::sync::Mutex<Option<OnGroups>>,
    /// The group names last handed to `on_groups`.
    asked: std::sync::Mutex<Vec<String>>,
    /// Migration jobs as last read from etcd (for `/topology` and the metrics).
    jobs: std::sync::Mutex<Vec<(String, JobRecord)>>,
    /// The fleet's instances as last read (for `/topology` and the dashboard).
    instances: std::sync::Mutex<Vec<InstanceInfo>>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How far below the lease's TTL the deadline is kept, so it passes before etcd expires it.
fn margin(ttl: Duration) -> Duration {
    (ttl / 20).max(Duration::from_millis(100))
}

impl Member {
    /// This instance's id in the fleet.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The fleet revision in the data plane and the one acknowledged.
    pub fn revisions(&self) -> (i64, i64) {
        (*self.inner.applied.borrow(), self.inner.acked.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Migration jobs as last read (refreshed every second while one runs).
    pub fn jobs(&self) -> Vec<(String, JobRecord)> {
        lock(&self.inner.jobs).clone()
    }

    /// The fleet's instances as last read (every 5 s).
    pub fn instances(&self) -> Vec<InstanceInfo> {
        lock(&self.inner.instances).clone()
    }

    /// The fleet's prefix.
    pub fn prefix(&self) -> &str {
        self.inner.fleet.keys.prefix()
    }

    /// Leaves the fleet: stops the tasks, revokes the lease and removes the instance's entry.
    pub async fn leave(&self) {
        for t in self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        let lease = *self.inner.lease.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.inner.fleet.etcd.revoke(lease).await;
        let _ = self.inner.fleet.etcd.delete(&self.inner.fleet.keys.instance(&self.inner.id)).await;
        tracing::info!(id = %self.inner.id, "left the fleet");
    }
}

/// Registers with the fleet and returns the first routing table; `start` then follows it.
pub async fn join(cfg: &EtcdConfig, listen: &str) -> Result<(Member, Instant), String> {
    let etcd = Etcd::new(cfg.endpoints.clone(), cfg.timeout()).map_err(|e| e.to_string())?;
    let fleet = Fleet::new(etcd, &cfg.prefix);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = format!("{host}-{}-{nonce:08x}", std::process::id());
    let record = InstanceRecord {
        addr: listen.to_string(),
        host,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ack: 0,
    };
    let (applied, _) = watch::channel(0);
    let inner = Inner {
        fleet,
        id,
        record,
        cfg: cfg.clone(),
        lease: std::sync::Mutex::new(0),
        applied,
        acked: std::sync::atomic::AtomicI64::new(0),
        tasks: std::sync::Mutex::new(Vec::new()),
        latest: std::sync::Mutex::new(None),
        resolve: std::sync::Mutex::new(Arc::new(static_group)),
        on_groups: std::sync::Mutex::new(None),
        asked: std::sync::Mutex::new(Vec::new()),
        jobs: std::sync::Mutex::new(Vec::new()),
        instances: std::sync::Mutex::new(Vec::new()),
    };
    let member = Member { inner: Arc::new(inner) };
    let (state, rev, deadline) = member.register().await?;
    tracing::info!(id = %member.inner.id, prefix = %cfg.prefix, revision = rev, groups = state.groups.len(), "joined the fleet");
    *lock(&member.inner.latest) = Some((state, rev));
    Ok((member, deadline))
}

impl Member {
    /// The fleet's group names as last read.
    pub fn group_names(&self) -> Vec<String> {
        lock(&self.inner.latest)
            .as_ref()
            .map(|(s, _)| s.groups.iter().map(|g| g.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Where group addresses come from (static mode: the fleet state itself).
    pub fn set_resolver(&self, resolve: Resolve, on_groups: Option<OnGroups>) {
        *lock(&self.inner.resolve) = resolve;
        *lock(&self.inner.on_groups) = on_groups;
        *lock(&self.inner.asked) = self.group_names();
    }

    /// The first routing table, from the state read when joining.
    pub fn first_table(&self) -> Result<RoutingTable, String> {
        let latest = lock(&self.inner.latest);
        let (state, rev) = latest.as_ref().ok_or("no fleet state read yet")?;
        let resolve = lock(&self.inner.resolve).clone();
        let table = state.table(1, *rev as u64, |g| resolve(g))?;
        self.inner.applied.send_replace(*rev);
        Ok(table)
    }

    /// Rebuilds the table from the latest state with the groups' current addresses (called when
    /// the Sentinel watcher publishes); a state waiting for a new group's master applies now.
    pub fn recompose(&self, proxy: &Proxy) {
        let latest = lock(&self.inner.latest).clone();
        if let Some((state, rev)) = latest {
            self.publish(proxy, &state, rev, true);
        }
    }

    /// Takes a new lease, publishes the instance's entry (ack 0) and reads the slot map, all in
    /// one transaction so the map is current as of the registration.
    async fn register(&self) -> Result<(FleetState, i64, Instant), String> {
        let f = &self.inner.fleet;
        let sent = Instant::now();
        let (lease, ttl) =
            f.etcd.grant(self.inner.cfg.lease_ttl_secs()).await.map_err(|e| e.to_string())?;
        let record = InstanceRecord { ack: 0, ..self.inner.record.clone() };
        let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let r = f
            .etcd
            .txn(
                vec![],
                vec![
                    Op::Put { key: f.keys.instance(&self.inner.id), value, lease: 0 },
                    Op::Put { key: f.keys.live(&self.inner.id), value: b"{}".to_vec(), lease },
                    Op::Get { key: f.keys.state() },
                ],
                vec![],
            )
            .await
            .map_err(|e| e.to_string())?;
        *self.inner.lease.lock().unwrap_or_else(|e| e.into_inner()) = lease;
        self.inner.acked.store(0, std::sync::atomic::Ordering::Relaxed);
        let kv = r.gets.first().and_then(|g| g.first()).ok_or_else(|| {
            format!(
                "no fleet at {} in etcd: run `keyhop slots init --config FILE` once to create it from the file's [[groups]]",
                f.keys.prefix()
            )
        })?;
        let state = FleetState::parse(&kv.value)?;
        let ttl = Duration::from_secs(ttl.max(1) as u64);
        Ok((state, kv.mod_revision, sent + ttl - margin(ttl)))
    }

    /// Starts following the fleet: the lease, the watch of the slot map, and the acks.
    pub fn start(&self, proxy: &Proxy, deadline: Instant) {
        proxy.set_fleet_gate(self.inner.cfg.grace());
        proxy.set_lease_deadline(Some(deadline));
        let tasks = vec![
            tokio::spawn(self.clone().lease_loop(proxy.clone())),
            tokio::spawn(self.clone().watch_loop(proxy.clone())),
            tokio::spawn(self.clone().ack_loop(proxy.clone())),
            tokio::spawn(self.clone().jobs_loop()),
        ];
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).extend(tasks);
    }

    /// Publishes the table for `state` at `rev` unless the data plane already has it or newer.
    fn apply(&self, proxy: &Proxy, state: &FleetState, rev: i64) {
        if rev <= *self.inner.applied.borrow() {
            return;
        }
        *lock(&self.inner.latest) = Some((state.clone(), rev));
        self.publish(proxy, state, rev, false);
    }

    /// Builds and stores the table; `same_revision` republishes the applied revision with new
    /// addresses. A group whose master is not known yet holds the revision back (no ack), so
    /// no migration to it starts before this instance can reach it.
    fn publish(&self, proxy: &Proxy, state: &FleetState, rev: i64, same_revision: bool) {
        let started = Instant::now();
        let resolve = lock(&self.inner.resolve).clone();
        let old = proxy.table().load_full();
        let table = match state.table(old.epoch + 1, rev as u64, |g| resolve(g)) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let names: Vec<String> = state.groups.iter().map(|g| g.name.clone()).collect();
                let hook = lock(&self.inner.on_groups).clone();
                let mut asked = lock(&self.inner.asked);
                if let Some(hook) = hook
                    && *asked != names
                {
                    *asked = names.clone();
                    drop(asked);
                    tracing::info!(groups = ?names, "the fleet's groups changed; following them");
                    hook(names);
                } else {
                    tracing::warn!(revision = rev, "fleet revision waits: {e}");
                }
                return;
            }
        };
        if same_revision && table.groups == old.groups && table.fleet_revision == old.fleet_revision
        {
            return;
        }
        proxy.table().store(table.clone());
        proxy.table_changed(&old, &table);
        crate::admin::record_publish(&old, &table);
        if rev > *self.inner.applied.borrow() {
            self.inner.applied.send_replace(rev);
        }
        let flux: Vec<String> = state
            .flux
            .iter()
            .map(|f| format!("{}-{} {}->{} {:?}", f.first, f.last, f.from, f.to, f.state))
            .collect();
        tracing::info!(revision = rev, epoch = table.epoch, flux = ?flux, after_us = started.elapsed().as_micros() as u64, "applied fleet revision");
    }

    /// Renews the lease every TTL/4 and moves the data plane's deadline; registers again when
    /// the lease is gone, applying the current map before the fence lifts.
    async fn lease_loop(self, proxy: Proxy) {
        let ttl = Duration::from_millis(self.inner.cfg.lease_ttl_ms);
        let every = (ttl / 4).max(Duration::from_millis(100));
        let mut lost = false;
        loop {
            tokio::time::sleep(every).await;
            let lease = *self.inner.lease.lock().unwrap_or_else(|e| e.into_inner());
            let sent = Instant::now();
            match self.inner.fleet.etcd.keep_alive(lease).await {
                Ok(left) if left > 0 && !lost => {
                    let granted = Duration::from_secs(left as u64);
                    proxy.set_lease_deadline(Some(sent + granted - margin(granted)));
                }
                Ok(_) => {
                    if !lost {
                        tracing::warn!(id = %self.inner.id, "etcd lease is gone; registering again");
                    }
                    lost = true;
                    match self.register().await {
                        Ok((state, rev, deadline)) => {
                            self.apply(&proxy, &state, rev);
                            proxy.set_lease_deadline(Some(deadline));
                            self.inner.applied.send_modify(|_| {});
                            tracing::info!(id = %self.inner.id, revision = rev, "registered again; serving");
                            lost = false;
                        }
                        Err(e) => tracing::warn!("cannot register with etcd: {e}"),
                    }
                }
                Err(e) => {
                    if !lost {
                        tracing::warn!(id = %self.inner.id, "cannot renew the etcd lease: {e}; slots in flux are held from the lease deadline on");
                    }
                    lost = true;
                }
            }
        }
    }

    /// Follows `P/state` through a watch, re-reading it on every gap and every poll interval.
    async fn watch_loop(self, proxy: Proxy) {
        let f = self.inner.fleet.clone();
        let poll = Duration::from_millis(self.inner.cfg.poll_interval_ms);
        loop {
            let from = *self.inner.applied.borrow() + 1;
            let mut watch = match f.etcd.watch_prefix(&f.keys.state(), from).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::debug!("cannot watch the fleet state: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.reread(&proxy).await;
                    continue;
                }
            };
            loop {
                let msg = tokio::select! {
                    m = watch.next() => m,
                    _ = tokio::time::sleep(poll) => {
                        self.reread(&proxy).await;
                        continue;
                    }
                };
                match msg {
                    Ok(Some(WatchMsg::Events { events, .. })) => {
                        for ev in events {
                            if ev.kind != EventKind::Put {
                                continue;
                            }
                            match FleetState::parse(&ev.kv.value) {
                                Ok(state) => self.apply(&proxy, &state, ev.kv.mod_revision),
                                Err(e) => tracing::error!("ignoring a fleet state: {e}"),
                            }
                        }
                    }
                    Ok(Some(WatchMsg::Progress { .. })) => {}
                    Ok(Some(WatchMsg::Compacted { .. })) | Ok(None) | Err(_) => break,
                }
            }
            self.reread(&proxy).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn reread(&self, proxy: &Proxy) {
        match self.inner.fleet.read_state().await {
            Ok((state, rev)) => self.apply(proxy, &state, rev),
            Err(e) => tracing::debug!("cannot read the fleet state: {e}"),
        }
    }

    /// Reads the migration jobs once a second while slots are in flux or a job is recorded as
    /// running, and once more after, and the instances every 5 s, so `/topology` and the
    /// dashboard show them without asking etcd per request.
    async fn jobs_loop(self) {
        let mut was_busy = true;
        for round in 0u64.. {
            if round % 5 == 0
                && let Ok(list) = self.inner.fleet.instances().await
            {
                *lock(&self.inner.instances) = list;
            }
            let in_flux =
                lock(&self.inner.latest).as_ref().is_some_and(|(s, _)| !s.flux.is_empty());
            let running = lock(&self.inner.jobs).iter().any(|(_, j)| j.state == "running");
            let busy = in_flux || running;
            if (busy || was_busy)
                && let Ok(jobs) = self.inner.fleet.jobs().await
            {
                *lock(&self.inner.jobs) = jobs;
            }
            was_busy = busy;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Acknowledges each applied revision once the requests routed before it are answered.
    async fn ack_loop(self, proxy: Proxy) {
        let mut rx = self.inner.applied.subscribe();
        loop {
            let rev = *rx.borrow_and_update();
            let epoch = proxy.table().load().epoch;
            proxy.drained_to(epoch).await;
            if rev > self.inner.acked.load(std::sync::atomic::Ordering::Relaxed) {
                let record = InstanceRecord { ack: rev, ..self.inner.record.clone() };
                let f = &self.inner.fleet;
                match serde_json::to_vec(&record) {
                    Ok(v) => match f.etcd.put(&f.keys.instance(&self.inner.id), &v, 0).await {
                        Ok(_) => {
                            self.inner.acked.store(rev, std::sync::atomic::Ordering::Relaxed);
                            tracing::debug!(revision = rev, "acknowledged fleet revision");
                        }
                        Err(e) => {
                            tracing::warn!("cannot acknowledge fleet revision {rev}: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    Err(e) => tracing::error!("{e}"),
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
