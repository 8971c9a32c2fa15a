//! Workloads on pinned connections, which redis-benchmark cannot drive: PUBLISH to 50
//! subscribers, and BLPOP/RPUSH ping-pong between pairs of clients. Each runs against one target
//! (keyhop or direct Redis; nutcracker supports neither) and yields the same [`Sample`] as a
//! redis-benchmark row: operations per second, latency percentiles, CPU per million operations.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Res;
use super::stats::{Sample, cpu_per_million, percentile};
use super::workloads::cpu_ticks;

/// The pinned workloads, by row marker (`Row::args[0]`).
pub const PUBLISH_FANIN: &str = "pinned:publish";
pub const BLPOP_PINGPONG: &str = "pinned:blpop";

/// Subscribers of the PUBLISH workload.
pub const SUBSCRIBERS: usize = 50;
/// Client pairs of the ping-pong workload.
pub const PAIRS: usize = 10;
/// No workload thread waits longer than this for a reply.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn connect(port: u16) -> Res<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

fn frame(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out.into_bytes()
}

/// Reads one reply line-by-line (integers, statuses, bulks, flat arrays of bulks): enough for
/// the replies these workloads get. Errors and nulls are failures here.
fn read_reply(r: &mut BufReader<TcpStream>) -> Res<()> {
    let mut line = String::new();
    if r.read_line(&mut line).map_err(|e| format!("read: {e}"))? == 0 {
        return Err("connection closed".into());
    }
    let n = |s: &str| s.trim_end().parse::<i64>().map_err(|_| format!("bad reply {line:?}"));
    match line.as_bytes().first() {
        Some(b'+' | b':') => Ok(()),
        Some(b'$') => {
            let len = n(&line[1..])?;
            if len < 0 {
                return Err("unexpected nil reply".into());
            }
            let mut buf = vec![0u8; len as usize + 2];
            r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))
        }
        Some(b'*') => {
            let count = n(&line[1..])?;
            if count < 0 {
                return Err("unexpected nil reply (timed out?)".into());
            }
            (0..count).try_for_each(|_| read_reply(r))
        }
        _ => Err(format!("unexpected reply {:?}", line.trim_end())),
    }
}

/// Runs workload `marker` with `ops` operations against `port`, charging the CPU of `pid`.
pub fn run(marker: &str, port: u16, pid: u32, ops: u64, tck: f64) -> Res<Sample> {
    let before = cpu_ticks(pid);
    let (elapsed, done, mut lat) = match marker {
        PUBLISH_FANIN => publish_fanin(port, ops)?,
        BLPOP_PINGPONG => pingpong(port, ops)?,
        other => return Err(format!("unknown pinned workload {other}")),
    };
    let after = cpu_ticks(pid);
    lat.sort_by(|a, b| a.total_cmp(b));
    let cpu_per_m = cpu_per_million(before, after, tck, done);
    Ok(Sample {
        rps: done as f64 / elapsed.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        cpu_per_m,
    })
}

/// `messages` PUBLISHes (16 in flight) to one channel with [`SUBSCRIBERS`] subscribers: returns
/// the time until every subscriber had every message, the deliveries, and the publish round-trip
/// latencies (ms).
fn publish_fanin(port: u16, deliveries: u64) -> Res<(Duration, u64, Vec<f64>)> {
    let messages = (deliveries / SUBSCRIBERS as u64).max(1);
    let channel = "bench:fanin";
    let payload = "0123456789abcdef";
    // Every message frame has the same size, so subscribers count bytes instead of parsing.
    let msg_len = frame(&["message", channel, payload]).len() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let s = connect(port)?;
        let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        (&s).write_all(&frame(&["SUBSCRIBE", channel])).map_err(|e| e.to_string())?;
        read_reply(&mut r)?;
        let stop = stop.clone();
        readers.push(std::thread::spawn(move || -> Res<Instant> {
            let want = messages * msg_len;
            let mut got = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            while got < want && !stop.load(Ordering::Relaxed) {
                let n = r.read(&mut buf).map_err(|e| format!("subscriber read: {e}"))?;
                if n == 0 {
                    return Err("subscriber connection closed".into());
                }
                got += n as u64;
            }
            Ok(Instant::now())
        }));
    }
    let publisher = connect(port)?;
    let mut r = BufReader::new(publisher.try_clone().map_err(|e| e.to_string())?);
    let one = frame(&["PUBLISH", channel, payload]);
    let window = 16u64;
    let start = Instant::now();
    let mut lat = Vec::with_capacity((messages / window + 1) as usize);
    let mut sent = 0;
    while sent < messages {
        let batch = window.min(messages - sent);
        let t = Instant::now();
        let mut out = Vec::with_capacity(one.len() * batch as usize);
        (0..batch).for_each(|_| out.extend_from_slice(&one));
        (&publisher).write_all(&out).map_err(|e| e.to_string())?;
        for _ in 0..batch {
            read_reply(&mut r)?;
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        sent += batch;
    }
    let mut last = start;
    let mut failure = None;
    for h in readers {
        match h.join() {
            Ok(Ok(at)) => last = last.max(at),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("subscriber thread panicked".into()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((last - start, messages * SUBSCRIBERS as u64, lat))
}

/// [`PAIRS`] pairs ping-pong through two lists: the producer RPUSHes and BLPOPs the answer, the
/// consumer BLPOPs and RPUSHes the answer. Returns the time, the commands run, and the producer's
/// round-trip latencies (ms).
fn pingpong(port: u16, commands: u64) -> Res<(Duration, u64, Vec<f64>)> {
    let rounds = (commands / (4 * PAIRS as u64)).max(1);
    let start = Instant::now();
    let mut threads = Vec::new();
    for i in 0..PAIRS {
        let (q, a) = (format!("bench:q{{{i}}}"), format!("bench:a{{{i}}}"));
        let consumer = connect(port)?;
        let producer = connect(port)?;
        let (q2, a2) = (q.clone(), a.clone());
        threads.push(std::thread::spawn(move || -> Res<Vec<f64>> {
            let mut r = BufReader::new(consumer.try_clone().map_err(|e| e.to_string())?);
            let (pop, push) = (frame(&["BLPOP", &q2, "0"]), frame(&["RPUSH", &a2, "pong"]));
            for _ in 0..rounds {
                (&consumer).write_all(&pop).map_err(|e| e.to_string())?;
                read_reply(&mut r)?;
                (&consumer).write_all(&push).map_err(|e| e.to_string())?;
                read_reply(&mut r)?;
            }
            Ok(Vec::new())
        }));
        threads.push(std::thread::spawn(move || -> Res<Vec<f64>> {
            let mut r = BufReader::new(producer.try_clone().map_err(|e| e.to_string())?);
            let (push, pop) = (frame(&["RPUSH", &q, "ping"]), frame(&["BLPOP", &a, "0"]));
            let mut lat = Vec::with_capacity(rounds as usize);
            for _ in 0..rounds {
                let t = Instant::now();
                (&producer).write_all(&push).map_err(|e| e.to_string())?;
                read_reply(&mut r)?;
                (&producer).write_all(&pop).map_err(|e| e.to_string())?;
                read_reply(&mut r)?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    let mut failure = None;
    for h in threads {
        match h.join() {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("ping-pong thread panicked".into()),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((start.elapsed(), rounds * 4 * PAIRS as u64, lat))
}
