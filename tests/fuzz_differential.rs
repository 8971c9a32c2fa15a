//! Differential fuzzing (issue 12): the same seeded, random command sequences go to keyhop over
//! two groups and to one redis-server directly, and every reply must match: byte for byte, or as
//! a sorted multiset where Redis's own order is its random hash order (docs/fuzzing.md lists the
//! loose comparisons). The one allowed difference is keyhop's documented CROSSSLOT refusal of a
//! same-group command whose keys span both groups; those commands go to keyhop only and must
//! get exactly that error (and are not sent to Redis, so the two data sets stay equal).
//!
//! CI runs fixed seeds for a fixed number of commands. Locally:
//! `KEYHOP_FUZZ_SECONDS=600 cargo test --test fuzz_differential -- --nocapture` runs new seeds
//! for ten minutes; `KEYHOP_FUZZ_SEED=<seed>` replays one; `KEYHOP_FUZZ_COMMANDS=<n>` sets the
//! commands per seed.

mod common;
#[path = "fuzz/generate.rs"]
mod generate;
#[path = "fuzz/wire.rs"]
mod wire;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TwoGroups, cmd, encode, group_of, tag_of};
use generate::{Cmd, Cmp, Gen, Keys};
use wire::{Val, read_reply, same, show, show_command};

/// keyhop's documented refusal of a same-group command whose keys span groups (README, "Routing
/// and commands").
const CROSSSLOT: &[u8] =
    b"-CROSSSLOT keyhop: keys in request don't hash to the same group (use a {hash tag})\r\n";
const EXECABORT: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";

/// CI's seeds (seed % 4 == 3 runs in RESP3: 3, 7 and 11), and the commands per seed.
const CI_SEEDS: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 11];
const CI_COMMANDS: usize = 5000;
/// Commands per seed when running for a time budget.
const LONG_COMMANDS: usize = 20_000;
/// A bound on CI's run whatever the machine's load (the command counts finish well within it).
const CI_DEADLINE: Duration = Duration::from_secs(240);

/// What a command is checked against.
enum Item {
    /// Sent to both; keyhop's reply must match Redis's under `cmd.cmp`.
    Both(Cmd),
    /// Sent to keyhop only (a CROSSSLOT case); its reply must be exactly `expect`.
    KeyhopOnly(Cmd, &'static [u8]),
}

impl Item {
    fn cmd(&self) -> &Cmd {
        match self {
            Item::Both(c) | Item::KeyhopOnly(c, _) => c,
        }
    }
}

/// Tallies that show the run covered what it claims.
#[derive(Default, Debug)]
struct Tally {
    commands: usize,
    pipelines: usize,
    transactions: usize,
    crossslot: usize,
    loose: usize,
    wrongtype: usize,
    errors: usize,
}

/// Whether keyhop refuses `c` (keys in both groups, not a split command).
fn crosses(c: &Cmd) -> bool {
    let mut groups = c.keys.iter().map(|k| group_of(&String::from_utf8_lossy(k)));
    let Some(first) = groups.next() else { return false };
    !c.cross_ok && groups.any(|g| g != first)
}

fn classify(c: Cmd) -> Item {
    if crosses(&c) { Item::KeyhopOnly(c, CROSSSLOT) } else { Item::Both(c) }
}

fn simple(name: &str, args: &[&[u8]]) -> Cmd {
    let mut all = vec![name.as_bytes().to_vec()];
    all.extend(args.iter().map(|a| a.to_vec()));
    Cmd { args: all, keys: vec![], cross_ok: true, cmp: Cmp::Exact }
}

/// A MULTI block over one group's keys (sometimes behind a WATCH), ending in EXEC or DISCARD;
/// or, about one time in eight, a block that mixes both groups: keyhop refuses it at queue time
/// (README: CROSSSLOT, then EXECABORT), so it goes to keyhop only.
fn transaction(g: &mut Gen, keys: &Keys) -> Vec<Item> {
    if g.rng.chance(12) {
        let (a, b) = (keys.tagged[0][0].clone(), keys.tagged[1][0].clone());
        let (a, b) = if g.rng.chance(50) { (a, b) } else { (b, a) };
        return vec![
            Item::KeyhopOnly(simple("MULTI", &[]), b"+OK\r\n"),
            Item::KeyhopOnly(simple("SET", &[&a, b"1"]), b"+QUEUED\r\n"),
            Item::KeyhopOnly(simple("SET", &[&b, b"2"]), CROSSSLOT),
            Item::KeyhopOnly(simple("EXEC", &[]), EXECABORT),
        ];
    }
    let tag = g.rng.below(2);
    g.only_tag = Some(tag);
    let mut items = Vec::new();
    if g.rng.chance(30) {
        let k = g.key();
        items.push(Item::Both(simple("WATCH", &[&k])));
    }
    items.push(Item::Both(simple("MULTI", &[])));
    let mut cmps = Vec::new();
    for _ in 0..1 + g.rng.below(6) {
        // Whole-keyspace commands, keyhop's own (CLIENT), SCRIPT (every group), SELECT and
        // HELLO are refused inside MULTI (README); not drawn here, nor RESET.
        let c = (0..1000)
            .map(|_| g.command())
            .find(|c| {
                !matches!(
                    c.name().as_str(),
                    "DBSIZE" | "KEYS" | "SELECT" | "CLIENT" | "SCRIPT" | "HELLO" | "RESET"
                )
            })
            .expect("the generator draws other commands too");
        cmps.push(c.cmp.clone());
        let mut queued = c;
        queued.cmp = Cmp::Exact;
        items.push(Item::Both(queued));
    }
    g.only_tag = None;
    if g.rng.chance(10) {
        items.push(Item::Both(simple("DISCARD", &[])));
    } else {
        let mut exec = simple("EXEC", &[]);
        exec.cmp = Cmp::Exec(cmps);
        items.push(Item::Both(exec));
    }
    items
}

/// The bytes that send `args`: mostly a multibulk frame; sometimes (when every argument is a
/// plain word) an inline command as typed in telnet; now and then after a frame that carries no
/// command (`*0`, `*-1`, an empty line), which Redis skips without a reply.
fn wire_form(g: &mut Gen, args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    if g.rng.chance(2) {
        out.extend_from_slice(g.rng.pick(&[&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"  \n"]));
    }
    let plain = |a: &Vec<u8>| {
        !a.is_empty() && a.iter().all(|&b| b.is_ascii_graphic() && !b"\"'\\".contains(&b))
    };
    // Short lines only: an inline line over 64 KB is a protocol error that closes the connection.
    let short = args.iter().map(Vec::len).sum::<usize>() < 1000;
    if short && args.iter().all(plain) && g.rng.chance(5) {
        out.extend_from_slice(&args.join(&b' '));
        out.extend_from_slice(if g.rng.chance(50) { b"\r\n" } else { b"\n" });
    } else {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        out.extend_from_slice(&encode(&refs));
    }
    out
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn connect(port: u16) -> Conn {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("set timeout");
    s.set_nodelay(true).expect("nodelay");
    Conn { reader: BufReader::new(s.try_clone().expect("clone")), writer: s }
}

/// Writes `bytes` while reading `n` replies (a writer thread: keyhop may stop reading a client
/// that does not read its replies, and a pipeline of 100 KB values would then deadlock).
fn exchange(conn: &mut Conn, bytes: &[u8], n: usize) -> Result<Vec<wire::Reply>, String> {
    let Conn { reader, writer } = conn;
    std::thread::scope(|s| {
        let w = s.spawn(move || writer.write_all(bytes));
        let replies = (0..n).map(|_| read_reply(reader)).collect::<std::io::Result<Vec<_>>>();
        let written = w.join().map_err(|_| "writer thread panicked".to_string())?;
        written.map_err(|e| format!("write failed: {e}"))?;
        replies.map_err(|e| format!("read failed: {e}"))
    })
}

struct Run {
    seed: u64,
    resp3: bool,
    commands: usize,
}

impl Run {
    fn reproduce(&self, index: usize) -> String {
        let count = if index >= CI_COMMANDS {
            format!("KEYHOP_FUZZ_COMMANDS={} ", index + 1)
        } else {
            String::new()
        };
        format!(
            "KEYHOP_FUZZ_SEED={} {count}cargo test --test fuzz_differential -- --nocapture",
            self.seed
        )
    }
}

/// Runs one seed: `Ok` with the tallies, or `Err` with the report of the first disagreement.
fn run(t: &TwoGroups, r: &Run, deadline: Instant) -> Result<Tally, String> {
    for server in [&t.g1, &t.g2, &t.direct] {
        assert_eq!(cmd(server.port, &["FLUSHALL"]), "OK", "FLUSHALL on {}", server.name);
        assert_eq!(cmd(server.port, &["SCRIPT", "FLUSH"]), "OK", "SCRIPT FLUSH on {}", server.name);
    }
    let (tag0, tag1) = (tag_of(0), tag_of(1));
    let keys = Keys::new([&tag0, &tag1]);
    assert!(
        keys.plain.iter().any(|k| group_of(&String::from_utf8_lossy(k)) == 0)
            && keys.plain.iter().any(|k| group_of(&String::from_utf8_lossy(k)) == 1),
        "the plain keys must cover both groups"
    );
    let mut g = Gen::new(r.seed, &keys);
    let mut proxy = connect(t.proxy.port);
    let mut direct = connect(t.direct.port);
    let proto = if r.resp3 { "RESP3 at start" } else { "RESP2 at start" };
    if r.resp3 {
        let hello = encode(&[b"HELLO", b"3"]);
        for (name, conn) in [("keyhop", &mut proxy), ("redis", &mut direct)] {
            let reply = exchange(conn, &hello, 1)?;
            assert!(
                matches!(reply[0].val, Val::Agg(b'%', Some(_))),
                "{name} answered HELLO 3 with {}",
                show(&reply[0].raw)
            );
        }
    }
    let mut tally = Tally::default();
    let mut kinds: std::collections::HashMap<String, usize> = Default::default();
    // Every command and both replies, for following a reported seed up to its failure.
    let trace = std::env::var("KEYHOP_FUZZ_TRACE").is_ok();
    while tally.commands < r.commands && Instant::now() < deadline {
        let n = if g.rng.chance(50) { 1 + g.rng.below(5) } else { 1 + g.rng.below(50) };
        let mut items = Vec::new();
        while items.len() < n {
            if g.rng.chance(4) {
                tally.transactions += 1;
                items.extend(transaction(&mut g, &keys));
            } else {
                items.push(classify(g.command()));
            }
        }
        let mut to_proxy = Vec::new();
        let mut to_direct = Vec::new();
        for item in &items {
            let frame = wire_form(&mut g, &item.cmd().args);
            to_proxy.extend_from_slice(&frame);
            if let Item::Both(_) = item {
                to_direct.extend_from_slice(&frame);
            }
        }
        let both = items.iter().filter(|i| matches!(i, Item::Both(_))).count();
        let at = tally.commands;
        let context =
            |e: String| format!("seed {} ({proto}): {e}\nreproduce: {}", r.seed, r.reproduce(at));
        let from_proxy = exchange(&mut proxy, &to_proxy, items.len())
            .map_err(|e| context(format!("keyhop, pipeline #{}: {e}", tally.pipelines)))?;
        let from_direct = exchange(&mut direct, &to_direct, both)
            .map_err(|e| context(format!("redis, pipeline #{}: {e}", tally.pipelines)))?;
        let mut direct_replies = from_direct.iter();
        let paired: Vec<Option<&wire::Reply>> = items
            .iter()
            .map(|i| if let Item::Both(_) = i { direct_replies.next() } else { None })
            .collect();
        for (at, (item, got)) in items.iter().zip(&from_proxy).enumerate() {
            let c = item.cmd();
            let index = tally.commands;
            if trace {
                let redis = paired[at].map_or("(not sent)".to_string(), |r| show(&r.raw));
                eprintln!("#{index} {}\n    {}  |  {redis}", show_command(&c.args), show(&got.raw));
            }
            tally.commands += 1;
            let (ok, want, how) = match (item, paired[at]) {
                (Item::Both(_), Some(want)) => {
                    if c.cmp != Cmp::Exact {
                        tally.loose += 1;
                    }
                    (same(&c.cmp, &got.val, &want.val), want.raw.clone(), format!("{:?}", c.cmp))
                }
                (Item::KeyhopOnly(_, expect), _) => {
                    tally.crossslot += usize::from(*expect == CROSSSLOT);
                    (got.raw == *expect, expect.to_vec(), "keyhop only, documented reply".into())
                }
                (Item::Both(_), None) => unreachable!("one Redis reply per command sent to both"),
            };
            if got.raw.starts_with(b"-") || got.raw.starts_with(b"!") {
                let words: Vec<&str> =
                    std::str::from_utf8(&got.raw[1..]).unwrap_or("?").split(' ').take(4).collect();
                *kinds.entry(format!("{} <- {}", words.join(" "), c.name())).or_default() += 1;
                tally.errors += 1;
                tally.wrongtype += usize::from(got.raw.starts_with(b"-WRONGTYPE"));
            }
            if !ok {
                return Err(format!(
                    "keyhop and Redis disagree: seed {}, {proto}, command #{index} (pipeline #{}, {} commands)\n\
                     \x20 command: {}\n\x20 keyhop:  {}\n\x20 expected: {}\n\x20 compared: {how}\n\
                     \x20 the whole pipeline (keyhop's reply, then Redis's; >> marks this command):\n{}\n\
                     reproduce: {}",
                    r.seed,
                    tally.pipelines,
                    items.len(),
                    show_command(&c.args),
                    show(&got.raw),
                    show(&want),
                    show_pipeline(&items, &from_proxy, &paired, at),
                    r.reproduce(index)
                ));
            }
        }
        tally.pipelines += 1;
        // The data itself, not only the replies: a write that answered alike but did something
        // else (or a refused command that ran anyway) shows here, at the pipeline that did it.
        let keys_cmd = encode(&[b"KEYS", b"*"]);
        let ours = exchange(&mut proxy, &keys_cmd, 1).map_err(context)?;
        let theirs = exchange(&mut direct, &keys_cmd, 1).map_err(context)?;
        if !same(&Cmp::Unordered, &ours[0].val, &theirs[0].val) {
            let commands: Vec<String> =
                items.iter().map(|i| format!("    {}", show_command(&i.cmd().args))).collect();
            return Err(format!(
                "keyhop's and Redis's keys differ after pipeline #{} (seed {}, {proto}, commands up to #{}):\n\
                 \x20 keyhop: {}\n\x20 redis:  {}\n\x20 the pipeline:\n{}\nreproduce: {}",
                tally.pipelines - 1,
                r.seed,
                tally.commands - 1,
                show_keys(&ours[0].val),
                show_keys(&theirs[0].val),
                commands.join("\n"),
                r.reproduce(tally.commands - 1)
            ));
        }
    }
    eprintln!("seed {} ({proto}): {tally:?}", r.seed);
    let mut kinds: Vec<(usize, String)> = kinds.into_iter().map(|(k, n)| (n, k)).collect();
    kinds.sort_unstable_by(|a, b| b.cmp(a));
    for (n, k) in kinds.iter().take(25) {
        eprintln!("  {n:5} {k}");
    }
    Ok(tally)
}

/// Every command of a pipeline with keyhop's and Redis's replies, `mark` flagged.
fn show_pipeline(
    items: &[Item],
    ours: &[wire::Reply],
    theirs: &[Option<&wire::Reply>],
    mark: usize,
) -> String {
    let line = |i: usize| {
        let flag = if i == mark { ">>" } else { "  " };
        let redis = theirs[i].map_or("(not sent)".to_string(), |r| show(&r.raw));
        let cmd = show_command(&items[i].cmd().args);
        format!("  {flag} {cmd}\n        {}  |  {redis}", show(&ours[i].raw))
    };
    (0..items.len()).map(line).collect::<Vec<_>>().join("\n")
}

/// A KEYS reply as a sorted list.
fn show_keys(v: &Val) -> String {
    let mut keys: Vec<String> = match v {
        Val::Agg(_, Some(items)) => items
            .iter()
            .map(|k| match k {
                Val::Blob(_, Some(b)) => show(b),
                other => format!("{other:?}"),
            })
            .collect(),
        other => vec![format!("{other:?}")],
    };
    keys.sort();
    keys.join(" ")
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn keyhop_answers_like_redis() {
    let t = TwoGroups::start("");
    let seconds = env_u64("KEYHOP_FUZZ_SECONDS");
    let fixed = env_u64("KEYHOP_FUZZ_SEED");
    let per_seed = env_u64("KEYHOP_FUZZ_COMMANDS").map(|n| n as usize);
    let started = Instant::now();
    let deadline = started + seconds.map(Duration::from_secs).unwrap_or(CI_DEADLINE);
    // New seeds for a long local run start from the clock (printed, so any run can be replayed).
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_000)
        .unwrap_or(0);
    let seeds: Box<dyn Iterator<Item = u64>> = match (fixed, seconds) {
        (Some(s), _) => Box::new(std::iter::once(s)),
        (None, Some(_)) => Box::new(clock..),
        (None, None) => Box::new(CI_SEEDS.into_iter()),
    };
    let commands = per_seed.unwrap_or(if seconds.is_some() { LONG_COMMANDS } else { CI_COMMANDS });
    let mut total = Tally::default();
    let mut seeds_run = 0;
    for seed in seeds {
        if Instant::now() >= deadline {
            break;
        }
        let r = Run { seed, resp3: seed % 4 == 3, commands };
        eprintln!(
            "fuzzing seed {seed} ({}), up to {commands} commands",
            if r.resp3 { "RESP3" } else { "RESP2" }
        );
        match run(&t, &r, deadline) {
            Ok(tally) => {
                total.commands += tally.commands;
                total.pipelines += tally.pipelines;
                total.transactions += tally.transactions;
                total.crossslot += tally.crossslot;
                total.loose += tally.loose;
                total.wrongtype += tally.wrongtype;
                total.errors += tally.errors;
                seeds_run += 1;
            }
            Err(report) => panic!("{report}\nkeyhop log:\n{}", tail(&t.log(), 20)),
        }
    }
    eprintln!("{seeds_run} seeds, {:.1} s: {total:?}", started.elapsed().as_secs_f64());
    if fixed.is_none() && seconds.is_none() {
        // CI's seeds are fixed, so these counts are too: a generator that stopped producing a
        // class of commands would make the comparison above vacuous for it.
        assert_eq!(seeds_run, CI_SEEDS.len(), "CI's seeds did not all run before the deadline");
        assert!(total.commands >= CI_SEEDS.len() * CI_COMMANDS, "every seed ran all its commands");
        assert!(total.crossslot > 0 && total.transactions > 0 && total.wrongtype > 0, "{total:?}");
        assert!(total.loose > 0 && total.errors > 0, "{total:?}");
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Found by the fuzzer: keyhop replaced bytes that are not UTF-8 in its unknown-command and
/// unknown-subcommand errors with U+FFFD; Redis echoes them unchanged. Checked on the shared path,
/// inside MULTI and in subscribed mode (each classifies commands itself).
#[test]
fn errors_echo_binary_arguments_like_redis() {
    let t = TwoGroups::start("");
    let cases: [(Vec<u8>, &[u8], usize); 4] = [
        (
            encode(&[b"xyzzy", b"\xf0\x96\xf5\xc3\xb4\x012\xa9\r\n\x00", b"b"]),
            b"-ERR unknown command 'xyzzy', with args beginning with: '\xf0\x96\xf5\xc3\xb4\x012\xa9  ' 'b' \r\n",
            1,
        ),
        (
            encode(&[b"XGROUP", b"x\r\ny\xe9\x00z"]),
            b"-ERR unknown subcommand 'x  y\xe9'. Try XGROUP HELP.\r\n",
            1,
        ),
        (
            [
                encode(&[b"MULTI"]),
                encode(&[b"OBJECT", b"\xff\xfe"]),
                encode(&[b"xyzzy", b"\xff"]),
                encode(&[b"DISCARD"]),
            ]
            .concat(),
            b"+OK\r\n-ERR unknown subcommand '\xff\xfe'. Try OBJECT HELP.\r\n\
              -ERR unknown command 'xyzzy', with args beginning with: '\xff' \r\n+OK\r\n",
            4,
        ),
        (
            [
                encode(&[b"SUBSCRIBE", b"ch"]),
                encode(&[b"OBJECT", b"\xff\xfe"]),
                encode(&[b"xyzzy", b"\xff"]),
                encode(&[b"RESET"]),
            ]
            .concat(),
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n\
              -ERR unknown subcommand '\xff\xfe'. Try OBJECT HELP.\r\n\
              -ERR unknown command 'xyzzy', with args beginning with: '\xff' \r\n+RESET\r\n",
            4,
        ),
    ];
    for (frames, want, n) in cases {
        for (name, port) in [("redis", t.direct.port), ("keyhop", t.proxy.port)] {
            let replies = exchange(&mut connect(port), &frames, n).expect("replies");
            let got: Vec<u8> = replies.iter().flat_map(|r| r.raw.clone()).collect();
            assert_eq!(show(&got), show(want), "{name}");
        }
    }
}
