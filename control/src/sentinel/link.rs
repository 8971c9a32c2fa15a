//! One task per sentinel: a subscribed connection for events and a command connection for
//! polls, reconnected with bounded backoff. Everything learned goes to the brain as [`Msg`]s.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhop_router::Replica;
use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::{mpsc, watch};

use super::brain::{GroupView, Msg, PollReport, Role};
use super::event::{self, CHANNELS};
use super::resp::{Conn, err, field_map, text};
use crate::config::join_host_port;

/// First reconnect delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Shortest gap between two polls triggered by re-check requests (coalesces storms).
const RECHECK_GAP: Duration = Duration::from_millis(50);
/// Other sentinels are asked for on the first poll of a connection and then every this many.
const DISCOVER_EVERY: u64 = 10;

/// What every link needs to know.
pub(crate) struct LinkShared {
    /// Group names, by group id.
    pub groups: Vec<String>,
    /// Sentinel `AUTH` password.
    pub password: Option<String>,
    /// TLS for the sentinels (`sentinel.tls`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Connect and poll timeout.
    pub timeout: Duration,
    /// Safety-net poll interval.
    pub poll_interval: Duration,
    /// Where to report.
    pub tx: mpsc::UnboundedSender<Msg>,
}

/// Follows the sentinel at `addr` until the brain goes away.
pub(crate) async fn run(addr: String, shared: Arc<LinkShared>, mut recheck: watch::Receiver<u64>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let mut was_up = false;
        let result = session(&addr, &shared, &mut recheck, &mut was_up).await;
        let error = match result {
            Ok(()) => return, // the brain is gone
            Err(e) => e.to_string(),
        };
        if was_up {
            tracing::warn!(sentinel = %addr, %error, "lost the sentinel; reconnecting");
        } else {
            tracing::debug!(sentinel = %addr, %error, "cannot reach the sentinel");
        }
        if shared.tx.send(Msg::Down { sentinel: addr.clone(), error }).is_err() {
            return;
        }
        // A link that stayed up a while starts over with short delays.
        if was_up && started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connected period: subscribe, poll at once, then forward events and poll on the interval
/// and on re-check requests. Returns `Ok` only when the brain is gone.
async fn session(
    addr: &str,
    shared: &LinkShared,
    recheck: &mut watch::Receiver<u64>,
    was_up: &mut bool,
) -> io::Result<()> {
    let t = shared.timeout;
    let pw = shared.password.as_deref();
    let mut sub = Conn::open(addr, pw, shared.tls.as_ref(), t).await?;
    // In chunks: a server rejects a command of more than 10 arguments from an unauthenticated
    // client with a protocol error, which would hide the NOAUTH that explains the problem.
    for chunk in CHANNELS.chunks(9) {
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(chunk.iter().map(|c| c.as_bytes()));
        sub.queue(&args);
    }
    sub.flush().await?;
    for _ in CHANNELS {
        let frame = tokio::time::timeout(t, sub.read_frame())
            .await
            .map_err(|_| err(io::ErrorKind::TimedOut, "SUBSCRIBE timed out"))??;
        match &frame {
            BytesFrame::Array(items) if items.first().and_then(text) == Some("subscribe") => {}
            BytesFrame::Error(e) => {
                return Err(err(io::ErrorKind::Other, format!("SUBSCRIBE failed: {}", &**e)));
            }
            other => {
                return Err(err(
                    io::ErrorKind::InvalidData,
                    format!("unexpected reply to SUBSCRIBE: {other:?}"),
                ));
            }
        }
    }
    let mut cmd = Conn::open(addr, pw, shared.tls.as_ref(), t).await?;
    *was_up = true;
    if shared.tx.send(Msg::Up { sentinel: addr.to_string() }).is_err() {
        return Ok(());
    }
    tracing::info!(sentinel = %addr, "subscribed to the sentinel");

    let mut polls: u64 = 0;
    let mut ticker = tokio::time::interval(shared.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_poll = Instant::now();
    // Any re-check requested before this connection is covered by the first poll below.
    recheck.mark_unchanged();
    let mut poll_now = true;
    loop {
        if poll_now {
            poll_now = false;
            let report = tokio::time::timeout(
                t,
                poll(&mut cmd, &shared.groups, polls.is_multiple_of(DISCOVER_EVERY)),
            )
            .await
            .map_err(|_| err(io::ErrorKind::TimedOut, "poll timed out"))??;
            polls += 1;
            last_poll = Instant::now();
            ticker.reset();
            if shared.tx.send(Msg::Poll { sentinel: addr.to_string(), report }).is_err() {
                return Ok(());
            }
        }
        tokio::select! {
            frame = sub.read_frame() => {
                let at = Instant::now();
                if let Some(event) = message(&frame?) {
                    tracing::debug!(sentinel = %addr, ?event, "sentinel event");
                    if shared.tx.send(Msg::Event { sentinel: addr.to_string(), event, at }).is_err() {
                        return Ok(());
                    }
                }
            }
            _ = ticker.tick() => poll_now = true,
            changed = recheck.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                tokio::time::sleep_until((last_poll + RECHECK_GAP).into()).await;
                poll_now = true;
            }
        }
    }
}

/// A pub/sub `message` frame as an event.
fn message(frame: &BytesFrame) -> Option<event::Event> {
    let BytesFrame::Array(items) = frame else { return None };
    match items.as_slice() {
        [kind, channel, payload] if text(kind) == Some("message") => {
            event::parse(text(channel)?, text(payload)?)
        }
        _ => None,
    }
}

/// Asks one sentinel, in one pipelined round trip, for every group's master, config epoch and
/// replicas, and (when `discover`) the other sentinels it knows.
async fn poll(conn: &mut Conn, groups: &[String], discover: bool) -> io::Result<PollReport> {
    for name in groups {
        let n = name.as_bytes();
        conn.queue(&[b"SENTINEL", b"get-master-addr-by-name", n]);
        conn.queue(&[b"SENTINEL", b"master", n]);
        conn.queue(&[b"SENTINEL", b"replicas", n]);
        if discover {
            conn.queue(&[b"SENTINEL", b"sentinels", n]);
        }
    }
    conn.flush().await?;
    let mut report = PollReport::default();
    for _ in groups {
        let addr = conn.read_frame().await?;
        let master = conn.read_frame().await?;
        let replicas = conn.read_frame().await?;
        let sentinels = if discover { Some(conn.read_frame().await?) } else { None };
        report.groups.push(group_view(&addr, &master, &replicas));
        if let Some(BytesFrame::Array(items)) = sentinels {
            for s in items.iter().filter_map(field_map) {
                if let Some(a) = instance_addr(&s)
                    && !report.sentinels.contains(&a)
                {
                    report.sentinels.push(a);
                }
            }
        }
    }
    Ok(report)
}

/// A group's view from the replies to `get-master-addr-by-name`, `master` and `replicas`;
/// `None` when the sentinel does not know the name.
pub(crate) fn group_view(
    addr: &BytesFrame,
    master: &BytesFrame,
    replicas: &BytesFrame,
) -> Option<GroupView> {
    let BytesFrame::Array(ip_port) = addr else { return None };
    let [ip, port] = ip_port.as_slice() else { return None };
    let port: u16 = text(port)?.parse().ok()?;
    let master_addr = join_host_port(text(ip)?, port);
    let config_epoch = field_map(master)
        .and_then(|m| m.get("config-epoch").and_then(|e| e.parse().ok()))
        .unwrap_or(0);
    let mut list = Vec::new();
    if let BytesFrame::Array(items) = replicas {
        for r in items.iter().filter_map(field_map) {
            let Some(a) = instance_addr(&r) else { continue };
            if a == master_addr {
                continue;
            }
            let flags = r.get("flags").copied().unwrap_or("");
            // Besides Sentinel's down flags: an old master not yet reconfigured still reports
            // itself as master, and a replica whose link to the master is down serves data of
            // unknown age; neither is a replica to read from yet.
            let healthy =
                !flags.split(',').any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
                    && r.get("role-reported").is_none_or(|&role| role == "slave")
                    && r.get("master-link-status").is_none_or(|&link| link == "ok");
            list.push(Replica { addr: a, healthy });
        }
    }
    list.sort_by(|a, b| a.addr.cmp(&b.addr));
    list.dedup_by(|a, b| a.addr == b.addr);
    Some(GroupView { master: master_addr, config_epoch, replicas: list })
}

/// `host:port` from an instance's `ip` and `port` fields.
fn instance_addr(fields: &std::collections::HashMap<&str, &str>) -> Option<String> {
    let port: u16 = fields.get("port")?.parse().ok()?;
    Some(join_host_port(fields.get("ip")?, port))
}

/// Asks the server at `addr` for its `ROLE`.
pub(crate) async fn check_role(
    addr: &str,
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Role {
    let attempt = async {
        let mut conn = Conn::open(addr, password, tls, timeout).await?;
        conn.call(&[b"ROLE"]).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Role::Unknown(format!("ROLE on {addr} timed out")),
        Ok(reply) => role_of(addr, reply),
    }
}

/// What a `ROLE` call on `addr` answered.
pub(crate) fn role_of(addr: &str, reply: io::Result<BytesFrame>) -> Role {
    match reply {
        Err(e) => Role::Unknown(format!("ROLE on {addr}: {e}")),
        Ok(BytesFrame::Array(items)) => match items.first().and_then(text) {
            Some("master") => Role::Master,
            Some("slave" | "replica") => Role::Replica,
            other => Role::Unknown(format!("ROLE on {addr} answered {other:?}")),
        },
        Ok(BytesFrame::Error(e)) => Role::Unknown(format!("ROLE on {addr}: {}", &*e)),
        Ok(other) => Role::Unknown(format!("ROLE on {addr} answered {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> BytesFrame {
        BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn fields(pairs: &[(&str, &str)]) -> BytesFrame {
        BytesFrame::Array(pairs.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
    }

    #[test]
    fn view_from_replies() {
        let addr = BytesFrame::Array(vec![bulk("127.0.0.1"), bulk("7001")]);
        let master = fields(&[("name", "g1"), ("config-epoch", "3")]);
        let replicas = BytesFrame::Array(vec![
            fields(&[("ip", "127.0.0.1"), ("port", "7003"), ("flags", "slave,s_down")]),
            fields(&[("ip", "127.0.0.1"), ("port", "7002"), ("flags", "slave")]),
            fields(&[("ip", "127.0.0.1"), ("port", "7004"), ("flags", "slave,disconnected")]),
            fields(&[("ip", "127.0.0.1"), ("port", "7001"), ("flags", "slave")]),
            fields(&[
                ("ip", "127.0.0.1"),
                ("port", "7005"),
                ("flags", "slave"),
                ("role-reported", "master"),
            ]),
            fields(&[
                ("ip", "127.0.0.1"),
                ("port", "7006"),
                ("flags", "slave"),
                ("master-link-status", "err"),
            ]),
            fields(&[
                ("ip", "127.0.0.1"),
                ("port", "7007"),
                ("flags", "slave"),
                ("role-reported", "slave"),
                ("master-link-status", "ok"),
            ]),
        ]);
        let v = group_view(&addr, &master, &replicas).expect("view");
        assert_eq!(v.master, "127.0.0.1:7001");
        assert_eq!(v.config_epoch, 3);
        let r: Vec<(&str, bool)> =
            v.replicas.iter().map(|r| (r.addr.as_str(), r.healthy)).collect();
        assert_eq!(
            r,
            [
                ("127.0.0.1:7002", true),
                ("127.0.0.1:7003", false),
                ("127.0.0.1:7004", false),
                ("127.0.0.1:7005", false),
                ("127.0.0.1:7006", false),
                ("127.0.0.1:7007", true),
            ]
        );
    }

    #[test]
    fn unknown_name_has_no_view() {
        let err = BytesFrame::Error("ERR No such master with that name".into());
        assert_eq!(group_view(&BytesFrame::Null, &err, &err), None);
    }

    #[test]
    fn pubsub_messages() {
        let f =
            BytesFrame::Array(vec![bulk("message"), bulk("+sdown"), bulk("master g1 127.0.0.1 1")]);
        assert!(message(&f).is_some());
        let f = BytesFrame::Array(vec![bulk("subscribe"), bulk("+sdown"), BytesFrame::Integer(1)]);
        assert!(message(&f).is_none());
    }
}
