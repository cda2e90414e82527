//! Connecting to a collector, for the agent and for `levee`: one place that
//! turns a URL and PEM files into a tonic endpoint.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid collector URL {url:?}: {source}")]
    Url {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("TLS configuration: {0}")]
    Tls(tonic::transport::Error),
    #[error("refusing plaintext to {0}: use https:// (plaintext is for loopback development)")]
    Plaintext(String),
}

/// TLS material for a client: the CA to trust, an optional client
/// certificate and key (mutual TLS), and the server name to verify.
#[derive(Debug, Clone, Default)]
pub struct ClientTls<'a> {
    pub ca: Option<&'a Path>,
    pub identity: Option<(&'a Path, &'a Path)>,
    pub domain: Option<&'a str>,
}

/// An endpoint for `url`: `https://` with `tls`, or `http://` only when
/// `allow_plaintext`.
pub fn endpoint(url: &str, tls: &ClientTls<'_>, allow_plaintext: bool) -> Result<Endpoint, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|source| ClientError::Url {
        url: url.to_owned(),
        source,
    })?;
    if !url.starts_with("https://") {
        return if allow_plaintext {
            Ok(endpoint)
        } else {
            Err(ClientError::Plaintext(url.to_owned()))
        };
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ClientError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = tls.ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let Some((cert, key)) = tls.identity {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = tls.domain {
        config = config.domain_name(domain);
    }
    endpoint.tls_config(config).map_err(ClientError::Tls)
}
