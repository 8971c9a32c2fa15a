//! SIGTERM/SIGINT: keyhop stops accepting, delivers in-flight replies within
//! `shutdown_grace_ms`, closes its clients and exits 0.

mod common;

use std::net::TcpStream;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::{Proc, Raw, Reply, keyhop, redis_server, temp_dir, wait_until};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// The request timeout is far longer than any wait here, so only the shutdown (its drain or its
/// grace) can end a stuck request.
fn config(master: u16, grace_ms: u64) -> String {
    format!(
        "listen = \"{{listen}}\"\nshutdown_grace_ms = {grace_ms}\nrequest_timeout_ms = 60000\n\
         [[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:{master}\"\n"
    )
}

/// Waits (bounded) for the process to exit and returns its status.
fn wait_exit(p: &mut Proc, timeout: Duration) -> Option<ExitStatus> {
    let child = p.child.as_mut()?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            p.child = None;
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("keyhop.log")).unwrap_or_default()
}

/// Bytes waiting unread in the receive queues of `port`'s accepted connections (IPv4
/// loopback, from /proc/net/tcp): a frozen server's share of requests sent to it.
fn unread_bytes(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address, rem_address, state (01 established), tx_queue:rx_queue.
            let ok = f.get(1)?.ends_with(&local) && *f.get(3)? == "01";
            let rx = f.get(4)?.split(':').nth(1)?;
            ok.then(|| u64::from_str_radix(rx, 16).ok()).flatten()
        })
        .sum()
}

/// Waits until keyhop forwarded a request to the frozen server on `port` (keyhop sends a backend
/// nothing on its own, so unread bytes there are the request).
fn wait_forwarded(port: u16) {
    let sent = wait_until(Duration::from_secs(10), || unread_bytes(port) > 0);
    assert!(sent, "keyhop did not forward the request to the frozen server");
}

fn refused(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_err()
}

#[test]
fn sigterm_delivers_in_flight_replies_then_exits_zero() {
    let master = redis_server(&[]);
    let dir = temp_dir();
    let mut kh = keyhop(dir.path(), &config(master.port, 5000));
    let mut client = Raw::connect(kh.port);
    assert_eq!(client.call(&["SET", "k", "v"]), Reply::Status("OK".into()));

    // The backend freezes: the next request stays in flight.
    master.signal(SIGSTOP);
    client.send(&[b"GET", b"k"]);
    wait_forwarded(master.port);
    kh.signal(SIGTERM);

    assert!(
        wait_until(Duration::from_secs(10), || refused(kh.port)),
        "keyhop still accepts connections after SIGTERM"
    );
    // Draining, with the reply still owed: keyhop waits for it instead of exiting.
    let draining =
        wait_until(Duration::from_secs(10), || log(dir.path()).contains("shutting down"));
    assert!(draining, "log:\n{}", log(dir.path()));
    assert!(wait_exit(&mut kh, Duration::ZERO).is_none(), "exited with a reply in flight");
    master.signal(SIGCONT);

    assert_eq!(client.read(), Reply::Bulk(Some(b"v".to_vec())), "in-flight reply lost");
    let after = client.try_read();
    assert!(after.is_err(), "connection should close after the drain, got {after:?}");

    let status = wait_exit(&mut kh, Duration::from_secs(5)).expect("keyhop did not exit");
    assert!(status.success(), "exit status {status}; log:\n{}", log(dir.path()));
    let text = log(dir.path());
    assert!(text.contains("shutting down"), "log:\n{text}");
    assert!(text.contains("every client finished"), "log:\n{text}");
}

#[test]
fn grace_expiry_closes_stuck_clients_and_still_exits_zero() {
    let master = redis_server(&[]);
    let dir = temp_dir();
    let mut kh = keyhop(dir.path(), &config(master.port, 300));
    let mut client = Raw::connect(kh.port);
    assert_eq!(client.call(&["SET", "k", "v"]), Reply::Status("OK".into()));
    master.signal(SIGSTOP);
    client.send(&[b"GET", b"k"]);
    wait_forwarded(master.port);
    let start = Instant::now();
    kh.signal(SIGTERM);

    // Well before the request timeout (60 s): only the grace (300 ms) can have ended it.
    let status = wait_exit(&mut kh, Duration::from_secs(20)).expect("keyhop did not exit");
    master.signal(SIGCONT);
    eprintln!("[shutdown] grace 300 ms: exited {:?} after SIGTERM", start.elapsed());
    assert!(status.success(), "exit status {status}; log:\n{}", log(dir.path()));
    assert!(client.try_read().is_err(), "the stuck client should be closed without a reply");
    let text = log(dir.path());
    assert!(text.contains("grace expired"), "log:\n{text}");
}

#[test]
fn sigint_closes_idle_clients_at_once() {
    let master = redis_server(&[]);
    let dir = temp_dir();
    // A grace far longer than the waits below: closing the idle client must not wait for it.
    let mut kh = keyhop(dir.path(), &config(master.port, 60_000));
    let mut idle = Raw::connect(kh.port);
    assert_eq!(idle.call(&["PING"]), Reply::Status("PONG".into()));
    let start = Instant::now();
    kh.signal(SIGINT);
    assert!(idle.try_read().is_err(), "idle client should see the connection close");
    let status = wait_exit(&mut kh, Duration::from_secs(20)).expect("keyhop did not exit");
    eprintln!("[shutdown] SIGINT with an idle client: exited {:?} after", start.elapsed());
    assert!(status.success(), "exit status {status}");
    let text = log(dir.path());
    assert!(text.contains("every client finished"), "log:\n{text}");
    assert!(!text.contains("grace expired"), "log:\n{text}");
}
