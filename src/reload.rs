//! What a configuration reload (SIGHUP) changes: which keys differ, which of them can be applied
//! to the running proxy.

use keyhop_control::Config;
use keyhop_control::sentinel::WatcherConfig;

/// The difference between the running configuration and a newly loaded one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every top-level key whose value differs (values are never logged: some are passwords).
    pub changed: Vec<&'static str>,
    /// Changed keys that only take effect after a restart (`listen`, `threads`, `admin_listen`).
    pub needs_restart: Vec<&'static str>,
    /// The new file switches between static and Sentinel mode: nothing of it can be applied live.
    pub mode_switch: bool,
    /// The routing (static groups) or what the watcher follows (Sentinel mode) changed.
    pub topology: bool,
    /// Backend connection settings changed: existing backend pools must be replaced.
    pub backend: bool,
}

impl Plan {
    /// Compares the running configuration `old` with `new`.
    pub fn new(old: &Config, new: &Config) -> Plan {
        let mut changed = Vec::new();
        let mut diff = |key: &'static str, differs: bool| {
            if differs {
                changed.push(key);
            }
        };
        diff("listen", old.listen != new.listen);
        diff("admin_listen", old.admin_listen != new.admin_listen);
        diff("threads", old.threads != new.threads);
        diff("connect_timeout_ms", old.connect_timeout_ms != new.connect_timeout_ms);
        diff("request_timeout_ms", old.request_timeout_ms != new.request_timeout_ms);
        diff("tcp_keepalive_s", old.tcp_keepalive_s != new.tcp_keepalive_s);
        diff("max_clients", old.max_clients != new.max_clients);
        diff("backend_connections", old.backend_connections != new.backend_connections);
        diff("allow_flush", old.allow_flush != new.allow_flush);
        diff("allow_admin", old.allow_admin != new.allow_admin);
        diff("password", old.password != new.password);
        diff("backend_password", old.backend_password != new.backend_password);
        diff("read_from", old.read_from != new.read_from);
        diff("slowlog_threshold_us", old.slowlog_threshold_us != new.slowlog_threshold_us);
        diff("slowlog_max_len", old.slowlog_max_len != new.slowlog_max_len);
        diff("max_pinned_connections", old.max_pinned_connections != new.max_pinned_connections);
        diff("pubsub_output_limit", old.pubsub_output_limit != new.pubsub_output_limit);
        diff("client_output_limit", old.client_output_limit != new.client_output_limit);
        diff("shutdown_grace_ms", old.shutdown_grace_ms != new.shutdown_grace_ms);
        diff("tls_* and backend_tls_*", old.tls != new.tls);
        diff("sentinel", old.sentinel != new.sentinel);
        diff("groups", old.groups != new.groups);
        diff("etcd", old.etcd != new.etcd);

        let needs_restart = changed
            .iter()
            .copied()
            .filter(|k| {
                matches!(
                    *k,
                    "listen" | "admin_listen" | "threads" | "tls_* and backend_tls_*" | "etcd"
                ) || (new.etcd.is_some() && *k == "sentinel")
            })
            .collect();
        let mode_switch = old.is_sentinel_mode() != new.is_sentinel_mode()
            || old.etcd.is_some() != new.etcd.is_some();
        let topology = if new.etcd.is_some() {
            // A fleet's groups and slots come from etcd, and its watcher follows them.
            false
        } else if new.is_sentinel_mode() && !mode_switch {
            // Everything the watcher was started with (groups, slots, sentinels, the password it
            // checks ROLE with, its timeouts): a difference means a new watcher.
            WatcherConfig::from_config(old).ok() != WatcherConfig::from_config(new).ok()
        } else {
            old.groups != new.groups
        };
        let backend = old.connect_timeout_ms != new.connect_timeout_ms
            || old.request_timeout_ms != new.request_timeout_ms
            || old.tcp_keepalive_s != new.tcp_keepalive_s
            || old.backend_password != new.backend_password
            || old.backend_connections != new.backend_connections;
        Plan { changed, needs_restart, mode_switch, topology, backend }
    }

    /// `new` with the keys that need a restart kept at their running values, so the next reload
    /// compares against what actually runs.
    pub fn effective(old: &Config, mut new: Config) -> Config {
        new.listen = old.listen.clone();
        new.admin_listen = old.admin_listen.clone();
        new.threads = old.threads;
        new.tls = old.tls.clone();
        new.etcd = old.etcd.clone();
        if old.etcd.is_some() {
            new.sentinel = old.sentinel.clone();
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        match Config::parse(text) {
            Ok(c) => c,
            Err(e) => panic!("test config does not parse: {e}"),
        }
    }

    const STATIC: &str = r#"
listen = "127.0.0.1:6380"
[[groups]]
name = "g1"
master = "127.0.0.1:7001"
slots = ["0-8191"]
[[groups]]
name = "g2"
master = "127.0.0.1:7002"
slots = ["8192-16383"]
"#;

    #[test]
    fn same_file_changes_nothing() {
        let a = parse(STATIC);
        assert_eq!(Plan::new(&a, &a.clone()), Plan::default());
    }

    #[test]
    fn slot_change_is_topology_only() {
        let a = parse(STATIC);
        let b = parse(&STATIC.replace("0-8191", "0-100").replace("8192-16383", "101-16383"));
        let p = Plan::new(&a, &b);
        assert_eq!(p.changed, vec!["groups"]);
        assert!(p.topology && !p.backend && !p.mode_switch && p.needs_restart.is_empty());
    }

    #[test]
    fn tls_keys_need_a_restart_and_are_kept() {
        let a = parse(STATIC);
        let mut b = a.clone();
        b.tls.backend = true;
        let p = Plan::new(&a, &b);
        assert_eq!(p.needs_restart, vec!["tls_* and backend_tls_*"]);
        assert!(!p.backend && !p.topology);
        let eff = Plan::effective(&a, b);
        assert!(!eff.tls.backend);
        assert_eq!(Plan::new(&a, &eff), Plan::default());
    }

    #[test]
    fn listen_needs_restart_and_is_kept() {
        let a = parse(STATIC);
        let b = parse(&STATIC.replace("6380", "6390").replace("listen =", "threads = 3\nlisten ="));
        let p = Plan::new(&a, &b);
        assert_eq!(p.needs_restart, vec!["listen", "threads"]);
        assert!(!p.topology);
        let eff = Plan::effective(&a, b);
        assert_eq!(eff.listen, "127.0.0.1:6380");
        assert_eq!(eff.threads, a.threads);
        assert_eq!(Plan::new(&a, &eff), Plan::default());
    }

    #[test]
    fn backend_password_retires_pools() {
        let a = parse(STATIC);
        let b = parse(&format!("backend_password = \"pw\"\n{STATIC}"));
        let p = Plan::new(&a, &b);
        assert_eq!(p.changed, vec!["backend_password"]);
        assert!(p.backend && !p.topology);
    }

    #[test]
    fn allow_admin_applies_live() {
        let a = parse(STATIC);
        let b = parse(&format!("allow_admin = true\n{STATIC}"));
        let p = Plan::new(&a, &b);
        assert_eq!(p.changed, vec!["allow_admin"]);
        assert!(!p.topology && !p.backend && !p.mode_switch && p.needs_restart.is_empty());
    }

    #[test]
    fn mode_switch_is_detected() {
        let a = parse(STATIC);
        let b = parse(
            "listen = \"127.0.0.1:6380\"\n[sentinel]\naddrs = [\"127.0.0.1:26379\"]\n\
             [[groups]]\nname = \"g1\"\n",
        );
        let p = Plan::new(&a, &b);
        assert!(p.mode_switch);
        assert!(p.changed.contains(&"sentinel") && p.changed.contains(&"groups"));
    }

    #[test]
    fn sentinel_address_change_restarts_the_watcher() {
        let text = "[sentinel]\naddrs = [\"127.0.0.1:26379\"]\n[[groups]]\nname = \"g1\"\n";
        let a = parse(text);
        let b = parse(&text.replace("26379", "26380"));
        let p = Plan::new(&a, &b);
        assert!(p.topology && !p.mode_switch);
        let c = parse(&format!("allow_flush = true\n{text}"));
        assert!(!Plan::new(&a, &c).topology);
    }
}
