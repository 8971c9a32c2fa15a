//! Issue 14's migration benchmark: how fast `keyhop slots migrate` moves a million small keys
//! to a new group on vanilla Redis (MIGRATE ... KEYS), and what it does to GET latency through
//! keyhop while it runs (goal: p99 during at most 2x p99 before).
//!
//! ```sh
//! cargo bench --bench migrate                      # every setting, 2,000,000 keys preloaded
//! cargo bench --bench migrate -- --quick           # smoke run: 200,000 keys, default setting
//! cargo bench --bench migrate -- --only batch-256  # one setting (or several, comma-separated)
//! cargo bench --bench migrate -- --help
//! ```
//!
//! Each setting gets a fresh fleet (etcd, g1 = 0-8191, g2 = 8192-16383, g3 added empty, one
//! keyhop instance), started with the integration tests' harness so there is one copy of the
//! process and RESP helpers. A run whose migration did not end with every moved key on g3 and
//! none left behind, or where a GET failed, is reported as failed: a benchmark that silently
//! measures a broken run is worthless.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "migrate/getload.rs"]
mod getload;
#[path = "migrate/report.rs"]
mod report;
#[path = "load/stats.rs"]
#[allow(dead_code)]
mod stats;

use std::time::{Duration, Instant};

use keyhop_router::key_slot;

use common::fleet::{Rig, all_keys};
use common::{Raw, Reply, encode};
use getload::{BEFORE, DURING, Load, value_of};
use report::{Phase, Row};

/// The slots moved: a quarter of the key space from each of g1 and g2.
const MOVE: &str = "0-4095,8192-12287";
/// The settings compared, by name, with the `slots migrate` flags each adds to the defaults.
const VARIANTS: &[(&str, &[&str])] = &[
    ("default", &[]),
    ("kps-10000", &["--keys-per-second", "10000"]),
    ("batch-16", &["--batch", "16"]),
    ("batch-256", &["--batch", "256"]),
    ("window-1024", &["--window", "1024"]),
    ("window-128", &["--window", "128"]),
];
/// The migration is killed (and the run failed) after this long.
const MIGRATE_BOUND: Duration = Duration::from_secs(3600);

const USAGE: &str = "\
usage: cargo bench --bench migrate [-- OPTIONS]

  --quick          smoke run: 200,000 keys, the default setting only, 5 s before the migration
  --only NAMES     run these settings, comma-separated: default, kps-10000, batch-16,
                   batch-256, window-1024, window-128
  --keys N         keys preloaded (default 2,000,000; half of them move)
  --clients N      GET client connections (default 50)
  --before-secs N  seconds of GET load measured before the migration (default 10)
  --out PATH       where the markdown table goes (default target/migrate-bench.md; - = nowhere)
";

struct Opts {
    keys: u64,
    clients: usize,
    before: Duration,
    variants: Vec<(&'static str, &'static [&'static str])>,
    out: Option<String>,
    quick: bool,
}

fn moved_slot(slot: u16) -> bool {
    slot <= 4095 || (8192..=12287).contains(&slot)
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        keys: 2_000_000,
        clients: 50,
        before: Duration::from_secs(10),
        variants: VARIANTS.to_vec(),
        out: Some(format!("{}/target/migrate-bench.md", env!("CARGO_MANIFEST_DIR"))),
        quick: false,
    };
    let (mut keys, mut before, mut only) = (None, None, None);
    // cargo passes `--bench` to every bench target; it means nothing here.
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value\n{USAGE}"));
        let number = |name: &str, v: String| {
            v.replace([',', '_'], "")
                .parse::<u64>()
                .map_err(|_| format!("{name} {v:?}: not a number"))
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--only" => only = Some(value("--only")?),
            "--keys" => keys = Some(number("--keys", value("--keys")?)?),
            "--clients" => o.clients = number("--clients", value("--clients")?)? as usize,
            "--before-secs" => before = Some(number("--before-secs", value("--before-secs")?)?),
            "--out" => o.out = Some(value("--out")?).filter(|p| p != "-"),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.quick {
        o.keys = 200_000;
        o.before = Duration::from_secs(5);
        o.variants.truncate(1);
    }
    o.keys = keys.unwrap_or(o.keys);
    o.before = before.map_or(o.before, Duration::from_secs);
    if let Some(names) = only {
        o.variants.clear();
        for name in names.split(',').map(str::trim) {
            let v = VARIANTS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                let names: Vec<&str> = VARIANTS.iter().map(|(n, _)| *n).collect();
                format!("--only {name:?}: no such setting; pick from {}", names.join(", "))
            })?;
            o.variants.push(*v);
        }
    }
    if o.keys == 0 || o.clients == 0 {
        return Err("--keys and --clients must be above 0".into());
    }
    Ok(o)
}

fn run() -> Result<bool, String> {
    let o = parse_opts()?;
    let load_start = report::loadavg();
    eprintln!(
        "NOTE: {} CPU(s) shared by etcd, 3 redis-servers, keyhop, the mover and {} GET clients; \
         load average {load_start} at start. Absolute numbers are low on a small machine.",
        report::cpus(),
        o.clients
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (name, flags) in &o.variants {
        eprintln!("== {name}: {} keys, slots {MOVE} to g3 {}", o.keys, flags.join(" "));
        match run_variant(&o, name, flags) {
            Ok(row) => {
                eprintln!("{}", report::row_summary(&row));
                rows.push(row);
            }
            Err(e) => {
                eprintln!("FAILED {name}: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    let run = report::Run {
        keys: o.keys,
        clients: o.clients,
        before: o.before,
        quick: o.quick,
        load_start: &load_start,
        wall: started.elapsed(),
    };
    let md = report::markdown(&rows, &failures, &run);
    println!("{md}");
    if let Some(path) = &o.out {
        std::fs::write(path, &md).map_err(|e| format!("write {path}: {e}"))?;
        eprintln!("wrote {path}");
    }
    Ok(failures.is_empty())
}

/// Exactly how many preloaded keys stay on, and move from, g1 (index 0) and g2 (index 1).
struct Counts {
    keep: [u64; 2],
    moved: [u64; 2],
}

fn count(keys: u64) -> Counts {
    let mut c = Counts { keep: [0, 0], moved: [0, 0] };
    for n in 0..keys {
        let slot = key_slot(format!("k:{n}").as_bytes());
        let g = usize::from(slot >= 8192);
        if moved_slot(slot) {
            c.moved[g] += 1;
        } else {
            c.keep[g] += 1;
        }
    }
    c
}

/// One fresh fleet, preload, GET load before and during `slots migrate`, and the checks.
fn run_variant(o: &Opts, name: &str, flags: &[&str]) -> Result<Row, String> {
    let mut rig = Rig::start();
    // The instance and the migration run with the fleet's default timings, not the tests' short
    // ones (`Rig::start` used those only to seed the fleet).
    rig.etcd_section =
        format!("[etcd]\nendpoints = [\"{}\"]\nprefix = \"{}\"\n", rig.etcd.endpoint, rig.prefix);
    let ports = [rig.servers[0].port, rig.servers[1].port, rig.servers[2].port];
    let (_instance_dir, instance) = rig.instance("");

    let t = Instant::now();
    preload([ports[0], ports[1]], o.keys)?;
    let want = count(o.keys);
    for (g, &port) in ports[..2].iter().enumerate() {
        let (got, n) = (dbsize(port)?, want.keep[g] + want.moved[g]);
        if got != n {
            return Err(format!("preload: g{} holds {got} keys, expected {n}", g + 1));
        }
    }
    eprintln!("preloaded {} keys in {:.1} s", o.keys, t.elapsed().as_secs_f64());

    let load = Load::start(instance.port, o.clients, o.keys);
    std::thread::sleep(Duration::from_secs(2));
    load.set_phase(BEFORE);
    let t = Instant::now();
    std::thread::sleep(o.before);
    let before_secs = t.elapsed().as_secs_f64();

    load.set_phase(DURING);
    let mut args = vec!["slots", "migrate", "--slots", MOVE, "--to", "g3"];
    args.extend_from_slice(flags);
    let t = Instant::now();
    let mut child = rig.cli_spawn(&args, "migrate");
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t.elapsed() < MIGRATE_BOUND => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let tally = load.finish();
    let log = std::fs::read_to_string(rig.dir.path().join("migrate.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    match status {
        Some(s) if s.success() => {}
        Some(s) => return Err(format!("`keyhop {}` failed ({s}):\n{tail}", args.join(" "))),
        None => {
            return Err(format!(
                "`keyhop {}` still running after {MIGRATE_BOUND:?}:\n{tail}",
                args.join(" ")
            ));
        }
    }
    let tally = tally?;

    // Every moved key is on g3, and nothing else; g1 and g2 kept exactly their other keys.
    let on = [dbsize(ports[0])?, dbsize(ports[1])?, dbsize(ports[2])?];
    let moved = want.moved[0] + want.moved[1];
    let expected = [want.keep[0], want.keep[1], moved];
    if on != expected {
        return Err(format!(
            "after the migration g1/g2/g3 hold {on:?} keys, expected {expected:?}\n{tail}"
        ));
    }
    for (g, &port) in ports[..2].iter().enumerate() {
        let left = all_keys(port).iter().filter(|k| moved_slot(key_slot(k))).count();
        if left > 0 {
            return Err(format!("g{} still holds {left} keys of moved slots", g + 1));
        }
    }
    let errors = tally.errors[0] + tally.errors[1];
    if errors > 0 {
        return Err(format!("{errors} GETs failed, e.g. {:?}", tally.samples));
    }
    let by_mover =
        log.lines().find_map(|l| l.strip_prefix("done: ")?.split(' ').next()?.parse::<u64>().ok());
    Ok(Row {
        name: name.to_string(),
        moved,
        by_mover,
        secs,
        before: Phase::of(&tally.micros[0], before_secs),
        during: Phase::of(&tally.micros[1], secs),
        errors,
        tryagains: tally.tryagains[0] + tally.tryagains[1],
    })
}

fn dbsize(port: u16) -> Result<u64, String> {
    match Raw::connect(port).call(&["DBSIZE"]) {
        Reply::Int(n) => Ok(n as u64),
        other => Err(format!("DBSIZE on {port}: {other:?}")),
    }
}

/// Writes `k:<n>` = [`value_of`]`(n)` for every n < `keys` straight into the server owning its
/// slot (g1 below 8192, g2 above), pipelined MSETs, one thread per server.
fn preload(ports: [u16; 2], keys: u64) -> Result<(), String> {
    const PER_MSET: usize = 100;
    const IN_FLIGHT: usize = 50;
    let workers: Vec<_> = (0..2)
        .map(|g| {
            let port = ports[g];
            std::thread::spawn(move || -> Result<(), String> {
                let mut raw = Raw::connect(port);
                let (mut buf, mut pairs, mut sent) = (Vec::new(), Vec::new(), 0usize);
                let flush = |raw: &mut Raw, buf: &mut Vec<u8>, sent: &mut usize| {
                    raw.send_raw(buf);
                    buf.clear();
                    for _ in 0..*sent {
                        match raw.read() {
                            Reply::Status(s) if s == "OK" => {}
                            other => return Err(format!("MSET on {port}: {other:?}")),
                        }
                    }
                    *sent = 0;
                    Ok(())
                };
                for n in 0..keys {
                    let key = format!("k:{n}");
                    if usize::from(key_slot(key.as_bytes()) >= 8192) != g {
                        continue;
                    }
                    pairs.push((key, value_of(n)));
                    if pairs.len() == PER_MSET {
                        buf.extend_from_slice(&mset(&pairs));
                        pairs.clear();
                        sent += 1;
                        if sent == IN_FLIGHT {
                            flush(&mut raw, &mut buf, &mut sent)?;
                        }
                    }
                }
                if !pairs.is_empty() {
                    buf.extend_from_slice(&mset(&pairs));
                    sent += 1;
                }
                flush(&mut raw, &mut buf, &mut sent)
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a preload thread panicked".to_string())??;
    }
    Ok(())
}

fn mset(pairs: &[(String, String)]) -> Vec<u8> {
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    for (k, v) in pairs {
        args.push(k.as_bytes());
        args.push(v.as_bytes());
    }
    encode(&args)
}
