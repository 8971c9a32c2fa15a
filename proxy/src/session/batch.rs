//! A batch: the reply slots of the requests read together, the backend requests they became,
//! and how the slots turn into reply bytes (in request order) once every result is in.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use keyhop_router::{GroupId, Merge, RoutingTable};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::Src;
use crate::Shared;
use crate::backend::{BackendConn, BackendError, ReplyResult};
use crate::io::OutQueue;
use crate::merge;
use crate::resp::{self, Proto, RequestScanner, Scanned};
use crate::stats::Stats;

/// One reply position in the client's pipeline.
pub(crate) enum Slot {
    /// A reply keyhop made (local answer or error).
    Ready(Bytes),
    /// Reply `idx` of outgoing request `send`.
    Reply { send: u16, idx: u32 },
    /// Replies of several outgoing requests, merged.
    Merge(Box<MergeSlot>),
    /// Write this reply (if any), then close the connection.
    Close(Option<Bytes>),
    /// A slot whose reply CLIENT REPLY OFF/SKIP drops: its backend replies are still awaited
    /// with the batch, only their bytes are not written (a `Close` inside still closes).
    Silent(Box<Slot>),
}

/// How the parts of a split or fanned-out command become one reply.
pub(crate) enum MergeKind {
    Router(Merge, Vec<(u16, u32)>),
    Scan {
        group: usize,
        groups: usize,
    },
    RandomKey {
        seed: u64,
        proto: Proto,
    },
    /// INFO: keyhop's own sections around the groups' keyspace sections summed.
    Info {
        head: String,
        tail: String,
        proto: Proto,
    },
    /// An administrative fan-out: OK only when every server succeeded (see `admin.rs`).
    Admin(crate::admin::AdminReplies),
}

/// Which group served a command, for SLOWLOG.
pub(super) const NO_GROUP: u16 = u16::MAX;
pub(super) const MANY_GROUPS: u16 = u16::MAX - 1;

/// What the writer needs to know of each command for metrics and SLOWLOG.
#[derive(Clone, Copy)]
pub(super) struct CmdMeta {
    /// Index for per-command metrics.
    pub(super) id: u16,
    /// The group that served it, or [`NO_GROUP`] / [`MANY_GROUPS`].
    pub(super) group: u16,
    /// The frame's range in the batch data (`start == u32::MAX`: not in it, e.g. inline).
    pub(super) start: u32,
    pub(super) len: u32,
}

pub(crate) struct MergeSlot {
    pub kind: MergeKind,
    pub parts: Vec<(u16, u32)>,
}

/// The requests of one batch bound for one backend connection.
pub(super) struct Outgoing {
    pub(super) conn: BackendConn,
    pub(super) group: GroupId,
    pub(super) addr: Arc<str>,
    pub(super) chunks: SmallVec<[Src; 2]>,
    pub(super) count: usize,
}

/// What the reader collects while it routes one batch.
#[derive(Default)]
pub(crate) struct Builder {
    // Inline capacities cover a client that sends one command at a time without allocating.
    pub(super) slots: SmallVec<[Slot; 4]>,
    pub(super) sends: SmallVec<[Outgoing; 2]>,
}

impl Builder {
    /// Queues `src` for `conn`; returns the slot that will hold its reply.
    pub(super) fn send_to(
        &mut self,
        conn: &BackendConn,
        group: GroupId,
        addr: &Arc<str>,
        src: Src,
    ) -> (u16, u32) {
        let i = match self.sends.iter().position(|o| o.conn.same(conn)) {
            Some(i) => i,
            None => {
                self.sends.push(Outgoing {
                    conn: conn.clone(),
                    group,
                    addr: addr.clone(),
                    chunks: SmallVec::new(),
                    count: 0,
                });
                self.sends.len() - 1
            }
        };
        let o = &mut self.sends[i];
        match (&src, o.chunks.last_mut()) {
            // Consecutive frames for the same backend travel as one slice of the read buffer.
            (Src::Range(r), Some(Src::Range(last))) if last.end == r.start => last.end = r.end,
            _ => o.chunks.push(src),
        }
        o.count += 1;
        (i as u16, (o.count - 1) as u32)
    }

    pub(crate) fn ready(&mut self, reply: Bytes) {
        self.slots.push(Slot::Ready(reply));
    }

    pub(crate) fn slots_push(&mut self, slot: Slot) {
        self.slots.push(slot);
    }
}

/// A batch's replies as the writer receives them (boxed in the channel: an idle client's
/// channel then holds pointers, not ~500-byte batches, keeping idle connections small).
pub(crate) struct Batch {
    pub(super) slots: SmallVec<[Slot; 4]>,
    pub(super) pending: SmallVec<[Pending; 2]>,
    pub(super) table: Option<Arc<RoutingTable>>,
    /// When the batch was read (client-observed latency starts here).
    pub(super) started: Instant,
    pub(super) cmds: SmallVec<[CmdMeta; 4]>,
    pub(super) data: Bytes,
    pub(super) client_name: Option<Bytes>,
}

pub(super) struct Pending {
    pub(super) rx: oneshot::Receiver<ReplyResult>,
    pub(super) result: Option<ReplyResult>,
    pub(super) group: GroupId,
    pub(super) addr: Arc<str>,
}

pub(super) fn backend_error(
    table: Option<&Arc<RoutingTable>>,
    p: &Pending,
    e: &BackendError,
) -> Bytes {
    let group =
        table.and_then(|t| t.groups.get(p.group as usize)).map(|g| g.name.as_str()).unwrap_or("?");
    resp::error(&format!("ERR keyhop: backend {} of group {group} {e}", p.addr))
}

pub(super) fn count_error(stats: &Stats, e: &BackendError) {
    let c = if matches!(e, BackendError::Timeout(_)) {
        &stats.errors_timeout
    } else {
        &stats.errors_backend
    };
    Stats::add(c, 1);
}

/// Renders a batch whose results are all in; returns true when the connection must close.
pub(super) fn render(batch: &mut Batch, out: &mut OutQueue, stats: &Stats) -> bool {
    // A run of consecutive replies of one request becomes one slice.
    let mut run: Option<(u16, u32, u32)> = None;
    let flush = |run: &mut Option<(u16, u32, u32)>, out: &mut OutQueue| {
        let Some((send, first, last)) = run.take() else { return };
        let p = &batch.pending[send as usize];
        match &p.result {
            Some(Ok(r)) => out.push(r.data.slice(r.range(first as usize, last as usize))),
            Some(Err(e)) => {
                let err = backend_error(batch.table.as_ref(), p, e);
                for _ in first..=last {
                    count_error(stats, e);
                    out.push(err.clone());
                }
            }
            None => out.push(resp::error("ERR keyhop: internal error (reply missing)")),
        }
    };
    let mut close = false;
    for slot in batch.slots.drain(..) {
        match slot {
            Slot::Reply { send, idx } => {
                if let Some((s, _, last)) = &mut run
                    && *s == send
                    && *last + 1 == idx
                {
                    *last = idx;
                    continue;
                }
                flush(&mut run, out);
                run = Some((send, idx, idx));
            }
            Slot::Ready(bytes) => {
                flush(&mut run, out);
                out.push(bytes);
            }
            Slot::Merge(m) => {
                flush(&mut run, out);
                let parts: Vec<Bytes> = m
                    .parts
                    .iter()
                    .map(|&(send, idx)| {
                        let p = &batch.pending[send as usize];
                        match &p.result {
                            Some(Ok(r)) => r.get(idx as usize),
                            Some(Err(e)) => {
                                count_error(stats, e);
                                backend_error(batch.table.as_ref(), p, e)
                            }
                            None => resp::error("ERR keyhop: internal error (reply missing)"),
                        }
                    })
                    .collect();
                out.push(match m.kind {
                    MergeKind::Router(kind, order) => merge::merge(kind, &parts, &order),
                    MergeKind::Scan { group, groups } => match parts.first() {
                        Some(p) => merge::scan_reply(p, group, groups),
                        None => resp::error("ERR keyhop: internal error (SCAN)"),
                    },
                    MergeKind::RandomKey { seed, proto } => {
                        crate::local::pick_random_key(&parts, seed, proto)
                    }
                    MergeKind::Info { head, tail, proto } => {
                        crate::render::info_reply(&head, &parts, &tail, proto)
                    }
                    MergeKind::Admin(a) => a.merge(&parts),
                });
            }
            Slot::Close(reply) => {
                flush(&mut run, out);
                if let Some(r) = reply {
                    out.push(r);
                }
                close = true;
                break;
            }
            Slot::Silent(inner) => {
                flush(&mut run, out);
                if matches!(*inner, Slot::Close(_)) {
                    close = true;
                    break;
                }
            }
        }
    }
    flush(&mut run, out);
    close
}

impl Pending {
    /// Takes the result if it has arrived (true then, or when it was taken before); with `cx`,
    /// also asks to be woken when it arrives.
    pub(super) fn take(&mut self, cx: Option<&mut Context<'_>>) -> bool {
        if self.result.is_some() {
            return true;
        }
        let r = match cx {
            Some(cx) => match Pin::new(&mut self.rx).poll(cx) {
                Poll::Ready(r) => r.ok(),
                Poll::Pending => return false,
            },
            None => match self.rx.try_recv() {
                Ok(r) => Some(r),
                Err(oneshot::error::TryRecvError::Empty) => return false,
                Err(oneshot::error::TryRecvError::Closed) => None,
            },
        };
        self.result = Some(r.unwrap_or_else(|| Err(BackendError::Lost("request dropped".into()))));
        true
    }
}

/// Takes every result that has already arrived; true when none is missing.
pub(super) fn poll_ready(batch: &mut Batch) -> bool {
    let mut all = true;
    for p in batch.pending.iter_mut() {
        all &= p.take(None);
    }
    all
}

/// Resolves once every backend result of the queue's first batch has arrived.
pub(super) fn head_results(queue: &mut VecDeque<Box<Batch>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(batch) = queue.front_mut() else { return Poll::Pending };
        if batch.pending.iter_mut().all(|p| p.take(Some(cx))) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Resolves once every backend result of `batch` has arrived.
pub(super) fn all_results(batch: &mut Batch) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        if batch.pending.iter_mut().all(|p| p.take(Some(cx))) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Counts each command of a written batch and logs the slow ones.
pub(super) fn record(shared: &Shared, batch: &Batch, peer: SocketAddr) {
    let settings = shared.settings.load();
    let latency = batch.started.elapsed();
    if settings.metrics {
        for c in &batch.cmds {
            shared.commands.record(c.id as usize, latency);
        }
    }
    if latency < settings.slowlog_threshold {
        return;
    }
    let Ok(mut log) = shared.slowlog.lock() else { return };
    let room = log.room(settings.slowlog_max_len);
    for c in batch.cmds.iter().take(room) {
        let args = if c.start == u32::MAX {
            Vec::new()
        } else {
            let frame = &batch.data[c.start as usize..(c.start + c.len) as usize];
            let mut sc = RequestScanner::default();
            match sc.scan(frame) {
                Ok(Some(Scanned::Command { .. })) => {
                    crate::slowlog::shorten_args(sc.args.iter().map(|r| &frame[r.clone()]))
                }
                _ => Vec::new(),
            }
        };
        let group = match c.group {
            NO_GROUP => String::new(),
            MANY_GROUPS => "*".to_string(),
            g => batch
                .table
                .as_ref()
                .and_then(|t| t.groups.get(g as usize))
                .map(|g| g.name.clone())
                .unwrap_or_default(),
        };
        let entry = crate::slowlog::Entry {
            id: 0,
            time: 0,
            duration: latency,
            args,
            client: peer,
            name: batch.client_name.clone().unwrap_or_default(),
            group,
        };
        log.push(entry, settings.slowlog_max_len);
    }
}
