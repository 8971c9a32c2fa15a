//! The per-command work the proxy does before forwarding: lookup, keys, slots, routing.
//! Run with `cargo bench -p keyhop-router --bench command`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyhop_router::command::{self, Args};
use keyhop_router::{Group, RoutingTable, key_slot};

/// Lookup, key extraction and the slot of every key: what routing a command costs.
fn lookup_keys_slots(args: &[&[u8]], keys: &mut Vec<usize>) -> u32 {
    let Some(spec) = command::lookup(args[0]) else { return u32::MAX };
    let Ok(spec) = spec.resolve(args) else { return u32::MAX };
    if spec.keys(args, keys).is_err() {
        return u32::MAX;
    }
    keys.iter().map(|&i| u32::from(key_slot(args.arg(i)))).sum()
}

fn table(groups: usize) -> RoutingTable {
    let g = (0..groups)
        .map(|i| Group { name: format!("g{i}"), master: "127.0.0.1:1".into(), replicas: vec![] })
        .collect();
    RoutingTable::new(1, g, &RoutingTable::even_ranges(groups)).expect("valid table")
}

fn bench(c: &mut Criterion) {
    let get: &[&[u8]] = &[b"GET", b"user:1000:profile"];
    let set: &[&[u8]] = &[b"SET", b"user:1000:profile", b"some value"];
    let mget: Vec<&[u8]> = vec![
        b"MGET", b"user:1", b"user:2", b"user:3", b"user:4", b"user:5", b"user:6", b"user:7",
        b"user:8", b"user:9", b"user:10",
    ];
    let mut keys = Vec::with_capacity(16);

    // A failing lookup or key extraction returns early and would be timed as a fast success:
    // check each measured path does the whole job once before anything is timed.
    assert!(command::lookup(b"GEORADIUSBYMEMBER_RO").is_some(), "GEORADIUSBYMEMBER_RO not found");
    assert!(command::lookup(b"set").is_some(), "lowercase set not found");
    assert!(command::lookup(b"GETX").is_none(), "the miss case found a command");
    for (name, args, n) in [("GET", get, 1), ("SET", set, 1), ("MGET", &mget[..], 10)] {
        assert_ne!(lookup_keys_slots(args, &mut keys), u32::MAX, "{name}: lookup or keys failed");
        assert_eq!(keys.len(), n, "{name}: {} keys found, expected {n}", keys.len());
    }

    c.bench_function("lookup GET", |b| b.iter(|| command::lookup(black_box(b"GET"))));
    c.bench_function("lookup set", |b| b.iter(|| command::lookup(black_box(b"set"))));
    c.bench_function("lookup GEORADIUSBYMEMBER_RO", |b| {
        b.iter(|| command::lookup(black_box(b"GEORADIUSBYMEMBER_RO")))
    });
    c.bench_function("lookup miss", |b| b.iter(|| command::lookup(black_box(b"GETX"))));
    let get_spec = command::lookup(b"GET").expect("GET is known");
    c.bench_function("keys GET", |b| b.iter(|| get_spec.keys(black_box(get), &mut keys)));
    c.bench_function("key_slot user:1000:profile", |b| {
        b.iter(|| key_slot(black_box(b"user:1000:profile")))
    });
    c.bench_function("lookup+keys+slot GET", |b| {
        b.iter(|| lookup_keys_slots(black_box(get), &mut keys))
    });
    c.bench_function("lookup+keys+slot SET", |b| {
        b.iter(|| lookup_keys_slots(black_box(set), &mut keys))
    });
    c.bench_function("lookup+keys+slot MGET x10", |b| {
        b.iter(|| lookup_keys_slots(black_box(&mget), &mut keys))
    });

    let t = table(4);
    let get_spec = command::lookup(get[0]).expect("GET is known");
    assert!(
        matches!(command::route(&t, get_spec, get, &mut keys), Ok(Some(_))),
        "GET did not route"
    );
    c.bench_function("route GET (4 groups)", |b| {
        b.iter(|| {
            let spec = command::lookup(black_box(get)[0]).expect("GET is known");
            command::route(&t, spec, get, &mut keys)
        })
    });
    let mget_spec = command::lookup(b"MGET").expect("MGET is known");
    c.bench_function("plan_split MGET x10 (4 groups)", |b| {
        b.iter(|| command::plan_split(&t, mget_spec, black_box(&mget[..])))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
