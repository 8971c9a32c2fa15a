//! A tiny blocking RESP client for setup, sanity checks and the idle-connection test (the load
//! itself comes from redis-benchmark and `pinned.rs`), and the choice of the MGET workload's keys.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keyhop_router::key_slot;

use super::{Res, SLOTS};

#[derive(Debug)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

pub fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

pub struct Conn {
    pub r: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> Res<Conn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn { r: BufReader::new(s) })
    }

    pub fn call(&mut self, args: &[&str]) -> Res<Reply> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            let _ = write!(out, "${}\r\n{a}\r\n", a.len());
        }
        self.r.get_mut().write_all(out.as_bytes()).map_err(|e| format!("write: {e}"))?;
        self.read()
    }

    pub fn read(&mut self) -> Res<Reply> {
        let mut line = String::new();
        if self.r.read_line(&mut line).map_err(|e| format!("read: {e}"))? == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
        let num = |s: &str| s.parse::<i64>().map_err(|_| format!("bad reply line {line:?}"));
        Ok(match kind {
            "+" => Reply::Status(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(num(rest)?),
            "$" => match num(rest)? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => match num(rest)? {
                n if n < 0 => Reply::Array(None),
                n => Reply::Array(Some((0..n).map(|_| self.read()).collect::<Res<_>>()?)),
            },
            _ => return Err(format!("bad reply line {line:?}")),
        })
    }
}

pub fn call(port: u16, args: &[&str]) -> Res<Reply> {
    Conn::open(port)?.call(args)
}

// ---------------------------------------------------------------------------------------------
// Key placement

/// Ten MGET keys, five in each keyhop group (slots 0-8191 and 8192-16383). When nutcracker runs
/// (`nc` = its port), the keys are also split five/five between its two servers, found by writing
/// candidates through it and looking where they land (ketama over named servers is deterministic).
pub fn mget_keys(nc: Option<u16>, backends: [u16; 2]) -> Res<Vec<String>> {
    let candidates: Vec<String> = (0..400).map(|i| format!("mget:{i}")).collect();
    let keyhop_hi = |k: &str| key_slot(k.as_bytes()) >= SLOTS / 2;
    // Buckets by (keyhop group, nutcracker server); without nutcracker only the first matters.
    let mut buckets: [Vec<&String>; 4] = Default::default();
    if let Some(nc) = nc {
        let (mut via, mut g2) = (Conn::open(nc)?, Conn::open(backends[1])?);
        call(backends[0], &["FLUSHALL"])?;
        call(backends[1], &["FLUSHALL"])?;
        for k in &candidates {
            via.call(&["SET", k, "x"])?;
            let on_g2 = matches!(g2.call(&["EXISTS", k])?, Reply::Int(1));
            buckets[usize::from(keyhop_hi(k)) * 2 + usize::from(on_g2)].push(k);
        }
    } else {
        for k in &candidates {
            buckets[usize::from(keyhop_hi(k)) * 2].push(k);
        }
    }
    // Take keys round-robin from (lo,g1), (hi,g2), (lo,g2), (hi,g1): 3+3+2+2 or 5+5.
    let order: &[usize] = if nc.is_some() { &[0, 3, 1, 2] } else { &[0, 2] };
    let mut keys = Vec::new();
    for i in 0..10 {
        let b = order[i % order.len()];
        let k = buckets[b]
            .get(i / order.len())
            .ok_or("no balanced MGET key set among 400 candidates")?;
        keys.push(k.to_string());
    }
    Ok(keys)
}
