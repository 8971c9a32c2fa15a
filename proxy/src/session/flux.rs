//! Commands on slots in flux (docs/fleet-plan.md §3.2): while a slot moves between groups, a
//! command on one of its keys first moves the key from the source with `MIGRATE ... KEYS` and
//! then runs on the target, so a key is read and written in exactly one place.
//!
//! The fast path only notices such a command (one branch per command while a migration exists)
//! and stops its batch before it, as for a pinned mode; once every earlier request of the
//! client is answered (so the MIGRATE is ordered after the client's own writes to the source),
//! [`Session::flux_step`] runs it here, boxed so that idle sessions do not carry its state.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use keyhop_router::command::{self, Policy, RouteError};
use keyhop_router::{Args, FluxState, GroupId, RoutingTable, key_slot};
use tokio::sync::oneshot;

use super::{FrameArgs, Session};
use crate::backend::{BackendConn, Payload, Request};
use crate::io::OutQueue;
use crate::resp::{self, RequestScanner, Scanned};
use crate::stats::Stats;

/// How long a held command sleeps between looks at the table and the lease gate (a table
/// announced through `topology` wakes it sooner).
const HOLD_POLL: Duration = Duration::from_millis(20);

/// What to do with a command given the slots of its keys.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No key in flux: the normal path.
    Plain,
    /// Wait for another table (a slot is locked) or for the lease (`lease`), then route again.
    Hold { slot: u16, to: GroupId, lease: bool },
    /// Keys in flux mixed with others on a command that runs on one server.
    Span,
    /// Move these keys (argument indices) from `from` to `to`, per pair, then run the command.
    Move(Vec<(GroupId, GroupId, Vec<usize>)>),
}

/// Classifies a command's `keys` (argument indices) against `table` at lease fence level
/// `fence`. `split`: the command is divided among groups (MSET, MGET, DEL...), so keys in
/// flux and other keys may mix.
pub(crate) fn classify<A: Args + ?Sized>(
    table: &RoutingTable,
    fence: u8,
    split: bool,
    args: &A,
    keys: &[usize],
) -> Plan {
    let Some(&first) = keys.first() else { return Plan::Plain };
    if fence >= 2 {
        return Plan::Hold { slot: key_slot(args.arg(first)), to: 0, lease: true };
    }
    let mut plain = false;
    let mut moves: Vec<(GroupId, GroupId, Vec<usize>)> = Vec::new();
    for &k in keys {
        let slot = key_slot(args.arg(k));
        match table.flux_of(slot) {
            None => plain = true,
            // Past the lease deadline the instance no longer knows the slot's state: held.
            Some(r) if r.state == FluxState::Locked || fence >= 1 => {
                return Plan::Hold { slot, to: r.to, lease: false };
            }
            Some(r) => match moves.iter_mut().find(|m| m.0 == r.from && m.1 == r.to) {
                Some(m) => m.2.push(k),
                None => moves.push((r.from, r.to, vec![k])),
            },
        }
    }
    if moves.is_empty() {
        Plan::Plain
    } else if !split && (plain || moves.len() > 1) {
        Plan::Span
    } else {
        Plan::Move(moves)
    }
}

/// True when `keys` touch a slot in flux, or (past the lease grace) any key at all.
#[inline]
pub(crate) fn touches<A: Args + ?Sized>(
    table: &RoutingTable,
    fence: u8,
    args: &A,
    keys: &[usize],
) -> bool {
    if fence >= 2 {
        return !keys.is_empty();
    }
    table.flux.as_deref().is_some_and(|f| keys.iter().any(|&k| f.contains(key_slot(args.arg(k)))))
}

/// The refusal for a key in flux where no flux step can run (inside a transaction, a blocking
/// command): `None` when no key is in flux. `what` names what to retry.
pub(crate) fn refusal<A: Args + ?Sized>(
    table: &RoutingTable,
    fence: u8,
    args: &A,
    keys: &[usize],
    what: &str,
) -> Option<Bytes> {
    if fence >= 2 && !keys.is_empty() {
        return Some(Bytes::from_static(LEASE_LOST));
    }
    let slot = keys.iter().map(|&k| key_slot(args.arg(k))).find(|&s| table.flux_of(s).is_some())?;
    Some(resp::error(&format!("TRYAGAIN keyhop: slot {slot} is migrating; retry {what}")))
}

/// The answer to a keyed command once the instance is fenced by a lost etcd lease.
pub(crate) const LEASE_LOST: &[u8] =
    b"-TRYAGAIN keyhop: lost its etcd lease; re-reading the slot map\r\n";
/// The answer to a command mixing keys in flux with other keys.
pub(crate) const SPAN: &[u8] = b"-TRYAGAIN keyhop: the command's keys span a migrating slot and another slot; retry, or use a {hash tag}\r\n";

impl Session {
    /// Runs the command at the head of `buf` (which the fast path found on a slot in flux) and
    /// appends its reply to `out`; true when the connection must close after it. Every earlier
    /// request of the client has been answered.
    pub(super) async fn flux_step(&mut self, buf: &mut BytesMut, out: &mut OutQueue) -> bool {
        let Some((frame, ranges)) = take_command(buf) else { return false };
        let entry = self.client.entry.clone();
        let before = entry.routed_epoch();
        let deadline = Instant::now() + self.shared.settings.load().hold;
        let mut topology = self.shared.topology.subscribe();
        let mut keys = Vec::new();
        let close = loop {
            let table = self.table_cache.load().clone();
            if table.epoch != self.epoch {
                self.resolve_pools(&table);
            }
            // The step counts as in flight for the drain barrier while it runs.
            entry.set_routed_epoch(table.epoch.min(before));
            let fence = self.shared.fence_at(Instant::now());
            let args = FrameArgs { frame: &frame, ranges: &ranges };
            let plan = plan(&table, fence, &args, &mut keys);
            let view = match plan {
                Plan::Plain => table.clone(),
                Plan::Span => {
                    self.answer(out, Bytes::from_static(SPAN));
                    break false;
                }
                Plan::Hold { slot, to, lease } => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.answer(out, if lease {
                            Bytes::from_static(LEASE_LOST)
                        } else {
                            let group = table.groups.get(to as usize).map_or("?", |g| &g.name);
                            resp::error(&format!(
                                "TRYAGAIN keyhop: slot {slot} is being handed over to {group}, retry"
                            ))
                        });
                        break false;
                    }
                    let wait = (deadline - now).min(HOLD_POLL);
                    let _ = tokio::time::timeout(wait, topology.changed()).await;
                    continue;
                }
                Plan::Move(moves) => {
                    // A source being failed over: held as for a locked slot, since the MIGRATE
                    // must run on the master that has the keys.
                    let fenced = moves.iter().find_map(|m| {
                        let g = table.groups.get(m.0 as usize)?;
                        self.shared.backends.is_fenced(&g.master).then_some((m.1, g))
                    });
                    if let Some((to, source)) = fenced {
                        let now = Instant::now();
                        if now >= deadline {
                            let group = table.groups.get(to as usize).map_or("?", |g| &g.name);
                            self.answer(out, resp::error(&format!(
                                "TRYAGAIN keyhop: could not move the key to {group} (the source {} of group {} is being failed over)",
                                source.master, source.name
                            )));
                            break false;
                        }
                        let wait = (deadline - now).min(HOLD_POLL);
                        let _ = tokio::time::timeout(wait, topology.changed()).await;
                        continue;
                    }
                    let mut failed = None;
                    for (from, to, ks) in &moves {
                        let names: Vec<&[u8]> = ks.iter().map(|&k| args.arg(k)).collect();
                        if let Err(reply) = self.migrate(&table, *from, *to, &names).await {
                            failed = Some(reply);
                            break;
                        }
                    }
                    if let Some(reply) = failed {
                        self.answer(out, reply);
                        break false;
                    }
                    Arc::new(table.after_move())
                }
            };
            // Routed with a table in which none of its keys is in flux: the fast path runs it
            // (masters only, see `forward`).
            self.view = Some(view);
            let close = self.execute(&frame, out).await;
            self.view = None;
            break close;
        };
        entry.set_routed_epoch(before);
        close
    }

    /// Appends keyhop's own reply for the step's command (the fast path counts the bytes of
    /// the replies it renders itself).
    fn answer(&self, out: &mut OutQueue, reply: Bytes) {
        Stats::add(&self.shared.stats.bytes_out, reply.len() as u64);
        if reply.starts_with(b"-TRYAGAIN") {
            Stats::add(&self.shared.stats.migration_tryagain, 1);
        }
        out.push(reply);
    }

    /// Moves `keys` from `from`'s master to `to`'s with `MIGRATE ... KEYS`, in the session's
    /// database. `Err` is the client's reply: the command must not run.
    async fn migrate(
        &mut self,
        table: &RoutingTable,
        from: GroupId,
        to: GroupId,
        keys: &[&[u8]],
    ) -> Result<(), Bytes> {
        let target = table.groups.get(to as usize);
        let name = target.map_or("?", |g| g.name.as_str());
        let fail = |why: &str| {
            resp::error(&format!("TRYAGAIN keyhop: could not move the key to {name} ({why})"))
        };
        let Some((host, port)) = target.and_then(|g| g.master.rsplit_once(':')) else {
            return Err(fail("its master's address is not host:port"));
        };
        // `[::1]:6379`: MIGRATE takes the bare IPv6 address.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Some(conn) = self.pools.get(from as usize).map(|g| g.master.conn.clone()) else {
            return Err(fail("internal routing error (group out of range)"));
        };
        let settings = self.shared.settings.load();
        let timeout = settings.migrate_timeout.as_millis().to_string();
        let db = self.db.to_string();
        let password = settings.backend.password.clone();
        let migrate = |keys: &[&[u8]]| {
            let mut args: Vec<&[u8]> =
                vec![b"MIGRATE", host.as_bytes(), port.as_bytes(), b"", db.as_bytes()];
            args.push(timeout.as_bytes());
            if let Some(pw) = &password {
                args.extend([b"AUTH".as_slice(), pw.as_bytes()]);
            }
            args.push(b"KEYS");
            args.extend(keys);
            resp::command(args)
        };
        let reply = call(&conn, migrate(keys)).await.map_err(|e| fail(&e))?;
        if !reply.starts_with(b"-") {
            let stats = &self.shared.stats;
            let moved = if reply.starts_with(b"+NOKEY") {
                &stats.migration_nokey
            } else {
                &stats.migration_moved
            };
            Stats::add(moved, 1);
            return Ok(());
        }
        if !contains(&reply, b"BUSYKEY") {
            return Err(fail(&error_text(&reply)));
        }
        // The target already holds some of the keys: its copy wins (it got there by an earlier
        // move, and every later write went there); the source copy is a leftover.
        for &key in keys {
            let reply = call(&conn, migrate(&[key])).await.map_err(|e| fail(&e))?;
            if !reply.starts_with(b"-") {
                continue;
            }
            if !contains(&reply, b"BUSYKEY") {
                return Err(fail(&error_text(&reply)));
            }
            Stats::add(&self.shared.stats.migration_busykey, 1);
            tracing::info!(key = %String::from_utf8_lossy(key), group = name,
                "key present on both groups during a migration: kept the target's copy, unlinked the source's");
            let unlink = call(&conn, resp::command([b"UNLINK".as_slice(), key]))
                .await
                .map_err(|e| fail(&e))?;
            if unlink.starts_with(b"-") {
                return Err(fail(&error_text(&unlink)));
            }
        }
        Ok(())
    }
}

/// The plan for the command `args` (its keys are found into `keys`).
fn plan(table: &RoutingTable, fence: u8, args: &FrameArgs, keys: &mut Vec<usize>) -> Plan {
    let Some(spec) = command::lookup(args.arg(0)).and_then(|top| top.resolve(args).ok()) else {
        return Plan::Plain;
    };
    match spec.policy {
        Policy::Split(_) => match spec.keys(args, keys) {
            Ok(()) => classify(table, fence, true, args, keys),
            Err(_) => Plan::Plain,
        },
        _ => match command::route(table, spec, args, keys) {
            Ok(_) | Err(RouteError::CrossGroup) => classify(table, fence, false, args, keys),
            Err(RouteError::Syntax(_)) => Plan::Plain,
        },
    }
}

/// Sends one request frame on `conn` and waits for its one reply.
async fn call(conn: &BackendConn, frame: Bytes) -> Result<Bytes, String> {
    let (tx, rx) = oneshot::channel();
    let req = Request { payload: Payload::One(frame), count: 1, reply: tx };
    if conn.send(req).await.is_err() {
        return Err("the connection to the source was closed".into());
    }
    match rx.await {
        Ok(Ok(r)) => Ok(r.get(0)),
        Ok(Err(e)) => Err(format!("source {e}")),
        Err(_) => Err("the request to the source was dropped".into()),
    }
}

/// A simple error reply's text, without `-` and CRLF.
fn error_text(reply: &[u8]) -> String {
    let s = String::from_utf8_lossy(reply);
    s.trim_start_matches('-').trim_end().to_string()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Takes the first complete command out of `buf`: its frame and argument ranges.
fn take_command(buf: &mut BytesMut) -> Option<(Bytes, Vec<Range<usize>>)> {
    let mut scanner = RequestScanner::default();
    loop {
        match scanner.scan(buf) {
            Ok(Some(Scanned::Empty { len })) => bytes::Buf::advance(buf, len),
            Ok(Some(Scanned::Command { len })) => {
                let ranges = std::mem::take(&mut scanner.args);
                return Some((buf.split_to(len).freeze(), ranges));
            }
            Ok(Some(Scanned::Inline { len, frame })) => {
                bytes::Buf::advance(buf, len);
                let mut inline = RequestScanner::default();
                if let Ok(Some(Scanned::Command { .. })) = inline.scan(&frame) {
                    return Some((frame, inline.args));
                }
            }
            Ok(None) | Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhop_router::{FluxRange, Group};

    struct V(Vec<&'static [u8]>);
    impl Args for V {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn arg(&self, i: usize) -> &[u8] {
            self.0[i]
        }
    }

    fn table(state: FluxState) -> RoutingTable {
        let g = |n: &str| Group { name: n.into(), master: "127.0.0.1:1".into(), replicas: vec![] };
        // "foo" is slot 12182, "bar" 5061, "{foo}x" 12182, "a" 15495.
        let flux = vec![
            FluxRange { first: 12000, last: 12200, from: 1, to: 2, state },
            FluxRange { first: 5000, last: 5100, from: 0, to: 2, state: FluxState::Migrating },
        ];
        RoutingTable::from_parts(
            1,
            vec![g("a"), g("b"), g("c")],
            &[(0, 8191, 0), (8192, 16383, 1)],
            flux,
            7,
        )
        .expect("valid")
    }

    #[test]
    fn plans() {
        let t = table(FluxState::Migrating);
        let args = V(vec![b"MSET", b"foo", b"1", b"{foo}x", b"2", b"bar", b"3", b"a", b"4"]);
        assert_eq!(classify(&t, 0, false, &args, &[1, 3]), Plan::Move(vec![(1, 2, vec![1, 3])]));
        assert_eq!(classify(&t, 0, false, &args, &[7]), Plan::Plain);
        assert_eq!(classify(&t, 0, false, &args, &[1, 7]), Plan::Span);
        assert_eq!(classify(&t, 0, false, &args, &[1, 5]), Plan::Span, "two sources");
        assert_eq!(
            classify(&t, 0, true, &args, &[1, 3, 5, 7]),
            Plan::Move(vec![(1, 2, vec![1, 3]), (0, 2, vec![5])])
        );
        assert_eq!(
            classify(&t, 1, true, &args, &[7, 1]),
            Plan::Hold { slot: 12182, to: 2, lease: false }
        );
        assert_eq!(classify(&t, 1, true, &args, &[7]), Plan::Plain, "level 1 holds only flux");
        assert_eq!(
            classify(&t, 2, true, &args, &[7]),
            Plan::Hold { slot: 15495, to: 0, lease: true }
        );
        assert_eq!(classify(&t, 2, true, &args, &[]), Plan::Plain, "keyless still works");
        let locked = table(FluxState::Locked);
        assert_eq!(
            classify(&locked, 0, false, &args, &[1]),
            Plan::Hold { slot: 12182, to: 2, lease: false }
        );
        assert!(touches(&t, 0, &args, &[7, 1]));
        assert!(!touches(&t, 0, &args, &[7]));
        assert!(touches(&t, 2, &args, &[7]));
        assert_eq!(
            refusal(&t, 0, &args, &[7, 1], "the transaction"),
            Some(resp::error("TRYAGAIN keyhop: slot 12182 is migrating; retry the transaction"))
        );
        assert_eq!(refusal(&t, 0, &args, &[7], "the transaction"), None);
    }
}
