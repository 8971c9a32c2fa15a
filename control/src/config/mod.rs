//! keyhop's configuration: the TOML file, its validation, and the routing table it describes.
//!
//! [`Config::parse`] first lets serde check the syntax, the types and the key names (unknown keys
//! are errors), then validates the values and reports every problem at once, each with its key and
//! how to fix it.

mod addr;
mod describe;
mod etcd;
mod limit;
mod slots;
mod tls;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyhop_router::{Group, Replica, RoutingTable, TableError};
use serde::Deserialize;

pub use addr::{check_addr, join_host_port};
pub use describe::describe;
pub use etcd::EtcdConfig;
pub use limit::OutputLimit;
pub use slots::parse_slot_spec;
pub use tls::{TlsConfig, TlsSetup};

/// Where reads may be sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadFrom {
    /// Every command goes to the group's master (`"master"`).
    #[default]
    Master,
    /// Read-only commands go to a healthy replica when there is one (`"replica-preferred"`).
    ReplicaPreferred,
}

impl ReadFrom {
    /// The configuration spelling of this value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::ReplicaPreferred => "replica-preferred",
        }
    }

    /// Parses the configuration spelling.
    pub fn parse(s: &str) -> Option<ReadFrom> {
        match s {
            "master" => Some(ReadFrom::Master),
            "replica-preferred" => Some(ReadFrom::ReplicaPreferred),
            _ => None,
        }
    }
}

/// The `[sentinel]` section: masters are found and followed through Redis Sentinel.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// `host:port` of the sentinels to start from (more are discovered from them).
    pub addrs: Vec<String>,
    /// Password for `AUTH` to the sentinels, if they require one.
    pub password: Option<String>,
    /// How often every sentinel is polled as a safety net for missed events, in milliseconds.
    pub poll_interval_ms: u64,
    /// Whether the sentinels speak TLS; by default as `backend_tls`.
    pub tls: Option<bool>,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        SentinelConfig { addrs: Vec::new(), password: None, poll_interval_ms: 1000, tls: None }
    }
}

impl SentinelConfig {
    /// [`SentinelConfig::poll_interval_ms`] as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// One `[[groups]]` entry: a master (with replicas) owning a set of slots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// The group's name; in Sentinel mode, the name Sentinel monitors it under.
    pub name: String,
    /// `host:port` of the master: required without `[sentinel]`, forbidden with it.
    pub master: Option<String>,
    /// `host:port` of the master's replicas (static mode only).
    pub replicas: Option<Vec<String>>,
    /// Owned slots as `"FIRST-LAST"` or `"N"`; when every group omits it, slots split evenly.
    pub slots: Option<Vec<String>>,
}

/// The whole configuration file. Every field has a default, so an almost empty file is valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Client listener address (default `127.0.0.1:6380`).
    pub listen: String,
    /// Admin HTTP listener (metrics, health); `None` turns it off.
    pub admin_listen: Option<String>,
    /// Worker threads; 0 means half the cores, at least one (see [`Config::worker_threads`]).
    pub threads: usize,
    /// Timeout for connecting to a backend, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Timeout for a backend's reply to a request, in milliseconds.
    pub request_timeout_ms: u64,
    /// TCP keepalive idle time in seconds on client and backend sockets; 0 disables it.
    pub tcp_keepalive_s: u64,
    /// Most client connections at once; more are refused.
    pub max_clients: usize,
    /// Shared pipelined connections per backend server (at least 1).
    pub backend_connections: usize,
    /// Whether `FLUSHALL`/`FLUSHDB` are allowed through.
    pub allow_flush: bool,
    /// Whether administrative commands (CONFIG SET, SAVE, DEBUG, SCRIPT KILL ...) are fanned out
    /// to every server; refused otherwise, so a shared proxy's clients cannot reconfigure them.
    pub allow_admin: bool,
    /// Password clients must give with `AUTH`, if any.
    pub password: Option<String>,
    /// Password keyhop gives to the redis-servers with `AUTH`, if any.
    pub backend_password: Option<String>,
    /// Where reads may go.
    pub read_from: ReadFrom,
    /// Commands slower than this (in microseconds) are recorded in the slow log.
    pub slowlog_threshold_us: u64,
    /// Most entries kept in the slow log.
    pub slowlog_max_len: usize,
    /// How long a shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Most dedicated connections (transactions, pub/sub, blocking commands) open to one server.
    pub max_pinned_connections: usize,
    /// A subscriber's output limit, as Redis's `client-output-buffer-limit pubsub`.
    pub pubsub_output_limit: OutputLimit,
    /// Any other client's output limit, as Redis's `client-output-buffer-limit normal`.
    pub client_output_limit: OutputLimit,
    /// TLS for clients and backends (see [`TlsConfig`]).
    pub tls: TlsConfig,
    /// Sentinel mode when present: masters come from Sentinel, not from `groups`.
    pub sentinel: Option<SentinelConfig>,
    /// Fleet mode when present: groups and slot ownership live in etcd.
    pub etcd: Option<EtcdConfig>,
    /// The groups, in order; a group's index is its [`keyhop_router::GroupId`].
    pub groups: Vec<GroupConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:6380".into(),
            admin_listen: None,
            threads: 0,
            connect_timeout_ms: 1000,
            request_timeout_ms: 5000,
            tcp_keepalive_s: 60,
            max_clients: 10_000,
            backend_connections: 1,
            allow_flush: false,
            allow_admin: false,
            password: None,
            backend_password: None,
            read_from: ReadFrom::Master,
            slowlog_threshold_us: 10_000,
            slowlog_max_len: 128,
            shutdown_grace_ms: 5000,
            max_pinned_connections: 10_000,
            pubsub_output_limit: OutputLimit::PUBSUB,
            client_output_limit: OutputLimit::NORMAL,
            tls: TlsConfig::default(),
            sentinel: None,
            etcd: None,
            groups: Vec::new(),
        }
    }
}

/// The file as serde sees it: like [`Config`], but with `read_from` as text so that a bad value
/// is reported together with every other problem instead of stopping the parse.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    listen: String,
    admin_listen: Option<String>,
    threads: usize,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    tcp_keepalive_s: u64,
    max_clients: usize,
    backend_connections: usize,
    allow_flush: bool,
    allow_admin: bool,
    password: Option<String>,
    backend_password: Option<String>,
    read_from: String,
    slowlog_threshold_us: u64,
    slowlog_max_len: usize,
    shutdown_grace_ms: u64,
    max_pinned_connections: usize,
    pubsub_output_limit: String,
    client_output_limit: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    backend_tls: bool,
    backend_tls_ca: Option<PathBuf>,
    backend_tls_cert: Option<PathBuf>,
    backend_tls_key: Option<PathBuf>,
    sentinel: Option<SentinelConfig>,
    etcd: Option<EtcdConfig>,
    groups: Vec<GroupConfig>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let d = Config::default();
        RawConfig {
            listen: d.listen,
            admin_listen: d.admin_listen,
            threads: d.threads,
            connect_timeout_ms: d.connect_timeout_ms,
            request_timeout_ms: d.request_timeout_ms,
            tcp_keepalive_s: d.tcp_keepalive_s,
            max_clients: d.max_clients,
            backend_connections: d.backend_connections,
            allow_flush: d.allow_flush,
            allow_admin: d.allow_admin,
            password: d.password,
            backend_password: d.backend_password,
            read_from: d.read_from.as_str().into(),
            slowlog_threshold_us: d.slowlog_threshold_us,
            slowlog_max_len: d.slowlog_max_len,
            shutdown_grace_ms: d.shutdown_grace_ms,
            max_pinned_connections: d.max_pinned_connections,
            pubsub_output_limit: d.pubsub_output_limit.to_string(),
            client_output_limit: d.client_output_limit.to_string(),
            tls_cert: d.tls.cert,
            tls_key: d.tls.key,
            tls_client_ca: d.tls.client_ca,
            backend_tls: d.tls.backend,
            backend_tls_ca: d.tls.backend_ca,
            backend_tls_cert: d.tls.backend_cert,
            backend_tls_key: d.tls.backend_key,
            sentinel: d.sentinel,
            etcd: d.etcd,
            groups: d.groups,
        }
    }
}

/// One thing wrong with a configuration: the key it concerns and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key, e.g. `groups[1].master` or `sentinel.addrs[0]`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be loaded or used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The TOML is malformed, a value has the wrong type, or a key is unknown.
    Syntax {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// The TOML parser's message (with line, column and key).
        message: String,
    },
    /// The values are inconsistent or out of range; every problem found is listed.
    Invalid {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A routing table could not be built from the given topology.
    Table(TableError),
    /// [`Config::routing_table`] was called in Sentinel mode, where masters come from Sentinel.
    SentinelMode,
}

impl ConfigError {
    fn with_path(self, p: &Path) -> ConfigError {
        match self {
            ConfigError::Syntax { message, .. } => {
                ConfigError::Syntax { path: Some(p.to_path_buf()), message }
            }
            ConfigError::Invalid { problems, .. } => {
                ConfigError::Invalid { path: Some(p.to_path_buf()), problems }
            }
            other => other,
        }
    }

    /// The listed problems, for [`ConfigError::Invalid`] (empty otherwise).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = |p: &Option<PathBuf>| match p {
            Some(p) => format!(" in {}", p.display()),
            None => String::new(),
        };
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read the configuration file {}: {error}", path.display())
            }
            ConfigError::Syntax { path, message } => {
                write!(f, "invalid configuration{}: {}", file(path), message.trim_end())
            }
            ConfigError::Invalid { path, problems } => {
                let n = problems.len();
                write!(
                    f,
                    "{n} problem{} in the configuration{}:",
                    if n == 1 { "" } else { "s" },
                    file(path)
                )?;
                for p in problems {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
            ConfigError::Table(e) => write!(f, "{e}"),
            ConfigError::SentinelMode => write!(
                f,
                "the configuration has [sentinel]: masters come from Sentinel, not from the groups"
            ),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            ConfigError::Table(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TableError> for ConfigError {
    fn from(e: TableError) -> Self {
        ConfigError::Table(e)
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        Config::parse(&text).map_err(|e| e.with_path(path))
    }

    /// Parses and validates a configuration from TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: None, message: e.to_string() })?;
        let mut problems = Vec::new();
        let read_from = match ReadFrom::parse(&raw.read_from) {
            Some(r) => r,
            None => {
                problems.push(Problem {
                    key: "read_from".into(),
                    message: format!(
                        "unknown value \"{}\": use \"master\" or \"replica-preferred\"",
                        raw.read_from
                    ),
                });
                ReadFrom::Master
            }
        };
        let pubsub_output_limit = limit::setting(
            "pubsub_output_limit",
            &raw.pubsub_output_limit,
            (OutputLimit::PUBSUB, false),
            &mut problems,
        );
        let client_output_limit = limit::setting(
            "client_output_limit",
            &raw.client_output_limit,
            (OutputLimit::NORMAL, true),
            &mut problems,
        );
        let cfg = Config {
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            threads: raw.threads,
            connect_timeout_ms: raw.connect_timeout_ms,
            request_timeout_ms: raw.request_timeout_ms,
            tcp_keepalive_s: raw.tcp_keepalive_s,
            max_clients: raw.max_clients,
            backend_connections: raw.backend_connections,
            allow_flush: raw.allow_flush,
            allow_admin: raw.allow_admin,
            password: raw.password,
            backend_password: raw.backend_password,
            read_from,
            slowlog_threshold_us: raw.slowlog_threshold_us,
            slowlog_max_len: raw.slowlog_max_len,
            shutdown_grace_ms: raw.shutdown_grace_ms,
            max_pinned_connections: raw.max_pinned_connections,
            pubsub_output_limit,
            client_output_limit,
            tls: TlsConfig {
                cert: raw.tls_cert,
                key: raw.tls_key,
                client_ca: raw.tls_client_ca,
                backend: raw.backend_tls,
                backend_ca: raw.backend_tls_ca,
                backend_cert: raw.backend_tls_cert,
                backend_key: raw.backend_tls_key,
            },
            sentinel: raw.sentinel,
            etcd: raw.etcd,
            groups: raw.groups,
        };
        problems.extend(cfg.problems());
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid { path: None, problems })
        }
    }

    /// Checks the values; an empty list means the configuration is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { path: None, problems })
        }
    }

    /// Each group's slot ranges (inclusive): as written, or split evenly when no group gives any.
    fn resolve_slots(&self) -> Result<Vec<Vec<(u32, u32)>>, Vec<Problem>> {
        let mut problems = Vec::new();
        let given = self.groups.iter().filter(|g| g.slots.is_some()).count();
        if given == 0 {
            return Ok(RoutingTable::even_ranges(self.groups.len()));
        }
        let mut ranges = Vec::with_capacity(self.groups.len());
        for (i, g) in self.groups.iter().enumerate() {
            let mut mine = Vec::new();
            match &g.slots {
                None => problems.push(Problem {
                    key: format!("groups[{i}].slots"),
                    message: format!(
                        "group \"{}\" gives no slots while other groups do: give every group `slots`, or none to split the slots evenly",
                        g.name
                    ),
                }),
                Some(specs) if specs.is_empty() => problems.push(Problem {
                    key: format!("groups[{i}].slots"),
                    message: format!(
                        "group \"{}\" has an empty slot list: give it slots such as [\"0-8191\"] or remove the group",
                        g.name
                    ),
                }),
                Some(specs) => {
                    for (j, s) in specs.iter().enumerate() {
                        match parse_slot_spec(s) {
                            Ok(r) => mine.push(r),
                            Err(m) => problems.push(Problem { key: format!("groups[{i}].slots[{j}]"), message: m }),
                        }
                    }
                }
            }
            ranges.push(mine);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        // Ownership is checked by the router's own table builder so its rules and messages apply.
        let probe: Vec<Group> = self
            .groups
            .iter()
            .map(|g| Group { name: g.name.clone(), master: String::new(), replicas: Vec::new() })
            .collect();
        match RoutingTable::new(0, probe, &ranges) {
            Ok(_) => Ok(ranges),
            Err(TableError::TooManyGroups(_)) => Ok(ranges), // already reported for `groups`
            Err(e) => Err(vec![Problem { key: "groups[*].slots".into(), message: e.to_string() }]),
        }
    }

    /// Each group's slot ranges (inclusive), in group order, ready for [`RoutingTable::new`].
    pub fn slot_ranges(&self) -> Result<Vec<Vec<(u32, u32)>>, ConfigError> {
        self.resolve_slots().map_err(|problems| ConfigError::Invalid { path: None, problems })
    }

    /// Whether masters come from Sentinel (a `[sentinel]` section is present).
    pub fn is_sentinel_mode(&self) -> bool {
        self.sentinel.is_some()
    }

    /// The routing table of a static configuration (masters and replicas as written, replicas
    /// assumed healthy), stamped with `epoch`.
    pub fn routing_table(&self, epoch: u64) -> Result<RoutingTable, ConfigError> {
        if self.sentinel.is_some() {
            return Err(ConfigError::SentinelMode);
        }
        self.validate()?;
        let groups = self
            .groups
            .iter()
            .map(|g| Group {
                name: g.name.clone(),
                master: g.master.clone().unwrap_or_default(),
                replicas: g
                    .replicas
                    .iter()
                    .flatten()
                    .map(|r| Replica { addr: r.clone(), healthy: true })
                    .collect(),
            })
            .collect();
        Ok(RoutingTable::new(epoch, groups, &self.slot_ranges()?)?)
    }

    /// The routing table for topology learned at run time (e.g. from Sentinel): `learned` gives,
    /// for each group name, its master and replicas. Every configured group must be present.
    pub fn table_from_topology(
        &self,
        epoch: u64,
        mut learned: impl FnMut(&str) -> Option<(String, Vec<Replica>)>,
    ) -> Result<RoutingTable, ConfigError> {
        let mut groups = Vec::with_capacity(self.groups.len());
        let mut problems = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            match learned(&g.name) {
                Some((master, replicas)) => {
                    groups.push(Group { name: g.name.clone(), master, replicas })
                }
                None => problems.push(Problem {
                    key: format!("groups[{i}]"),
                    message: format!("no master is known for group \"{}\"", g.name),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { path: None, problems });
        }
        Ok(RoutingTable::new(epoch, groups, &self.slot_ranges()?)?)
    }

    /// Worker threads to start: [`Config::threads`], or half the cores (at least 1) when it is 0.
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            // Half the cores: most of a proxy's CPU is the kernel's TCP work, and a worker per
            // core left keyhop competing with it (docs/benchmarks.md: on 2 cores, 1 worker beat
            // 2 in throughput and CPU per request in most workloads).
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            (cores / 2).max(1)
        }
    }

    /// [`Config::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Config::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`Config::tcp_keepalive_s`] as a duration; `None` when keepalive is disabled.
    pub fn tcp_keepalive(&self) -> Option<Duration> {
        (self.tcp_keepalive_s > 0).then(|| Duration::from_secs(self.tcp_keepalive_s))
    }

    /// [`Config::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests;
