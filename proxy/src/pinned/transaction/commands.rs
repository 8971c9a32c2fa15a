//! The transaction's commands one by one: MULTI, EXEC, DISCARD, WATCH, UNWATCH, the commands
//! queued between MULTI and EXEC, and the ordinary commands a client sends while it WATCHes.

use bytes::{Bytes, BytesMut};
use keyhop_router::command::{self, Local, Policy};
use keyhop_router::{Args, GroupId};

use super::classify::{Class, classify, watch_keys};
use super::{Slot, Txn};
use crate::pinned::{ClientIo, Command, Kind, fenced, pin};
use crate::resp;
use crate::session::{CROSSSLOT, Session};
use crate::stats::Stats;

const QUEUED: &[u8] = b"+QUEUED\r\n";
const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
/// Redis's answer to EXEC after a queue-time error.
const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

impl Txn {
    /// Handles one command of the client, and shows the transaction in CLIENT LIST.
    pub(super) async fn handle(
        &mut self,
        session: &mut Session,
        io: &mut ClientIo<'_, '_>,
        cmd: Command,
    ) {
        if session.shared.fleet.get().is_some() {
            self.note_slots(&cmd);
        }
        self.handle_one(session, io, cmd).await;
        session.client.entry.set_multi(self.in_multi.then_some(self.queued));
    }

    async fn handle_one(&mut self, session: &mut Session, io: &mut ClientIo<'_, '_>, cmd: Command) {
        let name = cmd.name();
        let own = |c: &Command| match command::lookup(c.arg(0)) {
            Some(spec) if spec.arity_ok(c.count()) => Ok(()),
            Some(spec) => Err(resp::error(&command::arity_error(spec))),
            None => Ok(()),
        };
        match (name.as_str(), self.in_multi) {
            ("reset" | "quit", _) => {
                // The fast path answers them once the transaction is dropped: the connection
                // closes rather than being reused, so the server discards everything.
                let mut b = BytesMut::with_capacity(cmd.frame.len() + io.buf.len());
                b.extend_from_slice(&cmd.frame);
                b.extend_from_slice(io.buf);
                *io.buf = b;
                io.scanner.reset();
                self.ending = true;
                self.dirty = true;
            }
            ("multi", false) => {
                self.count(session);
                if let Err(e) = own(&cmd) {
                    return self.reply(e);
                }
                self.in_multi = true;
                self.queued = 0;
                self.held.clear();
                self.reply(Bytes::from_static(resp::OK));
                if self.live() {
                    self.send(MULTI, [Slot::Swallow]).await;
                }
            }
            // Refused inside MULTI without aborting it: the server gives Redis's text when the
            // transaction is pinned, keyhop the same text when it is not yet.
            (inner @ ("multi" | "watch"), true) => {
                self.count(session);
                if let Err(e) = own(&cmd) {
                    self.aborted = true;
                    return self.reply(e);
                }
                if self.live() {
                    self.send(&cmd.frame, [Slot::Relay]).await;
                } else if inner == "multi" {
                    self.reply(resp::error("ERR MULTI calls can not be nested"));
                } else {
                    self.reply(resp::error("ERR WATCH inside MULTI is not allowed"));
                }
            }
            ("exec", _) => {
                self.count(session);
                if let Err(e) = own(&cmd) {
                    // Redis discards the transaction and the WATCHes on this one: closing the
                    // connection instead of reusing it does both.
                    self.in_multi = false;
                    self.ending = true;
                    self.dirty = true;
                    return self.reply(e);
                }
                if self.in_multi {
                    self.exec(session).await;
                } else {
                    self.reply(resp::error("ERR EXEC without MULTI"));
                }
            }
            ("discard", _) => {
                self.count(session);
                if let Err(e) = own(&cmd) {
                    self.aborted |= self.in_multi;
                    return self.reply(e);
                }
                if !self.in_multi {
                    return self.reply(resp::error("ERR DISCARD without MULTI"));
                }
                if self.live() {
                    self.send(&cmd.frame, [Slot::Relay]).await;
                } else {
                    self.reply(Bytes::from_static(resp::OK));
                }
                self.in_multi = false;
                self.ending = true;
            }
            ("watch", false) => {
                self.count(session);
                self.watch(session, cmd).await;
            }
            ("unwatch", false) => {
                self.count(session);
                if let Err(e) = own(&cmd) {
                    return self.reply(e);
                }
                if self.live() {
                    self.send(&cmd.frame, [Slot::Relay]).await;
                } else {
                    self.reply(Bytes::from_static(resp::OK));
                }
                self.ending = true;
            }
            (_, true) => {
                self.count(session);
                self.queue(session, cmd).await;
            }
            (_, false) => self.ordinary(session, io, cmd).await,
        }
    }

    /// Counts one command in the proxy's totals, as the fast path does.
    fn count(&self, session: &Session) {
        Stats::add(&session.shared.stats.commands, 1);
    }

    /// The pinned connection is there and has not failed.
    pub(super) fn live(&self) -> bool {
        self.conn.is_some() && self.lost.is_none()
    }

    /// A command between MULTI and EXEC.
    async fn queue(&mut self, session: &mut Session, cmd: Command) {
        self.queued += 1;
        let table = session.shared.table.load_full();
        match classify(session, &table, &cmd) {
            Class::Refuse(reply) => {
                self.aborted = true;
                self.reply(reply);
            }
            Class::Cross => self.cross(session),
            Class::Keyless if self.live() => self.send(&cmd.frame, [Slot::Relay]).await,
            Class::Keyless => {
                if self.group.is_none() && !self.aborted {
                    self.held.push(cmd.frame);
                }
                self.reply(Bytes::from_static(QUEUED));
            }
            Class::Group(g) => match self.group {
                Some(p) if p != g => self.cross(session),
                Some(_) if self.live() => self.send(&cmd.frame, [Slot::Relay]).await,
                // Aborted before pinning, or the connection was lost: EXEC will abort anyway.
                Some(_) => self.reply(Bytes::from_static(QUEUED)),
                None if self.aborted => {
                    self.group = Some(g);
                    self.reply(Bytes::from_static(QUEUED));
                }
                None => {
                    if let Err(reply) = self.pin(session, g).await {
                        self.aborted = true;
                        return self.reply(reply);
                    }
                    self.send_with_held(&cmd.frame, Slot::Relay).await;
                }
            },
        }
    }

    /// On a just pinned connection: MULTI and the keyless commands held so far (whose replies
    /// keyhop already gave), then `frame`, whose reply is owed as `slot`.
    async fn send_with_held(&mut self, frame: &[u8], slot: Slot) {
        let held = std::mem::take(&mut self.held);
        let mut frames = BytesMut::from(MULTI);
        let mut slots = vec![Slot::Swallow];
        for h in &held {
            frames.extend_from_slice(h);
            slots.push(Slot::Swallow);
        }
        frames.extend_from_slice(frame);
        slots.push(slot);
        self.send(&frames, slots).await;
    }

    /// A queued command whose keys are not all in the transaction's group.
    fn cross(&mut self, session: &Session) {
        Stats::add(&session.shared.stats.errors_crossslot, 1);
        self.aborted = true;
        self.reply(Bytes::from_static(CROSSSLOT));
    }

    /// Pins a dedicated connection to `g`'s master; `Err` is the reply for the command.
    async fn pin(&mut self, session: &Session, g: GroupId) -> Result<(), Bytes> {
        let table = session.shared.table.load_full();
        let conn = pin(session, &table, g, Kind::Transaction).await?;
        self.group = Some(g);
        self.group_name = table.groups.get(g as usize).map(|x| x.name.clone()).unwrap_or_default();
        self.addr = conn.addr.to_string();
        self.conn = Some(conn);
        Ok(())
    }

    /// EXEC after MULTI: sent only to the group's current, unfenced master over a connection
    /// that is still up; otherwise the transaction is not executed and the client is told so.
    async fn exec(&mut self, session: &Session) {
        self.in_multi = false;
        self.ending = true;
        if self.aborted {
            self.abort_server_side().await;
            return self.reply(Bytes::from_static(EXECABORT));
        }
        if let Some(why) = self.lost.clone() {
            return self.reply(resp::error(&format!(
                "EXECABORT keyhop: the connection to group {}'s master {} was lost before EXEC ({why}); the transaction was not executed (retry it)",
                self.group_name, self.addr
            )));
        }
        if self.conn.is_none() {
            if self.held.is_empty() {
                return self.reply(Bytes::from_static(b"*0\r\n"));
            }
            // Keyless commands only: any group's server gives the same answers.
            if let Err(reply) = self.pin(session, 0).await {
                return self.reply(reply);
            }
            return self.send_with_held(EXEC, Slot::Exec).await;
        }
        if let Some(why) = self.failed_over(session).await {
            // Closed unused: the server (if it is still up) discards the transaction.
            self.fail(super::Failure::Conn(why.clone()));
            self.dirty = true;
            return self.reply(resp::error(&format!(
                "EXECABORT keyhop: group {} {why}; the transaction was not executed (retry it)",
                self.group_name
            )));
        }
        self.send(EXEC, [Slot::Exec]).await;
    }

    /// Why EXEC must not be sent on the pinned connection, if it must not: the group's master
    /// changed, is fenced by a failover in progress, or the connection is down.
    async fn failed_over(&mut self, session: &Session) -> Option<String> {
        if let Some(why) = self.stale(session) {
            return Some(why);
        }
        let conn = self.conn.as_mut()?;
        // A closed socket shows as a readable EOF: look without waiting.
        match tokio::time::timeout(std::time::Duration::ZERO, conn.read_reply()).await {
            Err(_) => None,
            Ok(Ok(_)) => Some(format!("master {} sent an unexpected reply before EXEC", conn.addr)),
            Ok(Err(e)) => Some(format!("master {}: {e} before EXEC", conn.addr)),
        }
    }

    /// Why the pinned connection's server must get no write or EXEC any more, if it must not:
    /// it is no longer the group's master in the newest table, or a failover in progress
    /// fences it.
    fn stale(&self, session: &Session) -> Option<String> {
        let conn = self.conn.as_ref()?;
        let table = session.shared.table.load_full();
        let master = self.group.and_then(|g| table.groups.get(g as usize)).map(|g| &g.master);
        if master.is_none_or(|m| **m != *conn.addr) {
            let now = master.map(String::as_str).unwrap_or("?");
            return Some(format!(
                "failed over before EXEC (its master is now {now}, was {})",
                conn.addr
            ));
        }
        if fenced(session, &conn.addr) {
            return Some(format!(
                "is failing over (its master {} is fenced while Sentinel switches masters)",
                conn.addr
            ));
        }
        None
    }

    /// Drops the server's side of the transaction (a queued command was refused by keyhop):
    /// DISCARD, whose reply keyhop has already given.
    async fn abort_server_side(&mut self) {
        if self.live() {
            self.send(DISCARD, [Slot::Swallow]).await;
        }
    }

    /// WATCH outside MULTI: pins the keys' group.
    async fn watch(&mut self, session: &Session, cmd: Command) {
        let table = session.shared.table.load_full();
        let fence = session.shared.fence_at(std::time::Instant::now());
        let g = match watch_keys(&table, fence, &cmd) {
            Class::Refuse(reply) => return self.reply(reply),
            Class::Cross => {
                Stats::add(&session.shared.stats.errors_crossslot, 1);
                return self.reply(resp::error(
                    "CROSSSLOT keyhop: WATCH keys don't hash to the same group (use a {hash tag})",
                ));
            }
            Class::Keyless => 0,
            Class::Group(g) => g,
        };
        match self.group {
            Some(p) if p != g => {
                Stats::add(&session.shared.stats.errors_crossslot, 1);
                self.reply(resp::error(
                    "CROSSSLOT keyhop: WATCH keys must be in the same group as the keys already watched (use a {hash tag}, or UNWATCH first)",
                ))
            }
            Some(_) if self.live() => self.send(&cmd.frame, [Slot::Relay]).await,
            Some(_) => self.reply(resp::error(&format!(
                "ERR keyhop: connection to {} was lost; the keys WATCHed before are no longer watched (UNWATCH, then WATCH again)",
                self.addr
            ))),
            None => match self.pin(session, g).await {
                Ok(()) => self.send(&cmd.frame, [Slot::Relay]).await,
                Err(reply) => self.reply(reply),
            },
        }
    }

    /// An ordinary command while keys are WATCHed: over the pinned connection when its keys are
    /// in the pinned group (the client's own write to a watched key must count, as in Redis),
    /// otherwise through the shared path.
    async fn ordinary(&mut self, session: &mut Session, io: &mut ClientIo<'_, '_>, cmd: Command) {
        let table = session.shared.table.load_full();
        let spec = command::lookup(cmd.arg(0)).and_then(|t| t.resolve(&cmd).ok());
        if spec.is_some_and(|s| matches!(s.policy, Policy::Local(Local::Select | Local::Hello))) {
            self.count(session);
            let name = cmd.name().to_ascii_uppercase();
            return self.reply(resp::error(&format!(
                "ERR keyhop: {name} while keys are WATCHed is not supported through the proxy (UNWATCH first)"
            )));
        }
        // A blocking command would block the dedicated connection past its reply timeout: it
        // takes the shared path, which refuses it inside a pinned mode.
        let blocks = spec.is_some_and(|s| command::needs_pinning(s, &cmd));
        // Once the group fails over, the old master must get no write (it would be lost when
        // it becomes a replica): the shared path refuses it or sends it to the new master, and
        // the WATCH, which cannot hold any more, makes EXEC abort.
        if self.live()
            && !blocks
            && self.stale(session).is_none()
            && let Class::Group(g) = classify(session, &table, &cmd)
            && Some(g) == self.group
        {
            self.count(session);
            return self.send(&cmd.frame, [Slot::Relay]).await;
        }
        // Every earlier reply is already in `out` (the command waited for them).
        self.flush_ready(io.out);
        if session.execute(&cmd.frame, io.out).await {
            self.ending = true;
            self.close = true;
            self.dirty = true;
        }
    }
}
