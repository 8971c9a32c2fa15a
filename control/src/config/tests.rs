use super::*;

const STATIC: &str = r#"
[[groups]]
name = "g1"
master = "127.0.0.1:7001"
replicas = ["127.0.0.1:7002"]
slots = ["0-8191"]

[[groups]]
name = "g2"
master = "127.0.0.1:7003"
slots = ["8192-16383"]
"#;

/// Parses `text`, expecting validation problems; returns them.
fn problems(text: &str) -> Vec<Problem> {
    match Config::parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// Asserts that `text` yields a problem for `key` whose message contains `want`.
fn assert_problem(text: &str, key: &str, want: &str) {
    let ps = problems(text);
    assert!(
        ps.iter().any(|p| p.key == key && p.message.contains(want)),
        "no problem for {key} containing {want:?} in {ps:#?}"
    );
}

fn syntax_error(text: &str) -> String {
    match Config::parse(text) {
        Err(ConfigError::Syntax { message, .. }) => message,
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

fn with_groups(top: &str) -> String {
    format!("{top}\n{STATIC}")
}

#[test]
fn defaults_fill_everything() {
    let cfg = Config::parse(STATIC).expect("valid");
    let d = Config::default();
    assert_eq!(cfg.listen, "127.0.0.1:6380");
    assert_eq!(cfg.admin_listen, None);
    assert_eq!(cfg.threads, 0);
    assert_eq!(cfg.connect_timeout_ms, 1000);
    assert_eq!(cfg.request_timeout_ms, 5000);
    assert_eq!(cfg.tcp_keepalive_s, 60);
    assert_eq!(cfg.max_clients, 10_000);
    assert_eq!(cfg.backend_connections, 1);
    assert!(!cfg.allow_flush);
    assert!(!cfg.allow_admin);
    assert_eq!(cfg.password, None);
    assert_eq!(cfg.backend_password, None);
    assert_eq!(cfg.read_from, ReadFrom::Master);
    assert_eq!(cfg.slowlog_threshold_us, 10_000);
    assert_eq!(cfg.slowlog_max_len, 128);
    assert_eq!(cfg.shutdown_grace_ms, 5000);
    assert_eq!(cfg.sentinel, None);
    assert_eq!(Config { groups: vec![], ..cfg.clone() }, d);
    assert_eq!(cfg.groups.len(), 2);
    assert_eq!(cfg.groups[0].replicas.as_deref(), Some(&["127.0.0.1:7002".to_string()][..]));
    assert!(cfg.worker_threads() >= 1);
    assert_eq!(cfg.tcp_keepalive(), Some(Duration::from_secs(60)));
}

#[test]
fn every_key_parses() {
    let text = r#"
listen = "0.0.0.0:7000"
admin_listen = "127.0.0.1:9121"
threads = 3
connect_timeout_ms = 250
request_timeout_ms = 900
tcp_keepalive_s = 0
max_clients = 5
backend_connections = 4
allow_flush = true
allow_admin = true
password = "pw"
backend_password = "bpw"
read_from = "replica-preferred"
slowlog_threshold_us = 0
slowlog_max_len = 0
shutdown_grace_ms = 0

[sentinel]
addrs = ["127.0.0.1:26379", "127.0.0.1:26380"]
password = "spw"
poll_interval_ms = 500

[[groups]]
name = "a"
[[groups]]
name = "b"
"#;
    let cfg = Config::parse(text).expect("valid");
    assert_eq!(cfg.listen, "0.0.0.0:7000");
    assert_eq!(cfg.admin_listen.as_deref(), Some("127.0.0.1:9121"));
    assert_eq!(cfg.threads, 3);
    assert_eq!(cfg.worker_threads(), 3);
    assert_eq!(cfg.connect_timeout(), Duration::from_millis(250));
    assert_eq!(cfg.request_timeout(), Duration::from_millis(900));
    assert_eq!(cfg.tcp_keepalive(), None);
    assert_eq!(cfg.max_clients, 5);
    assert_eq!(cfg.backend_connections, 4);
    assert!(cfg.allow_flush);
    assert!(cfg.allow_admin);
    assert_eq!(cfg.password.as_deref(), Some("pw"));
    assert_eq!(cfg.backend_password.as_deref(), Some("bpw"));
    assert_eq!(cfg.read_from, ReadFrom::ReplicaPreferred);
    assert_eq!(cfg.shutdown_grace(), Duration::ZERO);
    let s = cfg.sentinel.as_ref().expect("sentinel");
    assert_eq!(s.addrs.len(), 2);
    assert_eq!(s.password.as_deref(), Some("spw"));
    assert_eq!(s.poll_interval(), Duration::from_millis(500));
    assert!(cfg.is_sentinel_mode());
    assert_eq!(cfg.slot_ranges().expect("ranges"), vec![vec![(0, 8191)], vec![(8192, 16383)]]);
}

#[test]
fn sentinel_section_defaults() {
    let cfg =
        Config::parse("[sentinel]\naddrs = [\"127.0.0.1:26379\"]\n[[groups]]\nname = \"g\"\n")
            .expect("valid");
    let s = cfg.sentinel.expect("sentinel");
    assert_eq!(s.poll_interval_ms, 1000);
    assert_eq!(s.password, None);
}

#[test]
fn unknown_keys_are_named() {
    let m = syntax_error(&with_groups("listn = \"127.0.0.1:1\""));
    assert!(m.contains("listn"), "{m}");
    let m = syntax_error("[sentinel]\naddrs = []\npoll_interval = 5\n");
    assert!(m.contains("poll_interval"), "{m}");
    let m = syntax_error("[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\nreplica = []\n");
    assert!(m.contains("replica"), "{m}");
    let m = syntax_error(&with_groups("[admin]\nx = 1"));
    assert!(m.contains("admin"), "{m}");
}

#[test]
fn wrong_types_and_bad_toml_are_syntax_errors() {
    let m = syntax_error(&with_groups("threads = \"four\""));
    assert!(m.contains("threads") || m.contains("four"), "{m}");
    let m = syntax_error(&with_groups("connect_timeout_ms = -1"));
    assert!(m.contains("connect_timeout_ms") || m.contains("-1"), "{m}");
    // A quoted boolean would silently read as "off" in a looser parser: it is refused.
    let m = syntax_error(&with_groups("allow_admin = \"yes\""));
    assert!(m.contains("allow_admin") || m.contains("yes"), "{m}");
    syntax_error("listen = ");
    syntax_error("[[groups]]\nname = \"g\"\nslots = [1, 2]\n");
}

#[test]
fn read_from_unknown_value_is_collected_with_other_problems() {
    let ps = problems(&with_groups("read_from = \"replicas\"\nbackend_connections = 0"));
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert_eq!(ps[0].key, "read_from");
    assert!(ps[0].message.contains("\"replica-preferred\""), "{}", ps[0].message);
    assert_eq!(ps[1].key, "backend_connections");
}

#[test]
fn addresses_are_checked() {
    assert_problem(&with_groups("listen = \"6380\""), "listen", "no port");
    assert_problem(
        &with_groups("admin_listen = \"127.0.0.1:70000\""),
        "admin_listen",
        "1 to 65535",
    );
    assert_problem(
        "[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:0\"\n",
        "groups[0].master",
        "from 1 to 65535",
    );
    assert_problem(
        "[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\nreplicas = [\"nope\"]\n",
        "groups[0].replicas[0]",
        "no port",
    );
    assert_problem(
        "[sentinel]\naddrs = [\"127.0.0.1:26379\", \"h\"]\n[[groups]]\nname = \"g\"\n",
        "sentinel.addrs[1]",
        "no port",
    );
}

#[test]
fn replica_mistakes() {
    assert_problem(
        "[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\nreplicas = [\"127.0.0.1:1\"]\n",
        "groups[0].replicas[0]",
        "own replica",
    );
    assert_problem(
        "[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\nreplicas = [\"127.0.0.1:2\", \"127.0.0.1:2\"]\n",
        "groups[0].replicas[1]",
        "listed twice",
    );
}

#[test]
fn group_names() {
    assert_problem(
        "[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\n[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:2\"\n",
        "groups[1].name",
        "must be unique",
    );
    assert_problem("[[groups]]\nmaster = \"127.0.0.1:1\"\n", "groups[0].name", "is missing");
    assert_problem(
        "[[groups]]\nname = \"a b\"\nmaster = \"127.0.0.1:1\"\n",
        "groups[0].name",
        "whitespace",
    );
}

#[test]
fn no_groups_and_too_many() {
    assert_problem("", "groups", "no groups are configured");
    let mut text = String::new();
    for i in 0..1025 {
        text.push_str(&format!(
            "[[groups]]\nname = \"g{i}\"\nmaster = \"127.0.0.1:{}\"\n",
            1000 + i
        ));
    }
    let ps = problems(&text);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].key, "groups");
    assert!(
        ps[0].message.contains("1025 groups") && ps[0].message.contains("1024"),
        "{}",
        ps[0].message
    );
    // Exactly the limit is fine.
    let text: String = (0..1024)
        .map(|i| format!("[[groups]]\nname = \"g{i}\"\nmaster = \"127.0.0.1:{}\"\n", 1000 + i))
        .collect();
    let cfg = Config::parse(&text).expect("1024 groups");
    assert_eq!(cfg.routing_table(1).expect("table").groups.len(), 1024);
}

#[test]
fn master_rules_static_and_sentinel() {
    assert_problem("[[groups]]\nname = \"g\"\n", "groups[0].master", "has no master");
    let text = "[sentinel]\naddrs = [\"127.0.0.1:26379\"]\n[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\nreplicas = [\"127.0.0.1:2\"]\n";
    assert_problem(text, "groups[0].master", "masters come from Sentinel");
    assert_problem(text, "groups[0].replicas", "replicas come from Sentinel");
}

#[test]
fn sentinel_section_rules() {
    assert_problem("[sentinel]\n[[groups]]\nname = \"g\"\n", "sentinel.addrs", "is empty");
    assert_problem(
        "[sentinel]\naddrs = [\"127.0.0.1:26379\", \"127.0.0.1:26379\"]\n[[groups]]\nname = \"g\"\n",
        "sentinel.addrs[1]",
        "listed twice",
    );
    assert_problem(
        "[sentinel]\naddrs = [\"127.0.0.1:26379\"]\npoll_interval_ms = 0\n[[groups]]\nname = \"g\"\n",
        "sentinel.poll_interval_ms",
        "out of range",
    );
    assert_problem(
        "[sentinel]\naddrs = [\"127.0.0.1:26379\"]\npoll_interval_ms = 3600000\n[[groups]]\nname = \"g\"\n",
        "sentinel.poll_interval_ms",
        "out of range",
    );
    assert_problem(
        "[sentinel]\naddrs = [\"127.0.0.1:26379\"]\npassword = \"\"\n[[groups]]\nname = \"g\"\n",
        "sentinel.password",
        "is empty",
    );
}

#[test]
fn numeric_bounds() {
    let cases = [
        ("connect_timeout_ms = 0", "connect_timeout_ms", "too short"),
        ("connect_timeout_ms = 600001", "connect_timeout_ms", "absurd"),
        ("request_timeout_ms = 0", "request_timeout_ms", "too short"),
        ("request_timeout_ms = 99999999999", "request_timeout_ms", "absurd"),
        ("shutdown_grace_ms = 600001", "shutdown_grace_ms", "absurd"),
        ("threads = 5000", "threads", "absurd"),
        ("tcp_keepalive_s = 40000", "tcp_keepalive_s", "at most 32767"),
        ("max_clients = 0", "max_clients", "out of range"),
        ("backend_connections = 0", "backend_connections", "use 1 to 64"),
        ("backend_connections = 65", "backend_connections", "use 1 to 64"),
        ("slowlog_max_len = 2000000", "slowlog_max_len", "absurd"),
        ("password = \"\"", "password", "is empty"),
        ("backend_password = \"\"", "backend_password", "is empty"),
        ("client_output_limit = \"0 8mb 60\"", "client_output_limit", "has no hard limit"),
        ("client_output_limit = \"64mb\"", "client_output_limit", "HARD SOFT SECONDS"),
    ];
    for (line, key, want) in cases {
        assert_problem(&with_groups(line), key, want);
    }
    // The edges that are allowed.
    let ok = "connect_timeout_ms = 1\nrequest_timeout_ms = 3600000\nshutdown_grace_ms = 0\nthreads = 1024\ntcp_keepalive_s = 32767\nbackend_connections = 64\n";
    Config::parse(&with_groups(ok)).expect("edges are valid");
    let cfg = Config::parse(&with_groups(
        "client_output_limit = \"1gb 16mb 30\"\npubsub_output_limit = \"0 0 0\"",
    ))
    .expect("limits are valid");
    assert_eq!(cfg.client_output_limit.to_string(), format!("{} {} 30", 1u64 << 30, 16 << 20));
    assert_eq!(cfg.pubsub_output_limit.hard_bytes, 0);
    assert_eq!(Config::default().client_output_limit.hard_bytes, 64 << 20);
}

#[test]
fn all_problems_are_collected() {
    let text = r#"
listen = "nope"
backend_connections = 0
read_from = "any"
[sentinel]
addrs = []
[[groups]]
name = "g"
master = "127.0.0.1:1"
[[groups]]
name = "g"
slots = ["5-1"]
"#;
    let ps = problems(text);
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "read_from",
        "listen",
        "backend_connections",
        "sentinel.addrs",
        "groups[0].master",
        "groups[1].name",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    assert!(keys.contains(&"groups[1].slots[0]") || keys.contains(&"groups[0].slots"), "{keys:?}");
    let shown = Config::parse(text).expect_err("invalid").to_string();
    assert!(shown.starts_with(&format!("{} problems in the configuration:", ps.len())), "{shown}");
    assert_eq!(shown.lines().count(), ps.len() + 1, "{shown}");
}

#[test]
fn slot_syntax() {
    let g = |slots: &str| {
        format!("[[groups]]\nname = \"g\"\nmaster = \"127.0.0.1:1\"\nslots = {slots}\n")
    };
    assert_problem(&g(r#"["8191-0"]"#), "groups[0].slots[0]", "reversed: write \"0-8191\"");
    assert_problem(&g(r#"["0-16383", "16384"]"#), "groups[0].slots[1]", "out of range");
    assert_problem(&g(r#"["x"]"#), "groups[0].slots[0]", "not a slot or a range");
    assert_problem(&g("[]"), "groups[0].slots", "empty slot list");
    let cfg = Config::parse(&g(r#"["0-100", "101-16383"]"#)).expect("valid");
    assert_eq!(cfg.slot_ranges().expect("ranges"), vec![vec![(0, 100), (101, 16383)]]);
}

#[test]
fn slot_ownership_uses_table_messages() {
    let two = |a: &str, b: &str| {
        format!(
            "[[groups]]\nname = \"a\"\nmaster = \"127.0.0.1:1\"\nslots = {a}\n[[groups]]\nname = \"b\"\nmaster = \"127.0.0.1:2\"\nslots = {b}\n"
        )
    };
    assert_problem(
        &two(r#"["0-8000"]"#, r#"["8100-16383"]"#),
        "groups[*].slots",
        "slots not owned by any group: 8001-8099",
    );
    assert_problem(
        &two(r#"["0-9000"]"#, r#"["8192-16383"]"#),
        "groups[*].slots",
        "slots owned by more than one group: 8192-9000 by a and b",
    );
    let mixed = "[[groups]]\nname = \"a\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-16383\"]\n[[groups]]\nname = \"b\"\nmaster = \"127.0.0.1:2\"\n";
    assert_problem(mixed, "groups[1].slots", "gives no slots while other groups do");
}

#[test]
fn even_split_when_no_group_names_slots() {
    let text = "[[groups]]\nname = \"a\"\nmaster = \"127.0.0.1:1\"\n[[groups]]\nname = \"b\"\nmaster = \"127.0.0.1:2\"\n[[groups]]\nname = \"c\"\nmaster = \"127.0.0.1:3\"\n";
    let cfg = Config::parse(text).expect("valid");
    let t = cfg.routing_table(7).expect("table");
    assert_eq!(t.epoch, 7);
    assert_eq!(t.slot_ranges(0), vec![(0, 5460)]);
    assert_eq!(t.slot_ranges(1), vec![(5461, 10921)]);
    assert_eq!(t.slot_ranges(2), vec![(10922, 16383)]);
}

#[test]
fn static_routing_table() {
    let cfg = Config::parse(STATIC).expect("valid");
    let t = cfg.routing_table(1).expect("table");
    assert_eq!(t.groups[0].master, "127.0.0.1:7001");
    assert_eq!(
        t.groups[0].replicas,
        vec![Replica { addr: "127.0.0.1:7002".into(), healthy: true }]
    );
    assert_eq!(t.groups[1].replicas, vec![]);
    assert_eq!(t.group_for_slot(8191), 0);
    assert_eq!(t.group_for_slot(8192), 1);
}

#[test]
fn sentinel_mode_table_needs_learned_topology() {
    let text = "[sentinel]\naddrs = [\"127.0.0.1:26379\"]\n[[groups]]\nname = \"g1\"\n[[groups]]\nname = \"g2\"\n";
    let cfg = Config::parse(text).expect("valid");
    assert!(matches!(cfg.routing_table(1), Err(ConfigError::SentinelMode)));
    let t = cfg
        .table_from_topology(3, |name| {
            let port = if name == "g1" { 1 } else { 2 };
            Some((
                format!("127.0.0.1:{port}"),
                vec![Replica { addr: "127.0.0.1:9".into(), healthy: false }],
            ))
        })
        .expect("table");
    assert_eq!(t.epoch, 3);
    assert_eq!(t.groups[1].master, "127.0.0.1:2");
    let err = cfg
        .table_from_topology(3, |name| (name == "g1").then(|| ("127.0.0.1:1".to_string(), vec![])))
        .expect_err("g2 unknown");
    assert!(err.to_string().contains("no master is known for group \"g2\""), "{err}");
}

#[test]
fn describe_lists_each_group() {
    let cfg = Config::parse(
        r#"
[[groups]]
name = "g1"
master = "127.0.0.1:7001"
replicas = ["127.0.0.1:7002", "127.0.0.1:7004"]
slots = ["0-8191", "9000"]

[[groups]]
name = "second"
master = "127.0.0.1:7003"
slots = ["8192-8999", "9001-16383"]
"#,
    )
    .expect("valid");
    let mut t = cfg.routing_table(1).expect("table");
    t.groups[0].replicas[1].healthy = false;
    let out = describe(&cfg, &t);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(
        lines[0],
        "listen 127.0.0.1:6380, 2 groups, static masters, read_from master, epoch 1"
    );
    assert_eq!(
        lines[1],
        "g1      master 127.0.0.1:7001  replicas 127.0.0.1:7002,127.0.0.1:7004(down)  slots 0-8191,9000 (8193 slots)"
    );
    assert_eq!(
        lines[2],
        "second  master 127.0.0.1:7003  replicas -  slots 8192-8999,9001-16383 (8191 slots)"
    );
}

#[test]
fn load_reports_the_path() {
    let dir = std::env::temp_dir().join(format!("keyhop-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let good = dir.join("good.toml");
    std::fs::write(&good, STATIC).expect("write");
    assert_eq!(Config::load(&good).expect("loads").groups.len(), 2);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "backend_connections = 0\n").expect("write");
    let err = Config::load(&bad).expect_err("invalid");
    assert!(err.to_string().contains("bad.toml"), "{err}");
    assert_eq!(err.problems().len(), 2, "{err}");

    let ugly = dir.join("ugly.toml");
    std::fs::write(&ugly, "bogus = 1\n").expect("write");
    let err = Config::load(&ugly).expect_err("unknown key");
    assert!(err.to_string().contains("ugly.toml") && err.to_string().contains("bogus"), "{err}");

    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
