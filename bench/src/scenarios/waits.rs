//! `resume` and `waiting`: many runs suspended on `wait_for_event` (each on its own
//! correlation key). `resume` publishes events one at a time and measures publish -> the
//! handler continues after its wait; `waiting` samples the server's RSS and CPU while idle.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use stackshift::{JobContext, PublishEvent, StackShift, WaitResult, WorkerHandle};
use tokio::sync::mpsc;

use super::{context, one_server, start_runs, start_workers, stop_workers, wait_queue};
use crate::harness::{Server, percentile, proc_stats};
use crate::{Opts, Report};

/// Runs of `waiter` suspended on event `bench.go` with correlation key `k<index>`.
struct Waiters {
    handles: Vec<WorkerHandle>,
    resumed: mpsc::UnboundedReceiver<(u64, Instant)>,
    client: StackShift,
    runs: usize,
    setup_secs: f64,
}

async fn setup(server: &Server, opts: &Opts, runs: usize) -> anyhow::Result<Waiters> {
    let workers = opts.workers.unwrap_or(2);
    let (tx, resumed) = mpsc::unbounded_channel();
    let handles = start_workers(&[server], workers, opts.concurrency, move |b| {
        let tx = tx.clone();
        b.job("waiter", move |ctx: JobContext<u64>| {
            let tx = tx.clone();
            async move {
                let key = format!("k{}", ctx.payload);
                let got = ctx
                    .step
                    .wait_for_event("go", "bench.go", &key, "24h")
                    .await?;
                let _ = tx.send((ctx.payload, Instant::now()));
                anyhow::ensure!(matches!(got, WaitResult::Received(_)), "wait timed out");
                Ok(())
            }
        })
    })?;
    let client = server.client()?;
    let clients: Vec<StackShift> = (0..4)
        .map(|_| server.client())
        .collect::<anyhow::Result<_>>()?;
    let t = Instant::now();
    start_runs(&clients, "waiter", runs, 64).await?;
    wait_queue(
        &client,
        Duration::from_millis(200),
        Duration::from_secs(1800),
        |s| s.waiting >= runs as u64,
    )
    .await?;
    Ok(Waiters {
        handles,
        resumed,
        client,
        runs,
        setup_secs: t.elapsed().as_secs_f64(),
    })
}

/// `resume`.
pub async fn resume(opts: &Opts, bin: &PathBuf) -> anyhow::Result<Report> {
    let runs = opts.runs_or(100_000, 200);
    let samples = if opts.smoke { 20 } else { 1_000.min(runs) };
    let (_db, server) = one_server(opts, bin).await?;
    let mut w = setup(&server, opts, runs).await?;
    let events = w.client.events();
    let stride = (w.runs / samples).max(1);
    let mut ms = Vec::with_capacity(samples);
    for s in 0..samples {
        let i = (s * stride) as u64;
        let t = Instant::now();
        events
            .publish(PublishEvent::new("bench.go", i).correlation_key(format!("k{i}")))
            .await?;
        loop {
            let (n, at) = w.resumed.recv().await.context("worker stopped")?;
            if n == i {
                ms.push(at.duration_since(t).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    stop_workers(w.handles).await;
    server.stop();
    let mut report = Report::new("resume", opts);
    context(&mut report, opts, runs, opts.workers.unwrap_or(2));
    report.info("samples", "events published (one at a time)", samples);
    report.figure(
        "setup_secs",
        "runs started and suspended in",
        w.setup_secs,
        "s",
    );
    report.figure(
        "p50_ms",
        "publish -> run resumes p50",
        percentile(&mut ms, 50.0),
        "ms",
    );
    report.figure(
        "p99_ms",
        "publish -> run resumes p99",
        percentile(&mut ms, 99.0),
        "ms",
    );
    report.figure(
        "max_ms",
        "publish -> run resumes max",
        percentile(&mut ms, 100.0),
        "ms",
    );
    Ok(report)
}

/// `waiting`.
pub async fn waiting(opts: &Opts, bin: &PathBuf) -> anyhow::Result<Report> {
    let runs = opts.runs_or(100_000, 200);
    let window = if opts.smoke { 1 } else { 20 };
    let (_db, server) = one_server(opts, bin).await?;
    let w = setup(&server, opts, runs).await?;
    // Let the last suspensions, checkpoints and allocator settle.
    tokio::time::sleep(Duration::from_secs(if opts.smoke { 1 } else { 5 })).await;
    let (_, cpu0) = proc_stats(server.pid())?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let (rss, cpu1) = proc_stats(server.pid())?;
    let idle_cpu_pct = (cpu1 - cpu0) / t.elapsed().as_secs_f64() * 100.0;
    stop_workers(w.handles).await;
    server.stop();
    let mut report = Report::new("waiting", opts);
    context(&mut report, opts, runs, opts.workers.unwrap_or(2));
    report.figure(
        "setup_secs",
        "runs started and suspended in",
        w.setup_secs,
        "s",
    );
    report.info("window_secs", "idle window", window);
    report.figure("rss_mb", "server RSS", rss, "MiB");
    report.figure(
        "idle_cpu_pct",
        "server CPU while idle",
        idle_cpu_pct,
        "% of one core",
    );
    Ok(report)
}
