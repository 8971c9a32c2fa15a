//! Issue 14: a keyhop instance frozen (SIGSTOP) in the middle of a migration loses its etcd lease.
//! The migration goes on without it once the grace period has passed, and when the instance
//! wakes up it answers no keyed command from its stale slot map: it refuses (TRYAGAIN) until it
//! has registered again and applied the current map, and then serves every key correctly.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{
    Rig, Writer, assert_all_readable, move_half, owner_after_half, preload, text, wait_success,
};
use common::{Raw, Reply, wait_until};

const PRELOAD: u64 = 20_000;

#[test]
fn a_frozen_instance_is_left_behind_and_fences_itself() {
    let rig = Rig::start();
    let (_da, a) = rig.instance("");
    let (db, b) = rig.instance("");
    preload(a.port, PRELOAD);
    let writer = Writer::start(&[a.port, b.port], 3_000);
    writer.wait_progress(300, Duration::from_secs(20));

    let mut migrate = rig.cli_spawn(&move_half("1500"), "migrate");
    let log = || std::fs::read_to_string(rig.dir.path().join("migrate.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || log().contains("migrating (rev")),
        "the migration did not start: {}",
        log()
    );
    // Freeze B for longer than its lease (2 s) plus the grace period (2 s).
    b.signal(19);
    let frozen = Instant::now();
    // A write sent to B while it is frozen waits in its socket. Its slot is in the window that
    // moves to g3 while B sleeps: B's stale map still says g1 owns it.
    let late_key = (0..100_000)
        .map(|i| format!("late:{i}"))
        .find(|k| (1024..=2047).contains(&keyhop_router::key_slot(k.as_bytes())))
        .expect("a key of slots 1024-2047");
    let mut late = Raw::connect(b.port);
    late.send(&[b"SET", late_key.as_bytes(), b"written-while-frozen"]);
    std::thread::sleep(Duration::from_secs(7));
    let left_behind = log().contains("lost its lease");
    b.signal(18);
    eprintln!("B frozen for {:?}", frozen.elapsed());
    // The request B read after waking is answered from the current map, or refused.
    let late_reply = late.read();
    eprintln!("the request B read after waking got {late_reply:?}");
    let late_ok = match late_reply {
        Reply::Status(s) => {
            assert_eq!(s, "OK");
            true
        }
        Reply::Error(e) => {
            assert!(e.starts_with("TRYAGAIN keyhop:"), "{e}");
            false
        }
        other => panic!("unexpected reply {other:?}"),
    };

    wait_success(&mut migrate, Duration::from_secs(180), log);
    assert!(
        left_behind,
        "the coordinator never stopped waiting for the frozen instance: {}",
        log()
    );
    writer.wait_progress(300, Duration::from_secs(30));
    let seen = writer.finish();
    // A request B had forwarded just before it froze times out when it wakes (its timer ran
    // while it slept): that one may fail; nothing else may.
    seen.assert_consistent(Some("did not answer within"));
    assert_all_readable(a.port, PRELOAD, &seen);
    assert_all_readable(b.port, PRELOAD, &seen);
    rig.assert_single_home(owner_after_half);
    // The write went where the slot lives now, never to g1 under B's stale map.
    let on_g1 = common::cmd(rig.servers[0].port, &["EXISTS", &late_key]);
    assert_eq!(on_g1, "0", "B wrote {late_key} on g1 from its stale map");
    if late_ok {
        let got = common::cmd(a.port, &["GET", &late_key]);
        assert_eq!(got, "written-while-frozen");
    }
    let blog = common::keyhop_log(db.path());
    eprintln!("migrate:\n{}", log());
    for l in
        blog.lines().filter(|l| l.contains("lease") || l.contains("regist") || l.contains("fence"))
    {
        eprintln!("B: {l}");
    }
    assert!(blog.contains("registered again"), "B never re-registered:\n{blog}");
    let show = rig.cli(&["slots", "show"], Duration::from_secs(20));
    assert!(show.status.success(), "{}", text(&show));
}
