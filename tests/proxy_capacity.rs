//! Many clients (issue 12, goal 4): 10,000 idle clients cost keyhop under 2 KB each, every one
//! with TCP keepalive armed, and `max_clients` holds up to the open-files limit, past which a
//! client gets `-ERR max number of clients reached` instead of a connection nobody serves.
//!
//! Clients connect from their own loopback addresses (127.0.0.2 and up), so tens of thousands
//! of connections don't exhaust the ephemeral ports other tests use towards 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{keyhop, redis_server, temp_dir, wait_until};

/// Both tests need most of the process's descriptors: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Raises this process's soft open-files limit to the hard one; returns it.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        let up = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
            r = up;
        }
    }
    r.rlim_cur
}

/// Connects from `from` (a loopback address) to keyhop's port.
fn connect_from(from: [u8; 4], port: u16) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = (from, 0).into();
    s.bind(&local.into())?;
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    s.connect_timeout(&to.into(), Duration::from_secs(10))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Sends PING and expects PONG.
fn ping(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 7];
    s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
        && s.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

/// keyhop's established client sockets on `port` whose peer is `from`: how many, and how many
/// have the keepalive timer running (`tr` 2 in /proc/net/tcp). Counted by peer address: the
/// file is read in pieces and can list a socket twice while others come and go.
fn keepalive_sockets(port: u16, from: [u8; 4]) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    // /proc/net/tcp writes IPv4 addresses as little-endian hex.
    let local = format!("0100007F:{port:04X}");
    let peer = format!("{:02X}{:02X}{:02X}{:02X}:", from[3], from[2], from[1], from[0]);
    let mut established = std::collections::HashSet::new();
    let mut keepalive = std::collections::HashSet::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != local || !f[2].starts_with(&peer) || f[3] != "01" {
            continue;
        }
        established.insert(f[2]);
        if f[5].starts_with("02:") {
            keepalive.insert(f[2]);
        }
    }
    (established.len(), keepalive.len())
}

fn info_clients(port: u16) -> Option<u64> {
    let info = common::cmd(port, &["INFO", "clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn ten_thousand_idle_clients_cost_under_2_kb_each_with_keepalive_armed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let limit = raise_nofile();
    let n = 10_000usize;
    assert!(limit > n as u64 + 200, "this test needs {} open files; the limit is {limit}", n + 200);
    let dir = temp_dir();
    let server = redis_server(&[]);
    let config = format!(
        "listen = \"{{listen}}\"\nmax_clients = 10100\ntcp_keepalive_s = 60\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nslots = [\"0-16383\"]\n",
        server.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    let pid = proxy.pid().expect("keyhop runs");
    let from = [127, 0, 0, 2];
    // One client first, so what is measured is per client, not the first one's set-up.
    let mut warm = connect_from(from, proxy.port).expect("connect");
    assert!(ping(&mut warm));
    let before = common::probe::rss_kb(pid);
    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = connect_from(from, proxy.port).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(ping(&mut c), "client {i} got no PONG");
        clients.push(c);
    }
    assert!(
        wait_until(Duration::from_secs(30), || info_clients(proxy.port) == Some(n as u64 + 2)),
        "INFO says {:?} clients, expected {}",
        info_clients(proxy.port),
        n + 2
    );
    let after = common::probe::rss_kb(pid);
    let per_client = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    let (established, keepalive) = keepalive_sockets(proxy.port, from);
    eprintln!(
        "[capacity] {n} idle clients (each sent one PING) in {:.1} s: keyhop RSS {before} KB -> \
         {after} KB = {per_client:.0} bytes per client; {established} sockets, {keepalive} with \
         the keepalive timer",
        started.elapsed().as_secs_f64()
    );
    // The goal (the debug build measured here is the larger of the two).
    assert!(per_client < 2048.0, "{per_client:.0} bytes per idle client");
    assert_eq!(established, n + 1, "keyhop's established client sockets");
    assert_eq!(keepalive, n + 1, "sockets with TCP keepalive armed");
    // Still answering, and the old clients too.
    for c in clients.iter_mut().step_by(997) {
        assert!(ping(c));
    }
}

#[test]
fn max_clients_holds_up_to_the_open_files_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let limit = raise_nofile();
    let max_clients = 20_000usize;
    let dir = temp_dir();
    let server = redis_server(&[]);
    let config = format!(
        "listen = \"{{listen}}\"\nmax_clients = {max_clients}\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nslots = [\"0-16383\"]\n",
        server.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    // keyhop inherits this limit; with 256 descriptors kept for itself it holds this many.
    let allowed = max_clients.min(limit.saturating_sub(256) as usize);
    let log = common::keyhop_log(dir.path());
    if allowed < max_clients {
        assert!(
            log.contains("max_clients lowered to fit the open-files limit")
                && log.contains(&format!("allowed={allowed}")),
            "no warning about the lowered max_clients: {log}"
        );
    } else {
        assert!(!log.contains("max_clients lowered"), "{log}");
    }
    // This process needs one descriptor per client too.
    assert!(allowed as u64 + 100 < limit, "the open-files limit {limit} is too low for this test");
    let started = Instant::now();
    let mut clients = Vec::with_capacity(allowed);
    // Two source addresses: 20,000 connections from one would nearly use up its ports.
    for i in 0..allowed {
        let from = [127, 0, 0, 3 + (i % 2) as u8];
        let mut c = connect_from(from, proxy.port).unwrap_or_else(|e| panic!("client {i}: {e}"));
        if i % 100 == 0 {
            assert!(ping(&mut c), "client {i} got no PONG");
        }
        clients.push(c);
    }
    let mut extra = connect_from([127, 0, 0, 5], proxy.port).expect("connect the extra client");
    let mut reply = String::new();
    let _ = extra.read_to_string(&mut reply);
    assert_eq!(reply, "-ERR max number of clients reached\r\n");
    eprintln!(
        "[capacity] held {allowed} clients (max_clients {max_clients}, open-files limit {limit}) \
         in {:.1} s; the next one was refused",
        started.elapsed().as_secs_f64()
    );
    for c in clients.iter_mut().step_by(1999) {
        assert!(ping(c));
    }
    // A client that leaves makes room for a new one.
    drop(clients.pop());
    assert!(
        wait_until(Duration::from_secs(10), || {
            connect_from([127, 0, 0, 5], proxy.port).is_ok_and(|mut c| ping(&mut c))
        }),
        "no room after a client left"
    );
}
