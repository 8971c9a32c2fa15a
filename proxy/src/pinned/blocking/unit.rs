//! One blocking command on one group's master: sent on a dedicated connection, followed through
//! a failover (re-issued on the new master with its remaining timeout when the old one provably
//! did not serve it), and released when its client goes away. WAIT is one of these per group.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keyhop_router::command;
use keyhop_router::{Args, GroupId, RoutingTable};

use super::timeout::{Timeout, timed_out};
use super::unblock::{UNBLOCK_TIMEOUT, unblock};
use crate::pinned::{Command, ConnError, Dedicated, Kind, fenced, pin};
use crate::session::{Session, flux};

/// How long the old master has, after a failover, to answer the unblocked command (with
/// `-UNBLOCKED`, or with what it served) before the client gets an error instead.
const CONFIRM_WITHIN: Duration = Duration::from_secs(3);

/// One blocking command in flight on one group.
pub(super) struct Unit {
    /// The group whose master serves it.
    pub group: GroupId,
    /// The command's lowercased name.
    pub name: &'static str,
    /// The command as the client sent it.
    cmd: Command,
    timeout: Timeout,
    /// A frame sent before the command whose reply is dropped (WAIT's propagated no-op).
    prefix: Option<Bytes>,
    /// Replies still to drop before the command's own.
    skip: usize,
    /// The connection it is blocked on; `None` before it is sent and while it waits for a
    /// master to re-issue it on.
    conn: Option<Dedicated>,
    /// True once keyhop asked the server to unblock it with an error: `-UNBLOCKED` then means
    /// the server did not serve it.
    asked: bool,
    /// When the old master must have answered after a failover.
    pub confirm_by: Option<Instant>,
    /// True once sent again after a failover (a demoted server's refusal then means "retry").
    reissued: bool,
    started: Instant,
    /// The reply for the client, once there is one.
    pub reply: Option<Bytes>,
}

impl Unit {
    /// A command for `group`, not sent yet.
    pub(super) fn new(
        group: GroupId,
        name: &'static str,
        cmd: Command,
        prefix: Option<Bytes>,
    ) -> Unit {
        let timeout = Timeout::of(name, &cmd);
        Unit {
            group,
            name,
            cmd,
            timeout,
            prefix,
            skip: 0,
            conn: None,
            asked: false,
            confirm_by: None,
            reissued: false,
            started: Instant::now(),
            reply: None,
        }
    }

    /// Sends the command on a dedicated connection to the group's master. `Err` is the reply
    /// for the client (fenced, no connection).
    pub(super) async fn start(&mut self, session: &Session) -> Result<(), Bytes> {
        self.started = Instant::now();
        let frame = self.cmd.frame.clone();
        self.send(session, frame).await
    }

    async fn send(&mut self, session: &Session, frame: Bytes) -> Result<(), Bytes> {
        let table = session.shared.table.load_full();
        let mut conn = pin(session, &table, self.group, Kind::Blocking).await?;
        let addr = conn.addr.clone();
        let lost = |e: ConnError| crate::resp::error(&format!("ERR keyhop: backend {addr} {e}"));
        // Asked before blocking: an unblock must not wait for it.
        conn.fetch_id().await.map_err(lost)?;
        let mut bytes = Vec::with_capacity(frame.len() + 64);
        if let Some(p) = &self.prefix {
            bytes.extend_from_slice(p);
        }
        bytes.extend_from_slice(&frame);
        conn.send(&bytes).await.map_err(lost)?;
        self.skip = usize::from(self.prefix.is_some());
        self.asked = false;
        self.confirm_by = None;
        self.conn = Some(conn);
        Ok(())
    }

    /// True while it waits for a master to be re-issued on.
    pub(super) fn lost(&self) -> bool {
        self.reply.is_none() && self.conn.is_none()
    }

    /// The next reply of its connection (cancel-safe); pending forever without one.
    pub(super) async fn read(&mut self) -> Result<Bytes, ConnError> {
        match self.conn.as_mut() {
            Some(c) => c.read_reply().await,
            None => std::future::pending().await,
        }
    }

    /// The server address it is blocked on.
    pub(super) fn addr(&self) -> Option<&str> {
        self.conn.as_ref().map(|c| &*c.addr)
    }

    /// Takes one reply (or the loss) of its connection.
    pub(super) fn on_reply(&mut self, r: Result<Bytes, ConnError>) {
        let frame = match r {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(group = self.group, error = %e, "blocked command's connection lost; re-issuing");
                self.conn = None;
                return;
            }
        };
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if self.not_served(&frame) {
            self.conn = None;
            return;
        }
        if let Some(mut c) = self.conn.take() {
            c.clean();
        }
        self.reply = Some(frame);
    }

    /// A reply that says the server did not serve the command and it is to be re-issued.
    fn not_served(&self, frame: &[u8]) -> bool {
        if frame.starts_with(b"-UNBLOCKED") {
            // keyhop's own unblock, or the server demoted to a replica (Redis unblocks every
            // blocked client then). Someone else's CLIENT UNBLOCK ERROR reaches the client.
            return self.asked || contains(frame, b"instance state changed");
        }
        // Re-issued on a server that turned out not to be a master (yet, or any more).
        self.reissued
            && (frame.starts_with(b"-READONLY")
                || frame.starts_with(b"-MASTERDOWN")
                || frame.starts_with(b"-LOADING"))
    }

    /// Re-issues a lost command on the group's master in the current table with its remaining
    /// timeout (or answers the timeout itself when none is left). Stays lost while no master
    /// takes it.
    pub(super) async fn reissue(&mut self, session: &Session) {
        let now = Instant::now();
        let Some(frame) = self.timeout.remaining_frame(&self.cmd, self.started, now) else {
            self.reply = Some(timed_out(self.name, session.proto));
            return;
        };
        let table = session.shared.table.load_full();
        if let Some(reply) = self.in_flux(session, &table) {
            // Its keys started moving to another group: the client retries (it then blocks on
            // the group they end up in).
            self.reply = Some(reply);
            return;
        }
        let Some(g) = table.groups.get(self.group as usize) else { return };
        if fenced(session, &g.master) {
            return;
        }
        if self.send(session, frame).await.is_ok() {
            tracing::info!(group = %g.name, master = %g.master, command = self.name, "blocked command re-issued after losing its master");
            self.reissued = true;
        }
    }

    /// The refusal when a key of the command is on a slot in flux in `table` (or the lease
    /// fence holds keyed commands); `None` otherwise, and always for WAIT.
    pub(super) fn in_flux(&self, session: &Session, table: &RoutingTable) -> Option<Bytes> {
        let fence = session.shared.fence_at(Instant::now());
        if table.flux.is_none() && fence < 2 {
            return None;
        }
        let spec = command::lookup(self.cmd.arg(0)).and_then(|top| top.resolve(&self.cmd).ok())?;
        let mut keys = Vec::new();
        spec.keys(&self.cmd, &mut keys).ok()?;
        flux::refusal(table, fence, &self.cmd, &keys, "the command")
    }

    /// When a lost command's own timeout ends.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.timeout.deadline(self.started)
    }

    /// The group's master changed to something else than the server it is blocked on: asks the
    /// old one to unblock it with an error, which tells whether it served it.
    pub(super) async fn failover(&mut self, session: &Session) {
        if self.asked {
            return;
        }
        let Some(c) = self.conn.as_ref() else { return };
        let addr = c.addr.clone();
        self.asked = true;
        self.confirm_by = Some(Instant::now() + CONFIRM_WITHIN);
        if let Some(id) = c.backend_id {
            let ok = unblock(&session.shared, &addr, id, true).await;
            tracing::info!(old_master = %addr, unblocked = ok, command = self.name, "group failed over under a blocked command");
        }
    }

    /// The old master never answered: the command may have been served there, so it is not
    /// re-issued; the client is told.
    pub(super) fn unconfirmed(&mut self) {
        let addr = self.addr().unwrap_or("?").to_string();
        self.conn = None;
        self.confirm_by = None;
        self.reply = Some(crate::resp::error(&format!(
            "ERR keyhop: the group's master {addr} was replaced by a failover while {} was blocked and did not confirm whether it served it; not retried (check the data and retry)",
            self.name.to_ascii_uppercase()
        )));
    }

    /// Frees the server side of the blocked command (its client is gone or the proxy stops) and
    /// returns the connection for reuse when that works. `error`: unblock with an error. The
    /// command's reply when the server sent one.
    pub(super) async fn release(&mut self, session: &Session, error: bool) -> Option<Bytes> {
        let mut conn = self.conn.take()?;
        let id = conn.backend_id?;
        if !unblock(&session.shared, &conn.addr, id, error).await {
            return None;
        }
        let mut last = None;
        while self.skip > 0 || last.is_none() {
            match tokio::time::timeout(UNBLOCK_TIMEOUT, conn.read_reply()).await {
                Ok(Ok(frame)) if self.skip > 0 => {
                    let _ = frame;
                    self.skip -= 1;
                }
                Ok(Ok(frame)) => last = Some(frame),
                _ => return None,
            }
        }
        conn.clean();
        last
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
