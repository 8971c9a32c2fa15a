//! RESP3 and SELECT through keyhop against real redis-servers: after `HELLO 3` every reply is
//! the RESP3 the server itself gives (compared with a direct connection reply by reply), SELECT
//! gives each session its own database, and a pipeline that switches protocol or database keeps
//! its order.

mod common;

use common::{Proc, Raw, Reply, cmd, keyhop, redis_server, temp_dir};
use keyhop_router::key_slot;

/// Two single-server groups split at slot 8192 behind keyhop, and a third server to compare with.
struct Setup {
    _dir: tempfile::TempDir,
    g1: Proc,
    g2: Proc,
    direct: Proc,
    proxy: Proc,
}

fn setup_with(extra: &str, server_args: &[&str]) -> Setup {
    let dir = temp_dir();
    let g1 = redis_server(server_args);
    let g2 = redis_server(server_args);
    let direct = redis_server(server_args);
    let config = common::two_group_config(extra, &g1, &g2);
    let proxy = keyhop(dir.path(), &config);
    Setup { _dir: dir, g1, g2, direct, proxy }
}

impl Setup {
    fn owner(&self, key: &str) -> &Proc {
        if key_slot(key.as_bytes()) < 8192 { &self.g1 } else { &self.g2 }
    }
}

fn ok() -> Reply {
    Reply::Status("OK".into())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

/// The value of `key` in a HELLO reply (a RESP3 map or a RESP2 flat array).
fn hello_field(reply: &Reply, key: &str) -> Reply {
    let pairs: Vec<(Reply, Reply)> = match reply {
        Reply::Map(p) => p.clone(),
        Reply::Array(Some(items)) => {
            items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect()
        }
        other => panic!("HELLO answered {other:?}"),
    };
    pairs.into_iter().find(|(k, _)| *k == bulk(key)).map(|(_, v)| v).expect("field in HELLO")
}

/// Sets are compared as sorted lists (both servers hold the same members; keyhop's is not the
/// same server, so iteration order is not part of the contract).
fn normalized(r: Reply) -> Reply {
    match r {
        Reply::Set(mut items) => {
            items.sort_by_key(|i| format!("{i:?}"));
            Reply::Set(items)
        }
        other => other,
    }
}

#[test]
fn resp3_replies_match_a_direct_server() {
    let s = setup_with("", &[]);
    let mut k = Raw::connect(s.proxy.port);
    let mut d = Raw::connect(s.direct.port);
    let kh = k.call(&["HELLO", "3"]);
    let dh = d.call(&["HELLO", "3"]);
    assert!(matches!(kh, Reply::Map(_)), "HELLO 3 answers a map: {kh:?}");
    for field in ["server", "proto", "mode", "role", "modules"] {
        assert_eq!(hello_field(&kh, field), hello_field(&dh, field), "HELLO field {field}");
    }
    assert_eq!(hello_field(&kh, "proto"), Reply::Int(3));
    // The version is the backends' own, learned when keyhop connects to them at start, before
    // any client request has reached a server.
    let want = hello_field(&dh, "version");
    let learned = common::wait_until(std::time::Duration::from_secs(5), || {
        hello_field(&k.call(&["HELLO", "3"]), "version") == want
    });
    assert!(learned, "HELLO reports the servers' version {want:?}");

    let script_map = "redis.setresp(3); return redis.call('HGETALL', KEYS[1])";
    let steps: Vec<Vec<&str>> = vec![
        vec!["SET", "s1", "hello"],
        vec!["GET", "s1"],
        vec!["GET", "missing"],
        vec!["HSET", "h1", "a", "1", "b", "2"],
        vec!["HGETALL", "h1"],
        vec!["HGETALL", "nohash"],
        vec!["SADD", "set1", "x", "y", "z"],
        vec!["SMEMBERS", "set1"],
        vec!["ZADD", "z1", "1.5", "m1", "2", "m2"],
        vec!["ZSCORE", "z1", "m1"],
        vec!["ZSCORE", "z1", "nope"],
        vec!["ZRANGE", "z1", "0", "-1", "WITHSCORES"],
        vec!["ZINCRBY", "z1", "0.25", "m1"],
        vec!["INCRBYFLOAT", "f1", "1.5"],
        vec!["RPUSH", "l1", "a", "b"],
        vec!["LPOS", "l1", "b"],
        vec!["LPOS", "l1", "nope"],
        vec!["MGET", "s1", "missing", "h1", "f1"],
        vec!["EXISTS", "s1", "h1", "missing", "l1"],
        vec!["OBJECT", "ENCODING", "h1"],
        vec!["TYPE", "z1"],
        vec!["TTL", "s1"],
        vec!["HRANDFIELD", "nohash", "2", "WITHVALUES"],
        vec!["EVAL", "return true", "0"],
        vec!["EVAL", "return {1, 'two', {3}}", "0"],
        vec!["EVAL", script_map, "1", "h1"],
        vec!["EVAL", "redis.setresp(3); return redis.call('ZSCORE', KEYS[1], 'm2')", "1", "z1"],
        vec!["XADD", "st1", "1-1", "f", "v"],
        vec!["XRANGE", "st1", "-", "+"],
        vec!["COMMAND", "INFO", "get", "set"],
        vec!["COMMAND", "COUNT"],
        vec!["CLIENT", "GETNAME"],
        vec!["ECHO", "e"],
        vec!["PING"],
        vec!["DEL", "s1", "h1", "missing"],
        vec!["DBSIZE"],
        vec!["SET", "s1", "v", "GET"],
        vec!["HELLO", "4"],
        vec!["HELLO", "x"],
        vec!["NOSUCH"],
        vec!["GET"],
    ];
    for step in &steps {
        let got = normalized(k.call(step));
        let want = normalized(d.call(step));
        assert_eq!(got, want, "{step:?}");
    }
    // keyhop's own answers in RESP3: INFO is a verbatim string summing the groups' keyspace.
    let Reply::Verbatim(format, text) = k.call(&["INFO", "keyspace"]) else {
        panic!("INFO is a verbatim string in RESP3")
    };
    assert_eq!(format, "txt");
    let Reply::Verbatim(_, direct_text) = d.call(&["INFO", "keyspace"]) else {
        panic!("Redis sends INFO verbatim")
    };
    let keys_line = |t: &[u8]| {
        String::from_utf8_lossy(t).lines().find(|l| l.starts_with("db0:")).map(|l| {
            l.split(',').next().unwrap_or_default().to_string() // db0:keys=N
        })
    };
    assert_eq!(keys_line(&text), keys_line(&direct_text));
    assert!(text.ends_with(b"\r\n") && !text.ends_with(b"\r\n\r\n"), "INFO ends like Redis's");
    assert!(matches!(k.call(&["CLIENT", "INFO"]), Reply::Verbatim(..)));
    // RANDOMKEY on an empty database is a RESP3 null, as on Redis.
    let mut k2 = Raw::connect(s.proxy.port);
    k2.call(&["HELLO", "3"]);
    k2.call(&["SELECT", "9"]);
    let mut d2 = Raw::connect(s.direct.port);
    d2.call(&["HELLO", "3"]);
    d2.call(&["SELECT", "9"]);
    assert_eq!(k2.call(&["RANDOMKEY"]), d2.call(&["RANDOMKEY"]));
    assert_eq!(k2.call(&["RANDOMKEY"]), Reply::Null);
    // RESET goes back to RESP2.
    assert_eq!(k.call(&["RESET"]), Reply::Status("RESET".into()));
    assert_eq!(k.call(&["GET", "missing"]), Reply::Bulk(None));
    assert!(matches!(k.call(&["HGETALL", "z-none"]), Reply::Array(Some(v)) if v.is_empty()));
}

#[test]
fn select_gives_each_session_its_database() {
    let s = setup_with("allow_flush = true", &[]);
    let mut a = Raw::connect(s.proxy.port);
    let mut b = Raw::connect(s.proxy.port);
    assert_eq!(a.call(&["SELECT", "1"]), ok());
    for i in 0..20 {
        assert_eq!(a.call(&["SET", &format!("k{i}"), "db1"]), ok());
    }
    assert_eq!(b.call(&["SET", "k0", "db0"]), ok());
    assert_eq!(a.call(&["GET", "k0"]), bulk("db1"));
    assert_eq!(b.call(&["GET", "k0"]), bulk("db0"));
    assert_eq!(b.call(&["GET", "k1"]), Reply::Bulk(None));
    // The key is in database 1 of the server that owns it.
    let owner = s.owner("k0").port;
    let mut direct = Raw::connect(owner);
    direct.call(&["SELECT", "1"]);
    assert_eq!(direct.call(&["GET", "k0"]), bulk("db1"));
    assert_eq!(cmd(owner, &["GET", "k0"]), "db0");
    // Keyspace-wide commands act on the session's database.
    assert_eq!(a.call(&["DBSIZE"]), Reply::Int(20));
    assert_eq!(b.call(&["DBSIZE"]), Reply::Int(1));
    let Reply::Array(Some(keys)) = a.call(&["KEYS", "*"]) else { panic!("KEYS answers an array") };
    assert_eq!(keys.len(), 20);
    let mut seen = 0;
    let mut cursor = "0".to_string();
    for _ in 0..100 {
        let Reply::Array(Some(page)) = a.call(&["SCAN", &cursor, "COUNT", "7"]) else {
            panic!("SCAN answers an array")
        };
        let Reply::Array(Some(found)) = &page[1] else { panic!("SCAN keys") };
        seen += found.len();
        cursor = page[0].text();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen, 20, "SCAN walks database 1 of every group");
    let Reply::Bulk(Some(rk)) = a.call(&["RANDOMKEY"]) else { panic!("RANDOMKEY finds a key") };
    assert!(rk.starts_with(b"k"));
    let info = a.call(&["INFO", "keyspace"]).text();
    assert!(info.contains("db0:keys=1,") && info.contains("db1:keys=20,"), "{info}");
    assert_eq!(a.call(&["FLUSHDB"]), ok());
    assert_eq!(a.call(&["DBSIZE"]), Reply::Int(0));
    assert_eq!(b.call(&["DBSIZE"]), Reply::Int(1), "FLUSHDB in db 1 leaves db 0 alone");
    assert_eq!(a.call(&["SELECT", "0"]), ok());
    assert_eq!(a.call(&["GET", "k0"]), bulk("db0"));
    // Bad database numbers: Redis's texts (keyhop knows each server's `databases` by now).
    let mut d = Raw::connect(s.direct.port);
    for bad in ["16", "-1", "x", "99999999999999999999"] {
        assert_eq!(a.call(&["SELECT", bad]), d.call(&["SELECT", bad]), "SELECT {bad}");
    }
    assert_eq!(a.call(&["GET", "k0"]), bulk("db0"), "a refused SELECT keeps the database");
}

#[test]
fn select_knows_each_servers_databases_before_any_request() {
    // keyhop connects to every master when it starts: with servers of 4 databases, SELECT 6 is
    // refused with Redis's text although no client request has reached a server yet.
    let s = setup_with("", &["--databases", "4"]);
    let mut c = Raw::connect(s.proxy.port);
    let refused = Reply::Error("ERR DB index is out of range".into());
    let learned = common::wait_until(std::time::Duration::from_secs(5), || {
        c.call(&["SELECT", "6"]) == refused
    });
    assert!(learned, "SELECT 6 refused once keyhop knows the servers have 4 databases");
    assert_eq!(c.call(&["SELECT", "3"]), ok());
    assert_eq!(c.call(&["SET", "foo", "1"]), ok());
    assert_eq!(cmd(s.owner("foo").port, &["GET", "foo"]), "(nil)", "written to database 3");
}

#[test]
fn a_database_a_server_refuses_is_reported_naming_it() {
    // The master has 16 databases, its replica 4: SELECT 6 passes keyhop's check (masters), and a
    // read that goes to the replica fails naming it, without marking the replica down.
    let dir = temp_dir();
    let master = redis_server(&[]);
    let replica = common::redis_replica(master.port, &["--databases", "4"]);
    let config = common::replica_reads_config(&master, &replica);
    let proxy = keyhop(dir.path(), &config);
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["SELECT", "6"]), ok());
    match c.call(&["GET", "foo"]) {
        Reply::Error(e) => {
            assert!(e.contains("SELECT 6 failed: ERR DB index is out of range"), "{e}");
            assert!(e.contains(&replica.addr()), "names the server: {e}");
        }
        other => panic!("a read in a database the replica lacks must fail, got {other:?}"),
    }
    // Database 0 is still read from the replica: it was not taken for down.
    assert_eq!(c.call(&["SELECT", "0"]), ok());
    assert_eq!(c.call(&["SET", "foo", "1"]), ok());
    let replicated = common::wait_until(std::time::Duration::from_secs(5), || {
        cmd(replica.port, &["GET", "foo"]) == "1"
    });
    assert!(replicated);
    let before = common::command_calls(replica.port, "get");
    assert_eq!(c.call(&["GET", "foo"]), bulk("1"));
    assert_eq!(
        common::command_calls(replica.port, "get"),
        before + 1,
        "the replica served keyhop's read"
    );
}

#[test]
fn pipelines_that_switch_protocol_or_database_keep_their_order() {
    let s = setup_with("", &[]);
    let mut c = Raw::connect(s.proxy.port);
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend(common::encode(&[b"INCR", b"ctr"]));
    }
    for args in [
        vec!["HELLO", "3"],
        vec!["GET", "ctr"],
        vec!["SELECT", "2"],
        vec!["INCR", "ctr"],
        vec!["HELLO", "2"],
        vec!["INCR", "ctr"],
        vec!["SELECT", "0"],
        vec!["GET", "ctr"],
        vec!["GET", "nothing"],
    ] {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        pipeline.extend(common::encode(&a));
    }
    c.send_raw(&pipeline);
    for i in 1..=200 {
        assert_eq!(c.read(), Reply::Int(i));
    }
    assert!(matches!(c.read(), Reply::Map(_)));
    assert_eq!(c.read(), bulk("200"), "GET after HELLO 3 saw every earlier INCR");
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), Reply::Int(1));
    assert!(matches!(c.read(), Reply::Array(Some(_))), "HELLO 2 answers in RESP2");
    assert_eq!(c.read(), Reply::Int(2));
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), bulk("200"));
    assert_eq!(c.read(), Reply::Bulk(None));
    let mut direct = Raw::connect(s.owner("ctr").port);
    direct.call(&["SELECT", "2"]);
    assert_eq!(direct.call(&["GET", "ctr"]), bulk("2"));
}

#[test]
fn hello_authenticates_and_names_in_both_protocols() {
    let s = setup_with("password = \"s3cret\"", &[]);
    let mut c = Raw::connect(s.proxy.port);
    assert!(matches!(c.call(&["GET", "x"]), Reply::Error(e) if e.starts_with("NOAUTH")));
    assert!(matches!(c.call(&["HELLO", "3"]), Reply::Error(e) if e.starts_with("NOAUTH")));
    assert!(
        matches!(c.call(&["HELLO", "3", "AUTH", "default", "wrong"]), Reply::Error(e) if e.starts_with("WRONGPASS"))
    );
    let hello = c.call(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "app"]);
    assert_eq!(hello_field(&hello, "proto"), Reply::Int(3));
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), bulk("app"));
    assert_eq!(c.call(&["GET", "x"]), Reply::Null);
    // HELLO with no version keeps the protocol and reports it.
    assert_eq!(hello_field(&c.call(&["HELLO"]), "proto"), Reply::Int(3));
    assert!(
        matches!(c.call(&["HELLO", "3", "SETNAME"]), Reply::Error(e) if e.contains("Syntax error in HELLO option 'SETNAME'"))
    );
    assert_eq!(c.call(&["RESET"]), Reply::Status("RESET".into()));
    assert!(matches!(c.call(&["GET", "x"]), Reply::Error(e) if e.starts_with("NOAUTH")));
}

#[test]
fn resp3_and_databases_reach_password_protected_servers() {
    let dir = temp_dir();
    let g = redis_server(&["--requirepass", "backpw"]);
    let config = format!(
        "listen = \"{{listen}}\"\nbackend_password = \"backpw\"\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\n",
        g.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    let mut c = Raw::connect(proxy.port);
    assert!(matches!(c.call(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(c.call(&["SELECT", "5"]), ok());
    assert_eq!(c.call(&["HSET", "h", "f", "v"]), Reply::Int(1));
    assert_eq!(c.call(&["HGETALL", "h"]), Reply::Map(vec![(bulk("f"), bulk("v"))]));
    let mut direct = Raw::connect(g.port);
    direct.call(&["AUTH", "backpw"]);
    direct.call(&["SELECT", "5"]);
    assert_eq!(direct.call(&["HGET", "h", "f"]), bulk("v"));
}
