//! A real single-member etcd for the fleet tests, on loopback ports picked per test, killed when
//! dropped. It can be stopped and started again on the same ports and data dir, so tests can
//! check what clients do while etcd is down and after it comes back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{find_bin, free_port, temp_dir, wait_until};

/// One etcd member (`--name t`) with its own data dir; SIGKILLed on drop.
pub struct Etcd {
    /// The client port.
    pub port: u16,
    /// `http://127.0.0.1:PORT`, what clients are given.
    pub endpoint: String,
    peer_port: u16,
    extra: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on free ports and waits until `/health` says it is healthy; retries other
    /// ports when one was taken between picking and binding.
    pub fn start() -> Etcd {
        Etcd::start_with(&[])
    }

    /// Like `start`, with extra etcd flags (kept for `restart`).
    pub fn start_with(extra: &[&str]) -> Etcd {
        for _attempt in 0..5 {
            let (port, peer_port) = (free_port(), free_port());
            let mut e = Etcd {
                port,
                endpoint: format!("http://127.0.0.1:{port}"),
                peer_port,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                child: None,
                dir: temp_dir(),
            };
            if e.spawn_and_wait() {
                return e;
            }
            e.kill();
        }
        panic!("could not start etcd on a free port (logs under the test's temp dirs)");
    }

    /// Where etcd's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills etcd (SIGKILL) and waits for it to exit; the data dir is kept.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts etcd again on the same ports and data dir, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn_and_wait(), "etcd did not come back on {}:\n{}", self.port, self.log());
    }

    /// Whether `GET /health` answers `"health":"true"` now.
    pub fn healthy(&self) -> bool {
        health(self.port)
    }

    fn spawn_and_wait(&mut self) -> bool {
        let bin = find_bin("etcd", std::env::var_os("PATH").as_deref()).unwrap_or_else(|| {
            panic!("etcd not found in PATH or /usr/bin: install it with `./dev setup etcd`")
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd.log");
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(bin)
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let port = self.port;
        let child = &mut self.child;
        wait_until(Duration::from_secs(15), || {
            // A child that already exited (port taken) will never become healthy.
            let exited = child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || health(port)
        }) && health(port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /health` on 127.0.0.1:`port` answers healthy. Connection failures are "not healthy"
/// (`probe::http_get` expects the port to be listening).
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}
