//! Administrative commands through keyhop against real redis-servers: CONFIG GET from one server,
//! CONFIG SET / DEBUG / SAVE ... refused unless `allow_admin`, then fanned out to every master
//! (CONFIG SET to the replicas too) with the failing server named; MOVE and SWAPDB only with one
//! group.

mod common;

use std::time::Duration;

use common::{Proc, Raw, Reply, cmd, keyhop, redis_replica, redis_server, temp_dir, wait_until};
use keyhop_router::key_slot;

/// DEBUG is off by default in Redis 7.
const DEBUG_ON: &[&str] = &["--enable-debug-command", "yes"];

/// Group `g1` (slots 0-8191): a master and its replica; group `g2`: a master. keyhop in front.
struct Setup {
    _dir: tempfile::TempDir,
    m1: Proc,
    r1: Proc,
    m2: Proc,
    proxy: Proc,
}

fn setup(extra: &str) -> Setup {
    let dir = temp_dir();
    let m1 = redis_server(DEBUG_ON);
    let r1 = redis_replica(m1.port, DEBUG_ON);
    let m2 = redis_server(DEBUG_ON);
    let config = format!(
        "listen = \"{{listen}}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = 3000\n{extra}\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nreplicas = [\"{}\"]\nslots = [\"0-8191\"]\n\n\
         [[groups]]\nname = \"g2\"\nmaster = \"{}\"\nslots = [\"8192-16383\"]\n",
        m1.addr(),
        r1.addr(),
        m2.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    Setup { _dir: dir, m1, r1, m2, proxy }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn ok() -> Reply {
    Reply::Status("OK".into())
}

fn error(r: Reply) -> String {
    match r {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// `CONFIG GET maxmemory-policy` straight from the server on `port`.
fn policy(port: u16) -> Reply {
    Raw::connect(port).call(&["CONFIG", "GET", "maxmemory-policy"])
}

fn policy_is(value: &str) -> Reply {
    Reply::Array(Some(vec![bulk("maxmemory-policy"), bulk(value)]))
}

#[test]
fn admin_commands_are_refused_by_default() {
    let s = setup("");
    let mut c = Raw::connect(s.proxy.port);
    // CONFIG GET is harmless: answered by the first group's master.
    let direct = Raw::connect(s.m1.port).call(&["CONFIG", "GET", "maxmemory"]);
    assert_eq!(c.call(&["CONFIG", "GET", "maxmemory"]), direct);
    assert!(matches!(direct, Reply::Array(Some(ref v)) if v.len() == 2), "{direct:?}");

    assert_eq!(
        error(c.call(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"])),
        "ERR keyhop: CONFIG SET is refused by the proxy (set allow_admin = true in the config to allow it)"
    );
    for server in [&s.m1, &s.r1, &s.m2] {
        assert_eq!(policy(server.port), policy_is("noeviction"), "{} untouched", server.name);
    }
    for args in [
        &["CONFIG", "RESETSTAT"][..],
        &["CONFIG", "REWRITE"],
        &["DEBUG", "OBJECT", "foo"],
        &["DEBUG", "SLEEP", "0"],
        &["SAVE"],
        &["BGSAVE"],
        &["BGREWRITEAOF"],
        &["LATENCY", "RESET"],
        &["MEMORY", "PURGE"],
        &["SCRIPT", "KILL"],
        &["FUNCTION", "KILL"],
    ] {
        let e = error(c.call(args));
        assert!(e.contains("is refused by the proxy (set allow_admin = true"), "{args:?}: {e}");
    }
    assert_eq!(
        error(c.call(&["DEBUG", "sleep", "0"])),
        "ERR keyhop: DEBUG SLEEP is refused by the proxy (set allow_admin = true in the config to allow it)"
    );
    // Databases span every group: refused with two groups, whatever allow_admin says.
    c.call(&["SET", "foo", "1"]);
    let e = error(c.call(&["MOVE", "foo", "1"]));
    assert!(e.starts_with("ERR keyhop: MOVE is refused with 2 groups"), "{e}");
    let e = error(c.call(&["SWAPDB", "0", "1"]));
    assert!(e.starts_with("ERR keyhop: SWAPDB is refused with 2 groups"), "{e}");
    assert_eq!(c.call(&["GET", "foo"]), bulk("1"), "nothing moved");
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()), "connection kept");
}

#[test]
fn admin_commands_fan_out_when_allowed() {
    let mut s = setup("allow_admin = true");
    let mut c = Raw::connect(s.proxy.port);

    // CONFIG SET reaches every master and the replica (reads do not go to replicas here).
    assert_eq!(c.call(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]), ok());
    for server in [&s.m1, &s.r1, &s.m2] {
        assert_eq!(policy(server.port), policy_is("allkeys-lru"), "{}", server.name);
    }
    // A value every server rejects: the first server is named with its own error text.
    let direct = error(Raw::connect(s.m1.port).call(&["CONFIG", "SET", "maxmemory-policy", "x"]));
    assert_eq!(
        error(c.call(&["CONFIG", "SET", "maxmemory-policy", "x"])),
        format!("ERR keyhop: CONFIG SET failed on {} (group g1): {direct}", s.m1.addr())
    );
    assert_eq!(c.call(&["CONFIG", "RESETSTAT"]), ok());

    // DEBUG OBJECT goes to the key's group: `foo` is in g2, `bar` in g1.
    assert!(key_slot(b"foo") >= 8192 && key_slot(b"bar") < 8192);
    assert_eq!(c.call(&["SET", "foo", "v"]), ok());
    assert_eq!(c.call(&["SET", "bar", "w"]), ok());
    for (key, owner) in [("foo", &s.m2), ("bar", &s.m1)] {
        let through = c.call(&["DEBUG", "OBJECT", key]).text();
        let direct = Raw::connect(owner.port).call(&["DEBUG", "OBJECT", key]).text();
        // `Value at:<address>` identifies the very object; lru fields move with time.
        let at = |t: &str| t.split(' ').next().unwrap_or_default().to_string();
        assert!(through.starts_with("Value at:"), "{through}");
        assert_eq!(at(&through), at(&direct), "DEBUG OBJECT {key} answered by {}", owner.name);
    }
    let digest = Raw::connect(s.m2.port).call(&["DEBUG", "DIGEST-VALUE", "foo"]);
    assert_eq!(c.call(&["DEBUG", "DIGEST-VALUE", "foo"]), digest);
    let e = error(c.call(&["DEBUG", "DIGEST-VALUE", "foo", "bar"]));
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    let e = error(c.call(&["DEBUG", "OBJECT"]));
    assert!(e.contains("wrong number of arguments for 'OBJECT'"), "{e}");
    // Server-wide DEBUG forms go to every master; POPULATE would put keys in the wrong groups.
    assert_eq!(c.call(&["DEBUG", "SLEEP", "0"]), ok());
    let e = error(c.call(&["DEBUG", "POPULATE", "10"]));
    assert!(e.starts_with("ERR keyhop: DEBUG POPULATE is refused with 2 groups"), "{e}");

    // Nothing runs: every master says NOTBUSY.
    let e = error(c.call(&["SCRIPT", "KILL"]));
    assert!(e.starts_with("NOTBUSY"), "{e}");
    let e = error(c.call(&["FUNCTION", "KILL"]));
    assert!(e.starts_with("NOTBUSY"), "{e}");
    assert!(matches!(c.call(&["LATENCY", "RESET"]), Reply::Int(n) if n >= 0));
    assert_eq!(c.call(&["MEMORY", "PURGE"]), ok());

    // BGSAVE runs on every master.
    let saves = |port: u16| {
        let info = cmd(port, &["INFO", "persistence"]);
        info.lines().find_map(|l| l.strip_prefix("rdb_saves:")).unwrap_or("?").to_string()
    };
    assert_eq!((saves(s.m1.port), saves(s.m2.port)), ("0".to_string(), "0".to_string()));
    assert_eq!(c.call(&["BGSAVE"]).text(), "Background saving started");
    let saved =
        wait_until(Duration::from_secs(10), || saves(s.m1.port) == "1" && saves(s.m2.port) == "1");
    assert!(saved, "BGSAVE did not complete on every master");

    // A master that cannot be reached fails the command, and is named.
    let m2 = s.m2.addr();
    s.m2.kill();
    let e = error(c.call(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]));
    assert!(e.starts_with(&format!("ERR keyhop: CONFIG SET failed on {m2} (group g2): ")), "{e}");
    // The servers that could be reached did take the change.
    assert_eq!(policy(s.m1.port), policy_is("volatile-lru"));
    assert_eq!(policy(s.r1.port), policy_is("volatile-lru"));
}

#[test]
fn move_and_swapdb_work_with_one_group() {
    let dir = temp_dir();
    let m = redis_server(&[]);
    let config = format!(
        "listen = \"{{listen}}\"\nrequest_timeout_ms = 3000\n\
         [[groups]]\nname = \"only\"\nmaster = \"{}\"\n",
        m.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["SET", "k", "v"]), ok());
    assert_eq!(c.call(&["MOVE", "k", "1"]), Reply::Int(1));
    assert_eq!(c.call(&["GET", "k"]), Reply::Bulk(None), "gone from database 0");
    let mut direct = Raw::connect(m.port);
    assert_eq!(direct.call(&["SELECT", "1"]), ok());
    assert_eq!(direct.call(&["GET", "k"]), bulk("v"), "in database 1 of the server");
    // SWAPDB brings database 1 (holding k) to 0, where keyhop's clients read.
    assert_eq!(c.call(&["SWAPDB", "0", "1"]), ok());
    assert_eq!(c.call(&["GET", "k"]), bulk("v"));
    assert_eq!(direct.call(&["GET", "k"]), Reply::Bulk(None), "database 1 is now the old 0");
}
