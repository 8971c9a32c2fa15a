//! Setting a backend connection up for its mode: connect, then `HELLO 3` (with AUTH) or AUTH,
//! SELECT, and the two questions keyhop answers clients from (`redis_version` for HELLO,
//! `databases` for SELECT), all in one round trip.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use super::{BackendSettings, BackendState, Connection, Mode};
use crate::io::tune_socket;
use crate::resp::{self, ReplyScanner, parse_int};
use crate::stream::{self, Stream};

impl Connection {
    /// Connects and sets the connection up for its mode (see [`open`]).
    pub(super) async fn connect(&self) -> Result<Stream, ConnectError> {
        open(&self.addr, &self.settings, self.mode, &self.state).await
    }
}

/// Connects to `addr` and sets the connection up for `mode`: `HELLO 3` (with AUTH) or AUTH,
/// SELECT, and two questions whose answers clients need from keyhop (the server's version for
/// HELLO, its `databases` for SELECT, kept in `state`), all in one round trip.
pub(crate) async fn open(
    addr: &str,
    settings: &BackendSettings,
    mode: Mode,
    state: &BackendState,
) -> Result<Stream, ConnectError> {
    let timeout = settings.connect_timeout;
    let unreachable = |why: String| ConnectError { why, refused: false };
    let tune = |s: &tokio::net::TcpStream| tune_socket(s, settings.keepalive);
    let mut stream =
        stream::connect(addr, settings.tls.as_ref(), timeout, tune).await.map_err(unreachable)?;
    let pw = settings.password.as_deref().map(str::as_bytes);
    let db = mode.db.to_string();
    let mut steps: Vec<(Step, Bytes)> = Vec::with_capacity(5);
    match (mode.resp3, pw) {
        (true, Some(pw)) => steps.push((
            Step::Hello,
            resp::command([b"HELLO".as_slice(), b"3", b"AUTH", b"default", pw]),
        )),
        (true, None) => steps.push((Step::Hello, resp::command([b"HELLO".as_slice(), b"3"]))),
        (false, Some(pw)) => {
            steps.push((Step::Auth, resp::command([b"AUTH".as_slice(), pw])));
        }
        (false, None) => {}
    }
    if mode.db != 0 {
        steps.push((Step::Select, resp::command([b"SELECT".as_slice(), db.as_bytes()])));
    }
    steps.push((Step::Databases, resp::command([b"CONFIG".as_slice(), b"GET", b"databases"])));
    steps.push((Step::Version, resp::command([b"INFO".as_slice(), b"server"])));
    let request: Vec<u8> = steps.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let replies = tokio::time::timeout(timeout, async {
        tokio::io::AsyncWriteExt::write_all(&mut stream, &request).await?;
        tokio::io::AsyncWriteExt::flush(&mut stream).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let mut scanner = ReplyScanner::default();
        let mut replies = Vec::with_capacity(steps.len());
        while replies.len() < steps.len() {
            match scanner.scan(&buf) {
                Ok(Some(len)) => {
                    replies.push(buf.split_to(len).freeze());
                    continue;
                }
                Ok(None) => {}
                Err(_) => return Err(std::io::Error::other("malformed reply during set-up")),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::other("closed by the server during set-up"));
            }
        }
        Ok(replies)
    })
    .await;
    let replies = match replies {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable(SETUP_TIMED_OUT.into())),
    };
    for ((step, _), reply) in steps.iter().zip(replies.iter()) {
        let error = matches!(reply.first(), Some(b'-' | b'!'));
        let text = || String::from_utf8_lossy(reply).trim_end().trim_start_matches('-').to_string();
        match step {
            Step::Auth | Step::Hello if error => {
                let what = if *step == Step::Auth { "AUTH" } else { "HELLO 3" };
                let hint = if text().contains("unknown command") {
                    " (the server does not speak RESP3: Redis 6 or later is needed)"
                } else {
                    " (check backend_password)"
                };
                return Err(unreachable(format!("{what} failed: {}{hint}", text())));
            }
            Step::Select if error => {
                return Err(ConnectError {
                    why: format!("SELECT {} failed: {}", mode.db, text()),
                    refused: true,
                });
            }
            Step::Databases if !error => {
                if let Some(n) = config_int(reply) {
                    state.databases.store(n.max(0) as u64, Ordering::Relaxed);
                }
            }
            Step::Version if !error => {
                if let Some(v) = resp::text_of(reply).and_then(info_version)
                    && let Ok(mut slot) = state.version.lock()
                    && slot.as_deref() != Some(v)
                {
                    *slot = Some(Arc::from(v));
                }
            }
            _ => {}
        }
    }
    Ok(stream)
}

/// One command of a connection's set-up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Auth,
    Hello,
    Select,
    Databases,
    Version,
}

/// Why an attempt failed when the server accepted the TCP connection but did not answer its
/// set-up in time: the process is there but frozen or overloaded, not gone (see retry.rs).
pub(super) const SETUP_TIMED_OUT: &str = "set-up (AUTH/HELLO/SELECT) timed out";

/// Why a connection could not be set up.
pub(crate) struct ConnectError {
    pub why: String,
    /// The server answered but refused the set-up (SELECT of a database it doesn't have): it is
    /// up, so it is not marked failing and not probed.
    pub refused: bool,
}

/// The integer value of a `CONFIG GET name` reply (RESP2 array or RESP3 map of one pair).
fn config_int(reply: &Bytes) -> Option<i64> {
    let items = resp::elements(reply)?;
    parse_int(resp::text_of(items.get(1)?)?)
}

/// `redis_version` from an `INFO server` text.
fn info_version(text: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(text).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("redis_version:"))?;
    Some(line.trim())
}
