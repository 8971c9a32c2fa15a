//! The admin HTTP endpoint against real redis-server and keyhop processes: /healthz, /metrics
//! (strictly parsed, counters moving with traffic), /readyz following a master's death and
//! return, /topology and /dashboard.json without secrets, the dashboard's per-group counters and
//! timeline, 404 and 405.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;

use std::time::{Duration, Instant};

use common::{Raw, Reply, free_port, keyhop, redis_server, temp_dir, wait_until};

/// One HTTP/1.1 exchange over a fresh connection: (status, body). Panics on I/O errors.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    try_http(port, method, path).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn try_http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad =
        || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad response {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

/// A strictly parsed Prometheus text exposition.
struct Scrape {
    /// (sample name, labels sorted and joined) -> value.
    samples: HashMap<(String, String), f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        l.sort();
        self.samples.get(&(name.to_string(), l.join(","))).copied()
    }

    fn get_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

/// Parses `name{k="v",...} value` lines with HELP/TYPE comments; panics on anything off-format:
/// unknown or repeated families, samples outside their family's block, duplicate series, bad
/// values, and histograms whose buckets are not cumulative or do not end in `+Inf` == `_count`.
fn parse_metrics(text: &str) -> Scrape {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut samples = HashMap::new();
    // (family, labels without le) -> [(le, value)], plus _count values.
    let mut buckets: HashMap<(String, String), Vec<(f64, f64)>> = HashMap::new();
    let mut counts: HashMap<(String, String), f64> = HashMap::new();
    let mut sums: HashSet<(String, String)> = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let arg = parts.next().unwrap_or("");
            assert!(valid_name(name), "bad family name at {}", at());
            if current.as_deref() != Some(name)
                && let Some(c) = current.replace(name.to_string())
            {
                finished.insert(c);
            }
            assert!(!finished.contains(name), "family {name} appears twice ({})", at());
            match kw {
                "HELP" => assert!(helps.insert(name.to_string()), "second HELP at {}", at()),
                "TYPE" => {
                    assert!(
                        matches!(arg, "counter" | "gauge" | "histogram" | "summary" | "untyped"),
                        "bad type at {}",
                        at()
                    );
                    assert!(
                        types.insert(name.to_string(), arg.to_string()).is_none(),
                        "second TYPE at {}",
                        at()
                    );
                }
                _ => panic!("unknown comment at {}", at()),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment at {}", at());
        let (series, value) =
            line.rsplit_once(' ').unwrap_or_else(|| panic!("no value at {}", at()));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value at {}", at())),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body =
                    rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels at {}", at()));
                (name, parse_labels(body).unwrap_or_else(|e| panic!("{e} at {}", at())))
            }
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "bad sample name at {}", at());
        let family =
            current.clone().unwrap_or_else(|| panic!("sample before any TYPE at {}", at()));
        let kind = types.get(&family).unwrap_or_else(|| panic!("family without TYPE at {}", at()));
        let suffix = name.strip_prefix(family.as_str()).unwrap_or_else(|| {
            panic!("sample {name} outside its family block ({family}) at {}", at())
        });
        let allowed: &[&str] = match kind.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        assert!(
            allowed.contains(&suffix),
            "sample {name} does not fit {kind} {family} at {}",
            at()
        );
        let mut sorted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        sorted.sort();
        let key = (name.to_string(), sorted.join(","));
        assert!(samples.insert(key, value).is_none(), "duplicate series at {}", at());
        if kind == "histogram" {
            let no_le: Vec<String> =
                labels.iter().filter(|(k, _)| k != "le").map(|(k, v)| format!("{k}={v}")).collect();
            let hkey = (family.clone(), no_le.join(","));
            match suffix {
                "_bucket" => {
                    let le = labels
                        .iter()
                        .find(|(k, _)| k == "le")
                        .map(|(_, v)| v.as_str())
                        .unwrap_or_else(|| panic!("bucket without le at {}", at()));
                    let le: f64 = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or_else(|_| panic!("bad le at {}", at()))
                    };
                    buckets.entry(hkey).or_default().push((le, value));
                }
                "_count" => {
                    counts.insert(hkey, value);
                }
                _ => {
                    sums.insert(hkey);
                }
            }
        }
    }
    for (key, b) in &buckets {
        for w in b.windows(2) {
            assert!(w[0].0 < w[1].0, "{key:?}: le not increasing: {b:?}");
            assert!(w[0].1 <= w[1].1, "{key:?}: buckets not cumulative: {b:?}");
        }
        let last = b.last().expect("at least one bucket");
        assert!(last.0.is_infinite(), "{key:?}: last bucket is not +Inf");
        assert_eq!(Some(&last.1), counts.get(key), "{key:?}: +Inf bucket != _count");
        assert!(sums.contains(key), "{key:?}: no _sum");
    }
    Scrape { samples }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(body: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !valid_name(k) {
            return Err(format!("bad label name {k:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("bad escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if out.iter().any(|(o, _): &(String, String)| o == k) {
            return Err(format!("repeated label {k}"));
        }
        out.push((k.to_string(), value));
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return Err("junk after label".into());
        }
    }
    Ok(out)
}

fn scrape(admin: u16) -> Scrape {
    let (status, body) = http(admin, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    parse_metrics(&body)
}

fn json(admin: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(admin, "GET", path);
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, v)
}

fn config(admin: u16, masters: &[u16], extra: &str) -> String {
    let mut c = format!("listen = \"{{listen}}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n{extra}\n");
    let n = masters.len();
    for (i, port) in masters.iter().enumerate() {
        let lo = i * 16384 / n;
        let hi = (i + 1) * 16384 / n - 1;
        c.push_str(&format!(
            "[[groups]]\nname = \"g{}\"\nmaster = \"127.0.0.1:{port}\"\nslots = [\"{lo}-{hi}\"]\n",
            i + 1
        ));
    }
    c
}

fn wait_ready(admin: u16, timeout: Duration) -> bool {
    wait_until(timeout, || matches!(try_http(admin, "GET", "/readyz"), Ok((200, _))))
}

#[test]
fn health_routes_and_errors() {
    let (r1, r2) = (redis_server(&[]), redis_server(&[]));
    let dir = temp_dir();
    let admin = free_port();
    let _k = keyhop(dir.path(), &config(admin, &[r1.port, r2.port], ""));
    let (status, body) = http(admin, "GET", "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    assert!(wait_ready(admin, Duration::from_secs(5)), "never ready");
    let (status, v) = json(admin, "/readyz");
    assert_eq!((status, &v["ready"]), (200, &serde_json::json!(true)));
    assert_eq!(http(admin, "GET", "/nope").0, 404);
    assert_eq!(http(admin, "GET", "/dashboard").0, 404);
    assert_eq!(http(admin, "POST", "/nope").0, 404);
    for path in ["/", "/dashboard.json", "/metrics", "/healthz", "/readyz", "/topology"] {
        assert_eq!(http(admin, "POST", path).0, 405, "POST {path}");
        assert_eq!(http(admin, "DELETE", path).0, 405, "DELETE {path}");
    }
    // A query string does not change the route.
    assert_eq!(http(admin, "GET", "/healthz?verbose=1").0, 200);
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let (r1, r2) = (redis_server(&[]), redis_server(&[]));
    let dir = temp_dir();
    let admin = free_port();
    let proxy = keyhop(dir.path(), &config(admin, &[r1.port, r2.port], ""));
    let before = scrape(admin);
    assert_eq!(
        before.get("keyhop_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    for g in ["g1", "g2"] {
        assert_eq!(before.get("keyhop_failovers_total", &[("group", g)]), Some(0.0), "{g}");
    }
    assert_eq!(before.get("keyhop_config_reloads_total", &[("result", "ok")]), Some(0.0));
    assert!(before.get("keyhop_routing_table_epoch", &[]).is_some());
    assert!(before.get("keyhop_ready", &[]).is_some());
    assert!(before.get("keyhop_sentinel_known", &[]).is_none(), "static mode has no sentinels");

    const SETS: usize = 25;
    let mut c = Raw::connect(proxy.port);
    let mut sent = 0usize;
    for i in 0..SETS {
        let (k, v) = (format!("key:{i}"), format!("value-{i}"));
        let args: [&[u8]; 3] = [b"SET", k.as_bytes(), v.as_bytes()];
        sent += common::encode(&args).len();
        c.send(&args);
        assert_eq!(c.read(), Reply::Status("OK".into()));
    }
    // "foo" and "bar" hash to different groups.
    match c.call(&["RENAME", "foo", "bar"]) {
        Reply::Error(e) => assert!(e.starts_with("CROSSSLOT"), "{e}"),
        other => panic!("expected CROSSSLOT, got {other:?}"),
    }
    let set = [("command", "set")];
    let cross = [("kind", "crossslot")];
    let want = before.get_or_zero("keyhop_commands_total", &set) + SETS as f64;
    // The reply reaches the client a moment before the command is counted.
    let mut after = scrape(admin);
    let counted = wait_until(Duration::from_secs(5), || {
        after = scrape(admin);
        after.get_or_zero("keyhop_commands_total", &set) >= want
            && after.get_or_zero("keyhop_errors_total", &cross)
                > before.get_or_zero("keyhop_errors_total", &cross)
    });
    assert!(counted, "counters did not move");
    assert_eq!(after.get_or_zero("keyhop_commands_total", &set), want, "exactly {SETS} SETs");
    assert_eq!(
        after.get_or_zero("keyhop_errors_total", &cross),
        before.get_or_zero("keyhop_errors_total", &cross) + 1.0
    );
    let count = after.get_or_zero("keyhop_command_duration_seconds_count", &set);
    assert_eq!(count, want, "one latency observation per SET");
    let received = after.get_or_zero("keyhop_received_bytes_total", &[])
        - before.get_or_zero("keyhop_received_bytes_total", &[]);
    assert!(received >= sent as f64, "received {received} < sent {sent}");
    let out = after.get_or_zero("keyhop_sent_bytes_total", &[])
        - before.get_or_zero("keyhop_sent_bytes_total", &[]);
    assert!(out >= (SETS * 5) as f64, "sent bytes grew by {out}");
    // Every metric the shipped Grafana dashboard queries exists (Sentinel gauges only in
    // Sentinel mode).
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana-dashboard.json"
    ))
    .expect("read docs/grafana-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let scraped: HashSet<&str> = after.samples.keys().map(|(name, _)| name.as_str()).collect();
    let mut rest = dashboard.as_str();
    while let Some(at) = rest.find("keyhop_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        if !name.starts_with("keyhop_sentinel_") {
            assert!(scraped.contains(name.as_str()), "dashboard queries {name}, not in /metrics");
        }
    }
    for g in ["g1", "g2"] {
        assert!(
            after
                .get("keyhop_backend_requests_total", &[("group", g), ("role", "master")])
                .unwrap_or(0.0)
                > 0.0
        );
    }
}

#[test]
fn readyz_follows_a_master_dying_and_returning() {
    let r1 = redis_server(&[]);
    let mut r2 = redis_server(&[]);
    let port2 = r2.port;
    let dir = temp_dir();
    let admin = free_port();
    let _k = keyhop(dir.path(), &config(admin, &[r1.port, port2], ""));
    assert!(wait_ready(admin, Duration::from_secs(5)), "never ready");

    r2.kill();
    let died = Instant::now();
    let flipped = wait_until(Duration::from_secs(30), || {
        matches!(try_http(admin, "GET", "/readyz"), Ok((503, _)))
    });
    assert!(flipped, "/readyz still 200 with g2's master dead");
    eprintln!("[admin] /readyz 503 {:?} after g2's master died", died.elapsed());
    let (status, v) = json(admin, "/readyz");
    assert_eq!(status, 503);
    assert_eq!(v["ready"], serde_json::json!(false));
    let reason = v["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("group g2") && reason.contains(&format!("127.0.0.1:{port2}")),
        "{reason}"
    );
    assert!(reason.contains("unreachable"), "{reason}");
    assert!(!reason.contains("group g1"), "{reason}");
    let m = scrape(admin);
    assert_eq!(m.get("keyhop_ready", &[]), Some(0.0));
    assert_eq!(m.get("keyhop_master_reachable", &[("group", "g2")]), Some(0.0));
    assert_eq!(m.get("keyhop_master_reachable", &[("group", "g1")]), Some(1.0));
    let (_, topo) = json(admin, "/topology");
    assert_eq!(topo["groups"][1]["master"]["reachable"], serde_json::json!(false));

    let _back = common::redis_server_on(port2, &[]);
    let returned = Instant::now();
    assert!(wait_ready(admin, Duration::from_secs(30)), "/readyz never 200 again");
    eprintln!("[admin] /readyz 200 {:?} after g2's master returned", returned.elapsed());
    assert_eq!(scrape(admin).get("keyhop_ready", &[]), Some(1.0));
}

#[test]
fn topology_lists_groups_and_hides_passwords() {
    let pw = "backend-s3cret";
    let r1 = redis_server(&["--requirepass", pw]);
    let r2 = redis_server(&["--requirepass", pw]);
    let dir = temp_dir();
    let admin = free_port();
    let extra = format!("password = \"client-s3cret\"\nbackend_password = \"{pw}\"");
    let _k = keyhop(dir.path(), &config(admin, &[r1.port, r2.port], &extra));
    // AUTH with backend_password lets the prober through.
    assert!(
        wait_ready(admin, Duration::from_secs(5)),
        "never ready: {:?}",
        try_http(admin, "GET", "/readyz")
    );
    let (status, body) = http(admin, "GET", "/topology");
    assert_eq!(status, 200);
    assert!(!body.contains("s3cret"), "a password leaked: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["mode"], "static");
    assert!(v["epoch"].as_u64().is_some());
    let groups = v["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2);
    for (g, (name, port, slots)) in
        groups.iter().zip([("g1", r1.port, "0-8191"), ("g2", r2.port, "8192-16383")])
    {
        assert_eq!(g["name"], name);
        assert_eq!(g["slots"], slots);
        assert_eq!(g["slot_count"], 8192);
        assert_eq!(g["master"]["addr"], format!("127.0.0.1:{port}"));
        assert_eq!(g["master"]["reachable"], serde_json::json!(true));
    }
    let (_, metrics) = http(admin, "GET", "/metrics");
    assert!(!metrics.contains("s3cret"));
    let (status, dash) = http(admin, "GET", "/dashboard.json");
    assert_eq!(status, 200);
    assert!(!dash.contains("s3cret"), "a password leaked: {dash}");
}

#[test]
fn wrong_backend_password_is_not_ready() {
    let r1 = redis_server(&["--requirepass", "right"]);
    let dir = temp_dir();
    let admin = free_port();
    let _k = keyhop(dir.path(), &config(admin, &[r1.port], "backend_password = \"wrong\""));
    let said = wait_until(
        Duration::from_secs(5),
        || matches!(try_http(admin, "GET", "/readyz"), Ok((503, b)) if b.contains("AUTH failed")),
    );
    assert!(said, "{:?}", try_http(admin, "GET", "/readyz"));
    let (_, body) = http(admin, "GET", "/readyz");
    assert!(body.contains("group g1") && !body.contains("wrong\""), "{body}");
}

/// `(requests, errors, latency count)` of group `i` in `/dashboard.json`.
fn group_counters(v: &serde_json::Value, i: usize) -> (u64, u64, u64) {
    let g = &v["groups"][i];
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or_else(|| panic!("not a count: {g}"));
    (n(&g["requests"]), n(&g["errors"]), n(&g["latency"]["count"]))
}

#[test]
fn dashboard_counts_each_groups_requests_and_lists_reloads() {
    let (r1, r2) = (redis_server(&[]), redis_server(&[]));
    let dir = temp_dir();
    let admin = free_port();
    let k = keyhop(dir.path(), &config(admin, &[r1.port, r2.port], ""));
    assert!(wait_ready(admin, Duration::from_secs(5)), "never ready");
    let (status, page) = http(admin, "GET", "/");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"slotmap\"") && page.contains("dashboard.json"), "{page}");

    let (t1, t2) = (common::tag_of(0), common::tag_of(1));
    let mut c = Raw::connect(k.port);
    // One request to each group first: connections are set up before the counting starts.
    for t in [&t1, &t2] {
        assert_eq!(c.call(&["SET", &format!("{t}warm"), "1"]), Reply::Status("OK".into()));
    }
    let (_, before) = json(admin, "/dashboard.json");
    for i in 0..40 {
        assert_eq!(c.call(&["SET", &format!("{t1}k{i}"), "v"]), Reply::Status("OK".into()));
    }
    let (_, after) = json(admin, "/dashboard.json");
    let (b1, b2) = (group_counters(&before, 0), group_counters(&before, 1));
    let (a1, a2) = (group_counters(&after, 0), group_counters(&after, 1));
    // Each SET waits for its reply, so each is one batch to g1 and none to g2.
    assert_eq!((a1.0 - b1.0, a1.1 - b1.1, a1.2 - b1.2), (40, 0, 40), "g1 {b1:?} -> {a1:?}");
    assert_eq!(a2, b2, "g2 got nothing");
    assert_eq!(after["clients"], 1);
    assert_eq!(after["instance"]["ready"], true);
    assert_eq!(after["groups"][1]["master"]["addr"], format!("127.0.0.1:{}", r2.port));
    let conf = after["instance"]["config_file"].as_str().expect("config file");
    assert!(conf.starts_with(&dir.path().display().to_string()), "{conf}");

    common::send_signal(k.child.as_ref().expect("keyhop runs").id(), libc::SIGHUP);
    let newest = || json(admin, "/dashboard.json").1["events"][0].clone();
    assert!(
        wait_until(Duration::from_secs(10), || newest()["kind"] == "reload"),
        "no reload event: {}",
        newest()
    );
    assert_eq!(newest()["text"], "configuration reload ok");
}
