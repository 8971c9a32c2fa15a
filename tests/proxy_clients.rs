//! CLIENT LIST / INFO / KILL / REPLY / NO-EVICT over keyhop's own clients, checked against a
//! real redis-server doing the same.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use common::{Raw, Reply, encode, keyhop, redis_server, temp_dir, wait_until};

struct Setup {
    _dir: tempfile::TempDir,
    _groups: (common::Proc, common::Proc),
    proxy: common::Proc,
    /// A redis-server used directly, to compare with.
    direct: common::Proc,
}

fn setup() -> Setup {
    let dir = temp_dir();
    let (g1, g2) = (redis_server(&[]), redis_server(&[]));
    let config = format!(
        "listen = \"{{listen}}\"\n[[groups]]\nname = \"g1\"\nmaster = \"{}\"\n\n[[groups]]\nname = \"g2\"\nmaster = \"{}\"\n",
        g1.addr(),
        g2.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    Setup { _dir: dir, _groups: (g1, g2), proxy, direct: redis_server(&[]) }
}

/// One CLIENT LIST line as its `key=value` fields, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn get<'a>(line: &'a [(String, String)], key: &str) -> &'a str {
    line.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| {
        panic!("no field {key} in {line:?}");
    })
}

fn list(c: &mut Raw, args: &[&str]) -> Vec<Vec<(String, String)>> {
    c.call(args).text().lines().map(fields).collect()
}

fn client_id(c: &mut Raw) -> i64 {
    match c.call(&["CLIENT", "ID"]) {
        Reply::Int(id) => id,
        other => panic!("CLIENT ID answered {other:?}"),
    }
}

/// The client's address as the server sees it (`ip:port`).
fn addr(c: &Raw) -> String {
    c.writer.local_addr().expect("local addr").to_string()
}

/// True when the connection was closed by the other side (EOF or reset), not timed out.
fn closed(c: &mut Raw) -> bool {
    match c.try_read() {
        Ok(r) => panic!("expected the connection closed, got {r:?}"),
        Err(e) => matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset),
    }
}

/// Waits (bounded) until only the clients this test opened are listed: the harness's PING
/// probes may still be closing.
fn settle(c: &mut Raw, n: usize) {
    let ok = wait_until(Duration::from_secs(5), || list(c, &["CLIENT", "LIST"]).len() == n);
    assert!(ok, "CLIENT LIST never settled to {n} clients: {:?}", list(c, &["CLIENT", "LIST"]));
}

#[test]
fn client_list_shows_every_client_in_redis_format() {
    let s = setup();
    let mut a = Raw::connect(s.proxy.port);
    let mut b = Raw::connect(s.proxy.port);
    let mut c = Raw::connect(s.proxy.port);
    for (conn, name) in [(&mut a, "alpha"), (&mut b, "beta"), (&mut c, "gamma")] {
        assert_eq!(conn.call(&["CLIENT", "SETNAME", name]), Reply::Status("OK".into()));
    }
    assert_eq!(b.call(&["SET", "k", "v"]), Reply::Status("OK".into()));
    assert_eq!(c.call(&["CLIENT", "SETINFO", "LIB-NAME", "mylib"]), Reply::Status("OK".into()));
    settle(&mut a, 3);

    let lines = list(&mut a, &["CLIENT", "LIST"]);
    let names: Vec<&str> = lines.iter().map(|l| get(l, "name")).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"], "in connection order");
    let ids: Vec<&str> = lines.iter().map(|l| get(l, "id")).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");
    assert_eq!(ids[1], client_id(&mut b).to_string());
    for l in &lines {
        assert_eq!(get(l, "db"), "0");
        assert_eq!(get(l, "flags"), "N");
        assert_eq!(get(l, "resp"), "2");
        assert_eq!(get(l, "user"), "default");
        assert_eq!(get(l, "laddr"), format!("127.0.0.1:{}", s.proxy.port));
    }
    assert_eq!(get(&lines[0], "addr"), addr(&a));
    assert_eq!(get(&lines[0], "cmd"), "client|list", "the caller sees its own command");
    assert_eq!(get(&lines[1], "cmd"), "set", "b's last command");
    assert_eq!(get(&lines[2], "cmd"), "client|setinfo");
    assert_eq!(get(&lines[2], "lib-name"), "mylib");

    // The field names and their order are redis-server 7.0's; lib-name/lib-ver (7.2) last.
    let mut d = Raw::connect(s.direct.port);
    let direct = list(&mut d, &["CLIENT", "LIST"]);
    let want: Vec<&str> = direct[0].iter().map(|(k, _)| k.as_str()).collect();
    let got: Vec<&str> = lines[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(&got[..want.len()], &want[..], "fields as redis-server's");
    assert_eq!(&got[want.len()..], ["lib-name", "lib-ver"]);

    // CLIENT INFO is the caller's line.
    let info = b.call(&["CLIENT", "INFO"]).text();
    assert!(info.ends_with('\n') && info.lines().count() == 1, "{info:?}");
    let info = fields(info.trim_end());
    assert_eq!(get(&info, "id"), ids[1]);
    assert_eq!(get(&info, "name"), "beta");
    assert_eq!(get(&info, "cmd"), "client|info");
    assert_eq!(get(&info, "addr"), addr(&b));

    // Filters.
    let by_id = list(&mut a, &["CLIENT", "LIST", "ID", ids[2], "999999", ids[0]]);
    let listed: Vec<&str> = by_id.iter().map(|l| get(l, "name")).collect();
    assert_eq!(listed, ["gamma", "alpha"], "in argument order, unknown ids skipped");
    assert_eq!(list(&mut a, &["CLIENT", "LIST", "TYPE", "normal"]).len(), 3);
    assert!(list(&mut a, &["CLIENT", "LIST", "TYPE", "pubsub"]).is_empty());

    // NO-EVICT shows as flag e.
    assert_eq!(c.call(&["CLIENT", "NO-EVICT", "on"]), Reply::Status("OK".into()));
    let lines = list(&mut a, &["CLIENT", "LIST"]);
    assert_eq!(get(&lines[2], "flags"), "e");
    assert_eq!(c.call(&["CLIENT", "NO-EVICT", "off"]), Reply::Status("OK".into()));

    // Errors as redis-server 7.0 gives them (NO-TOUCH and KILL MAXAGE are 7.2's).
    for args in [
        &["CLIENT", "LIST", "TYPE", "foo"][..],
        &["CLIENT", "LIST", "ID", "abc"],
        &["CLIENT", "LIST", "foo"],
        &["CLIENT", "LIST", "ID"],
        &["CLIENT", "KILL", "ID", "abc"],
        &["CLIENT", "KILL", "ID", "0"],
        &["CLIENT", "KILL", "foo", "bar"],
        &["CLIENT", "KILL", "ID", "1", "SKIPME"],
        &["CLIENT", "KILL", "SKIPME", "maybe"],
        &["CLIENT", "KILL", "TYPE", "foo"],
        &["CLIENT", "KILL", "USER", "nobody"],
        &["CLIENT", "KILL", "MAXAGE", "1"],
        &["CLIENT", "KILL", "127.0.0.1:1"],
        &["CLIENT", "KILL"],
        &["CLIENT", "REPLY", "maybe"],
        &["CLIENT", "NO-EVICT", "maybe"],
        &["CLIENT", "NO-TOUCH", "on"],
    ] {
        let want = d.call(args);
        assert!(matches!(want, Reply::Error(_)), "{args:?}: {want:?}");
        assert_eq!(a.call(args), want, "{args:?}");
    }
    assert_eq!(a.call(&["CLIENT", "KILL", "ID", "999999"]), Reply::Int(0));
    assert_eq!(a.call(&["CLIENT", "KILL", "TYPE", "pubsub", "SKIPME", "no"]), Reply::Int(0));
    let Reply::Array(Some(help)) = a.call(&["CLIENT", "HELP"]) else { panic!("HELP") };
    let help: Vec<String> = help.iter().map(|r| r.text()).collect();
    for sub in ["KILL <ip:port>", "LIST [options ...]", "REPLY (ON|OFF|SKIP)", "NO-EVICT"] {
        assert!(help.iter().any(|l| l.starts_with(sub)), "HELP lists {sub}: {help:?}");
    }
    assert!(!help.iter().any(|l| l.starts_with("PAUSE")), "refused ones are not listed");
    let refused = a.call(&["CLIENT", "PAUSE", "10"]);
    assert!(matches!(&refused, Reply::Error(e) if e.contains("not supported through the proxy")));
}

#[test]
fn client_kill_closes_the_matched_clients() {
    let s = setup();
    let mut a = Raw::connect(s.proxy.port);
    let mut b = Raw::connect(s.proxy.port);
    let mut c = Raw::connect(s.proxy.port);
    let mut d = Raw::connect(s.proxy.port);
    let mut e = Raw::connect(s.proxy.port);
    let b_id = client_id(&mut b);
    settle(&mut a, 5);

    // By ID: b is closed, the others go on.
    assert_eq!(a.call(&["CLIENT", "KILL", "ID", &b_id.to_string()]), Reply::Int(1));
    assert!(closed(&mut b), "b sees EOF");
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    // Gone from the list at once, as in Redis.
    let ids: Vec<String> =
        list(&mut a, &["CLIENT", "LIST"]).iter().map(|l| get(l, "id").to_string()).collect();
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&b_id.to_string()));

    // By ADDR (with USER default and TYPE normal, which every keyhop client matches).
    let c_addr = addr(&c);
    let r = a.call(&["CLIENT", "KILL", "ADDR", &c_addr, "USER", "default", "TYPE", "normal"]);
    assert_eq!(r, Reply::Int(1));
    assert!(closed(&mut c));
    assert_eq!(d.call(&["PING"]), Reply::Status("PONG".into()));

    // The old form answers +OK, then "No such client" once it is gone.
    let d_addr = addr(&d);
    assert_eq!(a.call(&["CLIENT", "KILL", &d_addr]), Reply::Status("OK".into()));
    assert!(closed(&mut d));
    assert_eq!(a.call(&["CLIENT", "KILL", &d_addr]), Reply::Error("ERR No such client".into()));

    // SKIPME defaults to yes: a filter matching only the caller kills nothing.
    let a_id = client_id(&mut a).to_string();
    assert_eq!(a.call(&["CLIENT", "KILL", "ID", &a_id]), Reply::Int(0));
    let laddr = format!("127.0.0.1:{}", s.proxy.port);
    assert_eq!(a.call(&["CLIENT", "KILL", "LADDR", &laddr]), Reply::Int(1), "e, not a");
    assert!(closed(&mut e));
    assert_eq!(a.call(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn client_kill_skipme_no_closes_the_caller_after_its_reply() {
    let s = setup();
    let mut other = Raw::connect(s.proxy.port);
    let mut me = Raw::connect(s.proxy.port);
    let id = client_id(&mut me).to_string();
    // Pipelined: the KILL is answered, what follows it is not.
    let mut pipeline = encode(&[b"CLIENT", b"KILL", b"ID", id.as_bytes(), b"SKIPME", b"no"]);
    pipeline.extend(encode(&[b"PING"]));
    me.send_raw(&pipeline);
    assert_eq!(me.read(), Reply::Int(1));
    assert!(closed(&mut me));
    assert_eq!(other.call(&["PING"]), Reply::Status("PONG".into()));

    // The old form may kill the caller too.
    let mut me = Raw::connect(s.proxy.port);
    let mine = addr(&me);
    assert_eq!(me.call(&["CLIENT", "KILL", &mine]), Reply::Status("OK".into()));
    assert!(closed(&mut me));
}

/// Reads until the stream ends with `marker` (bounded); returns everything read.
fn read_until(c: &mut Raw, marker: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(marker) {
        assert!(
            Instant::now() < deadline,
            "no {marker:?} after {:?}",
            String::from_utf8_lossy(&got)
        );
        match c.reader.read(&mut buf) {
            Ok(0) => panic!("closed; read {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e}; read {:?}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

#[test]
fn client_reply_off_on_skip_as_redis() {
    let s = setup();
    // Keys in both groups ({a} and {b} hash to different halves), a split MGET, an unknown
    // command and an arity error: every kind of slot, suppressed or not.
    let script: Vec<&[&str]> = vec![
        &["SET", "a", "1"],
        &["CLIENT", "REPLY", "OFF"],
        &["SET", "b", "2"],
        &["GET", "a"],
        &["MGET", "a", "b"],
        &["NOSUCHCOMMAND"],
        &["CLIENT", "REPLY", "SKIP"],
        &["GET", "b"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "b"],
        &["CLIENT", "REPLY", "SKIP"],
        &["MGET", "a", "b"],
        &["GET", "a"],
        &["CLIENT", "REPLY", "SKIP"],
        &["CLIENT", "REPLY", "SKIP"],
        &["GET", "a"],
        &["GET", "b"],
        &["CLIENT", "REPLY", "SKIP"],
        &["GET"],
        &["INCR", "a"],
        &["CLIENT", "REPLY", "SKIP"],
        &["CLIENT", "REPLY", "ON"],
        &["CLIENT", "REPLY", "OFF"],
        &["RESET"],
        &["MGET", "a", "b"],
        &["ECHO", "end"],
    ];
    let marker = b"$3\r\nend\r\n";
    let run = |port: u16, one_write: bool| {
        let mut c = Raw::connect(port);
        let frames: Vec<Vec<u8>> = script
            .iter()
            .map(|cmd| encode(&cmd.iter().map(|a| a.as_bytes()).collect::<Vec<_>>()))
            .collect();
        if one_write {
            c.send_raw(&frames.concat());
        } else {
            for f in &frames {
                c.send_raw(f);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let got = read_until(&mut c, marker);
        // Left clean for the next run.
        assert_eq!(c.call(&["DEL", "a", "b"]), Reply::Int(2));
        got
    };
    for one_write in [true, false] {
        let want = run(s.direct.port, one_write);
        let got = run(s.proxy.port, one_write);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "keyhop's replies are redis-server's (one write: {one_write})"
        );
    }
}

#[test]
fn idle_grows_and_resets_on_activity() {
    let s = setup();
    let mut watcher = Raw::connect(s.proxy.port);
    let mut quiet = Raw::connect(s.proxy.port);
    assert_eq!(quiet.call(&["PING"]), Reply::Status("PONG".into()));
    let id = client_id(&mut quiet).to_string();
    let quiet_line = |w: &mut Raw| {
        list(w, &["CLIENT", "LIST", "ID", &id]).into_iter().next().expect("quiet is listed")
    };
    let grew = wait_until(Duration::from_secs(10), || {
        let l = quiet_line(&mut watcher);
        let idle: u64 = get(&l, "idle").parse().expect("idle is a number");
        let age: u64 = get(&l, "age").parse().expect("age is a number");
        assert!(idle <= age, "{l:?}");
        idle >= 2
    });
    assert!(grew, "idle never reached 2 s");
    let l = quiet_line(&mut watcher);
    assert_eq!(get(&l, "cmd"), "client|id");
    assert_eq!(quiet.call(&["GET", "x"]), Reply::Bulk(None));
    let l = quiet_line(&mut watcher);
    assert!(get(&l, "idle").parse::<u64>().expect("idle") < 2, "{l:?}");
    assert_eq!(get(&l, "cmd"), "get");
}

/// The CLIENT LIST fields a pinned mode changes, for the client with `id`.
fn mode_fields(c: &mut Raw, id: i64) -> Vec<(String, String)> {
    let lines = list(c, &["CLIENT", "LIST", "ID", &id.to_string()]);
    let line = lines.first().unwrap_or_else(|| panic!("client {id} not listed"));
    ["flags", "sub", "psub", "ssub", "multi"]
        .iter()
        .map(|k| (k.to_string(), get(line, k).to_string()))
        .collect()
}

#[test]
fn client_list_shows_subscribers_transactions_and_blocked_clients_as_redis() {
    let s = setup();
    for port in [s.proxy.port, s.direct.port] {
        let mut admin = Raw::connect(port);
        let mut sub = Raw::connect(port);
        let mut txn = Raw::connect(port);
        let mut blocked = Raw::connect(port);
        let ids = [client_id(&mut sub), client_id(&mut txn), client_id(&mut blocked)];
        sub.send(&[b"SUBSCRIBE", b"news", b"sports"]);
        sub.read();
        sub.read();
        assert!(matches!(sub.call(&["PSUBSCRIBE", "n*"]), Reply::Array(_)));
        assert_eq!(txn.call(&["MULTI"]), Reply::Status("OK".into()));
        assert_eq!(txn.call(&["SET", "k", "v"]), Reply::Status("QUEUED".into()));
        assert_eq!(txn.call(&["INCR", "n"]), Reply::Status("QUEUED".into()));
        blocked.send(&[b"BLPOP", b"list", b"0"]);
        let shown =
            wait_until(Duration::from_secs(5), || mode_fields(&mut admin, ids[2])[0].1 == "b");
        assert!(shown, "port {port}: the BLPOP client never showed as blocked");
        let want = |flags: &str, sub: &str, psub: &str, multi: &str| -> Vec<(String, String)> {
            [("flags", flags), ("sub", sub), ("psub", psub), ("ssub", "0"), ("multi", multi)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(mode_fields(&mut admin, ids[0]), want("P", "2", "1", "-1"), "port {port}");
        assert_eq!(mode_fields(&mut admin, ids[1]), want("x", "0", "0", "2"), "port {port}");
        assert_eq!(mode_fields(&mut admin, ids[2]), want("b", "0", "0", "-1"), "port {port}");
        // TYPE pubsub lists the subscriber only; TYPE normal everyone else.
        let pubsub: Vec<String> = list(&mut admin, &["CLIENT", "LIST", "TYPE", "pubsub"])
            .iter()
            .map(|l| get(l, "id").to_string())
            .collect();
        assert_eq!(pubsub, vec![ids[0].to_string()], "port {port}");
        let normal = list(&mut admin, &["CLIENT", "LIST", "TYPE", "normal"]);
        assert!(normal.iter().all(|l| get(l, "id") != ids[0].to_string()), "port {port}");
        let info = admin.call(&["INFO", "clients"]).text();
        assert!(info.contains("blocked_clients:1\r\n"), "port {port}: {info}");
        if port == s.proxy.port {
            assert!(info.contains("pubsub_clients:1\r\n"), "{info}");
        }
        // Out of each mode: back to a plain client.
        assert_eq!(admin.call(&["RPUSH", "list", "x"]), Reply::Int(1));
        assert!(matches!(blocked.read(), Reply::Array(Some(_))));
        assert!(matches!(txn.call(&["EXEC"]), Reply::Array(Some(_))));
        for id in &ids[1..] {
            assert_eq!(mode_fields(&mut admin, *id), want("N", "0", "0", "-1"), "port {port}");
        }
        // KILL TYPE pubsub closes the subscriber only.
        assert_eq!(admin.call(&["CLIENT", "KILL", "TYPE", "pubsub"]), Reply::Int(1), "port {port}");
        assert!(closed(&mut sub), "port {port}: the subscriber is closed");
        assert_eq!(txn.call(&["PING"]), Reply::Status("PONG".into()));
        let _ = admin.call(&["DEL", "k", "n", "list"]);
    }
}
