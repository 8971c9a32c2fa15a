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
/// containing `marker`.
fn reload(kh: &Proc, dir: &Path, text: &str, marker: &str, n: usize) {
    std::fs::write(dir.join("keyhop.toml"), text).expect("rewrite config");
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
