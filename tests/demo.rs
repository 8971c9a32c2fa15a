//! `keyhop demo`: comes up as a fleet member (Sentinel + etcd), serves, follows a forced failover,
//! grows from 2 to 3 groups with the `keyhop slots rebalance` line it prints, and leaves no process
//! (etcd included) or temp dir behind, whether stopped by a signal or killed outright.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{run_bounded, text};
use common::{Raw, Reply, cmd, free_port, keyhop_bin, wait_until};
use keyhop_router::key_slot;

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// A running `keyhop demo` whose stdout is collected by a thread.
struct Demo {
    child: Option<Child>,
    port: u16,
    out: Arc<Mutex<String>>,
}

/// What the banner tells.
struct Banner {
    temp_dir: PathBuf,
    /// Every child's pid.
    pids: Vec<u32>,
    sentinels: Vec<u16>,
    /// The printed `keyhop slots rebalance --config ...` command line.
    rebalance: String,
    /// The printed `keyhop slots show --config ...` command line.
    show: String,
    /// The admin endpoint's port, from the printed `curl .../topology` line.
    admin_port: u16,
}

impl Demo {
    fn start() -> Demo {
        let port = free_port();
        let mut child = Command::new(keyhop_bin())
            .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn keyhop demo");
        let out = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Demo { child: Some(child), port, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the banner and parses it.
    fn banner(&self) -> Banner {
        let up = wait_until(Duration::from_secs(90), || self.output().contains("Ctrl-C stops"));
        assert!(up, "no banner; output so far:\n{}", self.output());
        let text = self.output();
        let temp_dir = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("temp dir"))
            .map(|d| PathBuf::from(d.trim()))
            .expect("temp dir line");
        let mut pids = Vec::new();
        let mut sentinels = Vec::new();
        for line in text.lines().filter(|l| l.contains("127.0.0.1:") && l.contains("(pid ")) {
            let pid = line.split("(pid ").nth(1).and_then(|r| r.trim_end_matches(')').parse().ok());
            pids.push(pid.expect("pid"));
            if line.trim_start().starts_with("sentinel") {
                let port =
                    line.split("127.0.0.1:").nth(1).and_then(|r| r.split_whitespace().next());
                sentinels.push(port.and_then(|p| p.parse().ok()).expect("sentinel port"));
            }
        }
        assert_eq!(pids.len(), 10, "6 servers, 3 sentinels and etcd in:\n{text}");
        assert_eq!(sentinels.len(), 3, "{text}");
        assert_eq!(
            text.lines().filter(|l| l.trim_start().starts_with("etcd ")).count(),
            1,
            "{text}"
        );
        let command = |what: &str| {
            text.lines()
                .map(str::trim)
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("no `{what}` line in:\n{text}"))
                .to_string()
        };
        let rebalance = command(" slots rebalance --config ");
        let show = command(" slots show --config ");
        let topology = command("/topology   # its \"fleet\" object");
        let admin_port = topology
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("admin port in {topology:?}"));
        Banner { temp_dir, pids, sentinels, rebalance, show, admin_port }
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            common::send_signal(c.id(), sig);
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether `pid` still runs (a zombie waiting for a reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        Err(_) => false,
    }
}

/// The master address a sentinel reports for `group`, as `ip:port`.
fn sentinel_master(sentinel: u16, group: &str) -> Option<String> {
    let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", sentinel)) else { return None };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut raw = Raw { reader: BufReader::new(s.try_clone().ok()?), writer: s };
    raw.send(&[b"SENTINEL", b"get-master-addr-by-name", group.as_bytes()]);
    match raw.try_read().ok()? {
        Reply::Array(Some(v)) if v.len() == 2 => Some(format!("{}:{}", v[0].text(), v[1].text())),
        _ => None,
    }
}

/// Runs a command line the banner printed, as a user pasting it into a shell would.
fn run_printed(line: &str, extra: &str, bound: Duration) -> std::process::Output {
    // `exec`: a timeout kills keyhop itself, not just the shell. The line may end in a comment.
    let (line, _) = line.split_once(" #").unwrap_or((line, ""));
    run_bounded(Command::new("sh").arg("-c").arg(format!("exec {line} {extra}")), bound)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
}

#[test]
fn demo_serves_follows_a_failover_and_cleans_up_on_sigterm() {
    let mut demo = Demo::start();
    let b = demo.banner();
    assert!(b.temp_dir.join("keyhop.toml").exists());

    assert_eq!(cmd(demo.port, &["SET", "foo", "hello"]), "OK");
    assert_eq!(cmd(demo.port, &["SET", "bar", "world"]), "OK");
    assert_eq!(cmd(demo.port, &["GET", "foo"]), "hello");

    // bar (slot 5061) lives in g1. Force g1's failover through a printed sentinel.
    let old = sentinel_master(b.sentinels[0], "g1").expect("g1's master");
    assert_eq!(cmd(port_of(&old), &["GET", "bar"]), "world");
    let answer = cmd(b.sentinels[0], &["SENTINEL", "FAILOVER", "g1"]);
    assert_eq!(answer, "OK", "output:\n{}", demo.output());
    let mut new = None;
    let switched = wait_until(Duration::from_secs(30), || {
        new = sentinel_master(b.sentinels[0], "g1").filter(|m| *m != old);
        new.is_some()
    });
    assert!(switched, "sentinel never promoted g1's replica");
    let new = new.expect("new master");
    // keyhop follows: a write to a g1 key succeeds and lands on the new master.
    let mut n = 0;
    let followed = wait_until(Duration::from_secs(20), || {
        n += 1;
        let v = format!("after-{n}");
        cmd(demo.port, &["SET", "bar", &v]) == "OK" && cmd(port_of(&new), &["GET", "bar"]) == v
    });
    assert!(followed, "keyhop did not follow g1 to {new}: {}", cmd(demo.port, &["INFO", "keyhop"]));

    // Grow to 3 groups with the printed command while the demo serves; keys written before stay.
    let keys: Vec<String> = (0..300).map(|i| format!("demo:{i}")).collect();
    for k in &keys {
        assert_eq!(cmd(demo.port, &["SET", k, &format!("v-{k}")]), "OK");
    }
    assert!(b.rebalance.contains("# moves 5462-8191,13653-16383 to g3"), "{}", b.rebalance);
    let out = run_printed(&b.rebalance, "", Duration::from_secs(120));
    assert!(out.status.success(), "{}: {}", b.rebalance, text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("move 5462-8191,13653-16383 to g3"),
        "{}",
        text(&out)
    );
    let out = run_printed(&b.show, "--json", Duration::from_secs(20));
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("slots show --json");
    let g3 = v["groups"].as_array().and_then(|g| g.iter().find(|g| g["name"] == "g3")).cloned();
    assert_eq!(g3.as_ref().map(|g| g["slot_count"].clone()), Some(serde_json::json!(5461)), "{v}");
    assert_eq!(v["flux"], serde_json::json!([]), "{v}");
    // /topology's fleet object reaches the revision `slots show` reports, g3 owning its share.
    let revision = v["revision"].as_i64().expect("revision");
    let mut topo = serde_json::Value::Null;
    let caught_up = wait_until(Duration::from_secs(20), || {
        let resp = common::probe::http_get(b.admin_port, "/topology");
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        topo = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        topo["fleet"]["revision"].as_i64() == Some(revision)
    });
    assert!(caught_up, "/topology never reached revision {revision}: {topo}");
    assert_eq!(topo["fleet"]["flux"], serde_json::json!([]), "{topo}");
    assert_eq!(topo["groups"][2]["name"], "g3", "{topo}");
    assert_eq!(topo["groups"][2]["slots"], "5462-8191,13653-16383", "{topo}");
    for k in &keys {
        assert_eq!(cmd(demo.port, &["GET", k]), format!("v-{k}"), "{k} after the rebalance");
    }
    assert_eq!(cmd(demo.port, &["GET", "foo"]), "hello");
    // The moved slots' keys are on g3's master now, and only those.
    let moved = keys
        .iter()
        .filter(|k| matches!(key_slot(k.as_bytes()), 5462..=8191 | 13653..=16383))
        .count();
    assert!(moved > 50, "only {moved} of the keys are in moved slots");
    let g3_master = sentinel_master(b.sentinels[0], "g3").expect("g3's master");
    assert_eq!(cmd(port_of(&g3_master), &["DBSIZE"]), moved.to_string());

    demo.signal(SIGTERM);
    let status = demo.wait_exit(Duration::from_secs(20)).expect("demo did not exit");
    assert!(status.success(), "exit status {status}");
    let gone = wait_until(Duration::from_secs(5), || b.pids.iter().all(|&p| !alive(p)));
    assert!(gone, "left running: {:?}", b.pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>());
    assert!(!b.temp_dir.exists(), "{} not removed", b.temp_dir.display());
    assert!(demo.output().contains("removed"), "{}", demo.output());
}

#[test]
fn demo_children_die_even_when_keyhop_is_killed() {
    let mut demo = Demo::start();
    let b = demo.banner();
    assert!(b.pids.iter().all(|&p| alive(p)));
    demo.signal(SIGKILL);
    let _ = demo.wait_exit(Duration::from_secs(5));
    let gone = wait_until(Duration::from_secs(10), || b.pids.iter().all(|&p| !alive(p)));
    let left: Vec<u32> = b.pids.iter().copied().filter(|&p| alive(p)).collect();
    // A killed demo cannot remove its dir; the next demo would. Tidy up here.
    let _ = std::fs::remove_dir_all(&b.temp_dir);
    assert!(gone, "children outlived a SIGKILLed keyhop: {left:?}");
}

/// Runs `keyhop demo` with only `bins` (symlinked from the real PATH) on PATH; its stderr.
fn demo_with_only(bins: &[&str]) -> String {
    let dir = common::temp_dir();
    for name in bins {
        let real = std::env::var_os("PATH")
            .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.exists()))
            .unwrap_or_else(|| panic!("{name} on PATH"));
        std::os::unix::fs::symlink(&real, dir.path().join(name)).expect("symlink");
    }
    let out = Command::new(keyhop_bin())
        .args(["demo", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("PATH", dir.path())
        .output()
        .expect("run keyhop demo");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("starting"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn demo_without_redis_or_etcd_on_path_says_how_to_install_them() {
    let err = demo_with_only(&[]);
    assert!(
        err.contains(
            "the demo runs redis-server, redis-sentinel and etcd, and redis-server, \
             redis-sentinel and etcd are not on PATH.\nInstall them, then run the demo again:"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "sudo apt-get install -y redis-server redis-sentinel redis-tools etcd-server\n"
        ),
        "{err}"
    );
    assert!(err.contains("brew install redis etcd\n"), "{err}");
    assert!(err.contains("./dev demo"), "{err}");

    // With some found, the message names just the missing ones and their packages.
    let err = demo_with_only(&["redis-server"]);
    assert!(
        err.contains(
            "the demo runs redis-server, redis-sentinel and etcd, and redis-sentinel and etcd \
             are not on PATH."
        ),
        "{err}"
    );
    let err = demo_with_only(&["redis-server", "redis-sentinel"]);
    assert!(
        err.contains(
            "the demo runs redis-server, redis-sentinel and etcd, and etcd is not on PATH.\n\
             Install it, then run the demo again:"
        ),
        "{err}"
    );
    assert!(err.contains("sudo apt-get install -y etcd-server\n"), "{err}");
    assert!(err.contains("brew install etcd\n"), "{err}");
}

#[test]
fn demo_on_a_busy_port_says_so_and_starts_nothing() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr");
    let start = Instant::now();
    let out = Command::new(keyhop_bin())
        .args(["demo", "--listen", &addr.to_string()])
        .output()
        .expect("run keyhop demo");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use") && err.contains("--listen"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("starting"));
}
