//! Every process the load benchmark starts (redis-servers, keyhop, nutcracker, cargo,
//! redis-benchmark), and the guarantees that none outlives it: Drop guards, a SIGINT/SIGTERM flag
//! polled by every wait, and PR_SET_PDEATHSIG.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Res;
use super::opts::manifest_dir;
use super::resp::ping;

// OS glue: fd limit, signals, parent-death signal (Linux; only std is available here)

pub mod sys {
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
pub fn notice(notes: &mut Vec<String>, n: String) {
    println!("NOTICE: {n}");
    notes.push(n);
}

pub fn check_interrupt() -> Res<()> {
    if sys::interrupted() { Err("interrupted".into()) } else { Ok(()) }
}

/// Sleeps in small steps, returning early with an error when interrupted.
pub fn sleep(d: Duration) -> Res<()> {
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
pub struct Proc {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, port: u16, log: PathBuf, cmd: &mut Command) -> Res<Proc> {
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        match tail.char_indices().nth(400) {
            Some((cut, _)) => format!("{}…", &tail[..cut]),
            None => tail,
        }
    }

    /// Waits until the process answers PING; false if it exits or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Res<bool> {
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
pub fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

pub fn find_tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

pub fn start_redis(bin: &Path, dir: &Path, tag: &str) -> Res<Proc> {
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

pub fn start_nutcracker(bin: &Path, dir: &Path, backends: &[u16]) -> Res<Proc> {
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
pub fn start_keyhop(
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
pub fn build_keyhop() -> Res<PathBuf> {
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
pub fn wait_child(
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> Res<std::process::ExitStatus> {
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
