//! Routing one batch of a client's requests: each command is dispatched (see `dispatch.rs`),
//! each backend gets its share in one request, and the batch keeps the reply slots in order.
//! Also the same path for pinned modes, which run the ordinary commands a client sends in
//! between one at a time ([`Session::execute`]).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use super::batch::{Batch, CmdMeta, MANY_GROUPS, NO_GROUP, Pending, all_results, record, render};
use super::{Builder, Enter, FrameArgs, Session, Slot, Src, Unsent};
use crate::backend::{Payload, Request};
use crate::io::OutQueue;
use crate::resp::{RequestScanner, Scanned};
use crate::stats::Stats;

impl Session {
    /// Routes up to `room` complete requests in `buf` (setting `more` when some are left),
    /// sends each backend its share, and returns the batch of reply slots (and whether the
    /// connection must close after it).
    pub(super) async fn process(
        &mut self,
        buf: &mut BytesMut,
        scanner: &mut RequestScanner,
        room: usize,
    ) -> (Option<Box<Batch>>, bool) {
        let routed = self.route_batch(buf, scanner, room);
        if !self.unsent.is_empty() {
            // Boxed: only a full or retired connection gets here, and inline its state would
            // make every idle session's future larger.
            Box::pin(self.send_unsent()).await;
        }
        routed
    }

    /// Sends what [`Session::route_batch`] could not queue at once, in order: waiting for room
    /// on a full connection, and re-routing a request for a retired one.
    async fn send_unsent(&mut self) {
        for (conn, group, req) in std::mem::take(&mut self.unsent) {
            let req = match req {
                Unsent::Full(req) => match conn.send(req).await {
                    Ok(()) => continue,
                    Err(req) => req,
                },
                Unsent::Retired(req) => req,
            };
            // The connection was retired (a failover) between loading the table and sending:
            // the request was never written, so it may go to the group's server in the newest
            // table. If that fails too, its reply becomes an error.
            let newest = self.table_cache.load().clone();
            self.resolve_pools(&newest);
            if let Some(g) = self.pools.get(group as usize) {
                let _ = g.master.conn.send(req).await;
            }
        }
    }

    /// [`Session::process`]'s routing, without waiting: a request whose connection's queue is
    /// full or retired is left in `unsent`.
    fn route_batch(
        &mut self,
        buf: &mut BytesMut,
        scanner: &mut RequestScanner,
        room: usize,
    ) -> (Option<Box<Batch>>, bool) {
        let started = Instant::now();
        // The fleet gate, looked up once per batch: without etcd this is the only cost.
        let gate = self.shared.fleet.get();
        self.tracked = gate.is_some();
        if self.tracked && self.client.entry.routed_epoch() == crate::fleet::NONE {
            // Until the batch is queued, a drain barrier must not pass this client by.
            self.client.entry.set_routed_epoch(crate::fleet::ROUTING);
        }
        let table = match &self.view {
            None => {
                self.fence = gate.map_or(0, |g| g.level(self.shared.started, started));
                self.table_cache.load().clone()
            }
            Some(view) => {
                self.fence = 0;
                view.clone()
            }
        };
        self.flux_check = table.flux.is_some() || self.fence >= 2;
        if table.epoch != self.epoch {
            self.resolve_pools(&table);
        }
        let mut b = Builder::default();
        let mut cmds: SmallVec<[CmdMeta; 4]> = SmallVec::new();
        let mut off = 0;
        let mut close = false;
        let mut commands = 0u64;
        loop {
            if cmds.len() >= room {
                self.more = true;
                break;
            }
            match scanner.scan(&buf[off..]) {
                Ok(None) => break,
                Ok(Some(Scanned::Empty { len })) => off += len,
                Ok(Some(Scanned::Command { len })) => {
                    commands += 1;
                    let args = FrameArgs { frame: &buf[off..off + len], ranges: &scanner.args };
                    let id;
                    (close, id) = self.dispatch(&table, &args, Src::Range(off..off + len), &mut b);
                    if self.enter.is_some() {
                        // A pinned mode takes this command (still in `buf`) and the rest.
                        commands -= 1;
                        break;
                    }
                    cmds.push(CmdMeta {
                        id,
                        group: last_group(&b),
                        start: off as u32,
                        len: len as u32,
                    });
                    off += len;
                    if self.mode_changed {
                        break;
                    }
                }
                Ok(Some(Scanned::Inline { len, frame })) => {
                    commands += 1;
                    let mut inline = RequestScanner::default();
                    if let Ok(Some(Scanned::Command { .. })) = inline.scan(&frame) {
                        let args = FrameArgs { frame: &frame, ranges: &inline.args };
                        let id;
                        (close, id) =
                            self.dispatch(&table, &args, Src::Owned(frame.clone()), &mut b);
                        if self.enter.is_some() {
                            commands -= 1;
                            break;
                        }
                        cmds.push(CmdMeta { id, group: last_group(&b), start: u32::MAX, len: 0 });
                    }
                    off += len;
                    if self.mode_changed {
                        break;
                    }
                }
                Err(e) => {
                    Stats::add(&self.shared.stats.errors_protocol, 1);
                    tracing::debug!(client = %self.peer(), error = ?e, "protocol error; closing client");
                    b.slots.push(Slot::Close(Some(e.reply())));
                    cmds.push(CmdMeta { id: u16::MAX, group: NO_GROUP, start: u32::MAX, len: 0 });
                    close = true;
                }
            }
            if close {
                break;
            }
        }
        Stats::add(&self.shared.stats.commands, commands);
        // CLIENT LIST's cmd= and idle=: written once per batch, never per command.
        if let Some(c) = cmds.last() {
            self.client.touch(started, c.id, &buf[..], c.start, c.len);
        }
        if b.slots.is_empty() {
            // Only empty requests (`*0`, blank inline lines): drop them, answer nothing.
            bytes::Buf::advance(buf, off);
            return (None, close);
        }
        let data = buf.split_to(off).freeze();
        if close {
            buf.clear();
        }
        let mut pending = SmallVec::new();
        for out in b.sends.drain(..) {
            let payload = if out.chunks.len() == 1 {
                Payload::One(materialize(&data, &out.chunks[0]))
            } else {
                Payload::Many(out.chunks.iter().map(|c| materialize(&data, c)).collect())
            };
            let (rtx, rrx) = oneshot::channel();
            let req = Request { payload, count: out.count, reply: rtx };
            match out.conn.try_send(req) {
                Ok(()) => {}
                Err(TrySendError::Full(req)) => {
                    self.unsent.push((out.conn, out.group, Unsent::Full(req)))
                }
                Err(TrySendError::Closed(req)) => {
                    self.unsent.push((out.conn, out.group, Unsent::Retired(req)))
                }
            }
            pending.push(Pending { rx: rrx, result: None, group: out.group, addr: out.addr });
        }
        let table = if pending.is_empty() { None } else { Some(table) };
        let client_name = self.name.clone();
        (
            Some(Box::new(Batch {
                slots: b.slots,
                pending,
                table,
                started,
                cmds,
                data,
                client_name,
            })),
            close,
        )
    }

    /// Runs `frames` (whole request frames) through the shared fast path, waits for every
    /// reply and appends them to `out`; true when the connection must close after them. For
    /// pinned modes, which serve the ordinary commands a client sends in between one at a time.
    /// A command that would enter another pinned mode is answered with an error instead.
    pub(crate) async fn execute(&mut self, frames: &[u8], out: &mut OutQueue) -> bool {
        let mut buf = BytesMut::from(frames);
        let mut scanner = RequestScanner::default();
        let mut close = false;
        // Every reply is awaited here: what the session had in flight before (for the drain
        // barrier) is what it has after.
        let in_flight = self.client.entry.routed_epoch();
        while !buf.is_empty() && !close {
            let (batch, closing) = self.process(&mut buf, &mut scanner, usize::MAX).await;
            self.mode_changed = false;
            close = closing;
            if let Some(mut batch) = batch {
                all_results(&mut batch).await;
                let before = out.len();
                close |= render(&mut batch, out, &self.shared.stats);
                Stats::add(&self.shared.stats.bytes_out, (out.len() - before) as u64);
                record(&self.shared, &batch, self.peer());
            }
            if self.enter == Some(Enter::Flux) {
                self.enter = None;
                close |= Box::pin(self.flux_step(&mut buf, out)).await;
                continue;
            }
            if self.enter.take().is_some() {
                // A pinned command inside another pinned mode: refused, the rest goes on.
                let mut one = RequestScanner::default();
                let name = match one.scan(&buf) {
                    Ok(Some(Scanned::Command { len })) => {
                        let n = one.args.first().map(|r| buf[r.clone()].to_ascii_uppercase());
                        bytes::Buf::advance(&mut buf, len);
                        n.unwrap_or_default()
                    }
                    _ => {
                        buf.clear();
                        Vec::new()
                    }
                };
                out.push(crate::resp::error(&format!(
                    "ERR keyhop: {} is not allowed in this context",
                    String::from_utf8_lossy(&name)
                )));
            }
        }
        if self.tracked {
            self.client.entry.set_routed_epoch(in_flight);
        }
        close
    }
}

/// The group the last queued reply comes from, for SLOWLOG.
fn last_group(b: &Builder) -> u16 {
    match b.slots.last() {
        Some(Slot::Reply { send, .. }) => {
            b.sends.get(*send as usize).map(|o| o.group).unwrap_or(NO_GROUP)
        }
        Some(Slot::Merge(_)) => MANY_GROUPS,
        _ => NO_GROUP,
    }
}

fn materialize(data: &Bytes, src: &Src) -> Bytes {
    match src {
        Src::Range(r) => data.slice(r.clone()),
        Src::Owned(b) => b.clone(),
    }
}
