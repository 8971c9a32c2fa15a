//! The key mover of online slot migration (fleet-plan §4): moves every key of a window of slots
//! from a source master to a target master on vanilla Redis, by `SCAN`ning the source (it has no
//! per-slot index) and `MIGRATE ... KEYS` in small batches. Also the sweep that deletes a window's
//! keys from a server (§2.6) and a count of them. No etcd here: the `slots migrate` coordinator
//! decides which window moves when, and calls [`move_slots`] for it.

mod migrate;
mod scan;
mod throttle;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use migrate::Mover;
use scan::{Link, Side, SlotSet, is_last};

/// Most `SCAN` passes of one move. Each pass after the first only finds keys written to the
/// source during the one before, which stops once clients write the window to the target; a
/// source that keeps getting them means something still writes there, and the move must not
/// spin on it forever.
const MAX_PASSES: u32 = 100;

/// One window's move: where from, where to, which slots, and how gently.
#[derive(Clone, Debug)]
pub struct MoveSpec {
    /// `host:port` of the source master.
    pub source: String,
    /// `host:port` of the target master, as the source reaches it.
    pub target: String,
    /// Inclusive slot ranges being moved (the window).
    pub slots: Vec<(u16, u16)>,
    /// Backend password: `AUTH` on the mover's connections and `MIGRATE ... AUTH`.
    pub password: Option<String>,
    /// `MIGRATE`'s timeout argument, in milliseconds.
    pub migrate_timeout_ms: u64,
    /// Most keys per `MIGRATE` (the adaptive batch stays at or below it).
    pub batch: usize,
    /// Keys per second across the move; 0 = unthrottled.
    pub keys_per_second: u64,
    /// TLS for the mover's own connections (`backend_tls`); `MIGRATE` between the servers
    /// follows their own `tls-cluster` setting.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Nothing writes the window's keys to the source during the move (keyhop's migrating
    /// state guarantees it: every instance moves a key before writing it), so one complete SCAN
    /// pass finds them all and the confirming pass, a full scan of the source, is skipped.
    pub writes_stopped: bool,
}

impl Default for MoveSpec {
    fn default() -> MoveSpec {
        MoveSpec {
            source: String::new(),
            target: String::new(),
            slots: Vec::new(),
            password: None,
            migrate_timeout_ms: 5000,
            batch: 64,
            keys_per_second: 0,
            tls: None,
            writes_stopped: false,
        }
    }
}

/// Running totals of a move.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveStats {
    /// Keys sent in `MIGRATE`s answered `OK` (a key that vanished between `SCAN` and a batch
    /// that moved others is counted too).
    pub moved: u64,
    /// Keys of batches answered `NOKEY`: already gone (a client's command moved them, or they
    /// expired).
    pub nokey: u64,
    /// Keys the target already held: the target copy was kept, the source copy unlinked.
    pub busykey_resolved: u64,
    /// Keys `SCAN` returned, of every slot.
    pub scanned: u64,
    /// Full `SCAN` passes of the source.
    pub passes: u32,
}

/// Why a move, sweep or count stopped; the text names the server and what to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveError {
    /// The source server (or the swept or counted server) failed or refused a command.
    Source(String),
    /// The target server is unreachable or refused the mover.
    Target(String),
    /// `MIGRATE` itself failed in a way retrying does not fix.
    Migrate(String),
    /// The request is malformed (a bad slot range or target address).
    Invalid(String),
}

impl fmt::Display for MoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoveError::Source(m) | MoveError::Target(m) | MoveError::Migrate(m) => f.write_str(m),
            MoveError::Invalid(m) => write!(f, "bad move: {m}"),
        }
    }
}

impl std::error::Error for MoveError {}

/// Moves every key of `spec.slots` from source to target, in every db that has keys (INFO
/// keyspace), with repeated SCAN passes until a full pass finds none of the window's keys (one
/// pass when [`MoveSpec::writes_stopped`]).
/// `progress` is called after each batch with the running totals. Cancel by dropping the future.
pub async fn move_slots(
    spec: &MoveSpec,
    progress: &mut (dyn FnMut(&MoveStats) + Send),
) -> Result<MoveStats, MoveError> {
    let slots = SlotSet::new(&spec.slots)?;
    let (host, port) = split_addr(&spec.target)?;
    if spec.source == spec.target {
        return Err(MoveError::Invalid(format!(
            "source and target are both {}; give the target group's master",
            spec.source
        )));
    }
    let pw = spec.password.as_deref();
    let tls = spec.tls.as_ref();
    // A missing target or a wrong password is clearer found here than as MIGRATE errors.
    Link::open(Side::Target, &spec.target, pw, tls).await?.ping().await?;
    let mut src = Link::open(Side::Source, &spec.source, pw, tls).await?;
    let mut mover = Mover::new(spec, host, port);
    loop {
        if mover.stats.passes == MAX_PASSES {
            return Err(src.error(format!(
                "still held keys of the window after {MAX_PASSES} passes; something keeps \
                 writing them to the source: check that every keyhop instance has the window \
                 in flux and that no client writes to the source directly"
            )));
        }
        mover.stats.passes += 1;
        let mut found = 0u64;
        for db in src.dbs().await? {
            src.select(db).await?;
            // SCAN may return a key twice; the set keeps the count of moved keys exact.
            let mut seen: HashSet<Bytes> = HashSet::new();
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let (next, keys) = src.scan(&cursor).await?;
                mover.stats.scanned += keys.len() as u64;
                let window: Vec<Bytes> = keys
                    .into_iter()
                    .filter(|k| slots.has_key(k) && seen.insert(k.clone()))
                    .collect();
                found += window.len() as u64;
                mover.move_keys(&mut src, db, &window, progress).await?;
                if is_last(&next) {
                    break;
                }
                cursor = next;
            }
        }
        progress(&mover.stats);
        tracing::debug!(
            source = %spec.source, target = %spec.target, pass = mover.stats.passes, found,
            "mover pass done"
        );
        if found == 0 || spec.writes_stopped {
            return Ok(mover.stats);
        }
    }
}

/// Deletes keys on `server` whose slot is in `slots` (the sweep after a source failover, and
/// `keyhop slots sweep`), over TLS when `tls` is given.
pub async fn sweep(
    server: &str,
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    slots: &[(u16, u16)],
) -> Result<u64, MoveError> {
    let (slots, mut link, mut pages) = Pages::open(server, password, tls, slots).await?;
    let mut deleted = 0;
    while let Some(keys) = pages.next(&mut link).await? {
        let doomed: Vec<Bytes> = keys.into_iter().filter(|k| slots.has_key(k)).collect();
        // One page (at most about SCAN's COUNT keys) per UNLINK: the server frees the values
        // in the background, so this blocks it about as briefly as the SCAN did.
        deleted += link.unlink(&doomed).await?;
    }
    Ok(deleted)
}

/// Counts keys on `server` whose slot is in `slots` (for tests and `slots show`), over TLS
/// when `tls` is given.
pub async fn count_keys(
    server: &str,
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    slots: &[(u16, u16)],
) -> Result<u64, MoveError> {
    let (slots, mut link, mut pages) = Pages::open(server, password, tls, slots).await?;
    // SCAN may return a key twice within one db; keys of different dbs are different keys.
    let mut seen: HashSet<(u32, Bytes)> = HashSet::new();
    while let Some(keys) = pages.next(&mut link).await? {
        let db = pages.db();
        for k in keys.into_iter().filter(|k| slots.has_key(k)) {
            seen.insert((db, k));
        }
    }
    Ok(seen.len() as u64)
}

/// Every key of every db of a server, one SCAN page at a time.
struct Pages {
    dbs: Vec<u32>,
    next_db: usize,
    cursor: Option<Bytes>,
}

impl Pages {
    /// Connects to `server` and starts paging its keys; also parses `slots`.
    async fn open(
        server: &str,
        password: Option<&str>,
        tls: Option<&Arc<rustls::ClientConfig>>,
        slots: &[(u16, u16)],
    ) -> Result<(SlotSet, Link, Pages), MoveError> {
        let slots = SlotSet::new(slots)?;
        let mut link = Link::open(Side::Source, server, password, tls).await?;
        let pages = Pages { dbs: link.dbs().await?, next_db: 0, cursor: None };
        Ok((slots, link, pages))
    }

    /// The db of the page last returned.
    fn db(&self) -> u32 {
        self.dbs.get(self.next_db.saturating_sub(1)).copied().unwrap_or(0)
    }

    /// The next page of keys; `None` once every db has been scanned to its end.
    async fn next(&mut self, link: &mut Link) -> Result<Option<Vec<Bytes>>, MoveError> {
        let cursor = match self.cursor.take() {
            Some(c) => c,
            None => {
                let Some(&db) = self.dbs.get(self.next_db) else { return Ok(None) };
                self.next_db += 1;
                link.select(db).await?;
                Bytes::from_static(b"0")
            }
        };
        let (next, keys) = link.scan(&cursor).await?;
        if !is_last(&next) {
            self.cursor = Some(next);
        }
        Ok(Some(keys))
    }
}

/// The host and port of a `host:port` (`[v6]:port` too) target address.
fn split_addr(addr: &str) -> Result<(String, u16), MoveError> {
    let bad = || {
        MoveError::Invalid(format!(
            "target address \"{addr}\" is not host:port; give e.g. 10.0.0.3:6379"
        ))
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_addresses() {
        assert_eq!(split_addr("127.0.0.1:7001"), Ok(("127.0.0.1".into(), 7001)));
        assert_eq!(split_addr("[::1]:7001"), Ok(("::1".into(), 7001)));
        assert_eq!(
            split_addr("localhost").err().map(|e| e.to_string()),
            Some(
                "bad move: target address \"localhost\" is not host:port; give e.g. 10.0.0.3:6379"
                    .into()
            )
        );
        assert!(split_addr("h:0").is_err());
        assert!(split_addr(":80").is_err());
    }
}
