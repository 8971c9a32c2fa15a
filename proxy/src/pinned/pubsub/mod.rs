//! Pub/sub mode: a subscriber's channels live on the groups owning their slots (where PUBLISH
//! routes), its patterns on every group, each group reached over one dedicated connection of
//! the subscriber's own. The servers' messages are forwarded to the client untouched, merged
//! into one stream; their confirmations are swallowed and keyhop writes its own with the
//! client's totals, in request order. A failover (or a broken connection) re-subscribes the
//! group's share on its newest master without the client noticing.

mod links;
mod servers;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use keyhop_router::command::{self, CommandSpec};
use keyhop_router::{Args, GroupId};
use tokio::sync::watch;

use super::{ClientIo, Command, Exit, Kind, read_client};
use crate::Shared;
use crate::backend::Mode;
use crate::io::OutQueue;
use crate::resp::{self, Proto, parse_int};
use crate::session::Session;
use crate::stats::Stats;
use links::{Link, Links};
use state::{Family, Subs, confirm};

/// Serves the client in this mode until it ends.
pub(super) async fn serve(session: &mut Session, mut io: ClientIo<'_, '_>) -> Exit {
    let mut sub = Subscriber::new(session);
    let exit = sub.run(session, &mut io).await;
    // Connections are reused only when every subscription was undone and confirmed.
    sub.links.close(sub.clean);
    exit
}

/// A command's confirmations, written once every server has confirmed its share.
struct Waiting {
    reply: Bytes,
    deadline: Instant,
    /// Messages that arrived after their server confirmed but before the others did: they come
    /// after the confirmations, as on one server.
    held: Vec<Bytes>,
    held_bytes: usize,
    /// The groups the command was sent to.
    touched: Vec<GroupId>,
    /// The names a (P|S)SUBSCRIBE added, undone if a server refuses the command.
    added: Option<(Family, Vec<Bytes>)>,
    /// A server's refusal (an ACL rule, a server without SSUBSCRIBE ...).
    error: Option<Bytes>,
}

struct Subscriber {
    shared: Arc<Shared>,
    peer: SocketAddr,
    proto: Proto,
    mode: Mode,
    subs: Subs,
    links: Links,
    waiting: Option<Waiting>,
    /// Since when the unwritten output has been over the soft limit.
    soft_since: Option<Instant>,
    /// The mode ended by unsubscribing everything: the connections hold nothing.
    clean: bool,
}

impl Subscriber {
    fn new(session: &Session) -> Subscriber {
        Subscriber {
            shared: session.shared.clone(),
            peer: session.peer(),
            proto: session.proto,
            mode: session.mode(),
            subs: Subs::default(),
            links: Links::default(),
            waiting: None,
            soft_since: None,
            clean: false,
        }
    }

    async fn run(&mut self, session: &mut Session, io: &mut ClientIo<'_, '_>) -> Exit {
        let shared = self.shared.clone();
        // One waiter on the table's announcements for the mode's life, re-armed only when it
        // fires: a fresh `changed()` per turn of the loop would take the watch's shared lock
        // twice per message batch, in every subscriber at once.
        let mut topology = next_table(shared.topology.subscribe());
        let drained = shared.drain.cancelled();
        tokio::pin!(drained);
        let entry = session.client.entry.clone();
        let killed = crate::clients::ClientState::killed(&entry);
        tokio::pin!(killed);
        let mut started = false;
        loop {
            self.release(io);
            // One command at a time, each after the previous one's confirmations.
            while self.waiting.is_none() {
                if started && self.subs.total() == 0 {
                    self.clean = true;
                    return Exit::Resume;
                }
                let Some(next) = io.next_command() else { break };
                started = true;
                let cmd = match next {
                    Ok(cmd) => cmd,
                    Err(reply) => {
                        Stats::add(&shared.stats.errors_protocol, 1);
                        io.out.push(reply);
                        return Exit::Close;
                    }
                };
                let exit = self.command(session, io, cmd).await;
                let subs = &self.subs;
                session.client.entry.set_subs(
                    subs.channels.len(),
                    subs.patterns.len(),
                    subs.shards.len(),
                );
                if let Some(exit) = exit {
                    return exit;
                }
                self.release(io);
            }
            if !started {
                return Exit::Resume;
            }
            if self.over_limit(io) {
                return Exit::Close;
            }
            if io.eof && self.waiting.is_none() {
                // The client is gone: nothing it could still read.
                *io.out = OutQueue::default();
                return Exit::Close;
            }
            let retry = self.links.next_retry();
            let deadline = self.waiting.as_ref().map(|w| w.deadline);
            let reading = self.waiting.is_none();
            tokio::select! {
                biased;
                // Killed: nothing more is written, as Redis frees the client at once.
                _ = &mut killed => {
                    *io.out = OutQueue::default();
                    return Exit::Close;
                }
                _ = &mut drained => return Exit::Close,
                (rx, ok) = &mut topology => {
                    topology = if ok {
                        self.follow();
                        next_table(rx)
                    } else {
                        Box::pin(std::future::pending())
                    };
                }
                r = io.out.write_some(&mut *io.wr), if !io.out.is_empty() => {
                    if r.is_err() {
                        *io.out = OutQueue::default();
                        return Exit::Close;
                    }
                }
                _ = read_client(&mut *io.rd, &mut *io.buf, &mut io.eof, &shared.stats), if reading => {}
                ev = std::future::poll_fn(|cx| self.links.poll_event(cx)) => self.event(ev, io).await,
                _ = sleep_until(retry) => self.retry_due(),
                _ = sleep_until(deadline) => self.ack_timeout(),
            }
        }
    }

    /// Handles one client command; `Some` ends the mode.
    async fn command(
        &mut self,
        session: &mut Session,
        io: &mut ClientIo<'_, '_>,
        cmd: Command,
    ) -> Option<Exit> {
        let stats = &self.shared.stats;
        let Some(top) = command::lookup(cmd.arg(0)) else {
            Stats::add(&stats.commands, 1);
            Stats::add(&stats.errors_unsupported, 1);
            io.out.push(resp::error_bytes(&command::unknown_command_bytes(&cmd)));
            return None;
        };
        let spec: &CommandSpec = match top.resolve(&cmd) {
            Ok(spec) => spec,
            Err(unknown) => {
                Stats::add(&stats.commands, 1);
                io.out.push(resp::error_bytes(&unknown));
                return None;
            }
        };
        if !spec.arity_ok(cmd.count()) {
            Stats::add(&stats.commands, 1);
            io.out.push(resp::error(&command::arity_error(spec)));
            return None;
        }
        if let Some((family, subscribe)) = Family::of(spec.name) {
            Stats::add(&stats.commands, 1);
            if subscribe {
                self.subscribe(session, io, family, &cmd).await;
            } else {
                self.unsubscribe(family, &cmd).await;
            }
            return None;
        }
        match spec.name {
            "quit" => {
                Stats::add(&stats.commands, 1);
                io.out.push(Bytes::from_static(resp::OK));
                return Some(Exit::Close);
            }
            // The fast path answers RESET (and resets the session) once the mode has ended;
            // the servers' subscriptions go with the connections, closed.
            "reset" => {
                unread(io, &cmd.frame);
                self.subs = Subs::default();
                return Some(Exit::Resume);
            }
            "ping" if self.proto == Proto::Resp2 => {
                Stats::add(&stats.commands, 1);
                if cmd.count() > 2 {
                    // PING's arity is -1; the command itself refuses more than one argument.
                    io.out.push(resp::error(&command::arity_error(spec)));
                    return None;
                }
                let mut out = BytesMut::new();
                resp::push_array_len(&mut out, 2);
                resp::push_bulk(&mut out, b"pong");
                resp::push_bulk(&mut out, if cmd.count() > 1 { cmd.arg(1) } else { b"" });
                io.out.push(out.freeze());
            }
            name if self.proto == Proto::Resp2 => {
                Stats::add(&stats.commands, 1);
                io.out.push(resp::error(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                )));
            }
            "hello" if cmd.count() > 1 && parse_int(cmd.arg(1)) == Some(2) => {
                Stats::add(&stats.commands, 1);
                io.out.push(resp::error(
                    "ERR keyhop: HELLO 2 cannot switch a subscribed client to RESP2 (unsubscribe first, or RESET)",
                ));
            }
            // RESP3: any other command runs as usual, its reply among the pushes.
            _ => {
                if session.execute(&cmd.frame, io.out).await {
                    return Some(Exit::Close);
                }
            }
        }
        None
    }

    /// (P|S)SUBSCRIBE: every missing connection is opened first, so the command subscribes
    /// everything or (with the error of a group that cannot be reached) nothing.
    async fn subscribe(
        &mut self,
        session: &Session,
        io: &mut ClientIo<'_, '_>,
        family: Family,
        cmd: &Command,
    ) {
        let table = self.shared.table.load_full();
        let groups = table.groups.len();
        if groups == 0 {
            io.out.push(resp::error("ERR keyhop: internal routing error (no groups)"));
            return;
        }
        let mut need = vec![false; groups];
        for i in 1..cmd.count() {
            match family {
                Family::Pattern => need.iter_mut().for_each(|n| *n = true),
                _ => need[usize::from(table.group_for_key(cmd.arg(i))).min(groups - 1)] = true,
            }
        }
        for (g, _) in need.iter().enumerate().filter(|(_, n)| **n) {
            let g = g as GroupId;
            if self.links.get(g).is_some() {
                continue;
            }
            let master = table.groups.get(usize::from(g)).map(|x| x.master.as_str());
            if let Some(master) = master.filter(|m| super::fenced(session, m)) {
                // Being failed over: subscribed on the new master once the table names it, as
                // the client's other subscriptions of the group would be.
                let mut link = Link::pending(master);
                link.reopen(&self.shared, &table, g, self.mode);
                self.links.insert(g, link);
                continue;
            }
            match super::pin(session, &table, g, Kind::PubSub).await {
                Ok(conn) => self.links.insert(g, Link::new(conn)),
                Err(reply) => {
                    io.out.push(reply);
                    return;
                }
            }
        }
        let mut per_group: Vec<Vec<&[u8]>> = vec![Vec::new(); groups];
        let mut reply = BytesMut::new();
        let mut added = Vec::new();
        for i in 1..cmd.count() {
            let name = cmd.arg(i);
            let group = match family {
                Family::Pattern => 0,
                _ => table.group_for_key(name),
            };
            if self.subs.add(family, name, group) {
                added.push(Bytes::copy_from_slice(name));
                match family {
                    Family::Pattern => per_group.iter_mut().for_each(|p| p.push(name)),
                    _ => per_group[usize::from(group).min(groups - 1)].push(name),
                }
            }
            confirm(&mut reply, self.proto, family.word(true), Some(name), self.subs.count(family));
        }
        let touched = self.send_all(family.word(true), per_group).await;
        self.wait(reply, touched, Some((family, added)));
    }

    /// (P|S)UNSUBSCRIBE, of the names given or of every name of the family.
    async fn unsubscribe(&mut self, family: Family, cmd: &Command) {
        let names: Vec<Bytes> = if cmd.count() == 1 {
            self.subs.names(family)
        } else {
            (1..cmd.count()).map(|i| Bytes::copy_from_slice(cmd.arg(i))).collect()
        };
        let word = family.word(false);
        let mut reply = BytesMut::new();
        if names.is_empty() {
            confirm(&mut reply, self.proto, word, None, self.subs.count(family));
        }
        let groups = self.links.v.len();
        let mut per_group: Vec<Vec<&[u8]>> = vec![Vec::new(); groups];
        for name in &names {
            if let Some(group) = self.subs.remove(family, name) {
                match family {
                    Family::Pattern => per_group.iter_mut().for_each(|p| p.push(name)),
                    _ => {
                        if let Some(p) = per_group.get_mut(usize::from(group)) {
                            p.push(name);
                        }
                    }
                }
            }
            confirm(&mut reply, self.proto, word, Some(name), self.subs.count(family));
        }
        let touched = self.send_all(word, per_group).await;
        self.wait(reply, touched, None);
    }

    /// Sends each group its share of a (un)subscribe; returns the groups it went to.
    async fn send_all(&mut self, word: &str, per_group: Vec<Vec<&[u8]>>) -> Vec<GroupId> {
        let word = word.to_ascii_uppercase();
        let mut touched = Vec::new();
        for (g, names) in per_group.into_iter().enumerate() {
            if names.is_empty() {
                continue;
            }
            let g = g as GroupId;
            let frame =
                resp::command(std::iter::once(word.as_bytes()).chain(names.iter().copied()));
            let Some(link) = self.links.get(g) else { continue };
            touched.push(g);
            if !link.send(&frame, names.len()).await {
                self.lost(g, "write failed");
            }
        }
        touched
    }

    fn wait(
        &mut self,
        reply: BytesMut,
        touched: Vec<GroupId>,
        added: Option<(Family, Vec<Bytes>)>,
    ) {
        let timeout = self.shared.settings.load().backend.request_timeout;
        self.waiting = Some(Waiting {
            reply: reply.freeze(),
            deadline: Instant::now() + timeout,
            held: Vec::new(),
            held_bytes: 0,
            touched,
            added,
            error: None,
        });
    }

    /// Writes the waiting confirmations once no server owes one.
    fn release(&mut self, io: &mut ClientIo<'_, '_>) {
        if self.waiting.is_none() || !self.links.settled() {
            return;
        }
        let Some(w) = self.waiting.take() else { return };
        if let Some(error) = w.error.clone() {
            self.refused(w, error, io);
            return;
        }
        Stats::add(&self.shared.stats.bytes_out, (w.reply.len() + w.held_bytes) as u64);
        io.out.push(w.reply);
        for m in w.held {
            io.out.push(m);
        }
    }

    /// A server refused a (un)subscribe: a SUBSCRIBE is undone and answered with the server's
    /// error (an UNSUBSCRIBE is confirmed: the names are gone either way), and the connections
    /// it went to are replaced by ones subscribed to exactly what the client now has, so no
    /// server keeps half of the command. Held messages may be of undone names: dropped.
    fn refused(&mut self, w: Waiting, error: Bytes, io: &mut ClientIo<'_, '_>) {
        let table = self.shared.table.load_full();
        let (shared, mode) = (self.shared.clone(), self.mode);
        for &g in &w.touched {
            if let Some(link) = self.links.get(g) {
                link.reopen(&shared, &table, g, mode);
            }
        }
        match w.added {
            Some((family, names)) => {
                for name in names {
                    self.subs.remove(family, &name);
                }
                io.out.push(error);
            }
            None => io.out.push(w.reply),
        }
    }

    /// True when the client must be disconnected for its unwritten output (counted and logged).
    fn over_limit(&mut self, io: &mut ClientIo<'_, '_>) -> bool {
        let limit = self.shared.settings.load().pubsub_limit;
        let pending = io.out.len() + self.waiting.as_ref().map_or(0, |w| w.held_bytes);
        let mut over = limit.hard > 0 && pending > limit.hard;
        if limit.soft > 0 && pending > limit.soft {
            match self.soft_since {
                None => self.soft_since = Some(Instant::now()),
                Some(since) => over |= since.elapsed() > limit.soft_for,
            }
        } else {
            self.soft_since = None;
        }
        if over {
            Stats::add(&self.shared.stats.output_limit_disconnects, 1);
            tracing::warn!(client = %self.peer, pending_bytes = pending,
                hard = limit.hard, soft = limit.soft, soft_seconds = limit.soft_for.as_secs(),
                "pubsub: subscriber disconnected: its unwritten output passed pubsub_output_limit");
            // Closed without writing what is pending: the client is not reading it.
            *io.out = OutQueue::default();
        }
        over
    }
}

/// The next table announcement: the receiver back, and false once the sender is gone.
type TableChange = Pin<Box<dyn Future<Output = (watch::Receiver<u64>, bool)> + Send>>;

fn next_table(mut rx: watch::Receiver<u64>) -> TableChange {
    Box::pin(async move {
        let ok = rx.changed().await.is_ok();
        (rx, ok)
    })
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Puts a command taken from the read buffer back at its head (for the fast path to run).
fn unread(io: &mut ClientIo<'_, '_>, frame: &[u8]) {
    let rest = io.buf.split();
    io.buf.reserve(frame.len() + rest.len());
    io.buf.extend_from_slice(frame);
    io.buf.extend_from_slice(&rest);
}
