//! The differential fuzzer's wire side: an independent RESP2/RESP3 reply reader that keeps each
//! reply's exact bytes (keyhop's own scanner is under test, so it is not used here), and the
//! comparison rules of [`Cmp`].

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;

use super::generate::Cmp;

/// A decoded reply. Lossless: two replies are equal exactly when their bytes are.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Val {
    /// `+ - : _ # , (` and the line's text.
    Line(u8, Vec<u8>),
    /// `$ ! =` and the body (`None`: the `-1` null).
    Blob(u8, Option<Vec<u8>>),
    /// `* ~ > %` and the elements (a map's keys and values in turn; `None`: `*-1`).
    Agg(u8, Option<Vec<Val>>),
    /// `|`: the attribute's entries, then the reply it annotates.
    Attr(Vec<Val>, Box<Val>),
}

/// One reply: its bytes (for the report) and its value.
pub struct Reply {
    pub raw: Vec<u8>,
    pub val: Val,
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads one reply, keeping its bytes.
pub fn read_reply(r: &mut BufReader<TcpStream>) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    let val = read_val(r, &mut raw)?;
    Ok(Reply { raw, val })
}

fn read_line(r: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let start = raw.len();
    if r.read_until(b'\n', raw)? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    let line = &raw[start..];
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!("reply line without CRLF: {}", show(line))));
    }
    Ok(line[..line.len() - 2].to_vec())
}

fn read_val(r: &mut BufReader<TcpStream>, raw: &mut Vec<u8>) -> std::io::Result<Val> {
    let line = read_line(r, raw)?;
    let (&kind, rest) = line.split_first().ok_or_else(|| bad("empty reply line".into()))?;
    let count = || -> std::io::Result<i64> {
        std::str::from_utf8(rest)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad count in {}", show(&line))))
    };
    Ok(match kind {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Val::Line(kind, rest.to_vec()),
        b'$' | b'!' | b'=' => {
            let n = count()?;
            if n < 0 {
                Val::Blob(kind, None)
            } else {
                let start = raw.len();
                raw.resize(start + n as usize + 2, 0);
                r.read_exact(&mut raw[start..])?;
                if !raw.ends_with(b"\r\n") {
                    return Err(bad("bulk without its CRLF".into()));
                }
                Val::Blob(kind, Some(raw[start..start + n as usize].to_vec()))
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = count()?;
            if n < 0 {
                return Ok(Val::Agg(kind, None));
            }
            let items = if matches!(kind, b'%' | b'|') { n * 2 } else { n };
            let vals = (0..items).map(|_| read_val(r, raw)).collect::<std::io::Result<Vec<_>>>()?;
            if kind == b'|' {
                Val::Attr(vals, Box::new(read_val(r, raw)?))
            } else {
                Val::Agg(kind, Some(vals))
            }
        }
        _ => return Err(bad(format!("unknown reply type in {}", show(&line)))),
    })
}

/// The value with its elements sorted, for replies whose order is the server's hash order.
fn sorted(v: &Val, pairs: bool) -> Val {
    match v {
        Val::Agg(kind, Some(items)) if pairs || *kind == b'%' => {
            let mut p: Vec<&[Val]> = items.chunks(2).collect();
            p.sort();
            Val::Agg(*kind, Some(p.concat()))
        }
        Val::Agg(kind, Some(items)) => {
            let mut items = items.clone();
            items.sort();
            Val::Agg(*kind, Some(items))
        }
        other => other.clone(),
    }
}

fn int_of(v: &Val) -> Option<i64> {
    match v {
        Val::Line(b':', t) => std::str::from_utf8(t).ok()?.parse().ok(),
        _ => None,
    }
}

/// Whether keyhop's reply `a` and Redis's `b` agree under `cmp`.
pub fn same(cmp: &Cmp, a: &Val, b: &Val) -> bool {
    match cmp {
        Cmp::Exact => a == b,
        Cmp::Unordered => sorted(a, false) == sorted(b, false),
        Cmp::UnorderedPairs => sorted(a, true) == sorted(b, true),
        Cmp::Near(tolerance) => match (int_of(a), int_of(b)) {
            (Some(x), Some(y)) if x >= 0 && y >= 0 => (x - y).abs() <= *tolerance,
            _ => a == b,
        },
        Cmp::Hello => match (a, b) {
            (Val::Agg(ka, Some(xa)), Val::Agg(kb, Some(xb)))
                if ka == kb && xa.len() == xb.len() =>
            {
                let id = Val::Blob(b'$', Some(b"id".to_vec()));
                xa.chunks(2).zip(xb.chunks(2)).all(|(p, q)| p[0] == q[0] && (p[0] == id || p == q))
            }
            _ => a == b,
        },
        Cmp::Exec(cmps) => match (a, b) {
            (Val::Agg(ka, Some(xa)), Val::Agg(kb, Some(xb))) => {
                ka == kb
                    && xa.len() == cmps.len()
                    && xb.len() == cmps.len()
                    && cmps.iter().zip(xa.iter().zip(xb)).all(|(c, (x, y))| same(c, x, y))
            }
            _ => a == b,
        },
    }
}

/// Bytes as redis-cli shows them (printable ASCII kept, the rest `\xHH`), cut at 400 characters.
pub fn show(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if out.len() >= 400 {
            out.push_str(&format!("... ({} bytes)", bytes.len()));
            break;
        }
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// A command as one line: `SET "k0" "a\r\n"`.
pub fn show_command(args: &[Vec<u8>]) -> String {
    args.iter().map(|a| format!("\"{}\"", show(a))).collect::<Vec<_>>().join(" ")
}
