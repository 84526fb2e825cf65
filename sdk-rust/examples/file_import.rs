//! Seed "File processing pipeline": `processUpload` downloads a file, parses it into
//! batches, imports each batch and counts its rows with
//! `state.increment(files:<fileId>:rows, batch.len())`, and marks the file complete,
//! returning `{ rows }`.
//!
//! Each batch import is a step with the same id, `import-batch`, so the SDK assigns
//! occurrence suffixes: `import-batch`, `import-batch#2`, `import-batch#3`. The row counter
//! is incremented through the handler's `ctx.state`, so each increment is journaled like a
//! step (`state:1`, `state:2`, `state:3`). The database connection drops during the third
//! batch on the first attempt; the retry replays the download, the parse, the two imported
//! batches and their two increments from the journal (the increments are not applied
//! again) and continues with the third.
//!
//! Checks: the run completed on attempt 2 with the right row count, every batch was
//! imported exactly once, the file was downloaded once, the step ids carry the occurrence
//! suffixes, and the durable row counter equals the real row count (10, not the 18 a
//! re-applied increment would give).
//!
//! Run against a server at `STACKSHIFT_ENDPOINT` (default `http://127.0.0.1:7447`):
//! `cargo run -p stackshift --example file_import`. Exits with status 1 when the outcome is
//! wrong.

mod support;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use stackshift::{JobContext, RetryPolicy, RunStatus, StackShift, StartOptions, Worker};

/// Rows per import batch.
const BATCH_SIZE: usize = 4;
/// Rows in the generated file.
const ROWS: usize = 10;

/// The job's payload: `{ fileId }`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Upload {
    file_id: String,
}

/// The parsed file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParsedFile {
    batches: Vec<Vec<Row>>,
    total_rows: usize,
}

/// One CSV row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    email: String,
    plan: String,
}

/// The job's result.
#[derive(Debug, Serialize)]
struct Imported {
    rows: usize,
}

/// What the stand-in services did, per file id (runs left over from earlier executions of
/// this example cannot skew the counts).
#[derive(Debug, Default)]
struct FileLog {
    downloads: usize,
    import_calls: usize,
    imported_batches: Vec<usize>,
    imported_rows: usize,
    completed: usize,
}

static LOG: LazyLock<Mutex<HashMap<String, FileLog>>> = LazyLock::new(Default::default);

fn with_log<T>(file_id: &str, f: impl FnOnce(&mut FileLog) -> T) -> T {
    let mut log = LOG.lock().unwrap_or_else(PoisonError::into_inner);
    f(log.entry(file_id.to_owned()).or_default())
}

/// Stands in for object storage.
async fn download_file(file_id: &str) -> anyhow::Result<String> {
    with_log(file_id, |l| l.downloads += 1);
    println!("  storage: downloaded {file_id}");
    let mut csv = String::from("email,plan\n");
    for i in 1..=ROWS {
        csv.push_str(&format!(
            "user{i}@example.com,{}\n",
            if i % 3 == 0 { "pro" } else { "free" }
        ));
    }
    Ok(csv)
}

async fn parse_csv(csv: &str) -> anyhow::Result<ParsedFile> {
    let rows = csv
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (email, plan) = line
                .split_once(',')
                .ok_or_else(|| stackshift::non_retryable(format!("malformed row {line:?}")))?;
            Ok(Row {
                email: email.to_owned(),
                plan: plan.to_owned(),
            })
        })
        .collect::<anyhow::Result<Vec<Row>>>()?;
    let total_rows = rows.len();
    let batches = rows.chunks(BATCH_SIZE).map(<[Row]>::to_vec).collect();
    Ok(ParsedFile {
        batches,
        total_rows,
    })
}

/// Stands in for the database; the connection drops on the third import call for a file.
async fn import_rows(file_id: &str, index: usize, batch: &[Row]) -> anyhow::Result<usize> {
    let call = with_log(file_id, |l| {
        l.import_calls += 1;
        l.import_calls
    });
    if call == 3 {
        println!(
            "  database: connection lost while importing batch {}",
            index + 1
        );
        anyhow::bail!("database connection reset (simulated crash)");
    }
    with_log(file_id, |l| {
        l.imported_batches.push(index);
        l.imported_rows += batch.len();
    });
    println!(
        "  database: imported batch {} ({} rows)",
        index + 1,
        batch.len()
    );
    Ok(batch.len())
}

async fn mark_file_complete(file_id: &str) -> anyhow::Result<()> {
    with_log(file_id, |l| l.completed += 1);
    println!("  storage: {file_id} marked complete");
    Ok(())
}

/// The handler, step for step as in the seed.
async fn process_upload(ctx: JobContext<Upload>) -> anyhow::Result<Imported> {
    println!("handler: attempt {} of run {}", ctx.attempt, ctx.run_id);
    let file_id = &ctx.payload.file_id;
    let file: String = ctx
        .step
        .run("download-file", || download_file(file_id))
        .await?;
    let parsed: ParsedFile = ctx.step.run("parse-file", || parse_csv(&file)).await?;

    for (index, batch) in parsed.batches.iter().enumerate() {
        // Each import is a step (`import-batch`, `import-batch#2`, ...), so a retry does not
        // import a batch twice; the seed's row counter follows it, as in the seed:
        // `await state.increment(`files:${payload.fileId}:rows`, batch.length)`.
        ctx.step
            .run("import-batch", || import_rows(file_id, index, batch))
            .await?;
        ctx.state
            .increment(&format!("files:{file_id}:rows"), batch.len() as i64)
            .await?;
    }

    ctx.step
        .run("mark-complete", || mark_file_complete(file_id))
        .await?;

    Ok(Imported {
        rows: parsed.total_rows,
    })
}

async fn scenario(client: &StackShift, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let file_id = format!("file_{}", &suffix[suffix.len() - 12..]);
    let started = client
        .start(
            "processUpload",
            json!({ "fileId": file_id }),
            StartOptions::default().retry_policy(
                RetryPolicy::new()
                    .max_attempts(3)
                    .initial_interval(Duration::from_millis(200)),
            ),
        )
        .await?;
    println!("started run {} for {file_id}", started.id);

    let run = client
        .wait_for_run(&started.id, Duration::from_secs(12))
        .await?;
    println!(
        "run {} is {} after {} attempt(s); result {}",
        run.id,
        run.status,
        run.attempt,
        run.result.clone().unwrap_or_default()
    );
    for step in &run.steps {
        println!("  step {} recorded by attempt {}", step.id, step.attempt);
    }

    let batches = ROWS.div_ceil(BATCH_SIZE);
    let (downloads, imported, imported_rows, completed) = with_log(&file_id, |l| {
        (
            l.downloads,
            l.imported_batches.clone(),
            l.imported_rows,
            l.completed,
        )
    });
    support::check(
        failures,
        run.status == RunStatus::Completed,
        "the run completed",
    );
    support::check(failures, run.attempt == 2, "it took exactly two attempts");
    support::check(
        failures,
        run.result == Some(json!({ "rows": ROWS })),
        &format!("the result is {{\"rows\": {ROWS}}}"),
    );
    support::check(failures, downloads == 1, "the file was downloaded once");
    support::check(
        failures,
        imported == (0..batches).collect::<Vec<_>>(),
        "every batch was imported exactly once, in order",
    );
    support::check(failures, imported_rows == ROWS, "the imported rows add up");
    support::check(
        failures,
        completed == 1,
        "the file was marked complete once",
    );
    let counted: Option<i64> = client.state().get(&format!("files:{file_id}:rows")).await?;
    support::check(
        failures,
        counted == Some(ROWS as i64),
        &format!(
            "the row counter files:{file_id}:rows is {ROWS}, the real row count (got {counted:?})"
        ),
    );
    let state_calls: Vec<(&str, i32)> = run
        .steps
        .iter()
        .filter(|s| s.id.starts_with("state:"))
        .map(|s| (s.id.as_str(), s.attempt))
        .collect();
    support::check(
        failures,
        state_calls.len() == batches
            && state_calls.contains(&("state:1", 1))
            && state_calls.contains(&("state:2", 1))
            && state_calls.contains(&("state:3", 2)),
        "the increments are journaled once each (state:1-2 by attempt 1, state:3 by attempt 2)",
    );
    let step_ids: Vec<&str> = run
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| !id.starts_with("state:"))
        .collect();
    support::check(
        failures,
        step_ids
            == [
                "download-file",
                "parse-file",
                "import-batch",
                "import-batch#2",
                "import-batch#3",
                "mark-complete",
            ],
        "step ids carry occurrence suffixes (import-batch, import-batch#2, import-batch#3)",
    );
    support::check(
        failures,
        run.step("import-batch#2").is_some_and(|s| s.attempt == 1)
            && run.step("import-batch#3").is_some_and(|s| s.attempt == 2),
        "batches 1-2 were recorded by attempt 1, batch 3 by attempt 2",
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    support::run_example(
        "file_import",
        |client| {
            Some(
                Worker::builder(client.clone())
                    .concurrency(4)
                    .shutdown_grace(Duration::from_secs(5))
                    .job("processUpload", process_upload)
                    .build()
                    .start(),
            )
        },
        scenario,
    )
    .await;
}
