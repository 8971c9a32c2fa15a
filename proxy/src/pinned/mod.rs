//! Pinned modes: the commands that need a backend connection of their own (a transaction,
//! subscriptions, a blocking command). The session's shared fast path notices one of them,
//! waits until every earlier request has been answered, and hands the client over to the
//! mode's own loop here; when the mode ends the client returns to the fast path. The fast path
//! pays one branch for all of this.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use keyhop_router::Args;
use keyhop_router::command::CommandSpec;
use tokio::io::AsyncReadExt;

use crate::io::OutQueue;
use crate::resp::{RequestScanner, Scanned};
use crate::session::Session;
use crate::stream::{ReadHalf, WriteHalf};

mod blocking;
pub(crate) mod conn;
mod pubsub;
mod transaction;

pub(crate) use conn::{ConnError, Dedicated, Pinned};

/// A read buffer's growth step while a mode reads from its client.
const READ_CHUNK: usize = 4 * 1024;

/// What a pinned connection is used for (the `kind` label of `keyhop_pinned_connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    // Indexes `Pinned::sessions`.
    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH.
    Transaction,
    /// (P|S)SUBSCRIBE and their UNSUBSCRIBEs.
    PubSub,
    /// BLPOP and friends, XREAD(GROUP) BLOCK, WAIT.
    Blocking,
}

impl Kind {
    /// The mode a pinning command enters.
    pub(crate) fn of(spec: &CommandSpec) -> Kind {
        match spec.name {
            "multi" | "exec" | "discard" | "watch" | "unwatch" => Kind::Transaction,
            "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe"
            | "sunsubscribe" => Kind::PubSub,
            _ => Kind::Blocking,
        }
    }

    /// The metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Transaction => "transaction",
            Kind::PubSub => "pubsub",
            Kind::Blocking => "blocking",
        }
    }
}

/// How a mode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Back to the fast path with whatever is left in the read buffer.
    Resume,
    /// Close the client connection once `out` is written.
    Close,
}

/// One client command taken out of the read buffer.
pub(crate) struct Command {
    /// The whole frame (multibulk; an inline command is re-encoded).
    pub frame: Bytes,
    /// Argument ranges within `frame`.
    pub ranges: Vec<Range<usize>>,
}

impl Args for Command {
    #[inline]
    fn count(&self) -> usize {
        self.ranges.len()
    }
    #[inline]
    fn arg(&self, i: usize) -> &[u8] {
        &self.frame[self.ranges[i].clone()]
    }
}

impl Command {
    /// The command name, lowercased (for matching the mode's own commands).
    pub(crate) fn name(&self) -> String {
        String::from_utf8_lossy(self.arg(0)).to_ascii_lowercase()
    }
}

/// The client side of a session as a mode sees it: the socket halves, the read buffer (which
/// starts with the command that entered the mode) and the reply bytes not yet written.
pub(crate) struct ClientIo<'a, 'b> {
    pub rd: &'a mut ReadHalf<'b>,
    pub wr: &'a mut WriteHalf<'b>,
    pub buf: &'a mut BytesMut,
    pub scanner: &'a mut RequestScanner,
    pub out: &'a mut OutQueue,
    /// True once the client has closed its side (or its socket failed): nothing more arrives.
    pub eof: bool,
}

impl ClientIo<'_, '_> {
    /// The next complete command already read, if any. `Err(reply)`: a protocol error, to be
    /// written before closing the client.
    pub(crate) fn next_command(&mut self) -> Option<Result<Command, Bytes>> {
        loop {
            match self.scanner.scan(self.buf) {
                Ok(None) => return None,
                Ok(Some(Scanned::Empty { len })) => bytes::Buf::advance(self.buf, len),
                Ok(Some(Scanned::Command { len })) => {
                    let ranges = std::mem::take(&mut self.scanner.args);
                    let frame = self.buf.split_to(len).freeze();
                    return Some(Ok(Command { frame, ranges }));
                }
                Ok(Some(Scanned::Inline { len, frame })) => {
                    bytes::Buf::advance(self.buf, len);
                    let mut inline = RequestScanner::default();
                    if let Ok(Some(Scanned::Command { .. })) = inline.scan(&frame) {
                        return Some(Ok(Command { frame, ranges: inline.args }));
                    }
                }
                Err(e) => {
                    self.buf.clear();
                    return Some(Err(e.reply()));
                }
            }
        }
    }
}

/// Reads more of a client's requests into `buf` (cancel-safe, so it can be a `select!` branch
/// beside a write to the same client: it takes the socket half, buffer and flag, not the whole
/// [`ClientIo`]). Returns the bytes read; 0 at end of input, which sets `eof`; pending forever
/// once `eof` is set.
pub(crate) async fn read_client(
    rd: &mut ReadHalf<'_>,
    buf: &mut BytesMut,
    eof: &mut bool,
    stats: &crate::stats::Stats,
) -> usize {
    if *eof {
        return std::future::pending().await;
    }
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    match rd.read_buf(buf).await.unwrap_or(0) {
        0 => {
            *eof = true;
            0
        }
        n => {
            crate::stats::Stats::add(&stats.bytes_in, n as u64);
            n
        }
    }
}

/// Runs the mode `kind` until it ends. The read buffer starts with the command that entered it.
pub(crate) async fn serve(session: &mut Session, kind: Kind, io: ClientIo<'_, '_>) -> Exit {
    let shared = session.shared.clone();
    let _in_mode = shared.pinned.enter(kind);
    // An open transaction counts as in flight for the drain barrier: its commands were
    // classified with the table of its start.
    let tracked = kind == Kind::Transaction && shared.fleet.get().is_some();
    if tracked {
        session.client.entry.set_routed_epoch(shared.table.load().epoch);
    }
    let exit = match kind {
        Kind::Transaction => transaction::serve(session, io).await,
        Kind::PubSub => pubsub::serve(session, io).await,
        Kind::Blocking => blocking::serve(session, io).await,
    };
    // Back on the fast path: not in MULTI, subscribed or blocked any more (CLIENT LIST).
    let entry = &session.client.entry;
    entry.set_multi(None);
    entry.set_subs(0, 0, 0);
    entry.set_blocked(false);
    if tracked {
        entry.set_routed_epoch(crate::fleet::NONE);
    }
    exit
}

/// A dedicated connection to `group`'s master in `table`, set up for the session's protocol and
/// database, for `kind`. `Err` is the reply for the client: the group is being failed over
/// (fenced), all `max_pinned_connections` are in use, or the server is unreachable.
pub(crate) async fn pin(
    session: &Session,
    table: &keyhop_router::RoutingTable,
    group: keyhop_router::GroupId,
    kind: Kind,
) -> Result<Dedicated, Bytes> {
    let Some(g) = table.groups.get(group as usize) else {
        return Err(crate::resp::error("ERR keyhop: internal routing error (group out of range)"));
    };
    open(&session.shared, &g.master, &g.name, session.mode(), kind).await
}

/// A dedicated connection to the server at `addr` (`group`'s master) in `mode`, for `kind`:
/// refused while the server is fenced by a failover, or when `max_pinned_connections` are in
/// use. For modes that must open one without borrowing the session (a subscriber re-subscribing
/// in the background); others use [`pin`].
pub(crate) async fn open(
    shared: &crate::Shared,
    addr: &str,
    group: &str,
    mode: crate::backend::Mode,
    kind: Kind,
) -> Result<Dedicated, Bytes> {
    if shared.backends.is_fenced(addr) {
        return Err(crate::resp::error(&format!(
            "ERR keyhop: backend {addr} (group {group}) {}",
            crate::backend::BackendError::Fenced
        )));
    }
    let settings = shared.settings.load();
    shared
        .pinned
        .acquire(addr, mode, &settings.backend, settings.max_pinned_connections, group, kind)
        .await
        .map_err(|e| e.reply())
}

/// True while `addr` is fenced by a failover in progress (it must get no write, and no EXEC).
pub(crate) fn fenced(session: &Session, addr: &str) -> bool {
    session.shared.backends.is_fenced(addr)
}
