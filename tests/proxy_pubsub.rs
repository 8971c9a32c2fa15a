//! Pub/sub through keyhop against real servers: two groups, channels on both, patterns on every
//! group, shard channels; every reply compared with a direct redis-server running the same
//! sequence (RESP2 and RESP3). Then the PUBSUB views, a slow subscriber, CLIENT KILL, drain and
//! connection reuse. Failovers are in `proxy_pubsub_failover.rs`.
//!
//! Measured numbers are printed with `eprintln!`:
//! `cargo test --test proxy_pubsub -- --nocapture 2>&1 | grep '\[pubsub\]'`.

mod common;

use common::TwoGroups as Setup;
use common::{group_of, keyhop_log, message_of};

fn setup(extra: &str) -> Setup {
    Setup::start(extra)
}

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Raw, Reply, free_port, keyhop, redis_server, temp_dir, wait_until};

/// Bound for anything that should take milliseconds.
const SHORT: Duration = Duration::from_secs(10);

/// The first name `prefix<n>` of `group`.
fn name_in(group: usize, prefix: &str) -> String {
    (0..1000)
        .map(|n| format!("{prefix}{n}"))
        .find(|c| group_of(c) == group)
        .expect("a name of the group among 1000 candidates")
}

fn connect(port: u16, resp3: bool) -> Raw {
    let mut r = Raw::connect(port);
    if resp3 {
        assert!(matches!(r.call(&["HELLO", "3"]), Reply::Map(_)));
    }
    r
}

fn send(r: &mut Raw, args: &[&str]) {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    r.send(&a);
}

/// Sends each command and reads the number of replies given with it.
fn run_script(r: &mut Raw, script: &[(Vec<String>, usize)]) -> Vec<(String, Reply)> {
    let mut out = Vec::new();
    for (args, n) in script {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        send(r, &a);
        for _ in 0..*n {
            out.push((args.join(" "), r.read()));
        }
    }
    out
}

fn line(args: &[&str], n: usize) -> (Vec<String>, usize) {
    (args.iter().map(|s| s.to_string()).collect(), n)
}

/// Reads one reply, `None` after `wait` without one.
fn read_within(r: &mut Raw, wait: Duration) -> Option<Reply> {
    r.writer.set_read_timeout(Some(wait)).expect("set timeout");
    let reply = r.try_read().ok();
    r.writer.set_read_timeout(Some(SHORT)).expect("set timeout");
    reply
}

fn resp_name(resp3: bool) -> &'static str {
    if resp3 { "RESP3" } else { "RESP2" }
}

/// Confirmations, errors, PING, ordinary commands and leaving the mode, compared reply by reply
/// with a direct server.
fn confirmations_match_direct(resp3: bool) {
    let s = setup("");
    let (a, b) = (name_in(0, "ch"), name_in(1, "ch"));
    let (s1, s2) = (name_in(0, "sh"), name_in(1, "sh"));
    assert_ne!(group_of(&a), group_of(&b));
    let mut script = vec![
        // Not subscribed: Redis's replies, and the client stays in normal mode.
        line(&["UNSUBSCRIBE"], 1),
        line(&["SUNSUBSCRIBE"], 1),
        line(&["PUNSUBSCRIBE", "x", "y"], 2),
        line(&["GET", "k"], 1),
        line(&["SUBSCRIBE", &a, &b, &a], 3),
        line(&["PSUBSCRIBE", "p*", "q*"], 2),
        line(&["SSUBSCRIBE", &s1, &s2], 2),
        line(&["PING"], 1),
        line(&["PING", "hi"], 1),
        line(&["PING", "a", "b"], 1),
        line(&["GET", "k"], 1),
        line(&["NOSUCHCOMMAND", "x"], 1),
        line(&["UNSUBSCRIBE", &a, "never"], 2),
        line(&["PUNSUBSCRIBE", "q*"], 1),
        line(&["PUNSUBSCRIBE"], 1),
        line(&["SUNSUBSCRIBE", &s1], 1),
        line(&["UNSUBSCRIBE"], 1),
        line(&["SUNSUBSCRIBE"], 1),
        // Out of the mode: an ordinary command works again.
        line(&["SET", "k", "v"], 1),
        line(&["GET", "k"], 1),
        line(&["SUBSCRIBE", &a], 1),
        line(&["RESET"], 1),
        line(&["GET", "k"], 1),
        line(&["SUBSCRIBE", &b], 1),
        line(&["QUIT"], 1),
    ];
    if !resp3 {
        // A subcommand is named as Redis names it.
        script.insert(11, line(&["CLIENT", "LIST"], 1));
    }
    let direct = run_script(&mut connect(s.direct.port, resp3), &script);
    let proxied = run_script(&mut connect(s.proxy.port, resp3), &script);
    for (d, p) in direct.iter().zip(proxied.iter()) {
        assert_eq!(d, p, "{}: {} differs from a direct server", resp_name(resp3), d.0);
    }
    assert_eq!(direct.len(), proxied.len());
    if !resp3 {
        let forbidden = direct.iter().find(|(c, _)| c == "GET k").map(|x| &x.1);
        assert_eq!(forbidden, Some(&Reply::Bulk(None)));
        let e = proxied.iter().filter(|(c, _)| c == "GET k").nth(1).map(|x| &x.1);
        assert_eq!(
            e.cloned(),
            Some(Reply::Error(
                "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                    .into()
            ))
        );
    }
}

#[test]
fn confirmations_and_counts_match_a_direct_server_resp2() {
    confirmations_match_direct(false);
}

#[test]
fn confirmations_and_counts_match_a_direct_server_resp3() {
    confirmations_match_direct(true);
}

/// Subscribes the same way on keyhop and on the direct server, then publishes (through keyhop,
/// and to the direct server) to channels of both groups: each subscriber gets each message once,
/// and the two streams are identical.
fn messages_match_direct(resp3: bool) {
    let s = setup("");
    let (a, b) = (name_in(0, "ch"), name_in(1, "ch"));
    let (pa, pb) = (name_in(0, "pat."), name_in(1, "pat."));
    let (s1, s2) = (name_in(0, "sh"), name_in(1, "sh"));
    let subscribe = [
        line(&["SUBSCRIBE", &a, &b], 2),
        line(&["PSUBSCRIBE", "pat.*"], 1),
        line(&["SSUBSCRIBE", &s1, &s2], 2),
    ];
    let mut sub_d = connect(s.direct.port, resp3);
    let mut sub_p = connect(s.proxy.port, resp3);
    assert_eq!(run_script(&mut sub_d, &subscribe), run_script(&mut sub_p, &subscribe));
    let mut pub_d = Raw::connect(s.direct.port);
    let mut pub_p = Raw::connect(s.proxy.port);
    let publishes: Vec<(&str, &String)> = vec![
        ("PUBLISH", &a),
        ("PUBLISH", &b),
        ("PUBLISH", &pa),
        ("PUBLISH", &pb),
        ("SPUBLISH", &s1),
        ("SPUBLISH", &s2),
        ("PUBLISH", &a),
        ("PUBLISH", &b),
    ];
    for (i, (verb, ch)) in publishes.iter().enumerate() {
        // Binary-safe payloads: CRLF and NUL travel untouched.
        let payload = format!("m{i}\r\n\0{}", "x".repeat(i * 100));
        let (rd, rp) = (
            pub_d.call(&[verb, ch.as_str(), &payload]),
            pub_p.call(&[verb, ch.as_str(), &payload]),
        );
        assert_eq!(rd, rp, "{verb} {ch}: receivers");
        assert_eq!(rp, Reply::Int(1), "{verb} {ch}: one receiver");
        let (md, mp) = (sub_d.read(), sub_p.read());
        assert_eq!(md, mp, "{} message of {verb} {ch}", resp_name(resp3));
    }
    // Nothing else arrives: every message came once.
    assert_eq!(read_within(&mut sub_p, Duration::from_millis(300)), None);
    // Shard channels end with their own unsubscribe count; ordinary ones with theirs.
    let tail = [line(&["SUNSUBSCRIBE", &s1, &s2], 2), line(&["UNSUBSCRIBE", &b], 1)];
    assert_eq!(run_script(&mut sub_d, &tail), run_script(&mut sub_p, &tail));
}

#[test]
fn messages_from_both_groups_match_a_direct_server_resp2() {
    messages_match_direct(false);
}

#[test]
fn messages_from_both_groups_match_a_direct_server_resp3() {
    messages_match_direct(true);
}

#[test]
fn resp3_subscriber_runs_ordinary_commands_between_pushes() {
    let s = setup("");
    let a = name_in(1, "ch");
    let mut pubr = Raw::connect(s.proxy.port);
    let mut sub = connect(s.proxy.port, true);
    sub.call(&["SUBSCRIBE", &a]);
    assert_eq!(sub.call(&["SET", "key", "value"]), Reply::Status("OK".into()));
    assert_eq!(pubr.call(&["PUBLISH", &a, "hello"]), Reply::Int(1));
    let push = |m: &str| {
        Reply::Push(vec![
            Reply::Bulk(Some(b"message".to_vec())),
            Reply::Bulk(Some(a.as_bytes().to_vec())),
            Reply::Bulk(Some(m.as_bytes().to_vec())),
        ])
    };
    assert_eq!(sub.read(), push("hello"));
    // Pipelined with SUBSCRIBE and PING: replies and pushes in request order.
    send(&mut sub, &["GET", "key"]);
    send(&mut sub, &["SUBSCRIBE", &a, "second"]);
    send(&mut sub, &["PING"]);
    send(&mut sub, &["GET", "nokey"]);
    assert_eq!(sub.read(), Reply::Bulk(Some(b"value".to_vec())));
    let confirmation = |ch: &str, n| {
        Reply::Push(vec![
            Reply::Bulk(Some(b"subscribe".to_vec())),
            Reply::Bulk(Some(ch.as_bytes().to_vec())),
            Reply::Int(n),
        ])
    };
    assert_eq!(sub.read(), confirmation(&a, 1));
    assert_eq!(sub.read(), confirmation("second", 2));
    assert_eq!(sub.read(), Reply::Status("PONG".into()));
    assert_eq!(sub.read(), Reply::Null);
    // Switching a subscriber back to RESP2 is refused with keyhop's reason.
    match sub.call(&["HELLO", "2"]) {
        Reply::Error(e) => assert!(e.starts_with("ERR keyhop: HELLO 2"), "{e}"),
        other => panic!("HELLO 2 while subscribed: {other:?}"),
    }
    // Commands that need another dedicated connection are refused, the subscription goes on.
    assert!(matches!(sub.call(&["MULTI"]), Reply::Error(_)));
    assert_eq!(pubr.call(&["PUBLISH", &a, "again"]), Reply::Int(1));
    assert_eq!(sub.read(), push("again"));
}

#[test]
fn pubsub_views_are_aggregated_over_the_groups() {
    let s = setup("");
    let (a, b, c) = (name_in(0, "ch"), name_in(1, "ch"), name_in(1, "other"));
    let (s1, s2) = (name_in(0, "sh"), name_in(1, "sh"));
    let subscribe = [
        line(&["SUBSCRIBE", &a, &b, &c], 3),
        line(&["PSUBSCRIBE", "p*", "q*"], 2),
        line(&["SSUBSCRIBE", &s1, &s2], 2),
    ];
    let mut d1 = connect(s.direct.port, false);
    let mut d2 = connect(s.direct.port, false);
    let mut p1 = connect(s.proxy.port, false);
    let mut p2 = connect(s.proxy.port, false);
    for r in [&mut d1, &mut d2, &mut p1, &mut p2] {
        run_script(r, &subscribe[..1]);
    }
    for r in [&mut d1, &mut p1] {
        run_script(r, &subscribe[1..]);
    }
    let sorted = |r: Reply| match r {
        Reply::Array(Some(mut items)) => {
            items.sort_by_key(|i| format!("{i:?}"));
            Reply::Array(Some(items))
        }
        other => other,
    };
    for resp3 in [false, true] {
        let mut d = connect(s.direct.port, resp3);
        let mut p = connect(s.proxy.port, resp3);
        let views: Vec<Vec<&str>> = vec![
            vec!["PUBSUB", "NUMSUB", &a, &b, &c, "nobody"],
            vec!["PUBSUB", "NUMSUB"],
            vec!["PUBSUB", "CHANNELS"],
            vec!["PUBSUB", "CHANNELS", "ch*"],
            vec!["PUBSUB", "NUMPAT"],
            vec!["PUBSUB", "SHARDCHANNELS"],
            vec!["PUBSUB", "SHARDNUMSUB", &s1, &s2, "nobody"],
        ];
        for v in &views {
            let (rd, rp) = (sorted(d.call(v)), sorted(p.call(v)));
            assert_eq!(rd, rp, "{} {v:?}", resp_name(resp3));
        }
        assert_eq!(p.call(&["PUBSUB", "NUMPAT"]), Reply::Int(2));
        match p.call(&["PUBSUB", "NUMSUB", &a, &b]) {
            Reply::Array(Some(items)) => {
                assert_eq!(items[1], Reply::Int(2));
                assert_eq!(items[3], Reply::Int(2));
            }
            other => panic!("NUMSUB: {other:?}"),
        }
    }
}

#[test]
fn a_slow_subscriber_is_disconnected_and_the_others_keep_receiving() {
    slow_subscriber("1mb 0 0", 100 * 1024, 0.0);
}

#[test]
fn a_subscriber_over_the_soft_limit_for_its_seconds_is_disconnected() {
    slow_subscriber("0 1mb 1", 10 * 1024, 1.0);
}

/// A subscriber that never reads, another that reads everything, and a publisher flooding their
/// channel with `size`-byte messages through keyhop configured with `limit`: the first is
/// disconnected, not before `min_secs` of flooding.
fn slow_subscriber(limit: &str, size: usize, min_secs: f64) {
    let admin = free_port();
    let s =
        setup(&format!("pubsub_output_limit = \"{limit}\"\nadmin_listen = \"127.0.0.1:{admin}\""));
    let ch = name_in(1, "flood");
    // The slow one subscribes and then never reads.
    let mut slow = Raw::connect(s.proxy.port);
    slow.call(&["SUBSCRIBE", &ch]);
    // The other one reads everything on a thread of its own.
    let mut fast = Raw::connect(s.proxy.port);
    fast.call(&["SUBSCRIBE", &ch]);
    // Short enough for the reader to notice `stop` soon, long for a message to be in flight.
    fast.writer.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let received = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (rc, st) = (received.clone(), stop.clone());
    let reader = std::thread::spawn(move || {
        let started = Instant::now();
        while !st.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
            match fast.try_read() {
                Ok(Reply::Array(Some(items))) if items.len() == 3 => {
                    rc.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => return Err(format!("unexpected {other:?}")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(format!("fast subscriber lost: {e}")),
            }
        }
        Ok(())
    });
    let mut publisher = Raw::connect(s.proxy.port);
    let payload = "z".repeat(size);
    let mut published = 0usize;
    let started = Instant::now();
    let disconnected = || keyhop_log(s.dir.path()).contains("passed pubsub_output_limit");
    // The slow client's kernel buffers take several MB before keyhop's own queue grows.
    while !disconnected() && published < 30_000 && started.elapsed() < Duration::from_secs(60) {
        let receivers = publisher.call(&["PUBLISH", &ch, &payload]);
        assert!(matches!(receivers, Reply::Int(1 | 2)), "{receivers:?}");
        published += 1;
        // Paced by the fast subscriber, so only the slow one's output piles up.
        let kept_up = wait_until(SHORT, || received.load(Ordering::Relaxed) >= published);
        assert!(kept_up, "the fast subscriber fell behind at message {published}");
    }
    assert!(disconnected(), "the slow subscriber was not disconnected after {published} messages");
    let took = started.elapsed().as_secs_f64();
    assert!(took >= min_secs, "disconnected after {took:.2} s, before the soft limit's seconds");
    // The other subscriber keeps receiving, including what is published afterwards.
    for _ in 0..20 {
        publisher.call(&["PUBLISH", &ch, "after"]);
        published += 1;
    }
    let all = wait_until(SHORT, || received.load(Ordering::Relaxed) == published);
    stop.store(true, Ordering::Relaxed);
    assert!(
        all,
        "the fast subscriber got {} of {published} messages",
        received.load(Ordering::Relaxed)
    );
    assert_eq!(reader.join().expect("reader thread"), Ok(()));
    // The slow one finds its connection closed once it reads what its kernel buffer holds.
    slow.writer.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let closed = loop {
        match slow.reader.read(&mut sink) {
            Ok(0) => break true,
            Ok(n) => total += n,
            Err(_) => break false,
        }
    };
    assert!(closed, "the slow subscriber's connection is still open after {total} bytes");
    assert!(total < published * payload.len(), "the slow subscriber got everything");
    let metrics = common::probe::http_get(admin, "/metrics");
    assert!(
        metrics.contains("keyhop_clients_output_limit_disconnects_total 1"),
        "metrics: {}",
        metrics.lines().filter(|l| l.contains("output_limit")).collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "[pubsub] slow subscriber ({limit}): disconnected after {published} x {size} B messages \
         published in {took:.1} s, it \
         had read {total} bytes; the other subscriber got every message"
    );
}

#[test]
fn client_kill_ends_a_subscriber() {
    let s = setup("");
    let mut sub = Raw::connect(s.proxy.port);
    let id = match sub.call(&["CLIENT", "ID"]) {
        Reply::Int(id) => id,
        other => panic!("CLIENT ID: {other:?}"),
    };
    sub.call(&["SUBSCRIBE", &name_in(0, "ch")]);
    let mut admin = Raw::connect(s.proxy.port);
    assert_eq!(admin.call(&["CLIENT", "KILL", "ID", &id.to_string()]), Reply::Int(1));
    sub.writer.set_read_timeout(Some(SHORT)).expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(sub.reader.read(&mut byte).ok(), Some(0), "the subscriber was not closed");
    // The servers no longer list keyhop's subscription once its connection is closed.
    let gone = wait_until(SHORT, || {
        admin.call(&["PUBSUB", "NUMSUB", &name_in(0, "ch")])
            == Reply::Array(Some(vec![
                Reply::Bulk(Some(name_in(0, "ch").into_bytes())),
                Reply::Int(0),
            ]))
    });
    assert!(gone, "the server still counts the killed subscriber");
}

/// The CLIENT LIST id of `port`'s one client subscribed to something.
fn subscribed_id(port: u16) -> Option<String> {
    let mut r = Raw::connect(port);
    let list = r.call(&["CLIENT", "LIST"]).text();
    let line = list.lines().find(|l| l.contains(" sub=1 "))?;
    Some(line.split_whitespace().next()?.to_string())
}

#[test]
fn a_fully_unsubscribed_connection_is_reused() {
    let s = setup("");
    let a = name_in(0, "ch");
    let mut sub = Raw::connect(s.proxy.port);
    sub.call(&["SUBSCRIBE", &a]);
    let first = subscribed_id(s.g1.port);
    assert!(first.is_some(), "keyhop's subscription is not on g1");
    sub.call(&["UNSUBSCRIBE"]);
    assert_eq!(sub.call(&["GET", "k"]), Reply::Bulk(None), "back in normal mode");
    sub.call(&["SUBSCRIBE", &a]);
    assert_eq!(subscribed_id(s.g1.port), first, "a new connection instead of the clean one");
}

#[test]
fn subscribing_past_max_pinned_connections_is_refused_and_the_client_goes_on() {
    let s = setup("max_pinned_connections = 1");
    let (a, b) = (name_in(0, "ch"), name_in(1, "ch"));
    let mut first = Raw::connect(s.proxy.port);
    assert!(matches!(first.call(&["SUBSCRIBE", &a]), Reply::Array(_)));
    let mut second = Raw::connect(s.proxy.port);
    match second.call(&["SUBSCRIBE", &a]) {
        Reply::Error(e) => assert!(
            e.starts_with("ERR keyhop: all 1 dedicated connections to ")
                && e.contains("max_pinned_connections"),
            "{e}"
        ),
        other => panic!("SUBSCRIBE past the limit: {other:?}"),
    }
    // Nothing was subscribed: the client is in normal mode, and g2 still has room.
    assert_eq!(second.call(&["GET", "k"]), Reply::Bulk(None));
    assert!(matches!(second.call(&["SUBSCRIBE", &b]), Reply::Array(_)));
    let mut publisher = Raw::connect(s.proxy.port);
    assert_eq!(publisher.call(&["PUBLISH", &a, "x"]), Reply::Int(1));
    assert_eq!(publisher.call(&["PUBLISH", &b, "y"]), Reply::Int(1));
    assert_eq!(message_of(second.read()), (b.clone(), "y".to_string()));
}

#[test]
fn a_draining_keyhop_closes_its_subscribers_and_exits() {
    let mut s = setup("shutdown_grace_ms = 5000");
    let mut sub = Raw::connect(s.proxy.port);
    sub.call(&["SUBSCRIBE", &name_in(0, "ch"), &name_in(1, "ch")]);
    sub.read();
    let sigterm = 15;
    let asked = Instant::now();
    s.proxy.signal(sigterm);
    let mut byte = [0u8; 1];
    assert_eq!(sub.reader.read(&mut byte).ok(), Some(0), "the subscriber was not closed");
    // Closed at the start of the drain, not when the grace period runs out.
    assert!(asked.elapsed() < Duration::from_secs(4), "closed after {:?}", asked.elapsed());
    let exited = wait_until(SHORT, || {
        s.proxy.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    });
    assert!(exited, "keyhop did not exit after the drain");
}

#[test]
fn a_subscription_a_server_refuses_is_undone_everywhere() {
    let dir = temp_dir();
    let g1 = redis_server(&[]);
    // g2 cannot SSUBSCRIBE (as a server whose ACL forbids it, or one older than Redis 7).
    let g2 = redis_server(&["--rename-command", "SSUBSCRIBE", ""]);
    let proxy = keyhop(dir.path(), &common::two_group_config("", &g1, &g2));
    let (s1, s2) = (name_in(0, "sh"), name_in(1, "sh"));
    let mut sub = Raw::connect(proxy.port);
    match sub.call(&["SSUBSCRIBE", &s1, &s2]) {
        Reply::Error(e) => assert!(e.starts_with("ERR unknown command 'SSUBSCRIBE'"), "{e}"),
        other => panic!("SSUBSCRIBE refused by g2: {other:?}"),
    }
    // Nothing stays subscribed: the client is in normal mode and g1 dropped its half.
    assert_eq!(sub.call(&["GET", "k"]), Reply::Bulk(None));
    let mut admin = Raw::connect(proxy.port);
    let none_left = wait_until(SHORT, || {
        admin.call(&["PUBSUB", "SHARDNUMSUB", &s1])
            == Reply::Array(Some(vec![Reply::Bulk(Some(s1.clone().into_bytes())), Reply::Int(0)]))
    });
    assert!(none_left, "g1 kept the refused command's shard channel");
    // What g1 alone serves still works, counted from zero.
    let confirmation = Reply::Array(Some(vec![
        Reply::Bulk(Some(b"ssubscribe".to_vec())),
        Reply::Bulk(Some(s1.clone().into_bytes())),
        Reply::Int(1),
    ]));
    assert_eq!(sub.call(&["SSUBSCRIBE", &s1]), confirmation);
    assert_eq!(admin.call(&["SPUBLISH", &s1, "m"]), Reply::Int(1));
    match sub.read() {
        Reply::Array(Some(items)) => assert_eq!(items[0], Reply::Bulk(Some(b"smessage".to_vec()))),
        other => panic!("smessage: {other:?}"),
    }
}
