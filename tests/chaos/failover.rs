//! Chaos during a Sentinel failover of g1: one of the three sentinels frozen (SIGSTOP) while the
//! others fail g1 over, and 1,000 short-lived clients connecting, sending one write and closing
//! while it happens. The fence keeps every acknowledged write; g2 must notice nothing; keyhop
//! must end on the new master and leak no session or file descriptor.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::failover::{
    FAILOVER_BOUND, LINK_BOUND, SwitchWatch, fenced_error, get_many, is_linked_replica, is_master,
    keyhop_subscribed, ms, switched_via,
};
use crate::common::{
    Raw, Reply, SentinelCluster as Cluster, cmd, group_of, keyhop, keyhop_log, role, temp_dir,
    wait_until,
};
use crate::workload::Workload;
use crate::{PROGRESS, RECOVERY_BOUND, SIGCONT, SIGSTOP};

/// Every error of g1 in a graceful failover is the fence's refusal (never sent to a server, so
/// no unacknowledged INCR can have been applied: counters are exact).
fn assert_only_fenced(errors: &[String], old_master: &str) {
    let fence = fenced_error(old_master);
    let other: Vec<&String> = errors.iter().filter(|e| **e != fence).collect();
    assert!(other.is_empty(), "g1 errors other than the fence's: {other:?}");
}

/// A frozen sentinel misses the failover; when it wakes it still believes in the old master until
/// the others' hello messages correct it. keyhop must neither wait on it nor go back.
#[test]
fn a_sentinel_frozen_during_a_failover() {
    let c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (m1, r1, m2) = (c.port(0), c.port(1), c.port(2));
    let ports = c.sentinel_ports();
    assert!(wait_until(LINK_BOUND, || ports.iter().all(|&p| keyhop_subscribed(p))));
    let switches = SwitchWatch::start(&ports[..2], "g1");
    let load = Workload::start(proxy.port);
    crate::warm_up(&load);

    c.sentinels[2].signal(SIGSTOP);
    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    let (switch_at, new_master) = switches.wait_since(asked, FAILOVER_BOUND);
    assert_eq!(new_master, c.addr(1), "Sentinel promoted g1's replica");
    let back = load.wait_ok_since(0, switch_at, RECOVERY_BOUND);
    let demoted = wait_until(FAILOVER_BOUND, || is_linked_replica(m1));
    crate::warm_up(&load);

    // Wake the frozen sentinel; once it has learned the new master, keyhop must still write
    // there (it may have heard the stale master from it in between).
    c.sentinels[2].signal(SIGCONT);
    let woke = Instant::now();
    let learned = wait_until(FAILOVER_BOUND, || master_of(ports[2], "g1") == Some(r1));
    let learned_at = Instant::now();
    let watched = wait_until(LINK_BOUND, || keyhop_subscribed(ports[2]));
    crate::warm_up(&load);
    let ops = load.finish();
    let log = keyhop_log(dir.path());
    assert!(back.is_some(), "g1 writes never resumed after +switch-master; keyhop log:\n{log}");
    assert!(demoted, "the old master did not become a replica: {}", role(m1));
    assert!(learned, "the woken sentinel never learned the new master");
    assert!(watched, "keyhop is not subscribed to the woken sentinel");
    assert!(is_master(r1), "ROLE of the promoted replica: {}", role(r1));

    let errors = ops.errors(0);
    eprintln!(
        "[chaos] sentinel frozen: +switch-master {:.0} ms after SENTINEL FAILOVER; first g1 \
         success {:?} ms after it; g1 errors {}; g2 errors {} of {}; woken sentinel learned the \
         new master in {:.0} ms",
        ms(asked, switch_at),
        back.map(|b| ms(switch_at, b)),
        errors.len(),
        ops.errors(1).len(),
        ops.of(1).count(),
        ms(woke, learned_at),
    );
    assert_eq!(ops.errors(1), Vec::<String>::new(), "g2 noticed g1's failover");
    assert_only_fenced(&errors, &c.addr(0));
    let tail: Vec<_> = ops.of(0).rev().take(PROGRESS).filter(|o| !o.ok()).collect();
    assert!(tail.is_empty(), "g1 failing after the sentinel woke: {:?}", tail.first());
    // Every acknowledged write, the ones after the wake-up included, is on the new master.
    let (s1, i1, c1) = ops.assert_nothing_lost(0, r1, proxy.port, true);
    let (s2, i2, c2) = ops.assert_nothing_lost(1, m2, proxy.port, true);
    eprintln!(
        "[chaos] sentinel frozen: acknowledged g1 SETs {s1}, INCRs {i1} (counter {c1}) on the \
         new master; g2 SETs {s2}, INCRs {i2} (counter {c2})"
    );
    // keyhop still writes to the new master once the woken sentinel is back in the game, and
    // never switched g1 anywhere else.
    let after = ops.of(0).filter(|o| o.ok() && o.sent > learned_at).count();
    assert!(after >= PROGRESS, "only {after} g1 requests succeeded after the sentinel woke");
    assert!(is_linked_replica(m1), "the old master is no replica now: {}", role(m1));
    // Adopted from the promoted replica's own ROLE, with one sentinel silent.
    assert_eq!(switched_via(&log, "g1", &c.addr(1)).as_deref(), Some("RolePoll"), "{log}");
    let switched = log.lines().filter(|l| l.contains("switched master") && l.contains("group=g1 "));
    let elsewhere: Vec<&str> =
        switched.filter(|l| !l.contains(&format!("new={} ", c.addr(1)))).collect();
    assert!(elsewhere.is_empty(), "keyhop switched g1 elsewhere: {elsewhere:?}");
}

/// The master sentinel `port` names for `group` (its port).
fn master_of(port: u16, group: &str) -> Option<u16> {
    let mut raw = Raw::try_connect(port)?;
    match raw.try_call(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", group])? {
        Reply::Array(Some(items)) => items.get(1).and_then(|p| p.text().parse().ok()),
        _ => None,
    }
}

/// keyhop's `connected_clients` from INFO (the asking connection included).
fn connected_clients(port: u16) -> i64 {
    cmd(port, &["INFO", "clients"])
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// keyhop's `backend_connections` in this run (the test matrix may set it).
fn backend_connections() -> usize {
    let var = std::env::var("KEYHOP_TEST_BACKEND_CONNECTIONS").ok();
    var.and_then(|v| v.trim().parse().ok()).unwrap_or(1).max(1)
}

/// What the short-lived clients saw.
#[derive(Default)]
struct Churn {
    /// Cycles begun (numbers handed out) and completed.
    begun: AtomicUsize,
    cycles: AtomicUsize,
    /// Acknowledged writes: (group, key, value).
    acked: Mutex<Vec<(usize, String, String)>>,
    fenced: AtomicUsize,
    /// Anything that is neither `+OK` nor the fence's refusal of a g1 write.
    wrong: Mutex<Vec<String>>,
}

/// Short-lived client threads: each cycle connects, sends one SET, reads the reply and closes.
const CHURN_THREADS: usize = 8;
/// Cycles at least; more only while the failover is still going on.
const CHURN_CYCLES: usize = 1000;
/// Hard bounds on the churn, whatever happens.
const CHURN_MAX_CYCLES: usize = 30_000;
const CHURN_MAX_TIME: Duration = Duration::from_secs(60);
/// Pause between two cycles of a thread: a few thousand connections a second in all.
const CHURN_PACE: Duration = Duration::from_millis(4);

fn churn_cycle(port: u16, n: usize, fence: &str, churn: &Churn) {
    let key = format!("churn{n}");
    let value = format!("c{n}");
    let group = group_of(&key);
    let Some(mut raw) = Raw::try_connect(port) else {
        churn.wrong.lock().unwrap_or_else(|e| e.into_inner()).push(format!("{n}: connect failed"));
        return;
    };
    match raw.try_call(&["SET", &key, &value]) {
        Some(Reply::Status(s)) if s == "OK" => {
            churn.acked.lock().unwrap_or_else(|e| e.into_inner()).push((group, key, value));
        }
        Some(Reply::Error(e)) if group == 0 && e == fence => {
            churn.fenced.fetch_add(1, Ordering::Relaxed);
        }
        other => {
            let what = format!("{n} (g{}): {other:?}", group + 1);
            churn.wrong.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        }
    }
}

#[test]
fn a_thousand_short_lived_clients_during_a_failover() {
    let c = Cluster::new();
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let (m1, r1, m2) = (c.port(0), c.port(1), c.port(2));
    let pid = proxy.pid().expect("keyhop runs");
    let ports = c.sentinel_ports();
    assert!(wait_until(LINK_BOUND, || ports.iter().all(|&p| keyhop_subscribed(p))));
    // Baselines: one client (the asker) before the load; descriptors under the load less its
    // own four client sockets. Backend connection slots connect lazily and the load may not
    // use them all, so up to `backend_connections - 1` per group may open later (not a leak);
    // and keyhop's ROLE checks (control/src/sentinel/link.rs) hold a connection for a moment.
    let base_clients = connected_clients(proxy.port);
    let switches = SwitchWatch::start(&ports, "g1");
    let load = Workload::start(proxy.port);
    crate::warm_up(&load);
    let base_fds = fds(pid) - 4;
    let fd_slack = 2 * (backend_connections() - 1) + 2;

    let churn = Arc::new(Churn::default());
    let switched = Arc::new(AtomicBool::new(false));
    let after_switch = Arc::new(AtomicUsize::new(0));
    let fence = fenced_error(&c.addr(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..CHURN_THREADS)
        .map(|_| {
            let (churn, switched, after) = (churn.clone(), switched.clone(), after_switch.clone());
            let (port, fence) = (proxy.port, fence.clone());
            std::thread::spawn(move || {
                while started.elapsed() < CHURN_MAX_TIME {
                    let done = churn.cycles.load(Ordering::Relaxed);
                    let enough = done >= CHURN_CYCLES && after.load(Ordering::Relaxed) >= PROGRESS;
                    let n = churn.begun.fetch_add(1, Ordering::Relaxed);
                    if enough || n >= CHURN_MAX_CYCLES {
                        break;
                    }
                    churn_cycle(port, n, &fence, &churn);
                    churn.cycles.fetch_add(1, Ordering::Relaxed);
                    if switched.load(Ordering::Relaxed) {
                        after.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(CHURN_PACE);
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || churn.cycles.load(Ordering::Relaxed) >= 100));
    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    let cycles_at_ask = churn.cycles.load(Ordering::Relaxed);
    let (switch_at, new_master) = switches.wait_since(asked, FAILOVER_BOUND);
    switched.store(true, Ordering::Relaxed);
    let cycles_at_switch = churn.cycles.load(Ordering::Relaxed);
    assert_eq!(new_master, c.addr(1), "Sentinel promoted g1's replica");
    for h in handles {
        h.join().expect("churn thread");
    }
    let churn_ms = ms(started, Instant::now());
    let back = load.wait_ok_since(0, switch_at, RECOVERY_BOUND);
    crate::warm_up(&load);
    let ops = load.finish();
    let log = keyhop_log(dir.path());
    assert!(back.is_some(), "g1 writes never resumed after +switch-master; keyhop log:\n{log}");

    let cycles = churn.cycles.load(Ordering::Relaxed);
    let acked = churn.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let wrong = churn.wrong.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let fenced = churn.fenced.load(Ordering::Relaxed);
    // Sessions and descriptors go back to the baseline once every client has gone.
    let clients_back =
        wait_until(Duration::from_secs(10), || connected_clients(proxy.port) == base_clients);
    let fds_back = wait_until(Duration::from_secs(10), || fds(pid) <= base_fds + fd_slack);
    let (clients_now, fds_now) = (connected_clients(proxy.port), fds(pid));
    eprintln!(
        "[chaos] churn: {cycles} connect/SET/close cycles in {churn_ms:.0} ms by {CHURN_THREADS} \
         threads ({cycles_at_ask} before SENTINEL FAILOVER, {} between it and +switch-master \
         {:.0} ms later); {} acknowledged, {fenced} fenced, {} wrong; connected_clients {base_clients} \
         -> {clients_now}; keyhop fds {base_fds} (+{fd_slack} allowed) -> {fds_now}; workload g1 errors {}, g2 errors {}",
        cycles_at_switch - cycles_at_ask,
        ms(asked, switch_at),
        acked.len(),
        wrong.len(),
        ops.errors(0).len(),
        ops.errors(1).len(),
    );
    assert!(wrong.is_empty(), "replies neither OK nor the fence's: {wrong:?}");
    assert_eq!(acked.len() + fenced, cycles, "every cycle got a reply");
    assert!(cycles >= CHURN_CYCLES && cycles_at_ask >= 100, "the churn did not span the failover");
    assert!(cycles_at_switch > cycles_at_ask, "no short-lived client during the failover");
    assert_eq!(cmd(proxy.port, &["PING"]), "PONG", "keyhop serves after the churn");
    assert!(
        clients_back,
        "connected_clients {clients_now}, baseline {base_clients}: sessions leaked"
    );
    assert!(fds_back, "keyhop has {fds_now} fds open, baseline {base_fds}: descriptors leaked");

    assert_eq!(ops.errors(1), Vec::<String>::new(), "g2 noticed g1's failover");
    assert_only_fenced(&ops.errors(0), &c.addr(0));
    ops.assert_nothing_lost(0, r1, proxy.port, true);
    ops.assert_nothing_lost(1, m2, proxy.port, true);
    // Every short-lived client's acknowledged write is on its group's master now.
    for (g, port) in [(0, r1), (1, m2)] {
        let mine: Vec<&(usize, String, String)> = acked.iter().filter(|a| a.0 == g).collect();
        let keys: Vec<&str> = mine.iter().map(|a| a.1.as_str()).collect();
        let values = get_many(port, &keys);
        let lost = mine.iter().zip(&values).filter(|(a, v)| v.as_deref() != Some(a.2.as_bytes()));
        let lost: Vec<_> = lost.map(|(a, _)| a).collect();
        assert!(
            lost.is_empty(),
            "g{}: {} acknowledged churn writes lost: {:?}",
            g + 1,
            lost.len(),
            lost.first()
        );
    }
    let _ = m1;
}
