//! The data path for slots in flux (docs/fleet-plan.md §3.2-§3.5): with hand-published tables,
//! a command on a migrating slot moves its keys from the source with MIGRATE and runs on the
//! target; locked slots hold then TRYAGAIN; transactions refuse keys in flux; the lease gate
//! fences; `drained_to` waits for requests routed with an older table.

mod common;
#[path = "fleet_dataplane/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::{Raw, Reply, cmd, command_calls, wait_until};
use harness::{Fleet, b_key, flux_key, still_key};
use keyhop_router::{FluxState, key_slot};

const HOLD: Duration = Duration::from_millis(600);

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn ok() -> Reply {
    Reply::Status("OK".into())
}

#[test]
fn single_key_commands_move_the_key_then_run_on_the_target() {
    let f = Fleet::start(HOLD);
    let (a, c) = (f.server(0), f.server(2));
    let (k1, k2, k3, still) = (flux_key(0), flux_key(1), flux_key(2), still_key(0));
    assert_eq!(cmd(a, &["SET", &k1, "v1"]), "OK");
    assert_eq!(cmd(a, &["SET", &k2, "5"]), "OK");
    f.publish(Some(FluxState::Migrating));
    let mut cl = Raw::connect(f.port);
    // Still on the source: moved, then read on the target.
    assert_eq!(cl.call(&["GET", &k1]), bulk("v1"));
    assert_eq!(cmd(a, &["EXISTS", &k1]), "0");
    assert_eq!(cmd(c, &["GET", &k1]), "v1");
    assert_eq!(cl.call(&["INCR", &k2]), Reply::Int(6));
    assert_eq!(cmd(a, &["EXISTS", &k2]), "0");
    assert_eq!(cmd(c, &["GET", &k2]), "6");
    // Already moved (the source answers NOKEY): runs on the target.
    assert_eq!(cl.call(&["SET", &k1, "v2"]), ok());
    assert_eq!(cmd(c, &["GET", &k1]), "v2");
    // A new key is created on the target.
    assert_eq!(cl.call(&["SET", &k3, "new"]), ok());
    assert_eq!(cmd(c, &["GET", &k3]), "new");
    assert_eq!(cmd(a, &["EXISTS", &k3]), "0");
    // A key of the source outside the migrating slots stays put, with no MIGRATE.
    assert_eq!(cl.call(&["SET", &still, "s"]), ok());
    assert_eq!(cmd(a, &["GET", &still]), "s");
    assert_eq!(cmd(c, &["EXISTS", &still]), "0");
    assert_eq!(command_calls(a, "migrate"), 4, "one MIGRATE per command on a key in flux");
}

#[test]
fn split_commands_move_only_their_parts_in_flux() {
    let f = Fleet::start(HOLD);
    let (a, b, c) = (f.server(0), f.server(1), f.server(2));
    let (f1, f2, s1, b1) = (flux_key(0), flux_key(1), still_key(0), b_key(0));
    assert_eq!(cmd(a, &["SET", &f1, "old"]), "OK");
    f.publish(Some(FluxState::Migrating));
    let mut cl = Raw::connect(f.port);
    assert_eq!(cl.call(&["MSET", &f1, "x", &s1, "y", &b1, "z", &f2, "w"]), ok());
    assert_eq!((cmd(c, &["GET", &f1]), cmd(c, &["GET", &f2])), ("x".into(), "w".into()));
    assert_eq!(cmd(a, &["EXISTS", &f1, &f2]), "0");
    assert_eq!((cmd(a, &["GET", &s1]), cmd(b, &["GET", &b1])), ("y".into(), "z".into()));
    assert_eq!(cmd(c, &["EXISTS", &s1, &b1]), "0");
    assert_eq!(
        cl.call(&["MGET", &b1, &f1, &s1, &f2]),
        Reply::Array(Some(vec![bulk("z"), bulk("x"), bulk("y"), bulk("w")]))
    );
    assert_eq!(cl.call(&["DEL", &f1, &s1]), Reply::Int(2));
    assert_eq!(cmd(c, &["EXISTS", &f1]), "0");
    assert_eq!(cmd(a, &["EXISTS", &s1]), "0");
}

#[test]
fn a_single_server_command_spanning_flux_and_other_slots_gets_tryagain() {
    let f = Fleet::start(HOLD);
    let a = f.server(0);
    let (f1, s1) = (flux_key(0), still_key(0));
    assert_eq!(cmd(a, &["SET", &f1, "v"]), "OK");
    f.publish(Some(FluxState::Migrating));
    let mut cl = Raw::connect(f.port);
    // Both keys are group a's, so without flux RENAME would run there.
    assert_eq!(
        cl.call(&["RENAME", &f1, &s1]),
        Reply::Error(
            "TRYAGAIN keyhop: the command's keys span a migrating slot and another slot; retry, or use a {hash tag}"
                .into()
        )
    );
    assert_eq!(cmd(a, &["GET", &f1]), "v", "nothing ran and nothing moved");
    assert_eq!(command_calls(a, "migrate"), 0);
}

#[test]
fn a_key_moves_into_the_clients_database() {
    let f = Fleet::start(HOLD);
    let (a, c) = (f.server(0), f.server(2));
    let k = flux_key(0);
    let mut src = Raw::connect(a);
    assert_eq!(src.call(&["SELECT", "3"]), ok());
    assert_eq!(src.call(&["SET", &k, "in3"]), ok());
    f.publish(Some(FluxState::Migrating));
    let mut cl = Raw::connect(f.port);
    assert_eq!(cl.call(&["SELECT", "3"]), ok());
    assert_eq!(cl.call(&["APPEND", &k, "!"]), Reply::Int(4));
    let mut dst = Raw::connect(c);
    assert_eq!(dst.call(&["SELECT", "3"]), ok());
    assert_eq!(dst.call(&["GET", &k]), bulk("in3!"));
    assert_eq!(cmd(c, &["EXISTS", &k]), "0", "not in db 0 of the target");
    assert_eq!(src.call(&["EXISTS", &k]), Reply::Int(0));
}

#[test]
fn busykey_keeps_the_target_copy() {
    let f = Fleet::start(HOLD);
    let (a, c) = (f.server(0), f.server(2));
    let (k, other) = (flux_key(0), flux_key(1));
    assert_eq!(cmd(a, &["SET", &k, "stale"]), "OK");
    assert_eq!(cmd(c, &["SET", &k, "current"]), "OK");
    assert_eq!(cmd(a, &["SET", &other, "o"]), "OK");
    f.publish(Some(FluxState::Migrating));
    let mut cl = Raw::connect(f.port);
    // One MIGRATE for both keys: BUSYKEY for k, while `other` moves.
    assert_eq!(
        cl.call(&["MGET", &k, &other]),
        Reply::Array(Some(vec![bulk("current"), bulk("o")]))
    );
    assert_eq!(cmd(a, &["EXISTS", &k, &other]), "0", "the source copies are gone");
    assert_eq!(cmd(c, &["GET", &k]), "current");
    assert_eq!(cmd(c, &["GET", &other]), "o");
}

#[test]
fn a_locked_slot_holds_until_the_next_table() {
    let f = Fleet::start(Duration::from_secs(5));
    let (a, c) = (f.server(0), f.server(2));
    let k = flux_key(0);
    assert_eq!(cmd(a, &["SET", &k, "v"]), "OK");
    f.publish(Some(FluxState::Locked));
    let mut cl = Raw::connect(f.port);
    let started = Instant::now();
    cl.send(&[b"GET", k.as_bytes()]);
    // Read while the table changes: the reply can only come after it.
    let (reply, took) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            f.publish(Some(FluxState::Migrating));
        });
        (cl.read(), started.elapsed())
    });
    assert_eq!(reply, bulk("v"));
    assert!(took >= Duration::from_millis(200), "answered after {took:?}, before the new table");
    assert_eq!(cmd(c, &["GET", &k]), "v");
    assert_eq!(cmd(a, &["EXISTS", &k]), "0");
}

#[test]
fn a_locked_slot_never_unlocked_gets_tryagain_after_hold_ms() {
    let f = Fleet::start(HOLD);
    let a = f.server(0);
    let k = flux_key(0);
    assert_eq!(cmd(a, &["SET", &k, "v"]), "OK");
    f.publish(Some(FluxState::Locked));
    let mut cl = Raw::connect(f.port);
    let started = Instant::now();
    let slot = key_slot(k.as_bytes());
    assert_eq!(
        cl.call(&["GET", &k]),
        Reply::Error(format!("TRYAGAIN keyhop: slot {slot} is being handed over to c, retry"))
    );
    let took = started.elapsed();
    assert!(took >= HOLD && took < HOLD * 4, "answered after {took:?}");
    // A key of a slot not in flux is served at once meanwhile.
    assert_eq!(cl.call(&["SET", &still_key(0), "x"]), ok());
    assert_eq!(cmd(a, &["GET", &k]), "v");
}

#[test]
fn a_transaction_on_a_key_in_flux_is_aborted() {
    let f = Fleet::start(HOLD);
    let (a, c) = (f.server(0), f.server(2));
    let k = flux_key(0);
    f.publish(Some(FluxState::Migrating));
    let mut cl = Raw::connect(f.port);
    assert_eq!(cl.call(&["MULTI"]), ok());
    assert_eq!(cl.call(&["SET", &still_key(0), "x"]), Reply::Status("QUEUED".into()));
    let slot = key_slot(k.as_bytes());
    assert_eq!(
        cl.call(&["SET", &k, "v"]),
        Reply::Error(format!("TRYAGAIN keyhop: slot {slot} is migrating; retry the transaction"))
    );
    assert_eq!(
        cl.call(&["EXEC"]),
        Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(cmd(a, &["EXISTS", &k, &still_key(0)]), "0");
    assert_eq!(cmd(c, &["EXISTS", &k]), "0");
    // WATCH too.
    assert_eq!(
        cl.call(&["WATCH", &k]),
        Reply::Error(format!("TRYAGAIN keyhop: slot {slot} is migrating; retry the transaction"))
    );
}

#[test]
fn the_lease_gate_fences_flux_then_every_key() {
    let f = Fleet::start(HOLD);
    let a = f.server(0);
    let (k, still) = (flux_key(0), still_key(0));
    f.publish(Some(FluxState::Migrating));
    f.proxy.set_fleet_gate(Duration::from_secs(3));
    let mut cl = Raw::connect(f.port);
    assert_eq!(f.proxy.fence_level(), 0, "a gate without a deadline fences nothing");
    assert_eq!(cl.call(&["SET", &k, "moved"]), ok());
    // Level 1: the lease may be gone, slots in flux are held, then TRYAGAIN.
    f.proxy.set_lease_deadline(Some(Instant::now()));
    assert_eq!(f.proxy.fence_level(), 1);
    let slot = key_slot(k.as_bytes());
    assert_eq!(
        cl.call(&["GET", &k]),
        Reply::Error(format!("TRYAGAIN keyhop: slot {slot} is being handed over to c, retry"))
    );
    assert_eq!(cl.call(&["SET", &still, "s"]), ok());
    assert_eq!(cmd(a, &["GET", &still]), "s");
    // Level 2: past the grace, every keyed command; keyless ones still work.
    f.proxy.set_fleet_gate(Duration::ZERO);
    assert_eq!(f.proxy.fence_level(), 2);
    let lost = Reply::Error("TRYAGAIN keyhop: lost its etcd lease; re-reading the slot map".into());
    assert_eq!(cl.call(&["GET", &still]), lost);
    assert_eq!(cl.call(&["MGET", &b_key(0), &still]), lost);
    assert_eq!(cl.call(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(cl.call(&["DBSIZE"]), Reply::Int(2));
    // Healthy again.
    f.proxy.set_lease_deadline(None);
    assert_eq!(f.proxy.fence_level(), 0);
    assert_eq!(cl.call(&["GET", &k]), bulk("moved"));
}

#[test]
fn drained_to_waits_for_a_slow_request_routed_with_an_older_table() {
    let f = Fleet::start(HOLD);
    f.proxy.set_fleet_gate(Duration::from_secs(3));
    let old = f.table.load().epoch;
    let mut slow = Raw::connect(f.port);
    slow.send(&[b"DEBUG", b"SLEEP", b"1"]);
    let routed = wait_until(Duration::from_secs(5), || {
        cmd(f.port, &["CLIENT", "LIST"]).contains("cmd=debug")
    });
    assert!(routed, "the DEBUG SLEEP never reached keyhop");
    let new = f.publish(Some(FluxState::Migrating));
    let rt = &f.rt;
    let wait = |d: Duration, epoch: u64| {
        rt.block_on(async { tokio::time::timeout(d, f.proxy.drained_to(epoch)).await.is_ok() })
    };
    assert!(wait(Duration::from_millis(100), old), "nothing older than the old table is in flight");
    assert!(!wait(Duration::from_millis(200), new), "the DEBUG SLEEP is still in flight");
    assert!(wait(Duration::from_secs(5), new), "drained once it is answered");
    assert_eq!(slow.read(), ok());
    // Idle clients never hold the barrier.
    assert!(wait(Duration::from_millis(100), new + 1));
}

/// Subscribers of `channel` on the server at `port`.
fn numsub(port: u16, channel: &str) -> i64 {
    match Raw::connect(port).call(&["PUBSUB", "NUMSUB", channel]) {
        Reply::Array(Some(items)) if items.len() == 2 => match items[1] {
            Reply::Int(n) => n,
            _ => -1,
        },
        _ => -1,
    }
}

#[test]
fn a_channel_follows_its_slot_to_the_new_group_at_the_flip() {
    let f = Fleet::start(HOLD);
    let (a, c) = (f.server(0), f.server(2));
    let ch = flux_key(0);
    let mut sub = Raw::connect(f.port);
    assert_eq!(
        sub.call(&["SUBSCRIBE", &ch]),
        Reply::Array(Some(vec![bulk("subscribe"), bulk(&ch), Reply::Int(1)]))
    );
    assert!(wait_until(Duration::from_secs(5), || numsub(a, &ch) == 1), "subscribed on a");
    f.publish(Some(FluxState::Migrating));
    assert_eq!(numsub(a, &ch), 1, "channels follow the owner, the source until the flip");
    f.publish_flipped();
    let moved = wait_until(Duration::from_secs(5), || numsub(c, &ch) == 1 && numsub(a, &ch) == 0);
    assert!(moved, "re-subscribed on c: a has {}, c has {}", numsub(a, &ch), numsub(c, &ch));
    assert_eq!(cmd(f.port, &["PUBLISH", &ch, "hello"]), "1");
    assert_eq!(sub.read(), Reply::Array(Some(vec![bulk("message"), bulk(&ch), bulk("hello")])));
}

#[test]
fn blocking_commands_on_keys_in_flux_get_tryagain() {
    let f = Fleet::start(HOLD);
    let a = f.server(0);
    let (k, other) = (flux_key(0), flux_key(1));
    let slot = key_slot(k.as_bytes());
    let mut blocked = Raw::connect(f.port);
    blocked.send(&[b"BLPOP", k.as_bytes(), b"30"]);
    let on_source = || cmd(a, &["CLIENT", "LIST"]).contains("cmd=blpop");
    assert!(wait_until(Duration::from_secs(5), on_source), "BLPOP never blocked on a");
    f.publish(Some(FluxState::Migrating));
    // Blocked on the source when its slot started moving: unblocked there, told to retry.
    assert_eq!(
        blocked.read(),
        Reply::Error(format!("TRYAGAIN keyhop: slot {slot} is migrating; retry the command"))
    );
    assert!(wait_until(Duration::from_secs(5), || !on_source()), "still blocked on a");
    // A new one is refused at once.
    let slot = key_slot(other.as_bytes());
    assert_eq!(
        blocked.call(&["BLPOP", &other, "30"]),
        Reply::Error(format!("TRYAGAIN keyhop: slot {slot} is migrating; retry the command"))
    );
    // A key not in flux still blocks and is served.
    let still = still_key(0);
    blocked.send(&[b"BLPOP", still.as_bytes(), b"30"]);
    assert!(wait_until(Duration::from_secs(5), on_source), "BLPOP never blocked on a");
    assert_eq!(cmd(f.port, &["RPUSH", &still, "x"]), "1");
    assert_eq!(blocked.read(), Reply::Array(Some(vec![bulk(&still), bulk("x")])));
}

#[test]
fn a_source_being_failed_over_holds_the_command() {
    let f = Fleet::start(Duration::from_secs(5));
    let (a, c) = (f.server(0), f.server(2));
    let k = flux_key(0);
    assert_eq!(cmd(a, &["SET", &k, "v"]), "OK");
    f.publish(Some(FluxState::Migrating));
    let source = f.servers[0].addr();
    f.proxy.fence(&source, Some(Duration::from_secs(30)));
    let mut cl = Raw::connect(f.port);
    let started = Instant::now();
    cl.send(&[b"GET", k.as_bytes()]);
    let (reply, took) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            f.proxy.fence(&source, None);
        });
        (cl.read(), started.elapsed())
    });
    assert_eq!(reply, bulk("v"));
    assert!(took >= Duration::from_millis(200), "answered after {took:?}, while fenced");
    assert_eq!(cmd(c, &["GET", &k]), "v");
    // Fenced for longer than hold_ms: TRYAGAIN naming the failover.
    let f = Fleet::start(HOLD);
    let k = flux_key(0);
    f.publish(Some(FluxState::Migrating));
    let source = f.servers[0].addr();
    f.proxy.fence(&source, Some(Duration::from_secs(30)));
    assert_eq!(
        Raw::connect(f.port).call(&["GET", &k]),
        Reply::Error(format!(
            "TRYAGAIN keyhop: could not move the key to c (the source {source} of group a is being failed over)"
        ))
    );
}

#[test]
fn an_open_transaction_whose_slot_starts_migrating_is_dropped() {
    let f = Fleet::start(HOLD);
    f.proxy.set_fleet_gate(Duration::from_secs(3));
    let a = f.server(0);
    let k = flux_key(0);
    let mut cl = Raw::connect(f.port);
    assert_eq!(cl.call(&["MULTI"]), ok());
    assert_eq!(cl.call(&["SET", &k, "v"]), Reply::Status("QUEUED".into()));
    let rt = &f.rt;
    let drained = |epoch: u64| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), f.proxy.drained_to(epoch)).await.is_ok()
        })
    };
    let epoch = f.publish(Some(FluxState::Locked));
    // The open transaction no longer holds the barrier: it can no longer run.
    assert!(drained(epoch), "the transaction still counts as in flight");
    let slot = key_slot(k.as_bytes());
    assert_eq!(
        cl.call(&["EXEC"]),
        Reply::Error(format!(
            "EXECABORT keyhop: the connection to group a's master {} was lost before EXEC (slot {slot} started migrating); the transaction was not executed (retry it)",
            f.servers[0].addr()
        ))
    );
    assert_eq!(cmd(a, &["EXISTS", &k]), "0");
}

#[test]
fn a_resp3_subscriber_running_a_command_does_not_hold_the_drain_barrier() {
    let f = Fleet::start(HOLD);
    f.proxy.set_fleet_gate(Duration::from_secs(3));
    let k = still_key(0);
    assert_eq!(cmd(f.server(0), &["SET", &k, "v"]), "OK");
    let mut cl = Raw::connect(f.port);
    assert!(matches!(cl.call(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(
        cl.call(&["SUBSCRIBE", "news"]),
        Reply::Push(vec![bulk("subscribe"), bulk("news"), Reply::Int(1)])
    );
    // Run in the subscribed mode through the shared path.
    assert_eq!(cl.call(&["GET", &k]), bulk("v"));
    let epoch = f.publish(None);
    let drained = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), f.proxy.drained_to(epoch)).await.is_ok()
    });
    assert!(drained, "an answered command still counts as in flight");
}

#[test]
fn an_idle_transaction_away_from_the_migration_does_not_hold_the_drain_barrier() {
    let f = Fleet::start(HOLD);
    f.proxy.set_fleet_gate(Duration::from_secs(3));
    let k = still_key(0);
    // One client opened MULTI and queued nothing; another queued a command on a slot that is
    // not migrating. Neither sends EXEC while the migration starts.
    let mut empty = Raw::connect(f.port);
    assert_eq!(empty.call(&["MULTI"]), ok());
    let mut queued = Raw::connect(f.port);
    assert_eq!(queued.call(&["MULTI"]), ok());
    assert_eq!(queued.call(&["SET", &k, "v"]), Reply::Status("QUEUED".into()));
    let epoch = f.publish(Some(FluxState::Locked));
    let drained = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), f.proxy.drained_to(epoch)).await.is_ok()
    });
    assert!(drained, "an open transaction away from the migration held the barrier");
    // Both still work.
    assert_eq!(queued.call(&["EXEC"]), Reply::Array(Some(vec![ok()])));
    assert_eq!(cmd(f.server(0), &["GET", &k]), "v");
    assert_eq!(empty.call(&["EXEC"]), Reply::Array(Some(vec![])));
}
