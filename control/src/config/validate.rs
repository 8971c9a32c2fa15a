//! Validating a parsed configuration's values: every problem at once, each naming its key and
//! the fix.

use keyhop_router::TableError;
use keyhop_router::table::MAX_GROUPS;

use super::{Config, Problem, check_addr};

/// Bounds of the millisecond keys: (key, lowest, highest).
const LIMITS_MS: [(&str, u64, u64); 3] = [
    ("connect_timeout_ms", 1, 600_000),
    ("request_timeout_ms", 1, 3_600_000),
    ("shutdown_grace_ms", 0, 600_000),
];
/// Most worker threads accepted.
const MAX_THREADS: usize = 1024;
/// Highest TCP keepalive idle time Linux accepts (TCP_KEEPIDLE), in seconds.
const MAX_KEEPALIVE_S: u64 = 32_767;
/// Most client connections accepted for `max_clients`.
const MAX_CLIENTS: usize = 1_000_000;
/// Most backend connections per server.
const MAX_BACKEND_CONNECTIONS: usize = 64;
/// Most slow log entries.
const MAX_SLOWLOG_LEN: usize = 1_000_000;
/// Bounds of `sentinel.poll_interval_ms`.
const POLL_INTERVAL_MS: (u64, u64) = (10, 60_000);

impl Config {
    /// Every problem with the values, in file order.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |key: String, message: String| out.push(Problem { key, message });

        if let Err(m) = check_addr(&self.listen) {
            push("listen".into(), m);
        }
        if let Some(a) = &self.admin_listen
            && let Err(m) = check_addr(a)
        {
            push(
                "admin_listen".into(),
                format!("{m} (or remove the key to turn the admin listener off)"),
            );
        }
        if self.threads > MAX_THREADS {
            push(
                "threads".into(),
                format!(
                    "{} worker threads is absurd: use at most {MAX_THREADS}, or 0 for half the cores",
                    self.threads
                ),
            );
        }
        let ms_values = [self.connect_timeout_ms, self.request_timeout_ms, self.shutdown_grace_ms];
        for ((key, lo, hi), v) in LIMITS_MS.into_iter().zip(ms_values) {
            if v < lo {
                push(key.into(), format!("{v} ms is too short: use at least {lo} ms"));
            } else if v > hi {
                push(key.into(), format!("{v} ms is absurd: use at most {hi} ms"));
            }
        }
        if self.tcp_keepalive_s > MAX_KEEPALIVE_S {
            push(
                "tcp_keepalive_s".into(),
                format!(
                    "{} s is too long: use at most {MAX_KEEPALIVE_S} s, or 0 to disable keepalive",
                    self.tcp_keepalive_s
                ),
            );
        }
        if self.max_clients == 0 || self.max_clients > MAX_CLIENTS {
            push(
                "max_clients".into(),
                format!("{} is out of range: use 1 to {MAX_CLIENTS}", self.max_clients),
            );
        }
        if self.backend_connections == 0 || self.backend_connections > MAX_BACKEND_CONNECTIONS {
            push(
                "backend_connections".into(),
                format!(
                    "{} is out of range: use 1 to {MAX_BACKEND_CONNECTIONS} connections per backend server",
                    self.backend_connections
                ),
            );
        }
        if self.max_pinned_connections == 0 || self.max_pinned_connections > MAX_CLIENTS {
            push(
                "max_pinned_connections".into(),
                format!(
                    "{} is out of range: use 1 to {MAX_CLIENTS} dedicated connections per backend server",
                    self.max_pinned_connections
                ),
            );
        }
        if self.slowlog_max_len > MAX_SLOWLOG_LEN {
            push(
                "slowlog_max_len".into(),
                format!(
                    "{} entries is absurd: use at most {MAX_SLOWLOG_LEN}",
                    self.slowlog_max_len
                ),
            );
        }
        for (key, pw) in
            [("password", &self.password), ("backend_password", &self.backend_password)]
        {
            if pw.as_deref() == Some("") {
                push(key.into(), "is empty: give a password or remove the key".into());
            }
        }

        if let Some(s) = &self.sentinel {
            if s.addrs.is_empty() {
                push(
                    "sentinel.addrs".into(),
                    "is empty: list at least one sentinel, e.g. addrs = [\"127.0.0.1:26379\"]"
                        .into(),
                );
            }
            for (i, a) in s.addrs.iter().enumerate() {
                if let Err(m) = check_addr(a) {
                    push(format!("sentinel.addrs[{i}]"), m);
                } else if s.addrs[..i].contains(a) {
                    push(
                        format!("sentinel.addrs[{i}]"),
                        format!("\"{a}\" is listed twice: remove one"),
                    );
                }
            }
            if s.password.as_deref() == Some("") {
                push(
                    "sentinel.password".into(),
                    "is empty: give a password or remove the key".into(),
                );
            }
            let (lo, hi) = POLL_INTERVAL_MS;
            if s.poll_interval_ms < lo || s.poll_interval_ms > hi {
                push(
                    "sentinel.poll_interval_ms".into(),
                    format!("{} ms is out of range: use {lo} to {hi} ms", s.poll_interval_ms),
                );
            }
        }

        self.group_problems(&mut push);
        if let Some(e) = &self.etcd {
            out.extend(e.problems());
        }
        if let Err(problems) = self.tls_setup() {
            out.extend(problems);
        }
        out
    }

    /// Problems with `[[groups]]`: names, addresses, Sentinel vs static masters, slots.
    fn group_problems(&self, push: &mut impl FnMut(String, String)) {
        if self.groups.is_empty() {
            // A fleet member reads its groups from etcd; only `keyhop slots init` needs them here.
            if self.etcd.is_none() {
                push("groups".into(), TableError::NoGroups.to_string());
            }
            return;
        }
        if self.groups.len() > MAX_GROUPS {
            push("groups".into(), TableError::TooManyGroups(self.groups.len()).to_string());
        }
        let sentinel = self.sentinel.is_some();
        for (i, g) in self.groups.iter().enumerate() {
            let key = |k: &str| format!("groups[{i}].{k}");
            let label = if g.name.is_empty() {
                format!("group #{i}")
            } else {
                format!("group \"{}\"", g.name)
            };
            if g.name.is_empty() {
                push(
                    key("name"),
                    "is missing: give every group a unique name, e.g. name = \"g1\"".into(),
                );
            } else if g.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                push(
                    key("name"),
                    format!("\"{}\" contains whitespace: use a name without spaces", g.name),
                );
            } else if self.groups[..i].iter().any(|o| o.name == g.name) {
                push(
                    key("name"),
                    format!(
                        "\"{}\" is used by another group too: group names must be unique",
                        g.name
                    ),
                );
            }
            match (&g.master, sentinel) {
                (Some(_), true) => push(
                    key("master"),
                    format!(
                        "{label} gives a master, but with [sentinel] masters come from Sentinel: remove `master` (or remove [sentinel] for static masters)"
                    ),
                ),
                (None, false) => push(
                    key("master"),
                    format!(
                        "{label} has no master: add master = \"host:port\" (or a [sentinel] section to find masters through Sentinel)"
                    ),
                ),
                (Some(m), false) => {
                    if let Err(msg) = check_addr(m) {
                        push(key("master"), msg);
                    }
                }
                (None, true) => {}
            }
            if let Some(replicas) = &g.replicas {
                if sentinel {
                    push(
                        key("replicas"),
                        format!(
                            "{label} lists replicas, but with [sentinel] replicas come from Sentinel: remove `replicas`"
                        ),
                    );
                } else {
                    for (j, r) in replicas.iter().enumerate() {
                        let rk = format!("groups[{i}].replicas[{j}]");
                        if let Err(msg) = check_addr(r) {
                            push(rk, msg);
                        } else if g.master.as_deref() == Some(r.as_str()) {
                            push(
                                rk,
                                format!(
                                    "\"{r}\" is the group's master: a master cannot be its own replica"
                                ),
                            );
                        } else if replicas[..j].contains(r) {
                            push(rk, format!("\"{r}\" is listed twice: remove one"));
                        }
                    }
                }
            }
        }
        if let Err(problems) = self.resolve_slots() {
            for p in problems {
                push(p.key, p.message);
            }
        }
    }
}
