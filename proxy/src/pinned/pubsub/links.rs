//! A subscriber's dedicated connections, one per group it needs, and how each follows its
//! group's master: when the table names a new master or the connection breaks, a new one is
//! opened in the background (retried every [`RETRY`] while the master cannot be reached) and
//! the subscriber's share of subscriptions is sent on it again.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use keyhop_router::{GroupId, RoutingTable};

use super::super::{Dedicated, Kind};
use crate::Shared;
use crate::backend::Mode;

/// Pause between two attempts to reach a group's master that refused or failed.
pub(super) const RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// A connection being opened, on a task of its own: dropping the handle (the table moved on,
/// the client left) lets the attempt finish and release what it reserved, where dropping the
/// future mid-connect would not.
type Opening = tokio::task::JoinHandle<Result<Dedicated, Bytes>>;

/// One group's connection and its bookkeeping.
pub(super) struct Link {
    /// The connection, when one is up.
    pub conn: Option<Dedicated>,
    /// The server the link is for (the master when it was opened or is being opened).
    pub target: Arc<str>,
    /// A new connection being opened.
    opening: Option<Opening>,
    /// When the next attempt to open one is due, after a failed one.
    pub retry_at: Option<Instant>,
    /// Confirmations the server still owes, per command sent (in order).
    pub acks: VecDeque<usize>,
    /// Since when the link has been re-subscribing (for the log line once it is done).
    pub since: Option<Instant>,
    /// An outage was logged already (one warning per outage).
    pub warned: bool,
}

impl Link {
    /// A link over `conn`, just opened for a subscription.
    pub(super) fn new(conn: Dedicated) -> Link {
        Link {
            target: conn.addr.clone(),
            conn: Some(conn),
            opening: None,
            retry_at: None,
            acks: VecDeque::new(),
            since: None,
            warned: false,
        }
    }

    /// A link whose connection is still to be opened (to `target`, the master being failed
    /// over): it is opened, and subscribed, once the new master is known.
    pub(super) fn pending(target: &str) -> Link {
        Link {
            target: Arc::from(target),
            conn: None,
            opening: None,
            retry_at: None,
            acks: VecDeque::new(),
            since: None,
            warned: false,
        }
    }

    /// Sends `frames` expecting `confirmations` from the server; false when the connection is
    /// down or the write failed (the caller then re-opens it).
    pub(super) async fn send(&mut self, frames: &[u8], confirmations: usize) -> bool {
        let Some(conn) = self.conn.as_mut() else { return true };
        if frames.is_empty() {
            return true;
        }
        if conn.send(frames).await.is_err() {
            return false;
        }
        if confirmations > 0 {
            self.acks.push_back(confirmations);
        }
        true
    }

    /// Counts one confirmation; true when the server owes none any more.
    pub(super) fn confirmed(&mut self) -> bool {
        if let Some(front) = self.acks.front_mut() {
            *front = front.saturating_sub(1);
            if *front == 0 {
                self.acks.pop_front();
            }
        }
        self.acks.is_empty()
    }

    /// Drops the connection (closing it: it holds subscriptions) and starts opening one to
    /// the group's master in `table`.
    pub(super) fn reopen(
        &mut self,
        shared: &Arc<Shared>,
        table: &RoutingTable,
        group: GroupId,
        mode: Mode,
    ) {
        self.conn = None;
        self.acks.clear();
        self.retry_at = None;
        self.since.get_or_insert_with(Instant::now);
        let Some(g) = table.groups.get(group as usize) else { return };
        self.target = Arc::from(g.master.as_str());
        let attempt = open(shared.clone(), self.target.clone(), g.name.clone(), mode);
        self.opening = Some(tokio::spawn(attempt));
    }
}

/// What happened on one of the links.
pub(super) enum Event {
    /// A whole frame from a group's server.
    Frame(GroupId, Bytes),
    /// A group's connection failed.
    Lost(GroupId, String),
    /// An attempt to open a group's connection ended.
    Opened(GroupId, Result<Dedicated, Bytes>),
}

/// The links, indexed by group.
#[derive(Default)]
pub(super) struct Links {
    pub v: Vec<Option<Link>>,
    /// Where the next poll starts, so one busy group cannot starve the others.
    next: usize,
}

impl Links {
    /// The link of `group`, if open.
    pub(super) fn get(&mut self, group: GroupId) -> Option<&mut Link> {
        self.v.get_mut(group as usize).and_then(Option::as_mut)
    }

    /// Installs the link of `group`.
    pub(super) fn insert(&mut self, group: GroupId, link: Link) {
        let i = group as usize;
        if self.v.len() <= i {
            self.v.resize_with(i + 1, || None);
        }
        self.v[i] = Some(link);
    }

    /// Every link with its group.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (GroupId, &mut Link)> {
        self.v.iter_mut().enumerate().filter_map(|(g, l)| l.as_mut().map(|l| (g as GroupId, l)))
    }

    /// True when no server owes a confirmation.
    pub(super) fn settled(&self) -> bool {
        self.v.iter().flatten().all(|l| l.acks.is_empty())
    }

    /// The earliest retry due.
    pub(super) fn next_retry(&self) -> Option<Instant> {
        self.v.iter().flatten().filter_map(|l| l.retry_at).min()
    }

    /// The next event of any link (cancel-safe: frames stay buffered in their connection and
    /// openings stay in their link).
    pub(super) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let n = self.v.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let Some(link) = self.v[i].as_mut() else { continue };
            let g = i as GroupId;
            if let Some(task) = link.opening.as_mut()
                && let Poll::Ready(r) = Pin::new(task).poll(cx)
            {
                link.opening = None;
                self.next = (i + 1) % n;
                let r = r.unwrap_or_else(|e| {
                    Err(crate::resp::error(&format!("ERR keyhop: connecting failed ({e})")))
                });
                return Poll::Ready(Event::Opened(g, r));
            }
            if let Some(conn) = link.conn.as_mut() {
                let fut = conn.read_reply();
                let mut fut = std::pin::pin!(fut);
                match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(frame)) => {
                        self.next = (i + 1) % n;
                        return Poll::Ready(Event::Frame(g, frame));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::Lost(g, e.to_string())),
                    Poll::Pending => {}
                }
            }
        }
        Poll::Pending
    }

    /// Closes every link; the ones that owe nothing and were fully unsubscribed are kept for
    /// reuse (`clean`).
    pub(super) fn close(&mut self, clean: bool) {
        for (_, link) in self.iter_mut() {
            if let Some(conn) = link.conn.as_mut()
                && clean
                && link.acks.is_empty()
                && !conn.is_closed()
            {
                conn.clean();
            }
        }
        self.v.clear();
    }
}

/// Opens a dedicated connection to `addr` (a group's master) for pub/sub; owns its arguments
/// because it runs while the subscriber is served, without borrowing the session.
async fn open(
    shared: Arc<Shared>,
    addr: Arc<str>,
    group: String,
    mode: Mode,
) -> Result<Dedicated, Bytes> {
    crate::pinned::open(&shared, &addr, &group, mode, Kind::PubSub).await
}
