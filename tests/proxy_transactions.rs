//! MULTI/EXEC/DISCARD/WATCH/UNWATCH through keyhop against real redis-servers. Every sequence
//! whose answer Redis defines is run both through keyhop (two groups split at slot 8192) and on
//! a direct redis-server, and the replies compared one by one (one command at a time and all in
//! one write); keyhop's own answers (CROSSSLOT, timeouts) are checked for their text and for what
//! the servers hold. Failovers before EXEC: tests/proxy_transactions_failover.rs.

mod common;

use common::TwoGroups as Setup;
use common::tag_of;

fn setup() -> Setup {
    Setup::start("")
}

use std::time::{Duration, Instant};

use common::{Raw, Reply, cmd, encode, keyhop, redis_server, temp_dir, wait_until};

/// Generous bound for servers and keyhop to notice something (a closed connection).
const BOUND: Duration = Duration::from_secs(10);

/// Runs `seq` on a fresh connection to `port`, one command at a time.
fn run(port: u16, seq: &[Vec<String>]) -> Vec<Reply> {
    let mut c = Raw::connect(port);
    seq.iter()
        .map(|args| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            c.call(&a)
        })
        .collect()
}

/// `"SET {t}k v"` -> a command; `{A}`/`{B}` stand for hash tags of g1 and g2.
fn parse(line: &str) -> Vec<String> {
    let (a, b) = (tag_of(0), tag_of(1));
    line.split(' ').map(|w| w.replace("{A}", &a).replace("{B}", &b)).collect()
}

fn seq(lines: &[&str]) -> Vec<Vec<String>> {
    lines.iter().map(|l| parse(l)).collect()
}

/// Sends `seq` to `port` in one write, then reads a reply per command.
fn run_pipelined(port: u16, seq: &[Vec<String>]) -> Vec<Reply> {
    let mut bytes = Vec::new();
    for l in seq {
        let a: Vec<&[u8]> = l.iter().map(|w| w.as_bytes()).collect();
        bytes.extend_from_slice(&encode(&a));
    }
    let mut c = Raw::connect(port);
    c.send_raw(&bytes);
    seq.iter().map(|_| c.read()).collect()
}

impl Setup {
    /// Runs `lines` through keyhop and on the direct server, one at a time and then all in one
    /// write, asserts the replies are equal and returns them.
    fn same(&self, lines: &[&str]) -> Vec<Reply> {
        let s = seq(lines);
        let direct = run(self.direct.port, &s);
        let via = run(self.proxy.port, &s);
        assert_eq!(via, direct, "keyhop and redis-server differ for {lines:?}");
        let direct = run_pipelined(self.direct.port, &s);
        let via = run_pipelined(self.proxy.port, &s);
        assert_eq!(via, direct, "keyhop and redis-server differ for {lines:?} in one write");
        via
    }
}

fn ok() -> Reply {
    Reply::Status("OK".into())
}

fn queued() -> Reply {
    Reply::Status("QUEUED".into())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn err(r: &Reply) -> &str {
    match r {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The server's `connected_clients`.
fn connected(port: u16) -> i64 {
    cmd(port, &["INFO", "clients"])
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1)
}

#[test]
fn multi_exec_on_one_group_and_on_the_other() {
    let s = setup();
    for (g, server) in [(0, &s.g1), (1, &s.g2)] {
        let t = if g == 0 { "{A}" } else { "{B}" };
        let lines: Vec<String> = [
            "MULTI",
            "SET {T}k 1",
            "INCR {T}k",
            "RPUSH {T}l a b",
            "LRANGE {T}l 0 -1",
            "GET {T}k",
            "EXEC",
        ]
        .iter()
        .map(|l| l.replace("{T}", t))
        .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let r = s.same(&lines);
        assert_eq!(r[0], ok());
        assert!(r[1..6].iter().all(|q| *q == queued()), "{r:?}");
        let Reply::Array(Some(items)) = &r[6] else { panic!("EXEC answered {:?}", r[6]) };
        assert_eq!(items[4], bulk("2"));
        assert_eq!(cmd(server.port, &["GET", &format!("{}k", tag_of(g))]), "2");
    }
}

#[test]
fn a_pipelined_transaction_in_one_write() {
    let s = setup();
    let lines = seq(&[
        "MULTI",
        "PING",
        "SET {B}p 1",
        "INCRBY {B}p 41",
        "ECHO hi",
        "GET {B}p",
        "EXEC",
        "GET {B}p",
        "MULTI",
        "INCR {A}q",
        "EXEC",
        "PING",
    ]);
    let via = run_pipelined(s.proxy.port, &lines);
    assert_eq!(via, run_pipelined(s.direct.port, &lines));
    assert_eq!(via[7], bulk("42"));
    assert_eq!(via[11], Reply::Status("PONG".into()));
}

#[test]
fn keyless_commands_before_the_first_key_and_keyless_transactions() {
    let s = setup();
    let r = s.same(&["MULTI", "PING", "ECHO x", "SET {A}k v", "PING hello", "GET {A}k", "EXEC"]);
    assert_eq!(
        r[6],
        Reply::Array(Some(vec![
            Reply::Status("PONG".into()),
            bulk("x"),
            ok(),
            bulk("hello"),
            bulk("v")
        ]))
    );
    // Nothing keyed: the same answers from any server.
    let r = s.same(&["MULTI", "PING", "ECHO y", "EXEC"]);
    assert_eq!(r[3], Reply::Array(Some(vec![Reply::Status("PONG".into()), bulk("y")])));
    let r = s.same(&["MULTI", "EXEC"]);
    assert_eq!(r[1], Reply::Array(Some(vec![])));
}

#[test]
fn watch_then_a_conflicting_write_by_another_client_gives_a_nil_exec() {
    let s = setup();
    for port in [s.proxy.port, s.direct.port] {
        let k = format!("{}w", tag_of(1));
        let mut a = Raw::connect(port);
        assert_eq!(a.call(&["SET", &k, "0"]), ok());
        assert_eq!(a.call(&["WATCH", &k]), ok());
        assert_eq!(a.call(&["GET", &k]), bulk("0"));
        assert_eq!(Raw::connect(port).call(&["SET", &k, "other"]), ok());
        assert_eq!(a.call(&["MULTI"]), ok());
        assert_eq!(a.call(&["SET", &k, "mine"]), queued());
        assert_eq!(a.call(&["EXEC"]), Reply::Array(None), "port {port}");
        assert_eq!(a.call(&["GET", &k]), bulk("other"));
        // The client's own write between WATCH and MULTI invalidates the WATCH too.
        assert_eq!(a.call(&["WATCH", &k]), ok());
        assert_eq!(a.call(&["SET", &k, "own"]), ok());
        assert_eq!(a.call(&["MULTI"]), ok());
        assert_eq!(a.call(&["SET", &k, "late"]), queued());
        assert_eq!(a.call(&["EXEC"]), Reply::Array(None), "port {port}");
        assert_eq!(a.call(&["GET", &k]), bulk("own"));
    }
}

#[test]
fn watch_without_conflict_runs_and_unwatch_resumes() {
    let s = setup();
    let r = s.same(&[
        "SET {B}w 1",
        "WATCH {B}w {B}v",
        "GET {A}other",
        "INCR {B}counter",
        "MULTI",
        "INCR {B}w",
        "EXEC",
        "GET {B}w",
        "WATCH {B}w",
        "UNWATCH",
        "UNWATCH",
        "SET {A}after 1",
        "MULTI",
        "SET {B}w 5",
        "EXEC",
    ]);
    assert_eq!(r[6], Reply::Array(Some(vec![Reply::Int(2)])));
    assert_eq!(r[14], Reply::Array(Some(vec![ok()])));
    // WATCH keys in two groups: keyhop's CROSSSLOT, and nothing is pinned.
    let mut c = Raw::connect(s.proxy.port);
    let (a, b) = (tag_of(0), tag_of(1));
    let e = c.call(&["WATCH", &format!("{a}x"), &format!("{b}y")]);
    assert!(err(&e).starts_with("CROSSSLOT keyhop: WATCH keys"), "{e:?}");
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn a_key_of_another_group_at_queue_time_aborts_exec() {
    let s = setup();
    let (a, b) = (tag_of(0), tag_of(1));
    let mut c = Raw::connect(s.proxy.port);
    assert_eq!(c.call(&["MULTI"]), ok());
    assert_eq!(c.call(&["SET", &format!("{a}x"), "1"]), queued());
    let e = c.call(&["SET", &format!("{b}y"), "1"]);
    assert_eq!(
        err(&e),
        "CROSSSLOT keyhop: keys in request don't hash to the same group (use a {hash tag})"
    );
    // Commands spanning groups inside MULTI are refused with keyhop's explanation.
    let e = c.call(&["MGET", &format!("{a}x"), &format!("{b}y")]);
    assert!(err(&e).starts_with("ERR keyhop: MGET inside MULTI"), "{e:?}");
    let e = c.call(&["DBSIZE"]);
    assert!(err(&e).starts_with("ERR keyhop: DBSIZE inside MULTI"), "{e:?}");
    assert_eq!(c.call(&["SET", &format!("{a}z"), "1"]), queued());
    let exec = c.call(&["EXEC"]);
    // Redis's own answer to EXEC after a queue-time error.
    let direct = s.same(&["MULTI", "SET {A}x 1", "NOSUCHCOMMAND", "EXEC"]);
    assert_eq!(exec, direct[3]);
    assert_eq!(err(&exec), "EXECABORT Transaction discarded because of previous errors.");
    assert_eq!(cmd(s.g1.port, &["EXISTS", &format!("{a}x")]), "0");
    assert_eq!(cmd(s.g1.port, &["EXISTS", &format!("{a}z")]), "0");
    // The session is back on the fast path, and MGET over groups works there.
    assert_eq!(c.call(&["MGET", &format!("{a}x"), &format!("{b}y")]).clone(), {
        Reply::Array(Some(vec![Reply::Bulk(None), Reply::Bulk(None)]))
    });
}

#[test]
fn queue_time_errors_are_redis_s() {
    let s = setup();
    // Unknown command, wrong arity, a command not allowed in a transaction, before and after
    // the transaction is pinned.
    s.same(&["MULTI", "NOSUCH a b", "SET {A}k 1", "EXEC", "GET {A}k"]);
    s.same(&["MULTI", "SET {A}k 1", "GET", "EXEC", "GET {A}k"]);
    s.same(&["MULTI", "SET {A}k 1", "SAVE", "EXEC"]);
    s.same(&["MULTI", "SET {A}k 1", "EXEC extra", "GET {A}k", "EXEC"]);
    s.same(&["MULTI", "EXEC extra", "EXEC"]);
    s.same(&["MULTI", "DISCARD extra", "SET {A}k 2", "EXEC", "GET {A}k"]);
    // Exec-time errors are the server's (a wrong type inside EXEC's array).
    s.same(&["SET {B}s x", "MULTI", "LPUSH {B}s a", "GET {B}s", "EXEC"]);
}

#[test]
fn transaction_commands_out_of_place_match_redis() {
    let s = setup();
    s.same(&["EXEC", "DISCARD", "UNWATCH", "PING"]);
    s.same(&["MULTI x", "MULTI", "MULTI x", "SET {A}n 0", "EXEC"]);
    s.same(&["MULTI", "MULTI", "SET {A}n 1", "MULTI", "EXEC", "GET {A}n"]);
    s.same(&["MULTI", "WATCH {A}n", "SET {A}n 2", "WATCH {A}n", "EXEC", "GET {A}n"]);
    s.same(&["MULTI", "SET {B}d 1", "DISCARD", "GET {B}d", "EXEC", "DISCARD"]);
    s.same(&["MULTI", "PING", "DISCARD", "PING"]);
    s.same(&["MULTI", "DISCARD", "EXEC"]);
    s.same(&["WATCH {A}n", "EXEC", "DISCARD", "MULTI", "EXEC"]);
    s.same(&["WATCH", "MULTI", "UNWATCH", "EXEC"]);
    // RESET inside a transaction ends it (and is answered as usual).
    s.same(&["MULTI", "SET {A}r 1", "RESET", "EXEC", "GET {A}r"]);
    s.same(&["WATCH {A}r", "RESET", "EXEC"]);
    s.same(&["MULTI", "SET {B}q 1", "QUIT"]);
    assert_eq!(cmd(s.g2.port, &["EXISTS", &format!("{}q", tag_of(1))]), "0");
}

#[test]
fn resp3_exec_replies_match_redis() {
    let s = setup();
    let hello_then = |lines: &[&str]| {
        let mut all = vec!["HELLO 3"];
        all.extend_from_slice(lines);
        let sq = seq(&all);
        let via = run(s.proxy.port, &sq);
        let direct = run(s.direct.port, &sq);
        assert_eq!(via[1..], direct[1..], "RESP3 replies differ for {lines:?}");
        via
    };
    let r = hello_then(&["MULTI", "SET {A}k 1", "INCR {A}k", "HGETALL {A}nohash", "EXEC"]);
    assert_eq!(r[5], Reply::Array(Some(vec![ok(), Reply::Int(2), Reply::Map(vec![])])));
    let r = hello_then(&["MULTI", "EXEC"]);
    assert_eq!(r[2], Reply::Array(Some(vec![])));
    // A WATCH conflict is RESP3's null.
    for port in [s.proxy.port, s.direct.port] {
        let k = format!("{}c", tag_of(0));
        let mut a = Raw::connect(port);
        a.call(&["HELLO", "3"]);
        assert_eq!(a.call(&["WATCH", &k]), ok());
        assert_eq!(Raw::connect(port).call(&["SET", &k, "x"]), ok());
        assert_eq!(a.call(&["MULTI"]), ok());
        assert_eq!(a.call(&["GET", &k]), queued());
        assert_eq!(a.call(&["EXEC"]), Reply::Null, "port {port}");
    }
}

#[test]
fn dedicated_connections_are_reused_across_transactions() {
    let s = setup();
    let (a, b) = (tag_of(0), tag_of(1));
    let mut c = Raw::connect(s.proxy.port);
    let before = (connected(s.g1.port), connected(s.g2.port));
    for i in 0..200 {
        let t = if i % 2 == 0 { &a } else { &b };
        let k = format!("{t}reuse");
        if i % 3 == 0 {
            assert_eq!(c.call(&["WATCH", &k]), ok());
        }
        assert_eq!(c.call(&["MULTI"]), ok());
        assert_eq!(c.call(&["INCR", &k]), queued());
        let Reply::Array(Some(r)) = c.call(&["EXEC"]) else { panic!("EXEC failed at {i}") };
        assert_eq!(r.len(), 1);
        if i % 5 == 0 {
            assert_eq!(c.call(&["MULTI"]), ok());
            assert_eq!(c.call(&["SET", &k, "0"]), queued());
            assert_eq!(c.call(&["DISCARD"]), ok());
        }
    }
    let after = (connected(s.g1.port), connected(s.g2.port));
    assert!(
        after.0 <= before.0 + 2 && after.1 <= before.1 + 2,
        "connections grew: before {before:?}, after 200 transactions {after:?}"
    );
    assert_eq!(cmd(s.g1.port, &["GET", &format!("{a}reuse")]), "100");
    let info = cmd(s.proxy.port, &["INFO", "clients"]);
    assert!(info.contains("keyhop_pinned_connections:0"), "{info}");
}

#[test]
fn a_client_leaving_mid_transaction_leaves_no_server_connection() {
    let s = setup();
    let a = tag_of(0);
    // Warm the shared connections up first, so only the dedicated one comes and goes.
    assert_eq!(Raw::connect(s.proxy.port).call(&["SET", &format!("{a}x"), "0"]), ok());
    let base = connected(s.g1.port);
    {
        let mut c = Raw::connect(s.proxy.port);
        assert_eq!(c.call(&["MULTI"]), ok());
        assert_eq!(c.call(&["SET", &format!("{a}x"), "1"]), queued());
        assert!(wait_until(BOUND, || connected(s.g1.port) == base + 1), "no dedicated connection");
    }
    assert!(
        wait_until(BOUND, || connected(s.g1.port) == base),
        "the dedicated connection stayed: {} clients, baseline {base}",
        connected(s.g1.port)
    );
    assert_eq!(cmd(s.g1.port, &["GET", &format!("{a}x")]), "0");
}

#[test]
fn commands_keyhop_cannot_run_on_one_server_are_refused_and_abort() {
    let s = setup();
    let mut c = Raw::connect(s.proxy.port);
    for (command, starts) in [
        (vec!["SUBSCRIBE", "ch"], "ERR keyhop: SUBSCRIBE inside MULTI is not supported"),
        (vec!["SELECT", "1"], "ERR keyhop: SELECT inside MULTI is not supported"),
        (vec!["KEYS", "*"], "ERR keyhop: KEYS inside MULTI would span 2 groups"),
    ] {
        assert_eq!(c.call(&["MULTI"]), ok());
        let e = c.call(&command);
        assert!(err(&e).starts_with(starts), "{command:?}: {e:?}");
        assert_eq!(c.call(&["SET", &format!("{}k", tag_of(0)), "1"]), queued());
        assert_eq!(
            err(&c.call(&["EXEC"])),
            "EXECABORT Transaction discarded because of previous errors."
        );
    }
    assert_eq!(cmd(s.g1.port, &["EXISTS", &format!("{}k", tag_of(0))]), "0");
    // Blocking commands don't block inside a transaction, as in Redis.
    s.same(&["RPUSH {A}list x", "MULTI", "BLPOP {A}list 0", "BLPOP {A}list 0", "EXEC"]);
    // SELECT while keys are WATCHed would leave the dedicated connection on the old database.
    let mut w = Raw::connect(s.proxy.port);
    assert_eq!(w.call(&["WATCH", &format!("{}k", tag_of(0))]), ok());
    assert!(
        err(&w.call(&["SELECT", "1"])).starts_with("ERR keyhop: SELECT while keys are WATCHed")
    );
    // A blocking command would block the dedicated connection: refused while WATCHing.
    let e = w.call(&["BLPOP", &format!("{}list", tag_of(0)), "1"]);
    assert!(err(&e).starts_with("ERR keyhop: BLPOP is not allowed"), "{e:?}");
    assert_eq!(w.call(&["UNWATCH"]), ok());
    assert_eq!(w.call(&["SELECT", "1"]), ok());
}

#[test]
fn a_draining_proxy_closes_a_client_mid_transaction_without_executing_it() {
    let g = redis_server(&[]);
    let dir = temp_dir();
    let config = format!(
        "listen = \"{{listen}}\"\nshutdown_grace_ms = 5000\n[[groups]]\nname = \"g1\"\nmaster = \"{}\"\n",
        g.addr()
    );
    let mut proxy = keyhop(dir.path(), &config);
    let mut c = Raw::connect(proxy.port);
    assert_eq!(c.call(&["MULTI"]), ok());
    assert_eq!(c.call(&["SET", "drained", "1"]), queued());
    let sent = Instant::now();
    proxy.signal(15);
    assert!(c.try_read().is_err(), "the client in MULTI stays connected while draining");
    assert!(sent.elapsed() < Duration::from_secs(4), "closed after {:?}", sent.elapsed());
    let exited = wait_until(BOUND, || {
        proxy.child.as_mut().is_some_and(|ch| matches!(ch.try_wait(), Ok(Some(_))))
    });
    assert!(exited, "keyhop did not exit after the drain");
    assert_eq!(cmd(g.port, &["EXISTS", "drained"]), "0");
}

#[test]
fn with_one_group_whole_keyspace_commands_run_inside_multi() {
    let dir = temp_dir();
    let g = redis_server(&[]);
    let direct = redis_server(&[]);
    let config = format!(
        "listen = \"{{listen}}\"\nallow_flush = true\n[[groups]]\nname = \"g1\"\nmaster = \"{}\"\n",
        g.addr()
    );
    let proxy = keyhop(dir.path(), &config);
    let sq = seq(&[
        "MULTI", "SET a 1", "SET b 2", "MGET a b", "DBSIZE", "KEYS a", "DEL a b", "FLUSHALL",
        "EXEC",
    ]);
    let via = run(proxy.port, &sq);
    assert_eq!(via, run(direct.port, &sq));
    assert_eq!(
        via[8],
        Reply::Array(Some(vec![
            ok(),
            ok(),
            Reply::Array(Some(vec![bulk("1"), bulk("2")])),
            Reply::Int(2),
            Reply::Array(Some(vec![bulk("a")])),
            Reply::Int(2),
            ok()
        ]))
    );
}

#[test]
fn an_exec_the_server_does_not_answer_in_time_may_or_may_not_have_run() {
    let s = setup();
    let k = format!("{}slow", tag_of(0));
    let mut c = Raw::connect(s.proxy.port);
    assert_eq!(c.call(&["MULTI"]), ok());
    assert_eq!(c.call(&["SET", &k, "1"]), queued());
    s.g1.signal(19); // SIGSTOP: the server reads nothing, answers nothing.
    let sent = Instant::now();
    let e = c.call(&["EXEC"]);
    s.g1.signal(18);
    assert_eq!(
        err(&e),
        format!(
            "ERR keyhop: no reply to EXEC from {} within 2000 ms; the transaction may or may not have been executed",
            s.g1.addr()
        )
    );
    assert!(sent.elapsed() < Duration::from_secs(8), "EXEC took {:?}", sent.elapsed());
    // The session goes on (and here the server did run it once it was resumed).
    assert_eq!(c.call(&["PING"]), Reply::Status("PONG".into()));
    assert!(wait_until(BOUND, || cmd(s.g1.port, &["GET", &k]) == "1"));
}

#[test]
fn client_kill_mid_transaction_frees_the_dedicated_connection() {
    let s = setup();
    let a = tag_of(0);
    assert_eq!(Raw::connect(s.proxy.port).call(&["SET", &format!("{a}x"), "0"]), ok());
    let base = connected(s.g1.port);
    let mut c = Raw::connect(s.proxy.port);
    let Reply::Int(id) = c.call(&["CLIENT", "ID"]) else { panic!("CLIENT ID") };
    assert_eq!(c.call(&["WATCH", &format!("{a}x")]), ok());
    assert_eq!(c.call(&["MULTI"]), ok());
    assert_eq!(c.call(&["SET", &format!("{a}x"), "1"]), queued());
    assert!(wait_until(BOUND, || connected(s.g1.port) == base + 1), "no dedicated connection");
    let killed = Raw::connect(s.proxy.port).call(&["CLIENT", "KILL", "ID", &id.to_string()]);
    assert_eq!(killed, Reply::Int(1));
    assert!(c.try_read().is_err(), "the killed client's connection stays open");
    assert!(wait_until(BOUND, || connected(s.g1.port) == base), "dedicated connection stayed");
    assert_eq!(cmd(s.g1.port, &["GET", &format!("{a}x")]), "0");
}

#[test]
fn optimistic_locking_with_watch_counts_every_increment_under_contention() {
    let s = setup();
    let k = format!("{}counter", tag_of(1));
    let (threads, each) = (6, 25);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (port, k) = (s.proxy.port, k.clone());
            std::thread::spawn(move || {
                let mut c = Raw::connect(port);
                let (mut done, mut attempts) = (0, 0);
                while done < each && attempts < 2000 {
                    attempts += 1;
                    assert_eq!(c.call(&["WATCH", &k]), ok());
                    let n = match c.call(&["GET", &k]) {
                        Reply::Bulk(Some(v)) => String::from_utf8_lossy(&v).parse().unwrap_or(0),
                        _ => 0,
                    };
                    assert_eq!(c.call(&["MULTI"]), ok());
                    assert_eq!(c.call(&["SET", &k, &(n + 1).to_string()]), queued());
                    match c.call(&["EXEC"]) {
                        Reply::Array(Some(_)) => done += 1,
                        Reply::Array(None) => {}
                        other => panic!("EXEC answered {other:?}"),
                    }
                }
                done
            })
        })
        .collect();
    let done: i32 = handles.into_iter().map(|h| h.join().expect("a client thread")).sum();
    assert_eq!(done, threads * each);
    assert_eq!(cmd(s.g2.port, &["GET", &k]), (threads * each).to_string());
}
