//! A client session: read a batch of requests, route each, queue each group's share on its backend
//! connection, and keep the batch's ordered list of reply slots; as backend replies arrive the
//! slots are filled and written back in request order with vectored writes.
//!
//! bytes in -> frame (resp) -> command + route (router) -> backend (backend) -> reply -> bytes out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use keyhop_router::{Args, RoutingTable};
use smallvec::SmallVec;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;

use crate::Shared;
use crate::backend::{BackendConn, Mode, Payload, Pool, Request};
use crate::io::OutQueue;
use crate::resp::{Proto, RequestScanner, Scanned};
use crate::stats::Stats;
use crate::stream::{ReadHalf, Stream, WriteHalf};

mod batch;
mod dispatch;
mod flow;
pub(crate) mod flux;

use batch::{
    Batch, CmdMeta, MANY_GROUPS, NO_GROUP, Pending, all_results, head_results, poll_ready, record,
    render,
};
pub(crate) use batch::{Builder, MergeKind, MergeSlot, Slot};

/// Batches a session may have waiting for replies before it forwards no more.
const WRITER_QUEUE: usize = 16;
/// A read buffer's first size; it doubles while reads fill it.
const READ_CHUNK: usize = 1024;
/// Read buffers larger than this are released when they empty, so one big request doesn't pin
/// memory for the life of an idle connection.
const KEEP_BUFFER: usize = 64 * 1024;

/// The arguments of one request frame: byte ranges into the frame.
pub(crate) struct FrameArgs<'a> {
    pub frame: &'a [u8],
    pub ranges: &'a [Range<usize>],
}

impl Args for FrameArgs<'_> {
    #[inline]
    fn count(&self) -> usize {
        self.ranges.len()
    }
    #[inline]
    fn arg(&self, i: usize) -> &[u8] {
        &self.frame[self.ranges[i].clone()]
    }
}

/// Where a request's bytes are: a range of the batch's read buffer, or bytes keyhop built.
#[derive(Clone, Debug)]
pub(crate) enum Src {
    Range(Range<usize>),
    Owned(Bytes),
}

/// A server's pool and the connection to it that this session uses in its current mode.
pub(crate) struct Target {
    pub pool: Arc<Pool>,
    conn: BackendConn,
}

/// Backend connections for one routing-table epoch and session mode, resolved once per epoch
/// (or mode change) instead of per command.
pub(crate) struct GroupPools {
    pub master: Target,
    replicas: Vec<Target>,
}

/// Per-client state owned by the reader.
pub(crate) struct Session {
    pub shared: Arc<Shared>,
    pub id: u64,
    pub name: Option<Bytes>,
    pub authed: bool,
    pub rng: u64,
    /// The protocol the client chose with HELLO.
    pub proto: Proto,
    /// The database the client chose with SELECT.
    pub db: u32,
    /// Set when HELLO/SELECT/RESET changed the mode: later requests go to other backend
    /// connections, so they wait until every earlier request has been answered (a request on
    /// the new connection must not overtake one still in flight on the old one).
    mode_changed: bool,
    /// Registry entry (CLIENT LIST/KILL) and CLIENT REPLY state.
    pub client: crate::clients::ClientState,
    table_cache: arc_swap::Cache<keyhop_router::SharedTable, Arc<RoutingTable>>,
    epoch: u64,
    pub(crate) pools: Vec<GroupPools>,
    replica_rr: usize,
    keys: Vec<usize>,
    /// Set when a command needs a pinned mode (transaction, pub/sub, blocking) or a flux step:
    /// the batch stops before it, and once every earlier request is answered the mode (or the
    /// step) takes it over.
    pub(crate) enter: Option<Enter>,
    /// Whether this batch's commands must be checked for slots in flux (the table has some,
    /// or the lease fence holds keyed commands): one branch per command otherwise.
    flux_check: bool,
    /// The lease fence level for this batch (see [`crate::Shared::fence_at`]).
    fence: u8,
    /// A fleet gate is set: the session reports the oldest table epoch it has requests in
    /// flight for (the drain barrier), as of its last batch.
    tracked: bool,
    /// The table a flux step routes its command with (the keys are then where it says), in
    /// place of the published one; replica reads are off while it is set.
    view: Option<Arc<RoutingTable>>,
    /// Set when a batch stopped at the flow-control window with requests left in the buffer.
    more: bool,
    /// Requests routed but not yet queued on their connection (see [`Session::send_unsent`]).
    unsent: Vec<(BackendConn, keyhop_router::GroupId, Unsent)>,
}

/// What takes over the client once its earlier requests are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enter {
    /// A pinned mode.
    Pinned(crate::pinned::Kind),
    /// A command on a slot in flux (see `flux.rs`).
    Flux,
}

/// A request its connection could not take at once.
enum Unsent {
    /// The queue was full: wait for room.
    Full(Request),
    /// The connection was retired: route again.
    Retired(Request),
}

/// Serves one client connection until it closes.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: Stream, id: u64, peer: SocketAddr) {
    let local = stream.local_addr().unwrap_or(peer);
    let authed = shared.settings.load().password.is_none();
    let client = crate::clients::ClientState::register(&shared, id, peer, local, raw_fd(&stream));
    let mut session = Session {
        table_cache: arc_swap::Cache::new(shared.table.clone()),
        shared,
        id,
        name: None,
        authed,
        rng: id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        proto: Proto::Resp2,
        db: 0,
        mode_changed: false,
        client,
        epoch: u64::MAX,
        pools: Vec::new(),
        replica_rr: 0,
        keys: Vec::new(),
        enter: None,
        flux_check: false,
        fence: 0,
        tracked: false,
        view: None,
        more: false,
        unsent: Vec::new(),
    };
    let (rd, wr) = stream.split();
    session.run(rd, wr).await;
}

/// The client socket's descriptor, for CLIENT LIST's `fd=`.
#[cfg(unix)]
fn raw_fd(stream: &Stream) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(stream.tcp())
}

#[cfg(not(unix))]
fn raw_fd(_stream: &Stream) -> i32 {
    -1
}

impl Session {
    /// The client's address.
    #[inline]
    pub(crate) fn peer(&self) -> SocketAddr {
        self.client.entry.addr
    }

    /// The session's one loop: read and route requests, collect backend results, write replies
    /// in request order. One future with no channel between a reader and a writer: each request
    /// costs no extra task wake-up, and the state it touches stays small (it matters with
    /// thousands of clients, where a wake-up is mostly cache misses).
    async fn run<'s>(&mut self, mut rd: ReadHalf<'s>, mut wr: WriteHalf<'s>) {
        let mut buf = BytesMut::new();
        let mut scanner = RequestScanner::default();
        let mut chunk = READ_CHUNK;
        // Batches read, in request order, until their replies are written.
        let mut queue: VecDeque<Box<Batch>> = VecDeque::new();
        // Batches whose replies are in `out`, recorded once `out` is written.
        let mut written: SmallVec<[Box<Batch>; 2]> = SmallVec::new();
        let mut out = OutQueue::default();
        let mut flow = flow::Flow::default();
        let mut soft_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut reading = true;
        let mut close = false;
        // Requests left in `buf` after a mode change, processed once the queue has drained.
        let mut barrier = false;
        // One drain waiter for the session's life: building a fresh `cancelled()` future per
        // read registered and dropped a waiter each time (~3% of CPU without pipelining).
        let (entry, shared) = (self.client.entry.clone(), self.shared.clone());
        let drained = crate::clients::ClientState::drained(&entry, &shared);
        tokio::pin!(drained);
        // CLIENT KILL from another client, waited on the same way.
        let killed = crate::clients::ClientState::killed(&entry);
        tokio::pin!(killed);
        loop {
            // Every batch at the head whose results are all in becomes reply bytes (slices, not
            // copies: `out` is what this client holds, and what its output limit counts).
            let mut grew = false;
            while !close {
                let Some(front) = queue.front_mut() else { break };
                if !poll_ready(front) {
                    break;
                }
                let Some(mut batch) = queue.pop_front() else { break };
                let before = out.len();
                close = render(&mut batch, &mut out, &self.shared.stats);
                let bytes = out.len() - before;
                Stats::add(&self.shared.stats.bytes_out, bytes as u64);
                flow.rendered(batch.cmds.len(), bytes);
                written.push(batch);
                grew = true;
            }
            if grew && self.tracked {
                self.client.entry.set_routed_epoch(oldest_routed(&queue));
            }
            if grew && !close && self.over_output_limit(&mut flow, &out) {
                break;
            }
            if close {
                // Nothing after a closing reply is answered.
                reading = false;
                queue.clear();
            }
            if barrier && queue.is_empty() && !close {
                if self.enter == Some(Enter::Flux) {
                    self.enter = None;
                    // Boxed like the pinned modes: only a command on a slot in flux gets here.
                    let before = out.len();
                    let closing = Box::pin(self.flux_step(&mut buf, &mut out)).await;
                    Stats::add(&self.shared.stats.bytes_out, (out.len() - before) as u64);
                    if closing {
                        close = true;
                        reading = false;
                        barrier = false;
                        continue;
                    }
                }
                if let Some(Enter::Pinned(kind)) = self.enter.take() {
                    let io = crate::pinned::ClientIo {
                        rd: &mut rd,
                        wr: &mut wr,
                        buf: &mut buf,
                        scanner: &mut scanner,
                        out: &mut out,
                        eof: !reading,
                    };
                    // Boxed: inline, the modes' state would make every session's future (and
                    // so every idle client) larger.
                    let exit = Box::pin(crate::pinned::serve(self, kind, io)).await;
                    if exit == crate::pinned::Exit::Close {
                        close = true;
                        reading = false;
                        barrier = false;
                        continue;
                    }
                }
                let room = flow.room(out.len()).max(1);
                let closing;
                (barrier, closing) =
                    self.queue_batch(&mut buf, &mut scanner, room, &mut queue, &mut flow).await;
                reading &= !closing;
                continue;
            }
            // Requests the window held back, now that replies or writes made room.
            if self.more && !barrier && !close && queue.len() < WRITER_QUEUE {
                let room = flow.room(out.len());
                if room > 0 {
                    self.more = false;
                    let closing;
                    (barrier, closing) =
                        self.queue_batch(&mut buf, &mut scanner, room, &mut queue, &mut flow).await;
                    reading &= !closing;
                    continue;
                }
            }
            if out.is_empty() {
                for b in written.drain(..) {
                    record(&self.shared, &b, self.peer());
                }
                if queue.is_empty() && queue.capacity() > 0 {
                    // Everything answered: an idle client keeps no capacity of its last burst's
                    // queues (its read buffer is given back by the read that finds nothing).
                    out = OutQueue::default();
                    queue = VecDeque::new();
                }
                if close || (!reading && queue.is_empty() && !barrier && !self.more) {
                    break;
                }
            }
            let soft_deadline = flow.soft_deadline();
            match soft_deadline {
                None => soft_timer = None,
                Some(d) if soft_timer.is_none() => {
                    soft_timer = Some(Box::pin(tokio::time::sleep_until(d.into())))
                }
                Some(_) => {}
            }
            tokio::select! {
                biased;
                // Killed: nothing more is read or written, as Redis frees the client at once.
                _ = &mut killed => break,
                r = out.write_some(&mut wr), if !out.is_empty() => {
                    if r.is_err() {
                        return;
                    }
                    if soft_deadline.is_some() && self.over_output_limit(&mut flow, &out) {
                        break;
                    }
                }
                // Draining: finish what was read, take nothing new.
                _ = &mut drained, if reading => reading = false,
                _ = head_results(&mut queue), if !queue.is_empty() => {}
                // The client has stayed above the soft output limit for its whole allowance.
                // Boxed, made only while over the soft limit: inline, a timer would make every
                // idle session's future larger.
                _ = poll_timer(&mut soft_timer), if soft_timer.is_some() => {
                    soft_timer = None;
                    if self.over_output_limit(&mut flow, &out) {
                        break;
                    }
                }
                // Read even while the window is full (requests then wait in `buf`): a client
                // that writes its whole pipeline before reading must not deadlock.
                // The buffer is allocated once there is something to read, so an idle client
                // holds none.
                r = std::future::poll_fn(|cx| rd.poll_read_lazily(cx, &mut buf, chunk)), if reading && !barrier => {
                    let n = match r {
                        Ok(0) | Err(_) => {
                            reading = false;
                            continue;
                        }
                        Ok(n) => n,
                    };
                    Stats::add(&self.shared.stats.bytes_in, n as u64);
                    if buf.len() == buf.capacity() && chunk < KEEP_BUFFER {
                        chunk *= 2;
                    }
                    let room = flow.room(out.len());
                    if room == 0 || self.more || queue.len() >= WRITER_QUEUE {
                        self.more = true;
                        if buf.len() > flow::MAX_QUERY_BYTES {
                            tracing::warn!(client = %self.peer(), bytes = buf.len(),
                                "client closed: more than 1 GB of requests waiting (it sends without reading replies)");
                            break;
                        }
                        continue;
                    }
                    let closing;
                    (barrier, closing) =
                        self.queue_batch(&mut buf, &mut scanner, room, &mut queue, &mut flow).await;
                    reading &= !closing;
                    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                        buf = BytesMut::new();
                        chunk = READ_CHUNK;
                    }
                }
            }
        }
        let _ = wr.shutdown().await;
    }

    /// Routes up to `room` requests of `buf` and queues their batch (counted in flight); returns
    /// whether a mode change or a pinned command now holds the rest of `buf` back until the
    /// queue drains, and whether the connection closes after the batch.
    async fn queue_batch(
        &mut self,
        buf: &mut BytesMut,
        scanner: &mut RequestScanner,
        room: usize,
        queue: &mut VecDeque<Box<Batch>>,
        flow: &mut flow::Flow,
    ) -> (bool, bool) {
        let (batch, closing) = self.process(buf, scanner, room).await;
        if let Some(batch) = batch {
            flow.inflight += batch.cmds.len();
            queue.push_back(batch);
        }
        if self.tracked {
            self.client.entry.set_routed_epoch(oldest_routed(queue));
        }
        (std::mem::take(&mut self.mode_changed) || self.enter.is_some(), closing)
    }

    /// True when the client's unwritten output passed `client_output_limit` (counted and
    /// logged; the caller disconnects it without writing the rest).
    fn over_output_limit(&self, flow: &mut flow::Flow, out: &OutQueue) -> bool {
        let limit = self.shared.settings.load().client_limit;
        let Some(over) = flow.check(out.len(), &limit) else { return false };
        Stats::add(&self.shared.stats.output_limit_disconnects, 1);
        tracing::warn!(client = %self.peer(), unwritten_bytes = out.len(), hard = limit.hard,
            soft = limit.soft, soft_seconds = limit.soft_for.as_secs(), limit = ?over,
            "client disconnected: its unwritten output passed client_output_limit (it is not reading its replies)");
        true
    }

    /// Routes up to `room` complete requests in `buf` (setting `more` when some are left),
    /// sends each backend its share, and returns the batch of reply slots (and whether the
    /// connection must close after it).
    async fn process(
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
        close
    }

    fn resolve_pools(&mut self, table: &RoutingTable) {
        let settings = self.shared.settings.load();
        let backends = &self.shared.backends;
        let (id, mode) = (self.id, self.mode());
        let target = |addr: &str| {
            let pool = backends.pool(addr);
            Target { conn: pool.conn_for(id, mode), pool }
        };
        self.pools = table
            .groups
            .iter()
            .map(|g| GroupPools {
                master: target(&g.master),
                replicas: if settings.read_from_replicas {
                    g.replicas.iter().filter(|r| r.healthy).map(|r| target(&r.addr)).collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        self.epoch = table.epoch;
    }

    /// The backend connection mode this session's requests need.
    pub(crate) fn mode(&self) -> Mode {
        Mode { resp3: self.proto == Proto::Resp3, db: self.db }
    }

    /// Switches protocol and database (HELLO, SELECT, RESET): the rest of the pipeline waits for
    /// the requests already sent, then goes to connections of the new mode.
    pub(crate) fn set_mode(&mut self, table: &RoutingTable, proto: Proto, db: u32) {
        if proto == self.proto && db == self.db {
            return;
        }
        self.proto = proto;
        self.db = db;
        self.client.entry.set_db(db);
        self.client.entry.set_resp(proto.version() as u8);
        self.mode_changed = true;
        self.resolve_pools(table);
    }
}

/// The epoch of the oldest table the queued batches' requests were routed with (`NONE` when
/// nothing is in flight); epochs only grow along the queue.
fn oldest_routed(queue: &VecDeque<Box<Batch>>) -> u64 {
    queue.iter().find_map(|b| b.table.as_ref().map(|t| t.epoch)).unwrap_or(crate::fleet::NONE)
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

/// The CROSSSLOT refusal, naming the fix.
pub(crate) const CROSSSLOT: &[u8] =
    b"-CROSSSLOT keyhop: keys in request don't hash to the same group (use a {hash tag})\r\n";

/// `object|encoding` -> `OBJECT ENCODING`.
pub(crate) fn display_name(name: &str) -> String {
    name.replace('|', " ").to_ascii_uppercase()
}

fn materialize(data: &Bytes, src: &Src) -> Bytes {
    match src {
        Src::Range(r) => data.slice(r.clone()),
        Src::Owned(b) => b.clone(),
    }
}

/// Resolves when `timer` fires (never without one).
fn poll_timer(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match timer.as_mut() {
        Some(t) => t.as_mut().poll(cx),
        None => std::task::Poll::Pending,
    })
}
