//! Sentinel mode over TLS (issue 12): TLS-only sentinels and servers (`tls-replication yes`);
//! keyhop learns the master from the sentinel over TLS (`backend_tls`, `sentinel.tls` defaulting
//! to it), checks `ROLE` over TLS, and follows a `SENTINEL FAILOVER`.

mod common;

use std::time::{Duration, Instant};

use common::tls::*;
use common::*;

/// The first line of `ROLE` on a TLS server (`master`, `slave`).
fn tls_role(pki: &Pki, port: u16) -> String {
    tls_cli(pki, port, true, &["ROLE"]).0.lines().next().unwrap_or_default().to_string()
}

#[test]
fn sentinel_mode_over_tls_follows_a_failover() {
    let pki = pki();
    let master = tls_server(&pki, &["--tls-replication", "yes"]);
    let mp = master.port.to_string();
    let replica =
        tls_server(&pki, &["--tls-replication", "yes", "--replicaof", "127.0.0.1", mp.as_str()]);
    let linked = wait_until(Duration::from_secs(15), || {
        tls_cli(&pki, replica.port, true, &["INFO", "replication"])
            .0
            .contains("master_link_status:up")
    });
    assert!(linked, "the TLS replica never linked to its master");
    let sdir = temp_dir();
    let sentinel = tls_sentinel(&pki, sdir.path(), &[("g1", master.port)]);
    let knows_replica = wait_until(Duration::from_secs(20), || {
        tls_cli(&pki, sentinel.port, true, &["SENTINEL", "REPLICAS", "g1"])
            .0
            .contains(&replica.port.to_string())
    });
    assert!(knows_replica, "the sentinel never learned the replica");

    let dir = temp_dir();
    let config = format!(
        "listen = \"{{listen}}\"\nconnect_timeout_ms = 1000\nrequest_timeout_ms = 2000\n{}\n\
         [sentinel]\naddrs = [\"{}\"]\npoll_interval_ms = 200\n\n[[groups]]\nname = \"g1\"\n",
        backend_tls_lines(&pki, true),
        sentinel.addr()
    );
    // keyhop listens only once it learned the master (here: over TLS from the sentinel).
    let kh = keyhop(dir.path(), &config);
    let mut c = Raw::connect(kh.port);
    assert_eq!(c.call(&["SET", "before", "1"]), Reply::Status("OK".into()));
    assert_eq!(tls_cli(&pki, master.port, true, &["GET", "before"]).0, "1");

    let wrote = wait_until(Duration::from_secs(10), || {
        tls_cli(&pki, replica.port, true, &["GET", "before"]).0 == "1"
    });
    assert!(wrote, "the write never replicated");
    let (out, err) = tls_cli(&pki, sentinel.port, true, &["SENTINEL", "FAILOVER", "g1"]);
    assert_eq!(out, "OK", "SENTINEL FAILOVER: {err}");
    let started = Instant::now();
    // keyhop follows: a write through it lands on the promoted replica.
    // Once the replica is promoted, a write through keyhop (a new value each time) must land on
    // it: one sent to the demoted master would not reach it.
    let mut last = None;
    let mut i = 0;
    let followed = wait_until(Duration::from_secs(30), || {
        if tls_role(&pki, replica.port) != "master" {
            return false;
        }
        i += 1;
        let r = c.call(&["SET", "after", &i.to_string()]);
        let ok = r == Reply::Status("OK".into())
            && tls_cli(&pki, replica.port, true, &["GET", "after"]).0 == i.to_string();
        last = Some(r);
        ok
    });
    eprintln!(
        "write on the new master {} ms after SENTINEL FAILOVER",
        started.elapsed().as_millis()
    );
    assert!(
        followed,
        "keyhop never wrote to the promoted replica; last reply {last:?}; log:\n{}",
        keyhop_log(dir.path())
    );
    // The promotion was confirmed by asking the new master's ROLE over TLS (an unanswered check
    // of one sentinel's event is logged as not adopted).
    let log = keyhop_log(dir.path());
    assert!(log.contains("switched master"), "{log}");
    assert!(!log.contains("not adopting a master candidate"), "{log}");
    assert!(
        keyhop_log(dir.path()).contains("subscribed to the sentinel"),
        "{}",
        keyhop_log(dir.path())
    );
}
