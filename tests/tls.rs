//! TLS (issue 12): keyhop's client listener with `tls_cert`/`tls_key` (driven with
//! `redis-cli --tls`), `backend_tls` to TLS-only redis-servers (shared, pinned and health-probe
//! connections), a wrong CA, and the config errors `keyhop check` reports. Certificates are
//! made at test time with `openssl`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::clients::run_bounded;
use common::tls::*;
use common::*;

/// A plain-TCP client on the TLS listener: keyhop closes it (what it reads is at most a TLS
/// alert, never a reply) within the deadline.
fn plain_client_is_closed(port: u16) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    s.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..100 {
        match s.read(&mut buf) {
            Ok(0) => return (got, started.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got, started.elapsed());
            }
            Err(e) => {
                panic!("plain client on the TLS listener: no close within 15 s ({e}); read {got:?}")
            }
        }
    }
    panic!("plain client on the TLS listener kept receiving bytes: {got:?}");
}

#[test]
fn clients_speak_tls_to_keyhop() {
    let pki = pki();
    let (g1, g2) = (redis_server(&[]), redis_server(&[]));
    let dir = temp_dir();
    let kh = keyhop_tls(&pki, dir.path(), &two_group_config(&tls_lines(&pki), &g1, &g2));
    for g in 0..2 {
        let key = format!("{}k", tag_of(g));
        let (out, err) = tls_cli(&pki, kh.port, false, &["SET", &key, &format!("v{g}")]);
        assert_eq!(out, "OK", "SET {key} over TLS: {err}");
        let (out, err) = tls_cli(&pki, kh.port, false, &["GET", &key]);
        assert_eq!(out, format!("v{g}"), "GET {key} over TLS: {err}");
        // Stored on the group's own (plain) server.
        let server = if g == 0 { &g1 } else { &g2 };
        assert_eq!(cmd(server.port, &["GET", &key]), format!("v{g}"));
    }
    // A value larger than TLS's 16 KB records and rustls's 64 KB send buffer, both ways
    // (an argument can hold at most 128 KB).
    let big = "x".repeat(100_000);
    let key = format!("{}big", tag_of(0));
    assert_eq!(tls_cli(&pki, kh.port, false, &["SET", &key, &big]).0, "OK");
    assert_eq!(tls_cli(&pki, kh.port, false, &["STRLEN", &key]).0, "100000");
    assert_eq!(tls_cli(&pki, kh.port, false, &["GET", &key]).0, big);
    // A reply larger than the socket takes at once: TLS holds back what the socket refused until
    // keyhop flushes, so the whole 8 MB must still arrive.
    let huge = format!("{}huge", tag_of(1));
    assert_eq!(tls_cli(&pki, kh.port, false, &["SETRANGE", &huge, "7999999", "z"]).0, "8000000");
    let (out, err) = tls_cli(&pki, kh.port, false, &["GET", &huge]);
    assert_eq!((out.len(), out.ends_with('z')), (8_000_000, true), "GET of 8 MB over TLS: {err}");

    let (got, took) = plain_client_is_closed(kh.port);
    eprintln!("plain client closed after {} ms, read {} bytes", took.as_millis(), got.len());
    assert!(!got.windows(4).any(|w| w == b"PONG"), "a plain client got a reply: {got:?}");
    assert!(got.is_empty() || got[0] == 0x15, "not a TLS alert: {got:?}");
    // keyhop is still up for TLS clients.
    assert_eq!(tls_cli(&pki, kh.port, false, &["PING"]).0, "PONG");
}

#[test]
fn client_certificates_when_tls_client_ca_is_set() {
    let pki = pki();
    let g1 = redis_server(&[]);
    let g2 = redis_server(&[]);
    let dir = temp_dir();
    let lines = tls_lines(&pki) + &format!("tls_client_ca = \"{}\"\n", pki.p("ca.crt"));
    let config = two_group_config(&lines, &g1, &g2);
    // Started by hand: the readiness probe in keyhop_tls has no client certificate.
    let port = free_port();
    std::fs::write(
        dir.path().join("keyhop.toml"),
        matrix(&config.replace("{listen}", &format!("127.0.0.1:{port}"))),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("keyhop.log")).expect("log");
    let child = Command::new(keyhop_bin())
        .arg("--config")
        .arg(dir.path().join("keyhop.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn keyhop");
    let _kh = Proc { child: Some(child), port, name: "keyhop".into(), dir: None };
    let up =
        wait_until(Duration::from_secs(15), || tls_cli(&pki, port, true, &["PING"]).0 == "PONG");
    assert!(
        up,
        "keyhop never answered a client with a certificate; log:\n{}",
        keyhop_log(dir.path())
    );
    let (out, err) = tls_cli(&pki, port, false, &["PING"]);
    assert_ne!(out, "PONG", "a client without a certificate was served");
    assert!(
        !err.is_empty() || out.contains("rror"),
        "no error shown without a certificate: {out:?}"
    );
    assert_eq!(tls_cli(&pki, port, true, &["SET", "k", "v"]).0, "OK");
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// keyhop (plain listener) in front of two TLS-only servers that require client certificates.
fn backend_tls_setup(
    pki: &Pki,
    dir: &Path,
    client_cert: bool,
    server_args: &[&str],
) -> (Proc, Proc, Proc, u16) {
    let (g1, g2) = (tls_server(pki, server_args), tls_server(pki, server_args));
    let admin = free_port();
    let extra =
        backend_tls_lines(pki, client_cert) + &format!("admin_listen = \"127.0.0.1:{admin}\"\n");
    let kh = keyhop(dir, &two_group_config(&extra, &g1, &g2));
    (g1, g2, kh, admin)
}

#[test]
fn backend_tls_serves_shared_and_pinned_paths() {
    let pki = pki();
    let dir = temp_dir();
    let (g1, g2, kh, admin) = backend_tls_setup(&pki, dir.path(), true, &[]);
    let mut c = Raw::connect(kh.port);
    let (a, b) = (format!("{}a", tag_of(0)), format!("{}b", tag_of(1)));
    assert_eq!(c.call(&["SET", &a, "1"]), Reply::Status("OK".into()));
    assert_eq!(c.call(&["SET", &b, "2"]), Reply::Status("OK".into()));
    assert_eq!(tls_cli(&pki, g1.port, true, &["GET", &a]).0, "1", "not stored on g1's server");
    assert_eq!(tls_cli(&pki, g2.port, true, &["GET", &b]).0, "2", "not stored on g2's server");
    let mget = c.call(&["MGET", &a, &b, "nokey"]);
    assert_eq!(
        mget,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"1".to_vec())),
            Reply::Bulk(Some(b"2".to_vec())),
            Reply::Bulk(None)
        ]))
    );

    // MULTI/EXEC on a pinned connection.
    assert_eq!(c.call(&["MULTI"]), Reply::Status("OK".into()));
    assert_eq!(c.call(&["INCR", &a]), Reply::Status("QUEUED".into()));
    assert_eq!(c.call(&["INCR", &a]), Reply::Status("QUEUED".into()));
    assert_eq!(c.call(&["EXEC"]), Reply::Array(Some(vec![Reply::Int(2), Reply::Int(3)])));
    // The next transaction reuses the idle TLS connection (checked without reading under TLS):
    // the server accepts no connection but redis-cli's own.
    let accepted = || {
        let info = tls_cli(&pki, g1.port, true, &["INFO", "stats"]).0;
        let line = info.lines().find_map(|l| l.strip_prefix("total_connections_received:"));
        line.and_then(|n| n.trim().parse::<u64>().ok()).expect("total_connections_received")
    };
    let before = accepted();
    assert_eq!(c.call(&["MULTI"]), Reply::Status("OK".into()));
    assert_eq!(c.call(&["INCR", &a]), Reply::Status("QUEUED".into()));
    assert_eq!(c.call(&["EXEC"]), Reply::Array(Some(vec![Reply::Int(4)])));
    assert_eq!(accepted(), before + 1, "the second transaction opened a new connection");

    // SUBSCRIBE on a pinned connection, PUBLISH through the shared one.
    let mut sub = Raw::connect(kh.port);
    let chan = format!("{}chan", tag_of(1));
    let confirm = sub.call(&["SUBSCRIBE", &chan]);
    assert_eq!(
        confirm,
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"subscribe".to_vec())),
            Reply::Bulk(Some(chan.clone().into_bytes())),
            Reply::Int(1)
        ]))
    );
    let mut delivered = false;
    for _ in 0..50 {
        if c.call(&["PUBLISH", &chan, "hello"]) == Reply::Int(1) {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(delivered, "PUBLISH never reached the subscriber's server connection");
    assert_eq!(message_of(sub.read()), (chan.clone(), "hello".to_string()));

    // BLPOP blocks on a pinned connection and is woken by an LPUSH from another client.
    let list = format!("{}list", tag_of(0));
    let mut blocked = Raw::connect(kh.port);
    blocked.send(&[b"BLPOP", list.as_bytes(), b"10"]);
    let woke = wait_until(Duration::from_secs(10), || {
        tls_cli(&pki, g1.port, true, &["CLIENT", "LIST", "TYPE", "normal"]).0.contains("cmd=blpop")
    });
    assert!(woke, "BLPOP never reached g1's server");
    assert_eq!(c.call(&["LPUSH", &list, "item"]), Reply::Int(1));
    assert_eq!(
        blocked.read(),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(list.clone().into_bytes())),
            Reply::Bulk(Some(b"item".to_vec()))
        ]))
    );

    // The health prober reaches both masters over TLS too: /readyz turns 200.
    let ready = wait_until(Duration::from_secs(10), || {
        http_get(admin, "/readyz").starts_with("HTTP/1.1 200")
    });
    assert!(ready, "/readyz never 200: {}", http_get(admin, "/readyz"));
}

#[test]
fn backend_tls_without_client_certificate() {
    let pki = pki();
    let dir = temp_dir();
    let (g1, _g2, kh, _) =
        backend_tls_setup(&pki, dir.path(), false, &["--tls-auth-clients", "no"]);
    let mut c = Raw::connect(kh.port);
    let a = format!("{}a", tag_of(0));
    assert_eq!(c.call(&["SET", &a, "x"]), Reply::Status("OK".into()));
    assert_eq!(tls_cli(&pki, g1.port, true, &["GET", &a]).0, "x");
}

#[test]
fn wrong_backend_ca_is_a_clear_error() {
    let pki = pki();
    let (g1, g2) = (tls_server(&pki, &[]), tls_server(&pki, &[]));
    let dir = temp_dir();
    let lines = backend_tls_lines(&pki, true).replace(&pki.p("ca.crt"), &pki.p("other-ca.crt"));
    let kh = keyhop(dir.path(), &two_group_config(&lines, &g1, &g2));
    // keyhop connects at start, so the first request may find the server marked down after that
    // failure (and fail fast); a later one retries the handshake. Both say why.
    let unreachable = format!(
        "ERR keyhop: backend {} of group g1 unreachable: TLS handshake failed: invalid peer certificate: UnknownIssuer",
        g1.addr()
    );
    let down = format!(
        "ERR keyhop: backend {} of group g1 down (TLS handshake failed: invalid peer certificate: UnknownIssuer); keyhop retries shortly",
        g1.addr()
    );
    let mut c = Raw::connect(kh.port);
    let key = format!("{}a", tag_of(0));
    let mut replies = Vec::new();
    let started = Instant::now();
    let seen = wait_until(Duration::from_secs(10), || {
        let r = c.call(&["GET", &key]);
        let done = r == Reply::Error(unreachable.clone());
        replies.push(r);
        done
    });
    eprintln!("wrong CA: {} replies in {} ms", replies.len(), started.elapsed().as_millis());
    assert!(seen, "never the unreachable error: {replies:?}");
    for r in &replies {
        assert!(
            *r == Reply::Error(unreachable.clone()) || *r == Reply::Error(down.clone()),
            "{r:?}"
        );
    }
    // A pinned connection says the same.
    assert_eq!(c.call(&["MULTI"]), Reply::Status("OK".into()));
    let queued = c.call(&["SET", &format!("{}a", tag_of(1)), "x"]);
    let Reply::Error(e) = queued else { panic!("SET in MULTI through a wrong CA: {queued:?}") };
    assert!(
        e.contains("unreachable: TLS handshake failed: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
}

fn check(config: &str) -> (bool, String) {
    let dir = temp_dir();
    let path = dir.path().join("k.toml");
    std::fs::write(&path, config).expect("write");
    let mut c = Command::new(keyhop_bin());
    c.arg("check").arg("--config").arg(&path);
    let (status, out, err) = run_bounded(c, Duration::from_secs(20));
    (status.is_some_and(|s| s.success()), out + &err)
}

#[test]
fn check_reports_tls_keys() {
    let pki = pki();
    let groups = "[[groups]]\nname = \"g1\"\nmaster = \"127.0.0.1:7001\"\n";
    let (ok, out) = check(&format!("{}{}{groups}", tls_lines(&pki), backend_tls_lines(&pki, true)));
    assert!(ok, "{out}");
    assert!(out.contains("tls: clients on, backends on, with a client certificate\n"), "{out}");

    let (ok, out) =
        check(&format!("tls_cert = \"{}\"\nbackend_tls = true\n{groups}", pki.p("server.crt")));
    assert!(!ok);
    assert!(out.contains("  - tls_key: is missing: `tls_cert` needs its private key\n"), "{out}");
    assert!(
        out.contains("  - backend_tls_ca: is missing: with backend_tls = true give the PEM file of the CA that signed the servers' certificates\n"),
        "{out}"
    );

    let missing = pki.p("nope.crt");
    let (ok, out) = check(&format!(
        "tls_cert = \"{missing}\"\ntls_key = \"{}\"\n{groups}",
        pki.p("server.key")
    ));
    assert!(!ok);
    assert!(
        out.contains(&format!("  - tls_cert: cannot read {missing}: No such file or directory (os error 2): give the path of a PEM file\n")),
        "{out}"
    );

    // The client key with the server certificate.
    let (ok, out) = check(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n{groups}",
        pki.p("server.crt"),
        pki.p("client.key")
    ));
    assert!(!ok);
    assert!(
        out.contains(&format!("  - tls_key: {} does not fit tls_cert: ", pki.p("client.key"))),
        "{out}"
    );
}
