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
        "parent_run_id": r.parent_run_id,
        "parent_step_id": r.parent_step_id,
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
        m.insert(
            "timeline".into(),
            d.timeline
                .iter()
                .map(timeline_entry)
                .collect::<Vec<_>>()
                .into(),
        );
        m.insert(
            "logs".into(),
            d.logs.iter().map(log_line).collect::<Vec<_>>().into(),
        );
    }
    v
}

/// One timeline entry: what happened, when, to which attempt and step (never payloads).
fn timeline_entry(e: &crate::engine::obs_model::TimelineRecord) -> Value {
    use crate::engine::obs_model::TimelineKind as K;
    let mut text = match e.kind {
        K::Created => "run created",
        K::AttemptStarted => "attempt started",
        K::AttemptResumed => "attempt resumed",
        K::StepCompleted => "step completed",
        K::StepFailed => "step failed",
        K::Waiting => "run waiting",
        K::EventMatched => "event matched",
        K::TimerFired => "timer fired",
        K::WaitTimedOut => "wait timed out",
        K::RetryScheduled => "retry scheduled",
        K::LeaseExpired => "lease expired",
        K::Completed => "run completed",
        K::Failed => "run failed",
        K::Cancelled => "run cancelled",
        K::Retried => "run retried",
        K::LogsTruncated => "logs truncated",
        K::TimelineTruncated => "timeline truncated",
    }
    .to_owned();
    if e.attempt > 0 {
        text.push_str(&format!(" (attempt {})", e.attempt));
    }
    if let Some(step) = &e.step_id {
        text.push_str(&format!(": {step}"));
    }
    if let Some(at) = e.scheduled_at {
        text.push_str(&format!(
            ", scheduled for {}",
            time(at).as_str().unwrap_or_default()
        ));
    }
    json!({
        "at": time(e.at),
        "kind": e.kind.as_str(),
        "attempt": e.attempt,
        "step_id": e.step_id,
        "scheduled_at": e.scheduled_at.map(time),
        "message": text,
    })
}

/// One handler log line.
fn log_line(l: &crate::engine::obs_model::LogRecord) -> Value {
    json!({
        "at": time(l.at),
        "level": l.level.map(|lv| lv.as_str()).unwrap_or(if l.truncated { "truncated" } else { "" }),
        "message": l.message,
        "fields": l.fields.as_deref().and_then(|f| serde_json::from_str::<Value>(f).ok()),
        "step_id": l.step_id,
        "attempt": l.attempt,
        "truncated": l.truncated,
    })
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
