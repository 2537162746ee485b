//! `--web-config FILE`: TLS and basic authentication for `/metrics`, in
//! the format of the Prometheus exporter-toolkit (what `node_exporter` and
//! every official exporter read), so one file serves a fleet:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths: to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt (htpasswd -nbB)
//! ```
//!
//! Read at start (an error stops the start) and again on SIGHUP (an error
//! keeps what is in force, logged). Keys tcptrace cannot honour are errors
//! that name them, never silently ignored.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use hyper::header::{HeaderName, HeaderValue};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use serde::Deserialize;

use super::basic_auth::BasicAuth;

/// The file as written. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpServerFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    /// Go's TLS knobs: rustls chooses its own (modern, safe) suites and
    /// curves, so these are refused rather than silently ignored.
    cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServerFile {
    /// HTTP/2 is not served: accepted only as `false`.
    http2: Option<bool>,
    /// Extra response headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// What the file asks for, checked and ready to serve.
#[derive(Clone)]
pub struct WebConfig {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// The users and their bcrypt hashes (none: no authentication), with
    /// the passwords accepted so far: a new configuration starts afresh.
    pub auth: Rc<BasicAuth>,
    /// Added to every response.
    pub headers: Rc<[(HeaderName, HeaderValue)]>,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            tls: None,
            auth: BasicAuth::new(BTreeMap::new()),
            headers: Rc::from([]),
        }
    }
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.auth.required())
            .finish_non_exhaustive()
    }
}

/// A web configuration file larger than this is refused (a real one is a
/// few hundred bytes).
const MAX_FILE_BYTES: usize = 1024 * 1024;

impl WebConfig {
    /// Reads and checks `path`: certificates and keys are loaded now, so a
    /// wrong path or a key that does not match fails here, not at the
    /// first scrape.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if text.len() > MAX_FILE_BYTES {
            bail!("{}: larger than {MAX_FILE_BYTES} bytes", path.display());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&String::from_utf8_lossy(&text), dir)
            .with_context(|| format!("in {}", path.display()))
    }

    /// `text` with relative paths taken from `dir` (the file's directory,
    /// as the exporter-toolkit does).
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        // An empty file is an empty configuration: plain HTTP, no users.
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_yaml_ng::from_str(text)?
        };
        for (user, hash) in &file.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                bail!("basic_auth_users: the password of `{user}` is not a bcrypt hash (make one with `htpasswd -nbB USER PASSWORD`)");
            }
        }
        let mut headers = Vec::new();
        if let Some(http) = file.http_server_config {
            if http.http2 == Some(true) {
                bail!("http_server_config.http2: tcptrace serves HTTP/1.1 only; remove the key or set it to false");
            }
            for (name, value) in http.headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("http_server_config.headers: `{name}`"))?;
                let value = HeaderValue::from_str(&value)
                    .with_context(|| format!("http_server_config.headers: {name}"))?;
                headers.push((name, value));
            }
        }
        let tls = match file.tls_server_config {
            Some(tls) => Some(Arc::new(server_config(&tls, dir)?)),
            None => None,
        };
        Ok(Self {
            tls,
            auth: BasicAuth::new(file.basic_auth_users),
            headers: headers.into(),
        })
    }
}

fn server_config(tls: &TlsFile, dir: &Path) -> Result<ServerConfig> {
    if tls.cipher_suites.is_some()
        || tls.curve_preferences.is_some()
        || tls.prefer_server_cipher_suites.is_some()
    {
        bail!("tls_server_config: cipher_suites, curve_preferences and prefer_server_cipher_suites are Go TLS settings; tcptrace (rustls) uses its own safe defaults: remove them");
    }
    let at = |path: &Path| dir.join(path);
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        bail!("tls_server_config: cert_file and key_file are both required");
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(at(cert_file))
        .and_then(Iterator::collect)
        .with_context(|| format!("cert_file: {}", at(cert_file).display()))?;
    if certs.is_empty() {
        bail!("cert_file: {}: no certificate", at(cert_file).display());
    }
    let key = PrivateKeyDer::from_pem_file(at(key_file))
        .with_context(|| format!("key_file: {}", at(key_file).display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions(
            tls.min_version.as_deref(),
            tls.max_version.as_deref(),
        )?)
        .context("tls_server_config: min_version/max_version")?;
    let client_ca = || -> Result<Arc<RootCertStore>> {
        let Some(ca) = &tls.client_ca_file else {
            bail!("client_ca_file is required to verify client certificates");
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(at(ca))
            .with_context(|| format!("client_ca_file: {}", at(ca).display()))?
        {
            roots
                .add(cert.with_context(|| format!("client_ca_file: {}", at(ca).display()))?)
                .with_context(|| format!("client_ca_file: {}", at(ca).display()))?;
        }
        Ok(Arc::new(roots))
    };
    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth_type {
        "" | "NoClientCert" => {
            if tls.client_ca_file.is_some() {
                bail!("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert: client certificates would not be checked");
            }
            builder.with_no_client_auth()
        }
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(client_ca()?, Arc::clone(&provider));
            let verifier = if auth_type == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .context("tls_server_config: client verifier")?,
            )
        }
        "RequestClientCert" | "RequireAnyClientCert" => bail!(
            "tls_server_config: client_auth_type {auth_type} accepts certificates nobody \
             checked; tcptrace supports VerifyClientCertIfGiven and RequireAndVerifyClientCert"
        ),
        other => bail!(
            "tls_server_config: client_auth_type `{other}` is not one of NoClientCert, \
             VerifyClientCertIfGiven, RequireAndVerifyClientCert"
        ),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("tls_server_config: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The TLS versions between `min` and `max` (exporter-toolkit's names;
/// rustls speaks 1.2 and 1.3, and the toolkit's default minimum is 1.2).
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>> {
    let rank = |name: Option<&str>, default: u8, key: &str| -> Result<u8> {
        match name {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(2),
            Some("TLS13") => Ok(3),
            Some("TLS10" | "TLS11") => {
                bail!("{key}: TLS 1.0 and 1.1 are not supported (1.2 and 1.3 are)")
            }
            Some(other) => bail!("{key}: `{other}` is not one of TLS12, TLS13"),
        }
    };
    let (min, max) = (rank(min, 2, "min_version")?, rank(max, 3, "max_version")?);
    if min > max {
        bail!("min_version is above max_version");
    }
    Ok([(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(rank, _)| (min..=max).contains(rank))
        .map(|(_, version)| version)
        .collect())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// `htpasswd -nbB -C 4 prometheus s3cret`.
    pub const HASH: &str = "$2y$04$CMRvgWwS616eMQ769NMHX.8IZZLTghCN6l0upRTuoWwY4T.euumEq";

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            WebConfig::parse(text, Path::new("/nonexistent")).unwrap_err()
        )
    }

    #[test]
    fn users_need_bcrypt_hashes() {
        let config = WebConfig::parse(
            &format!("basic_auth_users:\n  prometheus: {HASH}\n"),
            Path::new("."),
        )
        .unwrap();
        assert!(config.tls.is_none());
        assert!(config.auth.required());
        assert!(err("basic_auth_users:\n  alice: secret\n").contains("not a bcrypt hash"));
        assert!(err("basic_auth_users:\n  alice: $1$abc$def\n").contains("not a bcrypt hash"));
    }

    #[test]
    fn empty_file_is_plain_http_and_unknown_keys_are_named() {
        let config = WebConfig::parse("", Path::new(".")).unwrap();
        assert!(config.tls.is_none() && !config.auth.required());
        assert!(err("tls_config:\n  cert_file: x\n").contains("tls_config"));
        assert!(err("tls_server_config:\n  cert_file: a\n").contains("key_file"));
        assert!(
            err("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n")
                .contains("cipher_suites")
        );
        assert!(err("http_server_config:\n  http2: true\n").contains("HTTP/1.1"));
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_directory() {
        let message = err("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n");
        assert!(message.contains("/nonexistent/server.crt"), "{message}");
    }

    #[test]
    fn tls_versions() {
        assert_eq!(versions(None, None).unwrap().len(), 2);
        assert_eq!(versions(Some("TLS13"), None).unwrap().len(), 1);
        assert!(versions(Some("TLS10"), None).is_err());
        assert!(versions(Some("TLS13"), Some("TLS12")).is_err());
    }
}
