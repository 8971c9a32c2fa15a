//! Moving a list of keys with `MIGRATE host port "" db timeout [AUTH pw] KEYS k1..kn`, in
//! adaptive, throttled batches, with the per-reply rules of fleet-plan §2.6: `NOKEY` means a
//! client's command already moved the keys, `IOERR` is retried, and `BUSYKEY` means the target
//! copy is authoritative, so the source copy is dropped.

use std::time::{Duration, Instant};

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::scan::Link;
use super::throttle::{Adaptive, Bucket};
use super::{MoveError, MoveSpec, MoveStats};

/// Retries of a batch answered `IOERR` (the target was slow or its connection broke).
const IOERR_RETRIES: u32 = 3;
/// Backoff before the first retry; doubled for each next one.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// Time allowed on top of MIGRATE's own timeout before the source itself is deemed stuck
/// (MIGRATE applies its timeout to each I/O step, so a batch may take a few of them).
const MIGRATE_SLACK: Duration = Duration::from_secs(5);

/// What one `MIGRATE` answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// `+OK`: the keys that existed are on the target now.
    Moved,
    /// `+NOKEY`: none of the keys existed any more.
    NoKey,
    /// The target already held one of the keys; the others that existed were moved.
    Busy,
    /// `IOERR`: the source could not talk to the target; worth retrying.
    Transient(String),
    /// Anything else: retrying will not help.
    Failed(String),
}

/// Classifies a `MIGRATE` reply.
pub(super) fn outcome(reply: &BytesFrame) -> Outcome {
    match reply {
        BytesFrame::SimpleString(s) if &s[..] == b"OK" => Outcome::Moved,
        BytesFrame::SimpleString(s) if &s[..] == b"NOKEY" => Outcome::NoKey,
        BytesFrame::Error(e) if e.contains("BUSYKEY") => Outcome::Busy,
        BytesFrame::Error(e) if e.starts_with("IOERR") => Outcome::Transient(e.to_string()),
        BytesFrame::Error(e) => Outcome::Failed(e.to_string()),
        other => Outcome::Failed(format!("unexpected reply {other:?}")),
    }
}

/// Moves keys from the source of one [`MoveSpec`], keeping the running totals.
pub(super) struct Mover<'a> {
    spec: &'a MoveSpec,
    host: String,
    port: String,
    timeout_ms: String,
    batch: Adaptive,
    cap: Option<usize>,
    bucket: Bucket,
    /// The totals so far.
    pub(super) stats: MoveStats,
}

impl<'a> Mover<'a> {
    /// A mover to the target `host`:`port`.
    pub(super) fn new(spec: &'a MoveSpec, host: String, port: u16) -> Mover<'a> {
        let bucket = Bucket::new(spec.keys_per_second, spec.batch);
        Mover {
            spec,
            host,
            port: port.to_string(),
            timeout_ms: spec.migrate_timeout_ms.to_string(),
            batch: Adaptive::new(spec.batch),
            cap: bucket.batch_cap(),
            bucket,
            stats: MoveStats::default(),
        }
    }

    /// The current batch size, adaptive and throttle caps applied.
    pub(super) fn batch_size(&self) -> usize {
        self.cap.map_or(self.batch.size(), |c| c.min(self.batch.size()))
    }

    /// Moves `keys` of the db selected on `src` (which must be `db`), reporting after each batch.
    pub(super) async fn move_keys(
        &mut self,
        src: &mut Link,
        db: u32,
        keys: &[Bytes],
        progress: &mut (dyn FnMut(&MoveStats) + Send),
    ) -> Result<(), MoveError> {
        let mut rest = keys;
        while !rest.is_empty() {
            let n = self.batch_size().min(rest.len());
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            self.bucket.take(n).await;
            let (result, took) = self.migrate(src, db, batch).await?;
            // Only a full batch says something about the size it was given.
            if n == self.batch_size() {
                self.batch.record(took);
            }
            match result {
                Outcome::Moved => self.stats.moved += n as u64,
                Outcome::NoKey => self.stats.nokey += n as u64,
                Outcome::Busy => self.one_by_one(src, db, batch).await?,
                // `migrate` returns only the three outcomes above.
                Outcome::Transient(e) | Outcome::Failed(e) => return Err(self.failed(&e)),
            }
            progress(&self.stats);
        }
        Ok(())
    }

    /// After a batch hit `BUSYKEY`: each key alone. The batch already moved the keys that
    /// restored fine, so a `NOKEY` here counts as moved; a key still `BUSYKEY` alone is the
    /// target's, and the source copy is unlinked.
    async fn one_by_one(
        &mut self,
        src: &mut Link,
        db: u32,
        keys: &[Bytes],
    ) -> Result<(), MoveError> {
        for key in keys {
            let (result, _) = self.migrate(src, db, std::slice::from_ref(key)).await?;
            match result {
                Outcome::Moved | Outcome::NoKey => self.stats.moved += 1,
                Outcome::Busy => {
                    src.unlink(std::slice::from_ref(key)).await?;
                    self.stats.busykey_resolved += 1;
                    tracing::info!(
                        source = %src.addr,
                        target = %self.spec.target,
                        db,
                        key = %String::from_utf8_lossy(key),
                        "the target already held the key; dropped the source copy"
                    );
                }
                Outcome::Transient(e) | Outcome::Failed(e) => return Err(self.failed(&e)),
            }
        }
        Ok(())
    }

    /// One `MIGRATE` of `keys`, retried on `IOERR`; returns `Moved`, `NoKey` or `Busy` and how
    /// long the last attempt took.
    async fn migrate(
        &self,
        src: &mut Link,
        db: u32,
        keys: &[Bytes],
    ) -> Result<(Outcome, Duration), MoveError> {
        let db = db.to_string();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            self.host.as_bytes(),
            self.port.as_bytes(),
            b"",
            db.as_bytes(),
            self.timeout_ms.as_bytes(),
        ];
        if let Some(pw) = &self.spec.password {
            args.extend([&b"AUTH"[..], pw.as_bytes()]);
        }
        args.push(b"KEYS");
        args.extend(keys.iter().map(|k| &k[..]));
        let limit = Duration::from_millis(self.spec.migrate_timeout_ms) * 2 + MIGRATE_SLACK;
        let mut backoff = RETRY_BACKOFF;
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let reply = src.call_for(&args, limit).await?;
            let took = started.elapsed();
            match outcome(&reply) {
                Outcome::Transient(e) if attempt < IOERR_RETRIES => {
                    attempt += 1;
                    tracing::warn!(
                        source = %src.addr, target = %self.spec.target, error = %e, attempt,
                        "MIGRATE failed; retrying the batch"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Outcome::Transient(e) => {
                    return Err(self.failed(&format!("{e} (after {IOERR_RETRIES} retries)")));
                }
                Outcome::Failed(e) => return Err(self.failed(&e)),
                done => return Ok((done, took)),
            }
        }
    }

    /// The error for a `MIGRATE` that cannot succeed, naming both servers and what to check.
    fn failed(&self, error: &str) -> MoveError {
        let fix = if error.contains("NOAUTH") || error.contains("WRONGPASS") {
            "check that the backend password is right for the target"
        } else if error.contains("IOERR") {
            "check that the source can reach the target at that address, and the target's load"
        } else {
            "check both servers' logs"
        };
        MoveError::Migrate(format!(
            "MIGRATE from {} to {} failed: {error}; {fix}",
            self.spec.source, self.spec.target
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_classify() {
        let status = |s: &'static str| BytesFrame::SimpleString(Bytes::from_static(s.as_bytes()));
        let error = |s: &'static str| BytesFrame::Error(s.into());
        assert_eq!(outcome(&status("OK")), Outcome::Moved);
        assert_eq!(outcome(&status("NOKEY")), Outcome::NoKey);
        assert_eq!(
            outcome(&error(
                "ERR Target instance replied with error: BUSYKEY Target key name already exists."
            )),
            Outcome::Busy
        );
        assert_eq!(
            outcome(&error("IOERR error or timeout reading to target instance")),
            Outcome::Transient("IOERR error or timeout reading to target instance".into())
        );
        assert_eq!(outcome(&error("ERR syntax error")), Outcome::Failed("ERR syntax error".into()));
    }
}
