//! The committed example configurations parse, validate and describe the intended topology.

use keyhop_control::{Config, describe};

fn example(name: &str) -> Config {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    match Config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[test]
fn static_example() {
    let cfg = example("static.toml");
    assert_eq!(cfg.listen, "127.0.0.1:6380");
    assert!(!cfg.is_sentinel_mode());
    let table = cfg.routing_table(1).expect("static table");
    assert_eq!(table.groups.len(), 2);
    assert_eq!(table.groups[0].name, "g1");
    assert_eq!(table.groups[0].master, "127.0.0.1:7001");
    assert_eq!(table.groups[0].replicas.len(), 1);
    assert_eq!(table.groups[0].replicas[0].addr, "127.0.0.1:7002");
    assert_eq!(table.groups[1].master, "127.0.0.1:7003");
    assert_eq!(table.slot_ranges(0), vec![(0, 8191)]);
    assert_eq!(table.slot_ranges(1), vec![(8192, 16383)]);
    let text = describe(&cfg, &table);
    assert!(
        text.contains(
            "g1  master 127.0.0.1:7001  replicas 127.0.0.1:7002  slots 0-8191 (8192 slots)"
        ),
        "{text}"
    );
    assert!(
        text.contains("g2  master 127.0.0.1:7003  replicas -  slots 8192-16383 (8192 slots)"),
        "{text}"
    );
}

#[test]
fn sentinel_example() {
    let cfg = example("sentinel.toml");
    let s = cfg.sentinel.as_ref().expect("a [sentinel] section");
    assert_eq!(s.addrs, ["127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"]);
    assert_eq!(s.poll_interval_ms, 1000);
    let names: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["g1", "g2"]);
    assert!(cfg.groups.iter().all(|g| g.master.is_none()));
    assert_eq!(cfg.slot_ranges().expect("even split"), vec![vec![(0, 8191)], vec![(8192, 16383)]]);
    assert!(cfg.routing_table(1).is_err(), "masters come from Sentinel");
}

#[test]
fn fleet_example() {
    let cfg = example("fleet.toml");
    let e = cfg.etcd.as_ref().expect("an [etcd] section");
    assert_eq!(e.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(e.prefix, "/keyhop/prod");
    assert_eq!((e.lease_ttl_ms, e.grace_ms, e.hold_ms), (10_000, 10_000, 2_000));
    assert!(!cfg.is_sentinel_mode());
    assert_eq!(cfg.slot_ranges().expect("seed slots"), vec![vec![(0, 8191)], vec![(8192, 16383)]]);
}
