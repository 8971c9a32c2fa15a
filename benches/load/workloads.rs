//! The workloads (which redis-benchmark arguments, how many requests), the targets they run
//! against, one measured run of a workload on a target, and the idle-connection memory test.
//! Readings come from /proc; the arithmetic on them is in `stats.rs`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Res;
use super::pinned;
use super::procs::{check_interrupt, notice, sleep, sys, wait_child};
use super::resp::{Conn, Reply, call};
use super::stats::{Sample, cpu_per_million, parse_csv};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Group {
    NoPipe,
    Pipe16,
    Mget,
    Clients1000,
    Big,
    /// RESP3 clients (`HELLO 3`): keyhop and direct Redis only, nutcracker has no RESP3.
    Resp3,
    /// Pub/sub and blocking commands on pinned connections (`load/pinned.rs`): keyhop and
    /// direct Redis only, nutcracker supports neither.
    Pinned,
}

impl Group {
    /// Whether nutcracker can run the group's workloads.
    pub fn nutcracker_can(self) -> bool {
        !matches!(self, Group::Resp3 | Group::Pinned)
    }
}

pub struct Row {
    pub name: String,
    pub group: Group,
    pub args: Vec<String>,
    pub requests: u64,
}

pub fn rows(scale: f64, mget: &[String], fd_limit: u64, notes: &mut Vec<String>) -> Vec<Row> {
    let n = |base: u64| ((base as f64 * scale).round() as u64).max(1000);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for t in ["set", "get"] {
        let up = t.to_uppercase();
        out.push(Row {
            name: format!("{up} c50"),
            group: Group::NoPipe,
            args: s(&["-t", t, "-c", "50", "-r", "100000"]),
            requests: n(100_000),
        });
    }
    for t in ["set", "get"] {
        let up = t.to_uppercase();
        out.push(Row {
            name: format!("{up} c50 P16"),
            group: Group::Pipe16,
            args: s(&["-t", t, "-c", "50", "-r", "100000", "-P", "16"]),
            requests: n(600_000),
        });
    }
    for (t, pipe) in [("set", "1"), ("get", "1"), ("set", "16"), ("get", "16")] {
        let up = t.to_uppercase();
        let p = if pipe == "1" { String::new() } else { format!(" P{pipe}") };
        out.push(Row {
            name: format!("{up} c50{p} RESP3"),
            group: Group::Resp3,
            args: s(&["-3", "-t", t, "-c", "50", "-r", "100000", "-P", pipe]),
            requests: n(if pipe == "1" { 100_000 } else { 600_000 }),
        });
    }
    let mut margs = s(&["-c", "50", "MGET"]);
    margs.extend(mget.iter().cloned());
    out.push(Row {
        name: "MGET×10 c50".into(),
        group: Group::Mget,
        args: margs,
        requests: n(100_000),
    });
    if fd_limit >= 2200 {
        for t in ["set", "get"] {
            let up = t.to_uppercase();
            out.push(Row {
                name: format!("{up} c1000"),
                group: Group::Clients1000,
                args: s(&["-t", t, "-c", "1000", "-r", "100000"]),
                requests: n(100_000),
            });
        }
    } else {
        let note = format!(
            "1,000-client workload skipped: open-files limit is {fd_limit} and could not be raised"
        );
        notice(notes, note);
    }
    for t in ["set", "get"] {
        let up = t.to_uppercase();
        out.push(Row {
            name: format!("{up} 16KB c50 P8"),
            group: Group::Big,
            args: s(&["-t", t, "-c", "50", "-r", "10000", "-d", "16384", "-P", "8"]),
            requests: n(60_000),
        });
    }
    out.push(Row {
        name: format!("PUBLISH →{} subs", pinned::SUBSCRIBERS),
        group: Group::Pinned,
        args: s(&[pinned::PUBLISH_FANIN]),
        requests: n(3_000_000),
    });
    out.push(Row {
        name: format!("BLPOP/RPUSH ping-pong ×{}", pinned::PAIRS),
        group: Group::Pinned,
        args: s(&[pinned::BLPOP_PINGPONG]),
        requests: n(400_000),
    });
    out
}

#[derive(Clone, Copy)]
pub enum Kind {
    Direct,
    Keyhop,
    Nutcracker,
}

pub struct Target {
    pub label: String,
    pub kind: Kind,
    pub port: u16,
    /// The process whose CPU is charged: the proxy, or the redis-server for direct.
    pub pid: u32,
    /// Index into the process list, to check liveness.
    pub proc_idx: usize,
    pub dead: bool,
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub struct Bench<'a> {
    pub bin: &'a Path,
    pub dir: &'a Path,
    pub tck: f64,
}

impl Bench<'_> {
    pub fn run(&self, t: &Target, row: &Row) -> Res<(Sample, Option<String>, f64)> {
        let out = self.dir.join("rb.out");
        let err = self.dir.join("rb.err");
        let mut cmd = Command::new(self.bin);
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &t.port.to_string(),
            "--csv",
            "-n",
            &row.requests.to_string(),
        ])
        .args(&row.args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).map_err(|e| e.to_string())?)
        .stderr(fs::File::create(&err).map_err(|e| e.to_string())?);
        sys::die_with_parent(&mut cmd);
        let before = cpu_ticks(t.pid);
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| format!("spawn redis-benchmark: {e}"))?;
        let status = wait_child(&mut child, Duration::from_secs(600), "redis-benchmark")?;
        let secs = start.elapsed().as_secs_f64();
        let after = cpu_ticks(t.pid);
        let stdout = fs::read_to_string(&out).unwrap_or_default();
        let stderr = fs::read_to_string(&err).unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "redis-benchmark exited with {status}: {}",
                first_line(&stderr, &stdout)
            ));
        }
        let (rps, p50, p99) =
            parse_csv(&stdout).map_err(|e| format!("{e}: {}", first_line(&stderr, &stdout)))?;
        let cpu_per_m = cpu_per_million(before, after, self.tck, row.requests);
        // redis-benchmark reports error replies on stderr/stdout but still counts them.
        let errors = stderr
            .lines()
            .chain(stdout.lines())
            .find(|l| l.contains("Error") || l.contains("ERR"))
            .map(|l| l.trim().to_string());
        Ok((Sample { rps, p50, p99, cpu_per_m }, errors, secs))
    }
}

pub fn first_line(a: &str, b: &str) -> String {
    a.lines().chain(b.lines()).find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// Idle connections

pub struct Idle {
    pub label: String,
    pub opened: usize,
    pub before_kb: u64,
    pub after_kb: u64,
}

impl Idle {
    pub fn per_conn_kb(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| (self.after_kb as f64 - self.before_kb as f64) / self.opened as f64)
    }
}

/// Opens `n` connections to `t`, each answering one PING, and measures the RSS growth.
pub fn idle_test(t: &Target, n: usize) -> Res<(Idle, Option<String>)> {
    // Warm up lazily initialised state with a few connections first.
    for _ in 0..4 {
        let _ = call(t.port, &["PING"]);
    }
    sleep(Duration::from_millis(300))?;
    let before_kb = rss_kb(t.pid).ok_or("cannot read VmRSS")?;
    let mut conns = Vec::with_capacity(n);
    let mut problem = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    for i in 0..n {
        check_interrupt()?;
        if Instant::now() > deadline {
            problem = Some(format!("gave up after 180 s at {i} connections"));
            break;
        }
        match Conn::open(t.port).and_then(|mut c| match c.call(&["PING"])? {
            Reply::Status(s) if s == "PONG" => Ok(c),
            other => Err(format!("PING answered {other:?}")),
        }) {
            Ok(c) => conns.push(c),
            Err(e) => {
                problem = Some(format!("connection {} failed: {e}", i + 1));
                break;
            }
        }
    }
    sleep(Duration::from_millis(500))?;
    let after_kb = rss_kb(t.pid).ok_or("cannot read VmRSS")?;
    let opened = conns.len();
    drop(conns);
    sleep(Duration::from_millis(500))?;
    Ok((Idle { label: t.label.clone(), opened, before_kb, after_kb }, problem))
}
