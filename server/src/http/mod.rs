//! Plain HTTP endpoints next to the gRPC API (for now only Prometheus `/metrics`).

pub mod metrics;

use std::sync::Arc;

use crate::engine::Engine;

/// Binds the `/metrics` listener and serves it in the background. The bound address is
/// logged (`serving Prometheus metrics at http://ADDR/metrics`), for port 0.
pub async fn start_metrics(
    addr: &str,
    engine: Arc<Engine>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --metrics-listen {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!("serving Prometheus metrics at http://{local}/metrics");
    Ok(tokio::spawn(metrics::serve(listener, engine)))
}
