//! `counters`: concurrent callers increment one counter while the server is killed with
//! SIGKILL at random moments. Each increment is classified by its answer: acknowledged (OK),
//! unknown (connection failed or deadline passed: it may or may not have been applied), or
//! rejected (any other code; there should be none).
//!
//! Check: acknowledged <= final value <= acknowledged + unknown.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use stackshift_proto::v1 as pb;
use tokio::sync::Mutex;

use super::{Kills, spawn_killer};
use crate::Opts;
use crate::harness::{Db, Server, ServerSpec, outcome_unknown, req};
use crate::report::Report;

pub async fn run(
    opts: &Opts,
    bin: &Path,
    rng: rand::rngs::StdRng,
    report: &mut Report,
) -> anyhow::Result<()> {
    let kills = opts.size(20u32, 5);
    let callers = opts.size(16usize, 8);
    let db = Db::fresh(opts).await?;
    let server = Server::start(ServerSpec::new(bin, &db)?)?;
    let (acked, unknown, rejected) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..callers {
        // Half the callers share a connection, half have their own.
        let mut raw = server.raw()?;
        let (acked, unknown, rejected, stop) = (
            acked.clone(),
            unknown.clone(),
            rejected.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = raw
                    .state
                    .increment_state(req(
                        pb::IncrementStateRequest {
                            key: "ctr".into(),
                            by: Some(1),
                            ..Default::default()
                        },
                        Duration::from_secs(2),
                        None,
                    ))
                    .await;
                match r {
                    Ok(_) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) if outcome_unknown(s.code()) => {
                        unknown.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(s) => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                        codes.push(format!("caller {i}: {:?} {}", s.code(), s.message()));
                    }
                }
            }
            codes
        }));
    }
    let server = Arc::new(Mutex::new(server));
    let kills_done = spawn_killer(
        server.clone(),
        Kills {
            count: kills,
            gap_ms: (300, 1200),
            outage_ms: (0, 1000),
        },
        rng,
    )
    .await??;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        for c in t.await?.into_iter().take(5) {
            report.violation(format!("increment rejected: {c}"));
        }
    }
    let mut raw = server.lock().await.raw()?;
    let entry = raw
        .state
        .get_state(req(
            pb::GetStateRequest {
                key: "ctr".into(),
                run: None,
            },
            Duration::from_secs(10),
            None,
        ))
        .await?
        .into_inner()
        .entry;
    let value: u64 = entry
        .and_then(|e| serde_json::from_slice::<u64>(&e.value).ok())
        .unwrap_or(0);
    let (a, u) = (
        acked.load(Ordering::Relaxed),
        unknown.load(Ordering::Relaxed),
    );
    report.figure("kill9", kills_done);
    report.figure("increments_tried", a + u + rejected.load(Ordering::Relaxed));
    report.figure("acknowledged", a);
    report.figure("unknown_outcome", u);
    report.figure("rejected", rejected.load(Ordering::Relaxed));
    report.figure("final_value", value);
    report.figure("lost", a.saturating_sub(value));
    report.figure("applied_from_unknown", value.saturating_sub(a));
    report.check(a <= value, || {
        format!("lost increments: {a} acknowledged, final value {value}")
    });
    report.check(value <= a + u, || {
        format!("phantom increments: final {value} > {a} acknowledged + {u} unknown")
    });
    report.check(kills_done > 0 && a > 0, || {
        "no kills or no acknowledged increments".into()
    });
    Ok(())
}
