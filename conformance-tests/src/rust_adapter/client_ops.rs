//! The Rust adapter's client commands (stdin `{"id","op",...}`): runs, events, state, locks
//! and queues (schedules and triggers: [`super::schedule_ops`]) through the SDK's public client API, answered as `docs/conformance.md` says.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use stackshift::{
    ClientOptions, Error, ListRunsOptions, LockGuard, LockOptions, PublishEvent, QueueConfig,
    QueueInfo, RetryPolicy, Run, SetOptions, StackShift, StartOptions,
};

/// The adapter's client, plus the locks it holds (so `release_lock` releases through the
/// SDK's [`LockGuard`]).
pub(super) struct ClientOps {
    client: StackShift,
    locks: HashMap<(String, i64), LockGuard>,
}

/// The typed error as `{code, type, message}`, plus `reason` for a state conflict.
pub(super) fn error_json(e: &anyhow::Error) -> Value {
    let Some(error) = e.downcast_ref::<Error>() else {
        return json!({ "code": "UNKNOWN", "type": "", "message": format!("{e:#}") });
    };
    let class = match error {
        Error::InvalidArgument(_) => "Error::InvalidArgument",
        Error::NotFound(_) => "Error::NotFound",
        Error::AlreadyExists(_) => "Error::AlreadyExists",
        Error::FailedPrecondition(_) => "Error::FailedPrecondition",
        Error::Unauthenticated(_) => "Error::Unauthenticated",
        Error::PermissionDenied(_) => "Error::PermissionDenied",
        Error::ResourceExhausted(_) => "Error::ResourceExhausted",
        Error::Cancelled(_) => "Error::Cancelled",
        Error::Aborted(_) => "Error::Aborted",
        Error::Unavailable(_) => "Error::Unavailable",
        Error::Json(_) => "Error::Json",
        Error::Conflict { .. } => "Error::Conflict",
        _ => "Error::Other",
    };
    let mut answer = json!({
        "code": crate::exec::code_name(error.code()),
        "type": class,
        "message": error.to_string(),
    });
    if let Error::Conflict { reason, .. } = error {
        answer["reason"] = json!(reason);
    }
    answer
}

fn str_arg<'a>(c: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str)
}

fn ms_arg(c: &Map<String, Value>, k: &str) -> Option<Duration> {
    c.get(k).and_then(Value::as_u64).map(Duration::from_millis)
}

fn run_json(run: &Run) -> Value {
    let timeline: Vec<Value> = run
        .timeline
        .iter()
        .map(|e| {
            json!({
                "kind": e.kind.as_str().to_ascii_uppercase(),
                "attempt": e.attempt,
                "step_id": e.step_id.as_deref().unwrap_or(""),
            })
        })
        .collect();
    let logs: Vec<Value> = run
        .logs
        .iter()
        .map(|l| {
            json!({
                "level": l.level.as_str(),
                "message": l.message,
                "fields": l.fields,
                "step_id": l.step_id.as_deref().unwrap_or(""),
                "attempt": l.attempt,
            })
        })
        .collect();
    json!({
        "run_id": run.id,
        "status": run.status.as_str(),
        "attempt": run.attempt,
        "queue": run.queue,
        "result": run.result,
        "failure": run.failure.as_ref().map(|f| json!({ "message": f.message, "non_retryable": f.non_retryable })),
        "parent_run_id": run.parent_run_id.as_deref().unwrap_or(""),
        "timeline": timeline,
        "logs": logs,
    })
}

fn queue_json(q: &QueueInfo) -> Value {
    json!({
        "name": q.name,
        "paused": q.paused,
        "concurrency_limit": q.config.concurrency_limit,
        "key_concurrency_limit": q.config.key_concurrency_limit,
    })
}

fn start_options(c: &Map<String, Value>) -> anyhow::Result<StartOptions> {
    let mut opts = StartOptions::default();
    if let Some(k) = str_arg(c, "idempotency_key") {
        opts = opts.idempotency_key(k);
    }
    if let Some(ttl) = str_arg(c, "idempotency_ttl") {
        opts = opts.idempotency_ttl(ttl);
    }
    if let Some(lease) = str_arg(c, "lease_timeout") {
        opts = opts.lease_timeout(lease);
    }
    if let Some(delay) = ms_arg(c, "delay_ms") {
        opts = opts.delay(delay);
    }
    if let Some(at) = str_arg(c, "run_at") {
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map_err(|e| Error::InvalidArgument(format!("run_at {at:?}: {e}")))?;
        opts = opts.run_at(at.with_timezone(&chrono::Utc));
    }
    if let Some(p) = c.get("priority").and_then(Value::as_i64) {
        opts = opts.priority(i32::try_from(p)?);
    }
    if let Some(k) = str_arg(c, "concurrency_key") {
        opts = opts.concurrency_key(k);
    }
    let mut policy = RetryPolicy::new();
    let mut has_policy = false;
    if let Some(n) = c.get("max_attempts").and_then(Value::as_i64) {
        policy = policy.max_attempts(i32::try_from(n)?);
        has_policy = true;
    }
    if let Some(d) = str_arg(c, "initial_interval") {
        policy = policy.initial_interval(stackshift::parse_duration(d).map_err(Error::from)?);
        has_policy = true;
    }
    if has_policy {
        opts = opts.retry_policy(policy);
    }
    Ok(opts)
}

impl ClientOps {
    pub(super) fn new(client: StackShift) -> Self {
        Self {
            client,
            locks: HashMap::new(),
        }
    }

    /// One client command through the SDK's public API.
    pub(super) async fn call(&mut self, op: &str, c: &Map<String, Value>) -> anyhow::Result<Value> {
        let custom;
        let client = match str_arg(c, "api_key") {
            Some(key) => {
                custom = StackShift::new(ClientOptions::new(self.client.endpoint()).api_key(key))?;
                &custom
            }
            None => &self.client,
        };
        let run_id = || str_arg(c, "run_id").unwrap_or("").to_owned();
        let key = || str_arg(c, "key").unwrap_or("").to_owned();
        let queue = || client.queue(str_arg(c, "queue").unwrap_or(""));
        Ok(match op {
            "start" => {
                let opts = start_options(c)?;
                let job = str_arg(c, "job").unwrap_or("");
                let payload = match c.get("payload_bytes").and_then(Value::as_u64) {
                    Some(n) => Value::String("x".repeat(usize::try_from(n)?)),
                    None => c.get("payload").cloned().unwrap_or(Value::Null),
                };
                let queue = str_arg(c, "queue").unwrap_or("default");
                let started = if c.get("via_queue").and_then(Value::as_bool).unwrap_or(false) {
                    client.queue(queue).enqueue(job, &payload, opts).await?
                } else {
                    client.start(job, &payload, opts.queue_name(queue)).await?
                };
                json!({ "run_id": started.id, "duplicate": started.duplicate, "status": started.run.status.as_str() })
            }
            "get_run" => run_json(&client.get_run(run_id()).await?),
            "wait_run" => {
                let timeout = stackshift::parse_duration(str_arg(c, "timeout").unwrap_or("20s"))
                    .map_err(Error::from)?;
                run_json(&client.wait_for_run(run_id(), timeout).await?)
            }
            "cancel_run" => run_json(&client.cancel_run(run_id(), str_arg(c, "reason")).await?),
            "retry_run" => run_json(&client.retry_run(run_id()).await?),
            "list_runs" => {
                let opts = ListRunsOptions {
                    queue: str_arg(c, "queue").map(str::to_owned),
                    job: str_arg(c, "job").map(str::to_owned),
                    status: str_arg(c, "status").map(str::parse).transpose()?,
                    ..ListRunsOptions::default()
                };
                let page = client.list_runs(opts).await?;
                json!({ "run_ids": page.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>() })
            }
            "publish_event" => {
                let name = str_arg(c, "name").unwrap_or("");
                let payload = c.get("payload").cloned().unwrap_or(Value::Null);
                let mut event = PublishEvent::new(name, payload);
                if let Some(k) = str_arg(c, "key") {
                    event = event.correlation_key(k);
                }
                if let Some(id) = str_arg(c, "event_id") {
                    event = event.id(id);
                }
                let published = client.events().publish(event).await?;
                json!({
                    "event_id": published.event.id,
                    "duplicate": published.duplicate,
                    "matched": published.resumed_run_count,
                    "started_run_ids": published.started_run_ids,
                })
            }
            "state_get" => {
                let value: Option<Value> = client.state().get(&key()).await?;
                value.unwrap_or(Value::Null)
            }
            "state_set" => {
                let value = c.get("value").cloned().unwrap_or(Value::Null);
                let mut opts = SetOptions::default();
                if let Some(ttl) = ms_arg(c, "ttl_ms") {
                    opts = opts.ttl(ttl);
                }
                if let Some(v) = c.get("expected_version").and_then(Value::as_i64) {
                    opts = opts.expected_version(v);
                }
                json!({ "version": client.state().set(&key(), &value, opts).await? })
            }
            "state_incr" => {
                let by = c.get("by").and_then(Value::as_i64).unwrap_or(1);
                json!(client.state().increment(&key(), by).await?)
            }
            "state_delete" => json!(client.state().delete(&key()).await?),
            "lock" => {
                let mut opts = LockOptions::new(ms_arg(c, "ttl_ms").unwrap_or_default());
                if let Some(wait) = ms_arg(c, "wait_ms") {
                    opts = opts.wait(wait);
                }
                match client.state().lock(&key(), opts).await? {
                    Some(guard) => {
                        let token = guard.token();
                        self.locks.insert((key(), token), guard);
                        json!({ "granted": true, "token": token })
                    }
                    None => json!({ "granted": false }),
                }
            }
            "release_lock" => {
                let token = c.get("token").and_then(Value::as_i64).unwrap_or(0);
                let guard = self.locks.remove(&(key(), token)).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "this adapter holds no guard for lock {:?} with token {token}",
                        key()
                    ))
                })?;
                guard.release().await?;
                Value::Null
            }
            "configure_queue" => {
                let mut config = QueueConfig::new();
                if let Some(n) = c.get("concurrency_limit").and_then(Value::as_u64) {
                    config = config.concurrency_limit(u32::try_from(n)?);
                }
                if let Some(n) = c.get("key_concurrency_limit").and_then(Value::as_u64) {
                    config = config.key_concurrency_limit(u32::try_from(n)?);
                }
                queue_json(&queue().configure(config).await?)
            }
            "pause_queue" => queue_json(&queue().pause().await?),
            "resume_queue" => queue_json(&queue().resume().await?),
            "get_queue" => queue_json(&queue().get().await?),
            other => match super::schedule_ops::call(client, other, c).await {
                Some(answer) => answer?,
                None => anyhow::bail!("unknown op {other:?}"),
            },
        })
    }
}
