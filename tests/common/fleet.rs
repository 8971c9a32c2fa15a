//! What the fleet tests share: etcd, three single-server groups (g3 starts empty), keyhop
//! instances joined to one fleet, the `keyhop slots/group` commands, a writer that alternates
//! between instances and checks every read against its last acknowledged write, and the checks
//! that every key lives on exactly one group, the one owning its slot.

use super::etcd::Etcd;
use super::{Proc, Raw, Reply, keyhop, keyhop_bin, redis_server, temp_dir, wait_until};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyhop_router::key_slot;

/// etcd, three groups and the fleet's command-line config.
pub struct Rig {
    pub etcd: Etcd,
    pub servers: Vec<Proc>,
    pub dir: tempfile::TempDir,
    pub prefix: String,
    /// `[etcd]` plus extra lines shared by every instance and command.
    pub etcd_section: String,
}

impl Rig {
    /// Starts etcd and three redis-servers, seeds the fleet with g1 (0-8191) and g2 (the rest)
    /// and adds g3 with no slots.
    pub fn start() -> Rig {
        let etcd = Etcd::start();
        let servers = vec![redis_server(&[]), redis_server(&[]), redis_server(&[])];
        let dir = temp_dir();
        let etcd_section = format!(
            "[etcd]\nendpoints = [\"{}\"]\nprefix = \"/keyhop/test\"\nlease_ttl_ms = 2000\ngrace_ms = 2000\nhold_ms = 1000\npoll_interval_ms = 1000\n",
            etcd.endpoint
        );
        let rig = Rig { etcd, servers, dir, prefix: "/keyhop/test".into(), etcd_section };
        let out = rig.cli(&["slots", "init"], Duration::from_secs(20));
        assert!(out.status.success(), "slots init failed: {}", text(&out));
        let g3 = rig.servers[2].addr();
        let out = rig.cli(&["group", "add", "g3", "--master", &g3], Duration::from_secs(20));
        assert!(out.status.success(), "group add failed: {}", text(&out));
        rig
    }

    /// The configuration file text for an instance (`{listen}` left for the harness).
    pub fn config(&self, extra: &str) -> String {
        format!(
            "listen = \"{{listen}}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = 3000\n{extra}\n{}\n\
             [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nslots = [\"0-8191\"]\n\n\
             [[groups]]\nname = \"g2\"\nmaster = \"{}\"\nslots = [\"8192-16383\"]\n",
            self.etcd_section,
            self.servers[0].addr(),
            self.servers[1].addr()
        )
    }

    /// Starts one keyhop instance in a directory of its own.
    pub fn instance(&self, extra: &str) -> (tempfile::TempDir, Proc) {
        let dir = temp_dir();
        let p = keyhop(dir.path(), &self.config(extra));
        (dir, p)
    }

    /// Runs `keyhop ARGS --config F` to the end (killed after `bound`).
    pub fn cli(&self, args: &[&str], bound: Duration) -> Output {
        let path: PathBuf = self.dir.path().join("cli.toml");
        std::fs::write(&path, self.config("").replace("{listen}", "127.0.0.1:1"))
            .expect("write the cli config");
        run_bounded(Command::new(keyhop_bin()).args(args).arg("--config").arg(&path), bound)
    }

    /// Starts `keyhop ARGS --config F` without waiting; its output goes to `dir/NAME.log`.
    pub fn cli_spawn(&self, args: &[&str], name: &str) -> std::process::Child {
        let path: PathBuf = self.dir.path().join("cli.toml");
        std::fs::write(&path, self.config("").replace("{listen}", "127.0.0.1:1"))
            .expect("write the cli config");
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))
            .expect("create the cli log");
        let err = log.try_clone().expect("clone the log handle");
        Command::new(keyhop_bin())
            .args(args)
            .arg("--config")
            .arg(&path)
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn keyhop")
    }

    /// The keys on each group's server, by group index.
    pub fn keys_by_group(&self) -> Vec<HashSet<Vec<u8>>> {
        self.servers.iter().map(|s| all_keys(s.port)).collect()
    }

    /// Asserts that no key is on two groups and every key is on the group owning its slot
    /// (`owner(slot)` gives the group index).
    pub fn assert_single_home(&self, owner: impl Fn(u16) -> usize) {
        let groups = self.keys_by_group();
        let mut seen: HashMap<&[u8], usize> = HashMap::new();
        for (g, keys) in groups.iter().enumerate() {
            for k in keys {
                if let Some(other) = seen.insert(k, g) {
                    panic!(
                        "key {:?} is on g{} and g{}",
                        String::from_utf8_lossy(k),
                        other + 1,
                        g + 1
                    );
                }
                let want = owner(key_slot(k));
                assert_eq!(
                    want,
                    g,
                    "key {:?} (slot {}) is on g{} but its slot belongs to g{}",
                    String::from_utf8_lossy(k),
                    key_slot(k),
                    g + 1,
                    want + 1
                );
            }
        }
    }
}

/// The process's stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to the end, killing it after `bound`.
pub fn run_bounded(cmd: &mut Command, bound: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < bound => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    child.wait_with_output().expect("collect the output")
}

/// Every key of db 0 on the server at `port`.
pub fn all_keys(port: u16) -> HashSet<Vec<u8>> {
    let mut raw = Raw::connect(port);
    let mut out = HashSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..1_000_000 {
        let Reply::Array(Some(parts)) = raw.call(&["SCAN", &cursor, "COUNT", "1000"]) else {
            panic!("SCAN failed on {port}");
        };
        let [Reply::Bulk(Some(c)), Reply::Array(Some(keys))] = &parts[..] else {
            panic!("SCAN reply: {parts:?}");
        };
        for k in keys {
            if let Reply::Bulk(Some(k)) = k {
                out.insert(k.clone());
            }
        }
        cursor = String::from_utf8_lossy(c).into_owned();
        if cursor == "0" {
            break;
        }
    }
    out
}

/// Sends one command, retrying `-TRYAGAIN` (slot handovers) for up to 10 s.
pub fn call_retry(raw: &mut Raw, args: &[&str], tryagains: &mut u64) -> Reply {
    let started = Instant::now();
    loop {
        let r = raw.call(args);
        match &r {
            Reply::Error(e)
                if e.starts_with("TRYAGAIN") && started.elapsed() < Duration::from_secs(10) =>
            {
                *tryagains += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => return r,
        }
    }
}

/// What a [`Writer`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Last acknowledged value of each key.
    pub acked: HashMap<String, String>,
    /// Writes acknowledged.
    pub writes: u64,
    /// Reads checked against the last acknowledged write.
    pub reads: u64,
    /// Reads that did not match (key, wanted, got).
    pub wrong: Vec<(String, String, String)>,
    /// Errors other than TRYAGAIN.
    pub errors: Vec<String>,
    /// TRYAGAIN replies retried.
    pub tryagains: u64,
}

/// A client writing and reading a key space through several instances in turn.
pub struct Writer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    /// Writes `fw:<n>` (n < `keys`) through `ports` in turn, each write followed by a read of the
    /// same key through the next instance.
    pub fn start(ports: &[u16], keys: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let mut conns: Vec<Raw> = ports.iter().map(|&p| Raw::connect(p)).collect();
        let (s, out) = (stop.clone(), seen.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let n = conns.len();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(300)
                && i < 5_000_000
            {
                let key = format!("fw:{}", (i * 7919) % keys);
                let value = format!("v{i}");
                let mut tryagains = 0;
                let w = call_retry(
                    &mut conns[(i as usize) % n],
                    &["SET", &key, &value],
                    &mut tryagains,
                );
                let r =
                    call_retry(&mut conns[(i as usize + 1) % n], &["GET", &key], &mut tryagains);
                let mut seen = out.lock().unwrap_or_else(|e| e.into_inner());
                seen.tryagains += tryagains;
                match w {
                    Reply::Status(ok) if ok == "OK" => {
                        seen.writes += 1;
                        seen.acked.insert(key.clone(), value.clone());
                    }
                    other => {
                        // A failed write may still have been applied (a timeout): the key's value
                        // is unknown until its next acknowledged write.
                        seen.acked.remove(&key);
                        seen.errors.push(format!("SET {key}: {other:?}"));
                    }
                }
                if let Some(want) = seen.acked.get(&key).cloned() {
                    seen.reads += 1;
                    match r {
                        Reply::Bulk(Some(got)) if got == want.as_bytes() => {}
                        Reply::Error(e) => seen.errors.push(format!("GET {key}: {e}")),
                        other => seen.wrong.push((key.clone(), want, format!("{other:?}"))),
                    }
                }
                drop(seen);
                i += 1;
            }
        });
        Writer { stop, seen, handle: Some(handle) }
    }

    /// Writes acknowledged so far.
    pub fn writes(&self) -> u64 {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).writes
    }

    /// Waits until `n` more writes were acknowledged (panics after `bound`).
    pub fn wait_progress(&self, n: u64, bound: Duration) {
        let base = self.writes();
        assert!(wait_until(bound, || self.writes() >= base + n), "the writer made no progress");
    }

    /// Stops the writer and returns what it saw.
    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Preloads `n` keys `pre:<i>` = `p<i>` through keyhop on `port`, pipelined.
pub fn preload(port: u16, n: u64) {
    let mut raw = Raw::connect(port);
    let mut i = 0;
    while i < n {
        let end = (i + 500).min(n);
        for j in i..end {
            let (k, v) = (format!("pre:{j}"), format!("p{j}"));
            raw.send(&[b"SET", k.as_bytes(), v.as_bytes()]);
        }
        for _ in i..end {
            assert_eq!(raw.read(), Reply::Status("OK".into()));
        }
        i = end;
    }
}

/// Checks `pre:<i>` = `p<i>` and every acknowledged write through keyhop on `port`.
pub fn assert_all_readable(port: u16, preloaded: u64, seen: &Seen) {
    let mut raw = Raw::connect(port);
    let mut tryagains = 0;
    for j in 0..preloaded {
        let k = format!("pre:{j}");
        let r = call_retry(&mut raw, &["GET", &k], &mut tryagains);
        assert_eq!(r, Reply::Bulk(Some(format!("p{j}").into_bytes())), "{k} through {port}");
    }
    for (k, v) in &seen.acked {
        let r = call_retry(&mut raw, &["GET", k], &mut tryagains);
        assert_eq!(r, Reply::Bulk(Some(v.clone().into_bytes())), "{k} through {port}");
    }
}

/// `keyhop slots migrate` of half the slots (0-4095 from g1, 8192-12287 from g2) to g3, in
/// windows of 1024 slots, at most `keys_per_second` keys a second by the mover.
pub fn move_half(keys_per_second: &str) -> [&str; 10] {
    [
        "slots",
        "migrate",
        "--slots",
        "0-4095,8192-12287",
        "--to",
        "g3",
        "--window",
        "1024",
        "--keys-per-second",
        keys_per_second,
    ]
}

/// The owner (group index) of `slot` after [`move_half`].
pub fn owner_after_half(slot: u16) -> usize {
    match slot {
        0..=4095 | 8192..=12287 => 2,
        4096..=8191 => 0,
        _ => 1,
    }
}

/// Waits (up to `bound`) for a spawned `keyhop slots migrate` and asserts it succeeded; `log`
/// gives its output for the message.
pub fn wait_success(child: &mut std::process::Child, bound: Duration, log: impl Fn() -> String) {
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the command") {
            break s;
        }
        assert!(started.elapsed() < bound, "the command did not finish: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the command failed: {}", log());
}

impl Seen {
    /// Prints the counts and asserts that every read saw the last acknowledged write and that
    /// no request failed, except with an error containing `allowed` (when given).
    pub fn assert_consistent(&self, allowed: Option<&str>) {
        eprintln!(
            "writes {} reads {} tryagains {} errors {}",
            self.writes,
            self.reads,
            self.tryagains,
            self.errors.len()
        );
        let unexpected: Vec<&String> =
            self.errors.iter().filter(|e| allowed.is_none_or(|a| !e.contains(a))).collect();
        assert!(unexpected.is_empty(), "errors: {:?}", &unexpected[..unexpected.len().min(10)]);
        assert!(
            self.wrong.is_empty(),
            "stale reads: {:?}",
            &self.wrong[..self.wrong.len().min(10)]
        );
        assert!(self.writes > 1000, "too few writes to mean anything: {}", self.writes);
    }
}
