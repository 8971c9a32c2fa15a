//! `keyhop demo`: a real local topology (two groups of master + replica, three sentinels) and
//! keyhop in Sentinel mode in front of it, in one command and without any configuration.

mod client;
mod topology;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use keyhop_control::Config;

use crate::run::{self, Launch, Signals};
use topology::{Topology, find_in_path};

/// Sentinel quorum of the demo.
const QUORUM: u32 = 2;
/// The demo's groups, as the sentinels name them.
const GROUPS: [&str; 2] = ["g1", "g2"];

/// How to get the Redis binaries.
const INSTALL_HELP: &str = "Install them, then run the demo again:\n  \
    Debian/Ubuntu:  sudo apt-get install -y redis-server redis-sentinel redis-tools\n  \
    macOS:          brew install redis\n\
    (or, in keyhop's source tree, run `./dev demo`: it installs them and starts the demo)";

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

fn try_demo(listen: &str, config_given: bool) -> Result<(), String> {
    if config_given {
        eprintln!("keyhop demo: --config is ignored; the demo writes its own configuration");
    }
    let server_bin = find_in_path("redis-server");
    let sentinel_bin = find_in_path("redis-sentinel");
    let (Some(server_bin), Some(sentinel_bin)) = (server_bin.clone(), sentinel_bin.clone()) else {
        let missing: Vec<&str> = [("redis-server", &server_bin), ("redis-sentinel", &sentinel_bin)]
            .into_iter()
            .filter(|(_, p)| p.is_none())
            .map(|(n, _)| n)
            .collect();
        let verb = if missing.len() == 1 { "is" } else { "are" };
        return Err(format!(
            "the demo runs redis-server and redis-sentinel, and {} {verb} not on PATH.\n{INSTALL_HELP}",
            missing.join(" and ")
        ));
    };
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

    println!("keyhop demo: starting 4 redis-servers and 3 sentinels...");
    let mut topo = Topology::new(server_bin, sentinel_bin)
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
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
    let addrs: Vec<String> = sentinels.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let mut text = format!(
        "# Written by `keyhop demo`: Sentinel mode in front of the demo's local topology.\n\
         listen = \"{listen}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nshutdown_grace_ms = 2000\n\n\
         [sentinel]\naddrs = [{}]\npoll_interval_ms = 500\n",
        addrs.join(", ")
    );
    for g in GROUPS {
        let _ = write!(text, "\n[[groups]]\nname = \"{g}\"\n");
    }
    let path = topo.dir.join("keyhop.toml");
    std::fs::write(&path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let cfg = Config::load(&path).map_err(|e| e.to_string())?;

    let banner = banner(&topo, &cfg, listen, admin_port, &sentinels, &path);
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
        "keyhop demo: stopped keyhop and {stopped} Redis processes, removed {}",
        dir.display()
    );
    served
}

/// What the demo prints once keyhop serves.
fn banner(
    topo: &Topology,
    cfg: &Config,
    listen: &str,
    admin_port: u16,
    sentinels: &[u16],
    path: &std::path::Path,
) -> String {
    let cli = redis_cli(listen);
    let s1 = sentinels.first().copied().unwrap_or_default();
    let ranges = cfg.slot_ranges().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "\nkeyhop demo is running (pid {}).\n", std::process::id());
    let _ = writeln!(out, "  proxy     {listen}");
    let _ = writeln!(
        out,
        "  admin     http://127.0.0.1:{admin_port}/metrics  http://127.0.0.1:{admin_port}/healthz  http://127.0.0.1:{admin_port}/readyz"
    );
    let _ = writeln!(
        out,
        "  config    {}  (edit, then `kill -HUP {}`)",
        path.display(),
        std::process::id()
    );
    let _ = writeln!(out, "  temp dir  {}", topo.dir.display());
    let _ = writeln!(
        out,
        "\nTopology: {} groups, {} sentinels (quorum {QUORUM}):",
        GROUPS.len(),
        sentinels.len()
    );
    for (i, g) in GROUPS.iter().enumerate() {
        let slots: Vec<String> = ranges
            .get(i)
            .map(|r| r.iter().map(|(a, b)| format!("{a}-{b}")).collect())
            .unwrap_or_default();
        let _ = writeln!(out, "  {g}  slots {}", slots.join(","));
        for m in topo.members.iter().filter(|m| m.role.starts_with(&format!("{g} "))) {
            let _ = writeln!(
                out,
                "      {:<8} 127.0.0.1:{}  (pid {})",
                &m.role[g.len() + 1..],
                m.port,
                m.pid()
            );
        }
    }
    for m in topo.members.iter().filter(|m| m.role == "sentinel") {
        let _ = writeln!(out, "  sentinel 127.0.0.1:{}  (pid {})", m.port, m.pid());
    }
    let _ = writeln!(out, "\nTry:");
    let owner = |key: &str| {
        let slot = keyhop_router::key_slot(key.as_bytes());
        let g = ranges
            .iter()
            .position(|r| r.iter().any(|&(a, b)| (a..=b).contains(&u32::from(slot))))
            .and_then(|i| GROUPS.get(i))
            .unwrap_or(&"?");
        format!("# slot {slot}: {g}")
    };
    let _ = writeln!(out, "  {cli} set foo hello        {}", owner("foo"));
    let _ = writeln!(out, "  {cli} set bar world        {}", owner("bar"));
    let _ = writeln!(out, "  {cli} mget foo bar");
    let _ = writeln!(out, "  watch -n 1 {cli} INFO keyhop       # the masters keyhop routes to");
    let _ = writeln!(
        out,
        "  redis-cli -p {s1} SENTINEL FAILOVER g1   # promote g1's replica: keyhop follows"
    );
    let _ = writeln!(out, "  {cli} set bar again        # written to g1's new master");
    let _ =
        writeln!(out, "\nCtrl-C stops keyhop and every process above, and removes the temp dir.");
    out
}

/// The redis-cli invocation reaching `listen`.
fn redis_cli(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("127.0.0.1" | "localhost", port)) => format!("redis-cli -p {port}"),
        Some((host, port)) => {
            format!("redis-cli -h {} -p {port}", host.trim_start_matches('[').trim_end_matches(']'))
        }
        None => format!("redis-cli -h {listen}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redis_cli;

    #[test]
    fn redis_cli_commands() {
        assert_eq!(redis_cli("127.0.0.1:6380"), "redis-cli -p 6380");
        assert_eq!(redis_cli("0.0.0.0:7000"), "redis-cli -h 0.0.0.0 -p 7000");
        assert_eq!(redis_cli("[::1]:7000"), "redis-cli -h ::1 -p 7000");
    }
}
