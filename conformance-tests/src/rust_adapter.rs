//! The Rust SDK's conformance adapter (`stackshift-conformance rust-adapter`): a worker built
//! on the `stackshift` crate that registers the job catalogue and answers client commands,
//! following the protocol in `docs/conformance.md`. The TypeScript, Python and Go adapters
//! (`sdk-*/conformance/`) implement exactly the same catalogue.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Map, Value, json};
use stackshift::{
    ClientOptions, Error, JobContext, ListRunsOptions, NonRetryable, RetryPolicy, Run, StackShift,
    StartOptions, StepFailed, Worker,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Appends ledger lines; shared by every handler.
#[derive(Clone)]
struct Ledger(Arc<Mutex<File>>);

impl Ledger {
    fn record(&self, run_id: &str, step: &str, attempt: i32, phase: &str) {
        let t = chrono::Utc::now().timestamp_micros() as f64 / 1000.0;
        let line =
            json!({ "run_id": run_id, "step": step, "attempt": attempt, "phase": phase, "t": t });
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(file, "{line}");
        let _ = file.flush();
    }
}

/// What a script execution collects: step outputs and caught errors.
#[derive(Default)]
struct ScriptState {
    outputs: Vec<Value>,
    caught: Vec<Value>,
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

/// Runs the adapter until it is told to shut down (or stdin closes).
pub async fn main() -> anyhow::Result<()> {
    let ledger_path = env("CONFORMANCE_LEDGER")?;
    let queue = env("CONFORMANCE_QUEUE")?;
    let concurrency: usize = env("CONFORMANCE_CONCURRENCY")?.parse()?;
    let grace_ms: u64 = env("CONFORMANCE_SHUTDOWN_GRACE_MS")?.parse()?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ledger_path)?;
    let ledger = Ledger(Arc::new(Mutex::new(file)));
    let client = StackShift::from_env()?;

    let script_ledger = ledger.clone();
    let worker = Worker::builder(client.clone())
        .queues([queue])
        .concurrency(concurrency)
        .shutdown_grace(Duration::from_millis(grace_ms))
        .job("conf.script", move |ctx: JobContext<Value>| {
            script(ctx, script_ledger.clone())
        })
        .job("conf.echo", |ctx: JobContext<Value>| async move {
            anyhow::Ok(ctx.payload)
        })
        .build();
    let handle = worker.start();
    println!("{}", json!({ "ready": true, "sdk": "rust" }));

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let Ok(Value::Object(command)) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let op = command
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if op == "shutdown" {
            break;
        }
        let id = command.get("id").cloned().unwrap_or(Value::Null);
        let answer = match client_op(&client, &op, &command).await {
            Ok(ok) => json!({ "id": id, "ok": ok }),
            Err(e) => json!({ "id": id, "error": error_json(&e) }),
        };
        println!("{answer}");
    }
    handle.shutdown().await;
    Ok(())
}

/// The `conf.script` job: interprets `payload.ops` (see docs/conformance.md).
async fn script(ctx: JobContext<Value>, ledger: Ledger) -> anyhow::Result<Value> {
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
                let result = ctx.step.run(id, || step_body(ctx, ledger, id, op)).await;
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

/// The typed error as `{code, type, message}`.
fn error_json(e: &anyhow::Error) -> Value {
    let Some(error) = e.downcast_ref::<Error>() else {
        return json!({ "code": "UNKNOWN", "type": "", "message": format!("{e:#}") });
    };
    let class = match error {
        Error::InvalidArgument(_) => "Error::InvalidArgument",
        Error::NotFound(_) => "Error::NotFound",
        Error::AlreadyExists => "Error::AlreadyExists",
        Error::FailedPrecondition(_) => "Error::FailedPrecondition",
        Error::Unauthenticated(_) => "Error::Unauthenticated",
        Error::PermissionDenied => "Error::PermissionDenied",
        Error::ResourceExhausted(_) => "Error::ResourceExhausted",
        Error::Cancelled(_) => "Error::Cancelled",
        Error::Aborted(_) => "Error::Aborted",
        Error::Unavailable(_) => "Error::Unavailable",
        Error::Json(_) => "Error::Json",
        _ => "Error::Other",
    };
    json!({ "code": crate::exec::code_name(error.code()), "type": class, "message": error.to_string() })
}

fn str_arg<'a>(c: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str)
}

fn run_json(run: &Run) -> Value {
    json!({
        "run_id": run.id,
        "status": run.status.as_str(),
        "attempt": run.attempt,
        "queue": run.queue,
        "result": run.result,
        "failure": run.failure.as_ref().map(|f| json!({ "message": f.message, "non_retryable": f.non_retryable })),
    })
}

/// One client command through the SDK's public API.
async fn client_op(
    default_client: &StackShift,
    op: &str,
    c: &Map<String, Value>,
) -> anyhow::Result<Value> {
    let custom;
    let client = match str_arg(c, "api_key") {
        Some(key) => {
            custom = StackShift::new(ClientOptions::new(default_client.endpoint()).api_key(key))?;
            &custom
        }
        None => default_client,
    };
    let run_id = || str_arg(c, "run_id").unwrap_or("").to_owned();
    Ok(match op {
        "start" => {
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
            let mut policy = RetryPolicy::new();
            let mut has_policy = false;
            if let Some(n) = c.get("max_attempts").and_then(Value::as_i64) {
                policy = policy.max_attempts(i32::try_from(n)?);
                has_policy = true;
            }
            if let Some(d) = str_arg(c, "initial_interval") {
                policy =
                    policy.initial_interval(stackshift::parse_duration(d).map_err(Error::from)?);
                has_policy = true;
            }
            if has_policy {
                opts = opts.retry_policy(policy);
            }
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
        other => anyhow::bail!("unknown op {other:?}"),
    })
}
