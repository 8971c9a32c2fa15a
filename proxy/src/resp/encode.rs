//! Replies keyhop makes itself, in the client's protocol ([`Proto`]), and the few reply readers
//! used off the hot path (merges, connection set-up): text of a bulk or verbatim string, the
//! elements of an aggregate.

use bytes::{BufMut, Bytes, BytesMut};

use super::{ReplyScanner, parse_int};

/// The protocol a client speaks (chosen with HELLO), which decides how keyhop renders its own
/// replies and which backend connections serve the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Proto {
    /// RESP2, every connection's start.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Proto {
    /// The version number HELLO uses.
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }

    /// The null reply: `$-1` in RESP2, `_` in RESP3.
    pub fn nil(self) -> Bytes {
        match self {
            Proto::Resp2 => Bytes::from_static(NIL),
            Proto::Resp3 => Bytes::from_static(b"_\r\n"),
        }
    }

    /// A text reply Redis sends as a verbatim string in RESP3 (INFO, CLIENT INFO/LIST) and as a
    /// bulk string in RESP2.
    pub fn verbatim(self, text: &[u8]) -> Bytes {
        match self {
            Proto::Resp2 => bulk(text),
            Proto::Resp3 => {
                let mut out = BytesMut::with_capacity(text.len() + 20);
                out.put_u8(b'=');
                push_decimal(&mut out, text.len() as i64 + 4);
                out.put_slice(b"\r\ntxt:");
                out.put_slice(text);
                out.put_slice(b"\r\n");
                out.freeze()
            }
        }
    }

    /// Appends a map header: `%n` in RESP3, a flat array of `2n` in RESP2.
    pub fn push_map_len(self, out: &mut BytesMut, n: usize) {
        match self {
            Proto::Resp2 => push_array_len(out, n * 2),
            Proto::Resp3 => {
                out.put_u8(b'%');
                push_decimal(out, n as i64);
                out.put_slice(b"\r\n");
            }
        }
    }
}

/// The text of a bulk (`$`) or verbatim (`=`, without its `txt:` format) reply frame.
pub fn text_of(frame: &[u8]) -> Option<&[u8]> {
    let kind = *frame.first()?;
    if kind != b'$' && kind != b'=' {
        return None;
    }
    let cr = frame.iter().position(|&b| b == b'\r')?;
    let n = usize::try_from(parse_int(&frame[1..cr])?).ok()?;
    let body = frame.get(cr + 2..cr + 2 + n)?;
    if kind == b'=' { body.get(4..) } else { Some(body) }
}

/// The element frames of an aggregate reply: an array, set or push's items, or a map's keys and
/// values in turn. `None` for anything else (a null included).
pub fn elements(frame: &Bytes) -> Option<Vec<Bytes>> {
    let kind = *frame.first()?;
    if !matches!(kind, b'*' | b'~' | b'%' | b'>') {
        return None;
    }
    let cr = frame.iter().position(|&b| b == b'\r')?;
    let n = parse_int(&frame[1..cr])?;
    if n < 0 {
        return None;
    }
    let n = if kind == b'%' { n as usize * 2 } else { n as usize };
    let mut out = Vec::with_capacity(n.min(1 << 16));
    let mut pos = cr + 2;
    let mut scanner = ReplyScanner::default();
    for _ in 0..n {
        let len = scanner.scan(frame.get(pos..)?).ok()??;
        out.push(frame.slice(pos..pos + len));
        pos += len;
    }
    Some(out)
}

/// Appends `*n\r\n`.
pub fn push_array_len(out: &mut BytesMut, n: usize) {
    out.put_u8(b'*');
    push_decimal(out, n as i64);
    out.put_slice(b"\r\n");
}

/// Appends a bulk string.
pub fn push_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    out.put_u8(b'$');
    push_decimal(out, data.len() as i64);
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Appends an integer reply.
pub fn push_int(out: &mut BytesMut, v: i64) {
    out.put_u8(b':');
    push_decimal(out, v);
    out.put_slice(b"\r\n");
}

/// Appends a decimal number without allocating.
pub fn push_decimal(out: &mut BytesMut, v: i64) {
    let mut tmp = [0u8; 24];
    let mut i = tmp.len();
    let neg = v < 0;
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        tmp[i] = b'-';
    }
    out.put_slice(&tmp[i..]);
}

/// An error reply `-{msg}\r\n`; `msg` must carry its prefix (`ERR ...`) and no CR/LF.
pub fn error(msg: &str) -> Bytes {
    error_bytes(msg.as_bytes())
}

/// [`error`] for a message that may carry bytes that are not UTF-8 (Redis echoes a client's
/// arguments unchanged in some errors).
pub fn error_bytes(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    out.put_u8(b'-');
    out.extend(msg.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.put_slice(b"\r\n");
    out.freeze()
}

/// A bulk string reply.
pub fn bulk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    push_bulk(&mut out, data);
    out.freeze()
}

/// An integer reply.
pub fn int(v: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    push_int(&mut out, v);
    out.freeze()
}

/// Encodes a command from its arguments as a multibulk frame.
pub fn command<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let args: Vec<&[u8]> = args.into_iter().collect();
    let mut out = BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    push_array_len(&mut out, args.len());
    for a in args {
        push_bulk(&mut out, a);
    }
    out.freeze()
}

/// `+OK\r\n`.
pub const OK: &[u8] = b"+OK\r\n";
/// A null bulk.
pub const NIL: &[u8] = b"$-1\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_elements_and_protocol_rendering() {
        assert_eq!(text_of(b"$3\r\nabc\r\n"), Some(&b"abc"[..]));
        assert_eq!(text_of(b"=7\r\ntxt:abc\r\n"), Some(&b"abc"[..]));
        assert_eq!(text_of(b"$-1\r\n"), None);
        assert_eq!(text_of(b"+OK\r\n"), None);
        let map = Bytes::from_static(b"%1\r\n$9\r\ndatabases\r\n$2\r\n16\r\n");
        let items = elements(&map).expect("map");
        assert_eq!(items.len(), 2);
        assert_eq!(text_of(&items[1]), Some(&b"16"[..]));
        assert!(elements(&Bytes::from_static(b"_\r\n")).is_none());
        assert_eq!(Proto::Resp3.verbatim(b"hi"), Bytes::from_static(b"=6\r\ntxt:hi\r\n"));
        assert_eq!(Proto::Resp2.verbatim(b"hi"), Bytes::from_static(b"$2\r\nhi\r\n"));
        assert_eq!(Proto::Resp2.nil(), Bytes::from_static(NIL));
        let mut out = BytesMut::new();
        Proto::Resp3.push_map_len(&mut out, 2);
        Proto::Resp2.push_map_len(&mut out, 2);
        assert_eq!(&out[..], b"%2\r\n*4\r\n");
    }
}
