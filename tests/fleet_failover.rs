//! Issue 14 in Sentinel mode: while slots move from g1 and g2 to g3, Sentinel fails g1 (a
//! source) over. The migration follows the new master and finishes; every acknowledged write is
//! readable through both instances, and every key lives only on the master of its slot's owner.

mod common;

use std::time::Duration;

use common::etcd::Etcd;
use common::fleet::{
    Writer, all_keys, assert_all_readable, move_half, owner_after_half, preload, run_bounded, text,
    wait_success,
};
use common::{
    Proc, array_len, keyhop, keyhop_bin, redis_replica, redis_sentinel, redis_server, role,
    temp_dir, wait_until,
};
use keyhop_router::key_slot;

const PRELOAD: u64 = 20_000;

/// Three groups, each a master and a replica, and three sentinels monitoring them.
struct Cluster {
    dir: tempfile::TempDir,
    servers: Vec<Proc>,
    sentinels: Vec<Proc>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = temp_dir();
        let mut servers = Vec::new();
        for _ in 0..3 {
            let m = redis_server(&[]);
            let r = redis_replica(m.port, &[]);
            servers.push(m);
            servers.push(r);
        }
        let groups = [("g1", servers[0].port), ("g2", servers[2].port), ("g3", servers[4].port)];
        let sentinels: Vec<Proc> = (0..3).map(|_| redis_sentinel(dir.path(), &groups, 2)).collect();
        let c = Cluster { dir, servers, sentinels };
        let ready = wait_until(Duration::from_secs(30), || {
            c.sentinels.iter().all(|s| {
                ["g1", "g2", "g3"].iter().all(|g| {
                    array_len(s.port, &["SENTINEL", "sentinels", g]) == 2
                        && array_len(s.port, &["SENTINEL", "replicas", g]) == 1
                })
            })
        });
        assert!(ready, "sentinels did not discover each other and the replicas in time");
        c
    }

    /// The current master port of group `g` (0-based), asked from the servers themselves.
    fn master_port(&self, g: usize) -> u16 {
        let pair = [&self.servers[2 * g], &self.servers[2 * g + 1]];
        pair.iter().find(|p| role(p.port) == "master").map(|p| p.port).expect("a master")
    }
}

fn config(c: &Cluster, etcd: &Etcd, listen: &str) -> String {
    let addrs: Vec<String> = c.sentinels.iter().map(|s| format!("\"{}\"", s.addr())).collect();
    format!(
        "listen = \"{listen}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = 3000\n\
         [sentinel]\naddrs = [{}]\npoll_interval_ms = 1000\n\n\
         [etcd]\nendpoints = [\"{}\"]\nprefix = \"/keyhop/sentinel\"\nlease_ttl_ms = 2000\ngrace_ms = 2000\nhold_ms = 1000\npoll_interval_ms = 1000\n\n\
         [[groups]]\nname = \"g1\"\nslots = [\"0-8191\"]\n\n\
         [[groups]]\nname = \"g2\"\nslots = [\"8192-16383\"]\n",
        addrs.join(", "),
        etcd.endpoint
    )
}

#[test]
fn the_source_fails_over_mid_migration() {
    let etcd = Etcd::start();
    let c = Cluster::start();
    let cli_cfg = c.dir.path().join("cli.toml");
    std::fs::write(&cli_cfg, config(&c, &etcd, "127.0.0.1:1")).expect("write the cli config");
    let cli = |args: &[&str], bound: Duration| {
        run_bounded(
            std::process::Command::new(keyhop_bin()).args(args).arg("--config").arg(&cli_cfg),
            bound,
        )
    };
    let out = cli(&["slots", "init"], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&["group", "add", "g3"], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));

    let (da, db) = (temp_dir(), temp_dir());
    let a = keyhop(da.path(), &config(&c, &etcd, "{listen}"));
    let b = keyhop(db.path(), &config(&c, &etcd, "{listen}"));
    preload(a.port, PRELOAD);
    let writer = Writer::start(&[a.port, b.port], 3_000);
    writer.wait_progress(300, Duration::from_secs(20));

    let log_path = c.dir.path().join("migrate.log");
    let log_file = std::fs::File::create(&log_path).expect("create the migrate log");
    let mut migrate = std::process::Command::new(keyhop_bin())
        .args(move_half("2000"))
        .arg("--config")
        .arg(&cli_cfg)
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .spawn()
        .expect("spawn migrate");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || log().contains("migrating (rev")),
        "the migration did not start: {}",
        log()
    );
    let old_master = c.master_port(0);
    let out = common::cmd(c.sentinels[0].port, &["SENTINEL", "FAILOVER", "g1"]);
    assert_eq!(out, "OK");
    assert!(
        wait_until(Duration::from_secs(30), || c.master_port(0) != old_master),
        "g1 was not failed over"
    );

    wait_success(&mut migrate, Duration::from_secs(240), log);
    eprintln!("migrate:\n{}", log());
    writer.wait_progress(300, Duration::from_secs(30));
    let seen = writer.finish();
    // During the failover keyhop refuses g1's requests (its fence); nothing else may fail.
    seen.assert_consistent(Some("is being replaced by a Sentinel failover"));
    assert_all_readable(a.port, PRELOAD, &seen);
    assert_all_readable(b.port, PRELOAD, &seen);

    // Every key is on exactly one master: its slot's owner.
    let mut total = 0;
    let mut seen_keys = std::collections::HashSet::new();
    for g in 0..3 {
        for k in all_keys(c.master_port(g)) {
            assert_eq!(
                owner_after_half(key_slot(&k)),
                g,
                "key {:?} is on g{}",
                String::from_utf8_lossy(&k),
                g + 1
            );
            assert!(seen_keys.insert(k), "a key is on two groups");
            total += 1;
        }
    }
    assert!(total as u64 >= PRELOAD, "only {total} keys in all");
}
