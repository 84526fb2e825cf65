//! `kill -9` of the server during a workload: every acknowledged start completes, no step
//! has two recorded results, and step bodies re-run only where no result was recorded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stackshift::{
    ClientOptions, JobContext, JobOptions, RunStatus, StackShift, StartOptions, Worker,
};
use support::{Db, TestServer};

const RUNS: usize = 300;

async fn kill9_during_a_workload(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let c = StackShift::new(ClientOptions::new(s.endpoint())).unwrap();
    // Side-effect ledger outside the engine: (run, step) -> executions.
    let ledger: Arc<Mutex<HashMap<(String, String), usize>>> = Arc::default();
    let l = ledger.clone();
    let worker = Worker::builder(c.clone())
        .concurrency(16)
        .job_with_options(
            "crash3",
            JobOptions::default().lease_timeout(Duration::from_secs(3)),
            move |ctx: JobContext<Value>| {
                let l = l.clone();
                async move {
                    let mut total = 0;
                    for step in ["one", "two", "three"] {
                        let (l, run) = (l.clone(), ctx.run_id.clone());
                        total += ctx
                            .step
                            .run(step, || async move {
                                *l.lock().unwrap().entry((run, step.to_owned())).or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                anyhow::Ok(1)
                            })
                            .await?;
                    }
                    Ok(json!({ "steps": total }))
                }
            },
        )
        .build()
        .start();

    // Start runs from 6 concurrent clients; an unacknowledged start is retried with the
    // same idempotency key, so retries never create a second run.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut starters = Vec::new();
    for p in 0..6 {
        let (c, acked) = (c.clone(), acked.clone());
        starters.push(tokio::spawn(async move {
            for i in (p..RUNS).step_by(6) {
                let opts = || StartOptions::default().idempotency_key(format!("crash:{i}"));
                loop {
                    match c.start("crash3", &json!({ "i": i }), opts()).await {
                        Ok(r) => {
                            acked.lock().unwrap().push(r.id);
                            break;
                        }
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("start failed: {e}"),
                    }
                }
            }
        }));
    }
    // Two crashes at different moments of the workload.
    for wait_for in [RUNS / 4, RUNS * 3 / 4] {
        let t = Instant::now();
        while acked.lock().unwrap().len() < wait_for && t.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.restart();
    }
    for h in starters {
        h.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert_eq!(acked.len(), RUNS, "each logical start maps to one run");

    let mut reexecuted = 0;
    for id in &acked {
        let run = c.wait_for_run(id, Duration::from_secs(120)).await.unwrap();
        assert_eq!(
            run.status,
            RunStatus::Completed,
            "run {id}: {run:?}\n{}",
            s.log()
        );
        assert_eq!(run.result, Some(json!({ "steps": 3 })));
        let ids: Vec<&str> = run.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), 3, "run {id} has {ids:?}");
        assert_eq!(
            ids.iter().collect::<HashSet<_>>().len(),
            3,
            "one result per step"
        );
        let ledger = ledger.lock().unwrap();
        for step in ["one", "two", "three"] {
            let n = ledger
                .get(&(id.clone(), step.to_owned()))
                .copied()
                .unwrap_or(0);
            assert!(n >= 1, "run {id} step {step} never executed");
            reexecuted += n - 1;
        }
    }
    worker.shutdown().await;
    eprintln!(
        "{db:?}: {RUNS} runs, 2 kill -9, all completed; step bodies re-executed {reexecuted} times \
         (only steps in flight when the server died)"
    );
    // Re-executions are bounded by what can be in flight: 16 slots per crash.
    assert!(
        reexecuted <= 2 * 16 * 3,
        "re-executed {reexecuted} step bodies"
    );
}
both_stores!(kill9_during_a_workload);
