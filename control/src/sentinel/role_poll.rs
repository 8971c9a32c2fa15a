//! Watching the replica a Sentinel failover promotes: `ROLE` every few milliseconds over one
//! direct connection, so that keyhop learns of the promotion within milliseconds instead of
//! waiting for `+switch-master` (see `brain/promotion.rs` for why adopting it then is safe).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyhop_router::GroupId;
use tokio::sync::mpsc;

use super::brain::{AdoptedVia, Msg, Role};
use super::link::role_of;
use super::resp::Conn;

/// Pause between two `ROLE` calls: the promotion is seen at most this long after it happened.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Longest watch. Sentinel promotes the replica one timer tick (about 100 ms) after selecting it;
/// a failover that takes longer is left to `+switch-master` and the polls.
const WATCH_MAX: Duration = Duration::from_secs(10);
/// Most `ROLE` calls one watch makes, whatever the clock says.
const MAX_ASKS: u32 = (WATCH_MAX.as_millis() / POLL_EVERY.as_millis()) as u32;

/// Asks `addr` for its `ROLE` until it answers `master`, the bounds pass, or it refuses the
/// connection set-up (a wrong password, which asking again cannot fix); then reports the last
/// answer to the brain.
pub(crate) async fn watch(
    group: GroupId,
    addr: String,
    password: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let started = Instant::now();
    let mut conn: Option<Conn> = None;
    let mut role = Role::Unknown(format!("ROLE on {addr} was not asked"));
    let mut asks = 0;
    while asks < MAX_ASKS {
        let Some(left) = WATCH_MAX.checked_sub(started.elapsed()) else { break };
        asks += 1;
        let had_conn = conn.is_some();
        let refused;
        (role, refused) =
            ask(&mut conn, &addr, password.as_deref(), tls.as_ref(), timeout.min(left)).await;
        if role == Role::Master || refused {
            break;
        }
        // Sentinel's promotion closes every client connection of the replica: ask again at
        // once on a new one, that is when the answer changes.
        if !(had_conn && conn.is_none()) {
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
    tracing::debug!(
        replica = %addr,
        asks,
        ms = started.elapsed().as_millis() as u64,
        ?role,
        "watched a replica being promoted"
    );
    let _ = tx.send(Msg::Role { group, addr, via: AdoptedVia::RolePoll, role });
}

/// One `ROLE` call on `conn` (opened first when needed, dropped when it fails); true when the
/// server refused the connection set-up.
async fn ask(
    conn: &mut Option<Conn>,
    addr: &str,
    password: Option<&str>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> (Role, bool) {
    let attempt = async {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Conn::open(addr, password, tls, timeout).await?),
        };
        c.call(&[b"ROLE"]).await
    };
    let reply = match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    };
    let refused = reply.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied);
    if reply.is_err() {
        *conn = None;
    }
    (role_of(addr, reply), refused)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server answering `ROLE` with `slave` `replica_answers` times, then `master`; the
    /// first connection is closed after its second answer, as Sentinel's promotion does.
    async fn fake_replica(replica_answers: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let mut answered = 0;
            let mut conns = 0;
            loop {
                let (mut s, _) = l.accept().await.expect("accept");
                conns += 1;
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return conns;
                    }
                    let reply: &[u8] = if answered < replica_answers {
                        b"*1\r\n$5\r\nslave\r\n"
                    } else {
                        b"*1\r\n$6\r\nmaster\r\n"
                    };
                    answered += 1;
                    if s.write_all(reply).await.is_err() {
                        break;
                    }
                    if conns == 1 && answered == 2 {
                        break;
                    }
                }
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn watches_until_master_across_a_closed_connection() {
        let (addr, server) = fake_replica(4).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        watch(3, addr.clone(), None, None, Duration::from_secs(2), tx).await;
        let msg = rx.recv().await.expect("a report");
        let Msg::Role { group, addr: a, via, role } = msg else { panic!("{msg:?}") };
        assert_eq!(
            (group, a.as_str(), via, role),
            (3, addr.as_str(), AdoptedVia::RolePoll, Role::Master)
        );
        assert_eq!(server.await.expect("server"), 2, "one reconnect after the close");
    }

    #[tokio::test]
    async fn a_refused_password_ends_the_watch_at_once() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_millis(500), l.accept()).await
            {
                accepted += 1;
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"-WRONGPASS invalid username-password pair\r\n").await;
            }
            accepted
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        watch(0, addr, Some("nope".into()), None, Duration::from_secs(2), tx).await;
        let Some(Msg::Role { role: Role::Unknown(why), .. }) = rx.recv().await else {
            panic!("no Unknown report")
        };
        assert!(why.contains("WRONGPASS"), "{why}");
        assert_eq!(server.await.expect("server"), 1, "no second attempt after a refused AUTH");
    }
}
