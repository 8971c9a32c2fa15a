//! Blocking commands (BLPOP and friends, XREAD/XREADGROUP with BLOCK, WAIT): each is served on
//! a dedicated connection of its key's group master, because a blocked command would stall
//! every client sharing a connection. While it blocks, the client is still read (its later
//! pipelined commands wait behind it, in order, as on Redis; a disconnect frees the server side
//! at once), and the group's master is watched: on a failover the command is re-issued on the
//! new master when the old one provably did not serve it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keyhop_router::command::{self, RouteError};
use keyhop_router::{Args, GroupId};

use super::{ClientIo, Command, Exit};
use crate::resp;
use crate::session::{CROSSSLOT, Session};
use crate::stats::Stats;

mod timeout;
mod unblock;
mod unit;

use unit::Unit;

/// Client bytes buffered behind a blocked command before keyhop stops reading the client.
const MAX_BUFFERED: usize = 1 << 20;
/// How often a command whose master is gone looks for one again (besides table changes).
const RETRY: Duration = Duration::from_millis(200);
/// The channel of WAIT's propagated no-op (see [`wait_units`]).
const WAIT_CHANNEL: &[u8] = b"__keyhop__:wait";

/// Serves the blocking command at the head of the buffer, then returns to the fast path.
pub(super) async fn serve(session: &mut Session, mut io: ClientIo<'_, '_>) -> Exit {
    let cmd = match io.next_command() {
        Some(Ok(cmd)) => cmd,
        Some(Err(reply)) => {
            io.out.push(reply);
            return Exit::Close;
        }
        None => return Exit::Resume,
    };
    Stats::add(&session.shared.stats.commands, 1);
    let started = Instant::now();
    let id = command::lookup(cmd.arg(0)).and_then(command::index_of);
    session.client.entry.set_blocked(true);
    let exit = serve_command(session, &mut io, cmd).await;
    if let Some(id) = id.filter(|_| session.shared.settings.load().metrics) {
        // The latency a client saw, blocked time included (the slow log, like Redis's, leaves
        // blocking commands out).
        session.shared.commands.record(id, started.elapsed());
    }
    exit
}

async fn serve_command(session: &mut Session, io: &mut ClientIo<'_, '_>, cmd: Command) -> Exit {
    if io.eof && !session.shared.drain.is_cancelled() {
        // The client has already gone: Redis would free it without running the command.
        return Exit::Close;
    }
    if session.shared.drain.is_cancelled() {
        io.out.push(shutting_down());
        return Exit::Close;
    }
    // Subscribed before the table is read: a change from then on is seen.
    let topology = session.shared.topology.subscribe();
    let mut units = match plan(session, cmd) {
        Ok(units) => units,
        Err(reply) => {
            io.out.push(reply);
            return Exit::Resume;
        }
    };
    for i in 0..units.len() {
        if let Err(reply) = units[i].start(session).await {
            release_all(session, &mut units, false).await;
            io.out.push(reply);
            return Exit::Resume;
        }
    }
    run(session, io, &mut units, topology).await
}

/// The units a command runs as: one on its keys' group, or (WAIT) one per group.
fn plan(session: &mut Session, cmd: Command) -> Result<Vec<Unit>, Bytes> {
    let table = session.shared.table.load_full();
    let spec = command::lookup(cmd.arg(0))
        .and_then(|top| top.resolve(&cmd).ok())
        .ok_or_else(|| resp::error_bytes(&command::unknown_command_bytes(&cmd)))?;
    if spec.name == "wait" {
        return Ok(wait_units(table.groups.len(), cmd));
    }
    let mut keys = Vec::new();
    match command::route(&table, spec, &cmd, &mut keys) {
        Ok(group) => Ok(vec![Unit::new(group.unwrap_or(0), spec.name, cmd, None)]),
        Err(RouteError::CrossGroup) => {
            Stats::add(&session.shared.stats.errors_crossslot, 1);
            Err(Bytes::from_static(CROSSSLOT))
        }
        Err(RouteError::Syntax(msg)) => Err(resp::error(&msg)),
    }
}

/// WAIT on every group's master. WAIT counts the replicas that acknowledged the writes of
/// *its own connection*, and the client's writes went over shared connections: a PUBLISH first
/// (propagated to replicas outside cluster mode) brings the dedicated connection's replication
/// offset up to the master's, which covers every write the client had answered.
fn wait_units(groups: usize, cmd: Command) -> Vec<Unit> {
    let prefix = resp::command([&b"PUBLISH"[..], WAIT_CHANNEL, b""]);
    (0..groups)
        .map(|g| {
            let c = Command { frame: cmd.frame.clone(), ranges: cmd.ranges.clone() };
            Unit::new(g as GroupId, "wait", c, Some(prefix.clone()))
        })
        .collect()
}

/// Waits for the units' replies while reading the client and following the topology.
async fn run(
    session: &mut Session,
    io: &mut ClientIo<'_, '_>,
    units: &mut [Unit],
    mut topology: tokio::sync::watch::Receiver<u64>,
) -> Exit {
    let shared = session.shared.clone();
    let mut topology_live = true;
    let drained = shared.drain.cancelled();
    tokio::pin!(drained);
    let entry = session.client.entry.clone();
    let killed = crate::clients::ClientState::killed(&entry);
    tokio::pin!(killed);
    loop {
        if units.iter().all(|u| u.reply.is_some()) {
            let reply = combine(units);
            Stats::add(&shared.stats.bytes_out, reply.len() as u64);
            io.out.push(reply);
            return Exit::Resume;
        }
        let lost = units.iter().any(Unit::lost);
        let confirm = units.iter().filter_map(|u| u.confirm_by).min();
        let retry_at = tokio::time::Instant::now() + RETRY;
        tokio::select! {
            biased;
            // CLIENT KILL: Redis frees the client at once, answering nothing.
            _ = &mut killed => {
                release_all(session, units, false).await;
                return Exit::Close;
            }
            _ = &mut drained => {
                let reply = drain_reply(session, units).await;
                io.out.push(reply);
                return Exit::Close;
            }
            alive = client_event(io, &shared.stats) => {
                if !alive {
                    // Gone: free the server side now, as Redis does when a blocked client leaves.
                    release_all(session, units, false).await;
                    return Exit::Close;
                }
            }
            (i, r) = next_reply(units) => {
                units[i].on_reply(r);
                if units[i].lost() {
                    units[i].reissue(session).await;
                }
            }
            changed = topology.changed(), if topology_live => {
                topology_live = changed.is_ok();
                follow_topology(session, units).await;
            }
            _ = tokio::time::sleep_until(retry_at), if lost => {
                for u in units.iter_mut().filter(|u| u.lost()) {
                    u.reissue(session).await;
                }
            }
            _ = sleep_until_opt(confirm), if confirm.is_some() => {
                let now = Instant::now();
                for u in units.iter_mut() {
                    if u.confirm_by.is_some_and(|t| t <= now) {
                        u.unconfirmed();
                    }
                }
            }
        }
        // A lost command whose timeout ends answers it even between retries.
        let now = Instant::now();
        for u in units.iter_mut() {
            if u.lost() && u.deadline().is_some_and(|d| d <= now) {
                u.reissue(session).await;
            }
        }
    }
}

/// Writes pending replies and reads more of the client's requests (up to [`MAX_BUFFERED`]).
/// Cancel-safe. False once the client is gone.
async fn client_event(io: &mut ClientIo<'_, '_>, stats: &crate::stats::Stats) -> bool {
    let reading = !io.eof && io.buf.len() < MAX_BUFFERED;
    tokio::select! {
        r = io.out.write_some(&mut *io.wr), if !io.out.is_empty() => r.is_ok(),
        n = super::read_client(&mut *io.rd, &mut *io.buf, &mut io.eof, stats), if reading => n > 0,
        // Nothing to write and enough buffered: only the other events matter.
        else => std::future::pending().await,
    }
}

/// After a table change: a command blocked on a server that is no longer its group's master is
/// unblocked there (and re-issued once the old master says it did not serve it); a lost one
/// tries the new master.
async fn follow_topology(session: &Session, units: &mut [Unit]) {
    let table = session.shared.table.load_full();
    for u in units.iter_mut() {
        let Some(g) = table.groups.get(u.group as usize) else { continue };
        match u.addr() {
            // Blocked on the source of keys now in flux: unblocked there (if it did not serve
            // it, the re-issue answers TRYAGAIN).
            Some(addr) if addr != &*g.master || u.in_flux(session, &table).is_some() => {
                u.failover(session).await
            }
            Some(_) => {}
            None if u.lost() => u.reissue(session).await,
            None => {}
        }
    }
}

/// The first reply (or loss) of any unit's connection, with the unit's index.
async fn next_reply(units: &mut [Unit]) -> (usize, Result<Bytes, super::ConnError>) {
    type Read<'a> = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Bytes, super::ConnError>> + Send + 'a>,
    >;
    let mut reads: Vec<(usize, Read<'_>)> = units
        .iter_mut()
        .enumerate()
        .filter(|(_, u)| u.addr().is_some())
        .map(|(i, u)| (i, Box::pin(u.read()) as Read<'_>))
        .collect();
    if reads.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (i, read) in reads.iter_mut() {
            if let std::task::Poll::Ready(r) = read.as_mut().poll(cx) {
                return std::task::Poll::Ready((*i, r));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The client's reply: the command's own, or for WAIT the fewest replicas any group's master
/// counted (every write is covered only that many times), or the first error.
fn combine(units: &[Unit]) -> Bytes {
    if units.len() == 1 || units.first().is_some_and(|u| u.name != "wait") {
        return units[0].reply.clone().unwrap_or_else(|| resp::error("ERR keyhop: no reply"));
    }
    let mut min: Option<i64> = None;
    for u in units {
        let Some(r) = &u.reply else { continue };
        let n = r
            .strip_prefix(b":")
            .and_then(|r| r.strip_suffix(b"\r\n"))
            .and_then(crate::resp::parse_int);
        match n {
            Some(n) => min = Some(min.map_or(n, |m| m.min(n))),
            None => return r.clone(),
        }
    }
    resp::int(min.unwrap_or(0))
}

/// Frees every unit's server side (reusing its connection when that works).
async fn release_all(session: &Session, units: &mut [Unit], error: bool) {
    for u in units.iter_mut() {
        u.release(session, error).await;
    }
}

/// The proxy is stopping: each command is unblocked with an error; a reply the server had
/// already sent (served) is relayed, otherwise the client learns it was not served.
async fn drain_reply(session: &Session, units: &mut [Unit]) -> Bytes {
    let mut served = None;
    for u in units.iter_mut() {
        let r = match u.reply.take() {
            Some(r) => Some(r),
            None => u.release(session, true).await,
        };
        if units_single(u) {
            served = r.filter(|r| !r.starts_with(b"-UNBLOCKED"));
        }
    }
    served.unwrap_or_else(shutting_down)
}

fn units_single(u: &Unit) -> bool {
    u.name != "wait"
}

fn shutting_down() -> Bytes {
    resp::error(
        "UNBLOCKED keyhop: the proxy is shutting down; the blocking command was not served (retry on another keyhop)",
    )
}
