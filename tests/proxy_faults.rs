//! keyhop under bad input and backend failures: the proxy survives, other clients and groups are
//! untouched, errors come back in time, and service resumes when a backend returns.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Raw, Reply, cmd, keyhop, redis_server, temp_dir};
use keyhop_router::key_slot;

fn config(g1: &str, g2: &str, extra: &str) -> String {
    format!(
        "listen = \"{{listen}}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = 1000\n{extra}\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{g1}\"\nslots = [\"0-8191\"]\n\n\
         [[groups]]\nname = \"g2\"\nmaster = \"{g2}\"\nslots = [\"8192-16383\"]\n"
    )
}

/// A key owned by g1 (slot < 8192) and one owned by g2.
fn keys() -> (&'static str, &'static str) {
    assert!(key_slot(b"bar") < 8192 && key_slot(b"foo") >= 8192);
    ("bar", "foo")
}

fn assert_closed_after_error(c: &mut Raw, expect: &str) {
    match c.try_read() {
        Ok(Reply::Error(e)) => assert!(e.contains(expect), "expected {expect:?}, got {e:?}"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    assert!(c.try_read().is_err(), "connection is closed after a protocol error");
}

#[test]
fn bad_input_closes_only_that_client() {
    let dir = temp_dir();
    let (g1, g2) = (redis_server(&[]), redis_server(&[]));
    let proxy = keyhop(dir.path(), &config(&g1.addr(), &g2.addr(), ""));
    let mut good = Raw::connect(proxy.port);
    good.call(&["SET", "foo", "kept"]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"*abc\r\n".to_vec(), "invalid multibulk length"),
        (b"*2000000\r\n".to_vec(), "invalid multibulk length"),
        (b"*1\r\n$-7\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$600000000\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n+PING\r\n".to_vec(), "expected '$'"),
        (b"SET a \"unbalanced\r\n".to_vec(), "unbalanced quotes"),
        (vec![b'x'; 70 * 1024], "too big inline request"),
    ];
    for (bytes, expect) in cases {
        let mut bad = Raw::connect(proxy.port);
        bad.send_raw(&bytes);
        assert_closed_after_error(&mut bad, expect);
        assert_eq!(
            good.call(&["GET", "foo"]),
            Reply::Bulk(Some(b"kept".to_vec())),
            "other client untouched"
        );
    }
    // A client that sends half a command and disconnects leaves nothing behind.
    let mut half = Raw::connect(proxy.port);
    half.send_raw(b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$100\r\nabc");
    drop(half);
    // Random garbage from many clients never takes the proxy down.
    let mut seed = 0x1234_5678_u64;
    for _ in 0..50 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
        let mut junk = vec![0u8; 512];
        for b in junk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let _ = s.write_all(&junk);
    }
    assert_eq!(good.call(&["GET", "foo"]), Reply::Bulk(Some(b"kept".to_vec())));
    assert_eq!(cmd(proxy.port, &["PING"]), "PONG");
}

#[test]
fn dead_backend_costs_only_its_requests_and_recovers() {
    let dir = temp_dir();
    let mut g1 = redis_server(&[]);
    let g2 = redis_server(&[]);
    let g1_port = g1.port;
    let proxy = keyhop(dir.path(), &config(&g1.addr(), &g2.addr(), ""));
    let (k1, k2) = keys();
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["SET", k1, "a"]), Reply::Status("OK".into()));
    assert_eq!(c.call(&["SET", k2, "b"]), Reply::Status("OK".into()));

    g1.kill();
    // A pipeline touching both groups: g1's commands fail fast, g2's succeed, order is kept.
    let started = Instant::now();
    c.send(&[b"GET", k1.as_bytes()]);
    c.send(&[b"GET", k2.as_bytes()]);
    c.send(&[b"MGET", k1.as_bytes(), k2.as_bytes()]);
    c.send(&[b"GET", k2.as_bytes()]);
    match c.read() {
        Reply::Error(e) => {
            assert!(e.contains("keyhop") && e.contains("g1"), "names the group: {e}")
        }
        other => panic!("g1 is dead, got {other:?}"),
    }
    assert_eq!(c.read(), Reply::Bulk(Some(b"b".to_vec())));
    assert!(matches!(c.read(), Reply::Error(_)), "a split command needing g1 fails");
    assert_eq!(c.read(), Reply::Bulk(Some(b"b".to_vec())));
    eprintln!("[faults] pipeline answered {} ms after the kill", started.elapsed().as_millis());
    // Many more requests for g1 keep failing at once: keyhop knows the server is gone and does
    // not wait out the request timeout (that error would say "did not answer within").
    let own = format!("ERR keyhop: backend 127.0.0.1:{g1_port} of group g1 ");
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        match c.call(&["GET", k1]) {
            Reply::Error(e) => {
                let reason = e.strip_prefix(&own).unwrap_or_else(|| panic!("{e}"));
                assert!(
                    reason.starts_with("unreachable: ") || reason.starts_with("down ("),
                    "not a dead-backend error: {e}"
                );
            }
            other => panic!("g1 is dead, got {other:?}"),
        }
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("[faults] slowest of 20 requests to the dead backend: {slowest:?}");

    // Bring a server back on the same port: keyhop reconnects on its own.
    let _g1_again = common::redis_server_on(g1_port, &[]);
    let recovered = common::wait_until(Duration::from_secs(10), || {
        matches!(c.call(&["SET", k1, "again"]), Reply::Status(_))
    });
    assert!(recovered, "keyhop reconnects to the returning backend");
    assert_eq!(cmd(g1_port, &["GET", k1]), "again");
    assert_eq!(c.call(&["GET", k2]), Reply::Bulk(Some(b"b".to_vec())));
}

#[test]
fn stalled_backend_times_out_within_request_timeout() {
    let dir = temp_dir();
    let g1 = redis_server(&[]);
    let g2 = redis_server(&[]);
    let proxy = keyhop(dir.path(), &config(&g1.addr(), &g2.addr(), ""));
    let (k1, k2) = keys();
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["SET", k1, "a"]), Reply::Status("OK".into()));
    g1.signal(19); // SIGSTOP: connected but silent
    let t = Instant::now();
    let r = c.call(&["GET", k1]);
    let waited = t.elapsed();
    g1.signal(18); // SIGCONT
    match r {
        Reply::Error(e) => assert_eq!(
            e,
            format!("ERR keyhop: backend {} of group g1 did not answer within 1000 ms", g1.addr())
        ),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    // The request timeout (1000 ms), not another error, ended the wait; a lower bound cannot
    // flake under load, an upper one could.
    eprintln!("[faults] stalled backend: error after {waited:?}");
    assert!(waited >= Duration::from_millis(900), "waited only {waited:?}");
    let mut other = Raw::connect(proxy.port);
    assert_eq!(other.call(&["SET", k2, "fine"]), Reply::Status("OK".into()));
    let ok = common::wait_until(Duration::from_secs(5), || {
        c.call(&["GET", k1]) == Reply::Bulk(Some(b"a".to_vec()))
    });
    assert!(ok, "g1 serves again after it resumes");
}
