//! MULTI/EXEC/DISCARD/WATCH/UNWATCH through keyhop. A transaction must run on one server, so the
//! session pins a dedicated connection to the master of the group that its first key (of WATCH
//! or of a queued command) belongs to, and replays there what keyhop answered so far (MULTI and
//! the keyless commands queued before that key). Queued commands are forwarded as they arrive,
//! pipelined, and the server's replies relayed in order, interleaved with the replies keyhop
//! makes itself (queue-time refusals). Before EXEC is sent, keyhop checks that the connection
//! still goes to the group's current, unfenced master: a transaction is never executed on a
//! master demoted by a failover, and the client is told it was not executed.

mod classify;
mod commands;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use keyhop_router::GroupId;
use tokio::time::Instant;

use super::{ClientIo, ConnError, Dedicated, Exit, read_client};
use crate::io::OutQueue;
use crate::session::Session;
use crate::stats::Stats;

/// Reply bytes waiting for the client above which no further command is taken (a client that
/// pipelines without reading).
const OUT_LIMIT: usize = 1024 * 1024;

/// One reply the client is owed, in order.
#[derive(Debug)]
enum Slot {
    /// Keyhop's own reply.
    Ready(Bytes),
    /// The server's next reply goes to the client.
    Relay,
    /// The server's next reply answers something keyhop already answered: dropped.
    Swallow,
    /// The server's reply to EXEC.
    Exec,
}

impl Slot {
    fn is_servers(&self) -> bool {
        !matches!(self, Slot::Ready(_))
    }
}

/// Why the dedicated connection stopped answering.
enum Failure {
    /// It broke (or sent something that is not RESP).
    Conn(String),
    /// No reply within `request_timeout`.
    Timeout,
}

/// One client's transaction state.
struct Txn {
    /// The dedicated connection, once pinned (and until it is lost).
    conn: Option<Dedicated>,
    /// The group fixed by the first key.
    group: Option<GroupId>,
    /// The pinned group's name and the connection's server, for messages.
    group_name: String,
    addr: String,
    /// Between MULTI and EXEC/DISCARD.
    in_multi: bool,
    /// Keyless commands queued before the first key, sent with it (or at EXEC).
    held: Vec<Bytes>,
    /// A queued command was refused: EXEC aborts.
    aborted: bool,
    /// The connection was lost after pinning (the server discarded its side): why.
    lost: Option<String>,
    /// Replies owed to the client, in request order.
    pending: VecDeque<Slot>,
    /// When the oldest awaited server reply is overdue.
    deadline: Instant,
    timeout: Duration,
    /// A command that waits until every server reply is in (EXEC, or any command outside MULTI).
    stash: Option<super::Command>,
    /// The first command has been handled (before it the state is trivially idle).
    started: bool,
    /// The mode ends once the pending replies are written.
    ending: bool,
    /// ... and the client connection closes.
    close: bool,
    /// For the byte counters.
    shared: std::sync::Arc<crate::Shared>,
    /// The connection holds state the server must drop: close it rather than reuse it.
    dirty: bool,
    /// Commands queued since MULTI (CLIENT LIST's `multi=`).
    queued: usize,
    /// Slots of the keys WATCHed or queued (kept only with a fleet gate): when one of them
    /// starts migrating before EXEC, the transaction is dropped (see [`Txn::follow_flux`]).
    slots: Vec<u16>,
}

/// Serves the client in this mode until it ends.
pub(super) async fn serve(session: &mut Session, mut io: ClientIo<'_, '_>) -> Exit {
    let timeout = session.shared.settings.load().backend.request_timeout;
    let mut t = Txn {
        conn: None,
        group: None,
        group_name: String::new(),
        addr: String::new(),
        in_multi: false,
        held: Vec::new(),
        aborted: false,
        lost: None,
        pending: VecDeque::new(),
        deadline: Instant::now() + timeout,
        timeout,
        stash: None,
        started: false,
        ending: false,
        close: false,
        dirty: false,
        queued: 0,
        slots: Vec::new(),
        shared: session.shared.clone(),
    };
    // Subscribed before any command is classified: a table from then on is seen.
    let mut topology = session.shared.topology.subscribe();
    let entry = session.client.entry.clone();
    let killed = crate::clients::ClientState::killed(&entry);
    tokio::pin!(killed);
    let drained = session.shared.drain.cancelled();
    tokio::pin!(drained);
    let mut draining = session.shared.drain.is_cancelled();
    loop {
        let starved = t.run_commands(session, &mut io).await;
        t.flush_ready(io.out);
        if t.pending.is_empty() && t.stash.is_none() {
            if t.ending {
                return t.finish();
            }
            if t.idle() {
                return Exit::Resume;
            }
            // The client is gone or the proxy drains: what was read is done; the server
            // discards the rest of the transaction when its connection closes.
            if starved && (io.eof || draining) {
                return Exit::Close;
            }
        }
        let awaiting = t.awaiting_server();
        let deadline = t.deadline;
        let can_read = starved && !io.eof && !draining;
        tokio::select! {
            biased;
            // CLIENT KILL: freed at once, as Redis does.
            _ = &mut killed => return Exit::Close,
            r = io.out.write_some(io.wr), if !io.out.is_empty() => {
                if r.is_err() {
                    return Exit::Close;
                }
            }
            r = read_server(&mut t.conn, deadline), if awaiting => t.on_server(r, io.out),
            _ = &mut drained, if !draining => draining = true,
            // Before the client's next command (EXEC): a slot that starts migrating under an
            // open transaction drops it, so that nothing routed with the older table can
            // still run once the drain barrier passes.
            _ = topology.changed(), if !awaiting => {
                t.follow_flux(session);
            }
            _ = read_client(io.rd, io.buf, &mut io.eof, &session.shared.stats), if can_read => {}
        }
    }
}

/// The next reply of the dedicated connection, by `deadline`; pending forever without one.
async fn read_server(conn: &mut Option<Dedicated>, deadline: Instant) -> Result<Bytes, Failure> {
    let Some(c) = conn.as_mut() else { return std::future::pending().await };
    match tokio::time::timeout_at(deadline, c.read_reply()).await {
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(e)) => Err(Failure::Conn(why(&e))),
        Err(_) => Err(Failure::Timeout),
    }
}

/// What went wrong with a connection, for a message that already says it was lost.
fn why(e: &ConnError) -> String {
    match e {
        ConnError::Closed(why) => why.clone(),
        ConnError::Malformed => "malformed reply".into(),
    }
}

impl Txn {
    /// Handles every command that can be handled now; true when the buffer holds no complete
    /// command (more must be read).
    async fn run_commands(&mut self, session: &mut Session, io: &mut ClientIo<'_, '_>) -> bool {
        loop {
            if self.ending || (self.started && self.idle()) {
                return false;
            }
            if let Some(cmd) = self.stash.take() {
                if self.owes_server() {
                    self.stash = Some(cmd);
                    return false;
                }
                self.flush_ready(io.out);
                self.handle(session, io, cmd).await;
                continue;
            }
            if io.out.len() >= OUT_LIMIT {
                return false;
            }
            match io.next_command() {
                None => return true,
                Some(Err(reply)) => {
                    Stats::add(&session.shared.stats.errors_protocol, 1);
                    self.pending.push_back(Slot::Ready(reply));
                    self.ending = true;
                    self.close = true;
                    self.dirty = true;
                    return false;
                }
                Some(Ok(cmd)) => {
                    self.started = true;
                    // Outside MULTI each command waits for the one before (some go through
                    // the shared path, whose reply must not overtake the server's); EXEC
                    // waits so that the failover check is made as late as possible.
                    let quiet = !self.in_multi || cmd.arg_is(0, b"exec");
                    if quiet && self.owes_server() {
                        self.stash = Some(cmd);
                    } else {
                        self.flush_ready(io.out);
                        self.handle(session, io, cmd).await;
                    }
                }
            }
        }
    }

    /// Nothing pinned, no MULTI: the mode has nothing left to do.
    fn idle(&self) -> bool {
        self.group.is_none() && !self.in_multi && !self.ending
    }

    /// A server reply is awaited (the oldest owed reply is the server's).
    fn awaiting_server(&self) -> bool {
        self.pending.front().is_some_and(Slot::is_servers) && self.conn.is_some()
    }

    /// Some reply owed to the client is still to come from the server.
    fn owes_server(&self) -> bool {
        self.conn.is_some() && self.pending.iter().any(Slot::is_servers)
    }

    /// Moves keyhop's own replies at the head of the queue to the client's output.
    fn flush_ready(&mut self, out: &mut OutQueue) {
        while let Some(Slot::Ready(_)) = self.pending.front() {
            if let Some(Slot::Ready(b)) = self.pending.pop_front() {
                self.emit(out, b);
            }
        }
    }

    /// Queues reply bytes for the client.
    fn emit(&self, out: &mut OutQueue, b: Bytes) {
        Stats::add(&self.shared.stats.bytes_out, b.len() as u64);
        out.push(b);
    }

    /// Keyhop's own reply, after every reply owed before it.
    fn reply(&mut self, b: Bytes) {
        self.pending.push_back(Slot::Ready(b));
    }

    /// Sends `frames` on the pinned connection, owing the client `slots` for their replies.
    async fn send(&mut self, frames: &[u8], slots: impl IntoIterator<Item = Slot>) {
        if !self.awaiting_server() {
            self.deadline = Instant::now() + self.timeout;
        }
        self.pending.extend(slots);
        let Some(conn) = self.conn.as_mut() else {
            self.fail(Failure::Conn("not connected".into()));
            return;
        };
        if let Err(e) = conn.send(frames).await {
            self.fail(Failure::Conn(why(&e)));
        }
    }

    /// A reply (or failure) of the pinned connection.
    fn on_server(&mut self, r: Result<Bytes, Failure>, out: &mut OutQueue) {
        let frame = match r {
            Ok(f) => f,
            Err(e) => return self.fail(e),
        };
        // A RESP3 push (client tracking) belongs to no request: passed on as it comes.
        if frame.first() == Some(&b'>') {
            self.emit(out, frame);
            return;
        }
        self.deadline = Instant::now() + self.timeout;
        match self.pending.pop_front() {
            Some(Slot::Relay | Slot::Exec) => self.emit(out, frame),
            Some(Slot::Swallow) => {}
            // Never: the front is a server slot while a reply is awaited.
            Some(Slot::Ready(b)) => self.emit(out, b),
            None => {}
        }
        self.flush_ready(out);
    }

    /// The pinned connection is gone (closed without reuse: the server discards the
    /// transaction and the WATCHes); every reply still owed by it becomes an error.
    fn fail(&mut self, e: Failure) {
        self.conn = None;
        let ms = self.timeout.as_millis();
        let why = match &e {
            Failure::Conn(why) => why.clone(),
            Failure::Timeout => format!("no reply within {ms} ms"),
        };
        let addr = &self.addr;
        let lost = if self.in_multi {
            format!(
                "ERR keyhop: connection to {addr} lost ({why}); the transaction will not be executed"
            )
        } else {
            format!(
                "ERR keyhop: connection to {addr} lost ({why}); keys WATCHed there are no longer watched"
            )
        };
        let exec = match &e {
            Failure::Conn(_) => format!(
                "ERR keyhop: connection to {addr} lost during EXEC ({why}); the transaction may or may not have been executed"
            ),
            Failure::Timeout => format!(
                "ERR keyhop: no reply to EXEC from {addr} within {ms} ms; the transaction may or may not have been executed"
            ),
        };
        let pending = std::mem::take(&mut self.pending);
        for slot in pending {
            match slot {
                Slot::Ready(b) => self.pending.push_back(Slot::Ready(b)),
                Slot::Relay => self.pending.push_back(Slot::Ready(crate::resp::error(&lost))),
                Slot::Exec => self.pending.push_back(Slot::Ready(crate::resp::error(&exec))),
                Slot::Swallow => {}
            }
        }
        self.lost = Some(why);
    }

    /// Notes the slots of `cmd`'s keys (a fleet gate is set: slots may start migrating).
    fn note_slots(&mut self, cmd: &super::Command) {
        use keyhop_router::Args;
        let Some(spec) =
            keyhop_router::command::lookup(cmd.arg(0)).and_then(|top| top.resolve(cmd).ok())
        else {
            return;
        };
        let mut keys = Vec::new();
        if spec.keys(cmd, &mut keys).is_err() {
            return;
        }
        for k in keys {
            let slot = keyhop_router::key_slot(cmd.arg(k));
            if !self.slots.contains(&slot) {
                self.slots.push(slot);
            }
        }
    }

    /// A new table: when a slot of the transaction is now in flux, its connection is closed
    /// (the server discards the queued commands and WATCHes) and EXEC answers EXECABORT.
    fn follow_flux(&mut self, session: &Session) {
        let table = session.shared.table.load_full();
        let in_flux = self
            .conn
            .as_ref()
            .and(self.slots.iter().copied().find(|&s| table.flux_of(s).is_some()));
        let Some(slot) = in_flux else {
            // None of its slots is in flux: what it queued runs where this table says too (an
            // owner changes only at a flip, and a slot in flux refuses transactions), so an
            // idle MULTI does not hold the drain barrier, and with it a migration, forever.
            if session.shared.fleet.get().is_some() {
                session.client.entry.set_routed_epoch(table.epoch);
            }
            return;
        };
        self.dirty = true;
        self.fail(Failure::Conn(format!("slot {slot} started migrating")));
        // Nothing of it can run any more: the drain barrier need not wait for it.
        session.client.entry.set_routed_epoch(table.epoch);
    }

    /// Ends the mode: a connection left clean (EXEC, DISCARD or UNWATCH answered) is reused.
    fn finish(&mut self) -> Exit {
        if let Some(mut c) = self.conn.take()
            && !self.dirty
        {
            c.clean();
        }
        if self.close { Exit::Close } else { Exit::Resume }
    }
}

impl super::Command {
    /// True when argument `i` is `word` (ASCII case-insensitive).
    fn arg_is(&self, i: usize, word: &[u8]) -> bool {
        self.ranges.get(i).is_some_and(|r| self.frame[r.clone()].eq_ignore_ascii_case(word))
    }
}
