//! Data-plane settings, resolved from the config file by the binary.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::BackendSettings;

/// Everything the data plane needs to know from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// New clients beyond this many get `-ERR max number of clients reached`.
    pub max_clients: usize,
    /// TCP keepalive idle time on client sockets, if enabled.
    pub client_keepalive: Option<Duration>,
    /// Whether FLUSHALL/FLUSHDB are passed to every group (otherwise refused).
    pub allow_flush: bool,
    /// Whether administrative commands (CONFIG SET, SAVE, DEBUG ...) are fanned out (otherwise
    /// refused).
    pub allow_admin: bool,
    /// Clients must AUTH with this password first, when set.
    pub password: Option<String>,
    /// Send read-only commands to a healthy replica when the group has one.
    pub read_from_replicas: bool,
    /// Record per-command metrics (counts, latency histograms, SLOWLOG).
    pub metrics: bool,
    /// Commands at least this slow (client-observed) enter SLOWLOG.
    pub slowlog_threshold: Duration,
    /// Most SLOWLOG entries kept.
    pub slowlog_max_len: usize,
    /// Dedicated connections (transactions, pub/sub, blocking) open to one server at most.
    pub max_pinned_connections: usize,
    /// Output limit of a subscribed client (Redis's `client-output-buffer-limit pubsub`).
    pub pubsub_limit: OutputLimit,
    /// Output limit of every other client (Redis's `client-output-buffer-limit normal`).
    pub client_limit: OutputLimit,
    /// Backend connection settings.
    pub backend: BackendSettings,
    /// With a TLS server config, clients must speak TLS (`tls_cert`/`tls_key`).
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a command on a locked slot (or past the lease deadline) waits for a newer
    /// table before it is answered `-TRYAGAIN` (`hold_ms`).
    pub hold: Duration,
    /// MIGRATE's timeout when a command moves its keys to a slot's new group
    /// (`migrate_timeout_ms`).
    pub migrate_timeout: Duration,
}

/// A Redis-style output buffer limit: past `hard` bytes, or past `soft` bytes for longer than
/// `soft_for`, the client is disconnected (0 disables a limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimit {
    /// Bytes that disconnect at once.
    pub hard: usize,
    /// Bytes that disconnect when exceeded for `soft_for`.
    pub soft: usize,
    /// How long `soft` may be exceeded.
    pub soft_for: Duration,
}

impl OutputLimit {
    /// Redis's default for pub/sub clients: 32 MB hard, 8 MB for 60 s.
    pub const PUBSUB: OutputLimit =
        OutputLimit { hard: 32 << 20, soft: 8 << 20, soft_for: Duration::from_secs(60) };
    /// keyhop's default for other clients: 64 MB hard (Redis's normal class is unbounded).
    pub const NORMAL: OutputLimit =
        OutputLimit { hard: 64 << 20, soft: 0, soft_for: Duration::ZERO };
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_clients: 10_000,
            client_keepalive: Some(Duration::from_secs(60)),
            allow_flush: false,
            allow_admin: false,
            password: None,
            read_from_replicas: false,
            metrics: true,
            slowlog_threshold: Duration::from_millis(10),
            slowlog_max_len: 128,
            max_pinned_connections: 10_000,
            pubsub_limit: OutputLimit::PUBSUB,
            client_limit: OutputLimit::NORMAL,
            backend: BackendSettings {
                connect_timeout: Duration::from_millis(1000),
                request_timeout: Duration::from_millis(5000),
                keepalive: Some(Duration::from_secs(60)),
                password: None,
                connections: 2,
                tls: None,
            },
            client_tls: None,
            hold: Duration::from_millis(2000),
            migrate_timeout: Duration::from_millis(1000),
        }
    }
}
