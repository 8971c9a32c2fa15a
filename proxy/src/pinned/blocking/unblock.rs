//! `CLIENT UNBLOCK` of a dedicated connection, sent over another connection: frees the server
//! side of a blocked command at once (its client left, or its master is being replaced) so the
//! dedicated connection can be reused, or so a failover can tell whether the old master served
//! the command.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::Shared;
use crate::backend::{BackendState, Mode, Payload, Request, setup};
use crate::resp;

/// How long an unblock may take before keyhop gives up on it (and closes the connection).
pub(super) const UNBLOCK_TIMEOUT: Duration = Duration::from_millis(1000);

/// Sends `CLIENT UNBLOCK id [ERROR]` to `addr`: over the shared pool when `addr` is a master
/// of the current table, otherwise (or when that fails: fenced, retired) over a fresh
/// connection. True when the server answered (`:1` unblocked, `:0` it was not blocked).
pub(super) async fn unblock(shared: &Shared, addr: &str, id: i64, error: bool) -> bool {
    let id = id.to_string();
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"UNBLOCK", id.as_bytes()];
    if error {
        args.push(b"ERROR");
    }
    let frame = resp::command(args);
    let live = shared.table.load().groups.iter().any(|g| &*g.master == addr);
    if live && via_pool(shared, addr, frame.clone()).await {
        return true;
    }
    via_fresh(shared, addr, &frame).await
}

async fn via_pool(shared: &Shared, addr: &str, frame: Bytes) -> bool {
    let pool = shared.backends.pool(addr);
    let (tx, rx) = oneshot::channel();
    let req = Request { payload: Payload::One(frame), count: 1, reply: tx };
    if pool.conn(0).send(req).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(UNBLOCK_TIMEOUT, rx).await,
        Ok(Ok(Ok(r))) if r.data.first() == Some(&b':')
    )
}

async fn via_fresh(shared: &Shared, addr: &str, frame: &[u8]) -> bool {
    let settings = shared.settings.load();
    let work = async {
        let state = BackendState::default();
        let mut s = setup::open(addr, &settings.backend, Mode::default(), &state).await.ok()?;
        s.write_all(frame).await.ok()?;
        // The answer is one integer line (or an error line).
        let mut line = Vec::with_capacity(16);
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") && line.len() < 512 {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            line.push(byte[0]);
        }
        Some(line.first() == Some(&b':'))
    };
    matches!(tokio::time::timeout(UNBLOCK_TIMEOUT, work).await, Ok(Some(true)))
}
