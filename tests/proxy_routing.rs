//! Routing through keyhop against real redis-servers: single-key routing, split/merge,
//! pipelining, CROSSSLOT, local and refused commands, SCAN.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Proc, Raw, Reply, cmd, keyhop, redis_server, temp_dir};
use keyhop_router::key_slot;

/// Two single-server groups split at slot 8192, and keyhop in front of them.
struct Setup {
    _dir: tempfile::TempDir,
    g1: Proc,
    g2: Proc,
    proxy: Proc,
}

fn setup_with(extra: &str) -> Setup {
    let dir = temp_dir();
    let g1 = redis_server(&[]);
    let g2 = redis_server(&[]);
    let config = common::two_group_config(extra, &g1, &g2);
    let proxy = keyhop(dir.path(), &config);
    Setup { _dir: dir, g1, g2, proxy }
}

fn setup() -> Setup {
    setup_with("")
}

impl Setup {
    /// The server that should own `key`.
    fn owner(&self, key: &str) -> &Proc {
        if key_slot(key.as_bytes()) < 8192 { &self.g1 } else { &self.g2 }
    }
    fn other(&self, key: &str) -> &Proc {
        if key_slot(key.as_bytes()) < 8192 { &self.g2 } else { &self.g1 }
    }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

#[test]
fn single_keys_land_on_the_owning_group() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    for i in 0..200 {
        let key = format!("key:{i}");
        assert_eq!(c.call(&["SET", &key, &format!("v{i}")]), Reply::Status("OK".into()));
    }
    for i in 0..200 {
        let key = format!("key:{i}");
        assert_eq!(cmd(s.owner(&key).port, &["GET", &key]), format!("v{i}"), "{key} on its owner");
        assert_eq!(
            cmd(s.other(&key).port, &["GET", &key]),
            "(nil)",
            "{key} not on the other group"
        );
        assert_eq!(c.call(&["GET", &key]), bulk(&format!("v{i}")));
    }
    // The documented vectors: foo is slot 12182 (g2), bar 5061 (g1).
    c.call(&["SET", "foo", "1"]);
    c.call(&["SET", "bar", "2"]);
    assert_eq!(cmd(s.g2.port, &["GET", "foo"]), "1");
    assert_eq!(cmd(s.g1.port, &["GET", "bar"]), "2");
    // Hash tags keep keys together.
    c.call(&["SET", "{user1000}.following", "a"]);
    c.call(&["SET", "{user1000}.followers", "b"]);
    let owner = s.owner("user1000").port;
    assert_eq!(cmd(owner, &["GET", "{user1000}.followers"]), "b");
    assert_eq!(cmd(owner, &["GET", "{user1000}.following"]), "a");
}

#[test]
fn multi_key_commands_split_and_merge_in_order() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    let keys: Vec<String> = (0..40).map(|i| format!("mk:{i}")).collect();
    let groups: HashSet<bool> = keys.iter().map(|k| key_slot(k.as_bytes()) < 8192).collect();
    assert_eq!(groups.len(), 2, "test keys must span both groups");
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("val-{k}"));
    }
    let refs: Vec<&str> = mset.iter().map(|s| s.as_str()).collect();
    assert_eq!(c.call(&refs), Reply::Status("OK".into()));
    for k in &keys {
        assert_eq!(cmd(s.owner(k).port, &["GET", k]), format!("val-{k}"));
    }
    // MGET keeps positions, including missing keys, in the client's order.
    let mut mget = vec!["MGET", "missing:1"];
    let rev: Vec<&str> = keys.iter().rev().map(|s| s.as_str()).collect();
    mget.extend(rev.iter());
    mget.push("missing:2");
    let Reply::Array(Some(items)) = c.call(&mget) else { panic!("MGET must answer an array") };
    assert_eq!(items.len(), keys.len() + 2);
    assert_eq!(items[0], Reply::Bulk(None));
    assert_eq!(items[items.len() - 1], Reply::Bulk(None));
    for (i, k) in rev.iter().enumerate() {
        assert_eq!(items[i + 1], bulk(&format!("val-{k}")), "position {i}");
    }
    // EXISTS and TOUCH count repeats; DEL and UNLINK sum over groups.
    let mut exists = vec!["EXISTS"];
    exists.extend(keys.iter().map(|s| s.as_str()));
    exists.push("mk:0");
    exists.push("nope");
    assert_eq!(c.call(&exists), Reply::Int(41));
    let mut touch = vec!["TOUCH"];
    touch.extend(keys.iter().take(10).map(|s| s.as_str()));
    assert_eq!(c.call(&touch), Reply::Int(10));
    let mut del = vec!["DEL"];
    del.extend(keys.iter().take(20).map(|s| s.as_str()));
    del.push("nope");
    assert_eq!(c.call(&del), Reply::Int(20));
    let mut unlink = vec!["UNLINK"];
    unlink.extend(keys.iter().map(|s| s.as_str()));
    assert_eq!(c.call(&unlink), Reply::Int(20));
    assert_eq!(cmd(s.g1.port, &["DBSIZE"]), "0");
    assert_eq!(cmd(s.g2.port, &["DBSIZE"]), "0");
    // An odd MSET across groups is refused whole, like Redis: nothing is written.
    let mut direct = Raw::connect(s.g1.port);
    let odd = ["MSET", "foo", "1", "bar", "2", "hello"];
    assert_eq!(c.call(&odd), direct.call(&odd));
    assert_eq!(cmd(s.g1.port, &["DBSIZE"]), "0");
    assert_eq!(cmd(s.g2.port, &["DBSIZE"]), "0");
}

#[test]
fn twenty_thousand_pipelined_commands_answer_in_order() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    let n = 10_000;
    let mut bytes = Vec::new();
    for i in 0..n {
        let (k, v) = (format!("p:{i}"), format!("v:{i}"));
        bytes.extend(common::encode(&[b"SET", k.as_bytes(), v.as_bytes()]));
    }
    for i in 0..n {
        bytes.extend(common::encode(&[b"GET", format!("p:{i}").as_bytes()]));
    }
    // Write from another thread: the proxy answers while we are still sending.
    let mut writer = c.writer.try_clone().expect("clone");
    let sender = std::thread::spawn(move || std::io::Write::write_all(&mut writer, &bytes));
    for i in 0..n {
        assert_eq!(c.read(), Reply::Status("OK".into()), "SET #{i}");
    }
    for i in 0..n {
        assert_eq!(c.read(), bulk(&format!("v:{i}")), "GET #{i}");
    }
    sender.join().expect("sender thread").expect("write");
    let total: i64 = [s.g1.port, s.g2.port]
        .iter()
        .map(|p| cmd(*p, &["DBSIZE"]).parse::<i64>().unwrap_or(-1))
        .sum();
    assert_eq!(total, n as i64);
}

#[test]
fn cross_group_commands_are_refused_with_crossslot() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    assert_ne!(key_slot(b"foo") < 8192, key_slot(b"bar") < 8192);
    for args in [
        vec!["SUNIONSTORE", "foo", "bar"],
        vec!["RENAME", "foo", "bar"],
        vec!["MSETNX", "foo", "1", "bar", "2"],
        vec!["LMOVE", "foo", "bar", "LEFT", "RIGHT"],
        vec!["EVAL", "return 1", "2", "foo", "bar"],
    ] {
        match c.call(&args) {
            Reply::Error(e) => {
                assert!(e.starts_with("CROSSSLOT"), "{args:?}: {e}");
                assert!(e.contains("hash tag"), "{args:?} names the fix: {e}");
            }
            other => panic!("{args:?} should be refused, got {other:?}"),
        }
    }
    // The same commands with a shared hash tag go through to the owning group.
    assert_eq!(c.call(&["SADD", "{t}a", "x"]), Reply::Int(1));
    assert_eq!(c.call(&["SADD", "{t}b", "y"]), Reply::Int(1));
    assert_eq!(c.call(&["SUNIONSTORE", "{t}c", "{t}a", "{t}b"]), Reply::Int(2));
    assert_eq!(cmd(s.owner("t").port, &["SCARD", "{t}c"]), "2");
    assert_eq!(c.call(&["MSETNX", "{t}1", "1", "{t}2", "2"]), Reply::Int(1));
    assert_eq!(c.call(&["EVAL", "return redis.call('GET', KEYS[1])", "1", "{t}1"]), bulk("1"));
    // Keys in different slots but one group are fine: keyhop needs one group, not one slot.
    let (a, b) = ("bar", "hello");
    assert!(key_slot(a.as_bytes()) < 8192 && key_slot(b.as_bytes()) < 8192);
    assert_ne!(key_slot(a.as_bytes()), key_slot(b.as_bytes()));
    assert_eq!(c.call(&["MSETNX", a, "1", b, "2"]), Reply::Int(1));
}

#[test]
fn refused_commands_say_why_and_keep_the_connection() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    for args in [
        vec!["CONFIG", "SET", "maxmemory", "1"],
        vec!["SHUTDOWN"],
        vec!["DEBUG", "SLEEP", "0"],
        vec!["REPLICAOF", "NO", "ONE"],
        vec!["MONITOR"],
        vec!["CLUSTER", "INFO"],
        vec!["MOVE", "foo", "1"],
        vec!["SWAPDB", "0", "1"],
        vec!["BGSAVE"],
        vec!["FLUSHALL"],
        vec!["FLUSHDB"],
        vec!["ACL", "LIST"],
    ] {
        match c.call(&args) {
            Reply::Error(e) => assert!(e.contains("keyhop"), "{args:?}: {e}"),
            other => panic!("{args:?} should be refused, got {other:?}"),
        }
        assert_eq!(
            c.call(&["PING"]),
            Reply::Status("PONG".into()),
            "connection alive after {args:?}"
        );
    }
    // Unknown commands and wrong arity: Redis's own texts.
    let mut direct = Raw::connect(s.g1.port);
    for args in
        [vec!["NOSUCH", "a", "b"], vec!["GET"], vec!["SET", "x"], vec!["OBJECT", "NOPE", "x"]]
    {
        assert_eq!(c.call(&args), direct.call(&args), "{args:?}");
    }
}

#[test]
fn flush_allowed_when_configured() {
    let s = setup_with("allow_flush = true");
    let mut c = Raw::connect(s.proxy.port);
    c.call(&["SET", "foo", "1"]);
    c.call(&["SET", "bar", "1"]);
    assert_eq!(c.call(&["FLUSHALL"]), Reply::Status("OK".into()));
    assert_eq!(cmd(s.g1.port, &["DBSIZE"]), "0");
    assert_eq!(cmd(s.g2.port, &["DBSIZE"]), "0");
}

#[test]
fn local_commands() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(c.call(&["PING", "hi"]), bulk("hi"));
    assert_eq!(c.call(&["ECHO", "x y"]), bulk("x y"));
    assert_eq!(c.call(&["SELECT", "0"]), Reply::Status("OK".into()));
    assert_eq!(c.call(&["CLIENT", "SETNAME", "app1"]), Reply::Status("OK".into()));
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), bulk("app1"));
    assert!(matches!(c.call(&["CLIENT", "ID"]), Reply::Int(n) if n > 0));
    assert_eq!(c.call(&["CLIENT", "SETINFO", "LIB-NAME", "test"]), Reply::Status("OK".into()));
    let Reply::Array(Some(hello)) = c.call(&["HELLO", "2"]) else {
        panic!("HELLO 2 answers an array")
    };
    assert!(hello.contains(&bulk("proto")));
    assert!(matches!(c.call(&["HELLO", "4"]), Reply::Error(e) if e.starts_with("NOPROTO")));
    let Reply::Array(Some(time)) = c.call(&["TIME"]) else { panic!("TIME answers an array") };
    assert_eq!(time.len(), 2);
    // DBSIZE sums groups; KEYS merges; RANDOMKEY finds a key on either group.
    for i in 0..30 {
        c.call(&["SET", &format!("d:{i}"), "x"]);
    }
    assert_eq!(c.call(&["DBSIZE"]), Reply::Int(30));
    let Reply::Array(Some(keys)) = c.call(&["KEYS", "d:*"]) else {
        panic!("KEYS answers an array")
    };
    assert_eq!(keys.len(), 30);
    let Reply::Bulk(Some(k)) = c.call(&["RANDOMKEY"]) else { panic!("RANDOMKEY finds a key") };
    assert!(k.starts_with(b"d:"));
    // Inline commands, as typed in telnet.
    c.send_raw(b"PING\r\nSET inl \"a b\"\r\nGET inl\r\n");
    assert_eq!(c.read(), Reply::Status("PONG".into()));
    assert_eq!(c.read(), Reply::Status("OK".into()));
    assert_eq!(c.read(), bulk("a b"));
    // Empty requests are skipped silently, alone or before a command.
    c.send_raw(b"\r\n*0\r\n");
    c.send_raw(b"\r\n\r\n*-1\r\nPING\r\n");
    assert_eq!(c.read(), Reply::Status("PONG".into()));
    assert_eq!(c.call(&["QUIT"]), Reply::Status("OK".into()));
    assert!(c.try_read().is_err(), "QUIT closes the connection");
}

#[test]
fn scan_returns_every_key_exactly_once() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    let n = 1000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut mset = vec!["MSET".to_string()];
        for i in chunk {
            mset.push(format!("scan:{i}"));
            mset.push("v".into());
        }
        let refs: Vec<&str> = mset.iter().map(|s| s.as_str()).collect();
        assert_eq!(c.call(&refs), Reply::Status("OK".into()));
    }
    c.call(&["SET", "other", "x"]);
    // Let incremental rehashing settle, so the backends' SCAN itself returns no duplicates.
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    for round in 0.. {
        assert!(round < 10_000, "SCAN never finished");
        let Reply::Array(Some(r)) = c.call(&["SCAN", &cursor, "MATCH", "scan:*", "COUNT", "37"])
        else {
            panic!("SCAN answers an array")
        };
        cursor = r[0].text();
        let Reply::Array(Some(keys)) = &r[1] else { panic!("SCAN's second element is an array") };
        seen.extend(keys.iter().map(|k| k.text()));
        if cursor == "0" {
            break;
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), n, "every key once");
    assert_eq!(seen.len(), n, "no duplicates");
    assert!(matches!(c.call(&["SCAN", "notanumber"]), Reply::Error(_)));
}

#[test]
fn max_clients_rejects_extra_connections() {
    let s = setup_with("max_clients = 2");
    // The start-up probe's connection may still be closing: retry until a slot is free.
    let admitted = |port| {
        for _ in 0..250 {
            let mut r = Raw::connect(port);
            if r.call(&["PING"]) == Reply::Status("PONG".into()) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("never admitted");
    };
    let a = admitted(s.proxy.port);
    let _b = admitted(s.proxy.port);
    let mut c = Raw::connect(s.proxy.port);
    assert_eq!(c.read(), Reply::Error("ERR max number of clients reached".into()));
    drop(a);
    let ok = common::wait_until(Duration::from_secs(5), || {
        let mut d = Raw::connect(s.proxy.port);
        matches!(d.call(&["PING"]), Reply::Status(_))
    });
    assert!(ok, "a slot frees up when a client leaves");
}

#[test]
fn redis_rs_client_works_through_keyhop() {
    let s = setup();
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{}/", s.proxy.port)).expect("client");
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("connect (sends CLIENT SETINFO)");
    let _: () = redis::cmd("SET").arg("rs:a").arg(1).query(&mut con).expect("SET");
    let _: () = redis::cmd("SET").arg("rs:b").arg(2).query(&mut con).expect("SET");
    let v: Vec<Option<i64>> =
        redis::cmd("MGET").arg("rs:a").arg("nope").arg("rs:b").query(&mut con).expect("MGET");
    assert_eq!(v, vec![Some(1), None, Some(2)]);
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("INCRBY").arg(format!("rs:{i}")).arg(i);
    }
    let results: Vec<i64> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(results, (0..100).collect::<Vec<i64>>());
    let sum: i64 = (0..100)
        .map(|i| {
            cmd(s.owner(&format!("rs:{i}")).port, &["GET", &format!("rs:{i}")])
                .parse::<i64>()
                .unwrap_or(-1)
        })
        .sum();
    assert_eq!(sum, (0..100).sum::<i64>());
}
