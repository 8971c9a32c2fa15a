//! The policy overlay: every command has one policy, and the policies agree with the key specs.

use super::*;

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
