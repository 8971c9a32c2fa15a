//! The command table: lookup, metadata and arity; the other files test policies, keys,
//! error texts, routing and the generated docs.

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

mod docs;
mod keys;
mod policies;
mod route;
mod texts;
