//! A small RESP2 client connection for talking to sentinels and checking `ROLE` on servers.
//!
//! Off the hot path, so it leans on `redis-protocol` for encoding and decoding.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::encode::extend_encode;
use redis_protocol::resp2::types::BytesFrame;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest reply accepted; a sentinel reply bigger than this means something is badly wrong.
const MAX_BUFFER: usize = 64 * 1024 * 1024;

/// A socket, plain or TLS (boxed: these connections are few and off the hot path).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One client connection speaking RESP2.
pub(crate) struct Conn {
    stream: Box<dyn Io>,
    input: BytesMut,
    output: BytesMut,
}

/// An I/O error with a message saying what was being done.
pub(crate) fn err(kind: io::ErrorKind, msg: impl Into<String>) -> io::Error {
    io::Error::new(kind, msg.into())
}

impl Conn {
    /// Connects to `addr` (`host:port`) within `timeout`, with TLS when `tls` is given (the
    /// certificate is verified for the address's host).
    pub(crate) async fn connect(
        addr: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> io::Result<Conn> {
        let timed_out =
            |what: &str| err(io::ErrorKind::TimedOut, format!("{what} {addr} timed out"));
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect to"))??;
        // Small request/reply exchanges: do not let Nagle delay them.
        stream.set_nodelay(true)?;
        let stream: Box<dyn Io> = match tls {
            None => Box::new(stream),
            Some(tls) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
                let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| {
                    err(io::ErrorKind::InvalidInput, format!("TLS to {addr}: bad host name ({e})"))
                })?;
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                let s = tokio::time::timeout(timeout, connector.connect(name, stream))
                    .await
                    .map_err(|_| timed_out("TLS handshake with"))?
                    .map_err(|e| err(e.kind(), format!("TLS handshake with {addr} failed: {e}")))?;
                Box::new(s)
            }
        };
        Ok(Conn { stream, input: BytesMut::with_capacity(4096), output: BytesMut::new() })
    }

    /// Connects and, when `password` is given, authenticates.
    pub(crate) async fn open(
        addr: &str,
        password: Option<&str>,
        tls: Option<&Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> io::Result<Conn> {
        let mut conn = Conn::connect(addr, tls, timeout).await?;
        if let Some(pw) = password {
            let reply = tokio::time::timeout(timeout, conn.call(&[b"AUTH", pw.as_bytes()]))
                .await
                .map_err(|_| err(io::ErrorKind::TimedOut, format!("AUTH to {addr} timed out")))??;
            if let BytesFrame::Error(e) = reply {
                return Err(err(
                    io::ErrorKind::PermissionDenied,
                    format!("AUTH to {addr} failed: {}", &*e),
                ));
            }
        }
        Ok(conn)
    }

    /// Appends a command to the output buffer (sent by [`Conn::flush`]).
    pub(crate) fn queue(&mut self, args: &[&[u8]]) {
        let frame = BytesFrame::Array(
            args.iter().map(|a| BytesFrame::BulkString(Bytes::copy_from_slice(a))).collect(),
        );
        // Encoding an array of bulk strings into a growable buffer cannot fail.
        let _ = extend_encode(&mut self.output, &frame, false);
    }

    /// Writes every queued command.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    /// Reads the next frame. Cancel-safe: bytes read before a cancellation stay buffered.
    pub(crate) async fn read_frame(&mut self) -> io::Result<BytesFrame> {
        loop {
            match decode_bytes_mut(&mut self.input) {
                Ok(Some((frame, _, _))) => return Ok(frame),
                Ok(None) => {}
                Err(e) => {
                    return Err(err(io::ErrorKind::InvalidData, format!("bad RESP reply: {e:?}")));
                }
            }
            if self.input.len() > MAX_BUFFER {
                return Err(err(io::ErrorKind::InvalidData, "reply too large"));
            }
            self.input.reserve(4096);
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(err(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
        }
    }

    /// Sends one command and reads its reply.
    pub(crate) async fn call(&mut self, args: &[&[u8]]) -> io::Result<BytesFrame> {
        self.queue(args);
        self.flush().await?;
        self.read_frame().await
    }
}

/// The frame as text, for simple and bulk strings.
pub(crate) fn text(frame: &BytesFrame) -> Option<&str> {
    match frame {
        BytesFrame::SimpleString(b) | BytesFrame::BulkString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// A flat `field, value, field, value...` array (how Sentinel describes an instance) as a map.
pub(crate) fn field_map(frame: &BytesFrame) -> Option<HashMap<&str, &str>> {
    let BytesFrame::Array(items) = frame else { return None };
    let mut out = HashMap::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        if let [k, v] = pair {
            out.insert(text(k)?, text(v)?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> BytesFrame {
        BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn field_maps() {
        let f = BytesFrame::Array(vec![bulk("ip"), bulk("127.0.0.1"), bulk("port"), bulk("1")]);
        let m = field_map(&f).expect("map");
        assert_eq!(m.get("ip"), Some(&"127.0.0.1"));
        assert_eq!(m.get("port"), Some(&"1"));
        assert!(field_map(&bulk("x")).is_none());
        assert!(field_map(&BytesFrame::Array(vec![bulk("a"), BytesFrame::Integer(1)])).is_none());
    }

    #[tokio::test]
    async fn round_trip_over_a_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 256];
            let n = s.read(&mut buf).await.expect("read");
            assert_eq!(&buf[..n], b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n");
            // A reply split in two writes must still decode as one frame.
            s.write_all(b"*2\r\n$2\r\nhi\r").await.expect("write");
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"\n:5\r\n").await.expect("write");
        });
        let mut c = Conn::connect(&addr, None, Duration::from_secs(2)).await.expect("connect");
        let reply = c.call(&[b"ECHO", b"hi"]).await.expect("reply");
        assert_eq!(reply, BytesFrame::Array(vec![bulk("hi"), BytesFrame::Integer(5)]));
        server.await.expect("server");
        let e = c.read_frame().await.expect_err("closed");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
