//! The `[etcd]` section: where a fleet of keyhop instances keeps its shared slot map.
//!
//! Without it keyhop routes from the file alone; with it the groups and slot ownership live in
//! etcd under `prefix`, and the file's `[[groups]]` only seed them (`keyhop slots init`).

use std::time::Duration;

use serde::Deserialize;

use super::Problem;

/// The `[etcd]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// etcd client URLs (`http://host:port`), tried in order.
    pub endpoints: Vec<String>,
    /// Key prefix of this fleet, e.g. `/keyhop/prod`; every instance of a fleet uses the same.
    pub prefix: String,
    /// The instance's lease: after this long without reaching etcd it fences slots in flux.
    pub lease_ttl_ms: u64,
    /// After the lease deadline plus this, every keyed command is refused; coordinators wait
    /// this long before they stop waiting for an instance whose lease is gone.
    pub grace_ms: u64,
    /// How long a command on a slot being handed over waits before `-TRYAGAIN`.
    pub hold_ms: u64,
    /// Safety-net re-read of the slot map besides the watch.
    pub poll_interval_ms: u64,
    /// `MIGRATE`'s timeout argument, for commands on migrating slots and for the mover.
    pub migrate_timeout_ms: u64,
    /// Timeout of one request to etcd.
    pub timeout_ms: u64,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            prefix: String::new(),
            lease_ttl_ms: 10_000,
            grace_ms: 10_000,
            hold_ms: 2_000,
            poll_interval_ms: 5_000,
            migrate_timeout_ms: 1_000,
            timeout_ms: 2_000,
        }
    }
}

/// Bounds of the millisecond keys: (key, lowest, highest).
const LIMITS_MS: [(&str, u64, u64); 6] = [
    ("lease_ttl_ms", 2_000, 600_000),
    ("grace_ms", 0, 600_000),
    ("hold_ms", 10, 60_000),
    ("poll_interval_ms", 100, 600_000),
    ("migrate_timeout_ms", 10, 600_000),
    ("timeout_ms", 10, 600_000),
];

impl EtcdConfig {
    /// The lease's TTL in whole seconds, as etcd grants it (rounded up).
    pub fn lease_ttl_secs(&self) -> i64 {
        self.lease_ttl_ms.div_ceil(1000) as i64
    }

    /// [`EtcdConfig::grace_ms`] as a duration.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    /// [`EtcdConfig::timeout_ms`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Every problem with the section's values.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |key: String, message: String| {
            out.push(Problem { key: format!("etcd.{key}"), message })
        };
        if self.endpoints.is_empty() {
            push(
                "endpoints".into(),
                "is empty: list at least one etcd, e.g. endpoints = [\"http://127.0.0.1:2379\"]"
                    .into(),
            );
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Err(m) = check_endpoint(e) {
                push(format!("endpoints[{i}]"), m);
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.len() < 2 || self.prefix.ends_with('/') {
            push(
                "prefix".into(),
                format!(
                    "{:?} is not a key prefix: write it like \"/keyhop/prod\" (a leading /, no trailing /); every instance of the fleet uses the same",
                    self.prefix
                ),
            );
        }
        let values = [
            self.lease_ttl_ms,
            self.grace_ms,
            self.hold_ms,
            self.poll_interval_ms,
            self.migrate_timeout_ms,
            self.timeout_ms,
        ];
        for ((key, lo, hi), v) in LIMITS_MS.into_iter().zip(values) {
            if v < lo {
                push(key.into(), format!("{v} ms is too short: use at least {lo} ms"));
            } else if v > hi {
                push(key.into(), format!("{v} ms is absurd: use at most {hi} ms"));
            }
        }
        out
    }
}

/// Checks an etcd client URL: `http://host:port`.
fn check_endpoint(e: &str) -> Result<(), String> {
    let Some(rest) = e.strip_prefix("http://") else {
        return Err(if e.starts_with("https://") {
            format!("{e:?}: TLS to etcd is not supported yet; use an http:// endpoint")
        } else {
            format!("{e:?} is not an etcd URL: write \"http://host:port\"")
        });
    };
    super::check_addr(rest.trim_end_matches('/')).map_err(|m| format!("{e:?}: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_endpoints_and_prefix() {
        let keys: Vec<String> =
            EtcdConfig::default().problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["etcd.endpoints", "etcd.prefix"]);
    }

    #[test]
    fn good_section_has_no_problems() {
        let c = EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/keyhop/prod".into(),
            ..EtcdConfig::default()
        };
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.lease_ttl_secs(), 10);
    }

    #[test]
    fn bad_values_are_named() {
        let c = EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into(), "https://a:1".into()],
            prefix: "/keyhop/".into(),
            lease_ttl_ms: 500,
            ..EtcdConfig::default()
        };
        let p = c.problems();
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["etcd.endpoints[0]", "etcd.endpoints[1]", "etcd.prefix", "etcd.lease_ttl_ms"]
        );
        assert!(p[1].message.contains("not supported yet"), "{}", p[1].message);
    }

    #[test]
    fn a_fleet_member_needs_no_groups_in_the_file() {
        let text = "[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/keyhop/a\"\n";
        let cfg = crate::config::Config::parse(text).expect("valid");
        assert_eq!(cfg.etcd.map(|e| e.prefix), Some("/keyhop/a".to_string()));
        let bad = "[etcd]\nendpoints = []\nprefix = \"x\"\n";
        let err = crate::config::Config::parse(bad).expect_err("invalid").to_string();
        assert!(err.contains("etcd.endpoints") && err.contains("etcd.prefix"), "{err}");
        // Without [etcd] a file still needs groups.
        assert!(crate::config::Config::parse("listen = \"127.0.0.1:1\"\n").is_err());
    }
}
