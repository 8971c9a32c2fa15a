//! The summary `keyhop check` prints: mode, listener, TLS, and each group's servers and slots.

use keyhop_router::RoutingTable;
use keyhop_router::table;

use super::{Config, TlsConfig, slots};

/// The human summary printed by `keyhop check`: a header line, then one line per group with its
/// name, master, replicas (`(down)` marks unhealthy ones), slot ranges and slot count.
pub fn describe(cfg: &Config, table: &RoutingTable) -> String {
    let mode = match &cfg.sentinel {
        Some(s) => format!("masters from Sentinel ({})", s.addrs.join(",")),
        None => "static masters".to_string(),
    };
    let n = table.groups.len();
    let mut out = format!(
        "listen {}, {n} group{}, {mode}, read_from {}, epoch {}\n",
        cfg.listen,
        if n == 1 { "" } else { "s" },
        cfg.read_from.as_str(),
        table.epoch
    );
    if cfg.tls != TlsConfig::default() || cfg.sentinel_tls() {
        out.push_str(&cfg.describe_tls());
        out.push('\n');
    }
    let width = table.groups.iter().map(|g| g.name.len()).max().unwrap_or(0);
    let master_width = table.groups.iter().map(|g| g.master.len()).max().unwrap_or(0);
    for (i, g) in table.groups.iter().enumerate() {
        let replicas = if g.replicas.is_empty() {
            "-".to_string()
        } else {
            let r: Vec<String> = g
                .replicas
                .iter()
                .map(|r| if r.healthy { r.addr.clone() } else { format!("{}(down)", r.addr) })
                .collect();
            r.join(",")
        };
        let ranges = table.slot_ranges(i as keyhop_router::GroupId);
        let count = slots::count_slots(&ranges);
        out.push_str(&format!(
            "{:<width$}  master {:<master_width$}  replicas {replicas}  slots {} ({count} slot{})\n",
            g.name,
            g.master,
            table::format_ranges(ranges),
            if count == 1 { "" } else { "s" },
        ));
    }
    out
}
