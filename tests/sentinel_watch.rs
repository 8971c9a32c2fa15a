//! The Sentinel watcher against real redis-server and redis-sentinel processes: start-up,
//! failovers (kill -9 and SENTINEL FAILOVER), unknown names, sentinels dying and coming back.
//!
//! Timings are printed with `eprintln!` (see them with `--nocapture`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Knocks, Raw, Reply, redis_sentinel, redis_server, temp_dir, wait_until};
use keyhop_control::sentinel::{
    AdoptedVia, ControlError, GroupSpec, OnPublish, WatcherConfig, WatcherHandle, start,
    start_with_table,
};
use keyhop_router::{RoutingTable, SLOT_COUNT};

/// Generous bound for anything Sentinel does (failure detection, election, promotion), so the
/// tests hold on a loaded machine; the actual times are measured and printed.
const FAILOVER_BOUND: Duration = Duration::from_secs(40);
/// Bound for links (re)connecting and polls noticing things.
const LINK_BOUND: Duration = Duration::from_secs(15);

use common::SentinelCluster as Cluster;

impl Cluster {
    fn watcher_config(&self, sentinels: &[usize]) -> WatcherConfig {
        watcher_config(sentinels.iter().map(|&i| self.sentinels[i].addr()).collect(), &["g1", "g2"])
    }
}

fn watcher_config(sentinels: Vec<String>, groups: &[&str]) -> WatcherConfig {
    let ranges = RoutingTable::even_ranges(groups.len());
    WatcherConfig {
        sentinels,
        sentinel_password: None,
        poll_interval: Duration::from_millis(1000),
        groups: groups
            .iter()
            .zip(ranges)
            .map(|(name, ranges)| GroupSpec { name: name.to_string(), ranges })
            .collect(),
        backend_password: None,
        io_timeout: Duration::from_secs(2),
        start_timeout: Duration::from_secs(15),
        tls: Default::default(),
    }
}

/// A runtime for the watcher; the test thread itself stays free to block on the harness.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Records every publish.
#[derive(Clone, Default)]
struct Recorder {
    publishes: Arc<Mutex<Vec<Published>>>,
}

#[derive(Clone, Debug)]
struct Published {
    at: Instant,
    old_epoch: u64,
    new_epoch: u64,
    old_masters: Vec<String>,
    new_masters: Vec<String>,
}

impl Recorder {
    fn callback(&self) -> OnPublish {
        let publishes = self.publishes.clone();
        Arc::new(move |old: &RoutingTable, new: &RoutingTable| {
            let p = Published {
                at: Instant::now(),
                old_epoch: old.epoch,
                new_epoch: new.epoch,
                old_masters: old.groups.iter().map(|g| g.master.clone()).collect(),
                new_masters: new.groups.iter().map(|g| g.master.clone()).collect(),
            };
            publishes.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        })
    }

    fn all(&self) -> Vec<Published> {
        self.publishes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first publish that made `group`'s master `addr`.
    fn switch_to(&self, group: usize, addr: &str) -> Option<Published> {
        self.all()
            .into_iter()
            .find(|p| p.new_masters[group] == addr && p.old_masters[group] != addr)
    }
}

/// `RECHECK_GAP` in control/src/sentinel/link.rs: the shortest gap between two polls of one
/// sentinel triggered by re-checks.
const RECHECK_GAP_MS: u64 = 50;

/// `total_commands_processed` of the server (or sentinel) on `port`.
fn commands_processed(port: u16) -> u64 {
    let info = common::cmd(port, &["INFO", "stats"]);
    let value = info.lines().find_map(|l| l.strip_prefix("total_commands_processed:"));
    value.and_then(|v| v.trim().parse().ok()).expect("total_commands_processed in INFO stats")
}

fn master(w: &WatcherHandle, group: usize) -> String {
    w.table().load().groups[group].master.clone()
}

/// Waits until `group`'s master is `addr`; panics with the watcher's status otherwise.
fn wait_master(w: &WatcherHandle, group: usize, addr: &str, bound: Duration) {
    let ok = wait_until(bound, || master(w, group) == addr);
    assert!(
        ok,
        "group {group} master is {} not {addr}; status: {:#?}",
        master(w, group),
        w.status()
    );
}

/// Prints how long `group`'s switch to `new` took from `since` (when `what` happened), and from
/// the sentinel events the watcher saw, to the publish.
fn print_switch(
    what: &str,
    w: &WatcherHandle,
    rec: &Recorder,
    group: usize,
    new: &str,
    since: Instant,
) {
    let p = rec.switch_to(group, new).expect("a publish switching the master");
    // The publish callback runs before the watcher updates its status: give it a moment.
    let mut last = None;
    wait_until(Duration::from_secs(5), || {
        last = w.status().groups[group].last_switch.clone();
        last.is_some()
    });
    let last = last.expect("switch recorded in status");
    let ms = |d: Option<Duration>| d.map_or("-".to_string(), |d| d.as_millis().to_string());
    eprintln!(
        "[timing] {what}: to publish {} ms; +switch-master to publish {} ms; first +sdown to publish {} ms; via {:?}",
        p.at.duration_since(since).as_millis(),
        ms(last.event_to_swap),
        ms(last.down_to_swap),
        last.via,
    );
}

#[test]
fn starts_discovers_and_follows_a_killed_master() {
    let mut c = Cluster::new();
    let rt = runtime();
    let rec = Recorder::default();
    // Only one sentinel is configured: the other two must be discovered.
    let w = rt.block_on(start(c.watcher_config(&[0]), rec.callback())).expect("watcher starts");
    let t = w.table().load_full();
    assert_eq!(t.epoch, 1);
    assert_eq!(t.groups[0].name, "g1");
    assert_eq!(t.groups[0].master, c.addr(0));
    assert_eq!(t.groups[1].master, c.addr(2));
    assert_eq!(t.group_for_slot(0), 0);
    assert_eq!(t.group_for_slot((SLOT_COUNT - 1) as u16), 1);
    let replicas_ok = wait_until(LINK_BOUND, || {
        let t = w.table().load_full();
        t.groups[0].replicas.iter().any(|r| r.addr == c.addr(1) && r.healthy)
            && t.groups[1].replicas.iter().any(|r| r.addr == c.addr(3) && r.healthy)
    });
    assert!(replicas_ok, "replicas not in the table: {:#?}", w.table().load().groups);
    let discovered = wait_until(LINK_BOUND, || {
        let s = w.status();
        s.known_sentinels == 3 && s.connected_sentinels == 3
    });
    assert!(discovered, "sentinels not discovered: {:#?}", w.status());

    // A re-check storm is cheap: whatever its size, each link polls at most once per RECHECK_GAP
    // while it lasts and once after, besides its periodic polls.
    let ports: Vec<u16> = c.sentinels.iter().map(|s| s.port).collect();
    let before: Vec<u64> = ports.iter().map(|&p| commands_processed(p)).collect();
    let t0 = Instant::now();
    for _ in 0..10_000 {
        w.recheck(0);
    }
    let storm = t0.elapsed();
    // A window well past the storm, so that polls it queued (if it did) would show.
    let window = storm + Duration::from_millis(1500);
    wait_until(window + Duration::from_secs(1), || t0.elapsed() >= window);
    let counted = t0.elapsed();
    let extra: Vec<u64> =
        ports.iter().zip(&before).map(|(&p, b)| commands_processed(p) - b).collect();
    // A poll is at most 4 commands per group; the sentinels ping and greet each other a few
    // times a second, and the count itself is one command.
    let polls = 2 + storm.as_millis() as u64 / RECHECK_GAP_MS + counted.as_secs() + 1;
    let allowed = polls * 8 + 10 * (counted.as_secs() + 1) + 1;
    eprintln!(
        "[timing] 10000 recheck() calls took {} us; commands each sentinel got in {} ms: {extra:?} \
         (allowed {allowed})",
        storm.as_micros(),
        counted.as_millis()
    );
    assert!(extra.iter().all(|&n| n <= allowed), "a re-check storm was not coalesced: {extra:?}");

    let before = w.table().load_full();
    let killed_at = Instant::now();
    c.servers[0].kill();
    wait_master(&w, 0, &c.addr(1), FAILOVER_BOUND);
    let after = w.table().load_full();
    assert!(after.epoch > before.epoch, "epoch did not grow: {} -> {}", before.epoch, after.epoch);
    assert_eq!(after.groups[1], before.groups[1], "g2 changed");
    let p = rec.switch_to(0, &c.addr(1)).expect("on_publish saw the switch");
    assert_eq!(p.old_masters[0], c.addr(0));
    assert!(p.new_epoch > p.old_epoch);
    print_switch("kill -9 of g1's master", &w, &rec, 0, &c.addr(1), killed_at);
    let status = w.status();
    assert_eq!(status.groups[0].switches, 1);
    assert_eq!(status.groups[1].switches, 0);
    // Adopted on the promoted replica's own ROLE, before any +switch-master.
    let last = status.groups[0].last_switch.clone().expect("switch recorded");
    assert_eq!(last.via, AdoptedVia::RolePoll);
    assert!(last.down_to_swap.is_some(), "{last:?}");

    // The dead old master shows up as an unhealthy replica of the new one.
    let listed = wait_until(LINK_BOUND, || {
        w.table().load().groups[0].replicas.iter().any(|r| r.addr == c.addr(0) && !r.healthy)
    });
    assert!(listed, "old master not listed as a down replica: {:#?}", w.table().load().groups[0]);
    // Epochs only grow.
    let epochs: Vec<u64> = rec.all().iter().map(|p| p.new_epoch).collect();
    assert!(epochs.windows(2).all(|w| w[0] < w[1]), "{epochs:?}");
}

#[test]
fn follows_a_graceful_failover() {
    let c = Cluster::new();
    let rt = runtime();
    let rec = Recorder::default();
    let w =
        rt.block_on(start(c.watcher_config(&[0, 1, 2]), rec.callback())).expect("watcher starts");
    assert_eq!(master(&w, 0), c.addr(0));
    let asked = c.force_failover(1, "g1", FAILOVER_BOUND);
    wait_master(&w, 0, &c.addr(1), FAILOVER_BOUND);
    print_switch("SENTINEL FAILOVER g1", &w, &rec, 0, &c.addr(1), asked);
    assert_eq!(master(&w, 1), c.addr(2), "g2 unchanged");
    // The old master is reconfigured as a replica of the new one and becomes readable again.
    let rejoined = wait_until(FAILOVER_BOUND, || {
        w.table().load().groups[0].replicas.iter().any(|r| r.addr == c.addr(0) && r.healthy)
    });
    assert!(
        rejoined,
        "old master did not come back as a replica: {:#?}",
        w.table().load().groups[0]
    );
    match Raw::connect(c.servers[0].port).call(&["ROLE"]) {
        Reply::Array(Some(items)) => assert_eq!(items[0].text(), "slave"),
        other => panic!("ROLE answered {other:?}"),
    }
}

#[test]
fn unknown_group_name_is_a_clear_error() {
    let dir = temp_dir();
    let m = redis_server(&[]);
    let s = redis_sentinel(dir.path(), &[("g1", m.port)], 1);
    let rt = runtime();
    let cfg = watcher_config(vec![s.addr()], &["g1", "nope"]);
    let t0 = Instant::now();
    let err = rt.block_on(start(cfg, Recorder::default().callback())).expect_err("unknown group");
    eprintln!("[timing] unknown group reported after {} ms: {err}", t0.elapsed().as_millis());
    // The sentinel's answer ends the start-up (UnknownGroup), not its 15 s timeout (StartTimeout).
    assert!(matches!(&err, ControlError::UnknownGroup { group, .. } if group == "nope"), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("\"nope\"") && text.contains(&s.addr()), "{text}");
}

#[test]
fn no_reachable_sentinel_times_out_with_the_reason() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let rt = runtime();
    let mut cfg = watcher_config(vec![dead.clone()], &["g1"]);
    cfg.start_timeout = Duration::from_millis(1500);
    let err = rt.block_on(start(cfg, Recorder::default().callback())).expect_err("nothing to ask");
    let text = err.to_string();
    assert!(matches!(err, ControlError::StartTimeout { .. }), "{err:?}");
    assert!(text.contains(&dead) && text.contains("no sentinel answered"), "{text}");
}

#[test]
fn a_sentinel_killed_and_restarted_mid_run() {
    let mut c = Cluster::new();
    let rt = runtime();
    let rec = Recorder::default();
    let w =
        rt.block_on(start(c.watcher_config(&[0, 1, 2]), rec.callback())).expect("watcher starts");
    assert!(wait_until(LINK_BOUND, || w.status().connected_sentinels == 3), "{:#?}", w.status());

    c.sentinels[2].kill();
    assert!(wait_until(LINK_BOUND, || w.status().connected_sentinels == 2), "{:#?}", w.status());
    // Two of three sentinels still make the quorum and the election majority.
    let killed_at = Instant::now();
    c.servers[0].kill();
    wait_master(&w, 0, &c.addr(1), FAILOVER_BOUND);
    print_switch("kill -9 with a sentinel down", &w, &rec, 0, &c.addr(1), killed_at);

    c.restart_sentinel(2);
    assert!(wait_until(LINK_BOUND, || w.status().connected_sentinels == 3), "{:#?}", w.status());
    // Failover of g2 driven by the restarted sentinel.
    let asked = c.force_failover(2, "g2", FAILOVER_BOUND);
    wait_master(&w, 1, &c.addr(3), FAILOVER_BOUND);
    print_switch("SENTINEL FAILOVER g2 via the restarted sentinel", &w, &rec, 1, &c.addr(3), asked);
    assert_eq!(master(&w, 0), c.addr(1));
}

#[test]
fn all_sentinels_down_keeps_the_table_then_follows_again() {
    let mut c = Cluster::new();
    let rt = runtime();
    let rec = Recorder::default();
    let w =
        rt.block_on(start(c.watcher_config(&[0, 1, 2]), rec.callback())).expect("watcher starts");
    assert!(wait_until(LINK_BOUND, || w.status().connected_sentinels == 3), "{:#?}", w.status());
    // The replicas are in the table (healthy) before it is taken as the reference.
    let settled = wait_until(LINK_BOUND, || {
        let t = w.table().load_full();
        [(0, 1), (1, 3)]
            .iter()
            .all(|&(g, r)| t.groups[g].replicas.iter().any(|x| x.addr == c.addr(r) && x.healthy))
    });
    assert!(settled, "replicas not in the table: {:#?}", w.table().load().groups);
    let before = w.table().load_full();

    for s in &mut c.sentinels {
        s.kill();
    }
    assert!(wait_until(LINK_BOUND, || w.status().connected_sentinels == 0), "{:#?}", w.status());
    // Several reconnect attempts to every sentinel later, the table is still the same.
    let knocks: Vec<Knocks> = c.sentinels.iter().map(|s| Knocks::listen(s.port)).collect();
    let retried = wait_until(LINK_BOUND, || knocks.iter().all(|k| k.count() >= 4));
    let counts: Vec<usize> = knocks.iter().map(Knocks::count).collect();
    drop(knocks);
    assert!(retried, "the watcher did not keep reconnecting: attempts {counts:?}");
    let during = w.table().load_full();
    assert_eq!(during.epoch, before.epoch, "table republished with no sentinel");
    assert_eq!(during.groups, before.groups);
    let status = w.status();
    assert_eq!(status.connected_sentinels, 0);
    assert_eq!(status.known_sentinels, 3);
    assert!(status.sentinels.iter().all(|s| s.last_error.is_some()), "{status:#?}");

    for i in 0..3 {
        c.restart_sentinel(i);
    }
    let back = Instant::now();
    assert!(wait_until(LINK_BOUND, || w.status().connected_sentinels == 3), "{:#?}", w.status());
    eprintln!(
        "[timing] all 3 sentinels reconnected {} ms after restart",
        back.elapsed().as_millis()
    );
    let asked = c.force_failover(0, "g1", FAILOVER_BOUND);
    wait_master(&w, 0, &c.addr(1), FAILOVER_BOUND);
    print_switch(
        "SENTINEL FAILOVER g1 after all sentinels restarted",
        &w,
        &rec,
        0,
        &c.addr(1),
        asked,
    );
    assert_eq!(master(&w, 1), c.addr(2));
}

#[test]
fn majority_path_when_role_cannot_be_checked() {
    let mut c = Cluster::new();
    let rt = runtime();
    let rec = Recorder::default();
    let mut cfg = c.watcher_config(&[0, 1, 2]);
    // The servers have no password: AUTH fails, so no ROLE check can confirm a candidate and
    // only the sentinels' majority can move the master.
    cfg.backend_password = Some("wrong".into());
    let w = rt.block_on(start(cfg, rec.callback())).expect("watcher starts on the majority alone");
    assert_eq!(master(&w, 0), c.addr(0));
    let killed_at = Instant::now();
    c.servers[0].kill();
    wait_master(&w, 0, &c.addr(1), FAILOVER_BOUND);
    print_switch("kill -9, majority path", &w, &rec, 0, &c.addr(1), killed_at);
    let last = w.status().groups[0].last_switch.clone().expect("switch recorded");
    assert_eq!(last.via, AdoptedVia::Majority);
}

#[test]
fn passwords_for_sentinels_and_servers() {
    let dir = temp_dir();
    let d = dir.path().to_string_lossy().into_owned();
    let auth = ["--requirepass", "srv-pw", "--masterauth", "srv-pw", "--dir", d.as_str()];
    let m = redis_server(&auth);
    let r = {
        let mp = m.port.to_string();
        let mut args = vec!["--replicaof", "127.0.0.1", mp.as_str()];
        args.extend_from_slice(&auth);
        redis_server(&args)
    };
    let linked = wait_until(LINK_BOUND, || {
        let mut raw = Raw::connect(r.port);
        raw.call(&["AUTH", "srv-pw"]);
        raw.call(&["INFO", "replication"]).text().contains("master_link_status:up")
    });
    assert!(linked, "password-protected replica did not link");
    let s = common::redis_sentinel_with(
        dir.path(),
        &[("g1", m.port)],
        1,
        "requirepass sent-pw\nsentinel auth-pass g1 srv-pw",
    );
    let has_replica = wait_until(LINK_BOUND, || {
        let mut raw = Raw::connect(s.port);
        raw.call(&["AUTH", "sent-pw"]);
        matches!(raw.call(&["SENTINEL", "replicas", "g1"]), Reply::Array(Some(items)) if items.len() == 1)
    });
    assert!(has_replica, "sentinel did not find the replica");
    let rt = runtime();

    // Without the sentinel password nothing can be learned.
    let mut cfg = watcher_config(vec![s.addr()], &["g1"]);
    cfg.start_timeout = Duration::from_millis(1500);
    let err = rt.block_on(start(cfg.clone(), Recorder::default().callback())).expect_err("NOAUTH");
    assert!(err.to_string().contains("NOAUTH Authentication required"), "{err}");

    cfg.start_timeout = Duration::from_secs(15);
    cfg.sentinel_password = Some("sent-pw".into());
    cfg.backend_password = Some("srv-pw".into());
    let rec = Recorder::default();
    let w = rt.block_on(start(cfg, rec.callback())).expect("watcher starts with passwords");
    assert_eq!(master(&w, 0), m.addr());
    let asked = Instant::now();
    let mut raw = Raw::connect(s.port);
    raw.call(&["AUTH", "sent-pw"]);
    assert_eq!(raw.call(&["SENTINEL", "FAILOVER", "g1"]), Reply::Status("OK".into()));
    wait_master(&w, 0, &r.addr(), FAILOVER_BOUND);
    print_switch("SENTINEL FAILOVER with passwords", &w, &rec, 0, &r.addr(), asked);
    // The fast path (the promoted replica's ROLE, watched) needs the backend password.
    let last = w.status().groups[0].last_switch.clone().expect("switch recorded");
    assert_eq!(last.via, AdoptedVia::RolePoll);
}

#[test]
fn start_with_an_existing_table() {
    let dir = temp_dir();
    let m = redis_server(&[]);
    let s = common::redis_sentinel(dir.path(), &[("g1", m.port)], 1);
    let rt = runtime();
    let placeholder = RoutingTable::new(
        5,
        vec![keyhop_router::Group {
            name: "g1".into(),
            master: "127.0.0.1:1".into(),
            replicas: vec![],
        }],
        &RoutingTable::even_ranges(1),
    )
    .expect("placeholder table");
    let shared: keyhop_router::SharedTable = Arc::new(arc_swap::ArcSwap::from_pointee(placeholder));
    let rec = Recorder::default();
    let cfg = watcher_config(vec![s.addr()], &["g1"]);
    let w =
        rt.block_on(start_with_table(cfg, shared.clone(), rec.callback())).expect("watcher starts");
    let t = shared.load_full();
    assert_eq!(t.epoch, 6);
    assert_eq!(t.groups[0].master, m.addr());
    assert!(Arc::ptr_eq(&w.table(), &shared));
    let p = rec.all();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].old_epoch, p[0].new_epoch), (5, 6));
    assert_eq!(p[0].old_masters, ["127.0.0.1:1"]);
    assert_eq!(w.status().epoch, 6);
    // Shutting down closes the watcher's sentinel links and keeps the table.
    let links = || common::cmd(s.port, &["CLIENT", "LIST"]).lines().count();
    let with_watcher = links();
    assert!(with_watcher >= 2, "the watcher holds sentinel links: {with_watcher} clients");
    w.shutdown();
    let closed = wait_until(Duration::from_secs(10), || links() < with_watcher);
    assert!(closed, "the watcher's sentinel links stayed open after shutdown");
    assert_eq!(shared.load().epoch, 6);
}
