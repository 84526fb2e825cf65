//! The Rust SDK's conformance adapter (`stackshift-conformance rust-adapter`): a worker built
//! on the `stackshift` crate that registers the job catalogue and answers client commands,
//! following the protocol in `docs/conformance.md`. The TypeScript, Python and Go adapters
//! (`sdk-*/conformance/`) implement exactly the same catalogue.

mod client_ops;
mod schedule_ops;
mod script;
mod script_waits;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use stackshift::{JobContext, JobOptions, JobTrigger, StackShift, Worker};
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
    // `conf.on_event` declares its trigger on the job; the worker creates it before polling.
    let on_event =
        JobOptions::default().trigger(JobTrigger::event(format!("conf.triggered.{queue}")));
    let worker = Worker::builder(client.clone())
        .queues([queue])
        .concurrency(concurrency)
        .shutdown_grace(Duration::from_millis(grace_ms))
        .job("conf.script", move |ctx: JobContext<Value>| {
            script::script(ctx, script_ledger.clone())
        })
        .job("conf.echo", |ctx: JobContext<Value>| async move {
            anyhow::Ok(ctx.payload)
        })
        .job_with_options(
            "conf.on_event",
            on_event,
            |ctx: JobContext<Value>| async move { anyhow::Ok(ctx.payload) },
        )
        .build();
    let handle = worker.try_start().await?;
    let mut ops = client_ops::ClientOps::new(client.clone());
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
        let answer = match ops.call(&op, &command).await {
            Ok(ok) => json!({ "id": id, "ok": ok }),
            Err(e) => json!({ "id": id, "error": client_ops::error_json(&e) }),
        };
        println!("{answer}");
    }
    handle.shutdown().await;
    Ok(())
}
