//! TLS test helpers: a throw-away PKI made with `openssl`, `redis-cli --tls`, TLS-only
//! redis-servers, and keyhop with a TLS listener.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::clients::run_bounded;
use super::{Proc, free_port, keyhop_until, temp_dir, wait_until};

/// A test PKI: a CA, a server and a client certificate it signed (both with IP SAN 127.0.0.1),
/// and a second, unrelated CA.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    let (status, _, err) = run_bounded(c, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "openssl {args:?} failed (install it with `apt-get install -y openssl`): {err}"
    );
}

pub fn pki() -> Pki {
    let dir = temp_dir();
    let d = dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) =
            (format!("{ca}.key"), format!("{ca}.crt"), format!("/CN=keyhop-test-{ca}"));
        let mut args = vec!["req", "-x509", "-new", "-days", "2", "-subj", &subj];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &crt]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(d, &args);
    }
    std::fs::write(
        d.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write leaf.ext");
    for leaf in ["server", "client"] {
        let (key, csr, crt, subj) = (
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("{leaf}.crt"),
            format!("/CN={leaf}"),
        );
        let mut args = vec!["req", "-new", "-subj", &subj];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(d, &args);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                &crt,
            ],
        );
    }
    Pki { dir }
}

/// Runs `redis-cli --tls` against `port` with the CA and (when `client_cert`) the client
/// certificate; returns its stdout and stderr, trimmed.
pub fn tls_cli(pki: &Pki, port: u16, client_cert: bool, args: &[&str]) -> (String, String) {
    let mut c = Command::new("redis-cli");
    c.args(["--tls", "--cacert", &pki.p("ca.crt"), "-p", &port.to_string()]);
    if client_cert {
        c.args(["--cert", &pki.p("client.crt"), "--key", &pki.p("client.key")]);
    }
    c.args(args);
    let (status, out, err) = run_bounded(c, Duration::from_secs(10));
    assert!(status.is_some(), "redis-cli {args:?} on {port} did not finish within 10 s");
    (out.trim().to_string(), err.trim().to_string())
}

/// A TLS-only redis-server (`--port 0`) with the test server certificate; clients must present a
/// certificate unless `extra` says `--tls-auth-clients no`.
pub fn tls_server(pki: &Pki, extra: &[&str]) -> Proc {
    for _ in 0..5 {
        let port = free_port();
        let dir = temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &pki.p("server.crt"), "--tls-key-file", &pki.p("server.key")])
            .args(["--tls-ca-cert-file", &pki.p("ca.crt")])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut p =
            Proc { child: Some(child), port, name: format!("redis-tls:{port}"), dir: Some(dir) };
        if wait_until(Duration::from_secs(5), || tls_cli(pki, port, true, &["PING"]).0 == "PONG") {
            return p;
        }
        p.kill();
    }
    panic!("could not start a TLS redis-server");
}

/// keyhop with `config` whose listener speaks TLS: started like [`keyhop`], but ready once
/// `redis-cli --tls PING` answers.
pub fn keyhop_tls(pki: &Pki, dir: &Path, config: &str) -> Proc {
    keyhop_until(dir, config, &[], |port| {
        wait_until(Duration::from_secs(15), || tls_cli(pki, port, false, &["PING"]).0 == "PONG")
    })
}

pub fn tls_lines(pki: &Pki) -> String {
    format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", pki.p("server.crt"), pki.p("server.key"))
}

pub fn backend_tls_lines(pki: &Pki, client_cert: bool) -> String {
    let mut s = format!("backend_tls = true\nbackend_tls_ca = \"{}\"\n", pki.p("ca.crt"));
    if client_cert {
        s += &format!(
            "backend_tls_cert = \"{}\"\nbackend_tls_key = \"{}\"\n",
            pki.p("client.crt"),
            pki.p("client.key")
        );
    }
    s
}

/// A TLS-only redis-sentinel (`port 0`) monitoring `masters` (name, TLS port) with quorum 1; it
/// reaches the servers over TLS too (`tls-replication yes`), presenting the server certificate
/// (its extended key usage allows client use). `dir` must outlive it.
pub fn tls_sentinel(pki: &Pki, dir: &Path, masters: &[(&str, u16)]) -> Proc {
    for _ in 0..5 {
        let port = free_port();
        let file = dir.join(format!("sentinel-{port}.conf"));
        let mut conf = format!(
            "port 0\ntls-port {port}\nbind 127.0.0.1\ndir {}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-replication yes\n",
            dir.display(),
            pki.p("server.crt"),
            pki.p("server.key"),
            pki.p("ca.crt")
        );
        for (name, mport) in masters {
            conf.push_str(&format!(
                "sentinel monitor {name} 127.0.0.1 {mport} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n"
            ));
        }
        std::fs::write(&file, conf).expect("write sentinel config");
        let child = Command::new("redis-sentinel")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-sentinel");
        let mut p =
            Proc { child: Some(child), port, name: format!("sentinel-tls:{port}"), dir: None };
        if wait_until(Duration::from_secs(5), || tls_cli(pki, port, true, &["PING"]).0 == "PONG") {
            return p;
        }
        p.kill();
    }
    panic!("could not start a TLS redis-sentinel");
}
