//! Third-party client programs (redis-py, node-redis, RQ, BullMQ ...) run against keyhop and a
//! direct redis-server: installing them, running them with a time bound, and comparing outputs.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Proc, keyhop, redis_server, temp_dir};

/// How long installing the clients may take (apt-get, pip and npm on a fresh machine).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where scripts/install-test-clients.sh puts the clients.
pub fn clients_dir() -> PathBuf {
    repo().join("target").join("test-clients")
}

/// The endpoint under test: keyhop in front of its groups, or (see the module doc) a plain
/// redis-server standing in for it.
pub struct UnderTest {
    /// keyhop's log file, when it is keyhop.
    pub log: Option<PathBuf>,
    pub port: u16,
    _proxy: Proc,
    _groups: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl UnderTest {
    /// keyhop with `groups` groups (1 or 2) of one redis-server each, slots split evenly.
    pub fn start(groups: usize) -> UnderTest {
        let dir = temp_dir();
        if std::env::var_os("KEYHOP_COMPAT_AGAINST_DIRECT").is_some() {
            eprintln!("KEYHOP_COMPAT_AGAINST_DIRECT is set: comparing two plain redis-servers");
            let server = redis_server(&[]);
            return UnderTest {
                log: None,
                port: server.port,
                _proxy: server,
                _groups: Vec::new(),
                _dir: dir,
            };
        }
        let servers: Vec<Proc> = (0..groups).map(|_| redis_server(&[])).collect();
        let per = 16384 / groups;
        let mut config = String::from(
            "listen = \"{listen}\"\nallow_flush = true\nconnect_timeout_ms = 1000\nrequest_timeout_ms = 5000\n",
        );
        for (i, s) in servers.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == groups { 16383 } else { first + per - 1 };
            config.push_str(&format!(
                "\n[[groups]]\nname = \"g{}\"\nmaster = \"{}\"\nslots = [\"{first}-{last}\"]\n",
                i + 1,
                s.addr()
            ));
        }
        let proxy = keyhop(dir.path(), &config);
        UnderTest {
            log: Some(dir.path().join("keyhop.log")),
            port: proxy.port,
            _proxy: proxy,
            _groups: servers,
            _dir: dir,
        }
    }

    /// The last lines of keyhop's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log else { return String::new() };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!("\nlast lines of keyhop's log:\n{}", lines[from..].join("\n"))
    }
}

/// Runs `cmd` with piped output, killing it after `timeout`. Returns (status, stdout, stderr);
/// the status is `None` when it had to be killed.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    (status, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// The Node.js that runs the node clients: the one scripts/install-test-clients.sh chose (the
/// system's when it is at least 20, else a current one from the npm registry).
pub fn node() -> PathBuf {
    clients_dir().join("bin/node")
}

/// Installs the clients with the repo's script unless both are there already (once per test
/// binary; tests running in parallel wait for it).
pub fn ensure_clients() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut done = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = clients_dir();
    let present = dir.join("python/redis/__init__.py").exists()
        && dir.join("python/rq/__init__.py").exists()
        && dir.join("node/node_modules/redis/package.json").exists()
        && dir.join("node/node_modules/bullmq/package.json").exists()
        && dir.join("node/node_modules/ioredis/package.json").exists()
        && dir.join("bin/node").exists();
    if !present {
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/install-test-clients.sh"));
        let (status, out, err) = run_bounded(cmd, INSTALL_TIMEOUT);
        assert!(
            status.is_some_and(|s| s.success()),
            "scripts/install-test-clients.sh failed ({status:?}):\n{out}\n{err}"
        );
        eprint!("{out}");
    }
    *done = true;
}

/// Asserts equal outputs, naming the first differing line and printing every one.
pub fn assert_same(what: &str, direct: &[String], proxied: &[String], ut: &UnderTest) {
    if direct == proxied {
        return;
    }
    let mut first = None;
    let mut diff = String::new();
    for i in 0..direct.len().max(proxied.len()) {
        let (a, b) = (direct.get(i), proxied.get(i));
        if a != b {
            first.get_or_insert(i + 1);
            diff.push_str(&format!(
                "line {}:\n  - direct: {}\n  + keyhop: {}\n",
                i + 1,
                a.map_or("(none)", |s| s.as_str()),
                b.map_or("(none)", |s| s.as_str())
            ));
        }
    }
    panic!(
        "{what}: keyhop's replies differ from redis-server's ({} vs {} lines), first at line {}:\n{diff}{}",
        direct.len(),
        proxied.len(),
        first.unwrap_or(0),
        ut.log_tail()
    );
}
