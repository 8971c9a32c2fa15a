//! `keyhop demo`: a real local fleet (three groups of master + replica, three sentinels, one
//! etcd) and keyhop in Sentinel + etcd (fleet) mode in front of it, in one command and without
//! any configuration. g1 and g2 own the slots; g3 is in the fleet empty, so the banner's
//! `keyhop slots rebalance` grows the demo from 2 to 3 groups while it serves.

mod banner;
mod client;
mod topology;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use keyhop_control::Config;

use crate::fleet::cli::{GroupCmd, SlotsCmd};
use crate::run::{self, Launch, Signals};
use topology::{Bins, Topology, find_in_path};

/// Sentinel quorum of the demo.
const QUORUM: u32 = 2;
/// The groups the fleet is seeded with; they split the slots between them.
const SEEDED: [&str; 2] = ["g1", "g2"];
/// The group added to the fleet owning no slots, for `keyhop slots rebalance` to grow into.
const NEW_GROUP: &str = "g3";
/// Every group the sentinels monitor.
const GROUPS: [&str; 3] = ["g1", "g2", NEW_GROUP];
/// The fleet's key prefix in the demo's etcd.
const PREFIX: &str = "/keyhop/demo";

/// `keyhop demo --listen ADDR`.
pub fn demo(listen: &str, config_given: bool) -> ExitCode {
    match try_demo(listen, config_given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyhop demo: {e}");
            ExitCode::from(1)
        }
    }
}

/// The programs the demo runs, or what to say when some are not on PATH.
fn find_bins() -> Result<Bins, String> {
    let server = find_in_path("redis-server");
    let sentinel = find_in_path("redis-sentinel");
    let etcd = find_in_path("etcd");
    match (server.clone(), sentinel.clone(), etcd.clone()) {
        (Some(server), Some(sentinel), Some(etcd)) => Ok(Bins { server, sentinel, etcd }),
        _ => {
            let missing: Vec<&str> =
                [("redis-server", &server), ("redis-sentinel", &sentinel), ("etcd", &etcd)]
                    .into_iter()
                    .filter(|(_, p)| p.is_none())
                    .map(|(n, _)| n)
                    .collect();
            Err(banner::missing_programs(&missing))
        }
    }
}

fn try_demo(listen: &str, config_given: bool) -> Result<(), String> {
    if config_given {
        eprintln!("keyhop demo: --config is ignored; the demo writes its own configuration");
    }
    let bins = find_bins()?;
    // Bind first: a busy port should fail before any server is started.
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "{listen} is already in use (another Redis, keyhop or demo?).\n\
                 Pick another address:  keyhop demo --listen 127.0.0.1:6390"
            )
        } else {
            format!("cannot listen on {listen}: {e} (pick another address with --listen)")
        }
    })?;
    let runtime = run::runtime(&Config::default())?;
    // Registered now so Ctrl-C while the servers start still ends in a clean teardown.
    let signals = runtime.block_on(async { Signals::new() })?;

    println!("keyhop demo: starting etcd, {} redis-servers and 3 sentinels...", 2 * GROUPS.len());
    let mut topo = Topology::new(bins).map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let etcd_port = topo.start_etcd()?;
    let mut masters = Vec::new();
    for g in GROUPS {
        let master = topo.start_server(&format!("{g} master"), None)?;
        let replica = topo.start_server(&format!("{g} replica"), Some(master))?;
        masters.push((g, master, replica));
    }
    for (g, _, replica) in &masters {
        if !topo.wait_replica_linked(*replica) {
            return Err(format!("the {g} replica on port {replica} never linked to its master"));
        }
    }
    let monitored: Vec<(&str, u16)> = masters.iter().map(|(g, m, _)| (*g, *m)).collect();
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        sentinels.push(topo.start_sentinel(&monitored, QUORUM)?);
    }
    // A forced failover needs a known replica; a real one also needs the other sentinels (they
    // find each other through hello messages every 2 s).
    for s in &sentinels {
        for g in GROUPS {
            if !topo.wait_sentinel_ready(*s, g, 1, 2, Duration::from_secs(20)) {
                eprintln!(
                    "keyhop demo: sentinel {s} does not see all of {g}'s replica and peers yet; \
                     failovers may need a few more seconds"
                );
            }
        }
    }

    let admin_port =
        topology::free_port().map_err(|e| format!("cannot pick an admin port: {e}"))?;
    let path = topo.dir.join("keyhop.toml");
    let text = config_text(listen, admin_port, &sentinels, etcd_port);
    std::fs::write(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let cfg = Config::load(&path).map_err(|e| e.to_string())?;
    seed_fleet(&cfg, &topo)?;

    let banner = banner::banner(&banner::Facts {
        topo: &topo,
        cfg: &cfg,
        listen,
        admin_port,
        sentinels: &sentinels,
        etcd_port,
        path: &path,
    });
    let ready = Box::new(move || {
        print!("{banner}");
    });
    let launch =
        Launch { config_path: Some(path), listener: Some(listener), signals, ready: Some(ready) };
    let served = runtime.block_on(run::serve(cfg, launch));
    // Sessions still open after the grace are dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let dir = topo.dir.clone();
    let stopped = topo.shutdown();
    println!(
        "keyhop demo: stopped keyhop and {stopped} Redis and etcd processes, removed {}",
        dir.display()
    );
    served
}

/// The configuration keyhop runs with: Sentinel + etcd (fleet) mode; the `[[groups]]` only seed
/// the fleet (`keyhop slots init`), etcd holds the groups and slots from then on.
fn config_text(listen: &str, admin_port: u16, sentinels: &[u16], etcd_port: u16) -> String {
    let addrs: Vec<String> = sentinels.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let mut text = format!(
        "# Written by `keyhop demo`: a fleet member (Sentinel + etcd mode) in front of the\n\
         # demo's local topology. The [[groups]] below only seeded the fleet; groups and slots\n\
         # live in etcd: see them with `keyhop slots show --config <this file>`.\n\
         listen = \"{listen}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nshutdown_grace_ms = 2000\n\n\
         [sentinel]\naddrs = [{}]\npoll_interval_ms = 500\n\n\
         [etcd]\nendpoints = [\"http://127.0.0.1:{etcd_port}\"]\nprefix = \"{PREFIX}\"\n",
        addrs.join(", ")
    );
    for g in SEEDED {
        let _ = write!(text, "\n[[groups]]\nname = \"{g}\"\n");
    }
    text
}

/// Creates the fleet's slot map from the config's groups and adds the empty group, through the
/// code of `keyhop slots init` and `keyhop group add` (which print what they did, or the error).
fn seed_fleet(cfg: &Config, topo: &Topology) -> Result<(), String> {
    let logs = format!("etcd's log is under {}", topo.dir.display());
    if crate::fleet::cli::slots(cfg, &SlotsCmd::Init { force: false }) != ExitCode::SUCCESS {
        return Err(format!("creating the fleet's slot map in etcd failed (see above; {logs})"));
    }
    let add = GroupCmd::Add { name: NEW_GROUP.to_string(), master: None, replica: Vec::new() };
    if crate::fleet::cli::group(cfg, &add) != ExitCode::SUCCESS {
        return Err(format!("adding {NEW_GROUP} to the fleet failed (see above; {logs})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_a_fleet_member_seeding_two_groups() {
        let text = config_text("127.0.0.1:6380", 9000, &[1, 2, 3], 2379);
        let dir = std::env::temp_dir().join(format!("keyhop-demo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keyhop.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg = Config::load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = cfg.unwrap();
        assert!(cfg.is_sentinel_mode());
        let etcd = cfg.etcd.as_ref().unwrap();
        assert_eq!(etcd.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(etcd.prefix, PREFIX);
        let names: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, SEEDED);
        assert_eq!(cfg.slot_ranges().unwrap(), vec![vec![(0, 8191)], vec![(8192, 16383)]]);
    }
}
