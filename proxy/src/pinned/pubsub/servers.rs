//! The subscriber's side facing the servers: frames from each group's connection (messages
//! forwarded, confirmations counted), and connections replaced when a failover names a new
//! master, when one breaks, or when a server refuses or does not answer in time.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use keyhop_router::GroupId;

use super::super::Dedicated;
use super::links::{Event, Link, RETRY};
use super::state::{Frame, classify};
use super::{ClientIo, Subscriber};
use crate::stats::Stats;

/// Frames taken from one connection's buffer in a row before the client gets a turn.
const DRAIN_BATCH: usize = 256;

/// One kind of per-subscriber event, logged at most once a second over all subscribers (a
/// failover touches every subscriber of the group at once); the others are logged at debug.
struct Throttle(AtomicU64);

impl Throttle {
    const fn new() -> Throttle {
        Throttle(AtomicU64::new(0))
    }

    fn allow(&self) -> bool {
        static START: OnceLock<Instant> = OnceLock::new();
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1000;
        let last = self.0.load(Ordering::Relaxed);
        now >= last + 1000
            && self.0.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

static UNREACHABLE: Throttle = Throttle::new();
static REFUSED: Throttle = Throttle::new();
static LOST: Throttle = Throttle::new();
static CHANGED: Throttle = Throttle::new();
static RESUBSCRIBED: Throttle = Throttle::new();

/// Logs at `level` when `throttle` allows, at debug otherwise.
macro_rules! throttled {
    ($throttle:expr, $level:ident, $($arg:tt)+) => {
        if $throttle.allow() {
            tracing::$level!($($arg)+)
        } else {
            tracing::debug!($($arg)+)
        }
    };
}

impl Subscriber {
    pub(super) async fn event(&mut self, ev: Event, io: &mut ClientIo<'_, '_>) {
        match ev {
            Event::Frame(g, frame) => {
                self.frame(g, frame, io);
                for _ in 0..DRAIN_BATCH {
                    let Some(conn) = self.links.get(g).and_then(|l| l.conn.as_mut()) else {
                        break;
                    };
                    match conn.try_reply() {
                        Ok(Some(frame)) => self.frame(g, frame, io),
                        Ok(None) => break,
                        Err(e) => {
                            self.lost(g, &e.to_string());
                            break;
                        }
                    }
                }
            }
            Event::Lost(g, why) => self.lost(g, &why),
            Event::Opened(g, Ok(conn)) => self.opened(g, conn).await,
            Event::Opened(g, Err(reply)) => {
                let peer = self.peer;
                if let Some(link) = self.links.get(g) {
                    if !link.warned {
                        link.warned = true;
                        throttled!(UNREACHABLE, warn, client = %peer, group = g,
                            server = %link.target,
                            error = %String::from_utf8_lossy(reply.trim_ascii_end()),
                            "pubsub: cannot reach the group's master; retrying every 100 ms");
                    }
                    link.retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
    }

    /// One frame from group `g`'s server.
    fn frame(&mut self, g: GroupId, frame: Bytes, io: &mut ClientIo<'_, '_>) {
        match classify(&frame) {
            Frame::Message => {
                let owes = self.links.get(g).is_some_and(|l| !l.acks.is_empty());
                match self.waiting.as_mut() {
                    Some(w) if !owes => {
                        w.held_bytes += frame.len();
                        w.held.push(frame);
                    }
                    _ => {
                        Stats::add(&self.shared.stats.bytes_out, frame.len() as u64);
                        io.out.push(frame);
                    }
                }
            }
            Frame::Confirmation => {
                let peer = self.peer;
                if let Some(link) = self.links.get(g)
                    && link.confirmed()
                {
                    resubscribed(peer, g, link);
                }
            }
            Frame::Error => {
                let peer = self.peer;
                if let Some(w) = self.waiting.as_mut() {
                    w.error.get_or_insert_with(|| frame.clone());
                }
                if let Some(link) = self.links.get(g) {
                    link.acks.pop_front();
                    throttled!(REFUSED, warn, client = %peer, group = g, server = %link.target,
                        error = %String::from_utf8_lossy(frame.trim_ascii_end()),
                        "pubsub: the server refused a subscription command");
                }
            }
            Frame::Other => {}
        }
    }

    /// A new connection of group `g` is up: it gets the group's share of subscriptions.
    async fn opened(&mut self, g: GroupId, conn: Dedicated) {
        let table = self.shared.table.load_full();
        let (shared, mode, peer) = (self.shared.clone(), self.mode, self.peer);
        let Some(link) = self.links.get(g) else { return };
        let master = table.groups.get(usize::from(g)).map(|x| x.master.as_str());
        if master.is_some_and(|m| m != &*conn.addr) {
            // The table moved on while it was being opened.
            link.reopen(&shared, &table, g, mode);
            return;
        }
        link.conn = Some(conn);
        link.warned = false;
        let (frames, confirmations) = self.subs.resubscribe(g);
        if !link.send(&frames, confirmations).await {
            self.lost(g, "write failed");
            return;
        }
        if link.acks.is_empty() {
            resubscribed(peer, g, link);
        }
    }

    /// Group `g`'s connection broke: a new one is opened to the group's master now.
    pub(super) fn lost(&mut self, g: GroupId, why: &str) {
        let table = self.shared.table.load_full();
        let (shared, mode, peer) = (self.shared.clone(), self.mode, self.peer);
        if let Some(link) = self.links.get(g) {
            if !link.warned {
                link.warned = true;
                throttled!(LOST, warn, client = %peer, group = g, server = %link.target, why,
                    "pubsub: connection to the group's master lost; re-subscribing");
            }
            link.reopen(&shared, &table, g, mode);
        }
    }

    /// A new routing table: every group whose master changed is re-subscribed on the new one,
    /// and so are both groups of a channel whose slot changed owner (a migration's flip).
    pub(super) fn follow(&mut self) {
        let table = self.shared.table.load_full();
        let (shared, mode, peer) = (self.shared.clone(), self.mode, self.peer);
        let moved = self.subs.follow_owners(&table);
        let mut fresh = Vec::new();
        for &g in &moved {
            if self.links.get(g).is_none()
                && let Some(group) = table.groups.get(usize::from(g))
            {
                // The channel's new group had none of this client's subscriptions yet.
                let mut link = Link::pending(&group.master);
                link.reopen(&shared, &table, g, mode);
                self.links.insert(g, link);
                fresh.push(g);
            }
        }
        for (g, link) in self.links.iter_mut() {
            let Some(group) = table.groups.get(usize::from(g)) else { continue };
            if moved.contains(&g) && !fresh.contains(&g) {
                throttled!(CHANGED, info, client = %peer, group = g,
                    "pubsub: a channel's slot changed group; re-subscribing");
                link.reopen(&shared, &table, g, mode);
            } else if *link.target != *group.master {
                throttled!(CHANGED, info, client = %peer, group = g, from = %link.target,
                    to = %group.master, "pubsub: the group's master changed; re-subscribing");
                // Timed from adopting the new table (an outage before it is Sentinel's time).
                link.since = Some(Instant::now());
                link.reopen(&shared, &table, g, mode);
            }
        }
    }

    pub(super) fn retry_due(&mut self) {
        let table = self.shared.table.load_full();
        let (shared, mode, now) = (self.shared.clone(), self.mode, Instant::now());
        for (g, link) in self.links.iter_mut() {
            if link.retry_at.is_some_and(|t| t <= now) {
                link.reopen(&shared, &table, g, mode);
            }
        }
    }

    /// A server did not confirm in time: its connection is replaced (and re-subscribed), and
    /// the client gets its confirmations.
    pub(super) fn ack_timeout(&mut self) {
        let owing: Vec<GroupId> =
            self.links.iter_mut().filter(|(_, l)| !l.acks.is_empty()).map(|(g, _)| g).collect();
        for g in owing {
            self.lost(g, "no confirmation within request_timeout");
        }
    }
}

/// Logs the end of a re-subscription (once every confirmation of it is in), with its time
/// since the table changed or the connection was lost.
fn resubscribed(peer: SocketAddr, g: GroupId, link: &mut Link) {
    if let Some(since) = link.since.take() {
        let ms = since.elapsed().as_secs_f64() * 1000.0;
        throttled!(RESUBSCRIBED, info, client = %peer, group = g, server = %link.target,
            elapsed_ms = %format_args!("{ms:.1}"), "pubsub: re-subscribed on the group's master");
    }
}
