//! `keyhop slots ...` and `keyhop group ...`: the operator's commands on a fleet's slot map.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use keyhop_control::Config;
use keyhop_control::etcd::Etcd;
use keyhop_control::fleet::coordinator::{self, Masters, MigrateOpts, Progress};
use keyhop_control::fleet::state::{parse_ranges, range_text};
use keyhop_control::fleet::{Fleet, FleetState, GroupDef};

/// `keyhop slots ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum SlotsCmd {
    /// Create the fleet's slot map in etcd from the file's [[groups]] (once).
    Init {
        /// Overwrite an existing slot map (only when no keyhop is registered).
        #[arg(long)]
        force: bool,
    },
    /// Print groups, slot ownership, migrations and instances.
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move slots to a group while every keyhop keeps serving (resumable: run it again).
    Migrate {
        /// Slots to move, e.g. `0-1023,8192-9215`.
        #[arg(long)]
        slots: String,
        /// The group that gets them.
        #[arg(long)]
        to: String,
        /// Migration tuning.
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Delete the keys a group holds in slots it does not own (left by a failover mid-migration).
    Sweep {
        /// The group to clean.
        #[arg(long)]
        group: String,
    },
    /// Move slots so every group owns an even share.
    Rebalance {
        /// Print the moves without doing them.
        #[arg(long)]
        dry_run: bool,
        /// Migration tuning.
        #[command(flatten)]
        tuning: Tuning,
    },
}

/// Knobs of a migration.
#[derive(Args, Debug, Clone, Default)]
pub struct Tuning {
    /// Most keys moved per second by the mover (0 = no limit).
    #[arg(long, default_value_t = 0)]
    keys_per_second: u64,
    /// Most keys per MIGRATE.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Most slots in flux at once.
    #[arg(long, default_value_t = 256)]
    window: u16,
    /// How long to wait for every keyhop to acknowledge a step, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    ack_timeout_ms: u64,
}

/// `keyhop group ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum GroupCmd {
    /// Add a group that owns no slots yet (move slots to it with `slots migrate`/`rebalance`).
    Add {
        /// The group's name (in Sentinel mode, the name Sentinel monitors it under).
        name: String,
        /// `host:port` of its master (static mode).
        #[arg(long)]
        master: Option<String>,
        /// `host:port` of a replica (static mode; repeat for more).
        #[arg(long)]
        replica: Vec<String>,
    },
    /// Remove a group that owns no slots.
    Remove {
        /// The group's name.
        name: String,
    },
}

fn fleet(cfg: &Config) -> Result<(Fleet, keyhop_control::EtcdConfig), String> {
    let e = cfg.etcd.clone().ok_or_else(|| {
        "the configuration has no [etcd] section: add endpoints and prefix (see README, \"Fleet\")"
            .to_string()
    })?;
    let etcd = Etcd::new(e.endpoints.clone(), e.timeout()).map_err(|e| e.to_string())?;
    Ok((Fleet::new(etcd, &e.prefix), e))
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?
        .block_on(f)
}

fn finish(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyhop: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `keyhop slots ...`.
pub fn slots(cfg: &Config, cmd: &SlotsCmd) -> ExitCode {
    finish(block_on(async {
        let (fleet, ecfg) = fleet(cfg)?;
        match cmd {
            SlotsCmd::Init { force } => init(cfg, &fleet, *force).await,
            SlotsCmd::Show { json } => show(&fleet, *json).await,
            SlotsCmd::Migrate { slots, to, tuning } => {
                let slots = parse_ranges(slots).map_err(|e| format!("--slots: {e}"))?;
                run_migrate(cfg, &ecfg, &fleet, slots, to, tuning).await
            }
            SlotsCmd::Sweep { group } => sweep(cfg, &ecfg, &fleet, group).await,
            SlotsCmd::Rebalance { dry_run, tuning } => {
                rebalance(cfg, &ecfg, &fleet, *dry_run, tuning).await
            }
        }
    }))
}

/// Runs `keyhop group ...`.
pub fn group(cfg: &Config, cmd: &GroupCmd) -> ExitCode {
    finish(block_on(async {
        let (fleet, ecfg) = fleet(cfg)?;
        match cmd {
            GroupCmd::Add { name, master, replica } => {
                if cfg.sentinel.is_none() && master.is_none() {
                    return Err(format!(
                        "group {name}: give its master with --master host:port (static mode)"
                    ));
                }
                if let Some(m) = master {
                    keyhop_control::config::check_addr(m).map_err(|e| format!("--master: {e}"))?;
                }
                if let Masters::Sentinel { addrs, password, tls } =
                    opts(cfg, &ecfg, vec![], name, &Tuning::default()).masters
                {
                    let found = keyhop_control::sentinel::lookup::master_addr(
                        &addrs,
                        password.as_deref(),
                        tls.as_ref(),
                        name,
                        Duration::from_secs(2),
                    )
                    .await
                    .map_err(|e| format!("group {name}: {e} (add it to the sentinels with SENTINEL MONITOR first)"))?;
                    println!("Sentinel knows {name}: master {found}");
                }
                let def = GroupDef {
                    name: name.clone(),
                    master: master.clone(),
                    replicas: replica.clone(),
                };
                let (_, rev) = fleet.update_state(|s| s.add_group(def.clone())).await?;
                println!(
                    "group {name} added (fleet revision {rev}); it owns no slots yet: run `keyhop slots rebalance` or `keyhop slots migrate --slots ... --to {name}`"
                );
                Ok(())
            }
            GroupCmd::Remove { name } => {
                let (_, rev) = fleet.update_state(|s| s.remove_group(name)).await?;
                println!("group {name} removed (fleet revision {rev})");
                Ok(())
            }
        }
    }))
}

async fn init(cfg: &Config, fleet: &Fleet, force: bool) -> Result<(), String> {
    if cfg.groups.is_empty() {
        return Err("the configuration has no [[groups]] to seed the fleet from".into());
    }
    if force && fleet.instances().await?.iter().any(|i| i.live) {
        return Err(
            "--force refused: keyhop instances are registered with this fleet; stop them first"
                .into(),
        );
    }
    let ranges = cfg.slot_ranges().map_err(|e| e.to_string())?;
    let groups = cfg
        .groups
        .iter()
        .map(|g| GroupDef {
            name: g.name.clone(),
            master: g.master.clone(),
            replicas: g.replicas.clone().unwrap_or_default(),
        })
        .collect();
    let state = FleetState::new(groups, &ranges)?;
    let rev = fleet.init(&state, force).await?;
    println!(
        "fleet {} created in etcd (revision {rev}) with {} groups",
        fleet.keys.prefix(),
        state.groups.len()
    );
    Ok(())
}

async fn show(fleet: &Fleet, json: bool) -> Result<(), String> {
    let (state, rev) = fleet.read_state().await?;
    let instances = fleet.instances().await?;
    if json {
        let v = serde_json::json!({
            "prefix": fleet.keys.prefix(),
            "revision": rev,
            "groups": state.groups.iter().map(|g| serde_json::json!({
                "name": g.name, "master": g.master, "replicas": g.replicas,
                "slots": state.ranges_of(&g.name).iter().map(|&(a, b)| range_text(a, b)).collect::<Vec<_>>(),
                "slot_count": state.slot_count(&g.name),
            })).collect::<Vec<_>>(),
            "flux": state.flux.iter().map(|f| serde_json::json!({
                "slots": range_text(f.first, f.last), "from": f.from, "to": f.to,
                "state": format!("{:?}", f.state).to_lowercase(), "job": f.job,
            })).collect::<Vec<_>>(),
            "instances": instances.iter().map(|i| serde_json::json!({
                "id": i.id, "addr": i.record.addr, "ack": i.record.ack, "live": i.live,
            })).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!("fleet {} at revision {rev}", fleet.keys.prefix());
    for g in &state.groups {
        let ranges: Vec<String> =
            state.ranges_of(&g.name).iter().map(|&(a, b)| range_text(a, b)).collect();
        println!(
            "  group {:<12} {:>5} slots  {}  master {}",
            g.name,
            state.slot_count(&g.name),
            if ranges.is_empty() { "-".into() } else { ranges.join(",") },
            g.master.as_deref().unwrap_or("(from Sentinel)")
        );
    }
    for f in &state.flux {
        println!(
            "  migrating {} {} -> {} ({:?}, job {})",
            range_text(f.first, f.last),
            f.from,
            f.to,
            f.state,
            f.job
        );
    }
    for i in &instances {
        println!(
            "  keyhop {} at {} acked {}{}",
            i.id,
            i.record.addr,
            i.record.ack,
            if i.live { "" } else { " (lease gone)" }
        );
    }
    Ok(())
}

/// Draws progress: a bar on a terminal, a line every 5 s otherwise.
struct Meter {
    tty: bool,
    last: Instant,
    started: Instant,
}

impl Meter {
    fn new() -> Meter {
        let now = Instant::now();
        Meter {
            tty: std::io::stderr().is_terminal(),
            last: now - Duration::from_secs(10),
            started: now,
        }
    }

    fn on(&mut self, p: Progress) {
        match p {
            Progress::Line(l) => {
                if self.tty {
                    eprint!("\r\x1b[K");
                }
                eprintln!("{l}");
            }
            Progress::Totals { slots_done, slots_total, moved } => {
                let every =
                    if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
                if self.last.elapsed() < every {
                    return;
                }
                self.last = Instant::now();
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                let rate = moved as f64 / secs;
                if self.tty {
                    let width = 30usize;
                    let fill = (slots_done as usize * width) / (slots_total.max(1) as usize);
                    eprint!(
                        "\r\x1b[K[{}{}] {slots_done}/{slots_total} slots, {moved} keys ({rate:.0} keys/s)",
                        "#".repeat(fill),
                        " ".repeat(width - fill.min(width))
                    );
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!(
                        "progress: {slots_done}/{slots_total} slots, {moved} keys moved ({rate:.0} keys/s)"
                    );
                }
            }
        }
    }
}

fn opts(
    cfg: &Config,
    ecfg: &keyhop_control::EtcdConfig,
    slots: Vec<(u16, u16)>,
    to: &str,
    t: &Tuning,
) -> MigrateOpts {
    MigrateOpts {
        slots,
        to: to.to_string(),
        window: t.window.max(1),
        batch: t.batch.max(1),
        keys_per_second: t.keys_per_second,
        ack_timeout: Duration::from_millis(t.ack_timeout_ms),
        grace: ecfg.grace(),
        migrate_timeout_ms: ecfg.migrate_timeout_ms,
        password: cfg.backend_password.clone(),
        lease_ttl_secs: ecfg.lease_ttl_secs(),
        tls: cfg.tls_setup().ok().and_then(|t| t.backends),
        masters: match &cfg.sentinel {
            None => Masters::Static,
            Some(s) => Masters::Sentinel {
                addrs: s.addrs.clone(),
                password: s.password.clone(),
                tls: if cfg.sentinel_tls() {
                    cfg.tls_setup().ok().and_then(|t| t.backends)
                } else {
                    None
                },
            },
        },
    }
}

async fn run_migrate(
    cfg: &Config,
    ecfg: &keyhop_control::EtcdConfig,
    fleet: &Fleet,
    slots: Vec<(u16, u16)>,
    to: &str,
    tuning: &Tuning,
) -> Result<(), String> {
    let mut meter = Meter::new();
    let o = opts(cfg, ecfg, slots, to, tuning);
    let stats = coordinator::migrate(fleet, &o, &mut |p| meter.on(p)).await?;
    if meter.tty {
        eprintln!();
    }
    println!(
        "done: {} keys moved by the mover ({} already moved by commands, {} conflicts resolved)",
        stats.moved, stats.nokey, stats.busykey_resolved
    );
    Ok(())
}

async fn sweep(
    cfg: &Config,
    ecfg: &keyhop_control::EtcdConfig,
    fleet: &Fleet,
    group: &str,
) -> Result<(), String> {
    let (state, _) = fleet.read_state().await?;
    if state.group_index(group).is_none() {
        return Err(format!("group {group:?} is not in the fleet (see `keyhop slots show`)"));
    }
    if state.flux.iter().any(|f| f.from == group || f.to == group) {
        return Err(format!(
            "group {group} is in a running migration: sweep it after `keyhop slots migrate` ends"
        ));
    }
    // The slots it does not own, as ranges.
    let mut foreign = Vec::new();
    for (a, b, g) in state.owner_ranges() {
        if state.groups[usize::from(g)].name != group {
            foreign.push((a, b));
        }
    }
    if foreign.is_empty() {
        println!("group {group} owns every slot: nothing to sweep");
        return Ok(());
    }
    let o = opts(cfg, ecfg, vec![], group, &Tuning::default());
    let master = o.masters.master_of(&state, group).await?;
    let n = keyhop_control::mover::sweep(&master, o.password.as_deref(), o.tls.as_ref(), &foreign)
        .await
        .map_err(|e| e.to_string())?;
    println!("swept {n} keys of slots group {group} does not own from {master}");
    Ok(())
}

/// Even shares: the first `16384 mod n` groups get one slot more.
pub fn rebalance_plan(state: &FleetState) -> Vec<(Vec<(u16, u16)>, String)> {
    let n = state.groups.len();
    let share = |i: usize| 16384 / n + usize::from(i < 16384 % n);
    let mut surplus: Vec<(u16, u16)> = Vec::new();
    for (i, g) in state.groups.iter().enumerate() {
        let mut extra = state.slot_count(&g.name).saturating_sub(share(i));
        // Give away from the end of the group's ranges, so what it keeps stays contiguous.
        for &(a, b) in state.ranges_of(&g.name).iter().rev() {
            if extra == 0 {
                break;
            }
            let len = usize::from(b - a) + 1;
            let take = len.min(extra);
            surplus.push((b + 1 - take as u16, b));
            extra -= take;
        }
    }
    surplus.sort_unstable();
    let mut plan = Vec::new();
    let mut it = surplus.into_iter();
    let mut cur = it.next();
    for (i, g) in state.groups.iter().enumerate() {
        let mut need = share(i).saturating_sub(state.slot_count(&g.name));
        let mut mine = Vec::new();
        while need > 0 {
            let Some((a, b)) = cur else { break };
            let len = usize::from(b - a) + 1;
            if len <= need {
                mine.push((a, b));
                need -= len;
                cur = it.next();
            } else {
                let e = a + need as u16 - 1;
                mine.push((a, e));
                cur = Some((e + 1, b));
                need = 0;
            }
        }
        if !mine.is_empty() {
            plan.push((mine, g.name.clone()));
        }
    }
    plan
}

async fn rebalance(
    cfg: &Config,
    ecfg: &keyhop_control::EtcdConfig,
    fleet: &Fleet,
    dry_run: bool,
    tuning: &Tuning,
) -> Result<(), String> {
    let (state, _) = fleet.read_state().await?;
    let plan = rebalance_plan(&state);
    if plan.is_empty() {
        println!("already balanced: nothing to move");
        return Ok(());
    }
    for (slots, to) in &plan {
        let text: Vec<String> = slots.iter().map(|&(a, b)| range_text(a, b)).collect();
        println!("move {} to {to}", text.join(","));
    }
    if dry_run {
        return Ok(());
    }
    for (slots, to) in plan {
        run_migrate(cfg, ecfg, fleet, slots, &to, tuning).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str) -> GroupDef {
        GroupDef { name: name.into(), master: Some("127.0.0.1:1".into()), replicas: vec![] }
    }

    #[test]
    fn rebalance_two_to_three() {
        let mut s =
            FleetState::new(vec![g("g1"), g("g2")], &[vec![(0, 8191)], vec![(8192, 16383)]])
                .unwrap();
        s.add_group(g("g3")).unwrap();
        let plan = rebalance_plan(&s);
        assert_eq!(plan, vec![(vec![(5462, 8191), (13653, 16383)], "g3".to_string())]);
        let moved: usize = plan[0].0.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
        assert_eq!(moved, 5461);
    }
}
