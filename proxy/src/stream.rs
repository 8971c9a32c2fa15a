//! A client or backend socket that is plain TCP or TLS over TCP (`tls_cert`/`backend_tls`).
//!
//! One enum rather than a generic parameter, so sessions, pinned modes and backend connections
//! keep their concrete types; the plain arm is a `TcpStream` with tokio's borrowed halves
//! (no lock) and its vectored writes, so plain TCP costs one predictable branch per poll.
//! TLS halves go through `tokio::io::split` (a lock, uncontended: one task polls both).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, tcp};
use tokio_rustls::TlsStream;

/// A connected socket, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, client or server side (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

/// The read half of a [`Stream`], borrowed from it.
pub enum ReadHalf<'a> {
    /// Plain TCP.
    Plain(tcp::ReadHalf<'a>),
    /// TLS.
    Tls(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
}

/// The write half of a [`Stream`], borrowed from it.
pub enum WriteHalf<'a> {
    /// Plain TCP.
    Plain(tcp::WriteHalf<'a>),
    /// TLS.
    Tls(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// The local address of the TCP socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Borrowed read and write halves, usable at once from one task.
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }

    /// True when the connection, idle, has nothing to read and is not closed (so it may be
    /// reused). Never blocks.
    pub fn idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self {
            Stream::Plain(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // Reading the TCP socket under TLS would corrupt the session: poll the TLS stream
            // once instead (TLS 1.3 session tickets are consumed by it without yielding data).
            Stream::Tls(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(&mut **s).poll_read(&mut cx, &mut buf).is_pending()
            }
        }
    }
}

/// Connects to `addr` (`host:port`) within `timeout`, then, with `tls`, runs the TLS handshake
/// (same deadline) verifying the server's certificate for the address's host (a name, or an IP
/// address the certificate must list as an IP SAN). `tune` runs on the TCP socket first.
pub async fn connect(
    addr: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
    tune: impl FnOnce(&TcpStream),
) -> Result<Stream, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("connect timed out after {} ms", timeout.as_millis())),
    };
    tune(&tcp);
    let Some(tls) = tls else { return Ok(Stream::Plain(tcp)) };
    let name = server_name(addr)?;
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(TlsStream::Client(s)))),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err(format!("TLS handshake timed out after {} ms", timeout.as_millis())),
    }
}

/// The name a server's certificate is verified against: the host of `host:port`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("cannot verify TLS for {addr}: the host is not a valid name ({e})"))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, b),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl ReadHalf<'_> {
    /// Reads what has arrived into `buf`, making `room` bytes of space only once there is
    /// something to read: plain TCP waits for readiness first (no waiter is kept in the
    /// caller's future), so an idle connection holds no buffer. `Ok(0)` is end of stream.
    pub fn poll_read_lazily(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut bytes::BytesMut,
        room: usize,
    ) -> Poll<io::Result<usize>> {
        let make_room = |buf: &mut bytes::BytesMut| {
            if buf.capacity() - buf.len() < room / 2 {
                buf.reserve(room);
            }
        };
        match self {
            ReadHalf::Plain(r) => loop {
                if let Err(e) = std::task::ready!(r.as_ref().poll_read_ready(cx)) {
                    return Poll::Ready(Err(e));
                }
                make_room(buf);
                match r.try_read_buf(buf) {
                    // Readiness was stale; it is cleared, so the next poll registers. Nothing
                    // came, so an empty buffer is given back: the connection is idle.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if buf.is_empty() {
                            *buf = bytes::BytesMut::new();
                        }
                        continue;
                    }
                    other => return Poll::Ready(other),
                }
            },
            ReadHalf::Tls(r) => {
                // TLS may hold decrypted bytes the socket no longer signals: read it as a
                // stream, into zeroed room (no unsafe for uninitialised memory).
                make_room(buf);
                let start = buf.len();
                buf.resize(buf.capacity(), 0);
                let mut rb = ReadBuf::new(&mut buf[start..]);
                let r = Pin::new(r).poll_read(cx, &mut rb);
                let n = rb.filled().len();
                buf.truncate(start + n);
                match r {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing came: as for plain TCP, an idle connection keeps no buffer.
                        if buf.is_empty() {
                            *buf = bytes::BytesMut::new();
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl AsyncRead for ReadHalf<'_> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    #[inline]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => Pin::new(s).poll_write(cx, b),
            WriteHalf::Tls(s) => Pin::new(s).poll_write(cx, b),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WriteHalf::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Plain(s) => s.is_write_vectored(),
            WriteHalf::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Longest a client may take over its TLS handshake before it is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A new client's stream: as is without `tls`; otherwise after the TLS handshake, or `None`
/// (the client is closed) when it fails or takes longer than [`HANDSHAKE_TIMEOUT`] -- e.g. a
/// plain-TCP client on a TLS listener.
pub async fn accept(
    tcp: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    peer: SocketAddr,
) -> Option<Stream> {
    let Some(tls) = tls else { return Some(Stream::Plain(tcp)) };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(Stream::Tls(Box::new(TlsStream::Server(s)))),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client TLS handshake failed; closing the client");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "client TLS handshake timed out; closing the client");
            None
        }
    }
}
