//! Backend connections: a few shared, pipelined connections per redis-server, established lazily,
//! re-established with backoff, multiplexing the requests of many clients.
//!
//! Each connection is one task that owns the socket: it drains queued requests and writes them
//! with one vectored write per batch, and finds reply boundaries and hands each request its
//! replies as one contiguous slice of the read buffer (no copy, no decode).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use crate::cancel::Signal;
use crate::io::{OutQueue, sleep_until_opt};
use crate::stream::Stream;

mod reader;
mod retry;
pub(crate) mod setup;
use reader::ReplyReader;
use retry::Retry;
pub(crate) use setup::ConnectError;

/// Requests queued per connection before senders wait (backpressure on clients).
const QUEUE_DEPTH: usize = 4096;
/// Requests taken from the queue at once at most.
const MAX_BATCH: usize = 1024;
/// Unwritten request bytes above which no more requests are taken from the queue (they wait
/// there, and senders feel the backpressure).
const MAX_OUT_BYTES: usize = 4 << 20;

/// Settings every backend connection uses.
#[derive(Clone, Debug)]
pub struct BackendSettings {
    /// How long a TCP connect (plus AUTH) may take.
    pub connect_timeout: Duration,
    /// How long a request may wait for its reply before the connection is declared dead.
    pub request_timeout: Duration,
    /// TCP keepalive idle time, if enabled.
    pub keepalive: Option<Duration>,
    /// AUTH sent on every new connection.
    pub password: Option<String>,
    /// Connections per backend server.
    pub connections: usize,
    /// With a TLS client config, every connection to a server speaks TLS (`backend_tls`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Why a request got no reply from its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// Could not connect (or authenticate); the text says why.
    Connect(String),
    /// Still down after a recent failure; requests fail fast until the retry.
    Down(String),
    /// No reply within the request timeout; the connection was closed.
    Timeout(Duration),
    /// The connection broke with the request in flight.
    Lost(String),
    /// The backend was retired (e.g. its master was demoted) before answering.
    Retired,
    /// A failover of this master is under way: it takes no requests until the new master is
    /// known (a write it acknowledged now could be lost when it is demoted).
    Fenced,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Connect(e) => write!(f, "unreachable: {e}"),
            BackendError::Down(e) => write!(f, "down ({e}); keyhop retries shortly"),
            BackendError::Timeout(d) => write!(f, "did not answer within {} ms", d.as_millis()),
            BackendError::Lost(e) => write!(f, "connection lost ({e})"),
            BackendError::Retired => write!(f, "was retired by a topology change before answering"),
            BackendError::Fenced => write!(
                f,
                "is being replaced by a Sentinel failover; requests are refused until the new master is known, retry shortly"
            ),
        }
    }
}

/// The bytes of one or more request frames, written back to back.
#[derive(Debug)]
pub enum Payload {
    /// One contiguous slice.
    One(Bytes),
    /// Several slices.
    Many(Vec<Bytes>),
}

/// The replies to one [`Request`]: contiguous bytes holding `count` reply frames.
#[derive(Debug, Clone)]
pub struct Replies {
    /// All reply frames, back to back.
    pub data: Bytes,
    /// End offset of each frame (empty when there is exactly one).
    pub ends: Vec<usize>,
}

impl Replies {
    /// Byte range of replies `first..=last`.
    pub fn range(&self, first: usize, last: usize) -> std::ops::Range<usize> {
        if self.ends.is_empty() {
            return 0..self.data.len();
        }
        let start = if first == 0 { 0 } else { self.ends[first - 1] };
        start..self.ends[last]
    }

    /// Reply frame `i`.
    pub fn get(&self, i: usize) -> Bytes {
        self.data.slice(self.range(i, i))
    }
}

/// What a request's sender receives.
pub type ReplyResult = Result<Replies, BackendError>;

/// One batch of request frames for one backend connection, expecting `count` replies.
#[derive(Debug)]
pub struct Request {
    /// The frames.
    pub payload: Payload,
    /// How many replies they produce.
    pub count: usize,
    /// Where the replies go.
    pub reply: oneshot::Sender<ReplyResult>,
}

/// What a backend connection is set up for: the protocol its replies use and the database it
/// has selected. Clients are served by connections of their own mode, so replies are still
/// forwarded as slices and never re-encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Mode {
    /// RESP3 (`HELLO 3` at connect) instead of RESP2.
    pub resp3: bool,
    /// The database selected at connect.
    pub db: u32,
}

/// Called with a backend's address when it answers -READONLY or -MASTERDOWN (stale routing).
pub type StaleHook = Arc<dyn Fn(&str) + Send + Sync>;

/// A handle to one shared backend connection.
#[derive(Clone, Debug)]
pub struct BackendConn {
    tx: mpsc::Sender<Request>,
    state: Arc<BackendState>,
}

impl BackendConn {
    /// Queues a request (waiting when the queue is full). Gives the request back when the
    /// connection has been retired, so the caller can route it elsewhere: it was never sent.
    /// While the backend is fenced the request fails at once with [`BackendError::Fenced`].
    pub async fn send(&self, req: Request) -> Result<(), Request> {
        if self.state.is_fenced() {
            self.state.errors.fetch_add(1, Ordering::Relaxed);
            fail(req, &BackendError::Fenced);
            return Ok(());
        }
        self.tx.send(req).await.map_err(|e| e.0)
    }

    /// Queues a request without waiting: gives it back when the queue is full (send it with
    /// [`BackendConn::send`] then) or the connection was retired.
    #[inline]
    pub fn try_send(&self, req: Request) -> Result<(), mpsc::error::TrySendError<Request>> {
        if self.state.is_fenced() {
            self.state.errors.fetch_add(1, Ordering::Relaxed);
            fail(req, &BackendError::Fenced);
            return Ok(());
        }
        self.tx.try_send(req)
    }

    /// True when both handles lead to the same connection.
    pub fn same(&self, other: &BackendConn) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// Live state of a backend, for metrics and readiness.
#[derive(Debug, Default)]
pub struct BackendState {
    /// Connections currently established.
    pub connected: AtomicU64,
    /// True after a failed connect, until one succeeds.
    pub failing: AtomicBool,
    /// Requests (batches) sent.
    pub requests: AtomicU64,
    /// Requests that failed with a [`BackendError`].
    pub errors: AtomicU64,
    /// Time from writing a request batch to its last reply.
    pub latency: crate::metrics::Histogram,
    /// While fenced: the end of the fence, in nanoseconds since [`fence_clock`]'s origin (0: not
    /// fenced).
    fenced_until: AtomicU64,
    /// The server's `databases` setting, learned at connect (0: not known yet).
    pub databases: AtomicU64,
    /// The server's `redis_version`, learned at connect.
    pub version: Mutex<Option<Arc<str>>>,
}

/// Nanoseconds since a process-wide origin (never 0).
fn fence_clock() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

impl BackendState {
    /// True while a fence is up (see [`Backends::fence`]).
    #[inline]
    pub fn is_fenced(&self) -> bool {
        let until = self.fenced_until.load(Ordering::Relaxed);
        until != 0 && fence_clock() < until
    }
}

/// The connections to one backend server: the RESP2/database-0 ones every client starts with,
/// and those of other modes, created when a client first needs them.
pub struct Pool {
    /// `host:port`.
    pub addr: Arc<str>,
    conns: Vec<BackendConn>,
    /// Connections of other modes (RESP3, another database), by mode.
    others: Mutex<Vec<(Mode, Arc<[BackendConn]>)>>,
    cancel: Signal,
    /// Live state.
    pub state: Arc<BackendState>,
    settings: Arc<BackendSettings>,
    hook: Option<StaleHook>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Pool {
    fn new(addr: Arc<str>, settings: Arc<BackendSettings>, hook: Option<StaleHook>) -> Pool {
        let mut pool = Pool {
            addr,
            conns: Vec::new(),
            others: Mutex::new(Vec::new()),
            cancel: Signal::new(),
            state: Arc::new(BackendState::default()),
            settings,
            hook,
        };
        pool.conns = pool.spawn(Mode::default());
        pool
    }

    /// Starts the connection tasks of one mode (they connect on first use).
    fn spawn(&self, mode: Mode) -> Vec<BackendConn> {
        (0..self.settings.connections.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
                let conn = Connection {
                    addr: self.addr.clone(),
                    settings: (*self.settings).clone(),
                    mode,
                    cancel: self.cancel.clone(),
                    state: self.state.clone(),
                    hook: self.hook.clone(),
                };
                tokio::spawn(conn.supervise(rx));
                BackendConn { tx, state: self.state.clone() }
            })
            .collect()
    }

    /// The connection a client with this id uses (always the same one, so its requests to this
    /// server keep their order).
    #[inline]
    pub fn conn(&self, client_id: u64) -> &BackendConn {
        &self.conns[(client_id % self.conns.len() as u64) as usize]
    }

    /// The connection a client with this id uses in `mode`, created on first use. Must run in a
    /// runtime.
    pub fn conn_for(&self, client_id: u64, mode: Mode) -> BackendConn {
        if mode == Mode::default() {
            return self.conn(client_id).clone();
        }
        let conns = {
            let mut others = match self.others.lock() {
                Ok(o) => o,
                Err(poisoned) => poisoned.into_inner(),
            };
            match others.iter().find(|(m, _)| *m == mode) {
                Some((_, c)) => c.clone(),
                None => {
                    let c: Arc<[BackendConn]> = self.spawn(mode).into();
                    others.push((mode, c.clone()));
                    c
                }
            }
        };
        conns[(client_id % conns.len() as u64) as usize].clone()
    }

    /// The server's `redis_version`, once a connection has learned it.
    pub fn version(&self) -> Option<Arc<str>> {
        self.state.version.lock().ok().and_then(|v| v.clone())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Every backend pool, by address.
pub struct Backends {
    pools: DashMap<Arc<str>, Arc<Pool>>,
    // Swappable so a config reload reaches pools created afterwards.
    settings: arc_swap::ArcSwap<BackendSettings>,
    stale_hook: Mutex<Option<StaleHook>>,
}

impl Backends {
    /// An empty registry; pools are created on first use.
    pub fn new(settings: BackendSettings) -> Backends {
        Backends {
            pools: DashMap::new(),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            stale_hook: Mutex::new(None),
        }
    }

    /// Replaces the settings used by pools created from now on (existing pools keep theirs).
    pub fn set_settings(&self, settings: BackendSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// Sets the callback for -READONLY/-MASTERDOWN replies.
    pub fn set_stale_hook(&self, hook: StaleHook) {
        if let Ok(mut h) = self.stale_hook.lock() {
            *h = Some(hook);
        }
    }

    /// The `redis_version` of the server at `addr`, once a connection to it has learned it.
    pub fn version(&self, addr: &str) -> Option<Arc<str>> {
        self.pools.get(addr).and_then(|p| p.version())
    }

    /// The pool for `addr`, created (with its connection tasks) if needed. Must run in a runtime.
    pub fn pool(&self, addr: &str) -> Arc<Pool> {
        if let Some(p) = self.pools.get(addr) {
            return p.clone();
        }
        self.pools
            .entry(Arc::from(addr))
            .or_insert_with(|| {
                let hook = self.stale_hook.lock().ok().and_then(|h| h.clone());
                Arc::new(Pool::new(Arc::from(addr), self.settings.load_full(), hook))
            })
            .clone()
    }

    /// Closes the pools of every address for which `keep` is false: their in-flight and queued
    /// requests fail. Sessions resolve pools once per routing-table epoch, so publish a table
    /// with a new epoch too (as a failover or a reload does), or they keep the closed pools.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<Arc<str>> =
            self.pools.iter().filter(|p| !keep(p.key())).map(|p| p.key().clone()).collect();
        for addr in gone {
            if let Some((_, pool)) = self.pools.remove(&addr) {
                tracing::info!(backend = %addr, "closing connections to retired backend");
                pool.cancel.cancel();
            }
        }
    }

    /// Fences `addr` for `duration` (`None` lifts the fence): every request for it fails at once
    /// with [`BackendError::Fenced`] instead of being sent. Used while Sentinel fails a master
    /// over, so that it acknowledges no write that its demotion would then discard.
    pub fn fence(&self, addr: &str, duration: Option<Duration>) {
        let until = duration.map_or(0, |d| fence_clock() + d.as_nanos() as u64);
        match duration {
            Some(d) => {
                tracing::info!(backend = %addr, fence_ms = d.as_millis() as u64, "fencing a master being failed over")
            }
            None => tracing::info!(backend = %addr, "lifting the fence"),
        }
        if duration.is_some() {
            self.pool(addr).state.fenced_until.store(until, Ordering::Relaxed);
        } else if let Some(p) = self.pools.get(addr) {
            p.state.fenced_until.store(0, Ordering::Relaxed);
        }
    }

    /// True while `addr` is fenced (see [`Backends::fence`]). Looks the pool up without
    /// creating one: a fence always creates its server's pool.
    pub fn is_fenced(&self, addr: &str) -> bool {
        self.pools.get(addr).is_some_and(|p| p.state.is_fenced())
    }

    /// Snapshot of every pool (for metrics and status).
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.iter().map(|p| p.value().clone()).collect()
    }
}

/// Fails a request with `err`.
fn fail(req: Request, err: &BackendError) {
    let _ = req.reply.send(Err(err.clone()));
}

/// A request written to the socket and waiting for its replies.
struct Inflight {
    count: usize,
    ends: Vec<usize>,
    sent_at: Instant,
    reply: oneshot::Sender<ReplyResult>,
}

struct Connection {
    addr: Arc<str>,
    settings: BackendSettings,
    mode: Mode,
    cancel: Signal,
    state: Arc<BackendState>,
    hook: Option<StaleHook>,
}

impl Connection {
    /// Owns one connection slot for its whole life: connects on demand, serves, reconnects.
    /// After a failure it also reconnects on its own (at once after a lost connection, then with
    /// backoff), so that `failing` says whether the server is reachable even when no request is
    /// sent to it (sessions send reads to a failing replica's master instead).
    async fn supervise(self, mut rx: mpsc::Receiver<Request>) {
        let mut retry = Retry::new();
        loop {
            let first = tokio::select! {
                _ = self.cancel.cancelled() => break,
                r = rx.recv() => match r { Some(r) => Some(r), None => return },
                _ = sleep_until_opt(retry.probe_at()) => None,
            };
            // A request soon after a failed attempt: fail it fast (see retry.rs for when
            // demand may try again).
            let first = match first {
                Some(req) => match retry.refuse_request(Instant::now()) {
                    Some(why) => {
                        self.count_errors(1);
                        fail(req, &BackendError::Down(why.to_string()));
                        continue;
                    }
                    None => Some(req),
                },
                None => None,
            };
            let started = Instant::now();
            match self.connect().await {
                Err(ConnectError { why, refused }) => {
                    let stalled = why == setup::SETUP_TIMED_OUT;
                    let pause =
                        retry.failed(started, Instant::now(), why.clone(), refused, stalled);
                    if refused {
                        tracing::warn!(backend = %self.addr, error = %why, "backend refused the connection set-up");
                    } else if first.is_some() || !self.state.failing.load(Ordering::Relaxed) {
                        tracing::warn!(backend = %self.addr, error = %why, retry_ms = pause.as_millis() as u64, "backend connect failed");
                    } else {
                        tracing::debug!(backend = %self.addr, error = %why, retry_ms = pause.as_millis() as u64, "backend still unreachable");
                    }
                    if !refused {
                        self.state.failing.store(true, Ordering::Relaxed);
                    }
                    let err = BackendError::Connect(why);
                    if let Some(first) = first {
                        self.count_errors(1);
                        fail(first, &err);
                    }
                    // Whatever queued up while connecting fails now rather than after the timeout.
                    while let Ok(r) = rx.try_recv() {
                        self.count_errors(1);
                        fail(r, &err);
                    }
                }
                Ok(stream) => {
                    retry.connected();
                    self.state.failing.store(false, Ordering::Relaxed);
                    self.state.connected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(backend = %self.addr, "backend connected");
                    let err = self.serve(stream, first, &mut rx).await;
                    self.state.connected.fetch_sub(1, Ordering::Relaxed);
                    if err != BackendError::Retired {
                        tracing::warn!(backend = %self.addr, error = %err, "backend connection closed");
                        retry.lost(Instant::now(), err.to_string());
                    }
                }
            }
        }
        // Retired: nothing queued will ever be sent here.
        rx.close();
        while let Ok(r) = rx.try_recv() {
            fail(r, &BackendError::Retired);
        }
    }

    fn count_errors(&self, n: u64) {
        self.state.errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Serves one established connection until it fails or the backend is retired.
    ///
    /// One loop owns the socket, the queue of requests in flight and the timeout: queued
    /// requests are appended to the outgoing slices and written with one vectored write per
    /// batch, replies complete the oldest requests in order. No lock and no wake-up between a
    /// writer and a reader half.
    async fn serve(
        &self,
        mut stream: Stream,
        first: Option<Request>,
        rx: &mut mpsc::Receiver<Request>,
    ) -> BackendError {
        let (mut rd, mut wr) = stream.split();
        let timeout = self.settings.request_timeout;
        let mut inflight: VecDeque<Inflight> = VecDeque::new();
        let mut out = OutQueue::default();
        let mut incoming: Vec<Request> = Vec::with_capacity(64);
        incoming.extend(first);
        let mut replies = ReplyReader::default();
        // Armed at or before the oldest request's deadline, and re-armed only when it fires: a
        // timer per batch would cost a timer-wheel insert and removal for every round trip.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut timer_armed = false;
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);
        let err = loop {
            if !incoming.is_empty() {
                let now = Instant::now();
                self.state.requests.fetch_add(incoming.len() as u64, Ordering::Relaxed);
                for req in incoming.drain(..) {
                    match req.payload {
                        Payload::One(b) => out.push(b),
                        Payload::Many(v) => v.into_iter().for_each(|b| out.push(b)),
                    }
                    inflight.push_back(Inflight {
                        count: req.count,
                        ends: Vec::new(),
                        sent_at: now,
                        reply: req.reply,
                    });
                }
                if !timer_armed {
                    timer.as_mut().reset((now + timeout).into());
                    timer_armed = true;
                }
            }
            replies.make_room();
            tokio::select! {
                biased;
                _ = &mut cancelled => break BackendError::Retired,
                r = out.write_some(&mut wr), if !out.is_empty() => {
                    if let Err(e) = r {
                        break BackendError::Lost(e.to_string());
                    }
                }
                r = rd.read_buf(&mut replies.buf) => match r {
                    Ok(0) => break BackendError::Lost("closed by the server".into()),
                    Ok(_) => {
                        if let Err(e) = self.complete(&mut replies, &mut inflight) {
                            break e;
                        }
                    }
                    Err(e) => break BackendError::Lost(e.to_string()),
                },
                n = rx.recv_many(&mut incoming, MAX_BATCH), if out.len() < MAX_OUT_BYTES => {
                    if n == 0 {
                        break BackendError::Retired;
                    }
                    // Let the clients whose requests are already readable route them first (a
                    // yield runs after the runtime's next I/O poll), so they go out in this
                    // write: fewer, larger writes here, and fewer wake-ups of the server.
                    tokio::task::yield_now().await;
                    while incoming.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(r) => incoming.push(r),
                            Err(_) => break,
                        }
                    }
                }
                () = &mut timer, if timer_armed => match inflight.front() {
                    None => timer_armed = false,
                    Some(f) if f.sent_at.elapsed() >= timeout => break BackendError::Timeout(timeout),
                    Some(f) => timer.as_mut().reset((f.sent_at + timeout).into()),
                },
            }
        };
        // In flight, and taken from the queue but not yet in flight (the loop ended in between).
        self.count_errors((inflight.len() + incoming.len()) as u64);
        for f in inflight.drain(..) {
            let _ = f.reply.send(Err(err.clone()));
        }
        for r in incoming.drain(..) {
            fail(r, &err);
        }
        err
    }

    /// Completes in-flight requests, oldest first, with every whole reply in the read buffer;
    /// each gets its replies as one slice of the buffer (no copy).
    fn complete(
        &self,
        r: &mut ReplyReader,
        inflight: &mut VecDeque<Inflight>,
    ) -> Result<(), BackendError> {
        loop {
            let pos = r.pos;
            match r.scanner.scan(&r.buf[pos..]) {
                Ok(Some(len)) => {
                    if r.buf[pos] == b'>' {
                        // A RESP3 push is nobody's reply (shared connections subscribe to
                        // nothing and track no keys, so none is expected): drop it.
                        let rest = r.buf.len();
                        r.buf.copy_within(pos + len..rest, pos);
                        r.buf.truncate(rest - len);
                        continue;
                    }
                    if r.buf[pos] == b'-' {
                        self.check_stale(&r.buf[pos..pos + len], &mut r.last_stale_report);
                    }
                    r.pos += len;
                    let Some(front) = inflight.front_mut() else {
                        return Err(BackendError::Lost("reply without a request".into()));
                    };
                    if front.count > 1 {
                        front.ends.push(r.pos);
                    }
                    if front.count == 1 || front.ends.len() == front.count {
                        let Some(done) = inflight.pop_front() else { continue };
                        let data = r.buf.split_to(r.pos).freeze();
                        r.pos = 0;
                        self.state.latency.record(done.sent_at.elapsed(), 1);
                        let _ = done.reply.send(Ok(Replies { data, ends: done.ends }));
                    }
                }
                Ok(None) => return Ok(()),
                Err(_) => return Err(BackendError::Lost("malformed reply from backend".into())),
            }
        }
    }

    fn check_stale(&self, reply: &[u8], last: &mut Option<Instant>) {
        if !(reply.starts_with(b"-READONLY") || reply.starts_with(b"-MASTERDOWN")) {
            return;
        }
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *last = Some(Instant::now());
        if let Some(hook) = &self.hook {
            hook(&self.addr);
        }
    }
}
