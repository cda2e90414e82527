//! `/healthz`, `/readyz` and `/metrics` over HTTP, for Kubernetes probes and
//! Prometheus. Each binary owns its registry and says what healthy and ready
//! mean for it.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus_client::{encoding::text::encode, registry::Registry};

pub use prometheus_client;

/// What a binary exposes.
pub trait Probe: Send + Sync + 'static {
    /// The process works (liveness): false gets it restarted.
    fn healthy(&self) -> bool;
    /// The process does its job (readiness).
    fn ready(&self) -> bool;
    fn registry(&self) -> &Registry;
}

/// Serves the endpoints on `listen` until the task is dropped.
pub async fn serve(listen: SocketAddr, probe: Arc<dyn Probe>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "health and metrics endpoint serving");
    axum::serve(listener, app)
        .await
        .context("health and metrics endpoint")
}

fn status(ok: bool) -> (StatusCode, &'static str) {
    if ok {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ok\n")
    }
}

async fn healthz(State(probe): State<Arc<dyn Probe>>) -> impl IntoResponse {
    status(probe.healthy())
}

async fn readyz(State(probe): State<Arc<dyn Probe>>) -> impl IntoResponse {
    status(probe.ready())
}

async fn metrics(State(probe): State<Arc<dyn Probe>>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, probe.registry()) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            String::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fixed {
        ready: bool,
        registry: Registry,
    }

    impl Probe for Fixed {
        fn healthy(&self) -> bool {
            true
        }
        fn ready(&self) -> bool {
            self.ready
        }
        fn registry(&self) -> &Registry {
            &self.registry
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_probes_and_metrics() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("levee_test_events", "Events seen", counter.clone());
        counter.inc_by(3);
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        tokio::spawn(serve(
            addr,
            Arc::new(Fixed {
                ready: false,
                registry,
            }),
        ));
        let mut healthz = String::new();
        for _ in 0..100 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                s.read_to_string(&mut healthz).await.unwrap();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains("levee_test_events_total 3"), "{metrics}");
    }
}
