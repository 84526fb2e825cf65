//! The dashboard's JSON API. Like the gRPC handlers it only authenticates, converts and
//! calls the engine; engine errors become HTTP statuses in `http::error`.
//!
//! | Method | Path | Engine call |
//! |---|---|---|
//! | GET | `/api/session` | authenticate only (answers the namespace) |
//! | GET | `/api/runs?job=&queue=&status=&page_size=&page_token=` | `list_runs` |
//! | GET | `/api/runs/{id}` | `get_run` (attempts, steps, wait) |
//! | POST | `/api/runs/{id}/cancel` | `cancel_run` |
//! | POST | `/api/runs/{id}/retry` | `retry_run` |
//! | GET | `/api/queues` | `list_queues` (with live stats) |
//! | GET | `/api/events?name=&correlation_key=&page_size=&page_token=` | `list_events` |
//!
//! Authentication is the gRPC API's: `Authorization: Bearer <key>`, not needed in open mode.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;
use tonic::codegen::http::HeaderMap;

use super::error::HttpError;
use super::json;
use crate::api::ApiState;
use crate::engine::event_model::EventFilter;
use crate::engine::model::{RunFilter, RunStatus};
use crate::engine::{EngineError, now_ms};

type HttpResult = Result<Response, HttpError>;

/// The `/api/...` routes.
pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/session", get(session))
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{id}", get(get_run))
        .route("/api/runs/{id}/cancel", post(cancel_run))
        .route("/api/runs/{id}/retry", post(retry_run))
        .route("/api/queues", get(list_queues))
        .route("/api/events", get(list_events))
        .with_state(state)
}

/// Authenticates the request's bearer key and returns its namespace.
async fn namespace(state: &ApiState, headers: &HeaderMap) -> Result<String, HttpError> {
    let bearer = match headers.get("authorization") {
        None => None,
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                EngineError::Unauthenticated("the authorization header is not valid ASCII".into())
            })?;
            let key = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    EngineError::Unauthenticated(
                        "the authorization header must be `Bearer <key>`".into(),
                    )
                })?;
            Some(key)
        }
    };
    Ok(state.auth.authenticate(bearer).await?)
}

/// Parses `a=1&b=x%20y` (empty values count as absent).
fn query(raw: Option<String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in raw.unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let v = decode(v);
        if !k.is_empty() && !v.is_empty() {
            out.insert(decode(k), v);
        }
    }
    out
}

fn page_size(q: &HashMap<String, String>) -> Result<i32, HttpError> {
    q.get("page_size")
        .map(|s| {
            s.parse::<i32>()
                .map_err(|_| HttpError::bad_request("page_size must be an integer"))
        })
        .transpose()
        .map(|p| p.unwrap_or(0))
}

async fn session(State(state): State<ApiState>, headers: HeaderMap) -> HttpResult {
    let ns = namespace(&state, &headers).await?;
    Ok(json::response(&json!({ "namespace": ns })))
}

async fn list_runs(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let ns = namespace(&state, &headers).await?;
    let mut q = query(raw);
    let status = match q.get("status") {
        None => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            HttpError::bad_request(format!(
                "status {s:?} is not one of queued, running, waiting, completed, failed, cancelled"
            ))
        })?),
    };
    let size = page_size(&q)?;
    let filter = RunFilter {
        job: q.remove("job"),
        queue: q.remove("queue"),
        status,
        idempotency_key: q.remove("idempotency_key"),
        ..RunFilter::default()
    };
    let (runs, next) = state
        .engine
        .list_runs(&ns, filter, size, q.remove("page_token"))
        .await?;
    Ok(json::response(&json!({
        "runs": runs.iter().map(json::run).collect::<Vec<_>>(),
        "next_page_token": next,
    })))
}

async fn get_run(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult {
    let ns = namespace(&state, &headers).await?;
    let detail = state.engine.get_run(&ns, &id, None).await?;
    Ok(json::response(&json!({ "run": json::run_detail(&detail) })))
}

async fn cancel_run(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult {
    let ns = namespace(&state, &headers).await?;
    let run = state
        .engine
        .cancel_run(&ns, &id, Some("cancelled from the dashboard".into()))
        .await?;
    Ok(json::response(&json!({ "run": json::run(&run) })))
}

async fn retry_run(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResult {
    let ns = namespace(&state, &headers).await?;
    let run = state.engine.retry_run(&ns, &id).await?;
    Ok(json::response(&json!({ "run": json::run(&run) })))
}

async fn list_queues(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let ns = namespace(&state, &headers).await?;
    let mut q = query(raw);
    let size = page_size(&q)?;
    let (queues, next) = state
        .engine
        .list_queues(&ns, size, q.remove("page_token"))
        .await?;
    let now = now_ms();
    Ok(json::response(&json!({
        "queues": queues.iter().map(|x| json::queue(x, now)).collect::<Vec<_>>(),
        "next_page_token": next,
    })))
}

async fn list_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HttpResult {
    let ns = namespace(&state, &headers).await?;
    let mut q = query(raw);
    let size = page_size(&q)?;
    let filter = EventFilter {
        name: q.remove("name"),
        correlation_key: q.remove("correlation_key"),
        published_after: None,
        published_before: None,
    };
    let (events, next) = state
        .engine
        .list_events(&ns, filter, size, q.remove("page_token"))
        .await?;
    Ok(json::response(&json!({
        "events": events.iter().map(json::event).collect::<Vec<_>>(),
        "next_page_token": next,
    })))
}

#[cfg(test)]
mod tests {
    use super::query;

    #[test]
    fn query_decodes_and_drops_empty_values() {
        let q = query(Some("job=send%20mail&queue=&status=queued&x".into()));
        assert_eq!(q.get("job").map(String::as_str), Some("send mail"));
        assert_eq!(q.get("status").map(String::as_str), Some("queued"));
        assert!(!q.contains_key("queue"));
        assert!(!q.contains_key("x"));
    }
}
