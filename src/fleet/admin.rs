//! The fleet's part of the admin endpoint: `/topology`'s `fleet` object and the fleet gauges.

use keyhop_proxy::Proxy;
use keyhop_router::RoutingTable;
use serde_json::{Value, json};

use super::member::Member;

/// Metric families this module records (never rendered by the data plane; tests check).
#[cfg_attr(not(test), allow(dead_code))]
pub const FAMILIES: [&str; 6] = [
    "keyhop_fleet_revision",
    "keyhop_fleet_acked_revision",
    "keyhop_fleet_fence_level",
    "keyhop_migration_slots_in_flux",
    "keyhop_migration_slots_pending",
    "keyhop_migration_keys_moved_total",
];

/// Describes this module's metric families.
pub fn describe() {
    metrics::describe_gauge!(
        "keyhop_fleet_revision",
        "The fleet revision (etcd) whose slot map this instance serves."
    );
    metrics::describe_gauge!(
        "keyhop_fleet_acked_revision",
        "The fleet revision this instance has acknowledged (applied and drained)."
    );
    metrics::describe_gauge!(
        "keyhop_fleet_fence_level",
        "0 with a live etcd lease; 1 past the lease deadline (slots in flux held); 2 past the grace (keyed commands refused)."
    );
    metrics::describe_gauge!(
        "keyhop_migration_slots_pending",
        "Slots of running migration jobs not yet owned by their target."
    );
    metrics::describe_counter!(
        "keyhop_migration_keys_moved_total",
        "Keys moved between groups: by=\"mover\" the fleet's migration jobs (from etcd), by=\"command\" this instance's commands on migrating slots."
    );
    metrics::describe_gauge!(
        "keyhop_migration_slots_in_flux",
        "Slots being handed over to another group, by state (locked or migrating)."
    );
}

/// Refreshes the fleet gauges.
pub fn refresh(member: &Member, proxy: &Proxy, table: &RoutingTable) {
    let (applied, acked) = member.revisions();
    metrics::gauge!("keyhop_fleet_revision").set(applied as f64);
    metrics::gauge!("keyhop_fleet_acked_revision").set(acked as f64);
    metrics::gauge!("keyhop_fleet_fence_level").set(f64::from(proxy.fence_level()));
    let (locked, migrating) = in_flux(table);
    metrics::gauge!("keyhop_migration_slots_in_flux", "state" => "locked").set(locked as f64);
    metrics::gauge!("keyhop_migration_slots_in_flux", "state" => "migrating").set(migrating as f64);
    let jobs = member.jobs();
    let pending: u64 = jobs
        .iter()
        .filter(|(_, j)| j.state == "running")
        .map(|(_, j)| j.slots_total.saturating_sub(j.slots_done))
        .sum();
    metrics::gauge!("keyhop_migration_slots_pending").set(pending as f64);
    let by_mover: u64 = jobs.iter().map(|(_, j)| j.moved).sum();
    metrics::counter!("keyhop_migration_keys_moved_total", "by" => "mover").absolute(by_mover);
    let by_command = keyhop_proxy::Stats::get(&proxy.stats().migration_keys);
    metrics::counter!("keyhop_migration_keys_moved_total", "by" => "command").absolute(by_command);
}

/// Slots locked and migrating in `table`.
fn in_flux(table: &RoutingTable) -> (u64, u64) {
    let mut out = (0, 0);
    for f in table.flux_ranges() {
        let n = u64::from(f.last - f.first) + 1;
        match f.state {
            keyhop_router::FluxState::Locked => out.0 += n,
            keyhop_router::FluxState::Migrating => out.1 += n,
        }
    }
    out
}

/// `/topology`'s `fleet` object.
pub fn topology(member: &Member, proxy: &Proxy, table: &RoutingTable) -> Value {
    let (applied, acked) = member.revisions();
    let flux: Vec<Value> = table
        .flux_ranges()
        .iter()
        .map(|f| {
            json!({
                "slots": if f.first == f.last { f.first.to_string() } else { format!("{}-{}", f.first, f.last) },
                "from": table.groups.get(usize::from(f.from)).map(|g| g.name.clone()),
                "to": table.groups.get(usize::from(f.to)).map(|g| g.name.clone()),
                "state": match f.state {
                    keyhop_router::FluxState::Locked => "locked",
                    keyhop_router::FluxState::Migrating => "migrating",
                },
            })
        })
        .collect();
    let (locked, migrating) = in_flux(table);
    let migrations: Vec<Value> = member
        .jobs()
        .into_iter()
        .map(|(id, j)| {
            let secs = j.updated_unix_ms.saturating_sub(j.started_unix_ms) as f64 / 1000.0;
            let rate = if secs > 0.0 { j.moved as f64 / secs } else { 0.0 };
            let done = j.slots_done as f64 / j.slots_total.max(1) as f64;
            let eta = (j.state == "running" && done > 0.0).then(|| secs * (1.0 - done) / done);
            json!({
                "job": id,
                "slots": j.slots,
                "to": j.to,
                "state": j.state,
                "slots_done": j.slots_done,
                "slots_total": j.slots_total,
                "keys_moved": j.moved,
                "keys_per_second": rate.round(),
                "eta_s": eta.map(f64::round),
            })
        })
        .collect();
    json!({
        "prefix": member.prefix(),
        "instance_id": member.id(),
        "revision": applied,
        "acked_revision": acked,
        "fence_level": proxy.fence_level(),
        "slots_in_flux": { "locked": locked, "migrating": migrating },
        "flux": flux,
        "migrations": migrations,
        "instances": member.instances().iter().map(|i| json!({
            "id": i.id,
            "addr": i.record.addr,
            "host": i.record.host,
            "version": i.record.version,
            "acked_revision": i.record.ack,
            "live": i.live,
            "this": i.id == member.id(),
        })).collect::<Vec<_>>(),
    })
}
