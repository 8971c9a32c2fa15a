//! A tiny blocking RESP2 client, enough for the demo to wait for its servers and sentinels, and
//! the one HTTP request that tells whether the demo's etcd is up.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+...` or a bulk string (lossy UTF-8).
    Text(String),
    /// `-...`
    Error(String),
    /// `:...`
    Int(i64),
    /// `$-1` / `*-1`
    Nil,
    /// `*...`
    Array(Vec<Value>),
}

impl Value {
    /// The text of a status or bulk reply.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The value after `field` in a flat field/value array (as `SENTINEL master` answers).
    pub fn field(&self, field: &str) -> Option<&str> {
        let Value::Array(items) = self else { return None };
        items
            .chunks(2)
            .find(|kv| kv[0].as_text() == Some(field))
            .and_then(|kv| kv.get(1)?.as_text())
    }
}

/// Runs one command on 127.0.0.1:`port` over a fresh connection, with short timeouts.
pub fn call(port: u16, args: &[&str]) -> Result<Value, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_millis(500);
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    (&stream).write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    read_value(&mut BufReader::new(stream), 0)
}

/// Whether etcd on 127.0.0.1:`port` answers `GET /health` with `"health":"true"` (it is up and
/// has a leader).
pub fn etcd_healthy(port: u16) -> bool {
    use std::io::Read;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_millis(500);
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else { return false };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    // The answer is a few hundred bytes; the cap guards against something else on the port.
    let _ = s.take(64 << 10).read_to_end(&mut out);
    String::from_utf8_lossy(&out).contains("\"health\":\"true\"")
}

fn read_value(r: &mut impl BufRead, depth: usize) -> Result<Value, String> {
    if depth > 8 {
        return Err("reply nested too deeply".into());
    }
    let mut line = String::new();
    if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("connection closed".into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(kind) = line.chars().next() else { return Err("empty reply line".into()) };
    let rest = &line[1..];
    let num = || rest.parse::<i64>().map_err(|_| format!("bad reply line {line:?}"));
    Ok(match kind {
        '+' => Value::Text(rest.to_string()),
        '-' => Value::Error(rest.to_string()),
        ':' => Value::Int(num()?),
        '$' => match usize::try_from(num()?) {
            Err(_) => Value::Nil,
            Ok(n) if n > 64 << 20 => return Err("bulk reply too large".into()),
            Ok(n) => {
                let mut buf = vec![0u8; n + 2];
                r.read_exact(&mut buf).map_err(|e| e.to_string())?;
                buf.truncate(n);
                Value::Text(String::from_utf8_lossy(&buf).into_owned())
            }
        },
        '*' => match usize::try_from(num()?) {
            Err(_) => Value::Nil,
            Ok(n) if n > 1 << 16 => return Err("array reply too large".into()),
            Ok(n) => {
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(read_value(r, depth + 1)?);
                }
                Value::Array(items)
            }
        },
        _ => return Err(format!("bad reply line {line:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_replies() {
        let mut r: &[u8] = b"*4\r\n$4\r\nname\r\n$2\r\ng1\r\n$10\r\nnum-slaves\r\n:1\r\n";
        let v = read_value(&mut r, 0).expect("parse");
        assert_eq!(v.field("name"), Some("g1"));
        assert_eq!(v.field("missing"), None);
        let mut nil: &[u8] = b"$-1\r\n";
        assert_eq!(read_value(&mut nil, 0), Ok(Value::Nil));
        let mut bad: &[u8] = b"?\r\n";
        assert!(read_value(&mut bad, 0).is_err());
    }
}
