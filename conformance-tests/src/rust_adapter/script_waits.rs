//! The `conf.script` ops for child runs and combined waits (`invoke`, `invoke_all`,
//! `wait_any`, `wait_all`), as `docs/conformance.md` specifies for every adapter.

use std::time::Duration;

use serde_json::{Value, json};
use stackshift::{
    AllResult, AnyResult, ChildFailed, ChildOutcome, ChildRun, ChildStatus, ItemResult, JobContext,
    WaitItem,
};

fn status_str(s: ChildStatus) -> &'static str {
    match s {
        ChildStatus::Completed => "completed",
        ChildStatus::Failed => "failed",
        ChildStatus::Cancelled => "cancelled",
    }
}

/// Runs one of the ops this module owns; `None` when `op` is none of them. `Some(Ok(v))`
/// = the value to append to `outputs`.
pub(super) async fn run_op(ctx: &JobContext<Value>, op: &Value) -> Option<anyhow::Result<Value>> {
    let s = |k: &str| op.get(k).and_then(Value::as_str);
    if let Some(id) = s("invoke") {
        Some(invoke(ctx, op, id).await)
    } else if let Some(id) = s("invoke_all") {
        Some(invoke_all(ctx, op, id).await)
    } else if let Some(id) = s("wait_any") {
        Some(wait_any(ctx, op, id).await)
    } else if let Some(id) = s("wait_all") {
        Some(wait_all(ctx, op, id).await)
    } else {
        None
    }
}

async fn invoke(ctx: &JobContext<Value>, op: &Value, id: &str) -> anyhow::Result<Value> {
    let job = op.get("job").and_then(Value::as_str).unwrap_or("");
    let payload = op.get("payload").cloned().unwrap_or(Value::Null);
    let propagate = op.get("propagate").and_then(Value::as_bool) == Some(true);
    match ctx.step.invoke::<Value>(id, job, &payload).await {
        Ok(value) => Ok(value),
        Err(e) if !propagate => match e.downcast_ref::<ChildFailed>() {
            Some(failed) => Ok(json!({
                "child_failed": true,
                "status": status_str(failed.status),
                "message": failed.failure.message,
            })),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

fn outcome_json(o: ChildOutcome) -> Value {
    match o.status {
        ChildStatus::Completed => json!({
            "status": "completed",
            "result": o.result.unwrap_or(Value::Null),
        }),
        other => json!({
            "status": status_str(other),
            "message": o.failure.map(|f| f.message).unwrap_or_default(),
        }),
    }
}

async fn invoke_all(ctx: &JobContext<Value>, op: &Value, id: &str) -> anyhow::Result<Value> {
    let children = op
        .get("children")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            ChildRun::new(
                c.get("job").and_then(Value::as_str).unwrap_or(""),
                c.get("payload").unwrap_or(&Value::Null),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outcomes = ctx.step.invoke_all(id, children).await?;
    Ok(Value::Array(
        outcomes.into_iter().map(outcome_json).collect(),
    ))
}

/// The `items` of a wait op as the SDK's [`WaitItem`]s.
fn items(op: &Value) -> anyhow::Result<Vec<WaitItem>> {
    op.get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|item| {
            if let Some(name) = item.get("event").and_then(Value::as_str) {
                let key = item.get("key").and_then(Value::as_str).unwrap_or("");
                Ok(WaitItem::event(name, key))
            } else if let Some(ms) = item.get("sleep_ms").and_then(Value::as_u64) {
                Ok(WaitItem::sleep(Duration::from_millis(ms)))
            } else {
                Err(stackshift::non_retryable(format!(
                    "unknown wait item {item}"
                )))
            }
        })
        .collect()
}

/// An item's output: `{name, key, payload}` for an event, `null` for a sleep.
fn item_json(r: ItemResult) -> Value {
    match r {
        ItemResult::Event(e) => json!({
            "name": e.name,
            "key": e.correlation_key.unwrap_or_default(),
            "payload": e.payload,
        }),
        ItemResult::Slept => Value::Null,
    }
}

fn timeout(op: &Value) -> Option<Duration> {
    op.get("timeout_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
}

async fn wait_any(ctx: &JobContext<Value>, op: &Value, id: &str) -> anyhow::Result<Value> {
    Ok(
        match ctx.step.wait_for_any(id, items(op)?, timeout(op)).await? {
            AnyResult::TimedOut => json!({ "timed_out": true }),
            AnyResult::Resolved { index, result } => json!({
                "timed_out": false,
                "index": index,
                "output": item_json(result),
            }),
        },
    )
}

async fn wait_all(ctx: &JobContext<Value>, op: &Value, id: &str) -> anyhow::Result<Value> {
    let AllResult { timed_out, items } = ctx
        .step
        .wait_for_all(id, self::items(op)?, timeout(op))
        .await?;
    let resolved: Vec<bool> = items.iter().map(Option::is_some).collect();
    let outputs: Vec<Value> = items
        .into_iter()
        .map(|i| i.map_or(Value::Null, item_json))
        .collect();
    Ok(json!({ "timed_out": timed_out, "outputs": outputs, "resolved": resolved }))
}
