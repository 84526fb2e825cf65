//! `history`: claim latency (start -> handler begins, one run at a time) with 10k and then
//! 1M finished runs in the store.
//!
//! Finished runs are inserted straight into the `runs` table with one
//! `INSERT ... SELECT` over a recursive CTE (status `completed`, same namespace and queue
//! as the probe runs), with the server stopped, so the inserts never contend with it.
//! The server is then restarted and measured; the ratio is p50(1M) / p50(10k).

use std::path::PathBuf;
use std::time::Instant;

use sea_orm::{ConnectionTrait, Database};

use super::context;
use super::latency::Probe;
use crate::harness::{Db, Server, percentile};
use crate::{Opts, Report};

/// Inserts finished runs with ids `hist-<from>` .. `hist-<to - 1>`.
async fn insert_finished(url: &str, from: usize, to: usize) -> anyhow::Result<()> {
    let db = Database::connect(url).await?;
    let mut lo = from;
    while lo < to {
        let hi = (lo + 100_000).min(to);
        let sql = format!(
            "WITH RECURSIVE c(x) AS (SELECT {lo} UNION ALL SELECT x + 1 FROM c WHERE x < {last}) \
             INSERT INTO runs (id, namespace, job, queue, status, payload, result, attempt, \
               max_attempts, retry_initial_ms, retry_coefficient, retry_max_ms, available_at, \
               created_at, updated_at, finished_at, priority) \
             SELECT 'hist-' || x, 'default', 'probe', 'bench', 'completed', '0', 'null', 1, 3, \
               1000, 2.0, 60000, 1700000000000 + x, 1700000000000 + x, 1700000000000 + x, \
               1700000000000 + x, 0 FROM c",
            last = hi - 1
        );
        db.execute_unprepared(&sql).await?;
        lo = hi;
    }
    let _ = db.close().await;
    Ok(())
}

/// Starts a server over `db`, measures `samples` claim latencies, stops it.
async fn measure(db: &Db, bin: &PathBuf, opts: &Opts, samples: usize) -> anyhow::Result<Vec<f64>> {
    let server = Server::start(bin, &db.url, db.dir.path())?;
    let mut probe = Probe::start(&server, opts)?;
    let ms = probe.measure(samples).await?;
    probe.stop().await;
    server.stop();
    Ok(ms)
}

/// `history`.
pub async fn history(opts: &Opts, bin: &PathBuf) -> anyhow::Result<Report> {
    let samples = opts.runs_or(2_000, 50);
    let (small, large) = if opts.smoke {
        (1_000, 10_000)
    } else {
        (10_000, 1_000_000)
    };
    let db = Db::fresh(opts).await?;
    // The first start creates the schema.
    Server::start(bin, &db.url, db.dir.path())?.stop();
    let t = Instant::now();
    insert_finished(&db.url, 0, small).await?;
    let mut few = measure(&db, bin, opts, samples).await?;
    insert_finished(&db.url, small, large).await?;
    let insert_secs = t.elapsed().as_secs_f64();
    let mut many = measure(&db, bin, opts, samples).await?;

    let few50 = percentile(&mut few, 50.0);
    let many50 = percentile(&mut many, 50.0);
    let mut report = Report::new("history", opts);
    context(&mut report, opts, samples, 1);
    report.info("finished_small", "finished runs (small store)", small);
    report.info("finished_large", "finished runs (large store)", large);
    report.figure(
        "insert_secs",
        "bulk insert of finished runs",
        insert_secs,
        "s",
    );
    report.figure(
        "small_p50_ms",
        "claim latency p50, small store",
        few50,
        "ms",
    );
    report.figure(
        "small_p99_ms",
        "claim latency p99, small store",
        percentile(&mut few, 99.0),
        "ms",
    );
    report.figure(
        "large_p50_ms",
        "claim latency p50, large store",
        many50,
        "ms",
    );
    report.figure(
        "large_p99_ms",
        "claim latency p99, large store",
        percentile(&mut many, 99.0),
        "ms",
    );
    report.figure("ratio", "p50 large / p50 small", many50 / few50, "");
    Ok(report)
}
