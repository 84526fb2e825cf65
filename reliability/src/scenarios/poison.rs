//! `poison`: runs that can never succeed, next to healthy runs on the same queue.
//!
//! - `crash`: the handler crashes its worker process (a child worker that aborts when it
//!   receives the task); the lease expires each time.
//! - `big-step`: a step returns more than the server's payload limit.
//! - `decode`: the payload does not decode into the handler's type.
//! - a payload that is not JSON at all is refused at start.
//!
//! Checks: attempts stop at the retry policy's maximum (or at 1 for non-retryable errors),
//! each run fails with an error that names the cause, and every healthy run completes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stackshift::{JobContext, RetryPolicy, RunStatus, StartOptions, Worker};
use stackshift_proto::v1 as pb;

use crate::Opts;
use crate::harness::{Db, Server, ServerSpec, req, self_exe};
use crate::report::Report;

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let healthy = opts.size(500usize, 60);
    let db = Db::fresh(opts).await?;
    let server = Server::start(ServerSpec::new(bin, &db)?.args(["--max-payload-bytes", "65536"]))?;
    let client = server.client(None)?;
    let worker = Worker::builder(server.client(None)?)
        .queues(["poison"])
        .concurrency(10)
        .poll_wait(Duration::from_secs(5))
        .shutdown_grace(Duration::from_secs(2))
        .job("ok", |ctx: JobContext<u64>| async move {
            let v: u64 = ctx
                .step
                .run("double", || async move { anyhow::Ok(ctx.payload * 2) })
                .await?;
            Ok(v)
        })
        .job("big-step", |ctx: JobContext<u64>| async move {
            let s: String = ctx
                .step
                .run("huge", || async { anyhow::Ok("x".repeat(100_000)) })
                .await?;
            Ok(s.len())
        })
        .job(
            "decode",
            |ctx: JobContext<u64>| async move { Ok(ctx.payload) },
        )
        .build()
        .start();
    let policy = || {
        RetryPolicy::new()
            .max_attempts(3)
            .initial_interval(Duration::from_millis(100))
            .maximum_interval(Duration::from_millis(200))
    };
    let opts_q = || {
        StartOptions::new()
            .queue_name("poison")
            .retry_policy(policy())
    };
    let crash = client
        .start("crash", 1, opts_q().lease_timeout(Duration::from_secs(1)))
        .await?
        .id;
    let big = client.start("big-step", 1, opts_q()).await?.id;
    let decode = client.start("decode", "not a number", opts_q()).await?.id;
    let mut ok_ids = Vec::new();
    for i in 0..healthy {
        ok_ids.push(client.start("ok", i as u64, opts_q()).await?.id);
    }

    // The crashing handler: a worker process per attempt, each aborting on its task.
    let mut crashes = 0u32;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if client.get_run(&crash).await?.is_final() {
            break;
        }
        let mut child = Command::new(self_exe()?)
            .args([
                "child-worker",
                "--endpoint",
                &server.endpoint(),
                "--queue",
                "poison",
                "--job",
                "crash",
                "--mode",
                "crash",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let out = tokio::task::spawn_blocking(move || {
            // Bounded: a child that finds no task polls for 20 s, then exits 0 with no task.
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break child.wait_with_output();
                }
                if start.elapsed() > Duration::from_secs(8) {
                    let _ = child.kill();
                    break child.wait_with_output();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await??;
        if String::from_utf8_lossy(&out.stdout).starts_with("CLAIMED") && !out.status.success() {
            crashes += 1;
        }
    }

    let wait = |id: String| {
        let c = client.clone();
        async move { c.wait_for_run(&id, Duration::from_secs(120)).await }
    };
    let crash_run = wait(crash).await?;
    let big_run = wait(big).await?;
    let decode_run = wait(decode).await?;
    let mut ok_done = 0usize;
    for id in ok_ids {
        if wait(id).await?.status == RunStatus::Completed {
            ok_done += 1;
        }
    }
    worker.shutdown().await;

    // A payload that is not JSON is refused at the door.
    let mut raw = server.raw()?;
    let bad = raw
        .jobs
        .start_run(req(
            pb::StartRunRequest {
                job: "ok".into(),
                payload: vec![0xff, 0xfe, b'{'],
                queue: "poison".into(),
                ..Default::default()
            },
            Duration::from_secs(10),
            None,
        ))
        .await;
    let bad_code = bad.map_or_else(|s| s.code(), |_| tonic::Code::Ok);

    let msg = |r: &stackshift::Run| {
        r.failure
            .as_ref()
            .map(|f| f.message.clone())
            .unwrap_or_default()
    };
    report.figure("crash_attempts", crash_run.attempt);
    report.figure("crash_worker_processes_killed", crashes);
    report.figure("crash_error", msg(&crash_run));
    report.figure("big_step_attempts", big_run.attempt);
    report.figure("big_step_error", msg(&big_run));
    report.figure("decode_attempts", decode_run.attempt);
    report.figure("decode_error", msg(&decode_run));
    report.figure("non_json_payload_code", format!("{bad_code:?}"));
    report.figure("healthy_runs", healthy);
    report.figure("healthy_completed", ok_done);
    report.check(
        crash_run.status == RunStatus::Failed && crash_run.attempt == 3 && crashes == 3,
        || {
            format!(
                "crash run: {:?} after {} attempts, {crashes} crashes (expected failed after 3)",
                crash_run.status, crash_run.attempt
            )
        },
    );
    report.check(msg(&crash_run).contains("lease"), || {
        format!(
            "crash run error does not name the lease: {:?}",
            msg(&crash_run)
        )
    });
    report.check(
        big_run.status == RunStatus::Failed && (1..=3).contains(&big_run.attempt),
        || {
            format!(
                "big-step run: {:?} after {} attempts",
                big_run.status, big_run.attempt
            )
        },
    );
    let big_msg = msg(&big_run).to_lowercase();
    report.check(
        big_msg.contains("limit") || big_msg.contains("bytes") || big_msg.contains("large"),
        || format!("big-step error does not name the size limit: {big_msg:?}"),
    );
    report.check(
        decode_run.status == RunStatus::Failed && decode_run.attempt == 1,
        || {
            format!(
                "decode run: {:?} after {} attempts (expected failed after 1)",
                decode_run.status, decode_run.attempt
            )
        },
    );
    report.check(msg(&decode_run).to_lowercase().contains("payload"), || {
        format!(
            "decode error does not name the payload: {:?}",
            msg(&decode_run)
        )
    });
    report.check(bad_code == tonic::Code::InvalidArgument, || {
        format!("non-JSON payload answered {bad_code:?}")
    });
    report.check(ok_done == healthy, || {
        format!("{ok_done} of {healthy} healthy runs completed")
    });
    Ok(())
}
