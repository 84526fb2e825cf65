//! SDK values as JSON (for `--json`) and as human-readable text (tables and fields).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use stackshift::{Event, Failure, QueueInfo, Run};

use crate::table::{Table, fields};

/// RFC 3339 in UTC with milliseconds.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn opt_time(t: &Option<DateTime<Utc>>) -> Value {
    t.as_ref()
        .map(|t| Value::String(time(t)))
        .unwrap_or(Value::Null)
}

fn failure(f: &Option<Failure>) -> Value {
    f.as_ref().map_or(Value::Null, |f| {
        json!({
            "message": f.message,
            "type": f.error_type,
            "non_retryable": f.non_retryable,
        })
    })
}

/// A run as JSON (attempts, steps and wait included when the run has them).
pub fn run_json(r: &Run) -> Value {
    json!({
        "id": r.id,
        "job": r.job,
        "queue": r.queue,
        "status": r.status.as_str(),
        "payload": r.payload,
        "result": r.result,
        "error": failure(&r.failure),
        "attempt": r.attempt,
        "max_attempts": r.max_attempts,
        "priority": r.priority,
        "concurrency_key": r.concurrency_key,
        "idempotency_key": r.idempotency_key,
        "created_at": time(&r.created_at),
        "updated_at": time(&r.updated_at),
        "finished_at": opt_time(&r.finished_at),
        "next_attempt_at": opt_time(&r.next_attempt_at),
        "attempts": r.attempts.iter().map(|a| json!({
            "number": a.number,
            "worker_id": a.worker_id,
            "started_at": time(&a.started_at),
            "ended_at": opt_time(&a.ended_at),
            "error": failure(&a.failure),
        })).collect::<Vec<_>>(),
        "steps": r.steps.iter().map(|s| json!({
            "id": s.id,
            "kind": step_kind(s.kind),
            "attempt": s.attempt,
            "started_at": opt_time(&s.started_at),
            "completed_at": time(&s.completed_at),
            "output": s.output,
            "error": failure(&s.failure),
        })).collect::<Vec<_>>(),
        "wait": r.wait.as_ref().map(|w| json!({
            "step_id": w.step_id,
            "kind": step_kind(w.kind),
            "event_name": w.event_name,
            "correlation_key": w.correlation_key,
            "wake_at": opt_time(&w.wake_at),
            "since": opt_time(&w.since),
        })),
    })
}

/// The name of a step kind.
pub fn step_kind(k: stackshift::StepKind) -> String {
    match k {
        stackshift::StepKind::Step => "step".into(),
        stackshift::StepKind::Sleep => "sleep".into(),
        stackshift::StepKind::Event => "event".into(),
        stackshift::StepKind::Other(n) => format!("kind-{n}"),
        _ => "unknown".into(),
    }
}

/// Runs as a table.
pub fn runs_table(runs: &[Run]) -> String {
    let mut t = Table::new(&["ID", "JOB", "QUEUE", "STATUS", "ATTEMPT", "CREATED"]);
    for r in runs {
        t.row(vec![
            r.id.clone(),
            r.job.clone(),
            r.queue.clone(),
            r.status.as_str().into(),
            format!("{}/{}", r.attempt, r.max_attempts),
            time(&r.created_at),
        ]);
    }
    t.render()
}

/// One run in full, as text.
pub fn run_text(r: &Run) -> String {
    let mut out = fields(&[
        ("id", r.id.clone()),
        ("job", r.job.clone()),
        ("queue", r.queue.clone()),
        ("status", r.status.as_str().into()),
        ("attempt", format!("{} of {}", r.attempt, r.max_attempts)),
        ("created", time(&r.created_at)),
        (
            "finished",
            r.finished_at.as_ref().map(time).unwrap_or_default(),
        ),
        ("payload", r.payload.to_string()),
        (
            "result",
            r.result.as_ref().map(Value::to_string).unwrap_or_default(),
        ),
        (
            "error",
            r.failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ),
    ]);
    if let Some(w) = &r.wait {
        out.push_str(&format!(
            "waiting:   {} {}{}\n",
            step_kind(w.kind),
            w.step_id,
            w.wake_at
                .as_ref()
                .map(|t| format!(" until {}", time(t)))
                .unwrap_or_default()
        ));
    }
    if !r.attempts.is_empty() {
        let mut t = Table::new(&["ATTEMPT", "WORKER", "STARTED", "ENDED", "ERROR"]);
        for a in &r.attempts {
            t.row(vec![
                a.number.to_string(),
                a.worker_id.clone(),
                time(&a.started_at),
                a.ended_at.as_ref().map(time).unwrap_or_default(),
                a.failure
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if !r.steps.is_empty() {
        let mut t = Table::new(&["STEP", "KIND", "ATTEMPT", "COMPLETED", "OUTPUT"]);
        for s in &r.steps {
            t.row(vec![
                s.id.clone(),
                step_kind(s.kind),
                s.attempt.to_string(),
                time(&s.completed_at),
                match (&s.output, &s.failure) {
                    (_, Some(f)) => format!("error: {f}"),
                    (Some(v), None) => v.to_string(),
                    (None, None) => String::new(),
                },
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

/// A queue as JSON.
pub fn queue_json(q: &QueueInfo) -> Value {
    let s = &q.stats;
    json!({
        "name": q.name,
        "paused": q.paused,
        "concurrency_limit": q.config.concurrency_limit,
        "key_concurrency_limit": q.config.key_concurrency_limit,
        "stats": {
            "queued": s.queued,
            "delayed": s.delayed,
            "running": s.running,
            "waiting": s.waiting,
            "completed": s.completed,
            "failed": s.failed,
            "cancelled": s.cancelled,
            "oldest_queued_age_ms": s.oldest_queued_age.map(|d| d.as_millis() as u64),
            "rate_window_started": s.rate_window_started,
        },
        "created_at": time(&q.created_at),
        "updated_at": time(&q.updated_at),
    })
}

/// Queues as a table.
pub fn queues_table(queues: &[QueueInfo]) -> String {
    let mut t = Table::new(&[
        "QUEUE",
        "PAUSED",
        "QUEUED",
        "RUNNING",
        "WAITING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "CONCURRENCY",
    ]);
    for q in queues {
        let s = &q.stats;
        t.row(vec![
            q.name.clone(),
            if q.paused { "yes" } else { "no" }.into(),
            s.queued.to_string(),
            s.running.to_string(),
            s.waiting.to_string(),
            s.completed.to_string(),
            s.failed.to_string(),
            s.cancelled.to_string(),
            q.config
                .concurrency_limit
                .map_or_else(|| "-".into(), |n| n.to_string()),
        ]);
    }
    t.render()
}

/// An event as JSON.
pub fn event_json(e: &Event) -> Value {
    json!({
        "id": e.id,
        "name": e.name,
        "correlation_key": e.correlation_key,
        "payload": e.payload,
        "published_at": time(&e.published_at),
    })
}

/// Events as a table.
pub fn events_table(events: &[Event]) -> String {
    let mut t = Table::new(&["PUBLISHED", "NAME", "CORRELATION KEY", "ID", "PAYLOAD"]);
    for e in events {
        t.row(vec![
            time(&e.published_at),
            e.name.clone(),
            e.correlation_key.clone().unwrap_or_default(),
            e.id.clone(),
            e.payload.to_string(),
        ]);
    }
    t.render()
}
