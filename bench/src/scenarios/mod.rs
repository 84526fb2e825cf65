//! The scenarios, and what they share: starting runs concurrently, starting workers,
//! and waiting on a queue's live counts.

mod history;
mod latency;
mod throughput;
mod waits;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use stackshift::{QueueStats, StackShift, StartOptions, Worker, WorkerBuilder, WorkerHandle};

use crate::harness::{CommitStats, Db, Server, server_binary};
use crate::{Opts, Report, Scenario};

/// Runs one scenario and returns its report.
pub async fn run(scenario: Scenario, opts: &Opts) -> anyhow::Result<Report> {
    let bin = server_binary(opts)?;
    match scenario {
        Scenario::Throughput => throughput::throughput(opts, &bin).await,
        Scenario::Replicas => throughput::replicas(opts, &bin).await,
        Scenario::Burndown => throughput::burndown(opts, &bin).await,
        Scenario::Latency => latency::latency(opts, &bin).await,
        Scenario::History => history::history(opts, &bin).await,
        Scenario::Resume => waits::resume(opts, &bin).await,
        Scenario::Waiting => waits::waiting(opts, &bin).await,
    }
}

/// A fresh database and one server on it.
pub async fn one_server(opts: &Opts, bin: &std::path::PathBuf) -> anyhow::Result<(Db, Server)> {
    let db = Db::fresh(opts).await?;
    let server = Server::start(bin, &db.url, db.dir.path())?;
    Ok((db, server))
}

/// Starts `n` workers spread over `servers`, each built by `build` on its own client.
pub fn start_workers(
    servers: &[&Server],
    n: usize,
    concurrency: usize,
    build: impl Fn(WorkerBuilder) -> WorkerBuilder,
) -> anyhow::Result<Vec<WorkerHandle>> {
    let mut handles = Vec::new();
    for i in 0..n {
        let client = servers[i % servers.len()].client()?;
        let builder = Worker::builder(client)
            .queues(["bench"])
            .concurrency(concurrency)
            .poll_wait(Duration::from_secs(30))
            .shutdown_grace(Duration::from_secs(5));
        handles.push(build(builder).build().start());
    }
    Ok(handles)
}

/// Stops workers.
pub async fn stop_workers(handles: Vec<WorkerHandle>) {
    for h in handles {
        h.shutdown().await;
    }
}

/// Starts `n` runs of `job` on queue `bench` (payload: the run's index) from `parallel`
/// concurrent callers spread over `clients`; returns how long it took.
pub async fn start_runs(
    clients: &[StackShift],
    job: &'static str,
    n: usize,
    parallel: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for p in 0..parallel.max(1) {
        let client = clients[p % clients.len()].clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                client
                    .start(job, i, StartOptions::new().queue_name("bench"))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t.elapsed())
}

/// Polls queue `bench`'s live counts until `done` holds (or `limit` passes): every `every`,
/// or four times as long as the last count took if that is longer, so that counting a
/// large queue (tens of milliseconds at 100k runs) never takes more than a fifth of a
/// server connection's time away from the runs being measured.
pub async fn wait_queue(
    client: &StackShift,
    every: Duration,
    limit: Duration,
    done: impl Fn(&QueueStats) -> bool,
) -> anyhow::Result<QueueStats> {
    let deadline = Instant::now() + limit;
    loop {
        let asked = Instant::now();
        let stats = client.queue("bench").get().await?.stats;
        if done(&stats) {
            return Ok(stats);
        }
        if Instant::now() > deadline {
            bail!("queue `bench` did not reach the expected counts in {limit:?}: {stats:?}");
        }
        tokio::time::sleep(every.max(asked.elapsed() * 4)).await;
    }
}

/// The servers' group-commit counters summed.
pub fn commit_stats(servers: &[&Server]) -> anyhow::Result<CommitStats> {
    let mut sum = CommitStats {
        statements: Some(0.0),
        report_batches: Some((0.0, 0.0)),
        ..CommitStats::default()
    };
    for s in servers {
        let c = s.commit_stats()?;
        sum.commits += c.commits;
        sum.writes += c.writes;
        sum.statements = sum.statements.zip(c.statements).map(|(a, b)| a + b);
        sum.report_batches = sum
            .report_batches
            .zip(c.report_batches)
            .map(|((c, i), (oc, oi))| (c + oc, i + oi));
    }
    Ok(sum)
}

/// Adds the group-commit figures since `before`: commits, writes and writes per commit,
/// and the writer's statements per run (`runs` runs were processed since `before`) when
/// the servers export them.
pub fn commit_figures(report: &mut Report, servers: &[&Server], before: CommitStats, runs: usize) {
    match commit_stats(servers) {
        Ok(now) => {
            let d = now.since(before);
            report.figure("commits", "group commits", d.commits, "");
            report.figure("writes", "writes committed", d.writes, "");
            report.figure(
                "writes_per_commit",
                "writes per commit (mean)",
                d.writes / d.commits.max(1.0),
                "",
            );
            if let Some(statements) = d.statements {
                report.figure("statements", "writer statements", statements, "");
                report.figure(
                    "statements_per_run",
                    "writer statements per run (mean)",
                    statements / (runs.max(1) as f64),
                    "",
                );
            }
            if let Some((calls, items)) = d.report_batches {
                report.figure(
                    "report_items_per_call",
                    "reports per ReportBatch call (mean)",
                    items / calls.max(1.0),
                    "",
                );
                report.figure(
                    "report_calls_per_run",
                    "ReportBatch calls per run (mean)",
                    calls / (runs.max(1) as f64),
                    "",
                );
            }
        }
        Err(e) => eprintln!("cannot read the servers' commit counters: {e:#}"),
    }
}

/// Adds the usual context rows (sizes) to a report.
pub fn context(report: &mut Report, opts: &Opts, runs: usize, workers: usize) {
    report.info("runs", "runs", runs);
    report.info(
        "workers",
        "workers x slots",
        format!("{workers} x {}", opts.concurrency),
    );
    report.info("smoke", "smoke sizes", opts.smoke);
}
