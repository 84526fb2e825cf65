//! What every example shares: the log set-up, a client from the environment
//! (`STACKSHIFT_ENDPOINT`, `STACKSHIFT_API_KEY`), the list of named checks an example makes,
//! and the exit code (1 when the scenario errs or a check failed), so that each example file
//! holds only its jobs and its scenario.

use stackshift::{StackShift, WorkerHandle};

/// Prints one named check and records it when it failed.
pub fn check(failures: &mut Vec<String>, ok: bool, what: &str) {
    println!("  [{}] {what}", if ok { "ok" } else { "FAILED" });
    if !ok {
        failures.push(what.to_owned());
    }
}

/// Runs the example `name`: starts the worker `start_worker` returns (if any), runs
/// `scenario`, shuts the worker down gracefully and exits with 1 when the scenario failed or
/// a check did not hold.
pub async fn run_example(
    name: &str,
    start_worker: impl FnOnce(&StackShift) -> Option<WorkerHandle>,
    scenario: impl AsyncFnOnce(&StackShift, &mut Vec<String>) -> anyhow::Result<()>,
) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,stackshift=info".into()),
        )
        .init();
    let client = match StackShift::from_env() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot create the client: {e}");
            std::process::exit(1);
        }
    };
    println!("server: {}", client.endpoint());
    let worker = start_worker(&client);
    let mut failures = Vec::new();
    let outcome = scenario(&client, &mut failures).await;
    if let Some(worker) = worker {
        worker.shutdown().await;
    }
    if let Err(e) = outcome {
        eprintln!("example failed: {e:#}");
        std::process::exit(1);
    }
    if !failures.is_empty() {
        eprintln!(
            "{} check(s) failed: {}",
            failures.len(),
            failures.join("; ")
        );
        std::process::exit(1);
    }
    println!("{name}: all checks passed");
}
