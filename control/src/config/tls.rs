//! The TLS keys (`tls_cert`, `tls_key`, `tls_client_ca`, `backend_tls*`, `sentinel.tls`) and
//! the rustls configurations built from their PEM files.
//!
//! Validation builds the configurations too, so `keyhop check` (and a reload) reports a missing
//! file, a file without PEM blocks or a key that does not match its certificate by its key name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{Config, Problem};

/// The TLS keys as written. Paths are kept as given (relative ones resolve against the working
/// directory, as `keyhop run` is started).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `tls_cert`: PEM certificate chain of keyhop's client listener; with `tls_key`, `listen`
    /// speaks TLS only.
    pub cert: Option<PathBuf>,
    /// `tls_key`: PEM private key of `tls_cert`.
    pub key: Option<PathBuf>,
    /// `tls_client_ca`: PEM CA certificates; when set, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
    /// `backend_tls`: connect to the redis-servers (and, unless `sentinel.tls = false`, the
    /// sentinels) with TLS.
    pub backend: bool,
    /// `backend_tls_ca`: PEM CA certificates that signed the servers' certificates.
    pub backend_ca: Option<PathBuf>,
    /// `backend_tls_cert`: PEM client certificate keyhop presents to the servers.
    pub backend_cert: Option<PathBuf>,
    /// `backend_tls_key`: PEM private key of `backend_tls_cert`.
    pub backend_key: Option<PathBuf>,
}

/// The rustls configurations a [`Config`] asks for.
#[derive(Clone, Debug, Default)]
pub struct TlsSetup {
    /// For the client listener (`tls_cert`/`tls_key`).
    pub clients: Option<Arc<ServerConfig>>,
    /// For connections to the redis-servers (`backend_tls`).
    pub backends: Option<Arc<ClientConfig>>,
    /// For connections to the sentinels (`sentinel.tls`, default `backend_tls`).
    pub sentinels: Option<Arc<ClientConfig>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn problem(key: &str, message: String) -> Problem {
    Problem { key: key.into(), message }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, Problem> {
    std::fs::read(path).map_err(|e| {
        problem(key, format!("cannot read {}: {e}: give the path of a PEM file", path.display()))
    })
}

fn certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let pem = read(key, path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err(problem(
            key,
            format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()),
        )),
        Err(e) => Err(problem(key, format!("{} is not valid PEM: {e}", path.display()))),
    }
}

fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, Problem> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        problem(
            key,
            format!(
                "{} holds no usable PEM private key ({e}): give the certificate's key",
                path.display()
            ),
        )
    })
}

fn roots(key: &str, path: &Path) -> Result<RootCertStore, Problem> {
    let mut roots = RootCertStore::empty();
    for c in certs(key, path)? {
        roots.add(c).map_err(|e| {
            problem(key, format!("{} holds a CA certificate rustls rejects: {e}", path.display()))
        })?;
    }
    Ok(roots)
}

/// Both or neither of a certificate and its key.
fn pair<'a>(
    cert: (&str, &'a Option<PathBuf>),
    key: (&str, &'a Option<PathBuf>),
) -> Result<Option<(&'a Path, &'a Path)>, Problem> {
    match (cert.1, key.1) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => {
            Err(problem(key.0, format!("is missing: `{}` needs its private key", cert.0)))
        }
        (None, Some(_)) => {
            Err(problem(cert.0, format!("is missing: `{}` needs its certificate", key.0)))
        }
    }
}

impl TlsConfig {
    /// The client listener's configuration, if `tls_cert`/`tls_key` are set.
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>, Problem> {
        let Some((cert, key)) = pair(("tls_cert", &self.cert), ("tls_key", &self.key))? else {
            if self.client_ca.is_some() {
                return Err(problem(
                    "tls_client_ca",
                    "needs tls_cert and tls_key: client certificates are only asked for on a TLS listener".into(),
                ));
            }
            return Ok(None);
        };
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| problem("tls_cert", e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots("tls_client_ca", ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| problem("tls_client_ca", e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs("tls_cert", cert)?, private_key("tls_key", key)?)
            .map_err(|e| {
                problem("tls_key", format!("{} does not fit tls_cert: {e}", key.display()))
            })?;
        Ok(Some(Arc::new(config)))
    }

    /// The configuration for connections to servers (or sentinels) when `backend_tls` is set:
    /// servers are verified against `backend_tls_ca`, keyhop presents `backend_tls_cert` if set.
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>, Problem> {
        let client_cert =
            pair(("backend_tls_cert", &self.backend_cert), ("backend_tls_key", &self.backend_key))?;
        if !self.backend {
            if self.backend_ca.is_some() || client_cert.is_some() {
                return Err(problem(
                    "backend_tls",
                    "is off while backend_tls_ca/backend_tls_cert are set: add `backend_tls = true` or remove them".into(),
                ));
            }
            return Ok(None);
        }
        let Some(ca) = &self.backend_ca else {
            return Err(problem(
                "backend_tls_ca",
                "is missing: with backend_tls = true give the PEM file of the CA that signed the servers' certificates".into(),
            ));
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| problem("backend_tls", e.to_string()))?
            .with_root_certificates(roots("backend_tls_ca", ca)?);
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    certs("backend_tls_cert", cert)?,
                    private_key("backend_tls_key", key)?,
                )
                .map_err(|e| {
                    problem(
                        "backend_tls_key",
                        format!("{} does not fit backend_tls_cert: {e}", key.display()),
                    )
                })?,
        };
        Ok(Some(Arc::new(config)))
    }
}

impl Config {
    /// Whether the sentinels are reached over TLS: `sentinel.tls`, by default `backend_tls`.
    pub fn sentinel_tls(&self) -> bool {
        self.sentinel.as_ref().and_then(|s| s.tls).unwrap_or(self.tls.backend)
    }

    /// Loads the PEM files and builds every TLS configuration the keys ask for.
    pub fn tls_setup(&self) -> Result<TlsSetup, Vec<Problem>> {
        let clients = self.tls.server_config();
        let backends = self.tls.client_config();
        let sentinel_needs_ca = self.sentinel_tls() && !self.tls.backend;
        match (clients, backends) {
            (Ok(clients), Ok(backends)) if !sentinel_needs_ca => {
                let sentinels = if self.sentinel_tls() { backends.clone() } else { None };
                Ok(TlsSetup { clients, backends, sentinels })
            }
            (c, b) => {
                let mut problems: Vec<Problem> = [c.err(), b.err()].into_iter().flatten().collect();
                if sentinel_needs_ca {
                    problems.push(problem(
                        "sentinel.tls",
                        "needs backend_tls = true and backend_tls_ca: the sentinels are verified with the servers' CA".into(),
                    ));
                }
                Err(problems)
            }
        }
    }

    /// One line for `keyhop check`: where TLS is on.
    pub fn describe_tls(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        let clients = match (&self.tls.cert, &self.tls.client_ca) {
            (None, _) => "off".to_string(),
            (Some(_), None) => "on".to_string(),
            (Some(_), Some(_)) => "on, client certificates required".to_string(),
        };
        let backends = match (self.tls.backend, &self.tls.backend_cert) {
            (true, Some(_)) => "on, with a client certificate".to_string(),
            (b, _) => on(b).to_string(),
        };
        let mut line = format!("tls: clients {clients}, backends {backends}");
        if self.sentinel.is_some() {
            line.push_str(&format!(", sentinels {}", on(self.sentinel_tls())));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "[[groups]]\nname = \"g\"\n";

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn sentinel_tls_follows_backend_tls_and_needs_its_ca() {
        let text = format!("[sentinel]\naddrs = [\"127.0.0.1:26379\"]\ntls = true\n{GROUP}");
        assert_eq!(
            problems(&text),
            vec![
                "sentinel.tls: needs backend_tls = true and backend_tls_ca: the sentinels are verified with the servers' CA"
            ]
        );
        let cfg = Config::parse(&format!("[sentinel]\naddrs = [\"127.0.0.1:26379\"]\n{GROUP}"))
            .expect("valid");
        assert!(!cfg.sentinel_tls());
        assert_eq!(cfg.describe_tls(), "tls: clients off, backends off, sentinels off");
    }

    #[test]
    fn backend_files_without_backend_tls_are_refused() {
        let text =
            format!("backend_tls_ca = \"/nonexistent/ca.crt\"\n{GROUP}master = \"127.0.0.1:1\"\n");
        assert_eq!(
            problems(&text),
            vec![
                "backend_tls: is off while backend_tls_ca/backend_tls_cert are set: add `backend_tls = true` or remove them"
            ]
        );
    }

    #[test]
    fn a_client_ca_needs_a_tls_listener() {
        let text =
            format!("tls_client_ca = \"/nonexistent/ca.crt\"\n{GROUP}master = \"127.0.0.1:1\"\n");
        assert_eq!(
            problems(&text),
            vec![
                "tls_client_ca: needs tls_cert and tls_key: client certificates are only asked for on a TLS listener"
            ]
        );
    }
}
