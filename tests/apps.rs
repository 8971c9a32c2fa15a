//! Real applications at their default settings through keyhop, output compared with the same
//! program run against a direct redis-server: redis-py's pipeline() (MULTI/EXEC), WATCH
//! transactions, Lock, pub/sub and BLPOP; an RQ job queue with a worker; a BullMQ queue with a
//! worker (ioredis, Lua, BZPOPMIN); node-redis and ioredis pub/sub and MULTI.
//!
//! The programs are tests/clients/apps.py and tests/clients/apps.mjs (one JSON line per step);
//! the packages are installed into target/test-clients by scripts/install-test-clients.sh.
//! Their keys carry a {hash tag}, so with two groups every transaction stays in one group; RQ's
//! key names are fixed by RQ (no tag), so RQ runs with one group.

mod common;

use std::process::Command;
use std::time::Duration;

use common::clients::{UnderTest, assert_same, clients_dir, ensure_clients, repo, run_bounded};
use common::redis_server;

/// How long one application run may take before it is killed.
const APP_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug)]
enum App {
    RedisPy,
    Rq,
    BullMq,
    NodeRedis,
    IoRedis,
}

impl App {
    fn command(self, port: u16, prefix: &str) -> Command {
        let scripts = repo().join("tests").join("clients");
        let (mut c, what) = match self {
            App::RedisPy | App::Rq => {
                let mut c = Command::new("python3");
                c.arg(scripts.join("apps.py")).env("PYTHONPATH", clients_dir().join("python"));
                (c, if matches!(self, App::Rq) { "rq" } else { "redispy" })
            }
            App::BullMq | App::NodeRedis | App::IoRedis => {
                let mut c = Command::new(common::clients::node());
                c.arg(scripts.join("apps.mjs")).env("COMPAT_NODE_DIR", clients_dir().join("node"));
                let what = match self {
                    App::BullMq => "bullmq",
                    App::NodeRedis => "noderedis",
                    _ => "ioredis",
                };
                (c, what)
            }
        };
        c.arg(port.to_string()).arg(prefix).arg(what);
        c
    }

    /// Runs the application against 127.0.0.1:`port`; its output lines, or why it failed.
    fn run(self, port: u16, prefix: &str) -> Result<Vec<String>, String> {
        ensure_clients();
        let (status, out, err) = run_bounded(self.command(port, prefix), APP_TIMEOUT);
        let lines: Vec<String> = out.lines().map(str::to_owned).collect();
        match status {
            Some(s) if s.success() => Ok(lines),
            Some(s) => Err(format!("{self:?} exited with {s}\nstdout:\n{out}\nstderr:\n{err}")),
            None => Err(format!(
                "{self:?} killed after {APP_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}"
            )),
        }
    }
}

/// Runs `app` against a direct redis-server and through keyhop with `groups` groups, and
/// asserts the same output; the direct run must itself have succeeded at every step.
fn compare(app: App, groups: usize, min_steps: usize) {
    let reference = redis_server(&[]);
    let ut = UnderTest::start(groups);
    let prefix = format!("app{groups}");
    let direct = app.run(reference.port, &prefix).unwrap_or_else(|e| panic!("direct: {e}"));
    assert!(
        direct.len() >= min_steps && direct.iter().all(|l| !l.contains("\"error:")),
        "{app:?} failed against redis-server itself:\n{}",
        direct.join("\n")
    );
    let proxied = match app.run(ut.port, &prefix) {
        Ok(lines) => lines,
        Err(e) => panic!("{app:?} through keyhop: {e}{}", ut.log_tail()),
    };
    assert_same(&format!("{app:?}, {groups} group(s)"), &direct, &proxied, &ut);
}

#[test]
fn redis_py_pipeline_transaction_lock_pubsub_blpop_one_group() {
    compare(App::RedisPy, 1, 7);
}

#[test]
fn redis_py_pipeline_transaction_lock_pubsub_blpop_two_groups() {
    compare(App::RedisPy, 2, 7);
}

#[test]
fn rq_job_enqueued_and_run_by_a_worker() {
    compare(App::Rq, 1, 4);
}

#[test]
fn bullmq_jobs_processed_by_a_worker_one_group() {
    compare(App::BullMq, 1, 4);
}

#[test]
fn bullmq_jobs_processed_by_a_worker_two_groups() {
    compare(App::BullMq, 2, 4);
}

#[test]
fn node_redis_pubsub_and_multi_two_groups() {
    compare(App::NodeRedis, 2, 4);
}

#[test]
fn ioredis_pubsub_and_multi_two_groups() {
    compare(App::IoRedis, 2, 3);
}
