//! Engine records as JSON for the dashboard API. Stored JSON text (payloads, results, step
//! outputs) is embedded as JSON; timestamps are RFC 3339 strings (UTC, milliseconds).

use axum::response::Response;
use serde_json::{Value, json};
use tonic::codegen::http::{HeaderValue, header};

use crate::engine::event_model::{EventRecord, WaitRecord};
use crate::engine::model::{AttemptRecord, Failure, RunDetail, RunRecord, StepRecord};
use crate::engine::queue_model::QueueInfo;

/// A `200 application/json` response with `body`.
pub fn response(body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
    let mut resp = Response::new(axum::body::Body::from(bytes));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Milliseconds since the epoch as an RFC 3339 string.
pub fn time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map(time).unwrap_or(Value::Null)
}

/// Stored JSON text as a JSON value (kept as a string if it does not parse).
fn stored(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn failure(f: &Option<Failure>) -> Value {
    match f {
        None => Value::Null,
        Some(f) => json!({
            "message": f.message,
            "type": f.error_type,
            "non_retryable": f.non_retryable,
            "details": f.details.as_deref().map(stored),
            "stack_trace": f.stack_trace,
        }),
    }
}

/// A run without attempts and steps (list rows).
pub fn run(r: &RunRecord) -> Value {
    json!({
        "id": r.id,
        "job": r.job,
        "queue": r.queue,
        "status": r.status.as_str(),
        "payload": stored(&r.payload),
        "result": r.result.as_deref().map(stored),
        "error": failure(&r.failure),
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "priority": r.priority,
        "concurrency_key": r.concurrency_key,
        "idempotency_key": r.idempotency_key,
        "worker_id": r.worker_id,
        "created_at": time(r.created_at),
        "updated_at": time(r.updated_at),
        "finished_at": opt_time(r.finished_at),
        "next_attempt_at": if r.status == crate::engine::model::RunStatus::Queued {
            time(r.available_at)
        } else {
            Value::Null
        },
    })
}

fn attempt(a: &AttemptRecord) -> Value {
    json!({
        "number": a.number,
        "worker_id": a.worker_id,
        "started_at": time(a.started_at),
        "ended_at": opt_time(a.ended_at),
        "error": failure(&a.failure),
    })
}

fn step(s: &StepRecord) -> Value {
    json!({
        "id": s.step_id,
        "kind": s.kind.as_str(),
        "attempt": s.attempt,
        "started_at": opt_time(s.started_at),
        "completed_at": time(s.completed_at),
        "output": s.output.as_deref().map(stored),
        "output_size": s.output_size,
        "error": failure(&s.failure),
    })
}

fn wait(w: &WaitRecord) -> Value {
    json!({
        "step_id": w.step_id,
        "kind": w.kind.as_str(),
        "event_name": w.event_name,
        "correlation_key": w.correlation_key,
        "wake_at": opt_time(w.wake_at),
        "since": time(w.created_at),
    })
}

/// A run with its attempts, steps and current wait (the run detail page).
pub fn run_detail(d: &RunDetail) -> Value {
    let mut v = run(&d.run);
    if let Value::Object(m) = &mut v {
        m.insert(
            "attempts".into(),
            d.attempts.iter().map(attempt).collect::<Vec<_>>().into(),
        );
        m.insert(
            "steps".into(),
            d.steps.iter().map(step).collect::<Vec<_>>().into(),
        );
        m.insert(
            "wait".into(),
            d.wait.as_ref().map(wait).unwrap_or(Value::Null),
        );
    }
    v
}

/// A queue with its configuration, pause switch and live counts.
pub fn queue(q: &QueueInfo, now: i64) -> Value {
    let c = &q.queue.config;
    let s = &q.stats;
    json!({
        "name": q.queue.name,
        "paused": q.queue.paused,
        "concurrency_limit": c.concurrency_limit,
        "key_concurrency_limit": c.key_concurrency_limit,
        "rate_limit": c.rate_limit.as_ref().map(|r| json!({"limit": r.limit, "period_ms": r.period_ms})),
        "lease_timeout_ms": c.lease_timeout_ms,
        "stats": {
            "queued": s.queued,
            "delayed": s.delayed,
            "running": s.running,
            "waiting": s.waiting,
            "completed": s.completed,
            "failed": s.failed,
            "cancelled": s.cancelled,
            "oldest_queued_age_ms": s.oldest_ready_at.map(|t| (now - t).max(0)),
            "running_by_key": s.running_by_key.iter().map(|(k, n)| json!({"key": k, "running": n})).collect::<Vec<_>>(),
            "rate_window_started": s.rate_window_started,
        },
        "created_at": time(q.queue.created_at),
        "updated_at": time(q.queue.updated_at),
    })
}

/// A stored event.
pub fn event(e: &EventRecord) -> Value {
    json!({
        "id": e.id,
        "name": e.name,
        "correlation_key": if e.correlation_key.is_empty() { Value::Null } else { Value::String(e.correlation_key.clone()) },
        "payload": stored(&e.payload),
        "published_at": time(e.published_at),
    })
}
