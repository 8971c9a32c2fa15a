use super::*;
use crate::table::Group;

fn a(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn spec(name: &str) -> &'static CommandSpec {
    lookup_full(name.as_bytes()).unwrap_or_else(|| panic!("{name} is in the table"))
}

fn keys_of(args: &[&str]) -> Result<Vec<usize>, RouteError> {
    let v = a(args);
    let s = lookup(&v[0]).expect("known command").resolve(&v).expect("known subcommand");
    let mut out = vec![99];
    s.keys(&v, &mut out).map(|()| out)
}

fn syntax(args: &[&str]) -> String {
    match keys_of(args) {
        Err(RouteError::Syntax(m)) => m,
        other => panic!("{args:?}: expected a syntax error, got {other:?}"),
    }
}

/// Two groups split evenly: `bar` (5061), `hello` (866) and `{user1000}.x` (3443) are in group 0,
/// `foo` (12182) in group 1.
fn two_groups() -> RoutingTable {
    let groups = (0..2)
        .map(|i| Group { name: format!("g{i}"), master: "127.0.0.1:1".into(), replicas: vec![] })
        .collect();
    RoutingTable::new(1, groups, &RoutingTable::even_ranges(2)).expect("valid table")
}

fn all_specs() -> Vec<&'static CommandSpec> {
    let mut v = Vec::new();
    for c in commands() {
        v.push(c);
        v.extend(c.subcommands.iter());
    }
    v
}

#[test]
fn table_size_and_version() {
    assert_eq!(commands().len(), 240);
    assert_eq!(all_specs().len(), TOTAL_COMMANDS);
    assert_eq!(REDIS_VERSION, "7.0.15");
    let names: Vec<&str> = commands().iter().map(|c| c.name).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "COMMANDS is sorted by name");
}

#[test]
fn lookup_finds_every_command_in_any_case() {
    for c in commands() {
        let upper = c.name.to_ascii_uppercase();
        let mixed: String = c
            .name
            .chars()
            .enumerate()
            .map(|(i, ch)| if i % 2 == 0 { ch.to_ascii_uppercase() } else { ch })
            .collect();
        for n in [c.name, upper.as_str(), mixed.as_str()] {
            let found = lookup(n.as_bytes()).map(|s| s.name);
            assert_eq!(found, Some(c.name), "lookup({n:?})");
        }
    }
}

#[test]
fn lookup_rejects_unknown_names() {
    for n in [
        &b""[..],
        b"ge",
        b"gett",
        b"foo",
        b"get ",
        b"g\xc3\xa9t",
        b"object|encoding",
        b"georadiusbymember_rox",
        b"GEORADIUSBYMEMBER_RO\0",
        b"restore_asking",
        b"\x7f\x7f\x7f",
    ] {
        assert!(lookup(n).is_none(), "{n:?}");
    }
    // `_` and DEL hash alike (`| 0x20`); the final comparison tells them apart.
    assert!(lookup(b"eval\x7fro").is_none());
    assert_eq!(lookup(b"EVAL_RO").map(|s| s.name), Some("eval_ro"));
    assert_eq!(lookup(&[b'x'; 300]).map(|s| s.name), None);
}

#[test]
fn lookup_full_finds_subcommands() {
    assert_eq!(spec("OBJECT|Encoding").name, "object|encoding");
    assert_eq!(spec("client|kill").arity, -3);
    assert!(lookup_full(b"object|nope").is_none());
    assert!(lookup_full(b"get|x").is_none());
    assert_eq!(spec("get").sub_name(), b"get");
    assert_eq!(spec("xinfo|stream").sub_name(), b"stream");
}

#[test]
fn sample_metadata() {
    let get = spec("get");
    assert_eq!((get.arity, get.first_key, get.last_key, get.key_step), (2, 1, 1, 1));
    assert_eq!(get.flags, flags::READONLY | flags::FAST);
    assert!(!get.is_write());
    assert!(spec("set").is_write());
    let mset = spec("mset");
    assert_eq!((mset.first_key, mset.last_key, mset.key_step), (1, -1, 2));
    assert_eq!(
        mset.key_specs,
        &[KeySpec {
            begin: BeginSearch::Index(1),
            find: FindKeys::Range { lastkey: -1, step: 2, limit: 0 },
            flags: key_flags::OW | key_flags::UPDATE,
        }]
    );
    let migrate = spec("migrate");
    assert_eq!(migrate.key_specs[1].begin, BeginSearch::Keyword { keyword: "KEYS", startfrom: -2 });
    assert_ne!(migrate.key_specs[1].flags & key_flags::INCOMPLETE, 0);
    assert_ne!(spec("blpop").flags & flags::BLOCKING, 0);
    assert_ne!(spec("eval").flags & flags::MOVABLEKEYS, 0);
    assert_ne!(spec("spublish").key_specs[0].flags & key_flags::NOT_KEY, 0);
    assert_eq!(spec("object").subcommands.len(), 5);
    assert_eq!(spec("client").subcommands.len(), 16);
}

#[test]
fn arity_ok_exact_and_minimum() {
    assert!(spec("get").arity_ok(2));
    assert!(!spec("get").arity_ok(3));
    assert!(!spec("get").arity_ok(1));
    assert!(spec("mget").arity_ok(2));
    assert!(spec("mget").arity_ok(200));
    assert!(!spec("mget").arity_ok(1));
}

// ---- policy overlay ----

#[test]
fn overlay_has_no_stale_or_duplicate_entry() {
    let all = all_specs();
    let mut entries: Vec<(&str, Policy)> = Vec::new();
    for (names, p) in policy::LISTS {
        entries.extend(names.iter().map(|n| (*n, *p)));
    }
    entries.extend(policy::OTHER.iter().copied());
    let mut seen = std::collections::HashSet::new();
    for (pattern, _) in &entries {
        assert!(seen.insert(*pattern), "{pattern} is listed twice in policy.rs");
        let used = all.iter().any(|s| {
            policy::matches(pattern, s.name, false) || policy::matches(pattern, s.name, true)
        });
        assert!(used, "policy.rs names {pattern}, which the table does not have");
        if let Some(container) = pattern.strip_suffix("|*") {
            assert!(!spec(container).subcommands.is_empty(), "{pattern}: not a container");
        }
    }
}

#[test]
fn no_command_is_listed_twice() {
    // `policy::of` takes the first list that names a command: a name in two lists would
    // silently get the first one's policy, whatever the second says.
    let mut seen: std::collections::HashMap<&str, Policy> = std::collections::HashMap::new();
    let lists = policy::LISTS.iter().flat_map(|(names, p)| names.iter().map(move |n| (*n, *p)));
    for (name, p) in lists.chain(policy::OTHER.iter().copied()) {
        if let Some(first) = seen.insert(name, p) {
            panic!("{name} is listed twice in policy.rs: {first:?} and {p:?}");
        }
    }
    assert!(seen.len() > 200, "the lists name {} commands", seen.len());
}

#[test]
fn required_policies() {
    use AdminFanout as A;
    use Local as L;
    use Merge as M;
    let cases: &[(&str, Policy)] = &[
        ("mget", Policy::Split(M::Mget)),
        ("mset", Policy::Split(M::AllOk)),
        ("del", Policy::Split(M::SumIntegers)),
        ("unlink", Policy::Split(M::SumIntegers)),
        ("exists", Policy::Split(M::SumIntegers)),
        ("touch", Policy::Split(M::SumIntegers)),
        ("msetnx", Policy::Forward),
        ("client|setname", Policy::Local(L::Client)),
        ("client|list", Policy::Local(L::Client)),
        ("client", Policy::Local(L::Client)),
        ("command", Policy::Local(L::Command)),
        ("command|docs", Policy::Local(L::Command)),
        ("flushall", Policy::Local(L::Flush)),
        ("flushdb", Policy::Local(L::Flush)),
        ("slowlog|get", Policy::Local(L::Slowlog)),
        ("info", Policy::Local(L::Info)),
        ("hello", Policy::Local(L::Hello)),
        ("dbsize", Policy::AllGroups(M::SumIntegers)),
        ("keys", Policy::AllGroups(M::ConcatArrays)),
        ("script|load", Policy::AllGroups(M::First)),
        ("script|exists", Policy::AllGroups(M::MinElementwise)),
        ("function|restore", Policy::AllGroups(M::First)),
        ("publish", Policy::ByChannel),
        ("spublish", Policy::ByChannel),
        ("config|get", Policy::AnyGroup),
        ("config|help", Policy::AnyGroup),
        ("config|set", Policy::Admin(A::MastersAndReplicas)),
        ("config|resetstat", Policy::Admin(A::Masters)),
        ("config|rewrite", Policy::Admin(A::Masters)),
        ("debug", Policy::Admin(A::Debug)),
        ("save", Policy::Admin(A::Masters)),
        ("bgsave", Policy::Admin(A::Masters)),
        ("bgrewriteaof", Policy::Admin(A::Masters)),
        ("latency|reset", Policy::Admin(A::Masters)),
        ("latency|doctor", Policy::AnyGroup),
        ("memory|purge", Policy::Admin(A::Masters)),
        ("script|kill", Policy::Admin(A::Kill)),
        ("function|kill", Policy::Admin(A::Kill)),
        ("move", Policy::SingleGroup),
        ("swapdb", Policy::SingleGroup),
        ("cluster|info", Policy::Refused),
        ("acl|whoami", Policy::Refused),
        ("module|list", Policy::Refused),
        ("shutdown", Policy::Refused),
        ("replicaof", Policy::Refused),
        ("script|debug", Policy::Refused),
        ("readonly", Policy::Refused),
        ("migrate", Policy::Refused),
        ("pfdebug", Policy::Refused),
        ("restore-asking", Policy::Refused),
        ("multi", Policy::NeedsPinning),
        ("watch", Policy::NeedsPinning),
        ("ssubscribe", Policy::NeedsPinning),
        ("wait", Policy::NeedsPinning),
        ("xread", Policy::Forward),
        ("xreadgroup", Policy::Forward),
        ("object|freq", Policy::Forward),
        ("object|help", Policy::AnyGroup),
        ("memory|usage", Policy::Forward),
        ("xinfo|stream", Policy::Forward),
        ("pubsub|numsub", Policy::AllGroups(M::SumPairs)),
        ("pubsub|shardnumsub", Policy::AllGroups(M::SumPairs)),
        ("pubsub|channels", Policy::AllGroups(M::UnionArrays)),
        ("pubsub|shardchannels", Policy::AllGroups(M::UnionArrays)),
        ("pubsub|numpat", Policy::AllGroups(M::MaxInteger)),
        ("pubsub|help", Policy::AnyGroup),
        ("latency|latest", Policy::AnyGroup),
        ("lastsave", Policy::AnyGroup),
        ("eval", Policy::Forward),
        ("fcall", Policy::Forward),
        ("sort", Policy::Forward),
    ];
    for (name, p) in cases {
        assert_eq!(spec(name).policy, *p, "{name}");
    }
}

#[test]
fn keyed_commands_never_fan_out() {
    // A fan-out sends the same frame everywhere: a key would land on groups that do not own it.
    for s in all_specs() {
        let has_keys = s.key_specs.iter().any(|k| k.flags & key_flags::NOT_KEY == 0);
        if has_keys {
            assert!(
                !matches!(s.policy, Policy::AllGroups(_) | Policy::Admin(_)),
                "{} has keys but fans out",
                s.name
            );
        }
    }
}

#[test]
fn debug_routes_keyed_forms_by_key() {
    let t = two_groups();
    let mut scratch = Vec::new();
    let mut route = |args: &[&str]| route_debug(&t, &a(args), &mut scratch);
    // `bar` and `hello` are in group 0, `foo` in group 1.
    assert_eq!(route(&["DEBUG", "OBJECT", "foo"]), Ok(DebugRoute::Keys(Some(1))));
    assert_eq!(route(&["debug", "object", "bar"]), Ok(DebugRoute::Keys(Some(0))));
    assert_eq!(route(&["DEBUG", "SDSLEN", "foo"]), Ok(DebugRoute::Keys(Some(1))));
    assert_eq!(route(&["DEBUG", "QUICKLIST", "foo", "1"]), Ok(DebugRoute::Keys(Some(1))));
    assert_eq!(route(&["DEBUG", "HTSTATS-KEY", "bar"]), Ok(DebugRoute::Keys(Some(0))));
    assert_eq!(route(&["DEBUG", "DIGEST-VALUE", "bar", "hello"]), Ok(DebugRoute::Keys(Some(0))));
    assert_eq!(route(&["DEBUG", "DIGEST-VALUE"]), Ok(DebugRoute::Keys(None)));
    assert_eq!(route(&["DEBUG", "DIGEST-VALUE", "bar", "foo"]), Err(RouteError::CrossGroup));
    assert_eq!(route(&["DEBUG", "POPULATE", "10"]), Ok(DebugRoute::CreatesKeys));
    for args in [&["DEBUG", "SLEEP", "0"][..], &["DEBUG", "DIGEST"], &["DEBUG", "HELP"]] {
        assert_eq!(route(args), Ok(DebugRoute::Servers), "{args:?}");
    }
    // Keyed forms with the wrong argument count: debugCommand's own text.
    assert_eq!(
        route(&["DEBUG", "Object"]),
        Err(RouteError::Syntax(
            "ERR unknown subcommand or wrong number of arguments for 'Object'. Try DEBUG HELP."
                .into()
        ))
    );
    assert!(matches!(route(&["DEBUG", "OBJECT", "a", "b"]), Err(RouteError::Syntax(_))));
    assert!(matches!(route(&["DEBUG", "QUICKLIST", "a", "1", "2"]), Err(RouteError::Syntax(_))));
    // DEBUG has no key specs: keys() agrees with COMMAND GETKEYS, which finds none.
    let mut out = vec![];
    spec("debug").keys(&a(&["DEBUG", "OBJECT", "foo"]), &mut out).expect("arity ok");
    assert!(out.is_empty());
}

#[test]
fn blocking_commands_need_pinning() {
    for s in all_specs() {
        if s.flags & flags::BLOCKING == 0 {
            continue;
        }
        if s.keys_proc == KeysProc::Xread {
            assert_eq!(s.policy, Policy::Forward, "{}", s.name);
        } else {
            assert_eq!(s.policy, Policy::NeedsPinning, "{} is blocking", s.name);
        }
    }
}

#[test]
fn policies_agree_with_keys() {
    for s in all_specs() {
        let has_keys = s.key_specs.iter().any(|k| k.flags & key_flags::NOT_KEY == 0);
        match s.policy {
            Policy::Forward | Policy::Split(_) => assert!(has_keys, "{} has no keys", s.name),
            // MOVE is keyed and SWAPDB is not; both route the same way (to the only group).
            Policy::NeedsPinning | Policy::Refused | Policy::SingleGroup => {}
            _ => assert!(!has_keys, "{} has keys but policy {:?}", s.name, s.policy),
        }
    }
}

#[test]
fn special_key_specs_have_a_procedure() {
    for s in all_specs() {
        for ks in s.key_specs {
            let special = !matches!(ks.begin, BeginSearch::Index(_))
                && !matches!(ks.begin, BeginSearch::Keyword { .. })
                || !matches!(ks.find, FindKeys::Range { .. })
                || ks.flags & key_flags::INCOMPLETE != 0;
            if special {
                assert_ne!(s.keys_proc, KeysProc::Specs, "{} needs a KeysProc", s.name);
            }
        }
    }
    for (name, _) in KeysProc::all() {
        assert!(lookup_full(name.as_bytes()).is_some(), "keys.rs names unknown {name}");
    }
}

#[test]
fn needs_pinning_xread_block() {
    let cases: &[(&[&str], bool)] = &[
        (&["XREAD", "STREAMS", "s", "0"], false),
        (&["XREAD", "COUNT", "5", "STREAMS", "s", "0"], false),
        (&["XREAD", "block", "0", "STREAMS", "s", "0"], true),
        (&["XREAD", "COUNT", "block", "STREAMS", "s", "0"], false),
        (&["XREAD", "STREAMS", "block", "0"], false),
        (&["XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s", ">"], true),
        (&["XREADGROUP", "GROUP", "block", "c", "STREAMS", "s", ">"], false),
        (&["XREADGROUP", "GROUP", "g", "c", "NOACK", "STREAMS", "s", ">"], false),
        (&["BLPOP", "a", "0"], true),
        (&["MULTI"], true),
        (&["GET", "block"], false),
    ];
    for (args, want) in cases {
        let v = a(args);
        let s = lookup(&v[0]).expect("known");
        assert_eq!(needs_pinning(s, &v), *want, "{args:?}");
    }
}

// ---- keys ----

#[test]
fn keys_of_fixed_position_commands() {
    let cases: &[(&[&str], &[usize])] = &[
        (&["GET", "k"], &[1]),
        (&["set", "k", "v", "EX", "10"], &[1]),
        (&["HSET", "h", "f", "v", "f2", "v2"], &[1]),
        (&["MGET", "a", "b", "c"], &[1, 2, 3]),
        (&["MSET", "a", "1", "b", "2"], &[1, 3]),
        (&["MSETNX", "a", "1", "b", "2"], &[1, 3]),
        (&["DEL", "a"], &[1]),
        (&["RENAME", "a", "b"], &[1, 2]),
        (&["SMOVE", "a", "b", "m"], &[1, 2]),
        (&["LMOVE", "a", "b", "LEFT", "RIGHT"], &[1, 2]),
        (&["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"], &[1, 2]),
        (&["BLPOP", "a", "b", "0"], &[1, 2]),
        (&["BRPOPLPUSH", "a", "b", "0"], &[1, 2]),
        (&["SUNIONSTORE", "d", "a", "b"], &[1, 2, 3]),
        (&["SINTER", "a", "b"], &[1, 2]),
        (&["PFMERGE", "d", "a", "b"], &[1, 2, 3]),
        (&["PFCOUNT", "a", "b"], &[1, 2]),
        (&["BITOP", "AND", "d", "a", "b"], &[2, 3, 4]),
        (&["LCS", "a", "b", "LEN"], &[1, 2]),
        (&["COPY", "a", "b", "REPLACE"], &[1, 2]),
        (&["GEOSEARCHSTORE", "d", "s", "FROMMEMBER", "m", "BYRADIUS", "1", "m"], &[1, 2]),
        (&["ZRANGESTORE", "d", "s", "0", "-1"], &[1, 2]),
        (&["WATCH", "a", "b"], &[1, 2]),
        (&["OBJECT", "ENCODING", "k"], &[2]),
        (&["object", "freq", "k"], &[2]),
        (&["MEMORY", "USAGE", "k", "SAMPLES", "5"], &[2]),
        (&["XINFO", "STREAM", "s", "FULL"], &[2]),
        (&["XGROUP", "CREATE", "s", "g", "$"], &[2]),
        (&["PING"], &[]),
        (&["DBSIZE"], &[]),
        (&["CLIENT", "LIST"], &[]),
        (&["SPUBLISH", "ch", "msg"], &[]),
        (&["PUBLISH", "ch", "msg"], &[]),
        (&["SSUBSCRIBE", "a", "b"], &[]),
    ];
    for (args, want) in cases {
        assert_eq!(keys_of(args), Ok(want.to_vec()), "{args:?}");
    }
}

#[test]
fn keys_of_keynum_commands() {
    let cases: &[(&[&str], &[usize])] = &[
        (&["EVAL", "return 1", "2", "a", "b", "x"], &[3, 4]),
        (&["EVAL", "return 1", "0", "x"], &[]),
        (&["EVAL", "return 1", "0"], &[]),
        (&["EVALSHA_RO", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", "a"], &[3]),
        (&["FCALL", "f", "1", "a", "b"], &[3]),
        (&["FCALL_RO", "f", "0"], &[]),
        (&["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"], &[1, 3, 4]),
        (&["ZINTERSTORE", "d", "1", "a"], &[1, 3]),
        (&["ZDIFFSTORE", "d", "2", "a", "b"], &[1, 3, 4]),
        (&["ZUNION", "2", "a", "b", "WITHSCORES"], &[2, 3]),
        (&["ZINTER", "1", "a"], &[2]),
        (&["ZDIFF", "2", "a", "b"], &[2, 3]),
        (&["ZINTERCARD", "2", "a", "b", "LIMIT", "1"], &[2, 3]),
        (&["SINTERCARD", "2", "a", "b"], &[2, 3]),
        (&["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"], &[2, 3]),
        (&["BLMPOP", "0", "1", "a", "RIGHT"], &[3]),
        (&["ZMPOP", "1", "a", "MIN"], &[2]),
        (&["BZMPOP", "1.5", "2", "a", "b", "MAX"], &[3, 4]),
    ];
    for (args, want) in cases {
        assert_eq!(keys_of(args), Ok(want.to_vec()), "{args:?}");
    }
}

#[test]
fn keys_of_keyword_and_special_commands() {
    let cases: &[(&[&str], &[usize])] = &[
        (&["XREAD", "STREAMS", "a", "0"], &[2]),
        (&["XREAD", "COUNT", "2", "BLOCK", "0", "STREAMS", "a", "b", "0", "0"], &[6, 7]),
        (&["XREAD", "STREAMS", "streams", "streams", "0", "0"], &[2, 3]),
        (&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", ">"], &[5]),
        (&["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "STREAMS", "a", "b", ">", ">"], &[7, 8]),
        (&["SORT", "k"], &[1]),
        (&["SORT", "k", "BY", "w_*", "GET", "#", "GET", "o_*"], &[1]),
        (&["SORT", "k", "LIMIT", "0", "10", "STORE", "d"], &[1, 6]),
        (&["sort", "k", "store", "d1", "ALPHA", "STORE", "d2"], &[1, 6]),
        (&["SORT", "k", "BY", "store"], &[1]),
        (&["SORT", "k", "STORE"], &[1]),
        (&["SORT_RO", "k", "BY", "w_*", "GET", "o_*"], &[1]),
        (&["GEORADIUS", "k", "0", "0", "1", "m"], &[1]),
        (&["GEORADIUS", "k", "0", "0", "1", "m", "STORE", "d"], &[1, 7]),
        (&["GEORADIUS", "k", "0", "0", "1", "m", "STORE", "d", "STOREDIST", "e"], &[1, 7, 9]),
        (&["GEORADIUS", "k", "0", "0", "1", "m", "COUNT", "5", "store"], &[1]),
        (&["GEORADIUSBYMEMBER", "k", "m", "1", "km", "STOREDIST", "d"], &[1, 6]),
        (&["MIGRATE", "h", "6379", "k", "0", "5000"], &[3]),
        (&["MIGRATE", "h", "6379", "k", "0", "5000", "COPY", "REPLACE"], &[3]),
        (&["MIGRATE", "h", "6379", "", "0", "5000", "KEYS", "a", "b"], &[7, 8]),
        (&["MIGRATE", "h", "6379", "", "0", "5000", "AUTH", "keys", "KEYS", "a"], &[9]),
        (&["MIGRATE", "h", "6379", "", "0", "5000", "AUTH2", "u", "p", "KEYS", "a"], &[10]),
        (&["MIGRATE", "h", "6379", "x", "0", "5000", "KEYS", "a"], &[]),
    ];
    for (args, want) in cases {
        assert_eq!(keys_of(args), Ok(want.to_vec()), "{args:?}");
    }
}

#[test]
fn keys_errors_match_redis() {
    let too_many = "ERR Number of keys can't be greater than number of args";
    let cases: &[(&[&str], &str)] = &[
        (&["EVAL", "s", "5", "a"], too_many),
        (&["EVAL", "s", "-1", "a"], "ERR Number of keys can't be negative"),
        (&["EVAL", "s", "x", "a"], "ERR value is not an integer or out of range"),
        (&["EVAL", "s", "99999999999999999999"], "ERR value is not an integer or out of range"),
        (&["EVAL", "s", "+1", "a"], "ERR value is not an integer or out of range"),
        (&["EVAL", "s", "01", "a"], "ERR value is not an integer or out of range"),
        (&["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "2", "a"], too_many),
        // A digest of the wrong length is refused before numkeys is read.
        (&["EVALSHA", "s", "2", "a"], "NOSCRIPT No matching script. Please use EVAL."),
        (&["FCALL", "f", "x", "a"], "ERR Bad number of keys provided"),
        (&["FCALL_RO", "f", "3", "a"], too_many),
        (&["FCALL", "f", "-2", "a"], "ERR Number of keys can't be negative"),
        (&["ZUNIONSTORE", "d", "5", "a"], "ERR syntax error"),
        (
            &["ZUNIONSTORE", "d", "0", "a"],
            "ERR at least 1 input key is needed for 'zunionstore' command",
        ),
        (&["ZINTER", "-1", "a"], "ERR at least 1 input key is needed for 'zinter' command"),
        (&["ZDIFF", "x", "a"], "ERR value is not an integer or out of range"),
        (&["ZINTERCARD", "3", "a"], "ERR syntax error"),
        (&["SINTERCARD", "5", "a"], too_many),
        (&["SINTERCARD", "0", "a"], "ERR numkeys should be greater than 0"),
        (&["SINTERCARD", "x", "a"], "ERR numkeys should be greater than 0"),
        (&["LMPOP", "5", "a", "LEFT"], "ERR syntax error"),
        (&["LMPOP", "2", "a", "b"], "ERR syntax error"),
        (&["LMPOP", "0", "a", "LEFT"], "ERR numkeys should be greater than 0"),
        (&["ZMPOP", "x", "a", "MIN"], "ERR numkeys should be greater than 0"),
        (&["BLMPOP", "0", "-1", "a", "LEFT"], "ERR numkeys should be greater than 0"),
        (&["BZMPOP", "0", "3", "a", "MIN"], "ERR syntax error"),
        (&["MSET", "a", "1", "b"], "ERR wrong number of arguments for 'mset' command"),
        (&["MSETNX", "a", "1", "b"], "ERR wrong number of arguments for 'msetnx' command"),
        (
            &["XREAD", "STREAMS", "a", "b", "0"],
            "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
        ),
        (
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", ">"],
            "ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.",
        ),
        (&["XREAD", "COUNT", "1", "a", "b"], "ERR syntax error"),
        (&["XREAD", "COUNT", "1", "STREAMS"], "ERR syntax error"),
        (&["GET"], "ERR wrong number of arguments for 'get' command"),
        (&["GET", "a", "b"], "ERR wrong number of arguments for 'get' command"),
        (&["OBJECT", "ENCODING"], "ERR wrong number of arguments for 'object|encoding' command"),
    ];
    for (args, want) in cases {
        assert_eq!(syntax(args), *want, "{args:?}");
    }
}

#[test]
fn parse_i64_is_string2ll() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"12"), Some(12));
    assert_eq!(parse_i64(b"-12"), Some(-12));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    for bad in
        [&b""[..], b"-", b"-0", b"00", b"01", b"+1", b" 1", b"1 ", b"1a", b"9223372036854775808"]
    {
        assert_eq!(parse_i64(bad), None, "{bad:?}");
    }
    assert_eq!(parse_i64(b"-9223372036854775809"), None);
    assert_eq!(parse_i64(b"123456789012345678901"), None);
}

// ---- resolve and error texts ----

#[test]
fn resolve_subcommands() {
    let v = a(&["object", "EnCoDiNg", "k"]);
    let object = spec("object");
    assert_eq!(object.resolve(&v).map(|s| s.name), Ok("object|encoding"));
    assert_eq!(object.resolve(&a(&["OBJECT"])).map(|s| s.name), Ok("object"));
    assert_eq!(spec("get").resolve(&a(&["GET", "k"])).map(|s| s.name), Ok("get"));
    assert_eq!(spec("command").resolve(&a(&["COMMAND"])).map(|s| s.name), Ok("command"));
    assert_eq!(
        spec("config").resolve(&a(&["config", "GET", "x"])).map(|s| s.name),
        Ok("config|get")
    );
    assert_eq!(
        spec("client").resolve(&a(&["client", "no-evict", "on"])).map(|s| s.name),
        Ok("client|no-evict")
    );
    // DEBUG has no subcommands in 7.0: its argument is not looked up.
    assert_eq!(spec("debug").resolve(&a(&["DEBUG", "foo"])).map(|s| s.name), Ok("debug"));
    for c in commands() {
        for s in c.subcommands {
            let sub = String::from_utf8_lossy(s.sub_name()).to_ascii_uppercase();
            assert_eq!(c.resolve(&a(&[c.name, &sub])).map(|r| r.name), Ok(s.name));
        }
    }
}

#[test]
fn unknown_subcommand_texts() {
    let err = |args: &[&str]| spec(args[0]).resolve(&a(args)).map(|s| s.name).unwrap_err();
    assert_eq!(err(&["object", "foo"]), "ERR unknown subcommand 'foo'. Try OBJECT HELP.");
    assert_eq!(err(&["client", "foo"]), "ERR unknown subcommand 'foo'. Try CLIENT HELP.");
    assert_eq!(err(&["xinfo", "foo", "x"]), "ERR unknown subcommand 'foo'. Try XINFO HELP.");
    assert_eq!(err(&["command", "foo"]), "ERR unknown subcommand 'foo'. Try COMMAND HELP.");
    let long = "q".repeat(200);
    assert_eq!(
        err(&["object", &long]),
        format!("ERR unknown subcommand '{}'. Try OBJECT HELP.", "q".repeat(128))
    );
    assert_eq!(err(&["object", "a\r\nb"]), "ERR unknown subcommand 'a  b'. Try OBJECT HELP.");
}

#[test]
fn unknown_command_texts() {
    let e = |args: &[&str]| unknown_command_error(&a(args));
    assert_eq!(
        e(&["foo", "a", "b"]),
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(e(&["foo"]), "ERR unknown command 'foo', with args beginning with: ");
    assert_eq!(
        e(&["foo", "a\r\nb", ""]),
        "ERR unknown command 'foo', with args beginning with: 'a  b' '' "
    );
    assert_eq!(e(&["fo\no", "a"]), "ERR unknown command 'fo o', with args beginning with: 'a' ");
    let y100 = "y".repeat(100);
    let z100 = "z".repeat(100);
    assert_eq!(
        e(&["foo", &y100, &z100, "c"]),
        format!(
            "ERR unknown command 'foo', with args beginning with: '{y100}' '{}' ",
            "z".repeat(25)
        )
    );
    let y123 = "y".repeat(123);
    assert_eq!(
        e(&["foo", &y123, &z100, "c"]),
        format!("ERR unknown command 'foo', with args beginning with: '{y123}' 'zz' ")
    );
    let x200 = "x".repeat(200);
    assert_eq!(
        e(&["foo", &x200, "b"]),
        format!("ERR unknown command 'foo', with args beginning with: '{}' ", "x".repeat(128))
    );
    assert_eq!(
        e(&[&"N".repeat(200)]),
        format!("ERR unknown command '{}', with args beginning with: ", "N".repeat(128))
    );
    let letters: Vec<String> = ('a'..='z').map(String::from).collect();
    let mut args = vec!["foo"];
    args.extend(letters.iter().map(String::as_str));
    let quoted: String = letters.iter().map(|l| format!("'{l}' ")).collect();
    assert_eq!(e(&args), format!("ERR unknown command 'foo', with args beginning with: {quoted}"));
    // C's `%s` stops at NUL.
    assert_eq!(e(&["foo", "a\0b"]), "ERR unknown command 'foo', with args beginning with: 'a' ");
}

#[test]
fn arity_error_texts() {
    assert_eq!(arity_error(spec("get")), "ERR wrong number of arguments for 'get' command");
    assert_eq!(
        arity_error(spec("object|encoding")),
        "ERR wrong number of arguments for 'object|encoding' command"
    );
    assert_eq!(
        arity_error(spec("exec")),
        "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command"
    );
}

// ---- route ----

#[test]
fn route_by_group() {
    let t = two_groups();
    let mut scratch = Vec::new();
    let r = |args: &[&str], scratch: &mut Vec<usize>| {
        let v = a(args);
        let s = lookup(&v[0]).expect("known").resolve(&v).expect("known sub");
        route(&t, s, &v, scratch)
    };
    assert_eq!(r(&["GET", "foo"], &mut scratch), Ok(Some(1)));
    assert_eq!(scratch, vec![1]);
    assert_eq!(r(&["GET", "bar"], &mut scratch), Ok(Some(0)));
    // Different slots, same group: fine for keyhop.
    assert_eq!(r(&["RENAME", "bar", "hello"], &mut scratch), Ok(Some(0)));
    assert_eq!(r(&["RENAME", "bar", "foo"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["MSETNX", "bar", "1", "foo", "2"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["MSETNX", "{foo}a", "1", "foo", "2"], &mut scratch), Ok(Some(1)));
    assert_eq!(r(&["EVAL", "s", "0"], &mut scratch), Ok(None));
    assert_eq!(r(&["EVAL", "s", "2", "bar", "hello", "foo"], &mut scratch), Ok(Some(0)));
    assert_eq!(r(&["EVAL", "s", "2", "bar", "foo"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["SORT", "bar", "STORE", "foo"], &mut scratch), Err(RouteError::CrossGroup));
    assert_eq!(r(&["SORT", "bar", "BY", "foo_*"], &mut scratch), Ok(Some(0)));
    assert_eq!(r(&["OBJECT", "ENCODING", "foo"], &mut scratch), Ok(Some(1)));
    assert_eq!(r(&["PING"], &mut scratch), Ok(None));
    assert_eq!(r(&["PUBLISH", "foo", "m"], &mut scratch), Ok(Some(1)));
    assert_eq!(r(&["SPUBLISH", "bar", "m"], &mut scratch), Ok(Some(0)));
    assert!(matches!(r(&["EVAL", "s", "3", "a"], &mut scratch), Err(RouteError::Syntax(_))));
}

// ---- plan_split ----

#[test]
fn split_mget_order() {
    let t = two_groups();
    let v = a(&["MGET", "foo", "bar", "foo", "hello", "{foo}x"]);
    let plan = plan_split(&t, spec("mget"), &v);
    assert_eq!(
        plan.parts,
        vec![SplitPart { group: 1, args: vec![1, 3, 5] }, SplitPart { group: 0, args: vec![2, 4] }]
    );
    assert_eq!(plan.order, vec![(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]);
}

#[test]
fn split_mset_pairs() {
    let t = two_groups();
    let v = a(&["MSET", "bar", "1", "foo", "2", "hello", "3"]);
    let plan = plan_split(&t, spec("mset"), &v);
    assert_eq!(
        plan.parts,
        vec![
            SplitPart { group: 0, args: vec![1, 2, 5, 6] },
            SplitPart { group: 1, args: vec![3, 4] }
        ]
    );
    assert_eq!(plan.order, vec![(0, 0), (1, 0), (0, 1)]);
    // A trailing key without value (keys() refuses it first) is carried alone.
    let v = a(&["MSET", "bar", "1", "foo"]);
    let plan = plan_split(&t, spec("mset"), &v);
    assert_eq!(plan.parts[1].args, vec![3]);
}

#[test]
fn split_single_group() {
    let t = two_groups();
    for name in ["del", "unlink", "exists", "touch"] {
        let v = a(&[name, "bar", "hello"]);
        let plan = plan_split(&t, spec(name), &v);
        assert_eq!(plan.parts, vec![SplitPart { group: 0, args: vec![1, 2] }], "{name}");
        assert_eq!(plan.order, vec![(0, 0), (0, 1)]);
    }
}

proptest::proptest! {
    #[test]
    fn split_plan_properties(
        keys in proptest::collection::vec("[a-z{}]{0,6}", 1..80),
        groups in 1usize..24,
        mset in proptest::bool::ANY,
    ) {
        let names: Vec<Group> = (0..groups)
            .map(|i| Group { name: format!("g{i}"), master: "m".into(), replicas: vec![] })
            .collect();
        let t = RoutingTable::new(1, names, &RoutingTable::even_ranges(groups)).expect("valid");
        let step = if mset { 2 } else { 1 };
        let mut args: Vec<Vec<u8>> = vec![if mset { b"MSET".to_vec() } else { b"MGET".to_vec() }];
        for (i, k) in keys.iter().enumerate() {
            args.push(k.as_bytes().to_vec());
            if mset {
                args.push(format!("v{i}").into_bytes());
            }
        }
        let s = spec(if mset { "mset" } else { "mget" });
        let plan = plan_split(&t, s, &args);
        proptest::prop_assert_eq!(plan.order.len(), keys.len());
        // Every argument (name excluded) lands in exactly one part.
        let mut seen = vec![0u32; args.len()];
        for p in &plan.parts {
            proptest::prop_assert!(!p.args.is_empty());
            for &i in &p.args {
                proptest::prop_assert!(i >= 1 && i < args.len());
                seen[i] += 1;
            }
            // The part's group owns every key it carries.
            for &k in p.args.iter().step_by(step) {
                proptest::prop_assert_eq!(t.group_for_key(&args[k]), p.group);
            }
        }
        proptest::prop_assert!(seen[1..].iter().all(|&c| c == 1));
        // Groups are distinct and in order of first appearance.
        let mut firsts: Vec<GroupId> = Vec::new();
        for k in (1..args.len()).step_by(step) {
            let g = t.group_for_key(&args[k]);
            if !firsts.contains(&g) {
                firsts.push(g);
            }
        }
        let groups_in_plan: Vec<GroupId> = plan.parts.iter().map(|p| p.group).collect();
        proptest::prop_assert_eq!(groups_in_plan, firsts);
        // `order` round-trips: following it re-assembles the keys in their original order.
        for (n, &(part, pos)) in plan.order.iter().enumerate() {
            let p = &plan.parts[usize::from(part)];
            let idx = p.args[pos as usize * step];
            proptest::prop_assert_eq!(idx, 1 + n * step);
            if mset {
                proptest::prop_assert_eq!(p.args[pos as usize * step + 1], 2 + n * step);
            }
        }
    }
}

// ---- docs/commands.md ----

fn policy_text(p: Policy) -> String {
    match p {
        Policy::Forward => "forward".into(),
        Policy::AnyGroup => "any group".into(),
        Policy::ByChannel => "by channel".into(),
        Policy::Split(m) => format!("split, merge {m:?}"),
        Policy::AllGroups(m) => format!("all groups, merge {m:?}"),
        Policy::Local(l) => format!("local ({l:?})"),
        Policy::Refused => "refused".into(),
        Policy::NeedsPinning => "pinned".into(),
        Policy::Admin(AdminFanout::Masters) => "admin, all masters".into(),
        Policy::Admin(AdminFanout::MastersAndReplicas) => "admin, all masters and replicas".into(),
        Policy::Admin(AdminFanout::Kill) => "admin, all masters, any kill".into(),
        Policy::Admin(AdminFanout::Debug) => "admin, key's group or all masters".into(),
        Policy::SingleGroup => "single group only".into(),
    }
}

/// The generated part of docs/commands.md: one row per command and subcommand.
fn render_table() -> String {
    let mut out = String::new();
    out.push_str("| Command | Arity | Policy | Notes |\n| --- | --- | --- | --- |\n");
    for s in all_specs() {
        let mut notes = Vec::new();
        if s.flags & flags::MOVABLEKEYS != 0 {
            notes.push("movable keys".to_string());
        }
        if s.keys_proc == KeysProc::Xread {
            notes.push("pinned with BLOCK".to_string());
        }
        if s.flags & flags::BLOCKING != 0 && s.keys_proc != KeysProc::Xread {
            notes.push("blocking".to_string());
        }
        if s.flags & flags::WRITE != 0 {
            notes.push("write".to_string());
        }
        let name = s.name.replace('|', " ").to_ascii_uppercase();
        out.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            s.arity,
            policy_text(s.policy),
            notes.join(", ")
        ));
    }
    out
}

#[test]
fn docs_list_every_command() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/commands.md");
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let marker = "<!-- generated table: KEYHOP_BLESS=1 cargo test -p keyhop-router docs_ -->\n";
    let table = render_table();
    if std::env::var_os("KEYHOP_BLESS").is_some() {
        let head = doc.split(marker).next().unwrap_or_default().to_string();
        std::fs::write(path, format!("{head}{marker}{table}")).expect("write docs/commands.md");
        return;
    }
    let Some((_, generated)) = doc.split_once(marker) else {
        panic!("docs/commands.md lacks the generated-table marker; run KEYHOP_BLESS=1")
    };
    assert_eq!(
        generated, table,
        "docs/commands.md is stale: KEYHOP_BLESS=1 cargo test -p keyhop-router docs_"
    );
}
