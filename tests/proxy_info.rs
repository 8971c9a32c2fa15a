//! In-band views answered by keyhop: INFO (with the groups' keyspace summed) and SLOWLOG.

mod common;

use common::{Raw, Reply, keyhop, redis_server, temp_dir};

fn setup(extra: &str) -> (tempfile::TempDir, common::Proc, common::Proc, common::Proc) {
    let dir = temp_dir();
    let (g1, g2) = (redis_server(&[]), redis_server(&[]));
    let config = format!(
        "listen = \"{{listen}}\"\n{extra}\n[[groups]]\nname = \"g1\"\nmaster = \"{}\"\n\n[[groups]]\nname = \"g2\"\nmaster = \"{}\"\n",
        g1.addr(),
        g2.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    (dir, g1, g2, proxy)
}

#[test]
fn info_sums_keyspace_and_describes_groups() {
    let (_d, g1, g2, proxy) = setup("");
    let mut c = Raw::connect(proxy.port);
    for i in 0..50 {
        c.call(&["SET", &format!("info:{i}"), "x"]);
    }
    c.call(&["SET", "ttl", "x", "EX", "1000"]);
    let info = c.call(&["INFO"]).text();
    for section in ["# Server", "# Clients", "# Stats", "# Keyspace", "# Keyhop"] {
        assert!(info.contains(section), "INFO has {section}:\n{info}");
    }
    assert!(info.contains("db0:keys=51,expires=1,"), "keyspace summed over both groups:\n{info}");
    assert!(
        info.contains(&format!("master={}", g1.addr()))
            && info.contains(&format!("master={}", g2.addr()))
    );
    assert!(info.contains("slots=0-8191") && info.contains("slots=8192-16383"));
    assert!(info.contains("redis_version:"), "clients that check the version find one");
    let only = c.call(&["INFO", "keyhop"]).text();
    assert!(only.starts_with("# Keyhop") && !only.contains("# Server"), "{only}");
    let server = c.call(&["INFO", "server"]).text();
    assert!(server.contains("tcp_port:") && !server.contains("# Keyspace"), "{server}");
}

#[test]
fn slowlog_records_commands_with_their_group() {
    let (_d, _g1, _g2, proxy) = setup("slowlog_threshold_us = 0\nslowlog_max_len = 5");
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["SLOWLOG", "RESET"]), Reply::Status("OK".into()));
    c.call(&["SET", "foo", "1"]); // slot 12182: g2
    c.call(&["GET", "bar"]); // slot 5061: g1
    let Reply::Array(Some(entries)) = c.call(&["SLOWLOG", "GET", "2"]) else {
        panic!("SLOWLOG GET answers an array")
    };
    assert_eq!(entries.len(), 2);
    let fields = |e: &Reply| match e {
        Reply::Array(Some(f)) => f.clone(),
        other => panic!("entry {other:?}"),
    };
    let newest = fields(&entries[0]);
    assert_eq!(newest.len(), 7, "Redis's six fields plus the group");
    assert_eq!(
        newest[3],
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"GET".to_vec())),
            Reply::Bulk(Some(b"bar".to_vec()))
        ]))
    );
    assert_eq!(newest[6].text(), "g1");
    assert_eq!(fields(&entries[1])[6].text(), "g2");
    for _ in 0..10 {
        c.call(&["PING"]);
    }
    assert_eq!(c.call(&["SLOWLOG", "LEN"]), Reply::Int(5), "bounded by slowlog_max_len");
    assert_eq!(c.call(&["SLOWLOG", "RESET"]), Reply::Status("OK".into()));
    // The RESET itself may be logged after it ran; nothing older survives.
    assert!(matches!(c.call(&["SLOWLOG", "LEN"]), Reply::Int(n) if n <= 1));
}
