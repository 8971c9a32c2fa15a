//! Dedicated backend connections: one client's own connection to a server, for the commands
//! that cannot share one (a transaction, subscriptions, a blocked pop). A bounded number per
//! server, kept for reuse once their client's pinned state has ended and they are clean.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Kind;
use crate::backend::{BackendSettings, BackendState, Mode, setup};
use crate::resp::{self, ReplyScanner};
use crate::stream::Stream;

/// Idle dedicated connections kept per server for reuse; more are closed when released.
const MAX_IDLE: usize = 64;
/// A dedicated connection's first read-buffer size.
const READ_CHUNK: usize = 4 * 1024;

/// Why no dedicated connection could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PinError {
    /// `max_pinned_connections` of this server are in use.
    Exhausted { addr: Arc<str>, max: usize },
    /// Connecting or the set-up failed.
    Connect { addr: Arc<str>, why: String },
}

impl PinError {
    /// The error a client reads.
    pub(crate) fn reply(&self) -> Bytes {
        match self {
            PinError::Exhausted { addr, max } => resp::error(&format!(
                "ERR keyhop: all {max} dedicated connections to {addr} are in use (max_pinned_connections); retry later or raise max_pinned_connections"
            )),
            PinError::Connect { addr, why } => {
                resp::error(&format!("ERR keyhop: backend {addr} unreachable: {why}"))
            }
        }
    }
}

/// Why a dedicated connection stopped delivering replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnError {
    /// The server closed it (or the socket failed).
    Closed(String),
    /// The server sent bytes that are not RESP.
    Malformed,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Closed(why) => write!(f, "connection lost ({why})"),
            ConnError::Malformed => write!(f, "malformed reply"),
        }
    }
}

/// One dedicated connection, owned by one client session while pinned. Dropping it returns it
/// to its server's idle list when [`Dedicated::clean`] was called since its last use; otherwise
/// it is closed.
pub(crate) struct Dedicated {
    stream: Option<Stream>,
    buf: BytesMut,
    scanner: ReplyScanner,
    /// The server, `host:port`.
    pub addr: Arc<str>,
    /// The protocol and database it was set up with.
    pub mode: Mode,
    /// The server's `CLIENT ID` for this connection (for `CLIENT UNBLOCK`), once asked.
    pub backend_id: Option<i64>,
    clean: bool,
    server: Arc<Server>,
    gauge: Option<Arc<AtomicI64>>,
}

impl Dedicated {
    /// Writes `frames` (whole request frames) to the server.
    pub(crate) async fn send(&mut self, frames: &[u8]) -> Result<(), ConnError> {
        self.clean = false;
        let Some(s) = self.stream.as_mut() else {
            return Err(ConnError::Closed("already closed".into()));
        };
        s.write_all(frames).await.map_err(|e| ConnError::Closed(e.to_string()))?;
        s.flush().await.map_err(|e| ConnError::Closed(e.to_string()))
    }

    /// The next whole reply frame (or push). Cancel-safe: bytes read before a cancellation stay
    /// buffered for the next call.
    pub(crate) async fn read_reply(&mut self) -> Result<Bytes, ConnError> {
        loop {
            if let Some(frame) = self.try_reply()? {
                return Ok(frame);
            }
            let Some(s) = self.stream.as_mut() else {
                return Err(ConnError::Closed("already closed".into()));
            };
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
                self.buf.reserve(READ_CHUNK);
            }
            match s.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.stream = None;
                    return Err(ConnError::Closed("closed by the server".into()));
                }
                Ok(_) => {}
                Err(e) => {
                    self.stream = None;
                    return Err(ConnError::Closed(e.to_string()));
                }
            }
        }
    }

    /// A whole reply already buffered, without reading.
    pub(crate) fn try_reply(&mut self) -> Result<Option<Bytes>, ConnError> {
        match self.scanner.scan(&self.buf) {
            Ok(Some(len)) => Ok(Some(self.buf.split_to(len).freeze())),
            Ok(None) => Ok(None),
            Err(_) => {
                self.stream = None;
                Err(ConnError::Malformed)
            }
        }
    }

    /// Sends one command and waits for its reply.
    pub(crate) async fn call(&mut self, frame: &[u8]) -> Result<Bytes, ConnError> {
        self.send(frame).await?;
        self.read_reply().await
    }

    /// Says the connection holds no client state any more (no transaction, WATCH,
    /// subscription or blocked command, no reply pending): it may be reused when dropped.
    pub(crate) fn clean(&mut self) {
        // A partial reply would be buffered: an empty buffer means the scanner is between replies.
        self.clean = self.buf.is_empty();
    }

    /// True once the socket has failed or been closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.stream.is_none()
    }

    /// Asks the server for this connection's `CLIENT ID` (once) and remembers it.
    pub(crate) async fn fetch_id(&mut self) -> Result<i64, ConnError> {
        if let Some(id) = self.backend_id {
            return Ok(id);
        }
        let reply = self.call(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n").await?;
        let id = reply
            .strip_prefix(b":")
            .and_then(|r| r.strip_suffix(b"\r\n"))
            .and_then(resp::parse_int)
            .ok_or(ConnError::Malformed)?;
        self.backend_id = Some(id);
        Ok(id)
    }
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.fetch_sub(1, Ordering::Relaxed);
        }
        let reusable = self.clean && self.buf.is_empty() && !self.server.retired();
        match self.stream.take() {
            Some(stream) if reusable => self.server.put_idle(self.mode, stream, self.backend_id),
            _ => {
                self.server.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// An idle connection kept for reuse.
struct Idle {
    mode: Mode,
    stream: Stream,
    backend_id: Option<i64>,
}

/// One server's dedicated connections.
struct Server {
    /// Dedicated connections open (in use and idle), bounded by `max_pinned_connections`.
    open: AtomicUsize,
    idle: Mutex<Vec<Idle>>,
    retired: std::sync::atomic::AtomicBool,
    /// What the server told keyhop at set-up (shared with nothing: the shared pool has its own).
    state: BackendState,
}

impl Server {
    fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    fn put_idle(&self, mode: Mode, stream: Stream, backend_id: Option<i64>) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { mode, stream, backend_id });
        } else {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// An idle connection of `mode` that is still usable (the server has not closed it).
    fn take_idle(&self, mode: Mode) -> Option<(Stream, Option<i64>)> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(i) = idle.iter().rposition(|c| c.mode == mode) {
            let mut c = idle.swap_remove(i);
            // Readable while idle means closed (EOF) or unexpected bytes: either way not reusable.
            if c.stream.idle_and_open() {
                return Some((c.stream, c.backend_id));
            }
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        None
    }
}

/// One in-use gauge: the group's name, the kind, the count.
type Gauge = (Arc<str>, Kind, Arc<AtomicI64>);

/// Every server's dedicated connections, and the in-use counts by group and kind for metrics.
#[derive(Default)]
pub(crate) struct Pinned {
    servers: DashMap<Arc<str>, Arc<Server>>,
    /// In-use gauges by (group, kind): a handful, found by name without allocating a key on
    /// every acquire.
    in_use: Mutex<Vec<Gauge>>,
    /// Client sessions in each mode (INFO's blocked_clients and pubsub_clients).
    sessions: [AtomicI64; 3],
}

/// Counts a session in a mode while it lives.
pub(crate) struct InMode<'a>(&'a AtomicI64);

impl Drop for InMode<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pinned {
    fn server(&self, addr: &str) -> Arc<Server> {
        if let Some(s) = self.servers.get(addr) {
            return s.clone();
        }
        self.servers
            .entry(Arc::from(addr))
            .or_insert_with(|| {
                Arc::new(Server {
                    open: AtomicUsize::new(0),
                    idle: Mutex::new(Vec::new()),
                    retired: false.into(),
                    state: BackendState::default(),
                })
            })
            .clone()
    }

    /// A dedicated connection to `addr` in `mode`, for `kind` on behalf of `group` (metrics): an
    /// idle one, or a new one while fewer than `max` are open.
    pub(crate) async fn acquire(
        &self,
        addr: &str,
        mode: Mode,
        settings: &BackendSettings,
        max: usize,
        group: &str,
        kind: Kind,
    ) -> Result<Dedicated, PinError> {
        let server = self.server(addr);
        let addr: Arc<str> = Arc::from(addr);
        let (stream, backend_id) = match server.take_idle(mode) {
            Some(idle) => idle,
            None => {
                let reserved = server
                    .open
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max).then_some(n + 1)
                    })
                    .is_ok();
                if !reserved {
                    return Err(PinError::Exhausted { addr, max });
                }
                match setup::open(&addr, settings, mode, &server.state).await {
                    Ok(s) => (s, None),
                    Err(e) => {
                        server.open.fetch_sub(1, Ordering::Relaxed);
                        return Err(PinError::Connect { addr, why: e.why });
                    }
                }
            }
        };
        let gauge = self.gauge(group, kind);
        gauge.fetch_add(1, Ordering::Relaxed);
        Ok(Dedicated {
            stream: Some(stream),
            buf: BytesMut::new(),
            scanner: ReplyScanner::default(),
            addr,
            mode,
            backend_id,
            clean: false,
            server,
            gauge: Some(gauge),
        })
    }

    /// Closes the idle connections of every server for which `keep` is false and stops reusing
    /// its connections (a master demoted by a failover must not get a client's next command).
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<Arc<str>> =
            self.servers.iter().filter(|s| !keep(s.key())).map(|s| s.key().clone()).collect();
        for addr in gone {
            if let Some((_, server)) = self.servers.remove(&addr) {
                server.retired.store(true, Ordering::Relaxed);
                let idle = std::mem::take(
                    &mut *server.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                server.open.fetch_sub(idle.len(), Ordering::Relaxed);
            }
        }
    }

    /// Counts a session in `kind` until the guard is dropped.
    pub(crate) fn enter(&self, kind: Kind) -> InMode<'_> {
        let c = &self.sessions[kind as usize];
        c.fetch_add(1, Ordering::Relaxed);
        InMode(c)
    }

    /// Client sessions in `kind` now.
    pub(crate) fn sessions(&self, kind: Kind) -> i64 {
        self.sessions[kind as usize].load(Ordering::Relaxed)
    }

    /// The in-use gauge of (`group`, `kind`), created on first use.
    fn gauge(&self, group: &str, kind: Kind) -> Arc<AtomicI64> {
        let mut all = self.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, g)) = all.iter().find(|(n, k, _)| &**n == group && *k == kind) {
            return g.clone();
        }
        let g = Arc::new(AtomicI64::new(0));
        all.push((Arc::from(group), kind, g.clone()));
        g
    }

    /// Dedicated connections in use, by (group, kind).
    pub(crate) fn in_use(&self) -> Vec<(Arc<str>, Kind, i64)> {
        let all = self.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> =
            all.iter().map(|(n, k, g)| (n.clone(), *k, g.load(Ordering::Relaxed))).collect();
        v.sort_by(|a, b| (&a.0, a.1.label()).cmp(&(&b.0, b.1.label())));
        v
    }

    /// Dedicated connections open (in use and idle), by server.
    pub(crate) fn open(&self) -> HashMap<Arc<str>, usize> {
        self.servers.iter().map(|s| (s.key().clone(), s.open.load(Ordering::Relaxed))).collect()
    }
}
