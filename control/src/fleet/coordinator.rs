//! `keyhop slots migrate`: moves slots to another group while every instance keeps serving.
//!
//! Per window of slots (one source group): lock it (commands on it wait), wait until every
//! instance has acknowledged the lock and drained what it routed before, mark it migrating
//! (commands move their keys first), let the mover copy the rest, then flip ownership and wait
//! for the acknowledgements again. Everything needed to resume is in etcd: the job, and the
//! windows in flux tagged with its id.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyhop_router::FluxState;
use serde::{Deserialize, Serialize};

use super::state::{merge, range_text};
use super::{Fleet, FleetState};
use crate::etcd::{Compare, Op};
use crate::mover::{MoveSpec, MoveStats, move_slots};

/// What to migrate and how.
#[derive(Clone, Debug)]
pub struct MigrateOpts {
    /// Slots to move (inclusive ranges).
    pub slots: Vec<(u16, u16)>,
    /// The group they go to.
    pub to: String,
    /// Most slots in flux at once.
    pub window: u16,
    /// Most keys per `MIGRATE`.
    pub batch: usize,
    /// Throttle; 0 = none.
    pub keys_per_second: u64,
    /// How long to wait for every instance to acknowledge a step.
    pub ack_timeout: Duration,
    /// How long an instance without a lease is waited for (the fleet's `grace_ms`).
    pub grace: Duration,
    /// `MIGRATE`'s timeout argument.
    pub migrate_timeout_ms: u64,
    /// The backend password.
    pub password: Option<String>,
    /// TTL of the lease that makes this the job's only mover.
    pub lease_ttl_secs: i64,
    /// Where the groups' masters are found.
    pub masters: Masters,
    /// TLS to the redis-servers (`backend_tls`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Where the mover finds each group's master.
#[derive(Clone, Debug)]
pub enum Masters {
    /// In the fleet state (static mode).
    Static,
    /// Asked from Sentinel before each window and after a failed move (Sentinel mode).
    Sentinel {
        /// The sentinels to ask.
        addrs: Vec<String>,
        /// Their password.
        password: Option<String>,
        /// TLS to them.
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    },
}

/// How long one window keeps retrying a move that fails (a failover takes seconds).
const MOVE_RETRY_FOR: Duration = Duration::from_secs(120);

impl Masters {
    /// The current master of group `name`.
    pub async fn master_of(&self, state: &FleetState, name: &str) -> Result<String, String> {
        self.of(state, name).await
    }

    async fn of(&self, state: &FleetState, name: &str) -> Result<String, String> {
        match self {
            Masters::Static => state
                .groups
                .iter()
                .find(|g| g.name == name)
                .and_then(|g| g.master.clone())
                .ok_or_else(|| format!("group {name:?} has no master address in the fleet state")),
            Masters::Sentinel { addrs, password, tls } => {
                crate::sentinel::lookup::master_addr(
                    addrs,
                    password.as_deref(),
                    tls.as_ref(),
                    name,
                    Duration::from_secs(2),
                )
                .await
            }
        }
    }
}

/// A job as kept in `P/jobs/<job>`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobRecord {
    /// The requested slots, e.g. `0-4095,8192-12287`.
    pub slots: String,
    /// The target group.
    pub to: String,
    /// `running` or `done`.
    pub state: String,
    /// Keys moved by the mover so far.
    pub moved: u64,
    /// Slots flipped so far.
    pub slots_done: u64,
    /// Slots in the job.
    pub slots_total: u64,
    /// When the job started (Unix ms).
    pub started_unix_ms: u64,
    /// Last progress write (Unix ms).
    pub updated_unix_ms: u64,
}

/// Progress reports for the terminal.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A line worth printing (state changes, waits).
    Line(String),
    /// Running totals.
    Totals {
        /// Slots flipped.
        slots_done: u64,
        /// Slots in the job.
        slots_total: u64,
        /// Keys moved by the mover.
        moved: u64,
    },
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Splits `slots` (minus those already owned by `to`) into windows of one owner each.
pub fn windows(state: &FleetState, slots: &[(u16, u16)], to: &str, window: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(a, b) in slots {
        let mut s = a;
        loop {
            let owner = state.owner_of(s).to_string();
            let mut e = s;
            while e < b && state.owner_of(e + 1) == owner && e - s + 1 < window.max(1) {
                e += 1;
            }
            if owner != to && state.flux_of(s).is_none() {
                out.push((s, e));
            }
            if e >= b {
                break;
            }
            s = e + 1;
        }
    }
    out
}

/// Runs (or resumes) a migration job to the end.
pub async fn migrate(
    fleet: &Fleet,
    opts: &MigrateOpts,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<MoveStats, String> {
    let (state, _) = fleet.read_state().await?;
    if state.group_index(&opts.to).is_none() {
        return Err(format!(
            "group {:?} is not in the fleet: add it first with `keyhop group add {} ...`",
            opts.to, opts.to
        ));
    }
    let slots = merge(opts.slots.clone());
    // A job with windows in flux on these slots is resumed rather than started again.
    let job = state
        .flux
        .iter()
        .find(|f| f.to == opts.to && slots.iter().any(|&(a, b)| f.first <= b && a <= f.last))
        .map(|f| f.job.clone())
        .unwrap_or_else(|| format!("j{}", now_ms()));
    if let Some(f) = state
        .flux
        .iter()
        .find(|f| f.job != job && slots.iter().any(|&(a, b)| f.first <= b && a <= f.last))
    {
        return Err(format!(
            "slots {} are already being migrated by job {} to {}",
            range_text(f.first, f.last),
            f.job,
            f.to
        ));
    }
    let lease = take_mover_lock(fleet, &job, opts.lease_ttl_secs, progress).await?;
    let keep = {
        let etcd = fleet.etcd.clone();
        let every = Duration::from_millis((opts.lease_ttl_secs as u64 * 1000 / 4).max(250));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Ok(0) = etcd.keep_alive(lease).await {
                    return;
                }
            }
        })
    };
    let result = run_job(fleet, opts, &slots, &job, progress).await;
    keep.abort();
    let _ = fleet.etcd.revoke(lease).await;
    result
}

/// Makes this process the job's only mover; waits out a crashed mover's lease.
async fn take_mover_lock(
    fleet: &Fleet,
    job: &str,
    ttl: i64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<i64, String> {
    let (mut lease, _) = fleet.etcd.grant(ttl).await.map_err(|e| e.to_string())?;
    let mut renewed = Instant::now();
    let key = fleet.keys.mover(job);
    let me = serde_json::json!({"host": hostname(), "pid": std::process::id()}).to_string();
    let deadline = Instant::now() + Duration::from_secs(ttl as u64 + 5);
    let mut told = false;
    loop {
        // Our own lease must outlive the wait for the other mover's.
        if renewed.elapsed() >= Duration::from_millis(500) {
            renewed = Instant::now();
            if fleet.etcd.keep_alive(lease).await.map_err(|e| e.to_string())? <= 0 {
                lease = fleet.etcd.grant(ttl).await.map_err(|e| e.to_string())?.0;
            }
        }
        let r = fleet
            .etcd
            .txn(
                vec![Compare::CreateRevision(key.clone(), 0)],
                vec![Op::Put { key: key.clone(), value: me.clone().into_bytes(), lease }],
                vec![Op::Get { key: key.clone() }],
            )
            .await
            .map_err(|e| e.to_string())?;
        if r.succeeded {
            return Ok(lease);
        }
        let holder = r
            .gets
            .first()
            .and_then(|g| g.first())
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .unwrap_or_default();
        if Instant::now() >= deadline {
            let _ = fleet.etcd.revoke(lease).await;
            return Err(format!(
                "job {job} is being run by another `keyhop slots migrate` ({holder}); wait for it, or stop it first"
            ));
        }
        if !told {
            progress(Progress::Line(format!(
                "job {job} has a mover ({holder}); waiting up to {} s for its lease to expire",
                ttl + 5
            )));
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

async fn write_job(fleet: &Fleet, job: &str, rec: &JobRecord) {
    if let Ok(v) = serde_json::to_vec(rec) {
        let _ = fleet.etcd.put(&fleet.keys.job(job), &v, 0).await;
    }
}

async fn run_job(
    fleet: &Fleet,
    opts: &MigrateOpts,
    slots: &[(u16, u16)],
    job: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<MoveStats, String> {
    let started = Instant::now();
    let (state, _) = fleet.read_state().await?;
    let slots_total: u64 = slots.iter().map(|&(a, b)| u64::from(b - a) + 1).sum();
    let mut rec = JobRecord {
        slots: slots.iter().map(|&(a, b)| range_text(a, b)).collect::<Vec<_>>().join(","),
        to: opts.to.clone(),
        state: "running".into(),
        slots_total,
        started_unix_ms: now_ms(),
        ..JobRecord::default()
    };
    let done_slots = |s: &FleetState| -> u64 {
        slots.iter().flat_map(|&(a, b)| a..=b).filter(|&x| s.owner_of(x) == opts.to).count() as u64
    };
    rec.slots_done = done_slots(&state);
    write_job(fleet, job, &rec).await;
    let mut total = MoveStats::default();
    // (source group, first, last, the source master its pass used), per pass.
    let mut passes: Vec<(String, u16, u16, String)> = Vec::new();
    // Windows this job left in flux (a resumed job) come first, then the rest in order.
    let mut pending: Vec<(u16, u16, bool)> = state
        .flux
        .iter()
        .filter(|f| f.job == job)
        .map(|f| (f.first, f.last, f.state == FluxState::Migrating))
        .collect();
    if !pending.is_empty() {
        progress(Progress::Line(format!("resuming job {job}: {} windows in flux", pending.len())));
    }
    pending.extend(
        windows(&state, slots, &opts.to, opts.window).into_iter().map(|(a, b)| (a, b, false)),
    );
    let mut already_locked: Vec<u16> =
        state.flux.iter().filter(|f| f.job == job).map(|f| f.first).collect();
    for (first, last, migrating) in pending {
        let w = range_text(first, last);
        let mut note = |line: &str| progress(Progress::Line(format!("window {w}: {line}")));
        if !migrating {
            if !already_locked.contains(&first) {
                let (_, rev) = fleet.update_state(|s| s.lock(first, last, &opts.to, job)).await?;
                note(&format!("locked (rev {rev}); waiting for every keyhop to acknowledge"));
                already_locked.push(first);
                barrier_or_unlock(fleet, opts, job, first, rev, &mut note).await?;
            } else {
                let (_, rev) = fleet.read_state().await?;
                barrier_or_unlock(fleet, opts, job, first, rev, &mut note).await?;
            }
            let (_, rev) = fleet.update_state(|s| s.start_migrating(first, job)).await?;
            note(&format!("migrating (rev {rev})"));
        }
        let (state, _) = fleet.read_state().await?;
        let entry = state
            .flux
            .iter()
            .find(|f| f.first == first && f.job == job)
            .cloned()
            .ok_or_else(|| format!("window {w} left the fleet state unexpectedly"))?;
        let base = total.moved;
        let mut last_write = Instant::now();
        let retry_until = Instant::now() + MOVE_RETRY_FOR;
        let stats = loop {
            let spec = MoveSpec {
                source: opts.masters.of(&state, &entry.from).await?,
                target: opts.masters.of(&state, &entry.to).await?,
                slots: vec![(first, last)],
                password: opts.password.clone(),
                migrate_timeout_ms: opts.migrate_timeout_ms,
                batch: opts.batch,
                keys_per_second: opts.keys_per_second,
                tls: opts.tls.clone(),
                // Locked, acknowledged and drained before migrating: no instance writes the
                // window's keys to the source any more.
                writes_stopped: true,
            };
            let mut report = |s: &MoveStats| {
                progress(Progress::Totals {
                    slots_done: rec.slots_done,
                    slots_total,
                    moved: base + s.moved,
                });
                // Progress for `/topology` and `slots show`, at most once a second and never
                // waited for: it is display only, and does not bump the fleet revision.
                if last_write.elapsed() >= Duration::from_secs(1) {
                    last_write = Instant::now();
                    let mut r = rec.clone();
                    r.moved = base + s.moved;
                    r.updated_unix_ms = now_ms();
                    let f = fleet.clone();
                    let job = job.to_string();
                    tokio::spawn(async move { write_job(&f, &job, &r).await });
                }
            };
            let source = spec.source.clone();
            match move_slots(&spec, &mut report).await {
                Ok(stats) => {
                    passes.push((entry.from.clone(), first, last, source));
                    // A source that failed over during the pass may have kept keys whose
                    // deletion it never replicated: scan the new master again before the flip.
                    let now = opts.masters.of(&state, &entry.from).await?;
                    if now == spec.source {
                        break stats;
                    }
                    progress(Progress::Line(format!(
                        "window {w}: {} failed over from {} to {now} during the pass; scanning the new master",
                        entry.from, spec.source
                    )));
                }
                // A failover of the source or target: ask for the masters again and scan the
                // window from the start (cursors do not carry over to a promoted replica).
                Err(e) if Instant::now() < retry_until => {
                    progress(Progress::Line(format!(
                        "window {w}: {e}; retrying against the current masters"
                    )));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        total.moved += stats.moved;
        total.nokey += stats.nokey;
        total.busykey_resolved += stats.busykey_resolved;
        total.scanned += stats.scanned;
        total.passes += stats.passes;
        let (state, rev) = fleet.update_state(|s| s.flip(first, job)).await?;
        rec.slots_done = done_slots(&state);
        rec.moved = total.moved;
        rec.updated_unix_ms = now_ms();
        write_job(fleet, job, &rec).await;
        let mut note = |line: &str| progress(Progress::Line(format!("window {w}: {line}")));
        note(&format!("{} keys moved; now owned by {} (rev {rev})", stats.moved, opts.to));
        // The next lock of these slots must not start while an instance still moves keys.
        fleet.barrier(rev, opts.grace, opts.ack_timeout.max(opts.grace * 3), &mut note).await?;
        progress(Progress::Totals { slots_done: rec.slots_done, slots_total, moved: total.moved });
    }
    // Windows whose source master has changed since their pass: the promoted replica may hold
    // copies of moved keys (deletions it never received, Sentinel does not pause the old
    // master). Their slots belong to the target now, so those copies are garbage: remove them.
    let (state, _) = fleet.read_state().await?;
    for (group, first, last, used) in passes {
        let Ok(master) = opts.masters.of(&state, &group).await else { continue };
        if master == used {
            continue;
        }
        match crate::mover::sweep(
            &master,
            opts.password.as_deref(),
            opts.tls.as_ref(),
            &[(first, last)],
        )
        .await
        {
            Ok(n) => progress(Progress::Line(format!(
                "swept {n} stale keys of slots {} from {group}'s new master {master}",
                range_text(first, last)
            ))),
            Err(e) => progress(Progress::Line(format!(
                "could not sweep slots {} on {group} ({e}): run `keyhop slots sweep` later",
                range_text(first, last)
            ))),
        }
    }
    rec.state = "done".into();
    rec.updated_unix_ms = now_ms();
    write_job(fleet, job, &rec).await;
    progress(Progress::Line(format!(
        "job {job} done: {} slots to {} in {:.1} s, {} keys moved by the mover",
        rec.slots_done,
        opts.to,
        started.elapsed().as_secs_f64(),
        total.moved
    )));
    Ok(total)
}

/// Waits for the lock's acknowledgements; on timeout gives the window back to its owner, so
/// clients stop waiting, and reports who was late.
async fn barrier_or_unlock(
    fleet: &Fleet,
    opts: &MigrateOpts,
    job: &str,
    first: u16,
    rev: i64,
    note: &mut (dyn FnMut(&str) + Send),
) -> Result<(), String> {
    let timeout = opts.ack_timeout.max(opts.grace + Duration::from_secs(1));
    match fleet.barrier(rev, opts.grace, timeout, note).await {
        Ok(n) => {
            note(&format!("acknowledged by {n} instances"));
            Ok(())
        }
        Err(why) => {
            let _ = fleet.update_state(|s| s.unlock(first, job)).await;
            Err(format!("{why}; the window was unlocked, run the command again to retry"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::GroupDef;

    fn g(name: &str) -> GroupDef {
        GroupDef { name: name.into(), master: Some("127.0.0.1:1".into()), replicas: vec![] }
    }

    #[test]
    fn windows_split_per_owner_and_size() {
        let mut s =
            FleetState::new(vec![g("g1"), g("g2")], &[vec![(0, 8191)], vec![(8192, 16383)]])
                .unwrap();
        s.add_group(g("g3")).unwrap();
        let w = windows(&s, &[(8000, 8500)], "g3", 256);
        assert_eq!(w, vec![(8000, 8191), (8192, 8447), (8448, 8500)]);
        // Slots already owned by the target are skipped.
        let w = windows(&s, &[(8000, 8500)], "g2", 1024);
        assert_eq!(w, vec![(8000, 8191)]);
    }
}
