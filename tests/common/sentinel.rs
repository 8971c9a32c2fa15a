//! Sentinel-side harness: `redis-sentinel` processes, the two-group cluster most failover tests
//! start from, and a stand-in listener that counts reconnect attempts to a dead sentinel.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Proc, array_len, cmd, free_port, need, temp_dir, wait_for_ping, wait_until};
use super::{redis_replica, redis_server};

/// Starts a sentinel monitoring `masters` (name, port) with quorum `quorum`,
/// `down-after-milliseconds 1000` and `failover-timeout 3000`. `dir` must outlive it.
pub fn redis_sentinel(dir: &Path, masters: &[(&str, u16)], quorum: u32) -> Proc {
    redis_sentinel_with(dir, masters, quorum, "")
}

/// Like [`redis_sentinel`], with `extra` config lines appended (e.g. `requirepass ...`).
pub fn redis_sentinel_with(dir: &Path, masters: &[(&str, u16)], quorum: u32, extra: &str) -> Proc {
    for _attempt in 0..5 {
        let port = free_port();
        let file: PathBuf = dir.join(format!("sentinel-{port}.conf"));
        let mut conf = format!("port {port}\nbind 127.0.0.1\ndir {}\n", dir.display());
        for (name, mport) in masters {
            conf.push_str(&format!(
                "sentinel monitor {name} 127.0.0.1 {mport} {quorum}\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n"
            ));
        }
        conf.push_str(extra);
        conf.push('\n');
        std::fs::write(&file, conf).expect("write sentinel config");
        let mut p = spawn_sentinel(&file, port);
        if wait_for_ping(port, Duration::from_secs(5)) {
            return p;
        }
        p.kill();
    }
    panic!("could not start redis-sentinel on a free port");
}

/// Spawns `redis-sentinel` with config `file` (which says `port`) without waiting for it.
fn spawn_sentinel(file: &Path, port: u16) -> Proc {
    let child = Command::new(need("redis-sentinel"))
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-sentinel");
    Proc { child: Some(child), port, name: format!("sentinel:{port}"), dir: None }
}

/// Starts `redis-sentinel` again on `port` with the config file [`redis_sentinel`] wrote for it
/// in `dir` (sentinels rewrite it with what they learned).
pub fn restart_sentinel(dir: &Path, port: u16) -> Proc {
    let file = dir.join(format!("sentinel-{port}.conf"));
    assert!(file.exists(), "no sentinel config file {}", file.display());
    let p = spawn_sentinel(&file, port);
    assert!(
        wait_for_ping(port, Duration::from_secs(10)),
        "restarted sentinel on {port} does not answer"
    );
    p
}

/// Connection attempts to a dead server's port: a listener there accepts and closes each one at
/// once (to the client, as good as a refused connection) and counts them. Evidence that a client
/// kept retrying, instead of a fixed wait. Frees the port when dropped.
pub struct Knocks {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Knocks {
    /// Listens on 127.0.0.1:`port` (the dead server's; its old connections may linger in
    /// TIME_WAIT, which the listener's SO_REUSEADDR allows).
    pub fn listen(port: u16) -> Knocks {
        let l = TcpListener::bind(("127.0.0.1", port)).expect("bind the dead server's port");
        l.set_nonblocking(true).expect("non-blocking listener");
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        drop(conn);
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Knocks { count, stop, handle: Some(handle) }
    }

    /// Connection attempts so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Knocks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Two groups `g1` and `g2`, each a master and a replica, watched by three sentinels with quorum 2
/// (`down-after-milliseconds 1000`).
pub struct SentinelCluster {
    /// Sentinel configuration files; declared first so it is removed last.
    pub dir: tempfile::TempDir,
    /// g1 master, g1 replica, g2 master, g2 replica.
    pub servers: Vec<Proc>,
    /// The three sentinels.
    pub sentinels: Vec<Proc>,
}

impl SentinelCluster {
    /// Starts the servers and sentinels and waits (up to `ready_within`) until every sentinel
    /// knows the two others and each group's replica: a failover needs both.
    pub fn new_ready(ready_within: Duration) -> SentinelCluster {
        let dir = temp_dir();
        let m1 = redis_server(&[]);
        let r1 = redis_replica(m1.port, &[]);
        let m2 = redis_server(&[]);
        let r2 = redis_replica(m2.port, &[]);
        let groups = [("g1", m1.port), ("g2", m2.port)];
        let sentinels: Vec<Proc> = (0..3).map(|_| redis_sentinel(dir.path(), &groups, 2)).collect();
        let c = SentinelCluster { dir, servers: vec![m1, r1, m2, r2], sentinels };
        let ready = wait_until(ready_within, || {
            c.sentinels.iter().all(|s| {
                ["g1", "g2"].iter().all(|g| {
                    array_len(s.port, &["SENTINEL", "sentinels", g]) == 2
                        && array_len(s.port, &["SENTINEL", "replicas", g]) == 1
                })
            })
        });
        assert!(ready, "sentinels did not discover each other and the replicas in time");
        c
    }

    /// Port of server `i` (0 g1 master, 1 g1 replica, 2 g2 master, 3 g2 replica).
    pub fn port(&self, i: usize) -> u16 {
        self.servers[i].port
    }

    /// `host:port` of server `i`.
    pub fn addr(&self, i: usize) -> String {
        self.servers[i].addr()
    }

    /// Restarts sentinel `i` (after a kill) on its port with its own, rewritten, config file.
    pub fn restart_sentinel(&mut self, i: usize) {
        let port = self.sentinels[i].port;
        self.sentinels[i] = restart_sentinel(self.dir.path(), port);
    }

    /// `SENTINEL FAILOVER group` through sentinel `i`, retried (for up to `within`) while
    /// Sentinel refuses, e.g. `-NOGOODSLAVE` right after a restart; returns when it was accepted.
    pub fn force_failover(&self, i: usize, group: &str, within: Duration) -> Instant {
        let mut last = String::new();
        let mut accepted = None;
        let ok = wait_until(within, || {
            let at = Instant::now();
            last = cmd(self.sentinels[i].port, &["SENTINEL", "FAILOVER", group]);
            if last == "OK" {
                accepted = Some(at);
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
            false
        });
        assert!(ok, "SENTINEL FAILOVER {group} kept failing: {last}");
        accepted.unwrap_or_else(Instant::now)
    }
}

impl SentinelCluster {
    /// keyhop's Sentinel-mode configuration for this cluster (g1 slots 0-8191, g2 the rest),
    /// plus `extra` top-level lines.
    pub fn keyhop_config(&self, extra: &str) -> String {
        let addrs: Vec<String> =
            self.sentinels.iter().map(|s| format!("\"{}\"", s.addr())).collect();
        format!(
            "listen = \"{{listen}}\"\nconnect_timeout_ms = 500\nrequest_timeout_ms = 1000\n{extra}\n\
             [sentinel]\naddrs = [{}]\npoll_interval_ms = 1000\n\n\
             [[groups]]\nname = \"g1\"\nslots = [\"0-8191\"]\n\n\
             [[groups]]\nname = \"g2\"\nslots = [\"8192-16383\"]\n",
            addrs.join(", ")
        )
    }
}
