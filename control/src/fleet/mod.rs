//! A fleet of keyhop instances sharing one slot map through etcd.
//!
//! Layout under the configured prefix `P` (all values JSON):
//! - `P/state`: the [`FleetState`]; its mod revision is the *fleet revision*;
//! - `P/instances/<id>`: each instance's address and the last fleet revision it applied and
//!   drained (`ack`);
//! - `P/live/<id>`: exists while the instance's lease is alive;
//! - `P/jobs/<job>`: a migration job's request and progress;
//! - `P/movers/<job>`: held (under a lease) by the one `keyhop slots migrate` running the job.
//!
//! A slot state change takes effect only once every instance has acknowledged it, or has lost
//! its lease for longer than the grace period (then it fences itself, see the proxy's gate).

pub mod coordinator;
pub mod state;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::etcd::{Compare, Etcd, Op};
pub use state::{FleetState, GroupDef};

/// The etcd keys of one fleet.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (e.g. `/keyhop/prod`).
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.trim_end_matches('/').to_string() }
    }

    /// The fleet prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P/state`.
    pub fn state(&self) -> Vec<u8> {
        format!("{}/state", self.prefix).into_bytes()
    }

    /// `P/instances/` (prefix) or `P/instances/<id>`.
    pub fn instance(&self, id: &str) -> Vec<u8> {
        format!("{}/instances/{id}", self.prefix).into_bytes()
    }

    /// `P/live/` (prefix) or `P/live/<id>`.
    pub fn live(&self, id: &str) -> Vec<u8> {
        format!("{}/live/{id}", self.prefix).into_bytes()
    }

    /// `P/jobs/` (prefix) or `P/jobs/<job>`.
    pub fn job(&self, job: &str) -> Vec<u8> {
        format!("{}/jobs/{job}", self.prefix).into_bytes()
    }

    /// `P/movers/<job>`.
    pub fn mover(&self, job: &str) -> Vec<u8> {
        format!("{}/movers/{job}", self.prefix).into_bytes()
    }
}

/// What an instance publishes about itself in `P/instances/<id>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Its client listener.
    #[serde(default)]
    pub addr: String,
    /// Its host name.
    #[serde(default)]
    pub host: String,
    /// Its process id.
    #[serde(default)]
    pub pid: u32,
    /// Its keyhop version.
    #[serde(default)]
    pub version: String,
    /// The last fleet revision it applied and drained.
    #[serde(default)]
    pub ack: i64,
}

/// An instance as a coordinator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its id (the last part of its keys).
    pub id: String,
    /// What it published.
    pub record: InstanceRecord,
    /// Whether its lease key exists.
    pub live: bool,
}

/// A handle on one fleet in etcd.
#[derive(Clone)]
pub struct Fleet {
    /// The etcd client.
    pub etcd: Etcd,
    /// The fleet's keys.
    pub keys: Keys,
}

/// Most compare-and-swap attempts of one state change before giving up.
const CAS_ATTEMPTS: usize = 50;

impl Fleet {
    /// A handle on the fleet under `prefix`.
    pub fn new(etcd: Etcd, prefix: &str) -> Fleet {
        Fleet { etcd, keys: Keys::new(prefix) }
    }

    /// The current state and its revision; an error when the fleet is not initialised.
    pub async fn read_state(&self) -> Result<(FleetState, i64), String> {
        let (kv, _) = self.etcd.get(&self.keys.state()).await.map_err(|e| e.to_string())?;
        let kv = kv.ok_or_else(|| {
            format!(
                "no fleet at {} in etcd: run `keyhop slots init --config FILE` once to create it from the file's [[groups]]",
                self.keys.prefix()
            )
        })?;
        Ok((FleetState::parse(&kv.value)?, kv.mod_revision))
    }

    /// Writes the first state; fails if one exists (unless `force`).
    pub async fn init(&self, state: &FleetState, force: bool) -> Result<i64, String> {
        let key = self.keys.state();
        let compare = if force { vec![] } else { vec![Compare::CreateRevision(key.clone(), 0)] };
        let put = Op::Put { key, value: state.to_json(), lease: 0 };
        let r = self.etcd.txn(compare, vec![put], vec![]).await.map_err(|e| e.to_string())?;
        if !r.succeeded {
            return Err(format!(
                "a fleet already exists at {}: see it with `keyhop slots show`; `--force` overwrites it",
                self.keys.prefix()
            ));
        }
        Ok(r.revision)
    }

    /// Applies `change` to the current state with a compare-and-swap, retrying on conflicts.
    /// Returns the new state and its revision.
    pub async fn update_state(
        &self,
        mut change: impl FnMut(&mut FleetState) -> Result<(), String>,
    ) -> Result<(FleetState, i64), String> {
        for _ in 0..CAS_ATTEMPTS {
            let (mut state, rev) = self.read_state().await?;
            change(&mut state)?;
            let key = self.keys.state();
            let r = self
                .etcd
                .txn(
                    vec![Compare::ModRevision(key.clone(), rev)],
                    vec![Op::Put { key, value: state.to_json(), lease: 0 }],
                    vec![],
                )
                .await
                .map_err(|e| e.to_string())?;
            if r.succeeded {
                return Ok((state, r.revision));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err("the fleet state kept changing under this command: try again".into())
    }

    /// Every migration job recorded, by id (finished ones too).
    pub async fn jobs(&self) -> Result<Vec<(String, coordinator::JobRecord)>, String> {
        let base = self.keys.job("");
        let (kvs, _) = self.etcd.get_prefix(&base).await.map_err(|e| e.to_string())?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let id = String::from_utf8_lossy(&kv.key[base.len()..]).into_owned();
                serde_json::from_slice(&kv.value).ok().map(|r| (id, r))
            })
            .collect())
    }

    /// Every registered instance and whether its lease is alive.
    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, String> {
        let base = self.keys.instance("");
        let (records, _) = self.etcd.get_prefix(&base).await.map_err(|e| e.to_string())?;
        let (lives, _) =
            self.etcd.get_prefix(&self.keys.live("")).await.map_err(|e| e.to_string())?;
        let live_base = self.keys.live("").len();
        let live: Vec<&[u8]> = lives.iter().map(|kv| &kv.key[live_base..]).collect();
        let mut out = Vec::new();
        for kv in records {
            let id = String::from_utf8_lossy(&kv.key[base.len()..]).into_owned();
            let record: InstanceRecord = serde_json::from_slice(&kv.value).unwrap_or_default();
            let live = live.contains(&id.as_bytes());
            out.push(InstanceInfo { id, record, live });
        }
        Ok(out)
    }

    /// Waits until every instance has acknowledged `revision`, or has had no lease for `grace`
    /// (then its entry is removed: it fences itself). `note` hears who is being waited for.
    pub async fn barrier(
        &self,
        revision: i64,
        grace: Duration,
        timeout: Duration,
        note: &mut (dyn FnMut(&str) + Send),
    ) -> Result<usize, String> {
        let started = Instant::now();
        let mut missing_since: HashMap<String, Instant> = HashMap::new();
        let mut last_note = Instant::now();
        loop {
            let mut pending = Vec::new();
            let instances = self.instances().await?;
            let mut acked = 0;
            for i in &instances {
                if i.record.ack >= revision {
                    acked += 1;
                    continue;
                }
                if i.live {
                    missing_since.remove(&i.id);
                    pending.push(i);
                    continue;
                }
                let since = *missing_since.entry(i.id.clone()).or_insert_with(Instant::now);
                if since.elapsed() >= grace {
                    // Only if its lease key is still gone: it cannot have come back meanwhile.
                    let live = self.keys.live(&i.id);
                    let _ = self
                        .etcd
                        .txn(
                            vec![Compare::CreateRevision(live, 0)],
                            vec![Op::Delete { key: self.keys.instance(&i.id) }],
                            vec![],
                        )
                        .await;
                    note(&format!(
                        "keyhop {} at {} lost its lease {} ms ago; no longer waiting for it (it fences itself)",
                        i.id,
                        i.record.addr,
                        since.elapsed().as_millis()
                    ));
                } else {
                    pending.push(i);
                }
            }
            if pending.is_empty() {
                return Ok(acked);
            }
            let worst = pending[0];
            let why = format!(
                "waiting for keyhop {} at {}: acked {}, needs {}{}",
                worst.id,
                worst.record.addr,
                worst.record.ack,
                revision,
                if worst.live { "" } else { " (its lease is gone; waiting out the grace period)" }
            );
            if started.elapsed() >= timeout {
                return Err(why);
            }
            if last_note.elapsed() >= Duration::from_secs(1) {
                note(&why);
                last_note = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
