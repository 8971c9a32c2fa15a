//! The admin dashboard as a person sees it: headless Chromium (through puppeteer-core and
//! tests/clients/dashboard.mjs) opens `GET /` on admin_listen in front of a real Sentinel
//! cluster with traffic flowing, and the page's own JavaScript must show both groups, their real
//! masters, nonzero request rates, and a Sentinel failover within 2 s of keyhop knowing it.
//! Chromium and puppeteer-core come from scripts/setup.sh (CI installs them): when they are
//! missing the test fails, it never skips.

mod common;

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::clients::{node, repo};
use common::failover::{FAILOVER_BOUND, Writer};
use common::{SentinelCluster, find_bin, free_port, keyhop, keyhop_log, temp_dir, wait_until};
use serde_json::Value;

/// How long the page may take from the first request to its second successful poll, including
/// Chromium's start on a loaded 2-core machine (the driver has its own, shorter, bound too).
const READY_BOUND: Duration = Duration::from_secs(60);

/// GET `path` over a fresh connection: (status, body), or `None` on any I/O problem.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// `group`'s master `host:port` in keyhop's /topology, if it answers.
fn topology_master(admin: u16, group: &str) -> Option<String> {
    let (_, body) = get(admin, "/topology")?;
    let t: Value = serde_json::from_str(&body).ok()?;
    let g = t["groups"].as_array()?.iter().find(|g| g["name"] == group)?;
    g["master"]["addr"].as_str().map(str::to_string)
}

/// The browser binary: `KEYHOP_CHROMIUM`, else chromium or chromium-browser on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("KEYHOP_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "KEYHOP_CHROMIUM={} is not a file: unset it, or install chromium with \
             `bash scripts/setup.sh chromium`",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH");
    find_bin("chromium", path.as_deref())
        .or_else(|| find_bin("chromium-browser", path.as_deref()))
        .unwrap_or_else(|| {
            panic!(
                "chromium not found (PATH, /usr/bin, /usr/local/bin): install it with \
                 `bash scripts/setup.sh chromium` (CI does, through ./dev test)"
            )
        })
}

/// Fails (naming scripts/setup.sh) unless node and puppeteer-core are installed.
fn require_node_and_puppeteer() {
    let node = node();
    let puppeteer = repo().join("target/test-clients/node/node_modules/puppeteer-core");
    assert!(
        node.exists() && puppeteer.join("package.json").exists(),
        "{} or {} is missing: install them with `bash scripts/setup.sh clients` \
         (CI does, through ./dev test)",
        node.display(),
        puppeteer.display()
    );
}

/// tests/clients/dashboard.mjs running against one URL; its stdout lines arrive on a channel.
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: PathBuf,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl Driver {
    fn start(browser: &Path, url: &str, screenshot: &Path, dir: &Path) -> Driver {
        let node = node();
        let stderr = dir.join("dashboard-driver.log");
        let mut child = Command::new(&node)
            .arg(repo().join("tests/clients/dashboard.mjs"))
            .arg(url)
            .arg(screenshot)
            .env("KEYHOP_CHROMIUM", browser)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create driver log"))
            .spawn()
            .unwrap_or_else(|e| panic!("run {} tests/clients/dashboard.mjs: {e}", node.display()));
        let stdout = child.stdout.take().expect("driver stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Driver { child, stdin, lines, stderr, seen: Vec::new() }
    }

    fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("driver stdin");
        writeln!(stdin, "{command}")
            .unwrap_or_else(|e| panic!("driver gone ({e}): {}", self.why()));
    }

    /// The driver's stderr and the last lines it printed.
    fn why(&self) -> String {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let tail = self.seen.iter().rev().take(5).rev().cloned().collect::<Vec<_>>().join("\n");
        format!("driver stderr:\n{err}\nlast lines:\n{tail}")
    }

    /// Reads lines until one satisfies `want` (within `bound`); panics naming `what` otherwise.
    fn until(
        &mut self,
        what: &str,
        bound: Duration,
        mut want: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("driver printed non-JSON ({e}): {line}"));
                    self.seen.push(line);
                    if want(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{what}: not within {bound:?}; {}", self.why())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!("{what}: the driver exited ({status:?}); {}", self.why())
                }
            }
        }
    }

    /// Sends `quit` and waits (bounded) for a clean exit.
    fn quit(mut self) {
        self.send("quit");
        drop(self.stdin.take());
        let mut status = None;
        wait_until(Duration::from_secs(15), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        assert!(status.is_some_and(|s| s.success()), "driver exit {status:?}; {}", self.why());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `groups.NAME.ops` when it is a number greater than zero.
fn ops_positive(state: &Value, group: &str) -> bool {
    state["groups"][group]["ops"].as_f64().is_some_and(|n| n > 0.0)
}

#[test]
fn dashboard_shows_groups_traffic_and_a_failover() {
    // Checked first: a machine without them fails at once, before the cluster starts.
    let browser = chromium();
    require_node_and_puppeteer();
    let cluster = SentinelCluster::new();
    let admin = free_port();
    let kdir = temp_dir();
    let config = cluster.keyhop_config(&format!("admin_listen = \"127.0.0.1:{admin}\""));
    let k = keyhop(kdir.path(), &config);
    let ready =
        wait_until(Duration::from_secs(10), || matches!(get(admin, "/readyz"), Some((200, _))));
    assert!(ready, "keyhop never ready: {:?}\n{}", get(admin, "/readyz"), keyhop_log(kdir.path()));
    let (g1_master, g1_replica, g2_master) = (cluster.addr(0), cluster.addr(1), cluster.addr(2));

    let writer = Writer::start(k.port);
    writer.wait_progress(100, Duration::from_secs(10));

    let shot = kdir.path().join("dashboard.png");
    let mut driver =
        Driver::start(&browser, &format!("http://127.0.0.1:{admin}/"), &shot, kdir.path());
    let first = driver.until("the page polling twice", READY_BOUND, |v| v["phase"] == "ready");
    let mut names: Vec<&String> =
        first["groups"].as_object().map(|g| g.keys().collect()).unwrap_or_default();
    names.sort();
    assert_eq!(names, ["g1", "g2"], "groups on the page: {first}");
    assert_eq!(first["groups"]["g1"]["master"], g1_master.as_str(), "{first}");
    assert_eq!(first["groups"]["g2"]["master"], g2_master.as_str(), "{first}");
    assert_eq!(first["slotmap"], true, "no #slotmap: {first}");

    // Rates need two polls with traffic between them; the page polls once a second.
    if !(ops_positive(&first, "g1") && ops_positive(&first, "g2")) {
        driver.until("ops > 0 for g1 and g2", Duration::from_secs(15), |v| {
            ops_positive(v, "g1") && ops_positive(v, "g2")
        });
    }

    cluster.force_failover(0, "g1", FAILOVER_BOUND);
    let mut seen = None;
    let switched = wait_until(FAILOVER_BOUND, || {
        seen = topology_master(admin, "g1");
        seen.as_deref() == Some(g1_replica.as_str())
    });
    assert!(switched, "keyhop's /topology never showed g1 on {g1_replica}: {seen:?}");

    driver.send(&format!("wait-master g1 {g1_replica} 2000"));
    let m =
        driver.until("the wait-master answer", Duration::from_secs(10), |v| v["phase"] == "master");
    assert_eq!(m["ok"], true, "page did not show g1 on {g1_replica} with a failover event: {m}");
    assert!(m["after_ms"].as_u64().is_some_and(|ms| ms <= 2000), "{m}");
    assert_eq!(m["groups"]["g2"]["master"], g2_master.as_str(), "g2 must not move: {m}");

    driver.send("screenshot");
    driver.until("the screenshot", Duration::from_secs(20), |v| v["phase"] == "screenshot");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "{} is {size} bytes, expected a real page (> 10 KB)", shot.display());
    if let Some(dest) = std::env::var_os("KEYHOP_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, &dest).unwrap_or_else(|e| {
            panic!("copy the screenshot to {}: {e}", Path::new(&dest).display())
        });
    }
    driver.quit();
    writer.finish();
}
