//! `clock`: the server runs under libfaketime (`LD_PRELOAD`, `DONT_FAKE_MONOTONIC=1`,
//! offset read from a file on every call) and its wall clock jumps while timers are due:
//! first forward by an hour, then back by an hour.
//!
//! In each phase the scenario starts a durable sleep, an event wait that times out, a
//! delayed run and a lock with a TTL, all due `D` seconds later, then jumps the server's
//! wall clock. Checks: no timer fires before `D` (real, monotonic time measured here, in an
//! unfaked process), every one fires within `D` + tolerance, the lock is not free before
//! its TTL and is free after it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stackshift::{JobContext, RunStatus, StartOptions, WaitResult, Worker};
use stackshift_proto::v1 as pb;

use crate::Opts;
use crate::harness::{Db, Server, ServerSpec, dur, req};
use crate::report::Report;

/// Where Debian/Ubuntu's `faketime` package puts the preload library.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// The due time of every timer.
const D: Duration = Duration::from_secs(6);
/// How late a timer may fire (timer loop tick, poll, scheduling on a shared CI machine).
const TOLERANCE: Duration = Duration::from_secs(4);
/// How long after starting the timers the clock jumps.
const JUMP_AFTER: Duration = Duration::from_secs(2);
const T: Duration = Duration::from_secs(10);

/// The preload library: `STACKSHIFT_LIBFAKETIME` or the Debian path.
fn libfaketime() -> anyhow::Result<PathBuf> {
    let p = std::env::var("STACKSHIFT_LIBFAKETIME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(LIBFAKETIME));
    anyhow::ensure!(
        p.exists(),
        "{} is missing: install libfaketime (apt-get install -y faketime) or set \
         STACKSHIFT_LIBFAKETIME",
        p.display()
    );
    Ok(p)
}

/// Sets the server's wall-clock offset (seconds; read by libfaketime on every call).
fn set_offset(file: &Path, secs: i64) -> anyhow::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{secs:+}\n"))?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let lib = libfaketime()?;
    let db = Db::fresh(opts).await?;
    let offset_file = db.dir.path().join("faketime.rc");
    set_offset(&offset_file, 0)?;
    let mut spec = ServerSpec::new(bin, &db)?;
    spec.env.extend([
        ("LD_PRELOAD".to_string(), lib.display().to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_string(),
            offset_file.display().to_string(),
        ),
        ("FAKETIME_NO_CACHE".to_string(), "1".to_string()),
        ("DONT_FAKE_MONOTONIC".to_string(), "1".to_string()),
    ]);
    let server = Server::start(spec)?;
    let client = server.client(None)?;
    let worker = Worker::builder(server.client(None)?)
        .queues(["clock"])
        .concurrency(8)
        .poll_wait(Duration::from_secs(5))
        .shutdown_grace(Duration::from_secs(2))
        .job("sleep", |ctx: JobContext<u64>| async move {
            ctx.step
                .sleep("nap", Duration::from_millis(ctx.payload))
                .await?;
            Ok(())
        })
        .job("wait", |ctx: JobContext<u64>| async move {
            let r = ctx
                .step
                .wait_for_event(
                    "never",
                    "clock.never",
                    "none",
                    Duration::from_millis(ctx.payload),
                )
                .await?;
            Ok(matches!(r, WaitResult::TimedOut))
        })
        .job("noop", |_ctx: JobContext<u64>| async move { Ok(()) })
        .build()
        .start();
    let mut raw = server.raw()?;
    let d_ms = D.as_millis() as u64;
    let q = || StartOptions::new().queue_name("clock");

    // Phase 1: +1 h. Phase 2 (offset +1 h at start): back to 0, i.e. -1 h.
    let mut fired_early = 0u32;
    let mut fired_late = 0u32;
    let mut worst_late_ms = 0i64;
    for (phase, from, to) in [("forward", 0i64, 3600i64), ("backward", 3600, 0)] {
        set_offset(&offset_file, from)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        let sleep_id = client.start("sleep", d_ms, q()).await?.id;
        let wait_id = client.start("wait", d_ms, q()).await?.id;
        let delayed_id = client.start("noop", 0u64, q().delay(D)).await?.id;
        let key = format!("clock-lock-{phase}");
        let lock = raw
            .state
            .acquire_lock(req(
                pb::AcquireLockRequest {
                    key: key.clone(),
                    ttl: Some(dur(D)),
                    ..Default::default()
                },
                T,
                None,
            ))
            .await?
            .into_inner();
        anyhow::ensure!(lock.granted, "{phase}: the lock was not granted");
        tokio::time::sleep(JUMP_AFTER.saturating_sub(t0.elapsed())).await;
        set_offset(&offset_file, to)?;
        report.figure(&format!("{phase}_jump_s"), to - from);

        // Right after the jump, well before D: the lock is still held.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = raw
            .state
            .acquire_lock(req(
                pb::AcquireLockRequest {
                    key: key.clone(),
                    ttl: Some(dur(D)),
                    ..Default::default()
                },
                T,
                None,
            ))
            .await?
            .into_inner();
        let early_check = t0.elapsed() < D;
        if early_check && again.granted {
            fired_early += 1;
        }
        report.check(!early_check || !again.granted, || {
            format!(
                "{phase}: the lock (TTL {D:?}) was free after {:?}",
                t0.elapsed()
            )
        });

        // Every run finishes no earlier than D and no later than D + tolerance.
        let mut ends = Vec::new();
        for (what, id) in [
            ("sleep", &sleep_id),
            ("wait timeout", &wait_id),
            ("delayed run", &delayed_id),
        ] {
            let run = client.wait_for_run(id, D + TOLERANCE + T).await?;
            ends.push((what, run.status, t0.elapsed(), run.result));
        }
        for (what, status, took, output) in ends {
            report.check(status == RunStatus::Completed, || {
                format!("{phase}: the {what} run ended {status:?}")
            });
            if took < D {
                fired_early += 1;
            }
            report.check(took >= D, || {
                format!("{phase}: the {what} fired early, after {took:?} (due after {D:?})")
            });
            let late = took.as_millis() as i64 - D.as_millis() as i64;
            worst_late_ms = worst_late_ms.max(late);
            if took > D + TOLERANCE {
                fired_late += 1;
            }
            report.check(took <= D + TOLERANCE, || {
                format!("{phase}: the {what} fired late, after {took:?} (due after {D:?})")
            });
            if what == "wait timeout" {
                report.check(output == Some(serde_json::json!(true)), || {
                    format!("{phase}: the wait did not time out: {output:?}")
                });
            }
        }

        // Past the TTL (measured in real time), the lock is free again.
        tokio::time::sleep((D + Duration::from_millis(500)).saturating_sub(t0.elapsed())).await;
        let after = raw
            .state
            .acquire_lock(req(
                pb::AcquireLockRequest {
                    key: key.clone(),
                    ttl: Some(dur(Duration::from_secs(1))),
                    ..Default::default()
                },
                T,
                None,
            ))
            .await?
            .into_inner();
        if !after.granted {
            fired_late += 1;
        }
        report.check(after.granted, || {
            format!(
                "{phase}: the lock (TTL {D:?}) was still held after {:?}",
                t0.elapsed()
            )
        });
    }
    worker.shutdown().await;
    set_offset(&offset_file, 0)?;
    report.figure("due_after_ms", d_ms);
    report.figure("tolerance_ms", TOLERANCE.as_millis() as u64);
    report.figure("timers_fired_early", fired_early);
    report.figure("timers_late_or_dropped", fired_late);
    report.figure("worst_lateness_ms", worst_late_ms);
    Ok(())
}
