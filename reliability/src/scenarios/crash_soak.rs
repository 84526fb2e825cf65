//! `crash-soak`: kill -9 the server many times at random moments while several SDK workers
//! execute thousands of 3-step runs and starters keep starting more (with idempotency keys,
//! retrying until acknowledged). A side-effect ledger outside the engine records every
//! execution of every step body with a unique nonce; the nonce is the step's output.
//!
//! Checks: every acknowledged start reaches `completed`; one run per idempotency key; no step
//! has two recorded results; every recorded output is a ledger nonce; and no step body ran
//! again after its result was committed (the recorded nonce is the step's last execution).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use stackshift::{JobContext, RetryPolicy, RunStatus, StartOptions, Worker};
use tokio::sync::Mutex;

use super::{Kills, spawn_killer};
use crate::Opts;
use crate::harness::{Db, Server, ServerSpec};
use crate::report::Report;

const STEPS: [&str; 3] = ["reserve", "charge", "ship"];

/// Executions of step bodies: (run, step) -> nonces in execution order.
#[derive(Default)]
struct Ledger(StdMutex<HashMap<(String, String), Vec<String>>>);

impl Ledger {
    fn record(&self, run: &str, step: &str) -> String {
        let nonce = uuid::Uuid::now_v7().simple().to_string();
        if let Ok(mut m) = self.0.lock() {
            m.entry((run.to_owned(), step.to_owned()))
                .or_default()
                .push(nonce.clone());
        }
        nonce
    }
}

pub async fn run(
    opts: &Opts,
    bin: &Path,
    rng: rand::rngs::StdRng,
    report: &mut Report,
) -> anyhow::Result<()> {
    let runs = opts.size(3000usize, 300);
    let kills = opts.size(25u32, 5);
    let gap = opts.size((500, 2500), (300, 1200));
    let workers = opts.size(4usize, 3);
    let db = Db::fresh(opts).await?;
    let server = Server::start(ServerSpec::new(bin, &db)?)?;
    let endpoint_client = server.client(None)?;
    let ledger = Arc::new(Ledger::default());
    let mut handles = Vec::new();
    for i in 0..workers {
        let l = ledger.clone();
        let w = Worker::builder(server.client(None)?)
            .queues(["soak"])
            .worker_id(format!("soak-{i}"))
            .concurrency(20)
            .poll_wait(Duration::from_secs(10))
            .shutdown_grace(Duration::from_secs(2))
            .job("soak", move |ctx: JobContext<u64>| {
                let l = l.clone();
                async move {
                    let mut out = Vec::new();
                    for step in STEPS {
                        let (l, run) = (l.clone(), ctx.run_id.clone());
                        let nonce: String = ctx
                            .step
                            .run(step, || async move {
                                let nonce = l.record(&run, step);
                                // A little work, so kills land inside step bodies too.
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                anyhow::Ok(nonce)
                            })
                            .await?;
                        out.push(nonce);
                    }
                    Ok(out)
                }
            })
            .build();
        handles.push(w.start());
    }
    let server = Arc::new(Mutex::new(server));
    let killer = spawn_killer(
        server.clone(),
        Kills {
            count: kills,
            gap_ms: gap,
            outage_ms: (0, 3000),
        },
        rng,
    );

    // Starters: each run has an idempotency key and is retried until acknowledged.
    let next = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let acked: Arc<StdMutex<HashMap<usize, HashSet<String>>>> = Arc::default();
    let mut starters = Vec::new();
    for _ in 0..8 {
        let (client, next, requests, unknown, acked) = (
            endpoint_client.clone(),
            next.clone(),
            requests.clone(),
            unknown.clone(),
            acked.clone(),
        );
        starters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs {
                    return anyhow::Ok(());
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                loop {
                    requests.fetch_add(1, Ordering::Relaxed);
                    let o = StartOptions::new()
                        .queue_name("soak")
                        .idempotency_key(format!("soak-{i}"))
                        // Outages longer than the lease expire attempts: the run must
                        // still complete, so attempts are plentiful.
                        .lease_timeout(Duration::from_secs(2))
                        .retry_policy(
                            RetryPolicy::new()
                                .max_attempts(100)
                                .initial_interval(Duration::from_millis(100))
                                .maximum_interval(Duration::from_millis(500)),
                        );
                    match client.start("soak", i as u64, o).await {
                        Ok(s) => {
                            if let Ok(mut m) = acked.lock() {
                                m.entry(i).or_default().insert(s.id);
                            }
                            break;
                        }
                        Err(e) => {
                            unknown.fetch_add(1, Ordering::Relaxed);
                            if !e.is_transient() || std::time::Instant::now() > deadline {
                                anyhow::bail!("start {i} not acknowledged in 120 s: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    for s in starters {
        s.await??;
    }
    let kills_done = killer.await??;

    // Every acknowledged start must reach a final state.
    let acked = std::mem::take(&mut *acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let mut completed = 0u64;
    let mut lost = 0u64;
    let mut duplicate_runs = 0u64;
    let mut dup_step_results = 0u64;
    let mut foreign_outputs = 0u64;
    let mut after_commit = 0u64;
    let mut recorded_steps = 0u64;
    let mut extra_attempts = 0u64;
    let mut ids: Vec<(usize, String)> = Vec::new();
    for (i, set) in &acked {
        if set.len() > 1 {
            duplicate_runs += set.len() as u64 - 1;
            report.violation(format!(
                "idempotency key soak-{i} acknowledged {} different runs",
                set.len()
            ));
        }
        for id in set {
            ids.push((*i, id.clone()));
        }
    }
    let mut finals = Vec::new();
    for (i, id) in &ids {
        finals.push((
            *i,
            id.clone(),
            endpoint_client
                .wait_for_run(id, Duration::from_secs(180))
                .await?,
        ));
    }
    // Every run is final: no step body runs any more.
    let ledger_map =
        std::mem::take(&mut *ledger.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    for (i, id, run) in &finals {
        if run.status != RunStatus::Completed {
            lost += 1;
            report.violation(format!(
                "run {id} (soak-{i}) ended {:?}: {:?}",
                run.status, run.failure
            ));
            continue;
        }
        completed += 1;
        extra_attempts += run.attempt.saturating_sub(1) as u64;
        let mut seen = HashSet::new();
        for step in &run.steps {
            recorded_steps += 1;
            if !seen.insert(step.id.clone()) {
                dup_step_results += 1;
                report.violation(format!(
                    "run {id}: step {} has two recorded results",
                    step.id
                ));
            }
            let nonce = step
                .output
                .as_ref()
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let execs = ledger_map.get(&(id.clone(), step.id.clone()));
            match execs {
                Some(list) if list.iter().any(|n| n == nonce) => {
                    if list.last().map(String::as_str) != Some(nonce) {
                        after_commit += 1;
                        report.violation(format!(
                            "run {id}: step {} ran again after its result was committed",
                            step.id
                        ));
                    }
                }
                _ => {
                    foreign_outputs += 1;
                    report.violation(format!(
                        "run {id}: step {} output is no ledger nonce",
                        step.id
                    ));
                }
            }
        }
        if seen.len() != STEPS.len() {
            report.violation(format!(
                "run {id}: {} steps recorded, expected {}",
                seen.len(),
                STEPS.len()
            ));
        }
    }
    let executions: u64 = ledger_map.values().map(|v| v.len() as u64).sum();
    for h in handles {
        h.shutdown().await;
    }
    let stats = endpoint_client.queue("soak").get().await?.stats;
    let stored = stats.queued
        + stats.delayed
        + stats.running
        + stats.waiting
        + stats.completed
        + stats.failed
        + stats.cancelled;
    report.check(stored == runs as u64, || {
        format!("{stored} runs stored for {runs} idempotency keys (expected exactly one each)")
    });
    let starts = server.lock().await.starts;
    report.figure("runs_tried", runs);
    report.figure("start_requests", requests.load(Ordering::Relaxed));
    report.figure(
        "start_requests_failed_retried",
        unknown.load(Ordering::Relaxed),
    );
    report.figure("acknowledged", ids.len());
    report.figure("kill9", kills_done);
    report.figure("server_starts", starts);
    report.figure("completed", completed);
    report.figure("lost", lost);
    report.figure(
        "duplicated_runs",
        duplicate_runs + stored.saturating_sub(runs as u64),
    );
    report.figure("attempts_beyond_first", extra_attempts);
    report.figure("steps_recorded", recorded_steps);
    report.figure("step_body_executions", executions);
    report.figure(
        "reexecuted_without_commit",
        executions.saturating_sub(recorded_steps),
    );
    report.figure("reexecuted_after_commit", after_commit);
    report.figure("duplicate_step_results", dup_step_results);
    report.figure("outputs_not_in_ledger", foreign_outputs);
    report.check(ids.len() == runs, || {
        format!("{} of {runs} starts acknowledged", ids.len())
    });
    Ok(())
}
