//! Shared harness for integration tests: real `redis-server`, `redis-sentinel` and `keyhop`
//! processes on loopback ports picked per test, killed when dropped.
#![allow(dead_code)]

pub mod clients;
pub mod etcd;
pub mod failover;
pub mod fleet;
pub mod probe;
mod sentinel;
pub mod tls;

pub use sentinel::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago. Ports come from a per-process window that
/// differs between test binaries (so parallel binaries rarely collide) and are checked by binding.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 2000) as u16 * 10;
    for _ in 0..5000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (base - 20000 + n * 7) % 40000;
        if port < 20000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private temporary directory, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("keyhop-test-").tempdir().expect("create a temp dir")
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub port: u16,
    pub name: String,
    /// The server's working directory (RDB files from replication land here, not in the repo).
    pub dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// The process id, if still running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL now and wait for the exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by number (e.g. 15 for SIGTERM, 19 SIGSTOP, 18 SIGCONT).
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            send_signal(pid, sig);
        }
    }

    /// `host:port` of this process's listener.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `port` answers `PING` with `+PONG` (or a NOAUTH/LOADING error: the server is up).
pub fn wait_for_ping(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH")))
    })
}

/// Where `bin` is: the first `PATH` entry holding it (so a locally built or version-managed Redis
/// is used when it comes first), then the usual system directories (PATH may be minimal under
/// some runners).
pub fn find_bin(bin: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let from_path = path.into_iter().flat_map(std::env::split_paths);
    let system = ["/usr/bin", "/usr/local/bin", "/usr/sbin"].into_iter().map(PathBuf::from);
    from_path.chain(system).map(|dir| dir.join(bin)).find(|p| p.is_file())
}

fn need(bin: &str) -> String {
    match find_bin(bin, std::env::var_os("PATH").as_deref()) {
        Some(p) => p.to_string_lossy().into_owned(),
        None => panic!(
            "{bin} not found in PATH or /usr/bin, /usr/local/bin, /usr/sbin: install it with \
             `apt-get install -y redis-server redis-sentinel redis-tools`"
        ),
    }
}

/// Spawns `redis-server` on `port` (in its own temp dir) without waiting for it.
fn spawn_redis(port: u16, extra: &[&str]) -> Proc {
    let dir = temp_dir();
    let child = Command::new(need("redis-server"))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--daemonize", "no", "--logfile", ""])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    Proc { child: Some(child), port, name: format!("redis:{port}"), dir: Some(dir) }
}

/// Starts `redis-server` on a free port with `extra` arguments (e.g. `["--replicaof", "127.0.0.1", "7001"]`).
pub fn redis_server(extra: &[&str]) -> Proc {
    for _attempt in 0..5 {
        let mut p = spawn_redis(free_port(), extra);
        if wait_for_ping(p.port, Duration::from_secs(5)) {
            return p;
        }
        p.kill();
    }
    panic!("could not start redis-server on a free port");
}

/// Starts `redis-server` on exactly `port` with `extra` arguments (to bring a dead server back
/// at its address).
pub fn redis_server_on(port: u16, extra: &[&str]) -> Proc {
    let p = spawn_redis(port, extra);
    assert!(
        wait_for_ping(port, Duration::from_secs(5)),
        "redis-server did not come back on {port}"
    );
    p
}

/// Starts a replica of the server on `master_port` and waits until its link is up.
pub fn redis_replica(master_port: u16, extra: &[&str]) -> Proc {
    let mp = master_port.to_string();
    let mut args = vec!["--replicaof", "127.0.0.1", mp.as_str()];
    args.extend_from_slice(extra);
    let p = redis_server(&args);
    let up = wait_until(Duration::from_secs(10), || {
        cmd(p.port, &["INFO", "replication"]).contains("master_link_status:up")
    });
    assert!(up, "replica on {} never linked to master {master_port}", p.port);
    p
}

/// Path of the keyhop binary under test.
pub fn keyhop_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keyhop")
}

/// Starts keyhop with `config` (TOML; the string `{listen}` is replaced by a free port's address)
/// and waits until it answers PING. Its stderr goes to `dir/keyhop.log`.
pub fn keyhop(dir: &Path, config: &str) -> Proc {
    keyhop_with_args(dir, config, &[])
}

/// The test matrix: `KEYHOP_TEST_THREADS=N` and `KEYHOP_TEST_BACKEND_CONNECTIONS=N` set
/// `threads` and `backend_connections` in every keyhop config that doesn't set them itself, so
/// the same tests run on the multi-threaded data plane and with several shared connections.
pub fn matrix(config: &str) -> String {
    let mut head = String::new();
    for (var, key) in [
        ("KEYHOP_TEST_THREADS", "threads"),
        ("KEYHOP_TEST_BACKEND_CONNECTIONS", "backend_connections"),
    ] {
        let Ok(value) = std::env::var(var) else { continue };
        let value = value.trim();
        assert!(value.parse::<u32>().is_ok(), "{var}={value:?} is not a number");
        let set = config.lines().any(|l| {
            l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        if !set {
            head.push_str(&format!("{key} = {value}\n"));
        }
    }
    head + config
}

/// Under `KEYHOP_TEST_THREADS`, checks that keyhop really runs that many workers (its start-up
/// log line says so), unless the test's config chose its own.
fn check_matrix(dir: &Path, config: &str) {
    let Ok(n) = std::env::var("KEYHOP_TEST_THREADS") else { return };
    if config.lines().any(|l| l.trim_start().starts_with("threads")) {
        return;
    }
    let want = format!("threads={}", n.trim());
    let ok = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(dir.join("keyhop.log")).unwrap_or_default().contains(&want)
    });
    assert!(ok, "keyhop did not log {want} (KEYHOP_TEST_THREADS)");
}

/// Like [`keyhop`], with extra command-line arguments.
pub fn keyhop_with_args(dir: &Path, config: &str, args: &[&str]) -> Proc {
    keyhop_until(dir, config, args, |port| wait_for_ping(port, Duration::from_secs(10)))
}

/// Starts keyhop as [`keyhop_with_args`] does, ready once `ready(port)` says so (it waits with
/// its own deadline); another free port is tried when it never does.
pub fn keyhop_until(dir: &Path, config: &str, args: &[&str], ready: impl Fn(u16) -> bool) -> Proc {
    for _attempt in 0..5 {
        let port = free_port();
        let text = matrix(&config.replace("{listen}", &format!("127.0.0.1:{port}")));
        let path = dir.join("keyhop.toml");
        std::fs::write(&path, text).expect("write keyhop config");
        let log = std::fs::File::create(dir.join("keyhop.log")).expect("create keyhop log");
        let child = Command::new(keyhop_bin())
            .arg("--config")
            .arg(&path)
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn keyhop");
        let mut p = Proc { child: Some(child), port, name: format!("keyhop:{port}"), dir: None };
        if ready(port) {
            check_matrix(dir, config);
            return p;
        }
        p.kill();
        eprintln!(
            "keyhop did not come up; log:\n{}",
            std::fs::read_to_string(dir.join("keyhop.log")).unwrap_or_default()
        );
    }
    panic!("could not start keyhop on a free port");
}

/// keyhop's config for two single-server groups split at slot 8192 (`g1` below, `g2` above),
/// with short timeouts and `extra` top-level lines.
pub fn two_group_config(extra: &str, g1: &Proc, g2: &Proc) -> String {
    format!(
        "listen = \"{{listen}}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = 2000\n{extra}\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nslots = [\"0-8191\"]\n\n\
         [[groups]]\nname = \"g2\"\nmaster = \"{}\"\nslots = [\"8192-16383\"]\n",
        g1.addr(),
        g2.addr()
    )
}

/// keyhop's config for one group with a master and one replica, reads going to the replica.
pub fn replica_reads_config(master: &Proc, replica: &Proc) -> String {
    format!(
        "listen = \"{{listen}}\"\nread_from = \"replica-preferred\"\n\
         [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nreplicas = [\"{}\"]\n",
        master.addr(),
        replica.addr()
    )
}

/// `cmdstat_<name>:calls=N` from the server's INFO commandstats, 0 when absent.
pub fn command_calls(port: u16, name: &str) -> u64 {
    let info = cmd(port, &["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A minimal blocking RESP connection for tests that need raw bytes.
pub struct Raw {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

/// A decoded RESP2 or RESP3 reply, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
    /// RESP3 `_`.
    Null,
    /// RESP3 `#t` / `#f`.
    Bool(bool),
    /// RESP3 `,` (kept as text: `1.5`, `inf`).
    Double(String),
    /// RESP3 `(`.
    BigNumber(String),
    /// RESP3 `=`: format and text.
    Verbatim(String, Vec<u8>),
    /// RESP3 `%`.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`.
    Set(Vec<Reply>),
    /// RESP3 `>`.
    Push(Vec<Reply>),
}

impl Reply {
    /// The bulk string as UTF-8 (lossy); panics if not a bulk.
    pub fn text(&self) -> String {
        match self {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Verbatim(_, b) => String::from_utf8_lossy(b).into_owned(),
            Reply::Status(s) => s.clone(),
            other => panic!("expected a bulk or status reply, got {other:?}"),
        }
    }
}

impl Raw {
    /// Connects to 127.0.0.1:`port` with a 10 s read timeout.
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("set timeout");
        s.set_nodelay(true).expect("nodelay");
        Raw { reader: BufReader::new(s.try_clone().expect("clone")), writer: s }
    }

    /// Sends one command encoded as a RESP array.
    pub fn send(&mut self, args: &[&[u8]]) {
        self.writer.write_all(&encode(args)).expect("write");
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Sends a command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Reply {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.send(&a);
        self.read()
    }

    /// Reads one reply (panics on timeout or EOF).
    pub fn read(&mut self) -> Reply {
        self.try_read().expect("read a reply")
    }

    /// Reads one reply, or the I/O error / EOF.
    pub fn try_read(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let line = line.trim_end_matches("\r\n").trim_end_matches('\n');
        let (kind, rest) = line.split_at(1);
        let bad =
            |_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad line {line:?}"));
        Ok(match kind {
            "+" => Reply::Status(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(bad)?),
            "$" => {
                let n: i64 = rest.parse().map_err(bad)?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(bad)?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.try_read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            "_" => Reply::Null,
            "#" => Reply::Bool(rest == "t"),
            "," => Reply::Double(rest.to_string()),
            "(" => Reply::BigNumber(rest.to_string()),
            "=" | "!" => {
                let n: usize = rest.parse().map_err(bad)?;
                let mut buf = vec![0u8; n + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(n);
                if kind == "!" {
                    Reply::Error(String::from_utf8_lossy(&buf).into_owned())
                } else {
                    let text = buf.split_off(4.min(buf.len()));
                    let format = String::from_utf8_lossy(&buf).trim_end_matches(':').to_string();
                    Reply::Verbatim(format, text)
                }
            }
            "%" | "~" | ">" => {
                let n: usize = rest.parse().map_err(bad)?;
                let width = if kind == "%" { 2 } else { 1 };
                let mut items = Vec::with_capacity(n * width);
                for _ in 0..n * width {
                    items.push(self.try_read()?);
                }
                match kind {
                    "%" => {
                        let mut pairs = Vec::with_capacity(n);
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            pairs.push((k, v));
                        }
                        Reply::Map(pairs)
                    }
                    "~" => Reply::Set(items),
                    _ => Reply::Push(items),
                }
            }
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad reply line {line:?}"),
                ));
            }
        })
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs one command on 127.0.0.1:`port` over a fresh connection and renders the reply as text
/// (bulk/status text, `(error) ...`, integers, arrays joined by newlines). Handy for checks.
pub fn cmd(port: u16, args: &[&str]) -> String {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::from("(connect failed)");
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut raw = Raw { reader: BufReader::new(s.try_clone().expect("clone")), writer: s };
    match raw.call(args) {
        Reply::Status(s) => s,
        Reply::Error(e) => format!("(error) {e}"),
        Reply::Int(i) => i.to_string(),
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        Reply::Bulk(None) | Reply::Array(None) => "(nil)".into(),
        Reply::Array(Some(items)) => {
            items.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join("\n")
        }
        Reply::Null => "(nil)".into(),
        other => format!("{other:?}"),
    }
}

impl Raw {
    /// Connects to 127.0.0.1:`port` (5 s read timeout), or `None` when nothing listens.
    pub fn try_connect(port: u16) -> Option<Raw> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(Raw { reader: BufReader::new(s.try_clone().ok()?), writer: s })
    }

    /// Sends a command and reads its reply; `None` on any I/O error.
    pub fn try_call(&mut self, args: &[&str]) -> Option<Reply> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.writer.write_all(&encode(&a)).ok()?;
        self.try_read().ok()
    }
}

/// Length of the array a command answers on 127.0.0.1:`port` (0 for anything else, or no
/// connection).
pub fn array_len(port: u16, args: &[&str]) -> usize {
    match Raw::try_connect(port).and_then(|mut r| r.try_call(args)) {
        Some(Reply::Array(Some(items))) => items.len(),
        _ => 0,
    }
}

/// Two single-server groups split at slot 8192 behind keyhop, and a third server to compare
/// keyhop's replies with.
pub struct TwoGroups {
    /// keyhop's config and log.
    pub dir: tempfile::TempDir,
    pub g1: Proc,
    pub g2: Proc,
    pub direct: Proc,
    pub proxy: Proc,
}

impl TwoGroups {
    /// Starts the servers and keyhop, with `extra` top-level config lines.
    pub fn start(extra: &str) -> TwoGroups {
        let dir = temp_dir();
        let g1 = redis_server(&[]);
        let g2 = redis_server(&[]);
        let direct = redis_server(&[]);
        let proxy = keyhop(dir.path(), &two_group_config(extra, &g1, &g2));
        TwoGroups { dir, g1, g2, direct, proxy }
    }

    /// The server of group `group` (0 or 1).
    pub fn server(&self, group: usize) -> &Proc {
        if group == 0 { &self.g1 } else { &self.g2 }
    }

    /// keyhop's log so far.
    pub fn log(&self) -> String {
        keyhop_log(self.dir.path())
    }
}

/// The group (0: slots below 8192, 1: above) a key or channel belongs to under the tests' split.
pub fn group_of(name: &str) -> usize {
    usize::from(keyhop_router::key_slot(name.as_bytes()) >= 8192)
}

/// A hash tag `{...}` whose keys are in group `g` under the tests' split.
pub fn tag_of(g: usize) -> String {
    (0..1000)
        .map(|i| format!("{{t{i}}}"))
        .find(|t| group_of(t) == g)
        .expect("a tag of the group among 1000 candidates")
}

/// keyhop's log file in `dir` (as [`keyhop`] writes it), or "" when there is none.
pub fn keyhop_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("keyhop.log")).unwrap_or_default()
}

/// `ROLE`'s first element (`master`, `slave`), or what went wrong.
pub fn role(port: u16) -> String {
    let Some(mut raw) = Raw::try_connect(port) else { return "(connect failed)".into() };
    match raw.try_call(&["ROLE"]) {
        Some(Reply::Array(Some(items))) => match items.first() {
            Some(Reply::Bulk(Some(b))) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        },
        other => format!("{other:?}"),
    }
}

/// A pub/sub message frame's channel and payload (RESP2 `message` or `pmessage`); panics on
/// anything else (a subscriber must never see a confirmation it did not ask for).
pub fn message_of(r: Reply) -> (String, String) {
    let Reply::Array(Some(items)) = r else { panic!("not a message: {r:?}") };
    let text: Vec<String> = items.iter().map(|i| i.text()).collect();
    match text[0].as_str() {
        "message" => (text[1].clone(), text[2].clone()),
        "pmessage" => (text[2].clone(), text[3].clone()),
        _ => panic!("not a message: {text:?}"),
    }
}

/// Sends signal `sig` to process `pid` (ignoring a process that is already gone). Through the
/// system call, not the `kill` program: a minimal Debian has no procps.
pub fn send_signal(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe { libc::kill(pid, sig) };
    }
}
