//! The migration benchmark's numbers and its markdown: percentiles per phase, the table with one
//! row per setting, and the run's context (machine, load average, versions) that a reader needs
//! before trusting any number in it.

use std::process::Command;
use std::time::Duration;

use crate::stats::percentile;

/// GET latency and throughput over one phase.
pub struct Phase {
    pub gets: usize,
    /// Milliseconds; `None` when no GET completed.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub ops: f64,
}

impl Phase {
    /// From the phase's latencies in microseconds and its length in seconds.
    pub fn of(micros: &[u32], secs: f64) -> Phase {
        let mut ms: Vec<f64> = micros.iter().map(|&u| f64::from(u) / 1000.0).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        Phase {
            gets: ms.len(),
            p50: percentile(&ms, 0.50),
            p99: percentile(&ms, 0.99),
            p999: percentile(&ms, 0.999),
            max: ms.last().copied(),
            ops: ms.len() as f64 / secs.max(0.001),
        }
    }
}

/// One setting's result.
pub struct Row {
    pub name: String,
    /// Keys that ended up on g3 (all of them moved there).
    pub moved: u64,
    /// What `slots migrate` says its mover moved (the rest were moved by commands meeting them).
    pub by_mover: Option<u64>,
    /// Wall time of `keyhop slots migrate`.
    pub secs: f64,
    pub before: Phase,
    pub during: Phase,
    pub errors: u64,
    pub tryagains: u64,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

/// 1234567 -> "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(r: &Row) -> String {
    match (r.during.p99, r.before.p99) {
        (Some(d), Some(b)) if b > 0.0 => format!("{:.2}×", d / b),
        _ => "-".into(),
    }
}

/// One line for the console as soon as a setting finishes.
pub fn row_summary(r: &Row) -> String {
    format!(
        "{}: {} keys in {:.1} s ({:.0} keys/s); GET p99 {} ms before, {} ms during ({}); {:.0} / {:.0} GET/s; {} tryagains",
        r.name,
        thousands(r.moved),
        r.secs,
        r.moved as f64 / r.secs.max(0.001),
        ms(r.before.p99),
        ms(r.during.p99),
        ratio(r),
        r.before.ops,
        r.during.ops,
        r.tryagains
    )
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

/// What the run was: how many keys, which mode, how long it took, on what.
pub struct Run<'a> {
    pub keys: u64,
    pub clients: usize,
    pub before: Duration,
    pub quick: bool,
    pub load_start: &'a str,
    pub wall: Duration,
}

/// The report: context, the main table, the latency detail, and any failed settings.
pub fn markdown(rows: &[Row], failures: &[String], run: &Run) -> String {
    let mut m = String::from("# Migration benchmark (issue 14)\n\n");
    let commit =
        first_line("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"]);
    m += &format!("- **Date:** {}\n", first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    m += &format!(
        "- **Machine:** {} CPU(s), shared by etcd, three redis-servers, keyhop, the mover (`keyhop slots migrate`) and the {} GET clients; absolute numbers are low on a small machine\n",
        cpus(),
        run.clients
    );
    m += &format!(
        "- **Load average (1/5/15 min):** {} at start, {} at end\n",
        run.load_start,
        loadavg()
    );
    m += &format!("- **keyhop:** {commit} (bench profile)\n");
    m += &format!("- **redis-server:** {}\n", first_line("redis-server", &["--version"]));
    m += &format!(
        "- **Mode:** {}, {} keys preloaded (16-byte values), slots 0-4095,8192-12287 moved from g1 and g2 to an empty g3; {} GET connections without pipelining, uniform random keys; {} s measured before the migration\n",
        if run.quick { "quick" } else { "full" },
        thousands(run.keys),
        run.clients,
        run.before.as_secs()
    );
    m += &format!("- **Wall time:** {:.0} s\n\n", run.wall.as_secs_f64());
    m += "| setting | keys moved | seconds | keys/s | GET p99 before ms | GET p99 during ms | during / before | GET/s before | GET/s during | errors | tryagains |\n";
    m += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        m += &format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            thousands(r.moved),
            r.secs,
            thousands((r.moved as f64 / r.secs.max(0.001)) as u64),
            ms(r.before.p99),
            ms(r.during.p99),
            ratio(r),
            thousands(r.before.ops as u64),
            thousands(r.during.ops as u64),
            r.errors,
            r.tryagains
        );
    }
    m += "\nGET latency detail (ms):\n\n| setting | phase | GETs | p50 | p99 | p99.9 | max |\n|---|---|---:|---:|---:|---:|---:|\n";
    for r in rows {
        for (label, p) in [("before", &r.before), ("during", &r.during)] {
            m += &format!(
                "| {} | {label} | {} | {} | {} | {} | {} |\n",
                r.name,
                thousands(p.gets as u64),
                ms(p.p50),
                ms(p.p99),
                ms(p.p999),
                ms(p.max)
            );
        }
    }
    let mover: Vec<String> = rows
        .iter()
        .filter_map(|r| r.by_mover.map(|n| format!("{} {}", r.name, thousands(n))))
        .collect();
    if !mover.is_empty() {
        m += &format!(
            "\nKeys moved by the mover itself (the rest were moved by GETs that met them first): {}.\n",
            mover.join(", ")
        );
    }
    m += "\nKeys moved = keys on g3 afterwards, checked equal to the preloaded keys of the moved slots, with g1 and g2 holding exactly their other keys and none of the moved slots. GET latency includes retries after `-TRYAGAIN`; errors are GETs that failed or read a wrong value (any makes the setting fail).\n";
    for f in failures {
        m += &format!("\n**FAILED:**\n\n```text\n{f}\n```\n");
    }
    m
}
