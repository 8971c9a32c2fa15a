//! Chaos tests (issue 12): a steady load of writers and readers runs through keyhop over two
//! groups (tests/chaos/workload.rs) while a fault hits ONE group, and each test asserts that
//! nothing acknowledged is lost, that the other group notices nothing (0 errors), and that the
//! faulted group serves again after the fault. Faults: a backend frozen with SIGSTOP (here),
//! its connections killed from the server side (here), a sentinel frozen during a failover and
//! 1,000 short-lived clients during a failover (tests/chaos/failover.rs).
//!
//! Measured numbers are printed with `eprintln!`:
//! `cargo test --test chaos -- --nocapture 2>&1 | grep '\[chaos\]'`.

mod common;
#[path = "chaos/failover.rs"]
mod failover;
#[path = "chaos/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

use common::failover::ms;
use common::{Proc, cmd, keyhop, redis_server, temp_dir};
use workload::{Ops, Workload};

const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;
/// keyhop's request timeout in these tests: short, so a frozen backend costs seconds, not more.
const REQUEST_TIMEOUT_MS: u64 = 1000;
/// Generous bound for a group to serve again once its fault ended (a loaded 2-core machine).
const RECOVERY_BOUND: Duration = Duration::from_secs(20);
/// Successful requests each group must make before a fault, and again after it.
const PROGRESS: usize = 200;

/// Two single-server groups (g1 slots 0-8191, g2 the rest) behind keyhop.
struct Groups {
    dir: tempfile::TempDir,
    g1: Proc,
    g2: Proc,
    proxy: Proc,
}

impl Groups {
    fn start() -> Groups {
        let dir = temp_dir();
        let (g1, g2) = (redis_server(&[]), redis_server(&[]));
        let config = format!(
            "listen = \"{{listen}}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = {REQUEST_TIMEOUT_MS}\n\
             [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nslots = [\"0-8191\"]\n\n\
             [[groups]]\nname = \"g2\"\nmaster = \"{}\"\nslots = [\"8192-16383\"]\n",
            g1.addr(),
            g2.addr()
        );
        let proxy = keyhop(dir.path(), &config);
        Groups { dir, g1, g2, proxy }
    }

    fn log(&self) -> String {
        common::keyhop_log(self.dir.path())
    }
}

/// Both groups make progress.
fn warm_up(load: &Workload) {
    for g in 0..2 {
        load.wait_progress(g, PROGRESS, Duration::from_secs(20));
    }
}

/// The longest a request of `group` waited for its reply.
fn slowest(ops: &Ops, group: usize) -> Duration {
    ops.of(group).map(|o| o.done.duration_since(o.sent)).max().unwrap_or_default()
}

/// Asserts the faulted group g1 serves again after its fault: a request sent after the fault
/// ended succeeded (at `back`, within [`RECOVERY_BOUND`]), and the last [`PROGRESS`] all did.
fn assert_recovered(ops: &Ops, back: Option<Instant>, log: &str) {
    assert!(back.is_some(), "g1 did not serve again within {RECOVERY_BOUND:?}; keyhop log:\n{log}");
    let tail: Vec<_> = ops.of(0).rev().take(PROGRESS).filter(|o| !o.ok()).collect();
    assert!(tail.is_empty(), "g1 still failing at the end: {:?}", tail.first());
}

#[test]
fn a_backend_frozen_for_3s_costs_only_its_own_requests() {
    let t = Groups::start();
    let load = Workload::start(t.proxy.port);
    warm_up(&load);

    let stopped = Instant::now();
    t.g1.signal(SIGSTOP);
    // The fault itself lasts 3 s; nothing is asserted about this window until it is over.
    std::thread::sleep(Duration::from_secs(3));
    t.g1.signal(SIGCONT);
    let resumed = Instant::now();
    let back = load.wait_ok_since(0, resumed, RECOVERY_BOUND);
    if back.is_some() {
        warm_up(&load);
    }
    let ops = load.finish();
    let log = t.log();
    assert_recovered(&ops, back, &log);

    let own = format!("ERR keyhop: backend {} of group g1 ", t.g1.addr());
    let timeout = format!("{own}did not answer within {REQUEST_TIMEOUT_MS} ms");
    // After the timeout closed its connection, keyhop's new connections to the frozen server
    // are accepted by its kernel but their set-up gets no answer within connect_timeout_ms.
    let setup = format!("{own}unreachable: set-up (AUTH/HELLO/SELECT) timed out");
    let errors = ops.errors(0);
    let count = |want: &str| errors.iter().filter(|e| **e == want).count();
    let (timeouts, setups) = (count(&timeout), count(&setup));
    let late = ops.of(0).filter(|o| !o.ok() && o.sent > resumed).count();
    let recovery = back.map(|b| b.duration_since(resumed)).unwrap_or(RECOVERY_BOUND);
    let g2_slowest = slowest(&ops, 1);
    eprintln!(
        "[chaos] SIGSTOP 3 s: g1 errors {} ({timeouts} request timeouts, {setups} set-up \
         timeouts), {late} of them for requests sent after SIGCONT; first g1 success {:.1} ms \
         after SIGCONT; g2 requests {} (errors {}), slowest g2 request {:.1} ms",
        errors.len(),
        recovery.as_secs_f64() * 1000.0,
        ops.of(1).count(),
        ops.errors(1).len(),
        g2_slowest.as_secs_f64() * 1000.0,
    );
    assert_eq!(ops.errors(1), Vec::<String>::new(), "g2 noticed g1's freeze");
    assert!(timeouts > 0, "no g1 request timed out during a 3 s freeze: {errors:?}");
    assert_eq!(timeouts + setups, errors.len(), "g1 errors of another kind: {errors:?}");
    // No error before the freeze (a request sent just before it may time out in it).
    let first = ops.of(0).filter(|o| !o.ok()).map(|o| o.done).min();
    assert!(first.is_some_and(|f| f >= stopped), "g1 failed before the freeze");
    // A woken server is used again at once (issue 12 goal 2: within 50 ms), not after a backoff
    // that grew while it was frozen. The bound is twice the goal plus the worst latency the
    // healthy group saw in the same run (the machine's noise).
    let bound = Duration::from_millis(100) + g2_slowest;
    assert!(recovery <= bound, "g1 served again {recovery:?} after SIGCONT (bound {bound:?})");

    // Timed-out writes may still have been applied once the server woke up: g1's counter is
    // at least its acknowledged INCRs; g2's is exactly its.
    let (s1, i1, c1) = ops.assert_nothing_lost(0, t.g1.port, t.proxy.port, false);
    let (s2, i2, c2) = ops.assert_nothing_lost(1, t.g2.port, t.proxy.port, true);
    eprintln!(
        "[chaos] SIGSTOP 3 s: acknowledged g1 SETs {s1}, INCRs {i1} (counter {c1}); \
         g2 SETs {s2}, INCRs {i2} (counter {c2}); all readable"
    );
}

#[test]
fn connections_killed_by_the_server_fail_only_requests_in_flight() {
    let t = Groups::start();
    let load = Workload::start(t.proxy.port);
    warm_up(&load);

    // 20 kills over about 2 s. CLIENT KILL skips the connection sending it, and keyhop's
    // connections are the server's only other clients, so the replies count keyhop's losses.
    let started = Instant::now();
    let mut killed = 0u64;
    let mut each = Vec::new();
    for _ in 0..20 {
        let r = cmd(t.g1.port, &["CLIENT", "KILL", "TYPE", "normal"]);
        let n: u64 = r.parse().unwrap_or_else(|_| panic!("CLIENT KILL answered {r:?}"));
        killed += n;
        each.push(n);
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = Instant::now();
    let back = load.wait_ok_since(0, ended, RECOVERY_BOUND);
    if back.is_some() {
        warm_up(&load);
    }
    let ops = load.finish();
    let log = t.log();
    assert_recovered(&ops, back, &log);

    let errors = ops.errors(0);
    let own = format!("ERR keyhop: backend {} of group g1 connection lost (", t.g1.addr());
    let lost = |e: &String| {
        e.strip_prefix(&own).is_some_and(|why| {
            why == "closed by the server)" || why == "Connection reset by peer (os error 104))"
        })
    };
    let other: Vec<&String> = errors.iter().filter(|e| !lost(e)).collect();
    eprintln!(
        "[chaos] CLIENT KILL x20 over {:.0} ms: keyhop connections killed {killed} ({each:?}); \
         g1 errors {} of {} requests; g2 requests {} (errors {}), slowest g2 request {:?}",
        ms(started, ended),
        errors.len(),
        ops.of(0).count(),
        ops.of(1).count(),
        ops.errors(1).len(),
        slowest(&ops, 1),
    );
    assert_eq!(ops.errors(1), Vec::<String>::new(), "g2 noticed g1's lost connections");
    assert!(other.is_empty(), "g1 errors other than a lost connection's: {other:?}");
    // keyhop reconnected after each kill (a kill finding no connection of keyhop's would mean
    // it had not), and only requests in flight on a killed connection failed: g1 has one writer
    // and one reader, so at most two per killed connection.
    assert!(each.iter().filter(|&&n| n > 0).count() >= 10, "kills found few connections: {each:?}");
    assert!(
        errors.len() as u64 <= 2 * killed,
        "{} g1 errors for {killed} killed connections: {errors:?}",
        errors.len()
    );

    let (s1, i1, c1) = ops.assert_nothing_lost(0, t.g1.port, t.proxy.port, false);
    let (s2, i2, c2) = ops.assert_nothing_lost(1, t.g2.port, t.proxy.port, true);
    eprintln!(
        "[chaos] CLIENT KILL: acknowledged g1 SETs {s1}, INCRs {i1} (counter {c1}); \
         g2 SETs {s2}, INCRs {i2} (counter {c2}); all readable"
    );
}
