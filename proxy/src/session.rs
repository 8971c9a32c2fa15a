//! A client session: read a batch of requests, route each, queue each group's share on its backend
//! connection, and keep the batch's ordered list of reply slots; as backend replies arrive the
//! slots are filled and written back in request order with vectored writes.
//!
//! bytes in -> frame (resp) -> command + route (router) -> backend (backend) -> reply -> bytes out.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use keyhop_router::command::{self, Local, RouteError};
use keyhop_router::{Args, GroupId, Merge, Policy, RoutingTable};
use smallvec::SmallVec;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use crate::Shared;
use crate::backend::{BackendConn, BackendError, Mode, Payload, Pool, ReplyResult, Request};
use crate::io::OutQueue;
use crate::merge;
use crate::resp::{self, Proto, RequestScanner, Scanned};
use crate::stats::Stats;

/// Batches a session may have waiting for replies before it stops reading (backpressure).
const WRITER_QUEUE: usize = 16;
/// A read buffer's first size; it doubles while reads fill it.
const READ_CHUNK: usize = 4 * 1024;
/// Read buffers larger than this are released when they empty, so one big request doesn't pin
/// memory for the life of an idle connection.
const KEEP_BUFFER: usize = 64 * 1024;
/// Most reply bytes gathered from several ready batches before one write.
const COALESCE_BYTES: usize = 256 * 1024;

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
const NO_GROUP: u16 = u16::MAX;
const MANY_GROUPS: u16 = u16::MAX - 1;

/// What the writer needs to know of each command for metrics and SLOWLOG.
#[derive(Clone, Copy)]
struct CmdMeta {
    /// Index for per-command metrics.
    id: u16,
    /// The group that served it, or [`NO_GROUP`] / [`MANY_GROUPS`].
    group: u16,
    /// The frame's range in the batch data (`start == u32::MAX`: not in it, e.g. inline).
    start: u32,
    len: u32,
}

pub(crate) struct MergeSlot {
    pub kind: MergeKind,
    pub parts: Vec<(u16, u32)>,
}

/// The requests of one batch bound for one backend connection.
struct Outgoing {
    conn: BackendConn,
    group: GroupId,
    addr: Arc<str>,
    chunks: SmallVec<[Src; 2]>,
    count: usize,
}

/// What the reader collects while it routes one batch.
#[derive(Default)]
pub(crate) struct Builder {
    // Inline capacities cover a client that sends one command at a time without allocating.
    slots: SmallVec<[Slot; 4]>,
    sends: SmallVec<[Outgoing; 2]>,
}

impl Builder {
    /// Queues `src` for `conn`; returns the slot that will hold its reply.
    fn send_to(
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
    slots: SmallVec<[Slot; 4]>,
    pending: SmallVec<[Pending; 2]>,
    table: Option<Arc<RoutingTable>>,
    /// When the batch was read (client-observed latency starts here).
    started: Instant,
    cmds: SmallVec<[CmdMeta; 4]>,
    data: Bytes,
    client_name: Option<Bytes>,
}

struct Pending {
    rx: oneshot::Receiver<ReplyResult>,
    result: Option<ReplyResult>,
    group: GroupId,
    addr: Arc<str>,
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
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub name: Option<Bytes>,
    pub authed: bool,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
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
}

/// Serves one client connection until it closes.
pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, id: u64, peer: SocketAddr) {
    let local = stream.local_addr().unwrap_or(peer);
    let authed = shared.settings.load().password.is_none();
    let client = crate::clients::ClientState::register(&shared, id, peer, local, raw_fd(&stream));
    let mut session = Session {
        table_cache: arc_swap::Cache::new(shared.table.clone()),
        shared,
        id,
        peer,
        local,
        name: None,
        authed,
        lib_name: None,
        lib_ver: None,
        rng: id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        proto: Proto::Resp2,
        db: 0,
        mode_changed: false,
        client,
        epoch: u64::MAX,
        pools: Vec::new(),
        replica_rr: 0,
        keys: Vec::new(),
    };
    let (rd, wr) = stream.split();
    session.run(rd, wr).await;
}

/// The client socket's descriptor, for CLIENT LIST's `fd=`.
#[cfg(unix)]
fn raw_fd(stream: &TcpStream) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(stream)
}

#[cfg(not(unix))]
fn raw_fd(_stream: &TcpStream) -> i32 {
    -1
}

impl Session {
    /// The session's one loop: read and route requests, collect backend results, write replies
    /// in request order. One future with no channel between a reader and a writer: each request
    /// costs no extra task wake-up, and the state it touches stays small (it matters with
    /// thousands of clients, where a wake-up is mostly cache misses).
    async fn run(&mut self, mut rd: ReadHalf<'_>, mut wr: WriteHalf<'_>) {
        let mut buf = BytesMut::new();
        let mut scanner = RequestScanner::default();
        let mut chunk = READ_CHUNK;
        // Batches read, in request order, until their replies are written.
        let mut queue: VecDeque<Box<Batch>> = VecDeque::new();
        // Batches whose replies are in `out`, recorded once `out` is written.
        let mut written: SmallVec<[Box<Batch>; 2]> = SmallVec::new();
        let mut out = OutQueue::default();
        let mut reading = true;
        let mut close = false;
        // Requests left in `buf` after a mode change, processed once the queue has drained.
        let mut barrier = false;
        // One drain waiter for the session's life: building a fresh `cancelled()` future per
        // read registered and dropped a waiter each time (~3% of CPU without pipelining).
        let drained = self.shared.drain.cancelled();
        tokio::pin!(drained);
        // CLIENT KILL from another client, waited on the same way.
        let killed = self.client.killed();
        tokio::pin!(killed);
        loop {
            // Every batch at the head whose results are all in becomes reply bytes.
            while !close && out.len() < COALESCE_BYTES {
                let Some(front) = queue.front_mut() else { break };
                if !poll_ready(front) {
                    break;
                }
                let Some(mut batch) = queue.pop_front() else { break };
                let before = out.len();
                close = render(&mut batch, &mut out, &self.shared.stats);
                Stats::add(&self.shared.stats.bytes_out, (out.len() - before) as u64);
                written.push(batch);
            }
            if close {
                // Nothing after a closing reply is answered.
                reading = false;
                queue.clear();
            }
            if barrier && queue.is_empty() && !close {
                let (batch, closing) = self.process(&mut buf, &mut scanner).await;
                barrier = std::mem::take(&mut self.mode_changed);
                queue.extend(batch);
                if closing {
                    reading = false;
                }
                continue;
            }
            if out.is_empty() {
                for b in written.drain(..) {
                    record(&self.shared, &b, self.peer);
                }
                if close || (!reading && queue.is_empty() && !barrier) {
                    break;
                }
            }
            if reading && buf.capacity() - buf.len() < chunk / 2 {
                buf.reserve(chunk);
            }
            tokio::select! {
                biased;
                // Killed: nothing more is read or written, as Redis frees the client at once.
                _ = &mut killed => break,
                r = out.write_some(&mut wr), if !out.is_empty() => {
                    if r.is_err() {
                        return;
                    }
                }
                // Draining: finish what was read, take nothing new.
                _ = &mut drained, if reading => reading = false,
                _ = head_results(&mut queue), if !queue.is_empty() && out.len() < COALESCE_BYTES => {}
                r = rd.read_buf(&mut buf), if reading && !barrier && queue.len() < WRITER_QUEUE => {
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
                    let (batch, closing) = self.process(&mut buf, &mut scanner).await;
                    barrier = std::mem::take(&mut self.mode_changed);
                    if let Some(batch) = batch {
                        queue.push_back(batch);
                    }
                    if closing {
                        reading = false;
                    }
                    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                        buf = BytesMut::new();
                        chunk = READ_CHUNK;
                    }
                }
            }
        }
        let _ = wr.shutdown().await;
    }

    /// Routes every complete request in `buf`, sends each backend its share, and returns the
    /// batch of reply slots (and whether the connection must close after it).
    async fn process(
        &mut self,
        buf: &mut BytesMut,
        scanner: &mut RequestScanner,
    ) -> (Option<Box<Batch>>, bool) {
        let started = Instant::now();
        let table = self.table_cache.load().clone();
        if table.epoch != self.epoch {
            self.resolve_pools(&table);
        }
        let mut b = Builder::default();
        let mut cmds: SmallVec<[CmdMeta; 4]> = SmallVec::new();
        let mut off = 0;
        let mut close = false;
        let mut commands = 0u64;
        loop {
            match scanner.scan(&buf[off..]) {
                Ok(None) => break,
                Ok(Some(Scanned::Empty { len })) => off += len,
                Ok(Some(Scanned::Command { len })) => {
                    commands += 1;
                    let args = FrameArgs { frame: &buf[off..off + len], ranges: &scanner.args };
                    let id;
                    (close, id) = self.dispatch(&table, &args, Src::Range(off..off + len), &mut b);
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
                        cmds.push(CmdMeta { id, group: last_group(&b), start: u32::MAX, len: 0 });
                    }
                    off += len;
                    if self.mode_changed {
                        break;
                    }
                }
                Err(e) => {
                    Stats::add(&self.shared.stats.errors_protocol, 1);
                    tracing::debug!(client = %self.peer, error = ?e, "protocol error; closing client");
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
            if let Err(req) = out.conn.send(req).await {
                // The connection was retired (a failover) between loading the table and sending:
                // the request was never written, so it may go to the group's server in the newest
                // table. If that fails too, its reply becomes an error.
                let newest = self.table_cache.load().clone();
                self.resolve_pools(&newest);
                if let Some(g) = self.pools.get(out.group as usize) {
                    let _ = g.master.conn.send(req).await;
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
    fn mode(&self) -> Mode {
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

    /// Queues `src` for `group`'s master (or a replica for a read when allowed).
    pub(crate) fn forward(
        &mut self,
        b: &mut Builder,
        group: GroupId,
        read_only: bool,
        src: Src,
    ) -> (u16, u32) {
        let Some(g) = self.pools.get(group as usize) else {
            // Cannot happen with a consistent table; answer rather than panic.
            b.ready(resp::error("ERR keyhop: internal routing error (group out of range)"));
            return (u16::MAX, 0);
        };
        let target = if read_only && !g.replicas.is_empty() {
            self.replica_rr = self.replica_rr.wrapping_add(1);
            // A replica keyhop cannot reach is skipped (the master serves when none is left)
            // until it answers again, without waiting for the table to mark it down.
            let n = g.replicas.len();
            (0..n)
                .map(|k| &g.replicas[(self.replica_rr + k) % n])
                .find(|t| !t.pool.state.failing.load(std::sync::atomic::Ordering::Relaxed))
                .unwrap_or(&g.master)
        } else {
            &g.master
        };
        b.send_to(&target.conn, group, &target.pool.addr, src)
    }

    /// Queues `src` for one server's `pool` on behalf of `group` (a replica that the session's
    /// per-epoch pools do not hold, for CONFIG SET).
    pub(crate) fn forward_to_pool(
        &mut self,
        b: &mut Builder,
        group: GroupId,
        pool: &Pool,
        src: Src,
    ) -> (u16, u32) {
        let conn = pool.conn_for(self.id, self.mode());
        b.send_to(&conn, group, &pool.addr, src)
    }

    /// Forwards a request whose single reply goes straight to the client.
    pub(crate) fn forward_reply(
        &mut self,
        b: &mut Builder,
        group: GroupId,
        read_only: bool,
        src: Src,
    ) {
        let (send, idx) = self.forward(b, group, read_only, src);
        if send != u16::MAX {
            b.slots.push(Slot::Reply { send, idx });
        }
    }

    /// Sends `src` to every group's master and merges the replies.
    pub(crate) fn fan_out(&mut self, b: &mut Builder, groups: usize, src: Src, kind: MergeKind) {
        let mut parts = Vec::with_capacity(groups);
        for g in 0..groups {
            let (send, idx) = self.forward(b, g as GroupId, false, src.clone());
            if send == u16::MAX {
                return;
            }
            parts.push((send, idx));
        }
        b.slots.push(Slot::Merge(Box::new(MergeSlot { kind, parts })));
    }

    /// Handles one command; returns whether the connection must close after it, and the
    /// command's metrics index.
    fn dispatch(
        &mut self,
        table: &RoutingTable,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) -> (bool, u16) {
        let first = b.slots.len();
        let (close, id) = self.dispatch_command(table, args, src, b);
        // CLIENT REPLY OFF/SKIP and a self-kill act on the command's reply slots; a session
        // that never used them pays this one test.
        if self.client.flags != 0 {
            return (self.client.after_command(&mut b.slots[first..]) || close, id);
        }
        (close, id)
    }

    fn dispatch_command(
        &mut self,
        table: &RoutingTable,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) -> (bool, u16) {
        let Some(top) = command::lookup(args.arg(0)) else {
            Stats::add(&self.shared.stats.errors_unsupported, 1);
            b.ready(resp::error(&command::unknown_command_error(args)));
            return (false, self.shared.commands.unknown() as u16);
        };
        let id = command::index_of(top).unwrap_or(self.shared.commands.unknown()) as u16;
        (self.dispatch_known(table, top, args, src, b), id)
    }

    fn dispatch_known(
        &mut self,
        table: &RoutingTable,
        top: &'static command::CommandSpec,
        args: &FrameArgs,
        src: Src,
        b: &mut Builder,
    ) -> bool {
        let spec = match top.resolve(args) {
            Ok(s) => s,
            Err(msg) => {
                Stats::add(&self.shared.stats.errors_unsupported, 1);
                b.ready(resp::error(&msg));
                return false;
            }
        };
        if !spec.arity_ok(args.count()) {
            b.ready(resp::error(&command::arity_error(spec)));
            return false;
        }
        if !self.authed
            && !matches!(
                spec.policy,
                Policy::Local(Local::Auth | Local::Hello | Local::Ping | Local::Quit)
            )
        {
            b.ready(Bytes::from_static(b"-NOAUTH Authentication required.\r\n"));
            return false;
        }
        // XREAD ... BLOCK blocks like BLPOP: argument-dependent, so checked here.
        let policy =
            if command::needs_pinning(spec, args) { Policy::NeedsPinning } else { spec.policy };
        match policy {
            Policy::Forward => match command::route(table, spec, args, &mut self.keys) {
                Ok(group) => {
                    let read_only = !spec.is_write() && spec.flags & command::flags::READONLY != 0;
                    self.forward_reply(b, group.unwrap_or(0), read_only, src);
                }
                Err(RouteError::CrossGroup) => {
                    Stats::add(&self.shared.stats.errors_crossslot, 1);
                    b.ready(Bytes::from_static(CROSSSLOT));
                }
                // FCALL looks the function up before it reads numkeys: a server answers
                // either error, without running anything.
                Err(RouteError::Syntax(_)) if spec.keys_proc == command::KeysProc::Fcall => {
                    self.forward_reply(b, 0, false, src)
                }
                Err(RouteError::Syntax(msg)) => b.ready(resp::error(&msg)),
            },
            Policy::AnyGroup => self.forward_reply(b, 0, false, src),
            Policy::ByChannel => {
                let group = table.group_for_key(args.arg(1));
                self.forward_reply(b, group, false, src);
            }
            Policy::Split(merge) => self.split(table, spec, args, src, merge, b),
            Policy::AllGroups(merge) => {
                self.fan_out(b, table.groups.len(), src, MergeKind::Router(merge, Vec::new()))
            }
            Policy::Local(local) => {
                let close = self.local(local, table, spec, args, src, b);
                self.after_local(local);
                return close;
            }
            p @ (Policy::Admin(_) | Policy::SingleGroup) => {
                self.admin(p, table, spec, args, src, b)
            }
            Policy::Refused => {
                Stats::add(&self.shared.stats.errors_unsupported, 1);
                b.ready(resp::error(&format!(
                    "ERR keyhop: {} is not supported through the proxy",
                    display_name(spec.name)
                )));
            }
            Policy::NeedsPinning => {
                Stats::add(&self.shared.stats.errors_unsupported, 1);
                b.ready(resp::error(&format!(
                    "ERR keyhop: {} is not supported through the proxy yet (it needs a dedicated backend connection)",
                    display_name(spec.name)
                )));
            }
        }
        false
    }

    fn split(
        &mut self,
        table: &RoutingTable,
        spec: &command::CommandSpec,
        args: &FrameArgs,
        src: Src,
        merge: Merge,
        b: &mut Builder,
    ) {
        // Malformed key lists (an odd MSET) are refused before any part is sent: a split must
        // never write some keys and fail the rest.
        if let Err(RouteError::Syntax(msg)) = spec.keys(args, &mut self.keys) {
            b.ready(resp::error(&msg));
            return;
        }
        let plan = command::plan_split(table, spec, args);
        if plan.parts.len() <= 1 {
            let group = plan.parts.first().map(|p| p.group).unwrap_or(0);
            let read_only = !spec.is_write();
            self.forward_reply(b, group, read_only, src);
            return;
        }
        let name = args.arg(0);
        let mut parts = Vec::with_capacity(plan.parts.len());
        for part in &plan.parts {
            let frame =
                resp::command(std::iter::once(name).chain(part.args.iter().map(|&i| args.arg(i))));
            let (send, idx) = self.forward(b, part.group, !spec.is_write(), Src::Owned(frame));
            if send == u16::MAX {
                return;
            }
            parts.push((send, idx));
        }
        b.slots.push(Slot::Merge(Box::new(MergeSlot {
            kind: MergeKind::Router(merge, plan.order),
            parts,
        })));
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

fn backend_error(table: Option<&Arc<RoutingTable>>, p: &Pending, e: &BackendError) -> Bytes {
    let group =
        table.and_then(|t| t.groups.get(p.group as usize)).map(|g| g.name.as_str()).unwrap_or("?");
    resp::error(&format!("ERR keyhop: backend {} of group {group} {e}", p.addr))
}

fn count_error(stats: &Stats, e: &BackendError) {
    let c = if matches!(e, BackendError::Timeout(_)) {
        &stats.errors_timeout
    } else {
        &stats.errors_backend
    };
    Stats::add(c, 1);
}

/// Renders a batch whose results are all in; returns true when the connection must close.
fn render(batch: &mut Batch, out: &mut OutQueue, stats: &Stats) -> bool {
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
    fn take(&mut self, cx: Option<&mut Context<'_>>) -> bool {
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
fn poll_ready(batch: &mut Batch) -> bool {
    let mut all = true;
    for p in batch.pending.iter_mut() {
        all &= p.take(None);
    }
    all
}

/// Resolves once every backend result of the queue's first batch has arrived.
fn head_results(queue: &mut VecDeque<Box<Batch>>) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(batch) = queue.front_mut() else { return Poll::Pending };
        if batch.pending.iter_mut().all(|p| p.take(Some(cx))) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Counts each command of a written batch and logs the slow ones.
fn record(shared: &Shared, batch: &Batch, peer: SocketAddr) {
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
