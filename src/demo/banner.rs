//! What `keyhop demo` tells the user: the running topology and what to try once keyhop serves,
//! or how to get the programs it needs when they are missing. Kept apart from the start-up flow
//! so the exact command lines it prints can be unit-tested.

use std::fmt::Write as _;
use std::path::Path;

use keyhop_control::Config;
use keyhop_control::fleet::state::range_text;
use keyhop_control::fleet::{FleetState, GroupDef};

use super::topology::Topology;
use super::{GROUPS, NEW_GROUP, PREFIX, QUORUM, SEEDED};

/// Everything the banner names.
pub struct Facts<'a> {
    /// The running children.
    pub topo: &'a Topology,
    /// keyhop's configuration (its `[[groups]]` seeded the fleet).
    pub cfg: &'a Config,
    /// The client address.
    pub listen: &'a str,
    /// The admin endpoint's port.
    pub admin_port: u16,
    /// The sentinels' ports.
    pub sentinels: &'a [u16],
    /// etcd's client port.
    pub etcd_port: u16,
    /// The config file the demo wrote.
    pub path: &'a Path,
}

/// The error for programs missing from PATH, with how to install them.
pub fn missing_programs(missing: &[&str]) -> String {
    let verb = if missing.len() == 1 { "is" } else { "are" };
    let redis = missing.iter().any(|m| m.starts_with("redis"));
    let etcd = missing.contains(&"etcd");
    let apt: Vec<&str> =
        [(redis, "redis-server redis-sentinel redis-tools"), (etcd, "etcd-server")]
            .into_iter()
            .filter_map(|(want, p)| want.then_some(p))
            .collect();
    let brew: Vec<&str> = [(redis, "redis"), (etcd, "etcd")]
        .into_iter()
        .filter_map(|(want, p)| want.then_some(p))
        .collect();
    format!(
        "the demo runs redis-server, redis-sentinel and etcd, and {} {verb} not on PATH.\n\
         Install {}, then run the demo again:\n  \
         Debian/Ubuntu:  sudo apt-get install -y {}\n  \
         macOS:          brew install {}\n\
         (or, in keyhop's source tree, run `./dev demo`: it installs them and starts the demo)",
        and_list(missing),
        if missing.len() == 1 { "it" } else { "them" },
        apt.join(" "),
        brew.join(" ")
    )
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// What the demo prints once keyhop serves.
pub fn banner(f: &Facts) -> String {
    let pid = std::process::id();
    let cli = redis_cli(f.listen);
    let s1 = f.sentinels.first().copied().unwrap_or_default();
    let ranges = f.cfg.slot_ranges().unwrap_or_default();
    let admin = format!("http://127.0.0.1:{}", f.admin_port);
    let mut out = String::new();
    let _ = writeln!(out, "\nkeyhop demo is running (pid {pid}).\n");
    let _ = writeln!(out, "  proxy     {}", f.listen);
    let _ = writeln!(
        out,
        "  admin     {admin}/metrics  {admin}/healthz  {admin}/readyz  {admin}/topology"
    );
    let _ = writeln!(out, "  config    {}  (edit, then `kill -HUP {pid}`)", f.path.display());
    let _ = writeln!(
        out,
        "  fleet     etcd http://127.0.0.1:{}, prefix {PREFIX}: the groups and slots keyhop serves",
        f.etcd_port
    );
    let _ = writeln!(out, "  temp dir  {}", f.topo.dir.display());
    let _ = writeln!(
        out,
        "\nTopology: {} groups, {} sentinels (quorum {QUORUM}), etcd:",
        GROUPS.len(),
        f.sentinels.len()
    );
    for g in GROUPS {
        let slots = match SEEDED.iter().position(|s| *s == g).and_then(|i| ranges.get(i)) {
            Some(r) => {
                let list: Vec<String> = r.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                format!("slots {}", list.join(","))
            }
            None => "no slots yet (in the fleet, empty)".to_string(),
        };
        let _ = writeln!(out, "  {g}  {slots}");
        for m in f.topo.members.iter().filter(|m| m.role.starts_with(&format!("{g} "))) {
            let role = &m.role[g.len() + 1..];
            let _ = writeln!(out, "      {role:<8} 127.0.0.1:{}  (pid {})", m.port, m.pid());
        }
    }
    for role in ["sentinel", "etcd"] {
        for m in f.topo.members.iter().filter(|m| m.role == role) {
            let _ = writeln!(out, "  {role:<8} 127.0.0.1:{}  (pid {})", m.port, m.pid());
        }
    }
    let _ = writeln!(out, "\nTry:");
    let owner = |key: &str| {
        let slot = u32::from(keyhop_router::key_slot(key.as_bytes()));
        let g = ranges
            .iter()
            .position(|r| r.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .and_then(|i| SEEDED.get(i))
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
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.to_str().map(sh_quote))
        .unwrap_or_else(|| "keyhop".to_string());
    let config = sh_quote(&f.path.display().to_string());
    let _ = writeln!(
        out,
        "\nGrow the demo from 2 to 3 groups while it serves ({NEW_GROUP} is in the fleet, empty):"
    );
    let _ = writeln!(
        out,
        "  {exe} slots rebalance --config {config}   # moves {} to {NEW_GROUP}",
        rebalance_moves(&ranges)
    );
    let _ = writeln!(out, "  {exe} slots show --config {config}");
    let _ = writeln!(
        out,
        "  curl -s {admin}/topology   # its \"fleet\" object: revision applied, slots in flux"
    );
    let _ =
        writeln!(out, "\nCtrl-C stops keyhop and every process above, and removes the temp dir.");
    out
}

/// The slots `keyhop slots rebalance` moves to the new group, as `keyhop slots show` writes them.
fn rebalance_moves(seeded: &[Vec<(u32, u32)>]) -> String {
    let def = |name: &str| GroupDef { name: name.to_string(), master: None, replicas: Vec::new() };
    let Ok(mut state) = FleetState::new(SEEDED.iter().map(|g| def(g)).collect(), seeded) else {
        return "an even share".to_string();
    };
    if state.add_group(def(NEW_GROUP)).is_err() {
        return "an even share".to_string();
    }
    let moved: Vec<String> = crate::fleet::cli::rebalance_plan(&state)
        .into_iter()
        .flat_map(|(slots, _)| slots.into_iter().map(|(a, b)| range_text(a, b)))
        .collect();
    moved.join(",")
}

/// `s` as one shell word.
fn sh_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
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
    use super::*;

    #[test]
    fn redis_cli_commands() {
        assert_eq!(redis_cli("127.0.0.1:6380"), "redis-cli -p 6380");
        assert_eq!(redis_cli("0.0.0.0:7000"), "redis-cli -h 0.0.0.0 -p 7000");
        assert_eq!(redis_cli("[::1]:7000"), "redis-cli -h ::1 -p 7000");
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            sh_quote("/tmp/keyhop-demo-1-ab/keyhop.toml"),
            "/tmp/keyhop-demo-1-ab/keyhop.toml"
        );
        assert_eq!(sh_quote("/my dir/keyhop"), "'/my dir/keyhop'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }

    #[test]
    fn rebalance_moves_a_third_to_the_new_group() {
        let seeded = vec![vec![(0, 8191)], vec![(8192, 16383)]];
        assert_eq!(rebalance_moves(&seeded), "5462-8191,13653-16383");
    }

    #[test]
    fn missing_programs_name_only_what_is_missing() {
        let all = missing_programs(&["redis-server", "redis-sentinel", "etcd"]);
        assert!(all.starts_with(
            "the demo runs redis-server, redis-sentinel and etcd, and redis-server, \
             redis-sentinel and etcd are not on PATH.\nInstall them"
        ));
        assert!(all.contains(
            "sudo apt-get install -y redis-server redis-sentinel redis-tools etcd-server\n"
        ));
        assert!(all.contains("brew install redis etcd\n"));
        let etcd = missing_programs(&["etcd"]);
        assert!(etcd.contains("and etcd is not on PATH.\nInstall it, then"), "{etcd}");
        assert!(etcd.contains("sudo apt-get install -y etcd-server\n"), "{etcd}");
        assert!(etcd.contains("brew install etcd\n"), "{etcd}");
        let sentinel = missing_programs(&["redis-sentinel"]);
        assert!(sentinel.contains("and redis-sentinel is not on PATH."), "{sentinel}");
        assert!(!sentinel.contains("etcd-server"), "{sentinel}");
    }
}
