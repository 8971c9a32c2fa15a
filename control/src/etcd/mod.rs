//! An etcd v3 client over etcd's JSON gateway (HTTP/1.1 + JSON, no gRPC code generation: see
//! docs/fleet-plan.md §1 for why). It covers what the fleet needs: reads, puts, deletes,
//! transactions with compares, leases and a prefix watch.
//!
//! Endpoints are tried in order, sticky to the last one that answered. Every call is bounded by
//! the timeout given to [`Etcd::new`] (per endpoint tried), except reading a watch's stream,
//! which waits as long as etcd has nothing to say. `https://` endpoints are not supported yet.

mod http;
mod json;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use http::{Answer, Endpoints};
use json::{GrantResponse, HeaderOnly, KeepAliveResponse, RangeResponse, StreamMsg, TxnResponse};
pub use watch::{Watch, WatchMsg};

/// Why an etcd call failed.
#[derive(Debug, Clone)]
pub enum EtcdError {
    /// No endpoint could be reached (the text names the last one tried and why).
    Unreachable(String),
    /// No endpoint answered within the timeout.
    Timeout,
    /// etcd answered with an error, or with something keyhop cannot read.
    Server(String),
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Unreachable(m) => {
                write!(f, "{m} (check [etcd] endpoints and that etcd is running there)")
            }
            EtcdError::Timeout => write!(
                f,
                "etcd did not answer in time on any endpoint (check that etcd is running and \
                 healthy, or raise [etcd] timeout_ms)"
            ),
            EtcdError::Server(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// One key's value and its revisions.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for a delete event).
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
    /// How many times it was written since it was created.
    pub version: i64,
    /// The lease it is attached to (0 = none).
    pub lease: i64,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Compare {
    /// The key's mod_revision equals n (0 = the key is absent).
    ModRevision(Vec<u8>, i64),
    /// The key's create_revision equals n (0 = the key is absent).
    CreateRevision(Vec<u8>, i64),
    /// The key's value equals v.
    Value(Vec<u8>, Vec<u8>),
}

/// An operation of a transaction branch.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Write a key (lease 0 = none).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The lease to attach (0 = none).
        lease: i64,
    },
    /// Delete one key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Delete every key under a prefix.
    DeletePrefix {
        /// The prefix.
        prefix: Vec<u8>,
    },
    /// Read one key (its result is one of `TxnResult::gets`).
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Read every key under a prefix (its result is one of `TxnResult::gets`).
    GetPrefix {
        /// The prefix.
        prefix: Vec<u8>,
    },
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnResult {
    /// Whether the compares held (the success branch ran).
    pub succeeded: bool,
    /// The store's revision after the transaction (the response header's).
    pub revision: i64,
    /// One per Get/GetPrefix op of the branch taken, in order.
    pub gets: Vec<Vec<Kv>>,
}

/// What a watch event did to its key.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The key was written.
    Put,
    /// The key was deleted (or its lease expired).
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: the key and the delete's mod_revision).
    pub kv: Kv,
}

/// An etcd client; clones share the endpoints and which one answered last.
#[derive(Clone)]
pub struct Etcd {
    endpoints: Arc<Endpoints>,
}

impl fmt::Debug for Etcd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Etcd").finish_non_exhaustive()
    }
}

impl Etcd {
    /// A client of `endpoints` (each `http://host:port`), every call bounded by `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Etcd, EtcdError> {
        let endpoints = Endpoints::new(&endpoints, timeout).map_err(EtcdError::Server)?;
        Ok(Etcd { endpoints: Arc::new(endpoints) })
    }

    async fn call<T: DeserializeOwned>(&self, path: &str, body: Value) -> Result<T, EtcdError> {
        let (url, answer) = self.endpoints.post(path, &body, false).await?;
        let Answer::Full(bytes) = answer else {
            return Err(EtcdError::Server(format!("etcd at {url}: {path} answered a stream")));
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            EtcdError::Server(format!(
                "etcd at {url} answered {path} with something keyhop cannot read ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ))
        })
    }

    /// One key (None when absent) and the store's revision.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<Kv>, i64), EtcdError> {
        let r: RangeResponse = self.call("/v3/kv/range", json::range(key, None)).await?;
        let revision = r.header.revision;
        Ok((r.kvs().into_iter().next(), revision))
    }

    /// Every key under `prefix`, in key order, and the store's revision.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<(Vec<Kv>, i64), EtcdError> {
        let end = json::prefix_end(prefix);
        let r: RangeResponse = self.call("/v3/kv/range", json::range(prefix, Some(&end))).await?;
        let revision = r.header.revision;
        Ok((r.kvs(), revision))
    }

    /// Writes a key (lease 0 = none); returns the new revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let r: HeaderOnly = self.call("/v3/kv/put", json::put(key, value, lease)).await?;
        Ok(r.header.revision)
    }

    /// Deletes a key (absent is fine); returns the store's revision after it.
    pub async fn delete(&self, key: &[u8]) -> Result<i64, EtcdError> {
        let r: HeaderOnly = self.call("/v3/kv/deleterange", json::delete(key, None)).await?;
        Ok(r.header.revision)
    }

    /// Runs `success` if every compare holds, else `failure`, atomically.
    pub async fn txn(
        &self,
        compare: Vec<Compare>,
        success: Vec<Op>,
        failure: Vec<Op>,
    ) -> Result<TxnResult, EtcdError> {
        let r: TxnResponse =
            self.call("/v3/kv/txn", json::txn(&compare, &success, &failure)).await?;
        Ok(TxnResult { succeeded: r.succeeded, revision: r.header.revision, gets: r.gets() })
    }

    /// A new lease of `ttl_secs`: its id and the TTL etcd granted.
    pub async fn grant(&self, ttl_secs: i64) -> Result<(i64, i64), EtcdError> {
        let r: GrantResponse =
            self.call("/v3/lease/grant", json!({ "TTL": ttl_secs.to_string() })).await?;
        if !r.error.is_empty() {
            return Err(EtcdError::Server(format!(
                "etcd refused a lease of {ttl_secs}s: {}",
                r.error
            )));
        }
        Ok((r.id, r.ttl))
    }

    /// Renews a lease once: the TTL it has again, 0 when the lease is gone (expired or revoked).
    pub async fn keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        let path = "/v3/lease/keepalive";
        // A gateway stream: the answer is its first line.
        let (url, answer) =
            self.endpoints.post(path, &json!({ "ID": id.to_string() }), true).await?;
        let line = match answer {
            Answer::Full(bytes) => {
                bytes.split(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap_or_default().to_vec()
            }
            Answer::Stream(body, driver) => {
                let mut w = Watch::new(body, driver, url.clone());
                tokio::time::timeout(self.endpoints.timeout(), w.first_line())
                    .await
                    .map_err(|_| EtcdError::Timeout)??
            }
        };
        let msg: StreamMsg<KeepAliveResponse> = serde_json::from_slice(&line).map_err(|e| {
            EtcdError::Server(format!(
                "etcd at {url} answered {path} with something keyhop cannot read ({e}): {}",
                String::from_utf8_lossy(&line)
            ))
        })?;
        if let Some(err) = msg.error {
            let m = json::error_of(&err).unwrap_or_else(|| err.to_string());
            return Err(EtcdError::Server(format!("etcd at {url} refused {path}: {m}")));
        }
        Ok(msg.result.map_or(0, |r| r.ttl))
    }

    /// Revokes a lease (its keys are deleted); a lease that is already gone is fine.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        match self.call::<HeaderOnly>("/v3/lease/revoke", json!({ "ID": id.to_string() })).await {
            Err(EtcdError::Server(m)) if m.contains("requested lease not found") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Compacts the history up to `revision` (watches from before it get `Compacted`).
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let body = json!({ "revision": revision.to_string(), "physical": true });
        self.call::<HeaderOnly>("/v3/kv/compaction", body).await.map(|_| ())
    }

    /// Watches every key under `prefix` from `start_revision` (inclusive) with progress notifications.
    pub async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let body = json::watch_create(prefix, start_revision);
        match self.endpoints.post("/v3/watch", &body, true).await? {
            (url, Answer::Stream(body, driver)) => Ok(Watch::new(body, driver, url)),
            (url, Answer::Full(_)) => {
                Err(EtcdError::Server(format!("etcd at {url}: /v3/watch did not answer a stream")))
            }
        }
    }
}
