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

use bytes::{Bytes, BytesMut};
use keyhop_router::{Args, RoutingTable};
use smallvec::SmallVec;
use tokio::io::AsyncWriteExt;

use crate::Shared;
use crate::backend::{BackendConn, Mode, Pool, Request};
use crate::io::OutQueue;
use crate::resp::{Proto, RequestScanner};
use crate::stats::Stats;
use crate::stream::{ReadHalf, Stream, WriteHalf};

mod batch;
mod dispatch;
mod flow;
pub(crate) mod flux;
mod route;

use batch::{Batch, head_results, poll_ready, record, render};
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
                    if Box::pin(self.flux_step(&mut buf, &mut out)).await {
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

/// The CROSSSLOT refusal, naming the fix.
pub(crate) const CROSSSLOT: &[u8] =
    b"-CROSSSLOT keyhop: keys in request don't hash to the same group (use a {hash tag})\r\n";

/// `object|encoding` -> `OBJECT ENCODING`.
pub(crate) fn display_name(name: &str) -> String {
    name.replace('|', " ").to_ascii_uppercase()
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
