//! Every command and subcommand through keyhop in RESP3, compared with a direct server's RESP3
//! replies (split out of command_table.rs, which checks the table itself).

mod common;
#[path = "common/invocations.rs"]
mod invocations;

use common::{Raw, Reply};
use invocations::generated_invocations;
use keyhop_router::command::{self, CommandSpec, flags};

/// What keyhop does with a command for a client that said `HELLO 3`.
#[derive(Debug, PartialEq, Eq)]
enum Resp3 {
    /// Sent to a server over a RESP3 connection; its reply reaches the client untouched.
    Forwarded,
    /// Answered or merged by keyhop, rendered in RESP3.
    Rendered,
    /// Refused with a `keyhop` error, never sent to a server.
    Refused,
}

fn resp3_behaviour(spec: &CommandSpec) -> Resp3 {
    use keyhop_router::Policy;
    use keyhop_router::command::Local;
    match spec.policy {
        Policy::Forward | Policy::AnyGroup | Policy::ByChannel => Resp3::Forwarded,
        // With one group, split and fanned-out commands go to that group in one piece.
        Policy::Split(_) | Policy::AllGroups(_) => Resp3::Forwarded,
        Policy::Local(Local::Command) => Resp3::Forwarded,
        Policy::Local(Local::Flush) => Resp3::Refused, // allow_flush is off here
        Policy::Local(_) => Resp3::Rendered,
        // Pinned commands run on a dedicated connection and answer the server's own replies.
        Policy::NeedsPinning => Resp3::Forwarded,
        // allow_admin is off here.
        Policy::Refused | Policy::Admin(_) => Resp3::Refused,
        // One group: MOVE and SWAPDB go to it.
        Policy::SingleGroup => Resp3::Forwarded,
    }
}

/// Replies that depend on when or where they are asked (a server's clock, memory, start time):
/// only their RESP3 type is compared.
const VARYING: &[&str] = &[
    // Whole-table listings come in each server's hash-table order.
    "command",
    "command|docs",
    "command|info",
    "command|list",
    "lastsave",
    "lolwut",
    "memory|doctor",
    "memory|malloc-stats",
    "memory|stats",
    "memory|usage",
    "latency|doctor",
    "latency|graph",
    "latency|histogram",
    "latency|history",
    "latency|latest",
    "function|stats",
    "object|freq",
    "object|idletime",
];

/// A reply's debug text, cut short for assertion messages.
fn short(r: &Reply) -> String {
    let text = format!("{r:?}");
    text.chars().take(300).collect()
}

/// The RESP3 type of a reply, for replies whose value may differ.
fn kind(r: &Reply) -> std::mem::Discriminant<Reply> {
    std::mem::discriminant(r)
}

/// Every command and subcommand, invoked as `keys_match_getkeys` invokes them, through a
/// one-group keyhop in RESP3 and directly on a server in RESP3: forwarded ones answer exactly
/// what the server answers (maps, sets, doubles, nulls untouched), keyhop's own answers are
/// well-formed RESP3 of the type Redis uses, refused ones never reach a server.
#[test]
fn every_command_in_resp3() {
    let dir = common::temp_dir();
    let behind = common::redis_server(&[]);
    let direct = common::redis_server(&[]);
    let config = format!(
        "listen = \"{{listen}}\"\n[[groups]]\nname = \"g1\"\nmaster = \"{}\"\n",
        behind.addr()
    );
    let proxy = common::keyhop(dir.path(), &config);
    let mut k = Raw::connect(proxy.port);
    let mut d = Raw::connect(direct.port);
    assert!(matches!(k.call(&["HELLO", "3"]), Reply::Map(_)));
    assert!(matches!(d.call(&["HELLO", "3"]), Reply::Map(_)));
    let (mut forwarded, mut rendered, mut refused) = (0, 0, 0);
    for c in command::commands() {
        for spec in std::iter::once(c).chain(c.subcommands.iter()) {
            if !c.subcommands.is_empty() && std::ptr::eq(spec, c) {
                continue; // a container alone is an arity error, checked elsewhere
            }
            let behaviour = resp3_behaviour(spec);
            // Connection-ending or mode-changing commands are checked on their own below.
            if matches!(spec.name, "quit" | "reset" | "hello" | "select" | "client|reply") {
                continue;
            }
            // Subscribed mode answers one confirmation per name: tests/proxy_pubsub.rs compares
            // those with a server.
            if spec.flags & flags::PUBSUB != 0 && spec.name.contains("subscribe") {
                continue;
            }
            // MULTI/WATCH change what every later command of the sweep answers:
            // tests/proxy_transactions.rs compares transactions with a server.
            if matches!(spec.name, "multi" | "exec" | "discard" | "watch" | "unwatch") {
                continue;
            }
            for args in generated_invocations(spec) {
                let call: Vec<&str> = args.iter().map(String::as_str).collect();
                let ours = k.call(&call);
                match behaviour {
                    Resp3::Refused => {
                        assert!(
                            matches!(&ours, Reply::Error(e) if e.contains("keyhop")),
                            "{args:?} is refused by keyhop: {ours:?}"
                        );
                        refused += 1;
                    }
                    Resp3::Forwarded => {
                        let theirs = d.call(&call);
                        let same = if VARYING.contains(&spec.name) {
                            kind(&ours) == kind(&theirs)
                        } else {
                            ours == theirs
                        };
                        assert!(same, "{args:?}: {} / {}", short(&ours), short(&theirs));
                        forwarded += 1;
                    }
                    Resp3::Rendered => {
                        // Arguments made from the arity are mostly invalid for keyhop's own
                        // commands: what counts is a whole RESP3 reply (the read parsed it) and
                        // a live connection; the values are compared below.
                        assert_eq!(k.call(&["PING"]), Reply::Status("PONG".into()), "{args:?}");
                        rendered += 1;
                    }
                }
            }
        }
    }
    assert!(forwarded > 300, "only {forwarded} forwarded invocations compared");
    assert!(refused > 30, "only {refused} refusals checked");
    assert!(rendered > 20, "only {rendered} of keyhop's own answers checked");
    // keyhop's own answers, compared with the server's RESP3 where the value can match, and by
    // type where it can't (ids, clocks, addresses).
    let same: &[&[&str]] = &[
        &["PING"],
        &["PING", "x"],
        &["ECHO", "x"],
        &["SELECT", "0"],
        &["SELECT", "x"],
        &["CLIENT", "SETNAME", ""],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "n1"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "bad name"],
        &["SCAN", "0"],
        &["RANDOMKEY"],
        &["DBSIZE"],
        &["AUTH", "x"],
        &["HELLO", "4"],
    ];
    k.call(&["FLUSHALL"]); // refused; the state is compared through the direct server below
    d.call(&["FLUSHALL"]);
    common::cmd(behind.port, &["FLUSHALL"]);
    for args in same {
        assert_eq!(k.call(args), d.call(args), "{args:?}");
    }
    let typed: &[&[&str]] = &[
        &["HELLO"],
        &["HELLO", "3"],
        &["CLIENT", "ID"],
        &["CLIENT", "INFO"],
        &["CLIENT", "LIST"],
        &["INFO"],
        &["INFO", "keyspace"],
        &["TIME"],
        &["SLOWLOG", "GET"],
        &["SLOWLOG", "LEN"],
        &["SLOWLOG", "RESET"],
    ];
    for args in typed {
        let (ours, theirs) = (k.call(args), d.call(args));
        assert_eq!(kind(&ours), kind(&theirs), "{args:?}: {ours:?} / {theirs:?}");
    }
    assert_eq!(k.call(&["RESET"]), d.call(&["RESET"]));
    assert_eq!(k.call(&["GET", "nothing"]), Reply::Bulk(None), "RESET returns to RESP2");
    assert_eq!(k.call(&["QUIT"]), d.call(&["QUIT"]));
}
