//! TLS for the watcher's connections to sentinels and servers (`backend_tls`, `sentinel.tls`).

use crate::config::{ConfigError, TlsConfig, TlsSetup};

/// TLS for the watcher's connections: the servers (`ROLE` checks) use `config`'s
/// `backend_tls`, the sentinels too when `sentinels` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatcherTls {
    /// The TLS keys.
    pub config: TlsConfig,
    /// Whether the sentinels are reached over TLS.
    pub sentinels: bool,
}

/// The watcher's TLS configurations, from the PEM files.
pub(super) fn watcher_tls(tls: &WatcherTls) -> Result<TlsSetup, ConfigError> {
    let backends = tls
        .config
        .client_config()
        .map_err(|p| ConfigError::Invalid { path: None, problems: vec![p] })?;
    let sentinels = if tls.sentinels { backends.clone() } else { None };
    Ok(TlsSetup { clients: None, backends, sentinels })
}
