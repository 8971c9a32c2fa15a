//! The hot path per command: find the frame boundary and argument offsets, look the command up,
//! hash the key to a group. Compared with redis-protocol's decoders on the same bytes, which is
//! why keyhop scans requests by hand (see shared/rust-notes.md).
//!
//! Run: `cargo bench -p keyhop-proxy --bench hot_path`. Every pass is checked to have handled all
//! 10,000 commands before anything is timed; `cargo test -p keyhop-proxy --bench hot_path` runs
//! each variant once, as a check only.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keyhop_proxy::resp::{RequestScanner, Scanned};
use keyhop_router::command;
use keyhop_router::{Args, Group, RoutingTable};

/// [`COMMANDS`] pipelined commands, alternating SET and GET (~72 bytes per SET).
fn pipeline() -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..COMMANDS / 2 {
        let key = format!("key:{i:08}");
        let val = format!("value-{i:026}");
        buf.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{val}\r\n", key.len(), val.len())
                .as_bytes(),
        );
        buf.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    buf
}

struct Frame<'a> {
    buf: &'a [u8],
    ranges: &'a [std::ops::Range<usize>],
}

impl Args for Frame<'_> {
    fn count(&self) -> usize {
        self.ranges.len()
    }
    fn arg(&self, i: usize) -> &[u8] {
        &self.buf[self.ranges[i].clone()]
    }
}

fn table() -> RoutingTable {
    let groups = (0..2)
        .map(|i| Group {
            name: format!("g{i}"),
            master: format!("127.0.0.1:{}", 7001 + i),
            replicas: vec![],
        })
        .collect();
    RoutingTable::new(1, groups, &RoutingTable::even_ranges(2)).expect("valid table")
}

/// Commands in [`pipeline`]: what the throughput and every ns-per-command figure divide by.
const COMMANDS: usize = 10_000;

/// Aborts the benchmark unless one pass handled every command: a loop that stopped early (a scan
/// or decode error, an incomplete frame, a command that didn't route) would otherwise be timed
/// as if it had done all 10,000, and report a figure that is too good. `commands` counts frames
/// handled (and routed, for the routing variants), `consumed` the bytes they covered.
fn verify(bench: &str, commands: usize, consumed: usize, total: usize) {
    assert!(
        commands == COMMANDS && consumed == total,
        "{bench}: processed {commands} of {COMMANDS} commands ({consumed} of {total} bytes); \
         its ns per command would be meaningless"
    );
}

fn bench(c: &mut Criterion) {
    let buf = pipeline().freeze();
    let total = buf.len();
    let table = table();
    let mut g = c.benchmark_group("per_command");
    g.throughput(Throughput::Elements(COMMANDS as u64));

    // Every variant checks its pass inside the timed closure: criterion's warm-up runs it first,
    // so a broken pass aborts before anything is measured, and the check costs one comparison
    // per 10,000 commands.
    g.bench_function("keyhop_scan_only", |b| {
        let mut sc = RequestScanner::default();
        b.iter(|| {
            let (mut off, mut n) = (0, 0);
            while let Ok(Some(Scanned::Command { len })) = sc.scan(&buf[off..]) {
                off += len;
                n += 1;
            }
            verify("keyhop_scan_only", n, off, total);
            black_box(off)
        })
    });

    g.bench_function("keyhop_scan_lookup_route", |b| {
        let mut sc = RequestScanner::default();
        let mut keys = Vec::new();
        b.iter(|| {
            let (mut off, mut routed) = (0, 0);
            let mut acc = 0usize;
            while let Ok(Some(Scanned::Command { len })) = sc.scan(&buf[off..]) {
                let f = Frame { buf: &buf[off..off + len], ranges: &sc.args };
                if let Some(spec) = command::lookup(f.arg(0))
                    && let Ok(Some(group)) = command::route(&table, spec, &f, &mut keys)
                {
                    acc += group as usize;
                    routed += 1;
                }
                off += len;
            }
            verify("keyhop_scan_lookup_route", routed, off, total);
            black_box(acc)
        })
    });

    g.bench_function("keyhop_scan_lookup_route_split_to", |b| {
        let mut sc = RequestScanner::default();
        let mut keys = Vec::new();
        b.iter_batched(
            || BytesMut::from(&buf[..]),
            |mut m| {
                let (mut acc, mut routed, mut consumed) = (0usize, 0, 0);
                while let Ok(Some(Scanned::Command { len })) = sc.scan(&m) {
                    let f = Frame { buf: &m[..len], ranges: &sc.args };
                    if let Some(spec) = command::lookup(f.arg(0))
                        && let Ok(Some(group)) = command::route(&table, spec, &f, &mut keys)
                    {
                        acc += group as usize;
                        routed += 1;
                    }
                    let frame = m.split_to(len).freeze();
                    consumed += frame.len();
                    acc += frame.len();
                }
                verify("keyhop_scan_lookup_route_split_to", routed, consumed, total);
                black_box(acc)
            },
            criterion::BatchSize::LargeInput,
        )
    });

    g.bench_function("redis_protocol_decode_range", |b| {
        b.iter(|| {
            let (mut off, mut n) = (0, 0);
            while let Ok(Some((frame, len))) =
                redis_protocol::resp2::decode::decode_range(&buf[off..])
            {
                black_box(&frame);
                off += len;
                n += 1;
            }
            verify("redis_protocol_decode_range", n, off, total);
            black_box(off)
        })
    });

    g.bench_function("redis_protocol_decode_bytes_mut", |b| {
        b.iter_batched(
            || BytesMut::from(&buf[..]),
            |mut m| {
                let (mut count, mut consumed) = (0, 0);
                while let Ok(Some((frame, len, _))) =
                    redis_protocol::resp2::decode::decode_bytes_mut(&mut m)
                {
                    black_box(&frame);
                    count += 1;
                    consumed += len;
                }
                verify("redis_protocol_decode_bytes_mut", count, consumed, total);
                black_box(count)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
