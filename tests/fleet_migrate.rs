//! Issue 14: half the slots move from g1 and g2 to a new group g3 while a client writes and reads
//! through two keyhop instances of one fleet. Nothing acknowledged is lost, every read sees the
//! last acknowledged write, and afterwards every key lives on exactly one group: its slot's owner.

mod common;

use std::time::Duration;

use common::fleet::{Rig, Writer, assert_all_readable, move_half, owner_after_half, preload, text};
use common::probe::http_get;
use common::{free_port, wait_until};

const PRELOAD: u64 = 20_000;

#[test]
fn half_the_slots_move_to_a_new_group_under_load() {
    let rig = Rig::start();
    let admin_a = free_port();
    let (_da, a) = rig.instance(&format!("admin_listen = \"127.0.0.1:{admin_a}\""));
    let (_db, b) = rig.instance("");
    preload(a.port, PRELOAD);
    let writer = Writer::start(&[a.port, b.port], 3_000);
    writer.wait_progress(500, Duration::from_secs(20));

    let out = rig.cli(&move_half("4000"), Duration::from_secs(180));
    assert!(out.status.success(), "slots migrate failed: {}", text(&out));
    writer.wait_progress(500, Duration::from_secs(20));
    let seen = writer.finish();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    seen.assert_consistent(None);

    // Both instances serve every key with its last value, wherever it lives now.
    assert_all_readable(a.port, PRELOAD, &seen);
    assert_all_readable(b.port, PRELOAD, &seen);
    rig.assert_single_home(owner_after_half);
    let keys = rig.keys_by_group();
    assert!(keys[2].len() as u64 > PRELOAD / 3, "g3 got only {} keys", keys[2].len());

    let show = rig.cli(&["slots", "show", "--json"], Duration::from_secs(20));
    assert!(show.status.success(), "{}", text(&show));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).expect("slots show --json");
    let g3 = v["groups"].as_array().and_then(|g| g.iter().find(|g| g["name"] == "g3")).cloned();
    assert_eq!(g3.as_ref().map(|g| g["slot_count"].clone()), Some(serde_json::json!(8192)));
    assert_eq!(v["flux"], serde_json::json!([]));
    let live = v["instances"].as_array().map(|i| i.iter().filter(|i| i["live"] == true).count());
    assert_eq!(live, Some(2), "{v}");

    // Commands that met a migrating slot moved their keys themselves, counted per instance.
    let metrics = http_get(admin_a, "/metrics");
    let count = |outcome: &str| -> u64 {
        let line = format!("keyhop_migration_commands_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in /metrics:\n{metrics}"))
    };
    let (moved, nokey) = (count("moved"), count("nokey"));
    eprintln!("instance A: {moved} commands moved their keys, {nokey} found them moved");
    assert!(moved > 0, "no command moved its key through instance A ({nokey} found it moved)");
    assert!(
        wait_until(Duration::from_secs(5), || http_get(admin_a, "/metrics")
            .contains("keyhop_fleet_revision ")),
        "no fleet gauges in /metrics"
    );
    // /topology's body.
    let topology = || -> serde_json::Value {
        let body = http_get(admin_a, "/topology");
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or_default()
    };
    let topo: serde_json::Value =
        serde_json::from_str(http_get(admin_a, "/topology").split("\r\n\r\n").nth(1).unwrap_or(""))
            .expect("topology json");
    assert_eq!(topo["mode"], "static+etcd");
    assert_eq!(topo["fleet"]["prefix"], "/keyhop/test");
    assert_eq!(topo["fleet"]["fence_level"], 0);
    // The other instances, as the dashboard lists them (read from etcd every 5 s).
    let live = || {
        topology()["fleet"]["instances"]
            .as_array()
            .map(|l| l.iter().filter(|i| i["live"] == true).count())
    };
    assert!(wait_until(Duration::from_secs(10), || live() == Some(2)), "{}", topology());
    assert_eq!(topo["groups"][2]["slot_count"], 8192);
    assert!(
        wait_until(Duration::from_secs(10), || topology()["fleet"]["migrations"][0]["state"]
            == "done"),
        "{}",
        topology()
    );
    let job = topology()["fleet"]["migrations"][0].clone();
    assert_eq!(job["slots_done"], 8192, "{job}");
    assert!(job["keys_moved"].as_u64().unwrap_or(0) > 5000, "{job}");
    assert!(
        wait_until(Duration::from_secs(5), || http_get(admin_a, "/metrics")
            .contains("keyhop_migration_keys_moved_total{by=\"mover\"}")),
        "no keyhop_migration_keys_moved_total in /metrics"
    );
}
