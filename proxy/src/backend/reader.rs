//! The read side of a shared backend connection: the replies read but not yet handed out, and
//! how the buffer grows.

use std::time::Instant;

use bytes::BytesMut;

use crate::resp::ReplyScanner;

/// First size of a backend connection's read buffer.
const READ_CHUNK: usize = 16 * 1024;
/// Largest size it grows to while reads keep filling it (big values, deep pipelines).
const MAX_READ_CHUNK: usize = 512 * 1024;

/// The read side of a backend connection: replies not yet handed out.
pub(super) struct ReplyReader {
    pub(super) buf: BytesMut,
    pub(super) scanner: ReplyScanner,
    /// Where the next reply starts in `buf` (earlier bytes belong to the oldest request).
    pub(super) pos: usize,
    pub(super) last_stale_report: Option<Instant>,
    /// How much room to make before a read.
    chunk: usize,
}

impl Default for ReplyReader {
    fn default() -> ReplyReader {
        ReplyReader {
            buf: BytesMut::new(),
            scanner: ReplyScanner::default(),
            pos: 0,
            last_stale_report: None,
            chunk: READ_CHUNK,
        }
    }
}

impl ReplyReader {
    /// Keeps room for the next read. A read that filled the buffer doubles the room: with
    /// 16 KB values a reply spans several small reads, and each re-allocation copies the part
    /// already read.
    #[inline]
    pub(super) fn make_room(&mut self) {
        let free = self.buf.capacity() - self.buf.len();
        if free == 0 && self.chunk < MAX_READ_CHUNK {
            self.chunk *= 2;
        }
        if free < self.chunk / 4 {
            self.buf.reserve(self.chunk);
        }
    }
}
