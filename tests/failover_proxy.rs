//! keyhop in Sentinel mode through failovers, as a client sees it: one connection writes
//! continuously through keyhop (alternating keys of g1 and g2, each write a unique value) while
//! g1's master is killed, failed over gracefully, or the sentinels come and go.
//!
//! Measured numbers are printed with `eprintln!`:
//! `cargo test --test failover_proxy -- --nocapture 2>&1 | grep '\[failover\]'`.

mod common;

use std::time::{Duration, Instant};

use common::failover::*;
use common::{
    Knocks, Raw, Reply, SentinelCluster as Cluster, cmd, command_calls as calls, keyhop,
    keyhop_log, redis_replica, redis_server, role, temp_dir, wait_until,
};

#[test]
fn kill_9_of_a_master_under_continuous_writes() {
    let mut c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (m1, r1, m2) = (c.port(0), c.port(1), c.port(2));
    let switches = SwitchWatch::start(&c.sentinel_ports(), "g1");
    let writer = Writer::start(proxy.port);
    writer.wait_progress(300, Duration::from_secs(10));
    assert!(writer.snapshot().iter().all(Write::ok), "errors before the kill");

    let killed_at = Instant::now();
    c.servers[0].kill();
    let (switch_at, new_master) = switches.wait_since(killed_at, FAILOVER_BOUND);
    assert_eq!(new_master, c.servers[1].addr(), "Sentinel promoted g1's replica");
    // Writes to g1 resume; then keep writing a little to see that they stay up.
    let resumed = wait_until(Duration::from_secs(10), || {
        first_ok_at_or_after(&writer.snapshot(), 0, switch_at).is_some()
    });
    writer.wait_progress(300, Duration::from_secs(10));
    let writes = writer.finish();
    let log = keyhop_log(dir.path());
    assert!(resumed, "g1 writes never resumed after +switch-master; keyhop log:\n{log}");

    let g1 = outage(&writes, 0, killed_at);
    let g2 = outage(&writes, 1, Instant::now() - Duration::from_secs(3600));
    let first_ok = first_ok_at_or_after(&writes, 0, switch_at).expect("resumed").done;
    let (Some(fail), Some(back)) = (g1.first_fail, g1.first_ok_after) else {
        panic!("a dead master must cost some g1 writes: {g1:?}")
    };
    eprintln!(
        "[failover] kill -9: +switch-master {:.0} ms after the kill; g1 write outage {:.1} ms \
         (first failed write -> first success); first successful g1 write {:.1} ms from the first \
         +switch-master (negative: before it); g1 errors {}; g2 errors {}; writes {}",
        ms(killed_at, switch_at),
        ms(fail, back),
        ms(switch_at, back),
        g1.errors,
        g2.errors,
        writes.len(),
    );
    assert_eq!(g2.errors, 0, "g2 must not notice g1's failover: {:?}", errors_of(&writes, 1));
    assert!(g1.errors > 0);
    // keyhop saw the promotion itself (the promoted replica's ROLE), not a later poll.
    let via = switched_via(&log, "g1", &c.addr(1));
    assert_eq!(via.as_deref(), Some("RolePoll"), "keyhop log:\n{log}");
    // Every g1 error is a clear keyhop error naming the group, none after the switch settled.
    assert!(
        writes
            .iter()
            .filter(|w| w.group == 0)
            .filter_map(|w| w.result.as_ref().err())
            .all(|e| e.contains("g1")),
        "{:?}",
        errors_of(&writes, 0)
    );
    assert!(g1.last_fail.is_some_and(|t| t < first_ok), "g1 failed again after resuming");

    // Every write acknowledged to g2 reads back intact, through keyhop and on g2's master.
    let g2_acked = acked(&writes, 1);
    assert!(g2_acked.len() > 300);
    let lost = missing_on(m2, &g2_acked);
    assert!(lost.is_empty(), "{} acknowledged g2 writes lost, e.g. {:?}", lost.len(), lost.first());
    let keys: Vec<&str> = g2_acked.iter().map(|w| w.key.as_str()).collect();
    let through = get_many(proxy.port, &keys);
    assert!(g2_acked.iter().zip(&through).all(|(w, v)| v.as_deref() == Some(w.value.as_bytes())));

    // g1 writes acknowledged after the switch are on the promoted replica, now a master.
    assert!(is_master(r1), "ROLE of the promoted replica: {}", role(r1));
    let after: Vec<&Write> = acked(&writes, 0).into_iter().filter(|w| w.sent >= fail).collect();
    assert!(!after.is_empty());
    let lost_after = missing_on(r1, &after);
    assert!(lost_after.is_empty(), "{} g1 writes after the failover lost", lost_after.len());
    let mut c1 = Raw::connect(proxy.port);
    assert_eq!(c1.call(&["SET", &key_for(0, 999_999), "after"]), Reply::Status("OK".into()));
    assert_eq!(cmd(r1, &["GET", &key_for(0, 999_999)]), "after");
    // Writes acknowledged by the old master just before it died may not have reached the
    // replica (asynchronous replication): counted, not asserted.
    let before: Vec<&Write> = acked(&writes, 0).into_iter().filter(|w| w.sent < fail).collect();
    eprintln!(
        "[failover] kill -9: g1 writes acknowledged before the kill and missing on the promoted \
         replica: {} of {}",
        missing_on(r1, &before).len(),
        before.len()
    );
    let _ = m1;
}

#[test]
fn graceful_failover_loses_no_acknowledged_write() {
    let c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (m1, r1, m2) = (c.port(0), c.port(1), c.port(2));
    let switches = SwitchWatch::start(&c.sentinel_ports(), "g1");
    let writer = Writer::start(proxy.port);
    writer.wait_progress(300, Duration::from_secs(10));

    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    let (switch_at, new_master) = switches.wait_since(asked, FAILOVER_BOUND);
    assert_eq!(new_master, c.servers[1].addr());
    let landed = wait_writes_land(&writer, 0, r1, switch_at, Duration::from_secs(10));
    // The old master is turned into a replica of the new one (Sentinel waits a few seconds).
    let demoted = wait_until(FAILOVER_BOUND, || is_linked_replica(m1));
    writer.wait_progress(300, Duration::from_secs(10));
    let writes = writer.finish();
    let log = keyhop_log(dir.path());
    assert!(landed, "g1 writes did not move to the new master; keyhop log:\n{log}");
    assert!(demoted, "old master did not become a replica: {}", role(m1));
    assert!(is_master(r1), "{}", role(r1));

    let g1 = outage(&writes, 0, asked);
    let g2 = outage(&writes, 1, Instant::now() - Duration::from_secs(3600));
    let first_ok = first_ok_at_or_after(&writes, 0, switch_at).map(|w| w.done);
    let lost1 = missing_on(r1, &acked(&writes, 0));
    let lost2 = missing_on(m2, &acked(&writes, 1));
    eprintln!(
        "[failover] SENTINEL FAILOVER: +switch-master {:.0} ms after the request; g1 errors {}; \
         g1 outage {:?} ms; g2 errors {}; acknowledged writes lost: g1 {} of {}, g2 {}",
        ms(asked, switch_at),
        g1.errors,
        g1.first_fail.zip(g1.first_ok_after).map(|(a, b)| ms(a, b)),
        g2.errors,
        lost1.len(),
        acked(&writes, 0).len(),
        lost2.len(),
    );
    if let Some(w) = lost1.first() {
        eprintln!(
            "[failover] first lost g1 write sent {:.1} ms after the request, {:.1} ms from +switch-master",
            ms(asked, w.sent),
            ms(switch_at, w.sent)
        );
    }
    assert_eq!(g2.errors, 0, "{:?}", errors_of(&writes, 1));
    assert!(first_ok.is_some());
    // keyhop fenced the old master (the data safety below is not luck): g1 writes were refused,
    // and only with the fence's own words.
    assert!(g1.errors > 0, "no g1 write was refused: the old master was not fenced");
    assert_g1_only_fenced(&writes, &c.addr(0));
    assert!(
        lost1.is_empty() && lost2.is_empty(),
        "acknowledged writes lost in a graceful failover: g1 {} (first {:?}), g2 {}",
        lost1.len(),
        lost1.first(),
        lost2.len()
    );
}

#[test]
fn a_sentinel_killed_and_restarted_mid_run() {
    let mut c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (r1, r2) = (c.port(1), c.port(3));
    let sw1 = SwitchWatch::start(&c.sentinel_ports(), "g1");
    let sw2 = SwitchWatch::start(&c.sentinel_ports(), "g2");
    let ports = c.sentinel_ports();
    assert!(wait_until(LINK_BOUND, || ports.iter().all(|&p| keyhop_subscribed(p))));
    let writer = Writer::start(proxy.port);
    writer.wait_progress(200, Duration::from_secs(10));

    // Two sentinels of three still make the quorum and the majority to elect a leader.
    c.sentinels[2].kill();
    let killed_at = Instant::now();
    c.servers[0].kill();
    let (switch1, new1) = sw1.wait_since(killed_at, FAILOVER_BOUND);
    assert_eq!(new1, c.servers[1].addr());
    assert!(wait_writes_land(&writer, 0, r1, switch1, Duration::from_secs(10)), "g1 moved");

    c.restart_sentinel(2);
    let back = Instant::now();
    let resubscribed = wait_until(LINK_BOUND, || keyhop_subscribed(ports[2]));
    let resub_ms = back.elapsed().as_millis();
    assert!(resubscribed, "keyhop did not subscribe to the restarted sentinel again");
    // A failover of g2 led by the restarted sentinel.
    let asked = c.force_failover(2, "g2", FAILOVER_BOUND);
    let (switch2, new2) = sw2.wait_since(asked, FAILOVER_BOUND);
    assert_eq!(new2, c.servers[3].addr());
    assert!(wait_writes_land(&writer, 1, r2, switch2, Duration::from_secs(10)), "g2 moved");
    writer.wait_progress(200, Duration::from_secs(10));
    let writes = writer.finish();

    let g1 = outage(&writes, 0, killed_at);
    let g1_back = first_ok_at_or_after(&writes, 0, switch1).expect("g1 resumed").done;
    let g2 = outage(&writes, 1, asked);
    let g2_early = writes.iter().filter(|w| w.group == 1 && w.sent < asked && !w.ok()).count();
    let lost2 = missing_on(r2, &acked(&writes, 1));
    let after1: Vec<&Write> = acked(&writes, 0).into_iter().filter(|w| w.sent >= switch1).collect();
    let lost1 = missing_on(r1, &after1);
    eprintln!(
        "[failover] sentinel restarted: kill -9 with a sentinel down: +switch-master {:.0} ms after \
         the kill, first g1 write {:.1} ms after it, g1 errors {}; keyhop re-subscribed {resub_ms} \
         ms after the restart; SENTINEL FAILOVER g2 via the restarted sentinel: +switch-master \
         {:.0} ms after the request, g2 errors {}, g2 outage {:?} ms; acknowledged writes lost: \
         g1 {} g2 {}",
        ms(killed_at, switch1),
        ms(switch1, g1_back),
        g1.errors,
        ms(asked, switch2),
        g2.errors,
        g2.first_fail.zip(g2.first_ok_after).map(|(a, b)| ms(a, b)),
        lost1.len(),
        lost2.len(),
    );
    assert_eq!(g2_early, 0, "g2 erred before its own failover: {:?}", errors_of(&writes, 1));
    let log = keyhop_log(dir.path());
    let via = switched_via(&log, "g1", &c.addr(1));
    assert_eq!(via.as_deref(), Some("RolePoll"), "keyhop log:\n{log}");
    assert!(lost1.is_empty() && lost2.is_empty(), "lost: g1 {} g2 {}", lost1.len(), lost2.len());
}

#[test]
fn all_sentinels_down_then_back() {
    let mut c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (r1, m2) = (c.port(1), c.port(2));
    let writer = Writer::start(proxy.port);
    writer.wait_progress(200, Duration::from_secs(10));

    let down_at = Instant::now();
    for s in &mut c.sentinels {
        s.kill();
    }
    // Several reconnect attempts to every sentinel (and poll intervals) later, the last table
    // still serves.
    let knocks: Vec<Knocks> = c.sentinels.iter().map(|s| Knocks::listen(s.port)).collect();
    let retried = wait_until(LINK_BOUND, || knocks.iter().all(|k| k.count() >= 4));
    let attempts: Vec<usize> = knocks.iter().map(Knocks::count).collect();
    drop(knocks);
    assert!(retried, "keyhop did not keep reconnecting to the sentinels: {attempts:?}");
    let during = writer.snapshot();
    let served: Vec<&Write> = during.iter().filter(|w| w.sent >= down_at).collect();
    assert!(served.len() > 200, "too few writes while the sentinels were down: {}", served.len());
    assert!(
        served.iter().all(|w| w.ok()),
        "errors with the sentinels down: {:?}",
        errors_of(&during, 0)
    );

    for i in 0..3 {
        c.restart_sentinel(i);
    }
    let back = Instant::now();
    let ports = c.sentinel_ports();
    let resubscribed = wait_until(LINK_BOUND, || ports.iter().all(|&p| keyhop_subscribed(p)));
    let resub_ms = back.elapsed().as_millis();
    assert!(resubscribed, "keyhop did not subscribe to the sentinels again");
    let switches = SwitchWatch::start(&ports, "g1");
    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    let (switch_at, new) = switches.wait_since(asked, FAILOVER_BOUND);
    assert_eq!(new, c.servers[1].addr());
    let landed = wait_writes_land(&writer, 0, r1, switch_at, Duration::from_secs(10));
    writer.wait_progress(200, Duration::from_secs(10));
    let writes = writer.finish();
    assert!(landed, "g1 writes did not move to the new master; log:\n{}", keyhop_log(dir.path()));

    let g1 = outage(&writes, 0, asked);
    let g1_early = writes.iter().filter(|w| w.group == 0 && w.sent < asked && !w.ok()).count();
    let g2 = outage(&writes, 1, down_at);
    let lost1 = missing_on(r1, &acked(&writes, 0));
    let lost2 = missing_on(m2, &acked(&writes, 1));
    eprintln!(
        "[failover] all sentinels down ({attempts:?} reconnect attempts, {:.0} ms): {} writes, 0 \
         errors; keyhop re-subscribed to all {resub_ms} ms after their restart; SENTINEL FAILOVER g1: +switch-master {:.0} ms after \
         the request, g1 errors {}, g1 outage {:?} ms, g2 errors {}; acknowledged writes lost: g1 \
         {} g2 {}",
        ms(down_at, back),
        served.len(),
        ms(asked, switch_at),
        g1.errors,
        g1.first_fail.zip(g1.first_ok_after).map(|(a, b)| ms(a, b)),
        g2.errors,
        lost1.len(),
        lost2.len(),
    );
    assert_eq!(g1_early, 0, "{:?}", errors_of(&writes, 0));
    assert_eq!(g2.errors, 0, "{:?}", errors_of(&writes, 1));
    assert!(lost1.is_empty() && lost2.is_empty(), "lost: g1 {} g2 {}", lost1.len(), lost2.len());
}

#[test]
fn a_dying_replica_with_replica_preferred_reads() {
    let mut c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config("read_from = \"replica-preferred\""));
    let (m1, r1) = (c.port(0), c.port(1));
    let key = key_for(0, 7);
    assert_eq!(Raw::connect(proxy.port).call(&["SET", &key, "kept"]), Reply::Status("OK".into()));
    assert!(wait_until(LINK_BOUND, || cmd(r1, &["GET", &key]) == "kept"), "replicated");
    // keyhop learns the replica's health from the sentinels shortly after start.
    let (before_m, before_r) = (calls(m1, "get"), calls(r1, "get"));
    let reader = Writer::start_op(proxy.port, Op::Gets { key: key.clone(), value: "kept".into() });
    let on_replica = wait_until(LINK_BOUND, || calls(r1, "get") >= before_r + 200);
    assert!(on_replica, "reads are not served by the replica");
    assert!(calls(m1, "get") < before_m + 200, "reads went to the master");

    let killed_at = Instant::now();
    c.servers[1].kill();
    let m_at_kill = calls(m1, "get");
    // The window covers the time until the sentinels mark the replica down (had keyhop waited
    // for them, the reads until then would have failed) and plenty of reads after.
    let r1_addr = c.addr(1);
    let marked = wait_until(FAILOVER_BOUND, || {
        c.sentinels.iter().all(|s| replica_flags(s.port, "g1", &r1_addr).contains("s_down"))
    });
    assert!(marked, "the sentinels did not mark the dead replica down");
    reader.wait_progress(500, Duration::from_secs(10));
    let reads = reader.finish();
    let after: Vec<&Write> = reads.iter().filter(|w| w.sent >= killed_at).collect();
    let errors: Vec<&Write> = after.iter().filter(|w| !w.ok()).copied().collect();
    let last_error = errors.last().map(|w| ms(killed_at, w.done));
    let first_ok_from_master = after.iter().find(|w| w.ok()).map(|w| ms(killed_at, w.done));
    eprintln!(
        "[failover] replica killed (replica-preferred): {} reads after the kill, {} errors, last \
         error {:?} ms after the kill, first good read {:?} ms after; e.g. {:?}",
        after.len(),
        errors.len(),
        last_error,
        first_ok_from_master,
        errors.first().map(|w| &w.result),
    );
    assert!(after.len() > 100, "reads stalled after the kill");
    assert!(calls(m1, "get") > m_at_kill + 100, "the master serves the reads now");
    // With the master healthy, a read-only client should hardly notice: the reads in flight when
    // the replica dies fail, the next ones go to the master at once (not only when Sentinel
    // marks the replica down, a second or more later).
    assert!(
        errors.len() <= 5,
        "{} read errors after the replica died, the last {:?} ms after the kill",
        errors.len(),
        last_error
    );
    // Once reads are back they stay back: no failing read after the first good one.
    let first_ok = after.iter().position(|w| w.ok()).expect("reads served after the kill");
    let late: Vec<&Result<(), String>> =
        after[first_ok..].iter().filter(|w| !w.ok()).map(|w| &w.result).collect();
    assert!(late.is_empty(), "reads failed again after the master took over: {late:?}");
}

#[test]
fn static_replica_dies_and_comes_back_under_replica_preferred_reads() {
    // No Sentinel here: nothing ever marks the replica down, keyhop alone must notice.
    let dir = temp_dir();
    let m = redis_server(&[]);
    let mut r = redis_replica(m.port, &[]);
    let other = redis_server(&[]);
    let config = format!(
        "listen = \"{{listen}}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = 1000\n\
         read_from = \"replica-preferred\"\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nreplicas = [\"{}\"]\nslots = [\"0-8191\"]\n\n\
         [[groups]]\nname = \"g2\"\nmaster = \"{}\"\nslots = [\"8192-16383\"]\n",
        m.addr(),
        r.addr(),
        other.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    let key = key_for(0, 11);
    assert_eq!(Raw::connect(proxy.port).call(&["SET", &key, "kept"]), Reply::Status("OK".into()));
    assert!(wait_until(LINK_BOUND, || cmd(r.port, &["GET", &key]) == "kept"), "replicated");
    let reader = Writer::start_op(proxy.port, Op::Gets { key: key.clone(), value: "kept".into() });
    assert!(wait_until(LINK_BOUND, || calls(r.port, "get") >= 100), "reads not on the replica");

    let killed_at = Instant::now();
    r.kill();
    reader.wait_progress(500, Duration::from_secs(10));
    let m_calls = calls(m.port, "get");
    assert!(m_calls >= 400, "the master did not take the reads over: {m_calls}");
    let mp = m.port.to_string();
    let _r = common::redis_server_on(r.port, &["--replicaof", "127.0.0.1", &mp]);
    let back_at = Instant::now();
    // keyhop reconnects on its own (backoff at most 2 s) and sends reads to the replica again.
    let returned = wait_until(LINK_BOUND, || calls(r.port, "get") >= 100);
    let returned_ms = back_at.elapsed().as_millis();
    let reads = reader.finish();
    let failed: Vec<&Write> = reads.iter().filter(|w| w.sent >= killed_at && !w.ok()).collect();
    // A restarted replica answers from its empty dataset until its first sync is done; static
    // mode does not check a replica's link to its master (Sentinel mode does): counted apart.
    let stale = failed.iter().filter(|w| w.result == Err("unexpected reply Bulk(None)".into()));
    let stale = stale.count();
    let errors = failed.len() - stale;
    eprintln!(
        "[failover] static replica killed: {errors} read errors; reads back on the replica \
         {returned_ms} ms after its restart; {stale} reads answered nil by the restarted replica \
         before its sync"
    );
    assert!(returned, "reads never went back to the returning replica");
    assert!(errors <= 5, "{errors} read errors: {:?}", errors_of(&reads, 0));
}
