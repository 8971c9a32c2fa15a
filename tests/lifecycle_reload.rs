//! SIGHUP: keyhop re-reads its configuration file and applies it without dropping clients; an
//! unusable file keeps the running configuration.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Proc, Raw, Reply, cmd, keyhop, redis_sentinel, redis_server, temp_dir, wait_until};

const SIGHUP: i32 = 1;

/// Two groups; `swap` gives g1 the upper half of the slots instead of the lower.
fn two_groups(listen: &str, a: u16, b: u16, swap: bool, extra: &str) -> String {
    let (s1, s2) = if swap { ("8192-16383", "0-8191") } else { ("0-8191", "8192-16383") };
    format!(
        "listen = \"{listen}\"\n{extra}\n\
         [[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:{a}\"\nslots = [\"{s1}\"]\n\
         [[groups]]\nname = \"g2\"\nmaster = \"127.0.0.1:{b}\"\nslots = [\"{s2}\"]\n"
    )
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("keyhop.log")).unwrap_or_default()
}

/// Rewrites the config, sends SIGHUP and waits until the log shows the `n`-th reload outcome
/// containing `marker`. The test matrix's settings are kept, as keyhop was started with them,
/// so a reload changes only what the test changes.
fn reload(kh: &Proc, dir: &Path, text: &str, marker: &str, n: usize) {
    std::fs::write(dir.join("keyhop.toml"), common::matrix(text)).expect("rewrite config");
    kh.signal(SIGHUP);
    let seen = wait_until(Duration::from_secs(10), || log(dir).matches(marker).count() >= n);
    assert!(seen, "no {marker:?} #{n} in the log:\n{}", log(dir));
}

fn epoch(client: &mut Raw) -> String {
    let info = client.call(&["INFO", "keyhop"]).text();
    info.lines().find_map(|l| l.strip_prefix("epoch:")).unwrap_or("?").to_string()
}

#[test]
fn slot_map_reload_moves_keys_without_dropping_the_client() {
    let a = redis_server(&[]);
    let b = redis_server(&[]);
    let dir = temp_dir();
    let kh = keyhop(dir.path(), &two_groups("{listen}", a.port, b.port, false, ""));
    let listen = format!("127.0.0.1:{}", kh.port);
    let mut client = Raw::connect(kh.port);

    // foo is in slot 12182: g2 (b) owns it first.
    assert_eq!(client.call(&["SET", "foo", "v1"]), Reply::Status("OK".into()));
    assert_eq!(cmd(b.port, &["GET", "foo"]), "v1");
    assert_eq!(cmd(a.port, &["GET", "foo"]), "(nil)");
    assert_eq!(epoch(&mut client), "1");

    reload(
        &kh,
        dir.path(),
        &two_groups(&listen, a.port, b.port, true, ""),
        "configuration reloaded",
        1,
    );
    // Same connection, new map: foo now belongs to g1 (a).
    assert_eq!(client.call(&["SET", "foo", "v2"]), Reply::Status("OK".into()));
    assert_eq!(cmd(a.port, &["GET", "foo"]), "v2");
    assert_eq!(cmd(b.port, &["GET", "foo"]), "v1");
    assert_eq!(client.call(&["GET", "foo"]), Reply::Bulk(Some(b"v2".to_vec())));
    assert_eq!(epoch(&mut client), "2");

    // An invalid file (overlapping slots, bad address) keeps the running map.
    let bad = two_groups(&listen, a.port, b.port, true, "")
        .replace("\"0-8191\"", "\"0-9000\"")
        .replace(&format!("127.0.0.1:{}", b.port), "nowhere");
    reload(&kh, dir.path(), &bad, "reload failed", 1);
    let text = log(dir.path());
    assert!(text.contains("invalid configuration"), "each problem is logged:\n{text}");
    assert!(text.contains("groups[1].master"), "the bad address is named:\n{text}");
    assert_eq!(client.call(&["SET", "foo", "v3"]), Reply::Status("OK".into()));
    assert_eq!(cmd(a.port, &["GET", "foo"]), "v3");
    assert_eq!(epoch(&mut client), "2");
    // A TOML syntax error too.
    reload(&kh, dir.path(), "listen = [\n", "reload failed", 2);
    let mut fresh = Raw::connect(kh.port);
    assert_eq!(fresh.call(&["GET", "foo"]), Reply::Bulk(Some(b"v3".to_vec())));
    assert_eq!(client.call(&["GET", "foo"]), Reply::Bulk(Some(b"v3".to_vec())));
}

#[test]
fn restart_only_keys_are_kept_and_the_rest_applies() {
    let a = redis_server(&[]);
    let b = redis_server(&[]);
    let dir = temp_dir();
    let kh = keyhop(dir.path(), &two_groups("{listen}", a.port, b.port, false, ""));
    let mut client = Raw::connect(kh.port);
    assert_eq!(client.call(&["SET", "foo", "v1"]), Reply::Status("OK".into()));

    // A new listen address needs a restart; the new client password applies now.
    let moved = common::free_port();
    let text = two_groups(
        &format!("127.0.0.1:{moved}"),
        a.port,
        b.port,
        false,
        "password = \"s3cret\"\nthreads = 3",
    );
    reload(&kh, dir.path(), &text, "configuration reloaded", 1);
    let logged = log(dir.path());
    assert!(logged.contains("needs a restart"), "log:\n{logged}");
    // Still on the old port; the existing client stays authenticated, a new one must AUTH.
    assert_eq!(client.call(&["GET", "foo"]), Reply::Bulk(Some(b"v1".to_vec())));
    let mut fresh = Raw::connect(kh.port);
    assert_eq!(fresh.call(&["GET", "foo"]), Reply::Error("NOAUTH Authentication required.".into()));
    assert_eq!(fresh.call(&["AUTH", "s3cret"]), Reply::Status("OK".into()));
    assert_eq!(fresh.call(&["GET", "foo"]), Reply::Bulk(Some(b"v1".to_vec())));
    assert!(std::net::TcpStream::connect(("127.0.0.1", moved)).is_err());
}

#[test]
fn backend_password_reload_reconnects_the_backends() {
    let a = redis_server(&["--requirepass", "backpw"]);
    let dir = temp_dir();
    let one = |listen: &str, extra: &str| {
        format!(
            "listen = \"{listen}\"\n{extra}\n[[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:{}\"\n",
            a.port
        )
    };
    let kh = keyhop(dir.path(), &one("{listen}", ""));
    let listen = format!("127.0.0.1:{}", kh.port);
    let mut client = Raw::connect(kh.port);
    let before = client.call(&["SET", "foo", "v1"]);
    assert!(matches!(&before, Reply::Error(e) if e.contains("NOAUTH")), "got {before:?}");

    reload(
        &kh,
        dir.path(),
        &one(&listen, "backend_password = \"backpw\""),
        "configuration reloaded",
        1,
    );
    assert_eq!(client.call(&["SET", "foo", "v2"]), Reply::Status("OK".into()));
    let direct = cmd(a.port, &["GET", "foo"]);
    assert_eq!(direct, "(error) NOAUTH Authentication required.");
}

#[test]
fn sentinel_mode_reload_restarts_the_watcher_on_the_same_table() {
    let a = redis_server(&[]);
    let b = redis_server(&[]);
    let sdir = temp_dir();
    let sentinel = redis_sentinel(sdir.path(), &[("g1", a.port), ("g2", b.port)], 1);
    let dir = temp_dir();
    let conf = |listen: &str, swap: bool| {
        let (s1, s2) = if swap { ("8192-16383", "0-8191") } else { ("0-8191", "8192-16383") };
        format!(
            "listen = \"{listen}\"\n[sentinel]\naddrs = [\"127.0.0.1:{}\"]\n\
             [[groups]]\nname = \"g1\"\nslots = [\"{s1}\"]\n\
             [[groups]]\nname = \"g2\"\nslots = [\"{s2}\"]\n",
            sentinel.port
        )
    };
    let kh = keyhop(dir.path(), &conf("{listen}", false));
    let listen = format!("127.0.0.1:{}", kh.port);
    let mut client = Raw::connect(kh.port);
    assert_eq!(client.call(&["SET", "foo", "v1"]), Reply::Status("OK".into()));
    assert_eq!(cmd(b.port, &["GET", "foo"]), "v1");
    let first = epoch(&mut client);

    reload(&kh, dir.path(), &conf(&listen, true), "configuration reloaded", 1);
    assert!(log(dir.path()).contains("new Sentinel watcher started"));
    assert_eq!(client.call(&["SET", "foo", "v2"]), Reply::Status("OK".into()));
    assert_eq!(cmd(a.port, &["GET", "foo"]), "v2");
    let second = epoch(&mut client);
    let (before, after): (u64, u64) =
        (first.parse().expect("an epoch"), second.parse().expect("an epoch"));
    assert!(after > before, "{first} -> {second}");

    // A watcher that cannot start (an unknown group) keeps the running one and its map.
    let bad = conf(&listen, true).replace("name = \"g2\"", "name = \"nosuchgroup\"");
    reload(&kh, dir.path(), &bad, "reload failed", 1);
    assert_eq!(client.call(&["SET", "foo", "v3"]), Reply::Status("OK".into()));
    assert_eq!(cmd(a.port, &["GET", "foo"]), "v3");
}

/// The `n`-th "configuration reloaded" line applied exactly `changed` (the keys in its
/// `changed=[...]` field).
fn assert_applied(dir: &Path, n: usize, changed: &str) {
    let text = log(dir);
    let line = text.lines().filter(|l| l.contains("configuration reloaded")).nth(n - 1);
    let want = format!("changed=[{changed}]");
    assert!(line.is_some_and(|l| l.contains(&want)), "reload #{n} is not {want}:\n{text}");
}

#[test]
fn read_from_reload_moves_reads_of_connected_and_new_clients() {
    use common::command_calls as calls;
    let master = redis_server(&[]);
    let replica = common::redis_replica(master.port, &[]);
    let dir = temp_dir();
    let conf = |listen: &str, read_from: &str| {
        format!(
            "listen = \"{listen}\"\nread_from = \"{read_from}\"\n\
             [[groups]]\nname = \"g1\"\nmaster = \"{}\"\nreplicas = [\"{}\"]\n",
            master.addr(),
            replica.addr()
        )
    };
    let kh = keyhop(dir.path(), &conf("{listen}", "master"));
    let listen = format!("127.0.0.1:{}", kh.port);
    let mut client = Raw::connect(kh.port);
    assert_eq!(client.call(&["SET", "k", "v"]), Reply::Status("OK".into()));
    let replicated = wait_until(Duration::from_secs(5), || cmd(replica.port, &["GET", "k"]) == "v");
    assert!(replicated, "the replica never got k");
    // (master GETs, replica GETs) served for 20 GETs on the connected client and 20 on a new one.
    let reads = |client: &mut Raw| {
        let before = (calls(master.port, "get"), calls(replica.port, "get"));
        let mut fresh = Raw::connect(kh.port);
        for _ in 0..20 {
            assert_eq!(client.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
            assert_eq!(fresh.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
        }
        (calls(master.port, "get") - before.0, calls(replica.port, "get") - before.1)
    };
    assert_eq!(reads(&mut client), (40, 0), "read_from = master");

    reload(&kh, dir.path(), &conf(&listen, "replica-preferred"), "configuration reloaded", 1);
    assert_applied(dir.path(), 1, "\"read_from\"");
    assert_eq!(reads(&mut client), (0, 40), "read_from = replica-preferred after the reload");

    reload(&kh, dir.path(), &conf(&listen, "master"), "configuration reloaded", 2);
    assert_applied(dir.path(), 2, "\"read_from\"");
    assert_eq!(reads(&mut client), (40, 0), "read_from = master again");
}

#[test]
fn allow_flush_reload_lets_flushall_through_to_every_group() {
    let a = redis_server(&[]);
    let b = redis_server(&[]);
    let dir = temp_dir();
    let kh = keyhop(dir.path(), &two_groups("{listen}", a.port, b.port, false, ""));
    let listen = format!("127.0.0.1:{}", kh.port);
    let mut client = Raw::connect(kh.port);
    // foo is on g2 (b), bar on g1 (a).
    for key in ["foo", "bar"] {
        assert_eq!(client.call(&["SET", key, "1"]), Reply::Status("OK".into()));
    }
    assert_eq!(
        client.call(&["FLUSHALL"]),
        Reply::Error(
            "ERR keyhop: FLUSHALL is refused by the proxy (set allow_flush = true in the config to allow it)"
                .into()
        )
    );
    assert_eq!((cmd(a.port, &["DBSIZE"]), cmd(b.port, &["DBSIZE"])), ("1".into(), "1".into()));

    let text = two_groups(&listen, a.port, b.port, false, "allow_flush = true");
    reload(&kh, dir.path(), &text, "configuration reloaded", 1);
    assert_applied(dir.path(), 1, "\"allow_flush\"");
    assert_eq!(client.call(&["FLUSHALL"]), Reply::Status("OK".into()));
    assert_eq!((cmd(a.port, &["DBSIZE"]), cmd(b.port, &["DBSIZE"])), ("0".into(), "0".into()));
}

#[test]
fn request_timeout_reload_applies_to_the_next_request() {
    const SIGSTOP: i32 = 19;
    const SIGCONT: i32 = 18;
    let a = redis_server(&[]);
    let dir = temp_dir();
    let one = |listen: &str, timeout_ms: u32| {
        format!(
            "listen = \"{listen}\"\nrequest_timeout_ms = {timeout_ms}\n\
             [[groups]]\nname = \"g1\"\nmaster = \"{}\"\n",
            a.addr()
        )
    };
    let kh = keyhop(dir.path(), &one("{listen}", 30000));
    let listen = format!("127.0.0.1:{}", kh.port);
    let mut client = Raw::connect(kh.port);
    assert_eq!(client.call(&["SET", "k", "v"]), Reply::Status("OK".into()));

    // 30 s: a stalled server's GET waits past 2 s without an error, and is answered once the
    // server resumes.
    a.signal(SIGSTOP);
    client.send(&[b"GET", b"k"]);
    client.writer.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let early = client.try_read();
    a.signal(SIGCONT);
    assert!(early.is_err(), "answered while the server was stopped: {early:?}");
    client.writer.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    assert_eq!(client.read(), Reply::Bulk(Some(b"v".to_vec())));

    reload(&kh, dir.path(), &one(&listen, 300), "configuration reloaded", 1);
    assert_applied(dir.path(), 1, "\"request_timeout_ms\"");
    // The reload closed the backend connections; this GET opens the next one (its set-up has
    // its own timeout, which is not what this test is about).
    assert_eq!(client.call(&["GET", "k"]), Reply::Bulk(Some(b"v".to_vec())));
    a.signal(SIGSTOP);
    let stalled = client.try_call(&["GET", "k"]);
    a.signal(SIGCONT);
    let want = format!("ERR keyhop: backend {} of group g1 did not answer within 300 ms", a.addr());
    assert_eq!(stalled, Some(Reply::Error(want)));
    let back = wait_until(Duration::from_secs(10), || {
        client.try_call(&["GET", "k"]) == Some(Reply::Bulk(Some(b"v".to_vec())))
    });
    assert!(back, "the server serves again after it resumes");
}

/// `keyhop_config_reloads_total{result="<result>"}` from the admin endpoint on `admin`.
fn reloads(admin: u16, result: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", admin)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let name = format!("keyhop_config_reloads_total{{result=\"{result}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&name)).and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_failed_reload_is_counted_and_the_old_config_keeps_serving() {
    let a = redis_server(&[]);
    let b = redis_server(&[]);
    let dir = temp_dir();
    let admin = common::free_port();
    let extra = format!("admin_listen = \"127.0.0.1:{admin}\"");
    let kh = keyhop(dir.path(), &two_groups("{listen}", a.port, b.port, false, &extra));
    let listen = format!("127.0.0.1:{}", kh.port);
    let up = wait_until(Duration::from_secs(10), || reloads(admin, "failed").is_some());
    assert!(up, "no reload counters on /metrics");
    assert_eq!((reloads(admin, "ok"), reloads(admin, "failed")), (Some(0.0), Some(0.0)));

    let bad = two_groups(&listen, a.port, b.port, false, &extra)
        .replace(&format!("127.0.0.1:{}", b.port), "nowhere");
    reload(&kh, dir.path(), &bad, "reload failed", 1);
    let counted = wait_until(Duration::from_secs(10), || reloads(admin, "failed") == Some(1.0));
    assert!(counted, "failed reloads: {:?}", reloads(admin, "failed"));
    assert_eq!(reloads(admin, "ok"), Some(0.0));
    let text = log(dir.path());
    assert!(
        text.contains("groups[1].master")
            && text.contains("invalid configuration: \"nowhere\" has no port"),
        "the problem is named:\n{text}"
    );
    // The running map is kept: foo (slot 12182) still goes to g2 (b).
    let mut client = Raw::connect(kh.port);
    assert_eq!(client.call(&["SET", "foo", "v1"]), Reply::Status("OK".into()));
    assert_eq!(cmd(b.port, &["GET", "foo"]), "v1");
    assert_eq!(epoch(&mut client), "1");

    // A good file afterwards counts as ok; the failed count stays.
    let good = two_groups(&listen, a.port, b.port, true, &extra);
    reload(&kh, dir.path(), &good, "configuration reloaded", 1);
    let counted = wait_until(Duration::from_secs(10), || reloads(admin, "ok") == Some(1.0));
    assert!(counted, "ok reloads: {:?}", reloads(admin, "ok"));
    assert_eq!(reloads(admin, "failed"), Some(1.0));
}
