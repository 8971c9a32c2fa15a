//! The demo's local topology: redis-server, redis-sentinel and etcd children in a private temp
//! dir, tied to keyhop's lifetime.
//!
//! Children are killed and the dir removed when [`Topology`] is dropped (normal exit, Ctrl-C,
//! or a panic unwinding through the demo). On Linux each child also gets
//! `PR_SET_PDEATHSIG(SIGKILL)`, so even a SIGKILLed keyhop takes them down; only the temp dir
//! stays then, and the next demo removes it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::{self, Value};

/// Prefix of the demo's temp dirs; the owner's pid follows it.
const DIR_PREFIX: &str = "keyhop-demo-";

/// One child process.
pub struct Member {
    /// What it is, e.g. `g1 master`, `sentinel` or `etcd`.
    pub role: String,
    /// Its loopback port.
    pub port: u16,
    child: Child,
}

impl Member {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The programs the demo runs, found on PATH.
pub struct Bins {
    /// `redis-server`.
    pub server: PathBuf,
    /// `redis-sentinel`.
    pub sentinel: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
}

/// The running servers, sentinels and etcd.
pub struct Topology {
    /// The temp dir holding every process's files and keyhop's config.
    pub dir: PathBuf,
    /// Every child, in start order.
    pub members: Vec<Member>,
    bins: Bins,
}

/// Looks `name` up in PATH.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port that was free a moment ago (the kernel's pick).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Spawns `cmd` so that it dies with this process (Linux: `PR_SET_PDEATHSIG`). The signal fires
/// when the spawning *thread* exits, so the demo spawns from the main thread, which lives as long
/// as the process.
fn spawn_tied(cmd: &mut Command) -> io::Result<Child> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and only calls prctl and getppid, which
        // are async-signal-safe, and builds an io::Error from a raw errno (no allocation).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect: then nobody would kill us.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    cmd.spawn()
}

impl Topology {
    /// Creates the temp dir (removing dirs left by demos that were killed).
    pub fn new(bins: Bins) -> io::Result<Topology> {
        let base = std::env::temp_dir();
        remove_stale_dirs(&base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = base.join(format!("{DIR_PREFIX}{}-{nanos:x}", std::process::id()));
        std::fs::create_dir(&dir)?;
        Ok(Topology { dir, members: Vec::new(), bins })
    }

    /// Starts a redis-server in its own dir (a replica of `replica_of` if given) and waits until
    /// it answers PING; retries on another port if the picked one was taken meanwhile.
    pub fn start_server(&mut self, role: &str, replica_of: Option<u16>) -> Result<u16, String> {
        for _ in 0..3 {
            let port = free_port().map_err(|e| format!("cannot pick a port: {e}"))?;
            let dir = self.dir.join(format!("redis-{port}"));
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut cmd = Command::new(&self.bins.server);
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"));
            if let Some(m) = replica_of {
                cmd.args(["--replicaof", "127.0.0.1", &m.to_string()]);
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            if self.spawn_and_wait(role, port, &mut cmd, PING_WAIT, pong)? {
                return Ok(port);
            }
        }
        Err(format!(
            "{role}: redis-server did not come up (see the logs in {})",
            self.dir.display()
        ))
    }

    /// Starts a redis-sentinel with its own writable config file monitoring `masters`.
    pub fn start_sentinel(&mut self, masters: &[(&str, u16)], quorum: u32) -> Result<u16, String> {
        for _ in 0..3 {
            let port = free_port().map_err(|e| format!("cannot pick a port: {e}"))?;
            let dir = self.dir.join(format!("sentinel-{port}"));
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n",
                dir.display(),
                dir.join("sentinel.log").display()
            );
            for (name, mport) in masters {
                conf.push_str(&format!(
                    "sentinel monitor {name} 127.0.0.1 {mport} {quorum}\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 3000\n\
                     sentinel parallel-syncs {name} 1\n"
                ));
            }
            let file = dir.join("sentinel.conf");
            std::fs::write(&file, conf)
                .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
            let mut cmd = Command::new(&self.bins.sentinel);
            cmd.arg(&file).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            if self.spawn_and_wait("sentinel", port, &mut cmd, PING_WAIT, pong)? {
                return Ok(port);
            }
        }
        Err(format!("redis-sentinel did not come up (see the logs in {})", self.dir.display()))
    }

    /// Starts a single-member etcd (the fleet's slot map) with its data and log in its own dir,
    /// and waits until `/health` says healthy; returns its client port.
    pub fn start_etcd(&mut self) -> Result<u16, String> {
        for _ in 0..3 {
            let pick = || free_port().map_err(|e| format!("cannot pick a port: {e}"));
            let (port, peer_port) = (pick()?, pick()?);
            let dir = self.dir.join(format!("etcd-{port}"));
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let log_path = dir.join("etcd.log");
            let log = std::fs::File::create(&log_path)
                .and_then(|f| Ok((f.try_clone()?, f)))
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let client = format!("http://127.0.0.1:{port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let mut cmd = Command::new(&self.bins.etcd);
            cmd.args(["--name", "demo", "--data-dir"])
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("demo={peer}")])
                .stdin(Stdio::null())
                .stdout(log.0)
                .stderr(log.1);
            // etcd takes a second or two to elect itself on a busy machine.
            if self.spawn_and_wait("etcd", port, &mut cmd, Duration::from_secs(15), |p| {
                client::etcd_healthy(p)
            })? {
                return Ok(port);
            }
        }
        Err(format!(
            "etcd did not come up (see the etcd-*/etcd.log files in {})",
            self.dir.display()
        ))
    }

    /// Spawns, then waits up to `wait` for `ready(port)`; false (child killed) if it never was
    /// or exited first (e.g. the port was taken since it was picked).
    fn spawn_and_wait(
        &mut self,
        role: &str,
        port: u16,
        cmd: &mut Command,
        wait: Duration,
        ready: impl Fn(u16) -> bool,
    ) -> Result<bool, String> {
        let child = spawn_tied(cmd).map_err(|e| format!("cannot start {role}: {e}"))?;
        self.members.push(Member { role: role.to_string(), port, child });
        let members = &mut self.members;
        let mut exited = false;
        let up = wait_until(wait, || {
            exited = members.last_mut().is_none_or(|m| !matches!(m.child.try_wait(), Ok(None)));
            exited || ready(port)
        }) && !exited;
        if !up && let Some(mut m) = self.members.pop() {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
        Ok(up)
    }

    /// Waits until the replica on `port` is linked to its master.
    pub fn wait_replica_linked(&self, port: u16) -> bool {
        wait_until(Duration::from_secs(10), || {
            client::call(port, &["INFO", "replication"])
                .ok()
                .and_then(|v| v.as_text().map(|t| t.contains("master_link_status:up")))
                .unwrap_or(false)
        })
    }

    /// Waits until the sentinel on `port` knows `want_replicas` replicas and `want_sentinels`
    /// other sentinels for `group` (both are needed for a failover).
    pub fn wait_sentinel_ready(
        &self,
        port: u16,
        group: &str,
        want_replicas: usize,
        want_sentinels: usize,
        timeout: Duration,
    ) -> bool {
        wait_until(timeout, || {
            let Ok(v) = client::call(port, &["SENTINEL", "MASTER", group]) else { return false };
            let n = |f: &str| v.field(f).and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
            n("num-slaves") >= want_replicas && n("num-other-sentinels") >= want_sentinels
        })
    }

    /// Stops every child (SIGTERM, then SIGKILL after 3 s) and removes the temp dir; returns how
    /// many processes were stopped.
    pub fn shutdown(&mut self) -> usize {
        let n = self.members.len();
        for m in &self.members {
            // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
            unsafe {
                libc::kill(m.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for m in &mut self.members {
            loop {
                match m.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = m.child.kill();
                        let _ = m.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.members.clear();
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("keyhop demo: cannot remove {}: {e}", self.dir.display());
        }
        n
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long a redis-server or sentinel gets to answer PING.
const PING_WAIT: Duration = Duration::from_secs(5);

fn pong(port: u16) -> bool {
    matches!(client::call(port, &["PING"]), Ok(Value::Text(t)) if t == "PONG")
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes `keyhop-demo-<pid>-*` dirs whose demo process is gone (it was SIGKILLed).
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
