//! `throughput`, `replicas` and `burndown`: runs completed per second.
//!
//! Completion is measured end to end: the clock stops when queue `bench` reports every run
//! `completed` (checked every 5 ms once the handlers have all returned).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use stackshift::{JobContext, StackShift, WorkerBuilder};

use super::{
    commit_figures, commit_stats, context, one_server, start_runs, start_workers, stop_workers,
    wait_queue,
};
use crate::harness::{Backend, Db, Server};
use crate::{Opts, Report};

/// Executions of each step body and handler entries, per run (to count duplicates).
#[derive(Default)]
struct Executions(Mutex<HashMap<String, u32>>);

impl Executions {
    fn record(&self, key: String) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(key).or_default() += 1;
        }
    }

    /// Executions beyond the first, over all keys.
    fn duplicates(&self) -> u64 {
        self.0
            .lock()
            .map(|m| m.values().map(|&n| u64::from(n.saturating_sub(1))).sum())
            .unwrap_or(0)
    }
}

/// Registers `bench3`: three steps, each recorded in `execs`.
fn three_steps(execs: Arc<Executions>) -> impl Fn(WorkerBuilder) -> WorkerBuilder {
    move |b: WorkerBuilder| {
        let execs = execs.clone();
        b.job("bench3", move |ctx: JobContext<u64>| {
            let execs = execs.clone();
            async move {
                for step in ["one", "two", "three"] {
                    let e = execs.clone();
                    let key = format!("{}/{step}", ctx.run_id);
                    let v: u64 = ctx
                        .step
                        .run(step, || async move {
                            e.record(key);
                            anyhow::Ok(1)
                        })
                        .await?;
                    debug_assert_eq!(v, 1);
                }
                Ok(ctx.payload)
            }
        })
    }
}

/// Starts `runs` 3-step runs through `servers` while workers on them execute; returns the
/// report with `runs_per_sec` and `duplicates`.
async fn three_step_runs(
    name: &'static str,
    opts: &Opts,
    servers: &[&Server],
) -> anyhow::Result<Report> {
    let runs = opts.runs_or(20_000, 200);
    let workers = opts.workers.unwrap_or(4);
    let execs = Arc::new(Executions::default());
    let handles = start_workers(
        servers,
        workers,
        opts.concurrency,
        three_steps(execs.clone()),
    )?;
    let clients: Vec<StackShift> = (0..4)
        .map(|i| servers[i % servers.len()].client())
        .collect::<anyhow::Result<_>>()?;
    let before = commit_stats(servers)?;
    let t = Instant::now();
    let started = start_runs(&clients, "bench3", runs, 64).await?;
    let stats = wait_queue(
        &clients[0],
        Duration::from_millis(5),
        Duration::from_secs(600),
        |s| s.completed + s.failed >= runs as u64,
    )
    .await?;
    let elapsed = t.elapsed();
    stop_workers(handles).await;
    if stats.failed > 0 {
        bail!("{} runs failed", stats.failed);
    }
    let mut report = Report::new(name, opts);
    context(&mut report, opts, runs, workers);
    report.info("servers", "server replicas", servers.len());
    report.figure(
        "start_secs",
        "all starts acknowledged after",
        started.as_secs_f64(),
        "s",
    );
    report.figure(
        "elapsed_secs",
        "all runs completed after",
        elapsed.as_secs_f64(),
        "s",
    );
    report.figure(
        "runs_per_sec",
        "3-step runs completed per second",
        runs as f64 / elapsed.as_secs_f64(),
        "runs/s",
    );
    report.figure(
        "duplicates",
        "duplicate step executions",
        execs.duplicates() as f64,
        "",
    );
    commit_figures(&mut report, servers, before, runs);
    Ok(report)
}

/// `throughput`: one server, 3-step runs started and executed concurrently.
pub async fn throughput(opts: &Opts, bin: &PathBuf) -> anyhow::Result<Report> {
    let (_db, server) = one_server(opts, bin).await?;
    let report = three_step_runs("throughput", opts, &[&server]).await?;
    server.stop();
    Ok(report)
}

/// `replicas`: two servers on one PostgreSQL database; starts and workers split evenly.
pub async fn replicas(opts: &Opts, bin: &PathBuf) -> anyhow::Result<Report> {
    if opts.backend != Backend::Postgres {
        bail!("the replicas scenario needs --backend postgres");
    }
    let db = Db::fresh(opts).await?;
    let a = Server::start(bin, &db.url, db.dir.path())?;
    let b = Server::start(bin, &db.url, db.dir.path())?;
    let report = three_step_runs("replicas", opts, &[&a, &b]).await?;
    a.stop();
    b.stop();
    Ok(report)
}

/// `burndown`: enqueue zero-step runs with no worker running, then drain them.
pub async fn burndown(opts: &Opts, bin: &PathBuf) -> anyhow::Result<Report> {
    let runs = opts.runs_or(100_000, 500);
    let workers = opts.workers.unwrap_or(4);
    let (_db, server) = one_server(opts, bin).await?;
    let clients: Vec<StackShift> = (0..4)
        .map(|_| server.client())
        .collect::<anyhow::Result<_>>()?;
    let before = commit_stats(&[&server])?;
    let enqueue = start_runs(&clients, "bench0", runs, 64).await?;
    let enqueued = commit_stats(&[&server])?;
    let t = Instant::now();
    let handles = start_workers(&[&server], workers, opts.concurrency, |b| {
        b.job(
            "bench0",
            |ctx: JobContext<u64>| async move { Ok(ctx.payload) },
        )
    })?;
    let stats = wait_queue(
        &clients[0],
        Duration::from_millis(5),
        Duration::from_secs(600),
        |s| s.completed + s.failed >= runs as u64,
    )
    .await?;
    let elapsed = t.elapsed();
    stop_workers(handles).await;
    let mut report = Report::new("burndown", opts);
    let enqueue_writes = enqueued.since(before);
    report.figure(
        "enqueue_writes_per_commit",
        "writes per commit while enqueueing",
        enqueue_writes.writes / enqueue_writes.commits.max(1.0),
        "",
    );
    commit_figures(&mut report, &[&server], enqueued, runs);
    server.stop();
    if stats.failed > 0 {
        bail!("{} runs failed", stats.failed);
    }
    context(&mut report, opts, runs, workers);
    report.figure(
        "enqueue_per_sec",
        "enqueue rate (64 concurrent starts)",
        runs as f64 / enqueue.as_secs_f64(),
        "runs/s",
    );
    report.figure("elapsed_secs", "drained after", elapsed.as_secs_f64(), "s");
    report.figure(
        "runs_per_sec",
        "zero-step runs drained per second",
        runs as f64 / elapsed.as_secs_f64(),
        "runs/s",
    );
    Ok(report)
}
