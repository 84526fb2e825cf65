//! `latency`: start -> handler begins, one run at a time, so the server is otherwise idle.
//! The handler sends the instant it began to the bench (same process, same clock).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use stackshift::{JobContext, StackShift, StartOptions, WorkerHandle};
use tokio::sync::mpsc;

use super::{commit_figures, commit_stats, context, one_server, start_workers};
use crate::harness::{Server, percentile};
use crate::{Opts, Report};

/// One worker running `probe`, which reports (payload, begin instant) on a channel.
pub struct Probe {
    handles: Vec<WorkerHandle>,
    began: mpsc::UnboundedReceiver<(u64, Instant)>,
    client: StackShift,
}

impl Probe {
    /// Starts the probe worker on `server`.
    pub fn start(server: &Server, opts: &Opts) -> anyhow::Result<Self> {
        let (tx, began) = mpsc::unbounded_channel();
        let handles = start_workers(&[server], 1, opts.concurrency, move |b| {
            let tx = tx.clone();
            b.job("probe", move |ctx: JobContext<u64>| {
                let now = Instant::now();
                let _ = tx.send((ctx.payload, now));
                async move { anyhow::Ok(()) }
            })
        })?;
        Ok(Self {
            handles,
            began,
            client: server.client()?,
        })
    }

    /// `samples` start -> begin latencies in milliseconds (after a short warm-up).
    pub async fn measure(&mut self, samples: usize) -> anyhow::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(samples);
        for i in 0..(samples + 20) as u64 {
            let t = Instant::now();
            self.client
                .start("probe", i, StartOptions::new().queue_name("bench"))
                .await?;
            loop {
                let (n, began) = self.began.recv().await.context("probe worker stopped")?;
                if n == i {
                    if i >= 20 {
                        out.push(began.duration_since(t).as_secs_f64() * 1000.0);
                    }
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Stops the worker.
    pub async fn stop(self) {
        super::stop_workers(self.handles).await;
    }
}

/// `latency`.
pub async fn latency(opts: &Opts, bin: &PathBuf) -> anyhow::Result<Report> {
    let samples = opts.runs_or(2_000, 50);
    let (_db, server) = one_server(opts, bin).await?;
    let mut probe = Probe::start(&server, opts)?;
    let before = commit_stats(&[&server])?;
    let mut ms = probe.measure(samples).await?;
    probe.stop().await;
    let mut report = Report::new("latency", opts);
    commit_figures(&mut report, &[&server], before, samples);
    server.stop();
    context(&mut report, opts, samples, 1);
    report.figure(
        "p50_ms",
        "start -> handler p50",
        percentile(&mut ms, 50.0),
        "ms",
    );
    report.figure(
        "p99_ms",
        "start -> handler p99",
        percentile(&mut ms, 99.0),
        "ms",
    );
    report.figure(
        "max_ms",
        "start -> handler max",
        percentile(&mut ms, 100.0),
        "ms",
    );
    Ok(report)
}
