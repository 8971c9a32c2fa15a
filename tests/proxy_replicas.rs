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
