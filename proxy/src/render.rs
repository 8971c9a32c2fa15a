//! Text views of the data plane: Prometheus metrics and the INFO sections.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use keyhop_router::RoutingTable;

use crate::Shared;
use crate::backend::Pool;
use crate::metrics::HistogramSnapshot;
use crate::resp;
use crate::stats::Stats;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends every data-plane metric family.
pub(crate) fn metrics(shared: &Shared, out: &mut String) {
    let s = &shared.stats;
    let simple: [(&str, &str, &str, u64); 7] = [
        (
            "keyhop_client_connections",
            "gauge",
            "Clients connected now.",
            Stats::get(&s.clients_current),
        ),
        (
            "keyhop_client_connections_total",
            "counter",
            "Clients accepted.",
            Stats::get(&s.clients_total),
        ),
        (
            "keyhop_client_connections_rejected_total",
            "counter",
            "Clients refused because max_clients was reached.",
            Stats::get(&s.clients_rejected),
        ),
        (
            "keyhop_received_bytes_total",
            "counter",
            "Bytes read from clients.",
            Stats::get(&s.bytes_in),
        ),
        (
            "keyhop_sent_bytes_total",
            "counter",
            "Bytes written to clients.",
            Stats::get(&s.bytes_out),
        ),
        (
            "keyhop_commands_received_total",
            "counter",
            "Commands received (all).",
            Stats::get(&s.commands),
        ),
        (
            "keyhop_clients_output_limit_disconnects_total",
            "counter",
            "Clients disconnected because keyhop's unwritten output to them passed client_output_limit (or pubsub_output_limit for subscribers).",
            Stats::get(&s.output_limit_disconnects),
        ),
    ];
    for (name, kind, help, v) in simple {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }

    family(
        out,
        "keyhop_migration_commands_total",
        "counter",
        "Commands on slots being migrated, by outcome: moved (MIGRATE moved their keys first), nokey (already moved), busykey (a key on both groups: the target's copy kept), tryagain (refused; the client retries).",
    );
    for (outcome, c) in [
        ("moved", &s.migration_moved),
        ("nokey", &s.migration_nokey),
        ("busykey", &s.migration_busykey),
        ("tryagain", &s.migration_tryagain),
    ] {
        let _ = writeln!(
            out,
            "keyhop_migration_commands_total{{outcome=\"{outcome}\"}} {}",
            Stats::get(c)
        );
    }

    family(out, "keyhop_errors_total", "counter", "Error replies and closes by kind.");
    for (kind, c) in [
        ("protocol", &s.errors_protocol),
        ("crossslot", &s.errors_crossslot),
        ("unsupported", &s.errors_unsupported),
        ("timeout", &s.errors_timeout),
        ("backend", &s.errors_backend),
    ] {
        let _ = writeln!(out, "keyhop_errors_total{{kind=\"{kind}\"}} {}", Stats::get(c));
    }

    let all = keyhop_router::command::commands();
    let mut per_command = Vec::new();
    for i in 0..=all.len() {
        if let Some((calls, h)) = shared.commands.get(i) {
            let name = all.get(i).map(|c| c.name).unwrap_or("unknown");
            per_command.push((name, calls, h));
        }
    }
    family(out, "keyhop_commands_total", "counter", "Commands processed, by command.");
    for (name, calls, _) in &per_command {
        let _ = writeln!(out, "keyhop_commands_total{{command=\"{name}\"}} {calls}");
    }
    family(
        out,
        "keyhop_command_duration_seconds",
        "histogram",
        "Client-observed latency from reading a command to writing its reply, by command.",
    );
    for (name, _, h) in &per_command {
        h.render(out, "keyhop_command_duration_seconds", &format!("command=\"{name}\""));
    }

    let table = shared.table.load_full();
    family(out, "keyhop_routing_table_epoch", "gauge", "Epoch of the routing table in use.");
    let _ = writeln!(out, "keyhop_routing_table_epoch {}", table.epoch);
    backend_metrics(shared, &table, out);
}

fn backend_metrics(shared: &Shared, table: &RoutingTable, out: &mut String) {
    let pools: HashMap<String, Arc<Pool>> =
        shared.backends.pools().into_iter().map(|p| (p.addr.to_string(), p)).collect();
    // (group, role) -> (requests, errors, connections, up, latency)
    let mut rows: Vec<(String, &str, u64, u64, u64, u64, HistogramSnapshot)> = Vec::new();
    for g in &table.groups {
        let roles = std::iter::once((&g.master, "master"))
            .chain(g.replicas.iter().map(|r| (&r.addr, "replica")));
        for (addr, role) in roles {
            let Some(p) = pools.get(addr.as_str()) else { continue };
            let st = &p.state;
            let ld =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let up = u64::from(!st.failing.load(std::sync::atomic::Ordering::Relaxed));
            let h = st.latency.snapshot();
            match rows.iter_mut().find(|r| r.0 == g.name && r.1 == role) {
                Some(r) => {
                    r.2 += ld(&st.requests);
                    r.3 += ld(&st.errors);
                    r.4 += ld(&st.connected);
                    r.5 = r.5.min(up);
                    r.6.merge(&h);
                }
                None => rows.push((
                    g.name.clone(),
                    role,
                    ld(&st.requests),
                    ld(&st.errors),
                    ld(&st.connected),
                    up,
                    h,
                )),
            }
        }
    }
    let fams: [(&str, &str, &str); 4] = [
        (
            "keyhop_backend_requests_total",
            "counter",
            "Request batches sent to backends, by group and role.",
        ),
        (
            "keyhop_backend_errors_total",
            "counter",
            "Request batches that failed at the backend, by group and role.",
        ),
        (
            "keyhop_backend_connections",
            "gauge",
            "Established backend connections, by group and role.",
        ),
        ("keyhop_backend_up", "gauge", "0 while the last connection attempt to a backend failed."),
    ];
    for (i, (name, kind, help)) in fams.iter().enumerate() {
        family(out, name, kind, help);
        for r in &rows {
            let v = [r.2, r.3, r.4, r.5][i];
            let _ = writeln!(out, "{name}{{group=\"{}\",role=\"{}\"}} {v}", label(&r.0), r.1);
        }
    }
    pinned_metrics(shared, out);
    family(
        out,
        "keyhop_backend_request_duration_seconds",
        "histogram",
        "Time from writing a request batch to a backend to its last reply, by group and role.",
    );
    for r in &rows {
        r.6.render(
            out,
            "keyhop_backend_request_duration_seconds",
            &format!("group=\"{}\",role=\"{}\"", label(&r.0), r.1),
        );
    }
}

/// Dedicated connections: in use by group and kind, and open (in use or idle) by server.
fn pinned_metrics(shared: &Shared, out: &mut String) {
    family(
        out,
        "keyhop_pinned_connections",
        "gauge",
        "Dedicated backend connections in use (transactions, pub/sub, blocking), by group and kind.",
    );
    for (group, kind, n) in shared.pinned.in_use() {
        let _ = writeln!(
            out,
            "keyhop_pinned_connections{{group=\"{}\",kind=\"{}\"}} {n}",
            label(&group),
            kind.label()
        );
    }
    family(
        out,
        "keyhop_pinned_connections_open",
        "gauge",
        "Dedicated backend connections open (in use or idle for reuse), by backend server.",
    );
    let mut open: Vec<_> = shared.pinned.open().into_iter().collect();
    open.sort();
    for (addr, n) in open {
        let _ = writeln!(out, "keyhop_pinned_connections_open{{backend=\"{}\"}} {n}", label(&addr));
    }
}

/// Which INFO sections a request asked for.
pub(crate) struct InfoWanted {
    pub server: bool,
    pub clients: bool,
    pub stats: bool,
    pub keyspace: bool,
    pub keyhop: bool,
}

impl InfoWanted {
    /// From INFO's arguments (none, `default`, `all`, `everything` or section names).
    pub fn parse<'a>(args: impl Iterator<Item = &'a [u8]>) -> InfoWanted {
        let names: Vec<String> =
            args.map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
        let all = names.is_empty()
            || names.iter().any(|n| matches!(n.as_str(), "default" | "all" | "everything"));
        let has = |s: &str| all || names.iter().any(|n| n == s);
        InfoWanted {
            server: has("server"),
            clients: has("clients"),
            stats: has("stats"),
            keyspace: has("keyspace"),
            keyhop: has("keyhop"),
        }
    }
}

/// keyhop's own INFO sections before the keyspace (server, clients, stats).
pub(crate) fn info_head(shared: &Shared, w: &InfoWanted, port: u16) -> String {
    let mut out = String::new();
    let s = &shared.stats;
    if w.server {
        let uptime = shared.started.elapsed().as_secs();
        // As in HELLO: the servers' own version, which clients check before using a feature.
        let version = crate::servers_version(shared, &shared.table.load());
        let _ = write!(
            out,
            "# Server\r\nredis_version:{}\r\nkeyhop_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nprocess_id:{}\r\ntcp_port:{port}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\r\n",
            version,
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            uptime / 86400
        );
    }
    if w.clients {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\npubsub_clients:{}\r\nkeyhop_pinned_connections:{}\r\nkeyhop_max_pinned_connections:{}\r\n\r\n",
            Stats::get(&s.clients_current),
            shared.settings.load().max_clients,
            shared.pinned.sessions(crate::pinned::Kind::Blocking),
            shared.pinned.sessions(crate::pinned::Kind::PubSub),
            shared.pinned.in_use().iter().map(|(_, _, n)| n).sum::<i64>(),
            shared.settings.load().max_pinned_connections,
        );
    }
    if w.stats {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nrejected_connections:{}\r\nkeyhop_errors_protocol:{}\r\nkeyhop_errors_crossslot:{}\r\nkeyhop_errors_unsupported:{}\r\nkeyhop_errors_timeout:{}\r\nkeyhop_errors_backend:{}\r\n\r\n",
            Stats::get(&s.clients_total),
            Stats::get(&s.commands),
            Stats::get(&s.bytes_in),
            Stats::get(&s.bytes_out),
            Stats::get(&s.clients_rejected),
            Stats::get(&s.errors_protocol),
            Stats::get(&s.errors_crossslot),
            Stats::get(&s.errors_unsupported),
            Stats::get(&s.errors_timeout),
            Stats::get(&s.errors_backend),
        );
    }
    out
}

/// The `# Keyhop` section: epoch and each group's master, replicas and slots.
pub(crate) fn info_keyhop(table: &RoutingTable) -> String {
    let mut out = format!("# Keyhop\r\nepoch:{}\r\ngroups:{}\r\n", table.epoch, table.groups.len());
    for (i, g) in table.groups.iter().enumerate() {
        let replicas: Vec<String> = g
            .replicas
            .iter()
            .map(|r| format!("{}{}", r.addr, if r.healthy { "" } else { "(down)" }))
            .collect();
        let slots = keyhop_router::table::format_ranges(table.slot_ranges(i as u16));
        let _ = write!(
            out,
            "group{i}:name={},master={},replicas={},slots={}\r\n",
            g.name,
            g.master,
            replicas.join("|"),
            slots
        );
    }
    out.push_str("\r\n");
    out
}

/// Sums the groups' `dbN:keys=..,expires=..,avg_ttl=..` lines, database by database, into one
/// keyspace section, rendered as a bulk (RESP2) or verbatim (RESP3) string.
pub(crate) fn info_reply(head: &str, parts: &[Bytes], tail: &str, proto: resp::Proto) -> Bytes {
    // db -> (keys, expires, sum of non-zero avg_ttl, their count)
    let mut dbs: std::collections::BTreeMap<u64, (u64, u64, u64, u64)> = Default::default();
    let mut failed = 0;
    for p in parts {
        let Some(body) = resp::text_of(p) else {
            failed += 1;
            continue;
        };
        let text = String::from_utf8_lossy(body);
        for line in text.lines() {
            let Some((db, rest)) =
                line.trim_end().strip_prefix("db").and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let Ok(db) = db.parse::<u64>() else { continue };
            let e = dbs.entry(db).or_default();
            for kv in rest.split(',') {
                let mut it = kv.splitn(2, '=');
                let (k, v) = (
                    it.next().unwrap_or(""),
                    it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
                );
                match k {
                    "keys" => e.0 += v,
                    "expires" => e.1 += v,
                    "avg_ttl" if v > 0 => {
                        e.2 += v;
                        e.3 += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    let mut out = String::from(head);
    out.push_str("# Keyspace\r\n");
    if failed > 0 {
        let _ = write!(out, "keyhop_groups_unreachable:{failed}\r\n");
    }
    for (db, (keys, expires, ttl_sum, ttl_n)) in dbs {
        if keys > 0 {
            let avg = ttl_sum.checked_div(ttl_n).unwrap_or(0);
            let _ = write!(out, "db{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n");
        }
    }
    out.push_str("\r\n");
    out.push_str(tail);
    info_text(proto, &out)
}

/// INFO's text as Redis sends it: sections separated by blank lines, ending with one CRLF.
pub(crate) fn info_text(proto: resp::Proto, text: &str) -> Bytes {
    let mut text = text.trim_end_matches("\r\n").to_string();
    text.push_str("\r\n");
    proto.verbatim(text.as_bytes())
}
