//! The README's failover promises that `failover_proxy.rs` (data safety) does not show, as a
//! client sees them: a master being failed over is fenced with a clear refusal, the fence lifts
//! by itself when a failover never completes, and a `-READONLY`/`-MASTERDOWN` from a master keyhop
//! believes in makes it re-check the sentinels at once instead of waiting for the next poll.
//!
//! Measured numbers are printed with `eprintln!`:
//! `cargo test --test failover_fence -- --nocapture 2>&1 | grep '\[fence\]'`.

mod common;

use std::time::{Duration, Instant};

use common::failover::*;
use common::{
    Raw, Reply, SentinelCluster as Cluster, cmd, free_port, keyhop, keyhop_log, role, temp_dir,
    wait_until,
};

const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// keyhop's bound on one failover step's fence (`FENCE_MAX` in src/run.rs).
const FENCE_MAX: Duration = Duration::from_secs(10);
/// Sentinel's `failover-timeout` while a failover is left hanging: longer than the test waits,
/// so Sentinel never gives the failover up and only keyhop's own bound can lift the fence.
const HANGING_FAILOVER_TIMEOUT_MS: &str = "180000";
/// How long the test waits for the fence to lift (far below the failover timeout above).
const LIFT_BOUND: Duration = Duration::from_secs(60);

#[test]
fn a_failover_that_never_completes_fences_the_master_for_a_bounded_time() {
    let c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let m1 = c.port(0);
    for s in &c.sentinels {
        let set = ["SENTINEL", "SET", "g1", "failover-timeout", HANGING_FAILOVER_TIMEOUT_MS];
        assert_eq!(cmd(s.port, &set), "OK");
    }
    let writer = Writer::start(proxy.port);
    writer.wait_progress(300, Duration::from_secs(10));

    // A frozen replica still looks healthy to Sentinel (its last reply is fresh), so it is
    // chosen and told `REPLICAOF NO ONE`, which it never carries out: the failover hangs in
    // wait-promotion and g1's master stays the master.
    c.servers[1].signal(SIGSTOP);
    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    let fenced = wait_until(FAILOVER_BOUND, || outage(&writer.snapshot(), 0, asked).errors > 0);
    let lifted = fenced
        && wait_until(LIFT_BOUND, || outage(&writer.snapshot(), 0, asked).first_ok_after.is_some());
    if lifted {
        writer.wait_progress(300, Duration::from_secs(10));
    }
    let writes = writer.finish();
    c.servers[1].signal(SIGCONT);
    let log = keyhop_log(dir.path());
    assert!(fenced, "no g1 write was refused after SENTINEL FAILOVER; keyhop log:\n{log}");
    assert!(lifted, "the fence did not lift within {LIFT_BOUND:?}; keyhop log:\n{log}");

    let g1 = outage(&writes, 0, asked);
    let g2 = outage(&writes, 1, asked);
    let (Some(first_fail), Some(back)) = (g1.first_fail, g1.first_ok_after) else {
        panic!("fenced and lifted, yet {g1:?}")
    };
    let fence = back.duration_since(first_fail);
    eprintln!(
        "[fence] failover hanging in wait-promotion: g1 writes refused for {:.0} ms ({} errors, \
         FENCE_MAX {FENCE_MAX:?}), g2 errors {}",
        fence.as_secs_f64() * 1000.0,
        g1.errors,
        g2.errors
    );
    // Every refusal is the fence's, for the master being failed over.
    assert_g1_only_fenced(&writes, &c.addr(0));
    assert_eq!(g2.errors, 0, "g2 is not being failed over: {:?}", errors_of(&writes, 1));
    // The fence held (nearly) its full bound: the lower bound is what a missing or short fence
    // fails; how much longer it took is load, not behaviour, and only printed.
    assert!(fence >= FENCE_MAX - Duration::from_secs(1), "the fence lasted only {fence:?}");
    // Once lifted, the refusals are over and the writes land on the master that never stopped
    // being one.
    assert!(g1.last_fail.is_some_and(|t| t < back), "g1 refused again after the fence lifted");
    assert_eq!(role(m1), "master");
    let after: Vec<&Write> = acked(&writes, 0).into_iter().filter(|w| w.sent >= back).collect();
    assert!(after.len() >= 100, "only {} g1 writes after the fence lifted", after.len());
    let missing = missing_on(m1, &after);
    assert!(missing.is_empty(), "{} writes after the fence not on g1's master", missing.len());
}

/// Makes g1's replica the master and g1's master a replica of `demoted_to` (host, port),
/// without any `+switch-master`: the sentinels forget g1 first and are then told to monitor
/// the new master, as an operator repairing a group by hand would.
fn move_g1_quietly(c: &Cluster, demoted_to: (&str, u16)) {
    let (m1, r1) = (c.port(0), c.port(1));
    for s in &c.sentinels {
        assert_eq!(cmd(s.port, &["SENTINEL", "REMOVE", "g1"]), "OK");
    }
    assert_eq!(cmd(r1, &["REPLICAOF", "NO", "ONE"]), "OK");
    let port = demoted_to.1.to_string();
    assert_eq!(cmd(m1, &["REPLICAOF", demoted_to.0, &port]), "OK");
    let r1s = r1.to_string();
    for s in &c.sentinels {
        let monitor = ["SENTINEL", "MONITOR", "g1", "127.0.0.1", &r1s, "2"];
        assert_eq!(cmd(s.port, &monitor), "OK");
        let set = [
            "SENTINEL",
            "SET",
            "g1",
            "down-after-milliseconds",
            "1000",
            "failover-timeout",
            "3000",
        ];
        assert_eq!(cmd(s.port, &set), "OK");
    }
    assert_eq!(role(r1), "master");
    assert_eq!(role(m1), "slave");
}

/// keyhop on `c` polling the sentinels only once a minute (the most it allows): within a test
/// only an event or a re-check can teach it anything.
fn slow_polling_keyhop(c: &Cluster, dir: &std::path::Path) -> common::Proc {
    let config = c.keyhop_config("");
    let slow = config.replace("poll_interval_ms = 1000", "poll_interval_ms = 60000");
    assert_ne!(config, slow, "the harness's poll interval line changed");
    let proxy = keyhop(dir, &slow);
    let ports = c.sentinel_ports();
    // A link that (re)connects polls at once: let every link be up before the change.
    assert!(wait_until(LINK_BOUND, || ports.iter().all(|&p| keyhop_subscribed(p))));
    proxy
}

/// Waits (without sending anything) until keyhop's log, past `from`, shows that a
/// `-READONLY`/`-MASTERDOWN` made it re-check g1 and then switch g1 to `new`; returns the log.
fn wait_recheck_switch(dir: &std::path::Path, from: usize, new: &str) -> Result<String, String> {
    let t = Instant::now();
    let switched = wait_until(Duration::from_secs(20), || {
        let log = keyhop_log(dir);
        log.get(from..).is_some_and(|l| l.contains("switched master") && l.contains(new))
    });
    let log = keyhop_log(dir);
    let tail = log.get(from..).unwrap_or_default().to_string();
    eprintln!("[fence] waited {} ms for the re-check switch: {switched}", t.elapsed().as_millis());
    if !switched {
        return Err(format!("keyhop never switched g1 to {new}; log since the error:\n{tail}"));
    }
    let asked = tail.find("master answered as a replica; re-checking the group");
    let switch = tail.find("switched master");
    if !(asked.is_some() && asked < switch && tail.contains("via=Majority")) {
        return Err(format!("the switch did not follow a re-check; log since the error:\n{tail}"));
    }
    Ok(tail)
}

#[test]
fn readonly_from_a_demoted_master_rechecks_and_the_next_write_lands_on_the_new_one() {
    let c = Cluster::new();
    let dir = temp_dir();
    let proxy = slow_polling_keyhop(&c, dir.path());
    let (m1, r1) = (c.port(0), c.port(1));
    let key = key_for(0, 1);
    let mut client = Raw::connect(proxy.port);
    assert_eq!(client.call(&["SET", &key, "before"]), Reply::Status("OK".into()));

    move_g1_quietly(&c, ("127.0.0.1", r1));
    let from = keyhop_log(dir.path()).len();
    // keyhop still routes g1 to the old master: the client sees the server's own refusal...
    let readonly = "READONLY You can't write against a read only replica.";
    assert_eq!(client.call(&["SET", &key, "after"]), Reply::Error(readonly.into()));
    // ...which alone (no further request, no poll due for a minute) makes keyhop re-check.
    wait_recheck_switch(dir.path(), from, &c.addr(1)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(client.call(&["SET", &key, "after"]), Reply::Status("OK".into()));
    assert_eq!(cmd(r1, &["GET", &key]), "after", "the write landed on the real master");
    assert!(wait_until(LINK_BOUND, || cmd(m1, &["GET", &key]) == "after"), "replicated");
}

#[test]
fn masterdown_from_a_believed_master_rechecks_and_the_next_read_is_served() {
    let c = Cluster::new();
    let dir = temp_dir();
    let proxy = slow_polling_keyhop(&c, dir.path());
    let (m1, r1) = (c.port(0), c.port(1));
    let key = key_for(0, 2);
    let mut client = Raw::connect(proxy.port);
    assert_eq!(client.call(&["SET", &key, "kept"]), Reply::Status("OK".into()));
    assert!(wait_until(LINK_BOUND, || cmd(r1, &["GET", &key]) == "kept"), "replicated");

    // g1's old master becomes a replica of a server that is not there and refuses to serve
    // stale data: reads get -MASTERDOWN.
    assert_eq!(cmd(m1, &["CONFIG", "SET", "replica-serve-stale-data", "no"]), "OK");
    move_g1_quietly(&c, ("127.0.0.1", free_port()));
    let from = keyhop_log(dir.path()).len();
    let masterdown =
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.";
    assert_eq!(client.call(&["GET", &key]), Reply::Error(masterdown.into()));
    wait_recheck_switch(dir.path(), from, &c.addr(1)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(client.call(&["GET", &key]), Reply::Bulk(Some(b"kept".to_vec())));
    assert_eq!(client.call(&["SET", &key, "new"]), Reply::Status("OK".into()));
    assert_eq!(cmd(r1, &["GET", &key]), "new");
}
