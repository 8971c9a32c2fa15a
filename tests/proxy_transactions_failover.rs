//! Transactions through keyhop in Sentinel mode: a failover of the transaction's group before
//! EXEC (SENTINEL FAILOVER, and kill -9 of the master) makes EXEC answer that the transaction
//! was not executed, and nothing of it reaches either server. Slow (a failover each): kept apart
//! from tests/proxy_transactions.rs.

mod common;

use common::tag_of;

use std::time::{Duration, Instant};

use common::{Raw, Reply, cmd, keyhop, temp_dir, wait_until};

fn ok() -> Reply {
    Reply::Status("OK".into())
}

fn queued() -> Reply {
    Reply::Status("QUEUED".into())
}

fn err(r: &Reply) -> &str {
    match r {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Bound for anything Sentinel does (detection, election, promotion) on a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// Waits until keyhop sends g1's writes to the server on `port` (the promoted replica): it is a
/// master (so a write reaching it no longer comes by replication) and a write lands there.
fn wait_routed_to(proxy: u16, port: u16) -> bool {
    let probe = format!("{}probe", tag_of(0));
    let mut i = 0u64;
    wait_until(FAILOVER_BOUND, || {
        i += 1;
        let v = format!("v{i}");
        if !cmd(port, &["INFO", "replication"]).contains("role:master") {
            return false;
        }
        let Some(mut c) = Raw::try_connect(proxy) else { return false };
        c.try_call(&["SET", &probe, &v]) == Some(ok()) && cmd(port, &["GET", &probe]) == v
    })
}

/// A transaction queued before a failover of its group, and keys WATCHed before it: EXEC
/// says the transaction was not executed, and nothing of it reaches either server.
fn exec_after_failover(kill_master: bool) {
    let mut c = common::SentinelCluster::new_ready(Duration::from_secs(15));
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (m1, r1) = (c.port(0), c.port(1));
    let a = tag_of(0);
    let (k, w) = (format!("{a}queued"), format!("{a}watched"));
    let mut t = Raw::connect(proxy.port);
    assert_eq!(t.call(&["MULTI"]), ok());
    assert_eq!(t.call(&["SET", &k, "1"]), queued());
    let mut watcher = Raw::connect(proxy.port);
    assert_eq!(watcher.call(&["WATCH", &w]), ok());
    let started = Instant::now();
    if kill_master {
        c.servers[0].kill();
    } else {
        c.force_failover(0, "g1", FAILOVER_BOUND);
    }
    let log = || std::fs::read_to_string(dir.path().join("keyhop.log")).unwrap_or_default();
    assert!(wait_routed_to(proxy.port, r1), "keyhop never routed g1 to {r1}; log:\n{}", log());
    let e = t.call(&["EXEC"]);
    let text = err(&e);
    assert!(
        text.starts_with("EXECABORT keyhop: group g1") && text.contains("not executed"),
        "{text}"
    );
    // The watcher's own writes go to the new master (never to the old one, where they would be
    // lost), and its transaction, begun after the failover, is not executed.
    let own = format!("{a}own");
    assert_eq!(watcher.call(&["SET", &own, "1"]), ok());
    assert_eq!(cmd(r1, &["GET", &own]), "1");
    assert_eq!(watcher.call(&["MULTI"]), ok());
    let _ = watcher.call(&["SET", &w, "1"]);
    let e = watcher.call(&["EXEC"]);
    eprintln!("[txn] kill: {kill_master}: EXEC answered {text:?}, after WATCH {e:?}");
    assert!(err(&e).starts_with("EXECABORT keyhop:") && err(&e).contains("not executed"), "{e:?}");
    assert_eq!(cmd(r1, &["EXISTS", &k, &w]), "0");
    if !kill_master {
        assert_eq!(cmd(m1, &["EXISTS", &k, &w]), "0");
    }
    // Both sessions are usable again, and their next transactions run on the new master.
    for c in [&mut t, &mut watcher] {
        assert_eq!(c.call(&["MULTI"]), ok());
        assert_eq!(c.call(&["INCR", &k]), queued());
        assert!(matches!(c.call(&["EXEC"]), Reply::Array(Some(_))));
    }
    assert_eq!(cmd(r1, &["GET", &k]), "2");
    eprintln!("[txn] failover (kill: {kill_master}) handled in {:?}", started.elapsed());
}

#[test]
fn exec_after_a_sentinel_failover_is_not_executed() {
    exec_after_failover(false);
}

#[test]
fn exec_after_kill_9_of_the_master_is_not_executed() {
    exec_after_failover(true);
}
