//! `herd`: hundreds of idle long-polls, then one task, then a burst of tasks.
//!
//! Checks: the single task goes to exactly one poller; every task of the burst is delivered
//! exactly once; and the server's CPU time per enqueue with 500 idle pollers stays within
//! 3x of the same measurement with 10 (a thundering herd, where every enqueue wakes every
//! poller into a store claim, costs ~50x).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use stackshift_proto::v1 as pb;
use tonic::transport::Channel;

use crate::Opts;
use crate::harness::{Db, Raw, Server, ServerSpec, cpu_secs, dur, req};
use crate::report::Report;

#[derive(Default)]
struct Deliveries {
    by_run: StdMutex<HashMap<String, u32>>,
    total: AtomicU64,
}

fn spawn_pollers(
    channels: &[Channel],
    n: usize,
    first: usize,
    d: &Arc<Deliveries>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut out = Vec::new();
    for i in first..first + n {
        let mut raw = Raw::new(channels[i / 100 % channels.len()].clone())?;
        let (d, stop) = (d.clone(), stop.clone());
        out.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = raw
                    .worker
                    .poll_task(req(
                        pb::PollTaskRequest {
                            worker_id: format!("herd-{i}"),
                            queues: vec!["herd".into()],
                            jobs: vec![pb::JobSpec {
                                name: "herd".into(),
                                lease_timeout: None,
                            }],
                            max_tasks: 1,
                            wait: Some(dur(Duration::from_secs(5))),
                        },
                        Duration::from_secs(15),
                        None,
                    ))
                    .await;
                match r {
                    Ok(resp) => {
                        for t in resp.into_inner().tasks {
                            if let Ok(mut m) = d.by_run.lock() {
                                *m.entry(t.run_id).or_default() += 1;
                            }
                            d.total.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
    }
    Ok(out)
}

async fn start(raw: &mut Raw, i: usize) -> anyhow::Result<String> {
    let r = raw
        .jobs
        .start_run(req(
            pb::StartRunRequest {
                job: "herd".into(),
                payload: i.to_string().into_bytes(),
                queue: "herd".into(),
                // Nobody completes these runs: the lease must outlast the scenario.
                lease_timeout: Some(dur(Duration::from_secs(3600))),
                ..Default::default()
            },
            Duration::from_secs(10),
            None,
        ))
        .await?
        .into_inner();
    Ok(r.run.map(|r| r.id).unwrap_or_default())
}

/// Enqueues `m` runs one at a time, each after the previous one was delivered; returns
/// the server's CPU seconds per enqueue.
async fn cpu_per_enqueue(
    server: &Server,
    raw: &mut Raw,
    d: &Deliveries,
    m: usize,
) -> anyhow::Result<f64> {
    let pid = server.pid();
    let c0 = cpu_secs(pid)?;
    for i in 0..m {
        let before = d.total.load(Ordering::Relaxed);
        start(raw, i).await?;
        let t = Instant::now();
        while d.total.load(Ordering::Relaxed) == before {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(10),
                "enqueue {i} was not delivered in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok((cpu_secs(pid)? - c0) / m as f64)
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let herd = 500usize;
    let burst = opts.size(1000usize, 300);
    let m = opts.size(300usize, 100);
    let db = Db::fresh(opts).await?;
    let server = Server::start(ServerSpec::new(bin, &db)?)?;
    let channels: Vec<Channel> = (0..herd.div_ceil(100))
        .map(|_| server.channel())
        .collect::<anyhow::Result<_>>()?;
    let d = Arc::new(Deliveries::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut raw = server.raw()?;
    let mut pollers = spawn_pollers(&channels, 10, 0, &d, &stop)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_small = cpu_per_enqueue(&server, &mut raw, &d, m).await?;
    pollers.extend(spawn_pollers(&channels, herd - 10, 10, &d, &stop)?);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One task to 500 idle pollers.
    let before = d.total.load(Ordering::Relaxed);
    let one = start(&mut raw, 0).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = d
        .by_run
        .lock()
        .map(|m| m.get(&one).copied().unwrap_or(0))
        .unwrap_or(0);
    let single_deliveries = d.total.load(Ordering::Relaxed) - before;
    report.check(got == 1 && single_deliveries == 1, || {
        format!(
            "one task with {herd} pollers: delivered {got} times ({single_deliveries} deliveries)"
        )
    });

    let cpu_large = cpu_per_enqueue(&server, &mut raw, &d, m).await?;

    // A burst from 16 concurrent starters.
    let expected = d.total.load(Ordering::Relaxed) + burst as u64;
    let mut starters = Vec::new();
    for s in 0..16 {
        let mut raw = server.raw()?;
        starters.push(tokio::spawn(async move {
            for i in (s..burst).step_by(16) {
                start(&mut raw, i).await?;
            }
            anyhow::Ok(())
        }));
    }
    for s in starters {
        s.await??;
    }
    let t = Instant::now();
    while d.total.load(Ordering::Relaxed) < expected && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let by_run = d.by_run.lock().map(|m| m.clone()).unwrap_or_default();
    let duplicated: u64 = by_run
        .values()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum();
    let total = d.total.load(Ordering::Relaxed);
    let runs = (2 * m + 1 + burst) as u64;
    report.figure("idle_pollers", herd);
    report.figure("tasks", runs);
    report.figure("delivered", total);
    report.figure("lost", runs.saturating_sub(by_run.len() as u64));
    report.figure("duplicated", duplicated);
    report.figure("single_task_deliveries", single_deliveries);
    report.figure(
        "server_cpu_ms_per_enqueue_10_pollers",
        (cpu_small * 1e5).round() / 100.0,
    );
    report.figure(
        "server_cpu_ms_per_enqueue_500_pollers",
        (cpu_large * 1e5).round() / 100.0,
    );
    let ratio = cpu_large / cpu_small.max(1e-4);
    report.figure("cpu_ratio", (ratio * 100.0).round() / 100.0);
    report.check(duplicated == 0, || {
        format!("{duplicated} duplicate deliveries")
    });
    report.check(by_run.len() as u64 == runs, || {
        format!("{} of {runs} tasks delivered", by_run.len())
    });
    report.check(ratio <= 3.0, || {
        format!("work per enqueue grew {ratio:.2}x from 10 to {herd} pollers")
    });
    for p in pollers {
        p.abort();
    }
    Ok(())
}
