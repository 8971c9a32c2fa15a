//! The admin endpoint in Sentinel mode: Sentinel gauges, `keyhop_failovers_total` and the
//! last failover in /topology after a real `SENTINEL FAILOVER`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{
    cmd, free_port, keyhop, redis_replica, redis_sentinel, redis_server, temp_dir, wait_until,
};

/// GET `path` over a fresh connection: (status, body), or `None` on any I/O problem.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of the sample line starting with `series ` in /metrics.
fn sample(admin: u16, series: &str) -> Option<f64> {
    let (_, body) = get(admin, "/metrics")?;
    let prefix = format!("{series} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
}

fn topology(admin: u16) -> serde_json::Value {
    let (status, body) = get(admin, "/topology").expect("GET /topology");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("JSON")
}

#[test]
fn failover_is_counted_and_shown() {
    let master = redis_server(&[]);
    let replica = redis_replica(master.port, &[]);
    let dir = temp_dir();
    let sentinel = redis_sentinel(dir.path(), &[("g1", master.port)], 1);
    let admin = free_port();
    let config = format!(
        "listen = \"{{listen}}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
         [sentinel]\naddrs = [\"127.0.0.1:{}\"]\npoll_interval_ms = 500\n\
         [[groups]]\nname = \"g1\"\n",
        sentinel.port
    );
    let kdir = temp_dir();
    let _k = keyhop(kdir.path(), &config);
    let ready =
        wait_until(Duration::from_secs(5), || matches!(get(admin, "/readyz"), Some((200, _))));
    assert!(ready, "never ready: {:?}", get(admin, "/readyz"));
    assert_eq!(sample(admin, "keyhop_failovers_total{group=\"g1\"}"), Some(0.0));
    assert!(
        wait_until(Duration::from_secs(5), || sample(admin, "keyhop_sentinel_connected")
            == Some(1.0)),
        "sentinel gauge never 1"
    );
    assert!(sample(admin, "keyhop_sentinel_known").unwrap_or(0.0) >= 1.0);
    let t = topology(admin);
    assert_eq!(t["mode"], "sentinel");
    assert_eq!(t["groups"][0]["master"]["addr"], master.addr());
    assert_eq!(t["groups"][0]["last_failover"], serde_json::Value::Null);
    assert_eq!(t["sentinel"]["connected"], 1);
    // The replica's replication lag, from the prober's INFO replication of both servers.
    let lag = || topology(admin)["groups"][0]["replicas"][0]["lag_bytes"].as_i64();
    assert!(wait_until(Duration::from_secs(10), || lag().is_some()), "no lag: {}", topology(admin));
    assert!(lag().is_some_and(|l| (0..1_000_000).contains(&l)), "{:?}", lag());

    // Sentinel refuses a failover until it has seen the replica; retry for a while.
    let mut last = String::new();
    let accepted = wait_until(Duration::from_secs(20), || {
        last = cmd(sentinel.port, &["SENTINEL", "FAILOVER", "g1"]);
        if last != "OK" {
            std::thread::sleep(Duration::from_millis(300));
        }
        last == "OK"
    });
    assert!(accepted, "SENTINEL FAILOVER kept failing: {last}");
    let counted = wait_until(Duration::from_secs(20), || {
        sample(admin, "keyhop_failovers_total{group=\"g1\"}") == Some(1.0)
    });
    assert!(counted, "failover not counted: {:?}", get(admin, "/metrics"));
    // The failover counter moves in the publish callback, just before the watcher's status.
    let mut t = topology(admin);
    wait_until(Duration::from_secs(5), || {
        t = topology(admin);
        t["groups"][0]["failovers"] == 1
    });
    let g = &t["groups"][0];
    assert_eq!(g["master"]["addr"], replica.addr());
    assert_eq!(g["failovers"], 1);
    assert_eq!(g["last_failover"]["from"], master.addr());
    assert_eq!(g["last_failover"]["to"], replica.addr());
    assert!(g["last_failover"]["at_unix_ms"].as_u64().is_some());
    assert!(t["epoch"].as_u64().unwrap_or(0) >= 2);
    let ready =
        wait_until(Duration::from_secs(5), || matches!(get(admin, "/readyz"), Some((200, _))));
    assert!(ready, "not ready on the new master: {:?}", get(admin, "/readyz"));
}
