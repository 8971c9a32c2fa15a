//! RESP framing on the hot path: a resumable request scanner (multibulk and inline) that records
//! argument offsets without copying, a resumable reply boundary scanner, and small encoders for
//! replies keyhop makes itself.
//!
//! The scanners are hand-written because redis-protocol's decoders allocate a frame per message and
//! re-parse incomplete frames from the start (~15x the cost, see shared/rust-notes.md and the
//! `hot_path` criterion benchmark).

use std::ops::Range;

use bytes::{Bytes, BytesMut};

mod encode;
pub use encode::*;
#[cfg(test)]
mod proptests;

/// Largest bulk argument accepted (Redis's `proto-max-bulk-len` default).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Most arguments in one multibulk request (as Redis).
pub const MAX_MULTIBULK: usize = 1024 * 1024;
/// Longest inline command line or multibulk header line (as Redis's PROTO_INLINE_MAX_SIZE).
pub const MAX_INLINE: usize = 64 * 1024;

/// A malformed request: the client gets the error and is disconnected, as Redis does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*N` with N not a number or over [`MAX_MULTIBULK`].
    InvalidMultibulkLength,
    /// `$N` with N not a number, negative or over [`MAX_BULK`].
    InvalidBulkLength,
    /// An element of a multibulk request that is not a bulk string.
    ExpectedDollar(u8),
    /// An inline command line longer than [`MAX_INLINE`].
    TooBigInline,
    /// A `*` header line longer than [`MAX_INLINE`].
    TooBigMultibulkCount,
    /// A `$` header line longer than [`MAX_INLINE`].
    TooBigBulkCount,
    /// An inline command with unbalanced quotes.
    UnbalancedQuotes,
}

impl ProtocolError {
    /// The error reply Redis sends for this problem, CRLF included.
    pub fn reply(&self) -> Bytes {
        let msg = match self {
            ProtocolError::InvalidMultibulkLength => "invalid multibulk length".to_string(),
            ProtocolError::InvalidBulkLength => "invalid bulk length".to_string(),
            ProtocolError::ExpectedDollar(b) => format!("expected '$', got '{}'", *b as char),
            ProtocolError::TooBigInline => "too big inline request".to_string(),
            ProtocolError::TooBigMultibulkCount => "too big mbulk count string".to_string(),
            ProtocolError::TooBigBulkCount => "too big bulk count string".to_string(),
            ProtocolError::UnbalancedQuotes => "unbalanced quotes in request".to_string(),
        };
        Bytes::from(format!("-ERR Protocol error: {msg}\r\n"))
    }
}

/// What a complete request frame turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// A multibulk command of `len` bytes; its arguments are in [`RequestScanner::args`].
    Command { len: usize },
    /// An inline command of `len` bytes, re-encoded as a multibulk frame (inline is rare: telnet).
    Inline { len: usize, frame: Bytes },
    /// `len` bytes that carry no command (`*0`, `*-1`, an empty inline line): Redis skips them.
    Empty { len: usize },
}

/// Finds the end of a header line starting at `from`: the index of its `\r` (followed by `\n`).
#[inline]
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match buf[i..].iter().position(|&b| b == b'\r') {
            Some(p) => {
                let at = i + p;
                if at + 1 < buf.len() && buf[at + 1] == b'\n' {
                    return Some(at);
                }
                if at + 1 >= buf.len() {
                    return None;
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

/// Parses a signed decimal as Redis's `string2ll` does: no sign on zero-padding tricks, no spaces.
#[inline]
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as i64)?;
    }
    if neg {
        if v == 0 {
            return None;
        }
        Some(-v)
    } else {
        Some(v)
    }
}

/// A resumable scanner for client requests. Feed it the buffer starting at the first byte of the
/// current request; it keeps its place between calls so a partial request is not re-parsed.
#[derive(Debug, Default)]
pub struct RequestScanner {
    /// Where scanning resumes (relative to the request start).
    pos: usize,
    /// Arguments still expected; `None` before the `*N` header was read.
    remaining: Option<usize>,
    /// Argument byte ranges of the last complete multibulk command (relative to its start).
    pub args: Vec<Range<usize>>,
}

impl RequestScanner {
    /// Scans `buf` (which starts at the current request). `Ok(None)`: need more bytes.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<Scanned>, ProtocolError> {
        if buf.is_empty() {
            return Ok(None);
        }
        if self.remaining.is_none() && self.pos == 0 {
            self.args.clear();
            if buf[0] != b'*' {
                return scan_inline(buf);
            }
            let Some(cr) = find_crlf(buf, 1) else {
                if buf.len() > MAX_INLINE {
                    return Err(ProtocolError::TooBigMultibulkCount);
                }
                return Ok(None);
            };
            let n = parse_int(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
            if n > MAX_MULTIBULK as i64 {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            if n <= 0 {
                return Ok(Some(Scanned::Empty { len: cr + 2 }));
            }
            self.pos = cr + 2;
            self.remaining = Some(n as usize);
        }
        let mut remaining = self.remaining.unwrap_or(0);
        while remaining > 0 {
            let pos = self.pos;
            let Some(&first) = buf.get(pos) else { break };
            if first != b'$' {
                self.reset();
                return Err(ProtocolError::ExpectedDollar(first));
            }
            let (cr, len) = match bulk_header(buf, pos) {
                Some(h) => h,
                None => {
                    // Slow path: incomplete, malformed or unusual headers.
                    let Some(cr) = find_crlf(buf, pos + 1) else {
                        if buf.len() - pos > MAX_INLINE {
                            self.reset();
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        break;
                    };
                    match parse_int(&buf[pos + 1..cr]) {
                        Some(l) if (0..=MAX_BULK as i64).contains(&l) => (cr, l as usize),
                        _ => {
                            self.reset();
                            return Err(ProtocolError::InvalidBulkLength);
                        }
                    }
                }
            };
            let start = cr + 2;
            let end = start + len;
            if buf.len() < end + 2 {
                break;
            }
            // Redis doesn't check the CRLF after a bulk; it skips two bytes. So does keyhop.
            self.args.push(start..end);
            self.pos = end + 2;
            remaining -= 1;
        }
        if remaining > 0 {
            self.remaining = Some(remaining);
            return Ok(None);
        }
        let len = self.pos;
        self.pos = 0;
        self.remaining = None;
        Ok(Some(Scanned::Command { len }))
    }

    /// Forgets any partial request (after an error).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.remaining = None;
        self.args.clear();
    }
}

/// Fast path for a well-formed `$<len>\r\n` at `pos`: digits parsed in the same pass that
/// finds the CR. `None` sends the caller to the careful path (incomplete, leading zero, too long,
/// anything odd), which decides between "need more bytes" and an error.
#[inline]
fn bulk_header(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let digits = buf.get(pos + 1..)?;
    let mut len = 0usize;
    for (i, &d) in digits.iter().enumerate().take(10) {
        match d {
            b'0'..=b'9' => len = len * 10 + (d - b'0') as usize,
            b'\r' if i > 0 && digits.get(i + 1) == Some(&b'\n') => {
                let leading_zero = i > 1 && digits[0] == b'0';
                return (!leading_zero && len <= MAX_BULK).then_some((pos + 1 + i, len));
            }
            _ => return None,
        }
    }
    None
}

/// Scans an inline command (`PING\r\n` typed in telnet) and re-encodes it as multibulk.
fn scan_inline(buf: &[u8]) -> Result<Option<Scanned>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_INLINE {
            return Err(ProtocolError::TooBigInline);
        }
        return Ok(None);
    };
    if nl > MAX_INLINE {
        return Err(ProtocolError::TooBigInline);
    }
    let line = if nl > 0 && buf[nl - 1] == b'\r' { &buf[..nl - 1] } else { &buf[..nl] };
    let args = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
    if args.is_empty() {
        return Ok(Some(Scanned::Empty { len: nl + 1 }));
    }
    let mut out = BytesMut::with_capacity(line.len() + 16 * args.len());
    push_array_len(&mut out, args.len());
    for a in &args {
        push_bulk(&mut out, a);
    }
    Ok(Some(Scanned::Inline { len: nl + 1, frame: out.freeze() }))
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline command line into arguments with Redis's `sdssplitargs` rules: spaces
/// separate, "double quotes" take \n \r \t \b \a \\ \" \xHH escapes, 'single quotes' take \'.
/// `None` on unbalanced quotes or a closing quote not followed by a space.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && let (Some(h), Some(l)) = (hex_val(line[i + 2]), hex_val(line[i + 3]))
                {
                    cur.push(h * 16 + l);
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < n {
                    let e = match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    };
                    cur.push(e);
                    i += 2;
                    continue;
                }
                if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else if in_sq {
                if i >= n {
                    return None;
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                    continue;
                }
                if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                }
                cur.push(c);
                i += 1;
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => {
                        i += 1;
                        break;
                    }
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        args.push(cur);
    }
}

/// A resumable scanner for reply frame boundaries (RESP2 and RESP3 from backends): it finds
/// where each reply ends without decoding it, so replies are forwarded as untouched byte slices.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Where scanning resumes, relative to the reply start.
    pos: usize,
    /// Elements still missing from the reply being scanned (0 when idle).
    pending: usize,
}

/// A reply that is not valid RESP2/RESP3: the backend connection can't be trusted any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadReply;

impl ReplyScanner {
    /// Scans `buf` (starting at the current reply). `Ok(Some(len))`: a complete reply of `len` bytes.
    /// An attribute (`|`) and the reply it annotates count as one reply.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, BadReply> {
        if self.pending == 0 {
            self.pos = 0;
            self.pending = 1;
        }
        while self.pending > 0 {
            let pos = self.pos;
            let Some(&kind) = buf.get(pos) else { return Ok(None) };
            let Some(cr) = find_crlf(buf, pos + 1) else { return Ok(None) };
            match kind {
                // Simple string, error, integer; RESP3 null, boolean, double, big number.
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                    self.pos = cr + 2;
                    self.pending -= 1;
                }
                // Bulk string; RESP3 blob error and verbatim string.
                b'$' | b'!' | b'=' => {
                    let n = parse_int(&buf[pos + 1..cr]).ok_or(BadReply)?;
                    if n < 0 {
                        self.pos = cr + 2;
                    } else {
                        let end = cr + 2 + n as usize + 2;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        self.pos = end;
                    }
                    self.pending -= 1;
                }
                // Array; RESP3 set, push, map (two frames per entry), attribute (its entries
                // and then the reply it annotates).
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_int(&buf[pos + 1..cr]).ok_or(BadReply)?;
                    self.pos = cr + 2;
                    self.pending -= 1;
                    if n > 0 {
                        // Checked: a broken backend's absurd counts must be rejected, not
                        // overflow the count (a panic in debug builds, a wrapped count in release).
                        let n = n as usize;
                        let more = match kind {
                            b'%' => n.checked_mul(2),
                            b'|' => n.checked_mul(2).and_then(|m| m.checked_add(1)),
                            _ => Some(n),
                        };
                        self.pending =
                            more.and_then(|m| self.pending.checked_add(m)).ok_or(BadReply)?;
                    } else if kind == b'|' {
                        self.pending += 1;
                    }
                }
                _ => return Err(BadReply),
            }
        }
        let len = self.pos;
        self.pos = 0;
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Vec<Result<Vec<Vec<u8>>, ProtocolError>> {
        let mut s = RequestScanner::default();
        let mut out = Vec::new();
        let mut off = 0;
        while off < input.len() {
            match s.scan(&input[off..]) {
                Ok(Some(Scanned::Command { len })) => {
                    out.push(Ok(s.args.iter().map(|r| input[off..][r.clone()].to_vec()).collect()));
                    off += len;
                }
                Ok(Some(Scanned::Inline { len, frame })) => {
                    let mut s2 = RequestScanner::default();
                    let Ok(Some(Scanned::Command { .. })) = s2.scan(&frame) else {
                        panic!("bad inline frame")
                    };
                    out.push(Ok(s2.args.iter().map(|r| frame[r.clone()].to_vec()).collect()));
                    off += len;
                }
                Ok(Some(Scanned::Empty { len })) => off += len,
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    fn v(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline() {
        let r = scan_all(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\nPING\r\n*0\r\nset a \"b c\"\r\n");
        assert_eq!(r, vec![Ok(v(&["GET", "foo"])), Ok(v(&["PING"])), Ok(v(&["set", "a", "b c"]))]);
    }

    #[test]
    fn resumes_byte_by_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut s = RequestScanner::default();
        for cut in 1..input.len() {
            assert_eq!(s.scan(&input[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(s.scan(input), Ok(Some(Scanned::Command { len: input.len() })));
        assert_eq!(s.args.len(), 3);
        assert_eq!(&input[s.args[2].clone()], b"hello");
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(scan_all(b"*x\r\n"), vec![Err(ProtocolError::InvalidMultibulkLength)]);
        assert_eq!(scan_all(b"*1048577\r\n"), vec![Err(ProtocolError::InvalidMultibulkLength)]);
        assert_eq!(scan_all(b"*1\r\n$-5\r\n"), vec![Err(ProtocolError::InvalidBulkLength)]);
        assert_eq!(scan_all(b"*1\r\n$536870913\r\n"), vec![Err(ProtocolError::InvalidBulkLength)]);
        assert_eq!(scan_all(b"*1\r\n$03\r\nabc\r\n"), vec![Err(ProtocolError::InvalidBulkLength)]);
        assert_eq!(scan_all(b"*1\r\n$\r\n"), vec![Err(ProtocolError::InvalidBulkLength)]);
        assert_eq!(scan_all(b"*1\r\n$3x\r\n"), vec![Err(ProtocolError::InvalidBulkLength)]);
        assert_eq!(scan_all(b"*2\r\n$0\r\n\r\n$1\r\na\r\n"), vec![Ok(vec![vec![], b"a".to_vec()])]);
        assert_eq!(scan_all(b"*1\r\n:5\r\n"), vec![Err(ProtocolError::ExpectedDollar(b':'))]);
        assert_eq!(scan_all(b"set a \"b\r\n"), vec![Err(ProtocolError::UnbalancedQuotes)]);
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(scan_all(&long), vec![Err(ProtocolError::TooBigInline)]);
        assert_eq!(
            ProtocolError::ExpectedDollar(b':').reply(),
            Bytes::from_static(b"-ERR Protocol error: expected '$', got ':'\r\n")
        );
    }

    #[test]
    fn split_args_rules() {
        assert_eq!(split_args(b"  a  'b c' \"d\\x41\\n\" "), Some(v(&["a", "b c", "dA\n"])));
        assert_eq!(split_args(b"'it\\'s'"), Some(v(&["it's"])));
        assert_eq!(split_args(b"\"a\"b"), None);
        assert_eq!(split_args(b""), Some(vec![]));
    }

    #[test]
    fn reply_scanner_boundaries() {
        let input = b"+OK\r\n$-1\r\n*2\r\n$3\r\nfoo\r\n*1\r\n:5\r\n-ERR x\r\n*-1\r\n*0\r\n";
        let mut s = ReplyScanner::default();
        let mut off = 0;
        let mut lens = vec![];
        while let Ok(Some(len)) = s.scan(&input[off..]) {
            lens.push(len);
            off += len;
        }
        assert_eq!(lens, vec![5, 5, 21, 8, 5, 4]);
        assert_eq!(off, input.len());
        // Byte by byte: never complete early, always resumes.
        let one = b"*2\r\n$3\r\nfoo\r\n*1\r\n:5\r\n";
        let mut s = ReplyScanner::default();
        for cut in 1..one.len() {
            assert_eq!(s.scan(&one[..cut]), Ok(None));
        }
        assert_eq!(s.scan(one), Ok(Some(one.len())));
        assert_eq!(ReplyScanner::default().scan(b"?x\r\n"), Err(BadReply));
    }

    #[test]
    fn reply_scanner_resp3_types() {
        // null, boolean, double, big number, blob error, verbatim, map, set, push, attribute.
        let frames: [&[u8]; 11] = [
            b"_\r\n",
            b"#t\r\n",
            b",1.5\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n*2\r\n_\r\n,2.5\r\n",
            b"~3\r\n+a\r\n+b\r\n%1\r\n+k\r\n#f\r\n",
            b">3\r\n+message\r\n+ch\r\n$3\r\nmsg\r\n",
            b"|1\r\n+ttl\r\n:3600\r\n*2\r\n:1\r\n:2\r\n",
            b"*2\r\n|1\r\n+a\r\n:1\r\n:10\r\n%0\r\n",
        ];
        let all: Vec<u8> = frames.concat();
        let mut s = ReplyScanner::default();
        let mut off = 0;
        for f in frames {
            assert_eq!(s.scan(&all[off..]), Ok(Some(f.len())), "{}", String::from_utf8_lossy(f));
            off += f.len();
        }
        // Byte by byte: a map with nested aggregates never completes early.
        let f = frames[6];
        let mut s = ReplyScanner::default();
        for cut in 1..f.len() {
            assert_eq!(s.scan(&f[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(s.scan(f), Ok(Some(f.len())));
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int(b"123"), Some(123));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"01"), None);
        assert_eq!(parse_int(b"-0"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"99999999999999999999"), None);
        let mut b = BytesMut::new();
        push_decimal(&mut b, -120);
        push_decimal(&mut b, 0);
        assert_eq!(&b[..], b"-1200");
    }

    proptest::proptest! {
        #[test]
        fn any_split_point_gives_same_commands(args in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..40), 1..6), cut in 0usize..400) {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let frame = command(refs.iter().copied());
            let cut = cut.min(frame.len());
            let mut s = RequestScanner::default();
            let first = s.scan(&frame[..cut]).expect("valid");
            if cut < frame.len() {
                proptest::prop_assert_eq!(first, None);
            }
            let done = s.scan(&frame).expect("valid");
            proptest::prop_assert_eq!(done, Some(Scanned::Command { len: frame.len() }));
            let got: Vec<Vec<u8>> = s.args.iter().map(|r| frame[r.clone()].to_vec()).collect();
            proptest::prop_assert_eq!(got, args);
        }

        #[test]
        fn never_panics_on_garbage(data in proptest::collection::vec(0u8..=255, 0..300)) {
            let _ = scan_all(&data);
            let mut r = ReplyScanner::default();
            let _ = r.scan(&data);
        }
    }
}
