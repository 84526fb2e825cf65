//! HTTP on the gRPC listener: the web dashboard (`dashboard`) and its JSON API (`api`).
//!
//! One TCP listener serves both protocols. [`SplitLayer`] wraps tonic's gRPC routes and
//! sends every request whose `content-type` starts with `application/grpc` to them and
//! everything else to the HTTP router built by [`router`]. The server accepts HTTP/1.1 as
//! well as HTTP/2 so that browsers (which speak HTTP/1.1 to a plain-text server) can load
//! the dashboard.

mod api;
mod dashboard;
mod error;
mod json;
mod split;

pub use split::{SplitLayer, SplitService};

use crate::api::ApiState;

/// The HTTP router: dashboard assets at `/` and the JSON API under `/api/`.
pub fn router(state: ApiState) -> axum::Router {
    dashboard::routes().merge(api::routes(state))
}
