//! Socket helpers shared by client sessions and backend connections.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use smallvec::SmallVec;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// Most buffers handed to one `writev` call.
const MAX_IOV: usize = 64;

/// Bytes waiting to be written, as the slices they came in (written with vectored writes, never
/// copied into a staging buffer).
#[derive(Default)]
pub struct OutQueue {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    /// Everything was handed to the writer but not yet flushed: a TLS stream may keep
    /// encrypted bytes the socket did not take, and only a flush pushes them out later.
    unflushed: bool,
}

impl OutQueue {
    /// Appends `b` (empty slices are skipped).
    #[inline]
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.chunks.push_back(b);
        }
    }

    /// Bytes not yet written.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// True when everything was written (and flushed).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes == 0 && !self.unflushed
    }

    /// One vectored write of up to [`MAX_IOV`] slices: ready once the socket took some bytes
    /// (cancel-safe, so it can be one branch of a `select!`). Once the queue is empty the
    /// writer is flushed (free for plain TCP; TLS may hold bytes back until then).
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.bytes == 0 {
            return self.poll_flush(w, cx, false);
        }
        let slices: SmallVec<[IoSlice<'_>; 8]> =
            self.chunks.iter().take(MAX_IOV).map(|b| IoSlice::new(b)).collect();
        let r = Pin::new(&mut *w).poll_write_vectored(cx, &slices);
        drop(slices);
        let n = match r {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "socket closed while writing",
                )));
            }
            Poll::Ready(Ok(n)) => n,
        };
        self.advance(n);
        if self.bytes > 0 {
            return Poll::Ready(Ok(()));
        }
        self.poll_flush(w, cx, true)
    }

    /// Flushes the writer once the queue is empty; `wrote`: this poll already wrote bytes, so
    /// it is ready even if the flush is not done (it stays owed, see [`OutQueue::is_empty`]).
    fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        cx: &mut Context<'_>,
        wrote: bool,
    ) -> Poll<io::Result<()>> {
        match Pin::new(w).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.unflushed = true;
                if wrote { Poll::Ready(Ok(())) } else { Poll::Pending }
            }
        }
    }

    /// Writes some of the queue (see [`OutQueue::poll_write`]).
    pub async fn write_some<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(w, cx)).await
    }

    fn advance(&mut self, mut n: usize) {
        self.bytes -= n.min(self.bytes);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else { return };
            if n >= front.len() {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                return;
            }
        }
    }
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

/// Sleeps until `deadline`, or forever without one (a `select!` branch that may be off).
pub(crate) async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that, like a TLS stream, takes every byte at once but sends them only on a
    /// flush, which is pending the first time it is asked.
    #[derive(Default)]
    struct Holding {
        held: Vec<u8>,
        sent: Vec<u8>,
        flush_polls: usize,
    }

    impl AsyncWrite for Holding {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.held.extend_from_slice(b);
            Poll::Ready(Ok(b.len()))
        }

        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flush_polls += 1;
            if self.flush_polls == 1 {
                return Poll::Pending;
            }
            let held = std::mem::take(&mut self.held);
            self.sent.extend(held);
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn an_emptied_queue_stays_owed_until_the_writer_is_flushed() {
        let mut w = Holding::default();
        let mut q = OutQueue::default();
        q.push(Bytes::from_static(b"hello "));
        q.push(Bytes::from_static(b"world"));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The default vectored write takes one slice: no flush while bytes are left.
        assert!(matches!(q.poll_write(&mut w, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!((q.len(), w.flush_polls), (5, 0));
        // Everything handed over, the flush pending: ready (bytes moved), but not empty.
        assert!(matches!(q.poll_write(&mut w, &mut cx), Poll::Ready(Ok(()))));
        assert_eq!((q.len(), q.is_empty(), w.sent.len()), (0, false, 0));
        // The next poll only flushes.
        assert!(matches!(q.poll_write(&mut w, &mut cx), Poll::Ready(Ok(()))));
        assert!(q.is_empty());
        assert_eq!(w.sent, b"hello world");
        assert_eq!(w.flush_polls, 2);
    }
}
