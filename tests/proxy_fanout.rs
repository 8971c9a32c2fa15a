//! The README's fan-out and by-channel promises, checked on each server directly rather than
//! through keyhop's own answers: SCRIPT LOAD/EXISTS/FLUSH and FUNCTION LOAD/DELETE/RESTORE/FLUSH
//! reach every group's master (so EVALSHA and FCALL work for keys of any group), and PUBLISH /
//! SPUBLISH reach only the master of the group owning the channel's slot. `proxy_pubsub.rs`
//! compares pub/sub through keyhop with a direct server, which cannot tell a message routed to the
//! wrong group from a right one when keyhop also subscribes by channel; subscribers here sit on
//! the servers themselves.

mod common;

use common::{Raw, Reply, TwoGroups, group_of, tag_of};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn ints(v: &[i64]) -> Reply {
    Reply::Array(Some(v.iter().map(|&i| Reply::Int(i)).collect()))
}

/// The library names `FUNCTION LIST` answers on 127.0.0.1:`port`, in the server's order.
fn libraries(port: u16) -> Vec<String> {
    let Reply::Array(Some(libs)) = Raw::connect(port).call(&["FUNCTION", "LIST"]) else {
        panic!("FUNCTION LIST on {port} is not an array")
    };
    libs.iter()
        .map(|lib| {
            let Reply::Array(Some(fields)) = lib else { panic!("library entry {lib:?}") };
            let at = fields
                .iter()
                .position(|f| *f == bulk("library_name"))
                .unwrap_or_else(|| panic!("no library_name in {fields:?}"));
            fields[at + 1].text()
        })
        .collect()
}

const SCRIPT: &str = "return redis.call('INCR', KEYS[1])";
const OTHER: &str = "return redis.call('DECR', KEYS[1])";
const LIBRARY: &str = "#!lua name=khlib\n\
    redis.register_function('khincr', function(keys, args) return redis.call('INCRBY', keys[1], args[1]) end)";

#[test]
fn scripts_are_loaded_checked_and_flushed_on_every_group() {
    let s = TwoGroups::start("");
    let (k1, k2) = (format!("{}k", tag_of(0)), format!("{}k", tag_of(1)));
    let mut c = Raw::connect(s.proxy.port);
    let mut direct = Raw::connect(s.direct.port);

    // LOAD answers the SHA1 a server answers, and every group's master has the script.
    let sha = direct.call(&["SCRIPT", "LOAD", SCRIPT]).text();
    assert_eq!(c.call(&["SCRIPT", "LOAD", SCRIPT]), bulk(&sha));
    for g in [&s.g1, &s.g2] {
        assert_eq!(
            Raw::connect(g.port).call(&["SCRIPT", "EXISTS", &sha]),
            ints(&[1]),
            "{}",
            g.name
        );
    }
    // EVALSHA through keyhop runs on the group of its key, whichever group that is.
    assert_eq!(c.call(&["EVALSHA", &sha, "1", &k1]), Reply::Int(1));
    assert_eq!(c.call(&["EVALSHA", &sha, "1", &k2]), Reply::Int(1));
    assert_eq!(c.call(&["EVALSHA", &sha, "1", &k2]), Reply::Int(2));
    assert_eq!(common::cmd(s.g1.port, &["GET", &k1]), "1");
    assert_eq!(common::cmd(s.g2.port, &["GET", &k2]), "2");

    // A script only g1 has: g1 alone says 1, and keyhop's merged EXISTS says 1 only for a
    // script that every group has (an EVALSHA of it could land on any group).
    let other = Raw::connect(s.g1.port).call(&["SCRIPT", "LOAD", OTHER]).text();
    let unknown = "0000000000000000000000000000000000000000";
    let exists = ["SCRIPT", "EXISTS", sha.as_str(), other.as_str(), unknown];
    assert_eq!(Raw::connect(s.g1.port).call(&exists), ints(&[1, 1, 0]));
    assert_eq!(Raw::connect(s.g2.port).call(&exists), ints(&[1, 0, 0]));
    assert_eq!(c.call(&exists), ints(&[1, 0, 0]));
    // ... and an EVALSHA of it for a g2 key gets g2's own NOSCRIPT, as a server without it says.
    let noscript = direct.call(&["EVALSHA", &other, "1", &k2]);
    assert!(matches!(&noscript, Reply::Error(e) if e.starts_with("NOSCRIPT")), "{noscript:?}");
    assert_eq!(c.call(&["EVALSHA", &other, "1", &k2]), noscript);
    assert_eq!(c.call(&["EVALSHA", &other, "1", &k1]), Reply::Int(0));

    // FLUSH empties every group's script cache.
    assert_eq!(c.call(&["SCRIPT", "FLUSH"]), Reply::Status("OK".into()));
    for g in [&s.g1, &s.g2] {
        assert_eq!(Raw::connect(g.port).call(&exists), ints(&[0, 0, 0]), "{}", g.name);
    }
    assert_eq!(c.call(&exists), ints(&[0, 0, 0]));
}

#[test]
fn functions_are_loaded_deleted_restored_and_flushed_on_every_group() {
    let s = TwoGroups::start("");
    let (k1, k2) = (format!("{}f", tag_of(0)), format!("{}f", tag_of(1)));
    let mut c = Raw::connect(s.proxy.port);
    let mut direct = Raw::connect(s.direct.port);
    let servers = [s.g1.port, s.g2.port];
    let on_every = |want: &[&str], step: &str| {
        for port in servers {
            assert_eq!(libraries(port), want, "{step}: FUNCTION LIST on {port}");
        }
    };

    assert_eq!(c.call(&["FUNCTION", "LOAD", LIBRARY]), bulk("khlib"));
    on_every(&["khlib"], "after LOAD");
    assert_eq!(c.call(&["FCALL", "khincr", "1", &k1, "5"]), Reply::Int(5));
    assert_eq!(c.call(&["FCALL", "khincr", "1", &k2, "7"]), Reply::Int(7));
    assert_eq!(common::cmd(s.g1.port, &["GET", &k1]), "5");
    assert_eq!(common::cmd(s.g2.port, &["GET", &k2]), "7");
    // Loading it again fails on every group, and keyhop answers what a server answers.
    let twice = {
        direct.call(&["FUNCTION", "LOAD", LIBRARY]);
        direct.call(&["FUNCTION", "LOAD", LIBRARY])
    };
    assert_eq!(twice, Reply::Error("ERR Library 'khlib' already exists".into()));
    assert_eq!(c.call(&["FUNCTION", "LOAD", LIBRARY]), twice);

    // DUMP (from the first group's master), DELETE everywhere, RESTORE everywhere.
    let Reply::Bulk(Some(dump)) = c.call(&["FUNCTION", "DUMP"]) else { panic!("FUNCTION DUMP") };
    assert_eq!(c.call(&["FUNCTION", "DELETE", "khlib"]), Reply::Status("OK".into()));
    on_every(&[], "after DELETE");
    let not_found = direct.call(&["FCALL", "nosuchfunction", "1", &k2, "1"]);
    assert_eq!(not_found, Reply::Error("ERR Function not found".into()));
    assert_eq!(c.call(&["FCALL", "khincr", "1", &k2, "1"]), not_found);
    c.send(&[b"FUNCTION", b"RESTORE", &dump]);
    assert_eq!(c.read(), Reply::Status("OK".into()));
    on_every(&["khlib"], "after RESTORE");
    assert_eq!(c.call(&["FCALL", "khincr", "1", &k2, "1"]), Reply::Int(8));
    assert_eq!(c.call(&["FCALL", "khincr", "1", &k1, "1"]), Reply::Int(6));

    assert_eq!(c.call(&["FUNCTION", "FLUSH"]), Reply::Status("OK".into()));
    on_every(&[], "after FLUSH");
    assert_eq!(c.call(&["FCALL", "khincr", "1", &k1, "1"]), not_found);
}

/// The first name `prefix<n>` whose slot belongs to `group`.
fn name_in(group: usize, prefix: &str) -> String {
    (0..1000)
        .map(|n| format!("{prefix}{n}"))
        .find(|c| group_of(c) == group)
        .expect("a name of the group among 1000 candidates")
}

/// A pub/sub frame as (kind, channel, payload), for `message` and `smessage`.
fn frame(r: Reply) -> (String, String, String) {
    let Reply::Array(Some(items)) = r else { panic!("not a message: {r:?}") };
    let text: Vec<String> = items.iter().map(Reply::text).collect();
    assert_eq!(text.len(), 3, "not a message: {text:?}");
    (text[0].clone(), text[1].clone(), text[2].clone())
}

fn msg(kind: &str, channel: &str, payload: &str) -> (String, String, String) {
    (kind.to_string(), channel.to_string(), payload.to_string())
}

#[test]
fn publish_goes_only_to_the_group_owning_the_channel() {
    let s = TwoGroups::start("");
    let (a, b) = (name_in(0, "ch"), name_in(1, "ch"));
    let (s1, s2) = (name_in(0, "sh"), name_in(1, "sh"));
    // Every subscriber listens to the channels of both groups on its own server: a message
    // routed to the wrong group would reach it. g2 has two, so the receiver counts differ.
    let subscribe = |port: u16| {
        let mut r = Raw::connect(port);
        r.send(&[b"SUBSCRIBE", a.as_bytes(), b.as_bytes()]);
        r.send(&[b"SSUBSCRIBE", s1.as_bytes(), s2.as_bytes()]);
        for i in 0..4 {
            let Reply::Array(Some(items)) = r.read() else { panic!("confirmation #{i}") };
            assert_eq!(items[2], Reply::Int(if i < 2 { i + 1 } else { i - 1 }), "{items:?}");
        }
        r
    };
    let mut subs = [subscribe(s.g1.port), subscribe(s.g2.port), subscribe(s.g2.port)];

    let mut c = Raw::connect(s.proxy.port);
    assert_eq!(c.call(&["PUBLISH", &a, "to-a"]), Reply::Int(1));
    assert_eq!(c.call(&["PUBLISH", &b, "to-b"]), Reply::Int(2));
    assert_eq!(c.call(&["SPUBLISH", &s1, "to-s1"]), Reply::Int(1));
    assert_eq!(c.call(&["SPUBLISH", &s2, "to-s2"]), Reply::Int(2));
    // A marker published on each server after keyhop's replies: whatever keyhop delivered to a
    // server arrives before it, so nothing unexpected can hide behind it.
    for port in [s.g1.port, s.g2.port] {
        let n = if port == s.g1.port { 1 } else { 2 };
        assert_eq!(Raw::connect(port).call(&["PUBLISH", &a, "end"]), Reply::Int(n));
    }
    let g1_saw: Vec<_> = (0..3).map(|_| frame(subs[0].read())).collect();
    assert_eq!(
        g1_saw,
        [msg("message", &a, "to-a"), msg("smessage", &s1, "to-s1"), msg("message", &a, "end")]
    );
    for sub in &mut subs[1..] {
        let g2_saw: Vec<_> = (0..3).map(|_| frame(sub.read())).collect();
        assert_eq!(
            g2_saw,
            [msg("message", &b, "to-b"), msg("smessage", &s2, "to-s2"), msg("message", &a, "end")]
        );
    }
}
