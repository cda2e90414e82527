//! The collector's gRPC server: ingest and SOC services, standard health and
//! reflection, TLS (mutual for agents) unless plaintext was asked for on
//! loopback.

use std::{future::Future, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use proto::v1::{agent_ingest_server::AgentIngestServer, soc_server::SocServer};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::info;

use crate::{auth::SocAuth, ingest::Ingest, silence, soc::SocService, store::Store, Hub};

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: PathBuf,
    pub tls: Option<TlsFiles>,
    /// SOC bearer token.
    pub soc_token: Option<String>,
    /// Serve without TLS: refused unless `listen` is a loopback address.
    pub insecure_plaintext: bool,
    /// An agent unheard of this long gets an `agent-silent` alert.
    pub silent_after: Duration,
    /// Where to serve `/healthz`, `/readyz` and `/metrics` (HTTP).
    pub metrics: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signs agent (and SOC) client certificates: mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// Serves until `shutdown` completes.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let plaintext = match (&config.tls, config.insecure_plaintext) {
        (Some(_), true) => bail!("--insecure-plaintext and TLS files exclude each other"),
        (None, false) => {
            bail!("TLS is required: give --tls-cert and --tls-key (or --insecure-plaintext on loopback)")
        }
        (None, true) if !config.listen.ip().is_loopback() => {
            bail!(
                "plaintext is only allowed on a loopback address, not {}",
                config.listen
            )
        }
        (None, true) => true,
        (Some(_), false) => false,
    };
    let store =
        Store::open(&config.database).with_context(|| format!("opening {}", config.database.display()))?;
    let hub = Hub::new(store);
    let mutual = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let ingest = Ingest {
        hub: hub.clone(),
        require_client_cert: mutual,
    };
    let auth = SocAuth {
        token: config.soc_token.clone(),
        open: plaintext && config.soc_token.is_none(),
    };
    let soc = SocServer::with_interceptor(SocService { hub: hub.clone() }, move |r| auth.check(r));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentIngestServer<Ingest>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;

    let mut server = Server::builder()
        // Bounds what a misbehaving peer can hold open.
        .timeout(Duration::from_secs(3600))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &config.tls {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut tls_config =
            ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
        if let Some(ca) = &tls.client_ca {
            // Optional at the TLS layer: SOC clients may use a token instead;
            // the ingest service refuses agents without a certificate.
            tls_config = tls_config
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(true);
        }
        server = server.tls_config(tls_config).context("TLS configuration")?;
    }
    if let Some(listen) = config.metrics {
        let probe: std::sync::Arc<dyn telemetry::Probe> = hub.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = telemetry::serve(listen, probe).await {
                tracing::warn!(error = %format!("{e:#}"), "health and metrics endpoint stopped");
            }
        });
    }
    tokio::spawn(silence::watch(
        hub.clone(),
        config.silent_after,
        config.silent_after.min(Duration::from_secs(5)),
    ));
    info!(listen = %config.listen, tls = !plaintext, mutual_tls = mutual, "collector serving");
    server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(AgentIngestServer::new(ingest))
        .add_service(soc)
        .serve_with_shutdown(config.listen, shutdown)
        .await
        .context("gRPC server")
}
