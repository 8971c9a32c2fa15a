//! A graceful failover as fast as the promotion itself (issue 12, goal 3): keyhop watches the
//! replica the failover leader promotes and sends the group's writes to it as soon as it answers
//! `ROLE` with `master`, instead of waiting about a second for `+switch-master`, with no
//! acknowledged write lost and none taken by the old master after its fence. And while a group
//! is fenced, `read_from = "replica-preferred"` reads go to a healthy replica.
//!
//! Measured numbers are printed with `eprintln!`:
//! `cargo test --test failover_fast -- --nocapture 2>&1 | grep '\[fast\]'`.

mod common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::failover::*;
use common::{
    Raw, Reply, SentinelCluster as Cluster, array_len, cmd, command_calls, keyhop, keyhop_log,
    redis_replica, temp_dir, wait_until,
};

/// The goal: from the promotion to the first accepted write.
const GOAL: Duration = Duration::from_millis(200);
/// The test's own `ROLE` poll of the replica being promoted.
const TEST_POLL: Duration = Duration::from_millis(1);

const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// Polls `replica`'s `ROLE` every millisecond (re-connecting when Sentinel's promotion closes
/// the connection) until it says `master`; returns when that was seen and how many SETs the old
/// master had executed by then (read at once: it is still a master, so only clients write it).
fn watch_promotion(replica: u16, old_master: u16) -> JoinHandle<Option<(Instant, u64)>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut conn: Option<Raw> = None;
        let mut polls = 0u32;
        while started.elapsed() < FAILOVER_BOUND && polls < 100_000 {
            polls += 1;
            if conn.is_none() {
                conn = Raw::try_connect(replica);
            }
            match conn.as_mut().and_then(|c| c.try_call(&["ROLE"])) {
                Some(Reply::Array(Some(items))) if items[0].text() == "master" => {
                    let at = Instant::now();
                    return Some((at, command_calls(old_master, "set")));
                }
                Some(_) => {}
                None => conn = None,
            }
            std::thread::sleep(TEST_POLL);
        }
        None
    })
}

#[test]
fn graceful_failover_accepts_writes_within_200_ms_of_the_promotion() {
    let c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (m1, r1, m2) = (c.port(0), c.port(1), c.port(2));
    let switches = SwitchWatch::start(&c.sentinel_ports(), "g1");
    let writer = Writer::start(proxy.port);
    writer.wait_progress(300, Duration::from_secs(10));

    let promotion = watch_promotion(r1, m1);
    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    let promoted = promotion.join().expect("promotion watch thread");
    let Some((promoted_at, old_master_sets)) = promoted else {
        panic!("g1's replica did not become master within {FAILOVER_BOUND:?}")
    };
    let resumed = wait_until(Duration::from_secs(10), || {
        first_ok_at_or_after(&writer.snapshot(), 0, promoted_at).is_some()
    });
    let (switch_at, new_master) = switches.wait_since(asked, FAILOVER_BOUND);
    // The old master is turned into a replica of the new one (Sentinel waits a few seconds).
    let demoted = wait_until(FAILOVER_BOUND, || is_linked_replica(m1));
    writer.wait_progress(300, Duration::from_secs(10));
    let writes = writer.finish();
    let log = keyhop_log(dir.path());
    assert!(resumed, "g1 writes did not resume after the promotion; keyhop log:\n{log}");
    assert_eq!(new_master, c.addr(1));
    assert!(demoted, "the old master did not become a replica");

    let g1 = outage(&writes, 0, asked);
    let g2 = outage(&writes, 1, asked);
    let (Some(first_fail), Some(back)) = (g1.first_fail, g1.first_ok_after) else {
        panic!("g1 writes were never refused: the old master was not fenced ({g1:?})")
    };
    let first_ok = first_ok_at_or_after(&writes, 0, promoted_at).expect("resumed").done;
    let window = first_ok.saturating_duration_since(promoted_at);
    let before_fence = writes.iter().filter(|w| w.group == 0 && w.ok() && w.sent < first_fail);
    let lost1 = missing_on(r1, &acked(&writes, 0));
    let lost2 = missing_on(m2, &acked(&writes, 1));
    eprintln!(
        "[fast] SENTINEL FAILOVER: promotion {:.0} ms after the request; first accepted g1 write \
         {:.1} ms after the promotion (goal < {} ms; +switch-master came {:.0} ms after it); g1 \
         writes refused for {:.1} ms (first refusal -> first success), {} errors; g2 errors {}; \
         acknowledged writes lost: g1 {} of {}, g2 {}",
        ms(asked, promoted_at),
        window.as_secs_f64() * 1000.0,
        GOAL.as_millis(),
        ms(promoted_at, switch_at),
        ms(first_fail, back),
        g1.errors,
        g2.errors,
        lost1.len(),
        acked(&writes, 0).len(),
        lost2.len(),
    );
    // keyhop saw the promotion itself: it did not wait for Sentinel to announce it.
    let via = switched_via(&log, "g1", &c.addr(1));
    assert_eq!(via.as_deref(), Some("RolePoll"), "keyhop log:\n{log}");
    assert!(
        first_ok < switch_at,
        "the first g1 write after the promotion waited for +switch-master"
    );
    assert!(window < GOAL, "first accepted g1 write {window:?} after the promotion");
    // The fence was up before the promotion, and the old master took not one SET after it: every
    // SET it executed by the promotion is a write acknowledged before the first refusal.
    assert!(first_fail < promoted_at, "the first refusal came after the promotion");
    assert_eq!(old_master_sets, before_fence.count() as u64, "SETs the old master executed");
    // Every refusal is the fence's (none is a replica's -READONLY), g2 never noticed, and no
    // acknowledged write is lost.
    assert_g1_only_fenced(&writes, &c.addr(0));
    assert!(g1.last_fail.is_some_and(|t| t < first_ok), "g1 refused again after resuming");
    assert_eq!(g2.errors, 0, "{:?}", errors_of(&writes, 1));
    assert!(lost1.is_empty(), "{} acknowledged g1 writes lost, e.g. {:?}", lost1.len(), lost1[0]);
    assert!(lost2.is_empty(), "{} acknowledged g2 writes lost", lost2.len());
}

#[test]
fn reads_go_to_another_replica_while_the_master_is_fenced() {
    let c = Cluster::new();
    let (m1, r1) = (c.port(0), c.port(1));
    // A second replica of g1 that Sentinel never promotes (priority 0), so the frozen r1 is the
    // one the failover selects.
    let r1b = redis_replica(m1, &["--replica-priority", "0"]);
    // Sentinel asks a master for its replicas every 10 s.
    let known = wait_until(FAILOVER_BOUND, || {
        c.sentinels.iter().all(|s| array_len(s.port, &["SENTINEL", "replicas", "g1"]) == 2)
    });
    assert!(known, "the sentinels did not discover g1's second replica");
    for s in &c.sentinels {
        // The failover hangs in wait-promotion (the frozen replica never carries out REPLICAOF NO
        // ONE) and Sentinel never marks it down within the test: only keyhop's own knowledge of
        // the failover keeps reads off it.
        let set = ["SENTINEL", "SET", "g1", "failover-timeout", "180000"];
        assert_eq!(cmd(s.port, &set), "OK");
        let set = ["SENTINEL", "SET", "g1", "down-after-milliseconds", "60000"];
        assert_eq!(cmd(s.port, &set), "OK");
    }
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config("read_from = \"replica-preferred\""));
    let key = key_for(0, 7);
    let mut client = Raw::connect(proxy.port);
    assert_eq!(client.call(&["SET", &key, "v"]), Reply::Status("OK".into()));
    let replicated = wait_until(LINK_BOUND, || {
        cmd(r1, &["GET", &key]) == "v" && cmd(r1b.port, &["GET", &key]) == "v"
    });
    assert!(replicated, "the key did not reach both replicas");
    // keyhop reads from both replicas before the failover: every sentinel found the new one
    // healthy (a sentinel's first look may flag it), and keyhop's table says so.
    let healthy = wait_until(FAILOVER_BOUND, || {
        let both = [r1b.addr(), c.addr(1)];
        c.sentinels.iter().all(|s| both.iter().all(|a| replica_flags(s.port, "g1", a) == "slave"))
    });
    assert!(healthy, "a sentinel does not see both replicas of g1 healthy");
    let both = wait_until(FAILOVER_BOUND, || {
        for port in [r1, r1b.port] {
            assert_eq!(cmd(port, &["CONFIG", "RESETSTAT"]), "OK");
        }
        for _ in 0..4 {
            let _ = client.call(&["GET", &key]);
        }
        command_calls(r1, "get") > 0 && command_calls(r1b.port, "get") > 0
    });
    assert!(both, "keyhop did not read from both replicas");

    c.servers[1].signal(SIGSTOP);
    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    let fence = fenced_error(&c.addr(0));
    // Writes probe the fence on another key of g1: the key read keeps its value.
    let probe = key_for(0, 8);
    let fenced = wait_until(FAILOVER_BOUND, || {
        client.call(&["SET", &probe, "w"]) == Reply::Error(fence.clone())
    });
    let fenced_at = Instant::now();
    let served_before = command_calls(r1b.port, "get");
    let reader = Writer::start_op(proxy.port, Op::Gets { key: key.clone(), value: "v".into() });
    // Two seconds of reads: r1 (frozen) is still a healthy replica to Sentinel all along.
    let enough = wait_until(Duration::from_secs(20), || {
        fenced_at.elapsed() >= Duration::from_secs(2) && reader.ok_count() >= 100
    });
    let still_fenced = client.call(&["SET", &probe, "w"]);
    let reads = reader.finish();
    c.servers[1].signal(SIGCONT);
    let log = keyhop_log(dir.path());
    assert!(fenced, "no write refused after SENTINEL FAILOVER; keyhop log:\n{log}");
    let failed: Vec<&String> = reads.iter().filter_map(|r| r.result.as_ref().err()).collect();
    eprintln!(
        "[fast] fenced g1 (promotion hanging), replica-preferred: {} reads in {:.0} ms from the \
         fence, {} failed; fence seen {:.0} ms after the request",
        reads.len(),
        ms(fenced_at, Instant::now()),
        failed.len(),
        ms(asked, fenced_at),
    );
    assert!(
        enough,
        "only {} reads succeeded; first failure: {:?}",
        reads.len() - failed.len(),
        failed.first()
    );
    // One of the reader's first two reads (round robin) may have gone to the frozen replica
    // before keyhop learned which replica the failover promotes (at `+selected-slave`; the
    // reader waits for that read's answer): that read fails (dropped with the replica, or its
    // connection set-up timed out, depending on the connection's state); every other read is
    // served.
    let frozen = format!("ERR keyhop: backend {} of group g1 ", c.addr(1));
    let failures: Vec<(usize, &String)> = reads
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.result.as_ref().err().map(|e| (i, e)))
        .collect();
    let other: Vec<&(usize, &String)> =
        failures.iter().filter(|(i, e)| *i > 1 || !e.starts_with(&frozen)).collect();
    assert!(other.is_empty(), "reads failed while fenced (index, error): {other:?}");
    assert!(failures.len() <= 1, "reads failed on the frozen replica: {failures:?}");
    // Still fenced at the end: the reads were served during the fence, by the other replica.
    assert_eq!(still_fenced, Reply::Error(fence), "the fence ended during the reads");
    let served = command_calls(r1b.port, "get") - served_before;
    assert_eq!(served, (reads.len() - failed.len()) as u64, "reads the other replica served");
    assert_eq!(command_calls(m1, "get"), 0, "the fenced master served reads");
}
