//! Seeds a server for the dashboard browser test (`dashboard-tests/`): one run completed by
//! a real worker with two recorded steps, and one run left queued (nobody serves its
//! queue) to be cancelled from the browser. Prints `{"completed": id, "queued": id}`.
//!
//! `STACKSHIFT_ENDPOINT=http://127.0.0.1:PORT cargo run -p stackshift-cli --example dashboard_seed`

use std::time::Duration;

use stackshift::{JobContext, StackShift, StartOptions, Worker};

async fn checkout(ctx: JobContext<serde_json::Value>) -> anyhow::Result<serde_json::Value> {
    let reserved: String = ctx
        .step
        .run("reserve-stock", || async { Ok("reserved".to_owned()) })
        .await?;
    let charged: u32 = ctx
        .step
        .run("charge-card", || async { Ok(4200u32) })
        .await?;
    Ok(serde_json::json!({ "stock": reserved, "charged": charged }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let client = StackShift::from_env()?;
    let worker = Worker::builder(client.clone())
        .queues(["shop"])
        .job("checkout", checkout)
        .build()
        .start();
    let done = client
        .queue("shop")
        .enqueue(
            "checkout",
            &serde_json::json!({ "order": "ord_1" }),
            StartOptions::default(),
        )
        .await?;
    let run = client
        .wait_for_run(&done.id, Duration::from_secs(60))
        .await?;
    worker.shutdown().await;
    anyhow::ensure!(run.is_final(), "seed run did not finish: {}", run.status);
    let queued = client
        .queue("backlog")
        .enqueue(
            "reindex",
            &serde_json::json!({ "index": "products" }),
            StartOptions::default(),
        )
        .await?;
    println!(
        "{}",
        serde_json::json!({ "completed": done.id, "queued": queued.id })
    );
    Ok(())
}
