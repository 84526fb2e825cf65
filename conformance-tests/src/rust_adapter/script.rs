//! The `conf.script` job of the Rust adapter: interprets `payload.ops` (steps, failures,
//! sleeps, event waits, state calls, locks and log lines) exactly as `docs/conformance.md`
//! specifies for every adapter.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Value, json};
use stackshift::{
    Error, JobContext, LockOptions, NonRetryable, SetOptions, StepFailed, StepOptions, WaitResult,
};

use super::Ledger;

/// What a script execution collects: step outputs and caught errors.
#[derive(Default)]
struct ScriptState {
    outputs: Vec<Value>,
    caught: Vec<Value>,
}

/// The `conf.script` job: interprets `payload.ops` (see docs/conformance.md).
pub(super) async fn script(ctx: JobContext<Value>, ledger: Ledger) -> anyhow::Result<Value> {
    let payload = ctx.payload.clone();
    let ops = payload
        .get("ops")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut state = ScriptState::default();
    run_ops(&ctx, &ledger, &ops, &mut state).await?;
    if let Some(n) = payload.get("result_bytes").and_then(Value::as_u64) {
        return Ok(Value::String("x".repeat(usize::try_from(n)?)));
    }
    if let Some(result) = payload.get("result") {
        return Ok(result.clone());
    }
    Ok(json!({ "outputs": state.outputs, "caught": state.caught }))
}

fn run_ops<'a>(
    ctx: &'a JobContext<Value>,
    ledger: &'a Ledger,
    ops: &'a [Value],
    state: &'a mut ScriptState,
) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>> {
    Box::pin(async move {
        for op in ops {
            let int = |k: &str| op.get(k).and_then(Value::as_i64);
            let flag = |k: &str| op.get(k).and_then(Value::as_bool).unwrap_or(false);
            if let Some(id) = op.get("step").and_then(Value::as_str) {
                let result = if op.get("retries").is_some() || op.get("retry_delay_ms").is_some() {
                    let mut opts = StepOptions::new()
                        .retries(u32::try_from(int("retries").unwrap_or(0)).unwrap_or(u32::MAX));
                    if let Some(ms) = int("retry_delay_ms") {
                        opts = opts.retry_delay(Duration::from_millis(u64::try_from(ms)?));
                    }
                    let mut tries = 0;
                    ctx.step
                        .run_with(id, opts, || {
                            tries += 1;
                            step_body(ctx, ledger, id, op, tries)
                        })
                        .await
                } else {
                    ctx.step.run(id, || step_body(ctx, ledger, id, op, 1)).await
                };
                match result {
                    Ok(value) => state.outputs.push(value),
                    Err(e) if flag("catch") && !is_interrupted(&e) => {
                        let (kind, message) = error_kind(&e);
                        state
                            .caught
                            .push(json!({ "step": id, "kind": kind, "message": message }));
                    }
                    Err(e) => return Err(e),
                }
            } else if let Some(n) = int("repeat") {
                let inner = op
                    .get("ops")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for _ in 0..n {
                    run_ops(ctx, ledger, &inner, state).await?;
                }
            } else if let Some(message) = op.get("fail").and_then(Value::as_str) {
                if int("until_attempt").is_none_or(|n| i64::from(ctx.attempt) <= n) {
                    if flag("non_retryable") {
                        return Err(stackshift::non_retryable(message));
                    }
                    anyhow::bail!("{message}");
                }
            } else if let Some(ms) = int("sleep_ms") {
                tokio::time::sleep(Duration::from_millis(u64::try_from(ms)?)).await;
            } else if let Some(id) = op.get("sleep").and_then(Value::as_str) {
                let ms = u64::try_from(int("ms").unwrap_or(0))?;
                ctx.step.sleep(id, Duration::from_millis(ms)).await?;
            } else if let Some(id) = op.get("wait_event").and_then(Value::as_str) {
                let event = op.get("event").and_then(Value::as_str).unwrap_or("");
                let key = op.get("key").and_then(Value::as_str).unwrap_or("");
                let timeout = Duration::from_millis(u64::try_from(int("timeout_ms").unwrap_or(0))?);
                let value = match ctx.step.wait_for_event(id, event, key, timeout).await? {
                    WaitResult::Received(event) => {
                        json!({ "received": true, "payload": event.payload })
                    }
                    WaitResult::TimedOut => json!({ "received": false }),
                };
                state.outputs.push(value);
            } else if let Some(value) = super::script_waits::run_op(ctx, op).await {
                state.outputs.push(value?);
            } else if let Some(key) = state_key(op) {
                state_op(ctx, op, key, state).await?;
            } else if let Some(message) = op.get("log").and_then(Value::as_str) {
                let mut log = ctx.log.clone();
                if let Some(fields) = op.get("fields").and_then(Value::as_object) {
                    for (k, v) in fields {
                        log = log.with_field(k.clone(), v);
                    }
                }
                match op.get("level").and_then(Value::as_str).unwrap_or("info") {
                    "debug" => log.debug(message),
                    "info" => log.info(message),
                    "warn" => log.warn(message),
                    "error" => log.error(message),
                    other => {
                        return Err(stackshift::non_retryable(format!(
                            "unknown log level {other:?}"
                        )));
                    }
                }
            } else {
                return Err(stackshift::non_retryable(format!("unknown script op {op}")));
            }
        }
        Ok(())
    })
}

/// The body of a script step: ledger start, optional sleep, optional failure, ledger end.
async fn step_body(
    ctx: &JobContext<Value>,
    ledger: &Ledger,
    id: &str,
    op: &Value,
    try_no: i64,
) -> anyhow::Result<Value> {
    let int = |k: &str| op.get(k).and_then(Value::as_i64);
    ledger.record(&ctx.run_id, id, ctx.attempt, "start");
    if let Some(ms) = int("sleep_ms") {
        tokio::time::sleep(Duration::from_millis(u64::try_from(ms)?)).await;
    }
    let message = op.get("message").and_then(Value::as_str);
    if int("fail_until_attempt").is_some_and(|n| i64::from(ctx.attempt) <= n) {
        anyhow::bail!(
            "{}",
            message.map_or_else(
                || format!("step {id} failed on attempt {}", ctx.attempt),
                str::to_owned
            )
        );
    }
    if int("fail_until_try").is_some_and(|n| try_no <= n) {
        anyhow::bail!(
            "{}",
            message.map_or_else(
                || format!("step {id} failed on try {try_no}"),
                str::to_owned
            )
        );
    }
    if op
        .get("non_retryable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(stackshift::non_retryable(message.map_or_else(
            || format!("step {id} failed permanently"),
            str::to_owned,
        )));
    }
    ledger.record(&ctx.run_id, id, ctx.attempt, "end");
    if let Some(n) = op.get("output_bytes").and_then(Value::as_u64) {
        return Ok(Value::String("x".repeat(usize::try_from(n)?)));
    }
    Ok(op
        .get("output")
        .cloned()
        .unwrap_or_else(|| json!({ "step": id, "attempt": ctx.attempt })))
}

fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<stackshift::Interrupted>())
}

/// `step_failed` (a replayed terminal failure), `non_retryable` or `error`, with the
/// underlying failure message.
fn error_kind(e: &anyhow::Error) -> (&'static str, String) {
    if let Some(failed) = e.chain().find_map(|c| c.downcast_ref::<StepFailed>()) {
        return ("step_failed", failed.failure.message.clone());
    }
    if let Some(nr) = e.chain().find_map(|c| c.downcast_ref::<NonRetryable>()) {
        return ("non_retryable", nr.message().to_owned());
    }
    ("error", e.to_string())
}

/// The key of a `state_*` or `lock` op.
fn state_key(op: &Value) -> Option<&str> {
    [
        "state_set",
        "state_get",
        "state_incr",
        "state_delete",
        "lock",
    ]
    .iter()
    .find_map(|k| op.get(*k).and_then(Value::as_str))
}

/// One journaled state call (`ctx.state`). With `catch: true`, a typed conflict is recorded
/// in `caught` as `{step: KEY, kind: "conflict", reason}` and the script goes on.
async fn state_op(
    ctx: &JobContext<Value>,
    op: &Value,
    key: &str,
    state: &mut ScriptState,
) -> anyhow::Result<()> {
    let ms = |k: &str| op.get(k).and_then(Value::as_u64).map(Duration::from_millis);
    let result: Result<(), Error> = async {
        if op.get("state_set").is_some() {
            let value = op.get("value").cloned().unwrap_or(Value::Null);
            let mut opts = SetOptions::default();
            if let Some(ttl) = ms("ttl_ms") {
                opts = opts.ttl(ttl);
            }
            ctx.state.set(key, &value, opts).await?;
        } else if op.get("state_get").is_some() {
            let value: Option<Value> = ctx.state.get(key).await?;
            state.outputs.push(value.unwrap_or(Value::Null));
        } else if op.get("state_incr").is_some() {
            // The Rust SDK has no default argument: `by` omitted is its documented default, 1.
            let by = op.get("by").and_then(Value::as_i64).unwrap_or(1);
            state
                .outputs
                .push(json!(ctx.state.increment(key, by).await?));
        } else if op.get("state_delete").is_some() {
            state.outputs.push(json!(ctx.state.delete(key).await?));
        } else {
            let mut opts = LockOptions::new(ms("ttl_ms").unwrap_or_default());
            if let Some(wait) = ms("wait_ms") {
                opts = opts.wait(wait);
            }
            match ctx.state.lock(key, opts).await? {
                Some(guard) => {
                    state
                        .outputs
                        .push(json!({ "granted": true, "token": guard.token() }));
                    if let Some(hold) = ms("hold_ms") {
                        tokio::time::sleep(hold).await;
                    }
                    if op.get("release").and_then(Value::as_bool) != Some(false) {
                        guard.release().await?;
                    }
                }
                None => state.outputs.push(json!({ "granted": false })),
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(()),
        Err(Error::Conflict { reason, .. })
            if op.get("catch").and_then(Value::as_bool) == Some(true) =>
        {
            state
                .caught
                .push(json!({ "step": key, "kind": "conflict", "reason": reason }));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
