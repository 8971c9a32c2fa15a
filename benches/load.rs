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

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyhop_router::key_slot;

type Res<T> = Result<T, String>;

#[path = "load/pinned.rs"]
mod pinned;

const INSTALL_HINT: &str = "apt-get install -y redis-server redis-tools nutcracker";
const SLOTS: u16 = keyhop_router::SLOT_COUNT as u16;

// ---------------------------------------------------------------------------------------------
// Options

struct Opts {
    quick: bool,
    rounds: usize,
    scale: f64,
    threads: Vec<u32>,
    metrics: bool,
    keyhop: Option<PathBuf>,
    baseline: Option<PathBuf>,
    only: Vec<String>,
    build: bool,
    use_keyhop: bool,
    use_nutcracker: bool,
    idle: usize,
    out: Option<PathBuf>,
    user_args: Vec<String>,
}

const USAGE: &str = "\
usage: cargo bench --bench load [-- OPTIONS]

  --quick            smoke run: 1/10 of the requests, 2 rounds (well under a minute)
  --rounds N         alternating rounds per workload (default 3; 2 with --quick)
  --scale F          multiply every request count by F (after --quick)
  --threads LIST     keyhop worker threads to compare, e.g. 1,2 (default 0 = auto)
  --metrics          also run each keyhop with admin_listen set (per-command metrics on), to
                     measure what recording metrics costs
  --keyhop PATH      keyhop binary to run (also KEYHOP_BIN); skips `cargo build --release`
  --baseline PATH    also run this keyhop binary (e.g. a build from before a change), labelled
                     `baseline`, side by side with keyhop
  --only NAMES       run only these workloads, comma-separated, by their names in the report
                     (e.g. `GET c50,GET c1000`)
  --no-build         don't run `cargo build --release`; use target/release/keyhop as is
  --no-keyhop        leave keyhop out
  --no-nutcracker    leave nutcracker out
  --idle N           idle connections for the memory test (default 10000; 0 skips it)
  --out PATH         report file (default docs/benchmarks.md; `-` = stdout only)
";

fn parse_opts() -> Res<Opts> {
    let mut o = Opts {
        quick: false,
        rounds: 0,
        scale: 1.0,
        threads: vec![0],
        metrics: false,
        keyhop: std::env::var_os("KEYHOP_BIN").map(PathBuf::from),
        baseline: None,
        only: Vec::new(),
        build: true,
        use_keyhop: true,
        use_nutcracker: true,
        idle: 10_000,
        out: Some(manifest_dir().join("docs/benchmarks.md")),
        user_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // `cargo bench` appends `--bench` to a harness=false target's arguments.
        if a == "--bench" {
            continue;
        }
        o.user_args.push(a.clone());
        let mut value = |name: &str| -> Res<String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
            o.user_args.push(v.clone());
            Ok(v)
        };
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => {
                o.rounds = value("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?
            }
            "--scale" => {
                o.scale = value("--scale")?.parse().map_err(|e| format!("--scale: {e}"))?
            }
            "--threads" => {
                o.threads = value("--threads")?
                    .split(',')
                    .map(|t| t.trim().parse::<u32>().map_err(|e| format!("--threads {t:?}: {e}")))
                    .collect::<Res<_>>()?;
                if o.threads.is_empty() {
                    return Err("--threads needs at least one count".into());
                }
            }
            "--metrics" => o.metrics = true,
            "--keyhop" => o.keyhop = Some(PathBuf::from(value("--keyhop")?)),
            "--baseline" => o.baseline = Some(PathBuf::from(value("--baseline")?)),
            "--only" => {
                o.only = value("--only")?.split(',').map(|w| w.trim().to_string()).collect()
            }
            "--no-build" => o.build = false,
            "--no-keyhop" => o.use_keyhop = false,
            "--no-nutcracker" => o.use_nutcracker = false,
            "--idle" => o.idle = value("--idle")?.parse().map_err(|e| format!("--idle: {e}"))?,
            "--out" => {
                let v = value("--out")?;
                o.out = if v == "-" { None } else { Some(PathBuf::from(v)) };
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 2 } else { 3 };
    }
    if o.scale.is_nan() || o.scale <= 0.0 {
        return Err("--scale must be positive".into());
    }
    Ok(o)
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// OS glue: fd limit, signals, parent-death signal (Linux; only std is available here)

mod sys {
    use std::ffi::{c_int, c_ulong};
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, Ordering};

    static INTERRUPTED: AtomicBool = AtomicBool::new(false);

    #[repr(C)]
    struct Rlimit {
        cur: c_ulong,
        max: c_ulong,
    }

    const RLIMIT_NOFILE: c_int = 7;
    const SIGINT: c_int = 2;
    const SIGKILL: c_int = 9;
    const SIGTERM: c_int = 15;
    const PR_SET_PDEATHSIG: c_int = 1;

    unsafe extern "C" {
        fn getrlimit(resource: c_int, rlim: *mut Rlimit) -> c_int;
        fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        fn prctl(option: c_int, ...) -> c_int;
    }

    extern "C" fn on_signal(_sig: c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }

    /// Turns SIGINT/SIGTERM into a flag that every wait polls, so Drop guards get to run.
    pub fn install_signal_flag() {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal(SIGINT, on_signal);
            signal(SIGTERM, on_signal);
        }
    }

    pub fn interrupted() -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }

    /// Raises the soft open-files limit to the hard limit (children inherit it).
    /// Returns the soft limit now in force.
    pub fn raise_nofile() -> u64 {
        let mut r = Rlimit { cur: 0, max: 0 };
        // SAFETY: plain libc calls with a valid, properly laid out struct.
        unsafe {
            if getrlimit(RLIMIT_NOFILE, &mut r) != 0 {
                return 1024;
            }
            let want = r.max.min(1 << 20);
            if r.cur < want {
                let new = Rlimit { cur: want, max: r.max };
                if setrlimit(RLIMIT_NOFILE, &new) == 0 {
                    r.cur = want;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // c_ulong is u32 on 32-bit targets
        let cur = r.cur as u64;
        cur
    }

    /// Makes the child get SIGKILL when this process dies, however it dies.
    pub fn die_with_parent(cmd: &mut Command) {
        // SAFETY: the closure runs between fork and exec and only makes one syscall.
        unsafe {
            cmd.pre_exec(|| {
                prctl(PR_SET_PDEATHSIG, SIGKILL as c_ulong);
                Ok(())
            });
        }
    }
}

/// Prints a notice now and keeps it for the report.
fn notice(notes: &mut Vec<String>, n: String) {
    println!("NOTICE: {n}");
    notes.push(n);
}

fn check_interrupt() -> Res<()> {
    if sys::interrupted() { Err("interrupted".into()) } else { Ok(()) }
}

/// Sleeps in small steps, returning early with an error when interrupted.
fn sleep(d: Duration) -> Res<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        std::thread::sleep(
            Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
        );
    }
    check_interrupt()
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process killed (SIGKILL) and reaped on drop.
struct Proc {
    name: String,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &str, port: u16, log: PathBuf, cmd: &mut Command) -> Res<Proc> {
        let out = fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        sys::die_with_parent(cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc { name: name.to_string(), port, log, child: Some(child) })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Whether the process is still running (reaps it if it exited).
    fn alive(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        match tail.char_indices().nth(400) {
            Some((cut, _)) => format!("{}…", &tail[..cut]),
            None => tail,
        }
    }

    /// Waits until the process answers PING; false if it exits or `timeout` passes.
    fn wait_ready(&mut self, timeout: Duration) -> Res<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupt()?;
            if !self.alive() {
                return Ok(false);
            }
            if ping(self.port) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago (the kernel picks it).
fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn find_tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn start_redis(bin: &Path, dir: &Path, tag: &str) -> Res<Proc> {
    for _ in 0..5 {
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--daemonize", "no", "--logfile", "", "--maxclients", "15000"])
        .current_dir(dir);
        let mut p = Proc::spawn(
            &format!("redis {tag}"),
            port,
            dir.join(format!("redis-{tag}.log")),
            &mut cmd,
        )?;
        if p.wait_ready(Duration::from_secs(5))? {
            return Ok(p);
        }
        eprintln!("{} on {port} did not come up:\n{}", p.name, p.log_tail(5));
    }
    Err("could not start redis-server on a free loopback port".into())
}

fn start_nutcracker(bin: &Path, dir: &Path, backends: &[u16]) -> Res<Proc> {
    for _ in 0..5 {
        let port = free_port()?;
        let stats = free_port()?;
        let mut conf = format!(
            "bench:\n  listen: 127.0.0.1:{port}\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  \
             timeout: 10000\n  server_retry_timeout: 2000\n  server_failure_limit: 3\n  auto_eject_hosts: false\n  \
             preconnect: true\n  servers:\n"
        );
        for (i, b) in backends.iter().enumerate() {
            let _ = writeln!(conf, "   - 127.0.0.1:{b}:1 g{}", i + 1);
        }
        let path = dir.join("nutcracker.yml");
        fs::write(&path, conf).map_err(|e| format!("write {}: {e}", path.display()))?;
        let log = dir.join("nutcracker.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&path)
            .args(["-s", &stats.to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(&log);
        let mut p = Proc::spawn("nutcracker", port, dir.join("nutcracker.out"), &mut cmd)?;
        p.log = log;
        if p.wait_ready(Duration::from_secs(10))? {
            return Ok(p);
        }
        eprintln!("nutcracker on {port} did not come up:\n{}", p.log_tail(5));
    }
    Err("could not start nutcracker on a free loopback port".into())
}

/// Starts keyhop over the two groups; `Ok(None)` (with a printed notice) if it doesn't answer PING.
fn start_keyhop(
    name: &str,
    bin: &Path,
    dir: &Path,
    threads: u32,
    metrics: bool,
    backends: &[u16],
    notes: &mut Vec<String>,
) -> Res<Option<Proc>> {
    let variant =
        if metrics { format!("{name}-t{threads}-metrics") } else { format!("{name}-t{threads}") };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        // admin_listen turns per-command metrics recording on.
        let admin = if metrics {
            format!("admin_listen = \"127.0.0.1:{}\"\n", free_port()?)
        } else {
            String::new()
        };
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nthreads = {threads}\n{admin}\n\
             [[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:{}\"\nslots = [\"0-8191\"]\n\n\
             [[groups]]\nname = \"g2\"\nmaster = \"127.0.0.1:{}\"\nslots = [\"8192-16383\"]\n",
            backends[0], backends[1]
        );
        let path = dir.join(format!("{variant}.toml"));
        fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&path)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        let log = dir.join(format!("{variant}.log"));
        let mut p = Proc::spawn(&variant, port, log, &mut cmd)?;
        if p.wait_ready(Duration::from_secs(10))? {
            return Ok(Some(p));
        }
        let state = if p.alive() { "did not answer PING within 10 s" } else { "exited" };
        let tail = p.log_tail(3);
        // The port picked may have been taken in between: try another one.
        if attempt < 3 && !p.alive() && tail.to_lowercase().contains("in use") {
            continue;
        }
        let note = format!(
            "{name} ({}, threads = {threads}) {state}; it is left out of this run{}",
            bin.display(),
            if tail.is_empty() {
                String::new()
            } else {
                format!(" (log tail: {})", tail.replace('\n', " | "))
            }
        );
        notice(notes, note);
        return Ok(None);
    }
}

/// Runs `cargo build --release --bin keyhop` and returns target/release/keyhop.
fn build_keyhop() -> Res<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("building keyhop: cargo build --release --bin keyhop");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--bin", "keyhop"]).current_dir(manifest_dir());
    sys::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| format!("run cargo: {e}"))?;
    let status = wait_child(&mut child, Duration::from_secs(3600), "cargo build --release")?;
    if !status.success() {
        return Err(format!("cargo build --release failed ({status})"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir().join("target"));
    Ok(target.join("release/keyhop"))
}

/// Waits for `child` with a bound; kills it on timeout or interrupt.
fn wait_child(child: &mut Child, timeout: Duration, what: &str) -> Res<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| format!("wait for {what}: {e}"))? {
            return Ok(st);
        }
        let why = if sys::interrupted() {
            Some("interrupted".to_string())
        } else if Instant::now() >= deadline {
            Some(format!("{what} still running after {} s; killed it", timeout.as_secs()))
        } else {
            None
        };
        if let Some(why) = why {
            let _ = child.kill();
            let _ = child.wait();
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny RESP client (setup, sanity checks, idle connections)

#[derive(Debug)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Res<Conn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn { r: BufReader::new(s) })
    }

    fn call(&mut self, args: &[&str]) -> Res<Reply> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            let _ = write!(out, "${}\r\n{a}\r\n", a.len());
        }
        self.r.get_mut().write_all(out.as_bytes()).map_err(|e| format!("write: {e}"))?;
        self.read()
    }

    fn read(&mut self) -> Res<Reply> {
        let mut line = String::new();
        if self.r.read_line(&mut line).map_err(|e| format!("read: {e}"))? == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end();
        let (kind, rest) = line.split_at(line.len().min(1));
        let num = |s: &str| s.parse::<i64>().map_err(|_| format!("bad reply line {line:?}"));
        Ok(match kind {
            "+" => Reply::Status(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(num(rest)?),
            "$" => match num(rest)? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => match num(rest)? {
                n if n < 0 => Reply::Array(None),
                n => Reply::Array(Some((0..n).map(|_| self.read()).collect::<Res<_>>()?)),
            },
            _ => return Err(format!("bad reply line {line:?}")),
        })
    }
}

fn call(port: u16, args: &[&str]) -> Res<Reply> {
    Conn::open(port)?.call(args)
}

// ---------------------------------------------------------------------------------------------
// Key placement

/// Ten MGET keys, five in each keyhop group (slots 0-8191 and 8192-16383). When nutcracker runs
/// (`nc` = its port), the keys are also split five/five between its two servers, found by writing
/// candidates through it and looking where they land (ketama over named servers is deterministic).
fn mget_keys(nc: Option<u16>, backends: [u16; 2]) -> Res<Vec<String>> {
    let candidates: Vec<String> = (0..400).map(|i| format!("mget:{i}")).collect();
    let keyhop_hi = |k: &str| key_slot(k.as_bytes()) >= SLOTS / 2;
    // Buckets by (keyhop group, nutcracker server); without nutcracker only the first matters.
    let mut buckets: [Vec<&String>; 4] = Default::default();
    if let Some(nc) = nc {
        let (mut via, mut g2) = (Conn::open(nc)?, Conn::open(backends[1])?);
        call(backends[0], &["FLUSHALL"])?;
        call(backends[1], &["FLUSHALL"])?;
        for k in &candidates {
            via.call(&["SET", k, "x"])?;
            let on_g2 = matches!(g2.call(&["EXISTS", k])?, Reply::Int(1));
            buckets[usize::from(keyhop_hi(k)) * 2 + usize::from(on_g2)].push(k);
        }
    } else {
        for k in &candidates {
            buckets[usize::from(keyhop_hi(k)) * 2].push(k);
        }
    }
    // Take keys round-robin from (lo,g1), (hi,g2), (lo,g2), (hi,g1): 3+3+2+2 or 5+5.
    let order: &[usize] = if nc.is_some() { &[0, 3, 1, 2] } else { &[0, 2] };
    let mut keys = Vec::new();
    for i in 0..10 {
        let b = order[i % order.len()];
        let k = buckets[b]
            .get(i / order.len())
            .ok_or("no balanced MGET key set among 400 candidates")?;
        keys.push(k.to_string());
    }
    Ok(keys)
}

// ---------------------------------------------------------------------------------------------
// Workloads and measurement

#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
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
    fn nutcracker_can(self) -> bool {
        !matches!(self, Group::Resp3 | Group::Pinned)
    }
}

struct Row {
    name: String,
    group: Group,
    args: Vec<String>,
    requests: u64,
}

fn rows(scale: f64, mget: &[String], fd_limit: u64, notes: &mut Vec<String>) -> Vec<Row> {
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
enum Kind {
    Direct,
    Keyhop,
    Nutcracker,
}

struct Target {
    label: String,
    kind: Kind,
    port: u16,
    /// The process whose CPU is charged: the proxy, or the redis-server for direct.
    pid: u32,
    /// Index into the process list, to check liveness.
    proc_idx: usize,
    dead: bool,
}

#[derive(Clone, Copy)]
struct Sample {
    rps: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    cpu_per_m: Option<f64>,
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Parses `redis-benchmark --csv`: a header row naming the columns, then one row per test.
fn parse_csv(text: &str) -> Res<(f64, Option<f64>, Option<f64>)> {
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with('"'))
        .map(|l| l.split("\",\"").map(|c| c.trim_matches('"').to_string()).collect())
        .collect();
    let header =
        rows.iter().find(|r| r.first().is_some_and(|c| c == "test")).ok_or("no CSV header")?;
    let col = |name: &str| header.iter().position(|c| c == name);
    let data =
        rows.iter().find(|r| r.first().is_some_and(|c| c != "test")).ok_or("no CSV data row")?;
    let get = |i: Option<usize>| i.and_then(|i| data.get(i)).and_then(|v| v.parse::<f64>().ok());
    let rps = get(col("rps")).ok_or("no rps column")?;
    Ok((rps, get(col("p50_latency_ms")), get(col("p99_latency_ms"))))
}

struct Bench<'a> {
    bin: &'a Path,
    dir: &'a Path,
    tck: f64,
}

impl Bench<'_> {
    fn run(&self, t: &Target, row: &Row) -> Res<(Sample, Option<String>, f64)> {
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
        let cpu_per_m = match (before, after) {
            (Some(b), Some(a)) => Some((a - b) as f64 / self.tck / row.requests as f64 * 1e6),
            _ => None,
        };
        // redis-benchmark reports error replies on stderr/stdout but still counts them.
        let errors = stderr
            .lines()
            .chain(stdout.lines())
            .find(|l| l.contains("Error") || l.contains("ERR"))
            .map(|l| l.trim().to_string());
        Ok((Sample { rps, p50, p99, cpu_per_m }, errors, secs))
    }
}

fn first_line(a: &str, b: &str) -> String {
    a.lines().chain(b.lines()).find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// Idle connections

struct Idle {
    label: String,
    opened: usize,
    before_kb: u64,
    after_kb: u64,
}

impl Idle {
    fn per_conn_kb(&self) -> Option<f64> {
        (self.opened > 0)
            .then(|| (self.after_kb as f64 - self.before_kb as f64) / self.opened as f64)
    }
}

/// Opens `n` connections to `t`, each answering one PING, and measures the RSS growth.
fn idle_test(t: &Target, n: usize) -> Res<(Idle, Option<String>)> {
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

// ---------------------------------------------------------------------------------------------
// Statistics and report

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// samples[row][target][round]
type Samples = Vec<Vec<Vec<Option<Sample>>>>;

fn med_of(s: &[Option<Sample>], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(s.iter().flatten().filter_map(f).collect())
}

/// Median over rounds of the per-round ratio a/b of requests per second.
fn ratio(a: &[Option<Sample>], b: &[Option<Sample>]) -> Option<f64> {
    median(a.iter().zip(b).filter_map(|(x, y)| Some(x.as_ref()?.rps / y.as_ref()?.rps)).collect())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |x| format!("{x:.digits$}"))
}

fn fmt_rps(v: Option<f64>) -> String {
    let Some(v) = v else { return "–".into() };
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_x(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.2}×"))
}

fn loadavg() -> String {
    let l = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn cmd_output(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            t.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|_| "unknown".into())
}

struct Verdict {
    goal: &'static str,
    measured: String,
    met: Option<bool>,
}

fn verdicts(
    rows: &[Row],
    targets: &[Target],
    s: &Samples,
    k: usize,
    nc: Option<usize>,
    idle: &[Idle],
) -> Vec<Verdict> {
    let direct = 0;
    let ratio_goal = |goal: &'static str, groups: &[Group], against: Option<usize>, min: f64| {
        let Some(b) = against else {
            return Verdict { goal, measured: "not measured".into(), met: None };
        };
        let mut parts = Vec::new();
        let mut ok = true;
        for (i, r) in rows.iter().enumerate().filter(|(_, r)| groups.contains(&r.group)) {
            let x = ratio(&s[i][k], &s[i][b]);
            ok &= x.is_some_and(|x| x >= min);
            parts.push(format!("{} {}", r.name, fmt_x(x)));
        }
        let met = (!parts.is_empty()).then_some(ok);
        Verdict { goal, measured: parts.join(", "), met }
    };
    let mut v = vec![
        ratio_goal("pipeline 16: req/s ≥ 1.9× nutcracker", &[Group::Pipe16], nc, 1.9),
        ratio_goal("no pipelining: req/s ≥ 1.05× nutcracker", &[Group::NoPipe], nc, 1.05),
        ratio_goal("1,000 clients: req/s ≥ 1.2× nutcracker", &[Group::Clients1000], nc, 1.2),
        ratio_goal(
            "pub/sub and blocking: ops/s ≥ 0.8× direct Redis",
            &[Group::Pinned],
            Some(direct),
            0.8,
        ),
        ratio_goal(
            "with pipelining: req/s ≥ 0.85× direct Redis",
            &[Group::Pipe16, Group::Big],
            Some(direct),
            0.85,
        ),
    ];
    // p99 no worse than nutcracker's anywhere.
    v.push(match nc {
        None => Verdict {
            goal: "p99 ≤ nutcracker's in every workload",
            measured: "not measured".into(),
            met: None,
        },
        Some(b) => {
            let mut worse = Vec::new();
            let mut all = true;
            // nutcracker has no RESP3: those rows compare keyhop with direct Redis only.
            for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.group.nutcracker_can()) {
                let (a, c) = (med_of(&s[i][k], |x| x.p99), med_of(&s[i][b], |x| x.p99));
                match (a, c) {
                    (Some(a), Some(c)) if a <= c => {}
                    (Some(a), Some(c)) => worse.push(format!("{} {a:.3} vs {c:.3} ms", r.name)),
                    _ => all = false,
                }
            }
            let measured = if !all {
                "incomplete".to_string()
            } else if worse.is_empty() {
                "all workloads".to_string()
            } else {
                format!("worse in: {}", worse.join("; "))
            };
            Verdict {
                goal: "p99 ≤ nutcracker's in every workload",
                measured,
                met: all.then_some(worse.is_empty()),
            }
        }
    });
    v.push(match nc {
        None => Verdict {
            goal: "pipeline 16: CPU per request ≤ ½ nutcracker's",
            measured: "not measured".into(),
            met: None,
        },
        Some(b) => {
            let mut parts = Vec::new();
            let mut ok = true;
            for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.group == Group::Pipe16) {
                let (a, c) = (med_of(&s[i][k], |x| x.cpu_per_m), med_of(&s[i][b], |x| x.cpu_per_m));
                let x = a.zip(c).map(|(a, c)| a / c);
                ok &= x.is_some_and(|x| x <= 0.5);
                parts.push(format!("{} {}", r.name, fmt_x(x)));
            }
            Verdict {
                goal: "pipeline 16: CPU per request ≤ ½ nutcracker's",
                measured: parts.join(", "),
                met: Some(ok),
            }
        }
    });
    let label = &targets[k].label;
    v.push(match idle.iter().find(|i| &i.label == label).and_then(|i| i.per_conn_kb()) {
        Some(kb) => Verdict {
            goal: "idle client < 20 KB each",
            measured: format!("{kb:.1} KB"),
            met: Some(kb < 20.0),
        },
        None => {
            Verdict { goal: "idle client < 20 KB each", measured: "not measured".into(), met: None }
        }
    });
    v
}

#[allow(clippy::too_many_arguments)]
fn report(
    opts: &Opts,
    rows: &[Row],
    targets: &[Target],
    s: &Samples,
    idle: &[Idle],
    notes: &[String],
    versions: &[(String, String)],
    elapsed: Duration,
) -> String {
    let nc = targets.iter().position(|t| matches!(t.kind, Kind::Nutcracker));
    let keyhops: Vec<usize> = targets
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.kind, Kind::Keyhop))
        .map(|(i, _)| i)
        .collect();
    let mut m = String::new();
    let _ = writeln!(m, "# Load benchmark: keyhop vs nutcracker vs direct Redis\n");
    let _ = writeln!(
        m,
        "Generated by `benches/load.rs`; rerun it to refresh this file (don't edit by hand). \
         Method and caveats are at the end.\n"
    );
    let _ = writeln!(m, "## Run\n");
    for (k, v) in versions {
        let _ = writeln!(m, "- **{k}:** {v}");
    }
    let mode = if opts.quick { "quick (smoke run; numbers are noisy)" } else { "full" };
    let _ = writeln!(
        m,
        "- **Mode:** {mode}, {} round(s) per workload, request-count scale {}",
        opts.rounds, opts.scale
    );
    let mut cmdline = "cargo bench --bench load".to_string();
    if !opts.user_args.is_empty() {
        cmdline += " -- ";
        cmdline += &opts.user_args.join(" ");
    }
    let _ = writeln!(m, "- **Command:** `{cmdline}`");
    let _ =
        writeln!(m, "- **Wall time:** {:.0} s (after building keyhop)\n", elapsed.as_secs_f64());

    let _ = writeln!(m, "## Throughput, latency, CPU\n");
    let _ = writeln!(
        m,
        "Medians over rounds. CPU = CPU seconds (user+sys) of the proxy process per million requests \
         (for *direct*, of the redis-server). Ratios are medians of per-round req/s ratios.\n"
    );
    let (ratio_head, ratio_sep) = if keyhops.is_empty() {
        ("", "")
    } else {
        (" keyhop / nutcracker | keyhop / direct |", "---:|---:|")
    };
    let _ = writeln!(
        m,
        "| workload | requests | target | req/s | p50 ms | p99 ms | CPU s / M req |{ratio_head}\n\
         |---|---:|---|---:|---:|---:|---:|{ratio_sep}"
    );
    for (i, r) in rows.iter().enumerate() {
        for (j, t) in targets.iter().enumerate() {
            let x = &s[i][j];
            let ratios = if keyhops.contains(&j) {
                let vs_nc = fmt_x(nc.and_then(|n| ratio(x, &s[i][n])));
                format!(" {vs_nc} | {} |", fmt_x(ratio(x, &s[i][0])))
            } else if keyhops.is_empty() {
                String::new()
            } else {
                "  |  |".to_string()
            };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |{ratios}",
                if j == 0 { r.name.as_str() } else { "" },
                if j == 0 { fmt_rps(Some(r.requests as f64)) } else { String::new() },
                t.label,
                fmt_rps(med_of(x, |v| Some(v.rps))),
                fmt_opt(med_of(x, |v| v.p50), 3),
                fmt_opt(med_of(x, |v| v.p99), 3),
                fmt_opt(med_of(x, |v| v.cpu_per_m), 2),
            );
        }
    }

    let _ = writeln!(m, "\n## Issue 5 targets\n");
    if keyhops.is_empty() {
        let _ = writeln!(m, "keyhop was not measured in this run, so no target can be judged.\n");
    }
    for &k in &keyhops {
        if keyhops.len() > 1 {
            let _ = writeln!(m, "### {}\n", targets[k].label);
        }
        let _ = writeln!(m, "| target | measured | |\n|---|---|:-:|");
        for v in verdicts(rows, targets, s, k, nc, idle) {
            let met = match v.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "n/a",
            };
            let _ = writeln!(m, "| {} | {} | {met} |", v.goal, v.measured);
        }
        m += "\n";
    }

    // Metrics on vs off: each `X +metrics` target against its twin `X`.
    let pairs: Vec<(usize, usize)> = keyhops
        .iter()
        .filter_map(|&on| {
            let base = targets[on].label.strip_suffix(" +metrics")?;
            let off = keyhops.iter().copied().find(|&j| targets[j].label == base)?;
            Some((on, off))
        })
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(m, "## Metrics on vs off\n");
        let _ = writeln!(
            m,
            "req/s with `admin_listen` set (per-command counters and latency histograms recorded) \
             divided by req/s without it; median of per-round ratios. Target: a loss under 3%.\n"
        );
        let _ = writeln!(
            m,
            "| workload | {} |",
            pairs.iter().map(|&(on, _)| targets[on].label.as_str()).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(m, "|---|{}", "---:|".repeat(pairs.len()));
        for (i, r) in rows.iter().enumerate() {
            let cells: Vec<String> =
                pairs.iter().map(|&(on, off)| fmt_x(ratio(&s[i][on], &s[i][off]))).collect();
            let _ = writeln!(m, "| {} | {} |", r.name, cells.join(" | "));
        }
        m += "\n";
    }

    let _ = writeln!(m, "## Idle connections\n");
    if idle.is_empty() {
        let _ = writeln!(m, "Not measured in this run.\n");
    } else {
        let _ = writeln!(
            m,
            "Resident memory growth with idle client connections (each sent one PING).\n"
        );
        let _ = writeln!(
            m,
            "| target | connections | RSS before | RSS after | per connection |\n|---|---:|---:|---:|---:|"
        );
        for i in idle {
            let _ = writeln!(
                m,
                "| {} | {} | {:.1} MB | {:.1} MB | {} KB |",
                i.label,
                fmt_rps(Some(i.opened as f64)),
                i.before_kb as f64 / 1024.0,
                i.after_kb as f64 / 1024.0,
                fmt_opt(i.per_conn_kb(), 1)
            );
        }
        m += "\n";
    }

    if !notes.is_empty() {
        let _ = writeln!(m, "## Notes from this run\n");
        for n in notes {
            let _ = writeln!(m, "- {n}");
        }
        m += "\n";
    }

    m += METHOD;
    m
}

const METHOD: &str = "\
## Running it

```sh
apt-get install -y redis-server redis-tools nutcracker  # nutcracker is optional
cargo bench --bench load                      # full run (about 8-10 minutes on 2 cores), rewrites this file
cargo bench --bench load -- --quick           # smoke run, well under a minute after the build
cargo bench --bench load -- --threads 1,2     # one keyhop per worker-thread count, side by side
cargo bench --bench load -- --help            # all options (--rounds, --scale, --keyhop, --idle, --out ...)
```

It runs `cargo build --release` first and benchmarks `target/release/keyhop` (or `KEYHOP_BIN` /
`--keyhop PATH`). If keyhop doesn't answer PING within 10 s it is left out with a notice, and so is
nutcracker when it isn't installed.

## Method

- Two `redis-server`s (`--save '' --appendonly no`) on free loopback ports are the backends.
  keyhop maps slots 0-8191 to the first and 8192-16383 to the second; nutcracker uses
  `hash: fnv1a_64`, `distribution: ketama`, `redis: true` over the same two. *Direct* is the first
  redis-server on its own (so it holds every key and does all the work on one core).
- Load comes from `redis-benchmark --csv` (single-threaded). Every workload is run against every
  target back to back, then the next workload, and so on: one round. The target order rotates each
  round so no target always runs first; medians over rounds are reported.
- SET/GET use `-r` (random keys over a 100,000-key space; 10,000 for 16 KB values) so keys spread
  over both groups; without `-r`, redis-benchmark sends every request to the single key
  `key:__rand_int__`. The MGET workload reads ten fixed keys, five per keyhop group (chosen with
  CRC16-XMODEM); they are written through each target first.
- The two pinned workloads (`benches/load/pinned.rs`; keyhop and direct only: nutcracker supports
  neither) are driven by the benchmark itself, not redis-benchmark. *PUBLISH →50 subs*: 50
  connections SUBSCRIBE to one channel and one connection PUBLISHes 16-byte messages, 16 in
  flight; ops/s are deliveries (messages × 50) per second until every subscriber has every
  message; latency is the round trip of a 16-PUBLISH batch. *BLPOP/RPUSH ping-pong ×10*: 10 pairs
  of connections, each round the producer RPUSHes and BLPOPs the answer, the consumer BLPOPs and
  RPUSHes it; ops/s are commands per second, latency is the producer's round.
- CPU is utime+stime from `/proc/PID/stat` before and after each redis-benchmark run, divided by
  the requests in that run. Backend redis-server CPU is not included for proxies.
- Idle memory: VmRSS from `/proc/PID/status` before and after opening the connections
  (each sends one PING and gets PONG), divided by the number opened.
- Caveat: on a 2-core machine redis-benchmark takes most of one core, so a proxy and the
  redis-servers behind it share the other. Absolute numbers are low and the proxies are
  CPU-starved; the ratios between targets are the useful part.
- Noise check: `KEYHOP_BIN=benches/nutcracker-as-keyhop.sh cargo bench --bench load` runs a second
  nutcracker in keyhop's place (an A/A test). On the 2-core development VM with other builds
  running (load average ~6), its req/s ratios to the real nutcracker ranged 0.78-1.35x while its
  CPU per million requests stayed within 8% of nutcracker's; trust req/s ratios only on a quiet
  machine, and look at the load average above.
- redis-benchmark first sends `CONFIG GET save/appendonly`; proxies that reject CONFIG make it print
  `WARNING: Could not fetch server CONFIG`, which is harmless.
";

// ---------------------------------------------------------------------------------------------

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
        fs::write(out, &md).map_err(|e| format!("write {}: {e}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
