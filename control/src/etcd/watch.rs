//! A watch over the gateway: `POST /v3/watch` answers with a chunked body that never ends on its
//! own, one JSON message per line. Chunk boundaries fall anywhere (inside a message, or several
//! messages to a chunk), so the body is split into lines here before decoding.

use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use super::json::{StreamMsg, WatchResponse, error_of};
use super::{EtcdError, Event};

/// One message of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMsg {
    /// Changes under the prefix, in revision order; every change up to `revision` (the
    /// response header's) has now been delivered.
    Events {
        /// The response header's revision.
        revision: i64,
        /// The changes.
        events: Vec<Event>,
    },
    /// Nothing changed under the prefix up to `revision` (a progress notification).
    Progress {
        /// The store's revision.
        revision: i64,
    },
    /// The start revision was compacted away: re-read the state, then watch from its revision.
    /// The watch is over after this (next() answers Ok(None)).
    Compacted {
        /// The oldest revision still available.
        compact_revision: i64,
    },
}

/// Splits a byte stream into `\n`-terminated lines, whatever the chunking.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Appends a chunk.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete, non-blank line (without its `\n`), if one has arrived.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let at = self.buf.iter().position(|&b| b == b'\n')?;
            let mut line: Vec<u8> = self.buf.drain(..=at).collect();
            line.pop();
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(line);
            }
        }
    }

    /// What is left after the last `\n`, if anything but blanks.
    pub fn rest(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.buf);
        (!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest)
    }
}

/// What one line of a watch stream means.
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    /// Nothing for the caller (the `created` acknowledgement).
    Skip,
    /// A message; `last` when the watch is over after it.
    Msg { msg: WatchMsg, last: bool },
}

/// Decodes one line of a watch stream.
pub(crate) fn decode_line(line: &[u8], endpoint: &str) -> Result<Line, EtcdError> {
    let bad = |what: String| EtcdError::Server(format!("etcd at {endpoint}: watch {what}"));
    let msg: StreamMsg<WatchResponse> = serde_json::from_slice(line).map_err(|e| {
        bad(format!("sent a message keyhop cannot read ({e}): {}", String::from_utf8_lossy(line)))
    })?;
    if let Some(err) = msg.error {
        return Err(bad(format!("failed: {}", error_of(&err).unwrap_or_else(|| err.to_string()))));
    }
    let Some(mut r) = msg.result else {
        return Err(bad(format!(
            "sent neither result nor error: {}",
            String::from_utf8_lossy(line)
        )));
    };
    if r.compact_revision > 0 {
        let msg = WatchMsg::Compacted { compact_revision: r.compact_revision };
        return Ok(Line::Msg { msg, last: true });
    }
    if r.canceled {
        return Err(bad(format!("was canceled by etcd: {:?}", r.cancel_reason)));
    }
    let events = r.events().map_err(bad)?;
    let revision = r.header.revision;
    if !events.is_empty() {
        return Ok(Line::Msg { msg: WatchMsg::Events { revision, events }, last: false });
    }
    if r.created {
        return Ok(Line::Skip);
    }
    Ok(Line::Msg { msg: WatchMsg::Progress { revision }, last: false })
}

/// An open watch (see `Etcd::watch_prefix`); dropping it closes the connection.
pub struct Watch {
    body: Incoming,
    driver: JoinHandle<()>,
    lines: Lines,
    endpoint: String,
    done: bool,
}

impl Watch {
    pub(crate) fn new(body: Incoming, driver: JoinHandle<()>, endpoint: String) -> Watch {
        Watch { body, driver, lines: Lines::default(), endpoint, done: false }
    }

    /// The first complete line of the stream (for one-answer streams such as lease keepalive).
    pub(crate) async fn first_line(&mut self) -> Result<Vec<u8>, EtcdError> {
        loop {
            if let Some(line) = self.lines.next_line() {
                return Ok(line);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(EtcdError::Unreachable(format!(
                        "etcd at {}: the connection broke: {e}",
                        self.endpoint
                    )));
                }
                None => {
                    return self.lines.rest().ok_or_else(|| {
                        EtcdError::Server(format!(
                            "etcd at {}: the stream ended without an answer",
                            self.endpoint
                        ))
                    });
                }
            }
        }
    }

    /// Next message; Ok(None) when the stream ended (caller re-watches from last revision + 1).
    /// Err when the connection broke or etcd reported an error; the watch is over then too.
    pub async fn next(&mut self) -> Result<Option<WatchMsg>, EtcdError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(line) = self.lines.next_line() {
                match decode_line(&line, &self.endpoint) {
                    Ok(Line::Skip) => continue,
                    Ok(Line::Msg { msg, last }) => {
                        self.done = last;
                        return Ok(Some(msg));
                    }
                    Err(e) => {
                        self.done = true;
                        return Err(e);
                    }
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data);
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Err(EtcdError::Unreachable(format!(
                        "etcd at {}: the watch connection broke: {e}",
                        self.endpoint
                    )));
                }
                None => {
                    self.done = true;
                    // A last message without its newline is still a message.
                    if let Some(rest) = self.lines.rest()
                        && let Line::Msg { msg, .. } = decode_line(&rest, &self.endpoint)?
                    {
                        return Ok(Some(msg));
                    }
                    return Ok(None);
                }
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{EventKind, Kv};

    const CREATED: &str =
        r#"{"result":{"header":{"revision":"4","raft_term":"2"},"created":true}}"#;
    const EVENTS: &str = r#"{"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"Yg==","create_revision":"3","mod_revision":"3","version":"1","value":"MQ=="}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"4"}}]}}"#;
    const PROGRESS: &str = r#"{"result":{"header":{"revision":"9"}}}"#;

    fn stream() -> String {
        format!("{CREATED}\n{EVENTS}\n\n{PROGRESS}\n")
    }

    fn decode_all(chunks: &[&[u8]]) -> Vec<WatchMsg> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for c in chunks {
            lines.push(c);
            while let Some(l) = lines.next_line() {
                if let Line::Msg { msg, .. } = decode_line(&l, "http://e:1").expect("decode") {
                    out.push(msg);
                }
            }
        }
        out
    }

    #[test]
    fn lines_split_the_same_whatever_the_chunk_boundaries() {
        let s = stream();
        let bytes = s.as_bytes();
        let whole = decode_all(&[bytes]);
        assert_eq!(whole.len(), 2, "{whole:?}");
        assert_eq!(
            whole[0],
            WatchMsg::Events {
                revision: 4,
                events: vec![
                    Event {
                        kind: EventKind::Put,
                        kv: Kv {
                            key: b"b".to_vec(),
                            value: b"1".to_vec(),
                            create_revision: 3,
                            mod_revision: 3,
                            version: 1,
                            lease: 0
                        }
                    },
                    Event {
                        kind: EventKind::Delete,
                        kv: Kv {
                            key: b"a".to_vec(),
                            value: vec![],
                            create_revision: 0,
                            mod_revision: 4,
                            version: 0,
                            lease: 0
                        }
                    },
                ]
            }
        );
        assert_eq!(whole[1], WatchMsg::Progress { revision: 9 });
        // Every split into two chunks, and byte-by-byte chunks.
        for at in 0..=bytes.len() {
            assert_eq!(decode_all(&[&bytes[..at], &bytes[at..]]), whole, "split at {at}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_all(&single), whole);
        let mut lines = Lines::default();
        lines.push(b"{\"partial\":");
        assert_eq!(lines.next_line(), None);
        assert_eq!(lines.rest(), Some(b"{\"partial\":".to_vec()));
    }

    #[test]
    fn compaction_ends_the_watch_and_errors_are_server_errors() {
        let c =
            br#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"3"}}"#;
        assert_eq!(
            decode_line(c, "http://e:1").expect("decode"),
            Line::Msg { msg: WatchMsg::Compacted { compact_revision: 3 }, last: true }
        );
        let e = br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#;
        match decode_line(e, "http://e:1") {
            Err(EtcdError::Server(m)) => {
                assert_eq!(m, "etcd at http://e:1: watch failed: etcdserver: no leader")
            }
            other => panic!("{other:?}"),
        }
        let canceled = br#"{"result":{"header":{"revision":"5"},"canceled":true,"cancel_reason":"permission denied"}}"#;
        match decode_line(canceled, "http://e:1") {
            Err(EtcdError::Server(m)) => {
                assert_eq!(
                    m,
                    "etcd at http://e:1: watch was canceled by etcd: \"permission denied\""
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode_line(b"not json", "http://e:1"), Err(EtcdError::Server(_))));
    }
}
