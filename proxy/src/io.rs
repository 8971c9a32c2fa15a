//! Socket helpers shared by client sessions and backend connections.

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most buffers handed to one `writev` call.
const MAX_IOV: usize = 64;

/// Writes every buffer with vectored writes (one syscall per up to 64 buffers), so forwarded
/// request and reply slices reach the socket without being copied into a staging buffer.
pub async fn write_all_bufs<W: AsyncWrite + Unpin>(
    w: &mut W,
    bufs: &mut Vec<Bytes>,
) -> io::Result<()> {
    let mut idx = 0;
    while idx < bufs.len() {
        if bufs[idx].is_empty() {
            idx += 1;
            continue;
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut k = 0;
        for b in bufs[idx..].iter().filter(|b| !b.is_empty()).take(MAX_IOV) {
            slices[k] = IoSlice::new(b);
            k += 1;
        }
        let mut n = w.write_vectored(&slices[..k]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "socket closed while writing"));
        }
        while n > 0 && idx < bufs.len() {
            let b = &mut bufs[idx];
            if n >= b.len() {
                n -= b.len();
                idx += 1;
            } else {
                b.advance(n);
                n = 0;
            }
        }
    }
    bufs.clear();
    Ok(())
}

/// Turns on TCP_NODELAY and, when `keepalive` is set, TCP keepalive probes after that idle time.
pub fn tune_socket(stream: &TcpStream, keepalive: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    if let Some(idle) = keepalive {
        let sock = socket2::SockRef::from(stream);
        let ka =
            socket2::TcpKeepalive::new().with_time(idle).with_interval(Duration::from_secs(10));
        let _ = sock.set_tcp_keepalive(&ka);
    }
}
