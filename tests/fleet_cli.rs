//! Issue 14: the operator's commands on a fleet: `slots init` (once), `slots show`, `group
//! add/remove`, `slots rebalance --dry-run`, `slots sweep`, and a `slots migrate` killed with
//! SIGKILL mid-way that a second run resumes and finishes.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{Rig, Seen, assert_all_readable, preload, text};
use common::{cmd, wait_until};

#[test]
fn init_show_and_groups() {
    let rig = Rig::start();
    let out = rig.cli(&["slots", "init"], Duration::from_secs(20));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a fleet already exists at /keyhop/test"),
        "{}",
        text(&out)
    );
    let out = rig.cli(&["slots", "show"], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    let show = String::from_utf8_lossy(&out.stdout);
    assert!(show.contains("group g1            8192 slots  0-8191"), "{show}");
    assert!(show.contains("group g2            8192 slots  8192-16383"), "{show}");
    assert!(show.contains("group g3               0 slots  -"), "{show}");

    let out = rig.cli(&["group", "add", "g3", "--master", "127.0.0.1:1"], Duration::from_secs(20));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("group \"g3\" is already in the fleet"),
        "{}",
        text(&out)
    );
    let out = rig.cli(&["group", "remove", "g1"], Duration::from_secs(20));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("group \"g1\" still owns 8192 slots"),
        "{}",
        text(&out)
    );
    let out = rig.cli(&["group", "add", "g4", "--master", "127.0.0.1:1"], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    let out = rig.cli(&["group", "remove", "g4"], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));

    let out = rig.cli(&["slots", "rebalance", "--dry-run"], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "move 5462-8191,13653-16383 to g3\n");

    // A stray key in a slot g2 does not own is swept; g2's own keys stay.
    let stray = (0..10_000)
        .map(|i| format!("stray:{i}"))
        .find(|k| keyhop_router::key_slot(k.as_bytes()) < 8192)
        .expect("a key of g1's slots");
    let own = (0..10_000)
        .map(|i| format!("own:{i}"))
        .find(|k| keyhop_router::key_slot(k.as_bytes()) >= 8192)
        .expect("a key of g2's slots");
    assert_eq!(cmd(rig.servers[1].port, &["SET", &stray, "x"]), "OK");
    assert_eq!(cmd(rig.servers[1].port, &["SET", &own, "y"]), "OK");
    let out = rig.cli(&["slots", "sweep", "--group", "g2"], Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("swept 1 keys"), "{}", text(&out));
    assert_eq!(cmd(rig.servers[1].port, &["EXISTS", &stray]), "0");
    assert_eq!(cmd(rig.servers[1].port, &["GET", &own]), "y");
}

#[test]
fn a_killed_migration_resumes() {
    let rig = Rig::start();
    let (_d, a) = rig.instance("");
    preload(a.port, 20_000);
    let args = [
        "slots",
        "migrate",
        "--slots",
        "0-4095",
        "--to",
        "g3",
        "--window",
        "512",
        "--keys-per-second",
        "2000",
    ];
    let mut first = rig.cli_spawn(&args, "first");
    let log = |name: &str| {
        std::fs::read_to_string(rig.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(30), || log("first").contains("window 512-1023: migrating")),
        "the first run did not reach its second window: {}",
        log("first")
    );
    let _ = first.kill();
    let _ = first.wait();

    // The killed run left a window in flux; the second run takes the job over (after the first
    // mover's lease expires) and finishes it.
    let out = rig.cli(&args, Duration::from_secs(120));
    assert!(out.status.success(), "the second run failed: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming job"), "{err}");
    let out = rig.cli(&["slots", "show", "--json"], Duration::from_secs(20));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["flux"], serde_json::json!([]));
    let g3 = v["groups"].as_array().and_then(|g| g.iter().find(|g| g["name"] == "g3")).cloned();
    assert_eq!(g3.map(|g| g["slots"].clone()), Some(serde_json::json!(["0-4095"])));
    rig.assert_single_home(|slot| match slot {
        0..=4095 => 2,
        4096..=8191 => 0,
        _ => 1,
    });
    let started = Instant::now();
    assert_all_readable(a.port, 20_000, &Seen::default());
    eprintln!("all 20000 keys read back in {:?}", started.elapsed());
}
