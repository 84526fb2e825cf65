//! HTTP next to the gRPC API.
//!
//! - On the gRPC listener: the web dashboard (`dashboard`) and its JSON API (`api`). One TCP
//!   listener serves both protocols: [`SplitLayer`] wraps tonic's gRPC routes and sends
//!   every request whose `content-type` starts with `application/grpc` to them and
//!   everything else to the HTTP router built by [`router`]. The server accepts HTTP/1.1 as
//!   well as HTTP/2 so that browsers (which speak HTTP/1.1 to a plain-text server) can load
//!   the dashboard.
//! - On its own listener (`--metrics-listen`): Prometheus `/metrics` ([`start_metrics`]).

mod api;
mod dashboard;
mod error;
mod json;
pub mod metrics;
mod split;

use std::sync::Arc;

pub use split::{SplitLayer, SplitService};

use crate::api::ApiState;
use crate::engine::Engine;

/// The HTTP router: dashboard assets at `/` and the JSON API under `/api/`.
pub fn router(state: ApiState) -> axum::Router {
    dashboard::routes().merge(api::routes(state))
}

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
