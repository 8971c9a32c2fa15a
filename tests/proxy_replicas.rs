//! `read_from = "replica-preferred"` in static mode: reads go to the replica, writes to the master.

mod common;

use common::{Raw, Reply, cmd, keyhop, redis_replica, redis_server, temp_dir, wait_until};
use std::time::Duration;

use common::command_calls as calls;

#[test]
fn reads_go_to_the_replica_and_writes_to_the_master() {
    let dir = temp_dir();
    let master = redis_server(&[]);
    let replica = redis_replica(master.port, &[]);
    let config = common::replica_reads_config(&master, &replica);
    let proxy = keyhop(dir.path(), &config);
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["SET", "k", "v"]), Reply::Status("OK".into()));
    assert!(
        wait_until(Duration::from_secs(5), || cmd(replica.port, &["GET", "k"]) == "v"),
        "replicated"
    );
    let before = calls(replica.port, "get");
    for _ in 0..20 {
        assert_eq!(c.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    }
    assert_eq!(calls(replica.port, "get") - before, 20, "every GET served by the replica");
    assert_eq!(calls(master.port, "get"), 0, "no GET on the master");
    assert_eq!(calls(master.port, "set"), 1, "the write went to the master");
    // A write-flagged command never goes to the replica, even when it also reads.
    assert_eq!(c.call(&["GETSET", "k", "w"]), Reply::Bulk(Some(b"v".to_vec())));
    assert_eq!(calls(master.port, "getset"), 1);
}

#[test]
fn reads_are_spread_round_robin_over_two_replicas() {
    let dir = temp_dir();
    let master = redis_server(&[]);
    let (r1, r2) = (redis_replica(master.port, &[]), redis_replica(master.port, &[]));
    let config = format!(
        "listen = \"{{listen}}\"\nread_from = \"replica-preferred\"\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nreplicas = [\"{}\", \"{}\"]\n",
        master.addr(),
        r1.addr(),
        r2.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["SET", "k", "v"]), Reply::Status("OK".into()));
    for r in [&r1, &r2] {
        let replicated = wait_until(Duration::from_secs(5), || cmd(r.port, &["GET", "k"]) == "v");
        assert!(replicated, "{} never got k", r.name);
    }
    // Several clients, so the spread does not depend on one connection's turn.
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 100;
    const N: u64 = (CLIENTS * PER_CLIENT) as u64;
    let before = (calls(r1.port, "get"), calls(r2.port, "get"));
    let mut clients: Vec<Raw> = (0..CLIENTS).map(|_| Raw::connect(proxy.port)).collect();
    for _ in 0..PER_CLIENT {
        for client in &mut clients {
            assert_eq!(client.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
        }
    }
    let served = (calls(r1.port, "get") - before.0, calls(r2.port, "get") - before.1);
    eprintln!("[replicas] {N} GETs: {} on the first replica, {} on the second", served.0, served.1);
    assert_eq!(calls(master.port, "get"), 0, "no GET on the master");
    assert_eq!(served.0 + served.1, N, "every GET served by a replica");
    assert!(served.0 >= N / 4 && served.1 >= N / 4, "an unfair split: {served:?}");
    // Writes still go to the master only.
    for i in 0..10 {
        assert_eq!(c.call(&["SET", "k", &i.to_string()]), Reply::Status("OK".into()));
    }
    assert_eq!(calls(master.port, "set"), 11, "every write on the master");
}
