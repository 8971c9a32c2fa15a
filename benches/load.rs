//! Side-by-side load benchmark (issue 5): keyhop vs nutcracker (twemproxy) vs direct Redis,
//! all driven by `redis-benchmark` in alternating rounds so machine noise hits every target alike.
//!
//! ```sh
//! cargo bench --bench load                              # full run, writes docs/benchmarks.md
//! cargo bench --bench load -- --quick                   # ~1 minute smoke run
//! cargo bench --bench load -- --threads 1,2 --rounds 5  # compare keyhop worker-thread counts
//! cargo bench --bench load -- --baseline /tmp/keyhop-old --only "GET c50" --rounds 6 --out -
//!                                                       # A/B one change against an older build
//! cargo bench --bench load -- --help
//! ```
//!
//! Everything it starts (redis-servers, keyhop, nutcracker, redis-benchmark) is killed when the
//! run ends, fails, or is interrupted (Drop guards, a SIGINT/SIGTERM flag polled by every wait,
//! and PR_SET_PDEATHSIG so children die even if this process is killed outright).
//!
//! The modules under `load/` follow the data flow: `opts` (command line), `procs` (starting and
//! reaping processes), `resp` (a small RESP client, MGET key choice), `workloads` (what runs and
//! one measured run), `pinned` (pub/sub and blocking workloads), `stats` (medians, ratios, CSV
//! parsing; unit-tested by tests/load_stats.rs), `report` (docs/benchmarks.md).

use std::fs;
use std::process::Command;
use std::time::Instant;

use keyhop_router::key_slot;

type Res<T> = Result<T, String>;

#[path = "load/opts.rs"]
mod opts;
#[path = "load/pinned.rs"]
mod pinned;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/report.rs"]
mod report;
#[path = "load/resp.rs"]
mod resp;
#[path = "load/stats.rs"]
mod stats;
#[path = "load/workloads.rs"]
mod workloads;

use opts::{manifest_dir, parse_opts};
use procs::{
    Proc, build_keyhop, check_interrupt, find_tool, notice, start_keyhop, start_nutcracker,
    start_redis, sys,
};
use report::{cmd_output, loadavg, report};
use resp::{Conn, Reply, call, mget_keys};
use stats::{Sample, fmt_opt, fmt_rps};
use workloads::{Bench, Group, Kind, Target, clk_tck, idle_test, rows};

const INSTALL_HINT: &str = "apt-get install -y redis-server redis-tools nutcracker";
const SLOTS: u16 = keyhop_router::SLOT_COUNT as u16;

/// samples[row][target][round]
type Samples = Vec<Vec<Vec<Option<Sample>>>>;

fn main() {
    sys::install_signal_flag();
    let code = match run() {
        Ok(()) => 0,
        Err(e) if e == "interrupted" => {
            eprintln!("interrupted; stopped every process this benchmark started");
            130
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    };
    // Everything started lives inside `run`, so its guards have been dropped by now.
    std::process::exit(code);
}

fn run() -> Res<()> {
    let opts = parse_opts()?;

    let redis_bin = find_tool("redis-server", "REDIS_SERVER_BIN")
        .ok_or(format!("redis-server not found; install it with `{INSTALL_HINT}`"))?;
    let rb_bin = find_tool("redis-benchmark", "REDIS_BENCHMARK_BIN")
        .ok_or(format!("redis-benchmark not found; install it with `{INSTALL_HINT}`"))?;
    let mut notes: Vec<String> = Vec::new();
    let nc_bin = if opts.use_nutcracker {
        let b = find_tool("nutcracker", "NUTCRACKER_BIN");
        if b.is_none() {
            notice(
                &mut notes,
                format!("nutcracker not found; it is left out (install it with `{INSTALL_HINT}`)"),
            );
        }
        b
    } else {
        None
    };

    let fd_limit = sys::raise_nofile();
    println!("open-files limit: {fd_limit}");

    // Build keyhop before starting anything, so a long build doesn't sit next to idle servers.
    let keyhop_bin = if !opts.use_keyhop {
        None
    } else if let Some(p) = &opts.keyhop {
        Some(p.clone())
    } else if opts.build {
        match build_keyhop() {
            Ok(p) => Some(p),
            Err(e) if e == "interrupted" => return Err(e),
            Err(e) => {
                notice(&mut notes, format!("{e}; keyhop is left out"));
                None
            }
        }
    } else {
        Some(manifest_dir().join("target/release/keyhop"))
    };

    let started = Instant::now();
    let load_start = loadavg();
    let tmp = tempfile::Builder::new()
        .prefix("keyhop-bench-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let dir = tmp.path();

    let mut procs: Vec<Proc> = Vec::new();
    procs.push(start_redis(&redis_bin, dir, "g1")?);
    procs.push(start_redis(&redis_bin, dir, "g2")?);
    let backends = [procs[0].port, procs[1].port];
    println!("redis-servers on {} and {}", backends[0], backends[1]);

    let mut targets = vec![Target {
        label: "direct".into(),
        kind: Kind::Direct,
        port: procs[0].port,
        pid: procs[0].pid(),
        proc_idx: 0,
        dead: false,
    }];
    let builds = [("keyhop", keyhop_bin.as_ref()), ("baseline", opts.baseline.as_ref())];
    for (name, bin) in builds.into_iter().filter_map(|(n, b)| Some((n, b?))) {
        let variants: Vec<(u32, bool)> = opts
            .threads
            .iter()
            .flat_map(|&t| {
                let with = if opts.metrics { vec![false, true] } else { vec![false] };
                with.into_iter().map(move |m| (t, m))
            })
            .collect();
        for (t, metrics) in variants {
            if let Some(p) = start_keyhop(name, bin, dir, t, metrics, &backends, &mut notes)? {
                let name = if name == "keyhop" { "keyhop" } else { "keyhop baseline" };
                let base = match (opts.threads.len(), t) {
                    (1, _) => name.to_string(),
                    (_, 0) => format!("{name} t=auto"),
                    (_, t) => format!("{name} t={t}"),
                };
                let label = if metrics { format!("{base} +metrics") } else { base };
                println!("{label} on {} (pid {})", p.port, p.pid());
                targets.push(Target {
                    label,
                    kind: Kind::Keyhop,
                    port: p.port,
                    pid: p.pid(),
                    proc_idx: procs.len(),
                    dead: false,
                });
                procs.push(p);
            }
        }
    }
    if let Some(bin) = &nc_bin {
        let p = start_nutcracker(bin, dir, &backends)?;
        println!("nutcracker on {} (pid {})", p.port, p.pid());
        targets.push(Target {
            label: "nutcracker".into(),
            kind: Kind::Nutcracker,
            port: p.port,
            pid: p.pid(),
            proc_idx: procs.len(),
            dead: false,
        });
        procs.push(p);
    }

    // MGET keys: check placement through each proxy and that MGET answers all ten values.
    let nc_port = targets.iter().find(|t| matches!(t.kind, Kind::Nutcracker)).map(|t| t.port);
    let keys = mget_keys(nc_port, backends)?;
    let slots: Vec<String> =
        keys.iter().map(|k| format!("{k}→{}", key_slot(k.as_bytes()))).collect();
    println!("MGET keys (slot): {}", slots.join(" "));
    let value = "v".repeat(64);
    let flush = |port| call(port, &["FLUSHALL"]);
    for t in &targets {
        flush(backends[0])?;
        flush(backends[1])?;
        let mut via = Conn::open(t.port)?;
        for k in &keys {
            match via.call(&["SET", k, &value])? {
                Reply::Status(_) => {}
                Reply::Error(e) => return Err(format!("SET {k} through {} failed: {e}", t.label)),
                other => return Err(format!("SET {k} through {} answered {other:?}", t.label)),
            }
        }
        let mut g2 = Conn::open(backends[1])?;
        let mut on_g2 = 0;
        for k in &keys {
            on_g2 += usize::from(matches!(g2.call(&["EXISTS", k])?, Reply::Int(1)));
        }
        let mut mget = vec!["MGET"];
        mget.extend(keys.iter().map(String::as_str));
        let answered = via.call(&mget)?;
        let full = matches!(&answered, Reply::Array(Some(v)) if v.len() == keys.len()
            && v.iter().all(|b| matches!(b, Reply::Bulk(Some(x)) if x == value.as_bytes())));
        println!("MGET keys through {}: {} on g1, {on_g2} on g2", t.label, keys.len() - on_g2);
        if !matches!(t.kind, Kind::Direct) && (on_g2 == 0 || on_g2 == keys.len()) {
            notice(&mut notes, format!("{} put all ten MGET keys on one server", t.label));
        }
        if !full {
            notice(
                &mut notes,
                format!(
                    "MGET of the ten keys through {} did not return all ten values: {answered:?}",
                    t.label
                ),
            );
        }
    }
    call(backends[0], &["FLUSHALL"])?;
    call(backends[1], &["FLUSHALL"])?;
    for t in &targets {
        let mut via = Conn::open(t.port)?;
        for k in &keys {
            via.call(&["SET", k, &value])?;
        }
    }

    // Idle-connection memory, on fresh processes.
    let mut idle = Vec::new();
    if opts.idle > 0 {
        if fd_limit < opts.idle as u64 + 200 {
            notice(
                &mut notes,
                format!(
                    "idle-connection test skipped: open-files limit {fd_limit} is below {} + 200",
                    opts.idle
                ),
            );
        } else {
            for t in &targets {
                println!("idle test: {} connections to {} ...", opts.idle, t.label);
                let (r, problem) = idle_test(t, opts.idle)?;
                println!(
                    "  {} opened, RSS {} KB → {} KB, {} KB each",
                    r.opened,
                    r.before_kb,
                    r.after_kb,
                    fmt_opt(r.per_conn_kb(), 1)
                );
                if let Some(p) = problem {
                    notice(&mut notes, format!("idle test on {}: {p}", t.label));
                }
                idle.push(r);
            }
        }
    }

    let scale = opts.scale * if opts.quick { 0.1 } else { 1.0 };
    let mut rows = rows(scale, &keys, fd_limit, &mut notes);
    if !opts.only.is_empty() {
        let unknown: Vec<&String> = opts
            .only
            .iter()
            .filter(|w| !rows.iter().any(|r| r.name.eq_ignore_ascii_case(w)))
            .collect();
        if !unknown.is_empty() {
            let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            return Err(format!(
                "--only: no workload named {unknown:?}; the workloads are {names:?}"
            ));
        }
        rows.retain(|r| opts.only.iter().any(|w| r.name.eq_ignore_ascii_case(w)));
    }
    let bench = Bench { bin: &rb_bin, dir, tck: clk_tck() };
    let mut samples: Samples = vec![vec![vec![None; opts.rounds]; targets.len()]; rows.len()];
    let mut seen_errors = std::collections::HashSet::new();
    let mut failed = std::collections::HashSet::new();
    #[allow(clippy::needless_range_loop)] // samples are indexed [row][target][round]
    for round in 0..opts.rounds {
        for (i, row) in rows.iter().enumerate() {
            for step in 0..targets.len() {
                let j = (step + round) % targets.len();
                check_interrupt()?;
                if targets[j].dead
                    || failed.contains(&(i, j))
                    || (!row.group.nutcracker_can() && matches!(targets[j].kind, Kind::Nutcracker))
                {
                    continue;
                }
                if !procs[targets[j].proc_idx].alive() {
                    targets[j].dead = true;
                    let tail = procs[targets[j].proc_idx].log_tail(5).replace('\n', " | ");
                    notice(
                        &mut notes,
                        format!(
                            "{} exited during the run; later runs skip it (log: {tail})",
                            targets[j].label
                        ),
                    );
                    continue;
                }
                let t = &targets[j];
                let result = if row.group == Group::Pinned {
                    let started = Instant::now();
                    pinned::run(&row.args[0], t.port, t.pid, row.requests, bench.tck)
                        .map(|s| (s, None, started.elapsed().as_secs_f64()))
                } else {
                    bench.run(t, row)
                };
                match result {
                    Ok((sample, err, secs)) => {
                        println!(
                            "[round {}/{}] {:<16} {:<14} {:>10} req/s  p50 {} ms  p99 {} ms  cpu {} s/M  ({secs:.1} s)",
                            round + 1,
                            opts.rounds,
                            row.name,
                            t.label,
                            fmt_rps(Some(sample.rps)),
                            fmt_opt(sample.p50, 3),
                            fmt_opt(sample.p99, 3),
                            fmt_opt(sample.cpu_per_m, 2),
                        );
                        if let Some(e) = err
                            && seen_errors.insert((i, j))
                        {
                            let n = format!(
                                "{} through {}: redis-benchmark saw {e:?}",
                                row.name, t.label
                            );
                            notice(&mut notes, n);
                        }
                        samples[i][j][round] = Some(sample);
                    }
                    Err(e) if e == "interrupted" => return Err(e),
                    Err(e) => {
                        // A target that cannot run a workload at all (a baseline build without
                        // RESP3, say) is reported once and skipped in later rounds.
                        failed.insert((i, j));
                        notice(
                            &mut notes,
                            format!(
                                "round {}: {} through {} failed (skipped in later rounds): {e}",
                                round + 1,
                                row.name,
                                t.label
                            ),
                        )
                    }
                }
            }
        }
    }

    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel =
        fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(manifest_dir())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let mut commit = git(&["rev-parse", "--short=12", "HEAD"]);
    if !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit += " (with uncommitted changes)";
    }
    let keyhop_desc = match &keyhop_bin {
        Some(b) if targets.iter().any(|t| matches!(t.kind, Kind::Keyhop)) => {
            format!("{commit}, `{}`, threads {:?} (0 = auto)", b.display(), opts.threads)
        }
        _ => format!("{commit} (not measured)"),
    };
    let versions = vec![
        ("Date".to_string(), cmd_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        ("Machine".to_string(), format!("{nproc} CPUs, {cpu_model}, Linux {kernel}")),
        ("keyhop".to_string(), keyhop_desc),
        (
            "Load average (1/5/15 min)".to_string(),
            format!(
                "{load_start} at start, {} at end (other work on the machine skews results)",
                loadavg()
            ),
        ),
        ("redis-server".to_string(), cmd_output(&redis_bin.to_string_lossy(), &["--version"])),
        ("redis-benchmark".to_string(), cmd_output(&rb_bin.to_string_lossy(), &["--version"])),
        (
            "nutcracker".to_string(),
            nc_bin.as_ref().map_or("not installed".into(), |b| {
                cmd_output(&b.to_string_lossy(), &["--version"])
            }),
        ),
    ];

    // Stop everything before writing the report.
    drop(procs);
    let md = report(&opts, &rows, &targets, &samples, &idle, &notes, &versions, started.elapsed());
    println!("\n{md}");
    if let Some(out) = &opts.out {
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
        }
        // Sections written by hand after this report (the migration benchmark's) survive a rerun.
        let old = fs::read_to_string(out).unwrap_or_default();
        let md = md + report::kept_sections(&old);
        fs::write(out, &md).map_err(|e| format!("write {}: {e}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
