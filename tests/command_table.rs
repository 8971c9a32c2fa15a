//! The command table against a live redis-server: every command and subcommand `COMMAND` lists
//! (arity, flags, legacy key positions, key specs), keys against `COMMAND GETKEYS`, and error
//! texts against the server's own replies.

mod common;
#[path = "common/invocations.rs"]
mod invocations;

use common::{Raw, Reply};
use invocations::generated_invocations;
use keyhop_router::command::{
    self, Args, BeginSearch, CommandSpec, FindKeys, RouteError, arity_error, flags, key_flags,
    lookup, lookup_full, unknown_command_error,
};

/// One `COMMAND` entry, decoded.
struct Entry {
    name: String,
    arity: i64,
    flags: Vec<String>,
    first: i64,
    last: i64,
    step: i64,
    key_specs: Vec<Reply>,
    subcommands: Vec<Entry>,
}

fn text(r: &Reply) -> String {
    match r {
        Reply::Status(s) => s.clone(),
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn int(r: &Reply) -> i64 {
    match r {
        Reply::Int(i) => *i,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn items(r: &Reply) -> &[Reply] {
    match r {
        Reply::Array(Some(v)) => v,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A RESP2 flat map (k1 v1 k2 v2 ...) as pairs.
fn map(r: &Reply) -> Vec<(String, &Reply)> {
    items(r).chunks(2).map(|kv| (text(&kv[0]), &kv[1])).collect()
}

fn get<'a>(m: &[(String, &'a Reply)], key: &str) -> &'a Reply {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {key} in map"))
}

fn entry(r: &Reply) -> Entry {
    let f = items(r);
    assert!(f.len() >= 10, "7.0 COMMAND entries have 10 fields: {r:?}");
    Entry {
        name: text(&f[0]),
        arity: int(&f[1]),
        flags: items(&f[2]).iter().map(text).collect(),
        first: int(&f[3]),
        last: int(&f[4]),
        step: int(&f[5]),
        key_specs: items(&f[8]).to_vec(),
        subcommands: items(&f[9]).iter().map(entry).collect(),
    }
}

fn flag_bit(name: &str) -> u32 {
    match name {
        "write" => flags::WRITE,
        "readonly" => flags::READONLY,
        "admin" => flags::ADMIN,
        "pubsub" => flags::PUBSUB,
        "blocking" => flags::BLOCKING,
        "movablekeys" => flags::MOVABLEKEYS,
        "fast" => flags::FAST,
        "denyoom" => flags::DENYOOM,
        "noscript" => flags::NOSCRIPT,
        "loading" => flags::LOADING,
        "stale" => flags::STALE,
        "no_auth" => flags::NO_AUTH,
        "skip_monitor" => flags::SKIP_MONITOR,
        "skip_slowlog" => flags::SKIP_SLOWLOG,
        "asking" => flags::ASKING,
        "no_multi" => flags::NO_MULTI,
        "no_mandatory_keys" => flags::NO_MANDATORY_KEYS,
        "allow_busy" => flags::ALLOW_BUSY,
        "no_async_loading" => flags::NO_ASYNC_LOADING,
        other => panic!("flag {other} unknown to the test"),
    }
}

fn key_flag_bit(name: &str) -> u32 {
    match name {
        "RO" => key_flags::RO,
        "RW" => key_flags::RW,
        "OW" => key_flags::OW,
        "RM" => key_flags::RM,
        "access" => key_flags::ACCESS,
        "update" => key_flags::UPDATE,
        "insert" => key_flags::INSERT,
        "delete" => key_flags::DELETE,
        "not_key" => key_flags::NOT_KEY,
        "incomplete" => key_flags::INCOMPLETE,
        "variable_flags" => key_flags::VARIABLE_FLAGS,
        other => panic!("key-spec flag {other} unknown to the test"),
    }
}

fn server_commands(raw: &mut Raw) -> Vec<Entry> {
    items(&raw.call(&["COMMAND"])).iter().map(entry).collect()
}

fn check_entry(e: &Entry, spec: &CommandSpec) {
    let n = &e.name;
    assert_eq!(i64::from(spec.arity), e.arity, "{n}: arity");
    let want = e.flags.iter().fold(0, |acc, f| acc | flag_bit(f));
    assert_eq!(spec.flags, want, "{n}: flags {:?}", e.flags);
    for (bit, f) in [
        (flags::WRITE, "write"),
        (flags::READONLY, "readonly"),
        (flags::MOVABLEKEYS, "movablekeys"),
        (flags::BLOCKING, "blocking"),
    ] {
        assert_eq!(spec.flags & bit != 0, e.flags.iter().any(|x| x == f), "{n}: {f}");
    }
    assert_eq!(spec.is_write(), e.flags.iter().any(|x| x == "write"), "{n}: is_write");
    assert_eq!(
        (i64::from(spec.first_key), i64::from(spec.last_key), i64::from(spec.key_step)),
        (e.first, e.last, e.step),
        "{n}: first/last/step"
    );
    assert_eq!(spec.key_specs.len(), e.key_specs.len(), "{n}: number of key specs");
    for (ks, raw) in spec.key_specs.iter().zip(&e.key_specs) {
        let m = map(raw);
        let kflags = items(get(&m, "flags")).iter().fold(0, |acc, f| acc | key_flag_bit(&text(f)));
        assert_eq!(ks.flags, kflags, "{n}: key-spec flags");
        let bs = map(get(&m, "begin_search"));
        let bspec = match get(&bs, "spec") {
            Reply::Array(Some(v)) if !v.is_empty() => map(get(&bs, "spec")),
            _ => Vec::new(),
        };
        match (text(get(&bs, "type")).as_str(), ks.begin) {
            ("index", BeginSearch::Index(i)) => {
                assert_eq!(i64::from(i), int(get(&bspec, "index")), "{n}: begin index")
            }
            ("keyword", BeginSearch::Keyword { keyword, startfrom }) => {
                assert_eq!(keyword, text(get(&bspec, "keyword")), "{n}: keyword");
                assert_eq!(i64::from(startfrom), int(get(&bspec, "startfrom")), "{n}: startfrom");
            }
            ("unknown", BeginSearch::Unknown) => {}
            (t, b) => panic!("{n}: begin_search {t} vs {b:?}"),
        }
        let fk = map(get(&m, "find_keys"));
        let fspec = match get(&fk, "spec") {
            Reply::Array(Some(v)) if !v.is_empty() => map(get(&fk, "spec")),
            _ => Vec::new(),
        };
        match (text(get(&fk, "type")).as_str(), ks.find) {
            ("range", FindKeys::Range { lastkey, step, limit }) => {
                assert_eq!(i64::from(lastkey), int(get(&fspec, "lastkey")), "{n}: lastkey");
                assert_eq!(i64::from(step), int(get(&fspec, "keystep")), "{n}: keystep");
                assert_eq!(i64::from(limit), int(get(&fspec, "limit")), "{n}: limit");
            }
            ("keynum", FindKeys::Keynum { keynumidx, firstkey, step }) => {
                assert_eq!(i64::from(keynumidx), int(get(&fspec, "keynumidx")), "{n}: keynumidx");
                assert_eq!(i64::from(firstkey), int(get(&fspec, "firstkey")), "{n}: firstkey");
                assert_eq!(i64::from(step), int(get(&fspec, "keystep")), "{n}: keystep");
            }
            ("unknown", FindKeys::Unknown) => {}
            (t, f) => panic!("{n}: find_keys {t} vs {f:?}"),
        }
    }
    assert_eq!(spec.subcommands.len(), e.subcommands.len(), "{n}: number of subcommands");
}

#[test]
fn table_matches_command() {
    let server = common::redis_server(&[]);
    let mut raw = Raw::connect(server.port);
    let entries = server_commands(&mut raw);
    assert_eq!(entries.len(), command::commands().len(), "top-level command count");
    let mut total = 0;
    for e in &entries {
        let spec = lookup(e.name.as_bytes()).unwrap_or_else(|| panic!("{} missing", e.name));
        assert_eq!(spec.name, e.name);
        check_entry(e, spec);
        total += 1;
        for sub in &e.subcommands {
            let s =
                lookup_full(sub.name.as_bytes()).unwrap_or_else(|| panic!("{} missing", sub.name));
            assert_eq!(s.name, sub.name);
            check_entry(sub, s);
            total += 1;
        }
    }
    assert_eq!(total, command::TOTAL_COMMANDS);
    assert_eq!(int(&raw.call(&["COMMAND", "COUNT"])) as usize, entries.len());
}

/// The keys `keys()` finds, as the argument strings.
fn our_keys(args: &[String]) -> Result<Vec<String>, RouteError> {
    let v: Vec<Vec<u8>> = args.iter().map(|s| s.clone().into_bytes()).collect();
    let spec = lookup(&v[0])
        .unwrap_or_else(|| panic!("{} missing", args[0]))
        .resolve(&v)
        .unwrap_or_else(|e| panic!("{args:?}: {}", String::from_utf8_lossy(&e)));
    let mut out = Vec::new();
    spec.keys(&v, &mut out)?;
    Ok(out.iter().map(|&i| String::from_utf8_lossy(v.arg(i)).into_owned()).collect())
}

/// `COMMAND GETKEYS args...`: `Ok(keys)`, or `Err(message)`.
fn server_keys(raw: &mut Raw, args: &[String]) -> Result<Vec<String>, String> {
    let mut call: Vec<&str> = vec!["COMMAND", "GETKEYS"];
    call.extend(args.iter().map(String::as_str));
    match raw.call(&call) {
        Reply::Array(Some(v)) => Ok(v.iter().map(text).collect()),
        Reply::Error(e) => Err(e),
        other => panic!("{args:?}: unexpected GETKEYS reply {other:?}"),
    }
}

/// Compares keys() with GETKEYS for one invocation; returns whether GETKEYS found keys.
fn compare_keys(raw: &mut Raw, args: &[String]) -> bool {
    let theirs = server_keys(raw, args);
    let ours = our_keys(args);
    // GETKEYS does not check what the command itself refuses before touching a key; keys() does
    // (checked against the server's replies in `syntax_errors_match_the_server`).
    let odd_pairs = ["mset", "msetnx"].contains(&args[0].as_str()) && args.len().is_multiple_of(2);
    if odd_pairs {
        assert!(matches!(ours, Err(RouteError::Syntax(_))), "{args:?}: {ours:?}");
        return theirs.is_ok_and(|k| !k.is_empty());
    }
    match theirs {
        Ok(keys) => {
            assert_eq!(ours, Ok(keys.clone()), "keys of {args:?}");
            !keys.is_empty()
        }
        Err(e) if e.contains("has no key arguments") => {
            assert_eq!(ours, Ok(vec![]), "{args:?}: the server says it has no keys");
            false
        }
        Err(e) => {
            // Arguments GETKEYS cannot make sense of: keyhop must not route them to a group.
            match ours {
                Err(RouteError::Syntax(_)) => {}
                Ok(k) if k.is_empty() => {}
                // PFMERGE dest without sources runs on Redis; GETKEYS's range check refuses it.
                Ok(k) if args[0] == "pfmerge" && args.len() == 2 && k == [args[1].clone()] => {}
                other => panic!("{args:?}: server says {e}, keys() gives {other:?}"),
            }
            false
        }
    }
}

fn s(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Valid invocations of movable-key and keyword commands that arity alone cannot produce.
const SAMPLES: &[&[&str]] = &[
    &["EVAL", "return 1", "2", "k1", "k2", "x"],
    &["EVAL", "return 1", "0", "x"],
    &["EVAL_RO", "return 1", "1", "k1"],
    &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "2", "k1", "k2"],
    &["EVALSHA_RO", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "1", "k1", "x"],
    &["FCALL", "f", "2", "k1", "k2", "x"],
    &["FCALL_RO", "f", "1", "k1"],
    &["FCALL", "f", "0"],
    &["ZUNIONSTORE", "d", "2", "k1", "k2", "WEIGHTS", "1", "2"],
    &["ZINTERSTORE", "d", "1", "k1", "AGGREGATE", "MAX"],
    &["ZDIFFSTORE", "d", "2", "k1", "k2"],
    &["ZUNION", "2", "k1", "k2", "WITHSCORES"],
    &["ZINTER", "3", "k1", "k2", "k3"],
    &["ZDIFF", "1", "k1"],
    &["ZINTERCARD", "2", "k1", "k2", "LIMIT", "1"],
    &["SINTERCARD", "2", "k1", "k2", "LIMIT", "3"],
    &["LMPOP", "2", "k1", "k2", "LEFT", "COUNT", "2"],
    &["BLMPOP", "0", "2", "k1", "k2", "RIGHT"],
    &["ZMPOP", "1", "k1", "MIN"],
    &["BZMPOP", "0.5", "2", "k1", "k2", "MAX", "COUNT", "3"],
    &["XREAD", "COUNT", "1", "STREAMS", "k1", "k2", "0", "0"],
    &["XREAD", "BLOCK", "0", "STREAMS", "k1", "$"],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "k1", ">"],
    &["XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "NOACK", "STREAMS", "k1", "k2", ">", ">"],
    &["SORT", "k1"],
    &["SORT", "k1", "BY", "w_*", "GET", "#", "GET", "o_*", "STORE", "d"],
    &["SORT", "k1", "LIMIT", "0", "5", "ALPHA", "DESC", "STORE", "d"],
    &["SORT", "k1", "STORE", "d1", "STORE", "d2"],
    &["SORT_RO", "k1", "BY", "w_*", "GET", "o_*"],
    &["GEORADIUS", "k1", "0", "0", "1", "m"],
    &["GEORADIUS", "k1", "0", "0", "1", "m", "STORE", "d"],
    &["GEORADIUS", "k1", "0", "0", "1", "m", "COUNT", "3", "STOREDIST", "d"],
    &["GEORADIUS", "k1", "0", "0", "1", "m", "STORE", "d", "STOREDIST", "e"],
    &["GEORADIUSBYMEMBER", "k1", "m", "1", "km", "STORE", "d"],
    &["GEORADIUS_RO", "k1", "0", "0", "1", "m", "WITHDIST"],
    &["MIGRATE", "h", "1", "k1", "0", "5000"],
    &["MIGRATE", "h", "1", "k1", "0", "5000", "COPY", "REPLACE"],
    &["MIGRATE", "h", "1", "", "0", "5000", "KEYS", "k1", "k2"],
    &["MIGRATE", "h", "1", "", "0", "5000", "COPY", "AUTH", "pw", "KEYS", "k1"],
    &["MIGRATE", "h", "1", "", "0", "5000", "AUTH2", "u", "p", "KEYS", "k1", "k2"],
    &["LCS", "k1", "k2", "IDX", "MINMATCHLEN", "2"],
    &["MSET", "k1", "v", "k2", "v", "k3", "v"],
    &["MSETNX", "k1", "v", "k2", "v"],
    &["BITOP", "AND", "d", "k1", "k2"],
    &["SET", "k1", "v", "GET"],
    &["BITFIELD", "k1", "GET", "u4", "0"],
    &["GEOSEARCHSTORE", "d", "k1", "FROMLONLAT", "0", "0", "BYRADIUS", "1", "m", "STOREDIST"],
    &["OBJECT", "ENCODING", "k1"],
    &["MEMORY", "USAGE", "k1", "SAMPLES", "0"],
    &["XINFO", "STREAM", "k1", "FULL", "COUNT", "5"],
    &["XGROUP", "CREATE", "k1", "g", "$", "MKSTREAM"],
    &["SPUBLISH", "ch", "m"],
    &["WATCH", "k1", "k2"],
];

#[test]
fn keys_match_getkeys() {
    let server = common::redis_server(&[]);
    let mut raw = Raw::connect(server.port);
    let mut checked = 0;
    let mut with_keys = 0;
    let mut keyed_commands = 0;
    for c in command::commands() {
        for spec in std::iter::once(c).chain(c.subcommands.iter()) {
            if spec.key_specs.is_empty() {
                continue;
            }
            keyed_commands += 1;
            if spec.flags & flags::MOVABLEKEYS != 0 {
                continue; // covered by SAMPLES
            }
            let mut found = false;
            for args in generated_invocations(spec) {
                found |= compare_keys(&mut raw, &args);
                checked += 1;
            }
            let not_key = spec.key_specs.iter().all(|k| k.flags & key_flags::NOT_KEY != 0);
            assert!(found || not_key, "{}: no generated invocation had keys", spec.name);
            with_keys += usize::from(found);
        }
    }
    for args in SAMPLES {
        let found = compare_keys(&mut raw, &s(args));
        // SPUBLISH's channel is not a key; scripts may declare no keys.
        let script = args[0].starts_with("EVAL") || args[0].starts_with("FCALL");
        let keyless = args[0] == "SPUBLISH" || (script && args[2] == "0");
        assert_eq!(found, !keyless, "{args:?}");
        checked += 1;
    }
    // Every movable-key command has at least one sample.
    for c in command::commands() {
        if c.flags & flags::MOVABLEKEYS != 0 {
            assert!(
                SAMPLES.iter().any(|a| a[0].eq_ignore_ascii_case(c.name)),
                "{} needs a sample invocation",
                c.name
            );
        }
    }
    assert!(keyed_commands > 150, "only {keyed_commands} keyed commands");
    assert!(with_keys > 130, "only {with_keys} commands compared with keys");
    assert!(checked > 300, "only {checked} invocations compared");
}

/// Malformed movable-key invocations: keyhop must answer exactly what the server answers.
const MALFORMED: &[&[&str]] = &[
    &["EVAL", "return 1", "5", "a"],
    &["EVAL", "return 1", "-1", "a"],
    &["EVAL", "return 1", "x", "a"],
    &["EVAL", "return 1", "99999999999999999999"],
    &["EVAL_RO", "return 1", "2", "a"],
    &["EVALSHA", "SHA", "3", "a"],
    &["EVALSHA", "SHA", "-2", "a"],
    &["EVALSHA_RO", "SHA", "nope"],
    &["FCALL", "f", "5", "a"],
    &["FCALL", "f", "-1", "a"],
    &["FCALL", "f", "x", "a"],
    &["FCALL_RO", "g", "2", "a"],
    &["ZUNIONSTORE", "d", "5", "a"],
    &["ZUNIONSTORE", "d", "0", "a"],
    &["ZINTERSTORE", "d", "-3", "a"],
    &["ZDIFFSTORE", "d", "x", "a"],
    &["ZUNION", "3", "a", "b"],
    &["ZINTER", "0", "a"],
    &["ZDIFF", "1x", "a"],
    &["ZINTERCARD", "4", "a"],
    &["ZINTERCARD", "0", "a"],
    &["SINTERCARD", "5", "a"],
    &["SINTERCARD", "0", "a"],
    &["SINTERCARD", "x", "a"],
    &["LMPOP", "5", "a", "LEFT"],
    &["LMPOP", "2", "a", "b"],
    &["LMPOP", "0", "a", "LEFT"],
    &["LMPOP", "x", "a", "LEFT"],
    &["ZMPOP", "3", "a", "MIN"],
    &["ZMPOP", "-1", "a", "MIN"],
    &["BLMPOP", "0.01", "4", "a", "LEFT"],
    &["BLMPOP", "0.01", "0", "a", "LEFT"],
    &["BZMPOP", "0.01", "2", "a", "MIN"],
    &["BZMPOP", "0.01", "x", "a", "MIN"],
    &["XREAD", "STREAMS", "a", "b", "0"],
    &["XREAD", "COUNT", "1", "a", "b"],
    &["XREAD", "COUNT", "1", "STREAMS"],
    &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "a", "b", ">"],
    &["MSET", "a", "1", "b"],
    &["MSETNX", "a", "1", "b"],
];

#[test]
fn syntax_errors_match_the_server() {
    let server = common::redis_server(&[]);
    let mut raw = Raw::connect(server.port);
    let sha = text(&raw.call(&["SCRIPT", "LOAD", "return 1"]));
    let lib = "#!lua name=lib\n\
               redis.register_function('f', function(k, a) return 1 end)\n\
               redis.register_function{function_name='g', callback=function(k, a) return 1 end, flags={'no-writes'}}";
    assert_eq!(text(&raw.call(&["FUNCTION", "LOAD", lib])), "lib");
    for args in MALFORMED {
        let args: Vec<&str> =
            args.iter().map(|a| if *a == "SHA" { sha.as_str() } else { *a }).collect();
        let theirs = match raw.call(&args) {
            Reply::Error(e) => e,
            other => panic!("{args:?}: the server accepted it: {other:?}"),
        };
        let ours = our_keys(&s(&args));
        assert_eq!(ours, Err(RouteError::Syntax(theirs)), "{args:?}");
    }
}

#[test]
fn error_texts_match_the_server() {
    let server = common::redis_server(&[]);
    let mut raw = Raw::connect(server.port);
    let mut arity_checked = 0;
    for c in command::commands() {
        for spec in std::iter::once(c).chain(c.subcommands.iter()) {
            // An argument count that violates the arity: the server refuses before running it.
            let words: Vec<&str> = spec.name.split('|').collect();
            let n = match spec.arity {
                a if a > 0 => a as usize + 1,
                a if (-a) as usize > words.len() => (-a) as usize - 1,
                _ => continue,
            };
            if n < words.len() {
                continue;
            }
            let mut args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            args.extend((args.len()..n).map(|i| format!("x{i}")));
            let call: Vec<&str> = args.iter().map(String::as_str).collect();
            let v: Vec<Vec<u8>> = args.iter().map(|a| a.clone().into_bytes()).collect();
            let resolved = lookup(&v[0]).and_then(|s| s.resolve(&v).ok()).map(|s| s.name);
            assert_eq!(resolved, Some(spec.name), "{args:?} resolves");
            assert!(!spec.arity_ok(n), "{args:?} violates the arity");
            match raw.call(&call) {
                Reply::Error(e) => assert_eq!(e, arity_error(spec), "{args:?}"),
                other => panic!("{args:?}: expected an arity error, got {other:?}"),
            }
            arity_checked += 1;
        }
    }
    assert!(arity_checked > 250, "only {arity_checked} arity errors checked");

    // Unknown subcommands of every container.
    for c in command::commands().iter().filter(|c| !c.subcommands.is_empty()) {
        for sub in ["nosuch", "A\r\nB", &"q".repeat(150)] {
            let args = [c.name, sub];
            let theirs = match raw.call(&args) {
                Reply::Error(e) => e,
                other => panic!("{args:?}: {other:?}"),
            };
            let v: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
            assert_eq!(c.resolve(&v).map(|s| s.name), Err(theirs.into_bytes()), "{args:?}");
        }
    }

    // Unknown commands, with the quoting and truncation rules.
    let long = |c: char, n: usize| c.to_string().repeat(n);
    let cases: Vec<Vec<String>> = vec![
        s(&["foo"]),
        s(&["foo", "a", "b"]),
        s(&["FOO", "a\r\nb", ""]),
        s(&["fo\no", "a"]),
        vec!["foo".into(), long('y', 100), long('z', 100), "c".into()],
        vec!["foo".into(), long('y', 123), long('z', 100), "c".into()],
        vec!["foo".into(), long('y', 126), "abc".into()],
        vec!["foo".into(), long('y', 127), "abc".into()],
        vec!["foo".into(), long('x', 300)],
        vec![long('N', 200), "a".into()],
        (0..40).map(|i| format!("a{i}")).collect(),
        s(&["foo", "a\0b", "c"]),
    ];
    for args in cases {
        let call: Vec<&str> = args.iter().map(String::as_str).collect();
        let theirs = match raw.call(&call) {
            Reply::Error(e) => e,
            other => panic!("{args:?}: {other:?}"),
        };
        assert_eq!(unknown_command_error(&args_bytes(&args)), theirs, "{args:?}");
    }
}

fn args_bytes(args: &[String]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.clone().into_bytes()).collect()
}
