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

fn config(master: u16, grace_ms: u64) -> String {
    format!(
        "listen = \"{{listen}}\"\nshutdown_grace_ms = {grace_ms}\nrequest_timeout_ms = 10000\n\
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
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    kh.signal(SIGTERM);

    assert!(
        wait_until(Duration::from_secs(2), || refused(kh.port)),
        "keyhop still accepts connections after SIGTERM"
    );
    std::thread::sleep(Duration::from_millis(300).saturating_sub(sent.elapsed()));
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
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    kh.signal(SIGTERM);

    let status = wait_exit(&mut kh, Duration::from_secs(5)).expect("keyhop did not exit");
    master.signal(SIGCONT);
    assert!(status.success(), "exit status {status}; log:\n{}", log(dir.path()));
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert!(client.try_read().is_err(), "the stuck client should be closed without a reply");
    let text = log(dir.path());
    assert!(text.contains("grace expired"), "log:\n{text}");
}

#[test]
fn sigint_closes_idle_clients_at_once() {
    let master = redis_server(&[]);
    let dir = temp_dir();
    let mut kh = keyhop(dir.path(), &config(master.port, 5000));
    let mut idle = Raw::connect(kh.port);
    assert_eq!(idle.call(&["PING"]), Reply::Status("PONG".into()));
    let start = Instant::now();
    kh.signal(SIGINT);
    assert!(idle.try_read().is_err(), "idle client should see the connection close");
    let status = wait_exit(&mut kh, Duration::from_secs(5)).expect("keyhop did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}
