//! Blocking commands through keyhop against real redis-servers: every one woken by a push from
//! another client, replies and timeouts compared with a direct server's, pipelines behind a
//! blocked command, disconnects that free the server side, CROSSSLOT, WAIT, and a blocked BLPOP
//! that survives a Sentinel failover (graceful and kill -9) without losing the pushed element.

mod common;

use common::TwoGroups as Setup;
use common::{role, tag_of};

fn setup() -> Setup {
    Setup::start("")
}

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::{Proc, Raw, Reply, cmd, keyhop, redis_replica, redis_server, temp_dir, wait_until};

/// Bound for anything that should happen "at once" on a loaded machine.
const SOON: Duration = Duration::from_secs(10);

/// A field of the server's `INFO clients`.
fn info_clients(port: u16, field: &str) -> i64 {
    let info = cmd(port, &["INFO", "clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

fn blocked(port: u16) -> i64 {
    info_clients(port, "blocked_clients")
}

fn wait_blocked(port: u16, n: i64) {
    let ok = wait_until(SOON, || blocked(port) == n);
    assert!(ok, "server {port}: blocked_clients stayed {} (want {n})", blocked(port));
}

fn send(raw: &mut Raw, args: &[&str]) {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    raw.send(&a);
}

fn connect(port: u16, resp3: bool) -> Raw {
    let mut r = Raw::connect(port);
    if resp3 {
        let hello = r.call(&["HELLO", "3"]);
        assert!(matches!(hello, Reply::Map(_)), "HELLO 3 answered {hello:?}");
    }
    r
}

/// One blocking command woken by a push, with the commands that prepare and check it.
struct Scenario {
    prepare: Vec<Vec<String>>,
    block: Vec<String>,
    push: Vec<String>,
    check: Vec<Vec<String>>,
}

fn words(s: &str, t: &str) -> Vec<String> {
    s.split(' ').map(|w| w.replace("{}", t)).collect()
}

fn scenarios(t: &str) -> Vec<Scenario> {
    let s = |prepare: &[&str], block: &str, push: &str, check: &[&str]| Scenario {
        prepare: prepare.iter().map(|p| words(p, t)).collect(),
        block: words(block, t),
        push: words(push, t),
        check: check.iter().map(|c| words(c, t)).collect(),
    };
    vec![
        s(&[], "BLPOP {}a {}b 0", "RPUSH {}b x y", &["LRANGE {}b 0 -1"]),
        s(&[], "BRPOP {}a 0", "RPUSH {}a x y", &["LRANGE {}a 0 -1"]),
        s(&[], "BLMOVE {}a {}d LEFT RIGHT 0", "RPUSH {}a x y", &["LRANGE {}d 0 -1"]),
        s(&[], "BRPOPLPUSH {}a {}d 0", "RPUSH {}a x y", &["LRANGE {}d 0 -1"]),
        s(&[], "BLMPOP 0 2 {}a {}b RIGHT COUNT 2", "RPUSH {}b a b c", &["LRANGE {}b 0 -1"]),
        s(&[], "BZPOPMIN {}z 0", "ZADD {}z 1 a 2 b", &["ZRANGE {}z 0 -1"]),
        s(&[], "BZPOPMAX {}z 0", "ZADD {}z 1 a 2 b", &["ZRANGE {}z 0 -1"]),
        s(&[], "BZMPOP 0 1 {}z MAX COUNT 2", "ZADD {}z 1 a 2 b 3 c", &["ZRANGE {}z 0 -1"]),
        s(&[], "XREAD COUNT 5 BLOCK 0 STREAMS {}s $", "XADD {}s 5-1 f v", &["XLEN {}s"]),
        s(
            &["XGROUP CREATE {}s g $ MKSTREAM"],
            "XREADGROUP GROUP g c BLOCK 0 STREAMS {}s >",
            "XADD {}s 5-1 f v",
            &["XPENDING {}s g"],
        ),
    ]
}

/// Runs `sc` with the blocked client and the pusher on `port` (keyhop or direct), waiting until
/// `watch` (the server that holds the key) has the client blocked. Every reply, in order.
fn run_scenario(port: u16, watch: u16, sc: &Scenario, resp3: bool, t: &str) -> Vec<Reply> {
    let mut admin = Raw::connect(port);
    let del = words("DEL {}a {}b {}d {}z {}s", t);
    let del: Vec<&str> = del.iter().map(String::as_str).collect();
    admin.call(&del);
    let mut replies = Vec::new();
    for p in &sc.prepare {
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        replies.push(admin.call(&p));
    }
    let mut c = connect(port, resp3);
    let block: Vec<&str> = sc.block.iter().map(String::as_str).collect();
    send(&mut c, &block);
    wait_blocked(watch, 1);
    let push: Vec<&str> = sc.push.iter().map(String::as_str).collect();
    replies.push(admin.call(&push));
    replies.push(c.read());
    for chk in &sc.check {
        let chk: Vec<&str> = chk.iter().map(String::as_str).collect();
        replies.push(admin.call(&chk));
    }
    replies
}

#[test]
fn every_blocking_command_woken_by_a_push_answers_like_a_direct_server() {
    let s = setup();
    for resp3 in [false, true] {
        for group in [0, 1] {
            let t = tag_of(group);
            for sc in scenarios(&t) {
                let via = run_scenario(s.proxy.port, s.server(group).port, &sc, resp3, &t);
                let direct = run_scenario(s.direct.port, s.direct.port, &sc, resp3, &t);
                assert_eq!(via, direct, "{:?} (resp3 {resp3}, group {group})", sc.block);
                let reply = &via[via.len() - 1 - sc.check.len()];
                assert!(
                    !matches!(reply, Reply::Error(_) | Reply::Null | Reply::Array(None)),
                    "{:?} was woken with data: {reply:?}",
                    sc.block
                );
            }
        }
    }
}

#[test]
fn timeouts_and_argument_errors_answer_like_a_direct_server() {
    let s = setup();
    let t = tag_of(1);
    let cases = [
        "BLPOP {}a 0.2",
        "BRPOP {}a {}b 0.2",
        "BLMOVE {}a {}d LEFT RIGHT 0.2",
        "BRPOPLPUSH {}a {}d 0.2",
        "BLMPOP 0.2 1 {}a LEFT",
        "BZPOPMIN {}z 0.2",
        "BZMPOP 0.2 1 {}z MIN",
        "XREAD BLOCK 200 STREAMS {}s 0-0",
        "BLPOP {}a -1",
        "BLPOP {}a abc",
        "BLMPOP 0 0 {}a LEFT",
        "WAIT 1 200",
    ];
    for resp3 in [false, true] {
        let mut k = connect(s.proxy.port, resp3);
        let mut d = connect(s.direct.port, resp3);
        for case in cases {
            let w = words(case, &t);
            let w: Vec<&str> = w.iter().map(String::as_str).collect();
            let started = Instant::now();
            let via = k.call(&w);
            let took = started.elapsed();
            assert_eq!(via, d.call(&w), "{case} (resp3 {resp3})");
            if case.contains("0.2") || case.contains("200") {
                assert!(took >= Duration::from_millis(150), "{case} timed out after {took:?}");
            }
        }
    }
}

#[test]
fn a_pipeline_behind_a_blocked_pop_is_answered_in_order() {
    let s = setup();
    let t = tag_of(0);
    let (k, x) = (format!("{t}q"), format!("{t}x"));
    let mut admin = Raw::connect(s.proxy.port);
    assert_eq!(admin.call(&["SET", &x, "xv"]), Reply::Status("OK".into()));
    let mut c = Raw::connect(s.proxy.port);
    let mut pipeline = common::encode(&[b"BLPOP", k.as_bytes(), b"0"]);
    pipeline.extend(common::encode(&[b"PING"]));
    pipeline.extend(common::encode(&[b"GET", x.as_bytes()]));
    c.send_raw(&pipeline);
    wait_blocked(s.g1.port, 1);
    // Nothing may overtake the blocked pop.
    c.writer.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let early = c.try_read();
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a reply overtook the blocked BLPOP: {early:?}"
    );
    c.writer.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert_eq!(admin.call(&["RPUSH", &k, "v1"]), Reply::Int(1));
    let pop = Reply::Array(Some(vec![
        Reply::Bulk(Some(k.as_bytes().to_vec())),
        Reply::Bulk(Some(b"v1".to_vec())),
    ]));
    assert_eq!(c.read(), pop);
    assert_eq!(c.read(), Reply::Status("PONG".into()));
    assert_eq!(c.read(), Reply::Bulk(Some(b"xv".to_vec())));
    // Two blocking commands in a row, then an ordinary one.
    let mut two = common::encode(&[b"BLPOP", k.as_bytes(), b"0"]);
    two.extend(common::encode(&[b"BLPOP", k.as_bytes(), b"0.1"]));
    two.extend(common::encode(&[b"PING"]));
    c.send_raw(&two);
    wait_blocked(s.g1.port, 1);
    assert_eq!(admin.call(&["RPUSH", &k, "v2"]), Reply::Int(1));
    assert_eq!(
        c.read(),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(k.as_bytes().to_vec())),
            Reply::Bulk(Some(b"v2".to_vec())),
        ]))
    );
    assert_eq!(c.read(), Reply::Array(None));
    assert_eq!(c.read(), Reply::Status("PONG".into()));
}

#[test]
fn a_client_leaving_while_blocked_frees_the_server_and_its_connection_is_reused() {
    let s = setup();
    let t = tag_of(1);
    let k = format!("{t}gone");
    let port = s.g2.port;
    let mut first_count = None;
    for round in 0..20 {
        let mut c = Raw::connect(s.proxy.port);
        let cmd = if round % 2 == 0 { "BLPOP" } else { "BZPOPMIN" };
        send(&mut c, &[cmd, &k, "0"]);
        wait_blocked(port, 1);
        drop(c);
        let freed = wait_until(SOON, || blocked(port) == 0);
        assert!(freed, "round {round}: the server still has a blocked client");
        // The server unblocks before keyhop has read its -UNBLOCKED and put the connection back
        // for reuse; the next round must start after that, or it rightly opens a second one.
        let returned =
            wait_until(SOON, || info_clients(s.proxy.port, "keyhop_pinned_connections") == 0);
        assert!(returned, "round {round}: keyhop still holds the dedicated connection");
        let n = info_clients(port, "connected_clients");
        match first_count {
            None => first_count = Some(n),
            Some(f) => assert!(n <= f, "round {round}: server connections grew {f} -> {n}"),
        }
    }
    // Nothing was popped by a connection nobody listens to.
    assert_eq!(cmd(s.proxy.port, &["RPUSH", &k, "a"]), "1");
    assert_eq!(cmd(s.proxy.port, &["LLEN", &k]), "1");
}

#[test]
fn keys_of_two_groups_are_crossslot() {
    let s = setup();
    let (a, b) = (format!("{}a", tag_of(0)), format!("{}b", tag_of(1)));
    let mut c = Raw::connect(s.proxy.port);
    for args in [vec!["BLMOVE", &a, &b, "LEFT", "RIGHT", "0"], vec!["BLPOP", &a, &b, "0"]] {
        match c.call(&args) {
            Reply::Error(e) => assert!(e.starts_with("CROSSSLOT"), "{args:?}: {e}"),
            other => panic!("{args:?} answered {other:?}"),
        }
    }
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn two_clients_blocked_on_one_key_one_push_wakes_exactly_one() {
    let s = setup();
    let k = format!("{}both", tag_of(0));
    let mut a = Raw::connect(s.proxy.port);
    let mut b = Raw::connect(s.proxy.port);
    send(&mut a, &["BLPOP", &k, "0"]);
    wait_blocked(s.g1.port, 1);
    send(&mut b, &["BLPOP", &k, "0"]);
    wait_blocked(s.g1.port, 2);
    assert_eq!(cmd(s.proxy.port, &["RPUSH", &k, "one"]), "1");
    let got = |v: &str| {
        Reply::Array(Some(vec![
            Reply::Bulk(Some(k.as_bytes().to_vec())),
            Reply::Bulk(Some(v.as_bytes().to_vec())),
        ]))
    };
    // Redis serves the first client blocked.
    assert_eq!(a.read(), got("one"));
    wait_blocked(s.g1.port, 1);
    assert_eq!(cmd(s.proxy.port, &["RPUSH", &k, "two"]), "1");
    assert_eq!(b.read(), got("two"));
    wait_blocked(s.g1.port, 0);
}

#[test]
fn wait_counts_replicas_like_a_direct_server() {
    let dir = temp_dir();
    let m = redis_server(&[]);
    let r = redis_replica(m.port, &[]);
    let plain = redis_server(&[]);
    let config = format!(
        "listen = \"{{listen}}\"\n[[groups]]\nname = \"g1\"\nmaster = \"{}\"\nreplicas = [\"{}\"]\n\
         slots = [\"0-8191\"]\n\n[[groups]]\nname = \"g2\"\nmaster = \"{}\"\nslots = [\"8192-16383\"]\n",
        m.addr(),
        r.addr(),
        plain.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    let one = format!(
        "listen = \"{{listen}}\"\n[[groups]]\nname = \"g1\"\nmaster = \"{}\"\nreplicas = [\"{}\"]\n",
        m.addr(),
        r.addr()
    );
    let dir1 = temp_dir();
    let proxy1 = keyhop(dir1.path(), &one);
    // One group with a replica: the client's write (on a shared connection) is covered.
    let mut c = Raw::connect(proxy1.port);
    let mut d = Raw::connect(m.port);
    assert_eq!(c.call(&["SET", "k", "v"]), d.call(&["SET", "k", "v"]));
    assert_eq!(c.call(&["WAIT", "1", "2000"]), Reply::Int(1));
    assert_eq!(d.call(&["WAIT", "1", "2000"]), Reply::Int(1));
    // Without a replica: 0, after the timeout, as the server says.
    let mut p = Raw::connect(plain.port);
    assert_eq!(p.call(&["WAIT", "1", "100"]), Reply::Int(0));
    // Two groups, one without replicas: every write is covered by the fewest.
    let mut c2 = Raw::connect(proxy.port);
    assert_eq!(c2.call(&["WAIT", "1", "100"]), Reply::Int(0));
    assert_eq!(c2.call(&["WAIT", "0", "100"]), Reply::Int(0));
    assert_eq!(c2.call(&["WAIT", "x", "100"]), p.call(&["WAIT", "x", "100"]));
}

#[test]
fn client_kill_of_a_blocked_client_frees_the_server() {
    let s = setup();
    let k = format!("{}killed", tag_of(0));
    let mut b = Raw::connect(s.proxy.port);
    let Reply::Int(id) = b.call(&["CLIENT", "ID"]) else { panic!("CLIENT ID is an integer") };
    send(&mut b, &["BLPOP", &k, "0"]);
    wait_blocked(s.g1.port, 1);
    let id = id.to_string();
    assert_eq!(cmd(s.proxy.port, &["CLIENT", "KILL", "ID", &id]), "1");
    let after = b.try_read();
    assert!(after.is_err(), "the killed client's connection stays open: {after:?}");
    wait_blocked(s.g1.port, 0);
    assert_eq!(cmd(s.proxy.port, &["RPUSH", &k, "a"]), "1", "nothing was popped");
}

#[test]
fn shutdown_unblocks_a_blocked_client_with_an_error() {
    let m = redis_server(&[]);
    let dir = temp_dir();
    let config = format!(
        "listen = \"{{listen}}\"\nshutdown_grace_ms = 10000\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\n",
        m.addr()
    );
    let mut kh = keyhop(dir.path(), &config);
    let mut b = Raw::connect(kh.port);
    send(&mut b, &["BLPOP", "k", "0"]);
    wait_blocked(m.port, 1);
    let sent = Instant::now();
    kh.signal(15);
    match b.read() {
        Reply::Error(e) => {
            assert!(e.starts_with("UNBLOCKED keyhop: the proxy is shutting down"), "{e}")
        }
        other => panic!("a blocked client at shutdown got {other:?}"),
    }
    assert!(sent.elapsed() < Duration::from_secs(5), "answered only after {:?}", sent.elapsed());
    wait_blocked(m.port, 0);
    assert_eq!(cmd(m.port, &["RPUSH", "k", "a"]), "1", "nothing was popped");
    let exited =
        wait_until(SOON, || kh.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))));
    assert!(exited, "keyhop did not exit after the drain");
}

#[test]
fn a_blocked_pop_whose_master_dies_times_out_like_redis() {
    let mut s = setup();
    // Each protocol on its own group (a master that is already dead refuses at once).
    for (group, resp3) in [(0, false), (1, true)] {
        let k = format!("{}dies", tag_of(group));
        let mut b = connect(s.proxy.port, resp3);
        let mut d = connect(s.direct.port, resp3);
        let expected = d.call(&["BLPOP", &k, "1"]);
        send(&mut b, &["BLPOP", &k, "1"]);
        wait_blocked(s.server(group).port, 1);
        let started = Instant::now();
        if group == 0 {
            s.g1.kill()
        } else {
            s.g2.kill()
        }
        assert_eq!(b.read(), expected, "resp3 {resp3}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_blocked_pop_follows_its_master_when_it_comes_back() {
    let mut s = setup();
    let k = format!("{}back", tag_of(0));
    let mut b = Raw::connect(s.proxy.port);
    send(&mut b, &["BLPOP", &k, "0"]);
    wait_blocked(s.g1.port, 1);
    let port = s.g1.port;
    s.g1.kill();
    s.g1 = common::redis_server_on(port, &[]);
    wait_blocked(port, 1);
    let mut pushed = String::new();
    let ok = wait_until(SOON, || {
        pushed = cmd(s.proxy.port, &["RPUSH", &k, "v"]);
        pushed == "1"
    });
    assert!(ok, "RPUSH after the restart answered {pushed}");
    let want = Reply::Array(Some(vec![
        Reply::Bulk(Some(k.as_bytes().to_vec())),
        Reply::Bulk(Some(b"v".to_vec())),
    ]));
    assert_eq!(b.read(), want);
    assert_eq!(cmd(s.proxy.port, &["LLEN", &k]), "0");
}

#[test]
fn a_blocked_pop_waits_in_the_clients_database() {
    let s = setup();
    let k = format!("{}db", tag_of(1));
    let mut b = Raw::connect(s.proxy.port);
    assert_eq!(b.call(&["SELECT", "3"]), Reply::Status("OK".into()));
    send(&mut b, &["BRPOP", &k, "0"]);
    wait_blocked(s.g2.port, 1);
    let mut p = Raw::connect(s.proxy.port);
    assert_eq!(p.call(&["RPUSH", &k, "db0"]), Reply::Int(1));
    assert_eq!(p.call(&["SELECT", "3"]), Reply::Status("OK".into()));
    assert_eq!(p.call(&["RPUSH", &k, "db3"]), Reply::Int(1));
    let want = Reply::Array(Some(vec![
        Reply::Bulk(Some(k.as_bytes().to_vec())),
        Reply::Bulk(Some(b"db3".to_vec())),
    ]));
    assert_eq!(b.read(), want);
    assert_eq!(cmd(s.g2.port, &["LLEN", &k]), "1", "database 0 keeps its element");
}

/// One group whose master is `port`.
fn one_group(listen: &str, port: u16) -> String {
    format!("listen = \"{listen}\"\n[[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:{port}\"\n")
}

/// Rewrites keyhop's config and sends SIGHUP; waits for the `n`-th reload in its log.
fn reload(kh: &Proc, dir: &std::path::Path, text: &str, n: usize) {
    std::fs::write(dir.join("keyhop.toml"), text).expect("rewrite config");
    kh.signal(1);
    let log = || std::fs::read_to_string(dir.join("keyhop.log")).unwrap_or_default();
    let seen = wait_until(SOON, || log().matches("configuration reloaded").count() >= n);
    assert!(seen, "reload #{n} not applied:\n{}", log());
}

#[test]
fn a_new_master_gets_the_blocked_command_or_the_client_learns_it_may_have_been_served() {
    let a = redis_server(&[]);
    let b = redis_server(&[]);
    let dir = temp_dir();
    let kh = keyhop(dir.path(), &one_group("{listen}", a.port));
    let listen = format!("127.0.0.1:{}", kh.port);
    // The old master still runs: keyhop unblocks the command there with an error (it was not
    // served) and re-issues it on the new one.
    let mut c = Raw::connect(kh.port);
    send(&mut c, &["BLPOP", "q", "0"]);
    wait_blocked(a.port, 1);
    reload(&kh, dir.path(), &one_group(&listen, b.port), 1);
    wait_blocked(b.port, 1);
    wait_blocked(a.port, 0);
    assert_eq!(cmd(kh.port, &["RPUSH", "q", "v"]), "1");
    let want = Reply::Array(Some(vec![
        Reply::Bulk(Some(b"q".to_vec())),
        Reply::Bulk(Some(b"v".to_vec())),
    ]));
    assert_eq!(c.read(), want);
    assert_eq!(cmd(b.port, &["LLEN", "q"]), "0");
    // The old master cannot answer (stopped): it may have served the command, so the client
    // gets an error instead of a second pop elsewhere.
    send(&mut c, &["BLPOP", "q", "0"]);
    wait_blocked(b.port, 1);
    b.signal(19);
    reload(&kh, dir.path(), &one_group(&listen, a.port), 2);
    let started = Instant::now();
    match c.read() {
        Reply::Error(e) => assert!(e.contains("did not confirm whether it served it"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(8), "answered after {:?}", started.elapsed());
    eprintln!("[blocking] unconfirmed error {:?} after the reload", started.elapsed());
    b.signal(18);
    wait_blocked(b.port, 0);
    assert_eq!(blocked(a.port), 0, "not re-issued on the new master");
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
}

/// Bound for anything Sentinel does (detection, election, promotion) on a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(40);

/// A BLPOP blocked through keyhop on g1 while g1 fails over (`kill`: its master is killed with
/// SIGKILL; otherwise `SENTINEL FAILOVER`): once keyhop writes to the new master, an element
/// pushed through keyhop reaches the BLPOP, and nothing is lost or left behind.
fn blocked_pop_survives(kill: bool) {
    let mut c = common::SentinelCluster::new_ready(Duration::from_secs(20));
    let dir = temp_dir();
    let proxy = keyhop(dir.path(), &c.keyhop_config(""));
    let t = tag_of(0);
    let k = format!("{t}jobs");
    let (old, new) = (c.port(0), c.port(1));
    let mut b = Raw::connect(proxy.port);
    b.writer.set_read_timeout(Some(FAILOVER_BOUND * 2)).expect("timeout");
    send(&mut b, &["BLPOP", &k, "0"]);
    wait_blocked(old, 1);
    if kill {
        c.servers[0].kill();
    } else {
        c.force_failover(0, "g1", FAILOVER_BOUND);
    }
    // keyhop writes g1's keys to the promoted replica (no longer replicating from the old
    // master, so a value found there was written there).
    let probe = format!("{t}probe");
    let mut n = 0;
    let switched = wait_until(FAILOVER_BOUND, || {
        n += 1;
        let v = n.to_string();
        role(new) == "master"
            && cmd(proxy.port, &["SET", &probe, &v]) == "OK"
            && cmd(new, &["GET", &probe]) == v
    });
    assert!(switched, "keyhop never wrote to the new master {new}");
    // keyhop re-issued the BLPOP there (the old master did not serve it).
    wait_blocked(new, 1);
    let mut pushed = String::new();
    let ok = wait_until(SOON, || {
        pushed = cmd(proxy.port, &["RPUSH", &k, "after-failover"]);
        pushed == "1"
    });
    assert!(ok, "RPUSH through keyhop after the failover answered {pushed}");
    let want = Reply::Array(Some(vec![
        Reply::Bulk(Some(k.as_bytes().to_vec())),
        Reply::Bulk(Some(b"after-failover".to_vec())),
    ]));
    assert_eq!(b.read(), want, "the blocked BLPOP got the element pushed to the new master");
    assert_eq!(cmd(proxy.port, &["LLEN", &k]), "0", "the element was popped exactly once");
    wait_blocked(new, 0);
    // The client goes on.
    assert_eq!(b.call(&["PING"]), Reply::Status("PONG".into()));
    let log = std::fs::read_to_string(dir.path().join("keyhop.log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("blocked command") || l.contains("blocked ")) {
        eprintln!("[blocking] {line}");
    }
}

#[test]
fn a_blocked_pop_survives_sentinel_failover() {
    blocked_pop_survives(false);
}

#[test]
fn a_blocked_pop_survives_kill_9_of_its_master() {
    blocked_pop_survives(true);
}
