//! `history-limits`: runs driven past every per-run history cap, on a server started with
//! low caps (`--max-steps-per-run 20`, `--max-timeline-entries 15`,
//! `--max-payload-bytes 65536`; the log cap is fixed at 1,000 lines).
//!
//! - steps: Rust SDK handlers that loop over steps forever, next to healthy runs on the same
//!   queue; and a raw worker that records 20 entries, replays one, then asks for entry 21.
//! - timeline: a run with more transitions than the cap.
//! - logs: 1,100 lines appended to one run.
//! - sizes: a payload, a step output and a run result over `--max-payload-bytes`.
//!
//! Checks: each looping run fails after exactly one attempt with `StepLimitExceeded` and
//! exactly 20 journal entries (no loop, no retry); every healthy run completes; the raw
//! refusal is `RESOURCE_EXHAUSTED` with reason `STEP_LIMIT` and a message naming the flag,
//! while the replay passes; the timeline holds 15 entries, one `TIMELINE_TRUNCATED` marker
//! and `COMPLETED`; the logs hold 1,000 lines and one truncation marker; oversized values
//! are refused with `RESOURCE_EXHAUSTED` and nothing of them is stored.

use std::path::Path;
use std::time::{Duration, Instant};

use stackshift::{JobContext, RetryPolicy, StartOptions, Worker};
use stackshift_proto::v1 as pb;
use tonic::Code;

use crate::Opts;
use crate::harness::{Db, Raw, Server, ServerSpec, code_of, dur, req};
use crate::report::Report;

const T: Duration = Duration::from_secs(10);
const MAX_STEPS: usize = 20;
const MAX_TIMELINE: usize = 15;
const MAX_PAYLOAD: usize = 65_536;
const QUEUE: &str = "history";

async fn get(raw: &mut Raw, id: &str) -> anyhow::Result<pb::Run> {
    raw.jobs
        .get_run(req(
            pb::GetRunRequest {
                run_id: id.into(),
                wait: None,
            },
            T,
            None,
        ))
        .await?
        .into_inner()
        .run
        .ok_or_else(|| anyhow::anyhow!("GetRun without a run"))
}

/// Waits until run `id` is final (or 60 s passed) and returns it.
async fn wait_final(raw: &mut Raw, id: &str) -> anyhow::Result<pb::Run> {
    let t = Instant::now();
    loop {
        let run = raw
            .jobs
            .get_run(req(
                pb::GetRunRequest {
                    run_id: id.into(),
                    wait: Some(dur(Duration::from_secs(5))),
                },
                T + Duration::from_secs(5),
                None,
            ))
            .await?
            .into_inner()
            .run
            .ok_or_else(|| anyhow::anyhow!("GetRun without a run"))?;
        let done = [
            pb::RunStatus::Completed,
            pb::RunStatus::Failed,
            pb::RunStatus::Cancelled,
        ]
        .iter()
        .any(|s| *s as i32 == run.status);
        if done || t.elapsed() > Duration::from_secs(60) {
            return Ok(run);
        }
    }
}

/// Starts a run of `job` on the scenario's queue and claims it with a raw poll.
async fn raw_task(raw: &mut Raw, job: &str) -> anyhow::Result<(String, String)> {
    let run = raw
        .jobs
        .start_run(req(
            pb::StartRunRequest {
                job: job.into(),
                queue: "raw".into(),
                payload: b"{}".to_vec(),
                ..Default::default()
            },
            T,
            None,
        ))
        .await?
        .into_inner()
        .run
        .ok_or_else(|| anyhow::anyhow!("StartRun without a run"))?;
    let task = raw
        .worker
        .poll_task(req(
            pb::PollTaskRequest {
                worker_id: "raw-worker".into(),
                queues: vec!["raw".into()],
                jobs: vec![pb::JobSpec {
                    name: job.into(),
                    lease_timeout: None,
                }],
                max_tasks: 1,
                wait: Some(dur(Duration::from_secs(5))),
            },
            T,
            None,
        ))
        .await?
        .into_inner()
        .tasks
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no task for {job}"))?;
    anyhow::ensure!(task.run_id == run.id, "claimed another run");
    Ok((run.id, task.lease_token))
}

fn step(run: &str, token: &str, id: &str, output: Vec<u8>) -> pb::CompleteStepRequest {
    pb::CompleteStepRequest {
        run_id: run.into(),
        lease_token: token.into(),
        step_id: id.into(),
        outcome: Some(pb::complete_step_request::Outcome::Output(output)),
        started_at: None,
    }
}

fn timeline_kinds(run: &pb::Run) -> Vec<pb::TimelineEntryKind> {
    run.timeline
        .iter()
        .map(|t| pb::TimelineEntryKind::try_from(t.kind).unwrap_or_default())
        .collect()
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let loopers = opts.size(200usize, 20);
    let healthy = opts.size(500usize, 40);
    let db = Db::fresh(opts).await?;
    let server = Server::start(ServerSpec::new(bin, &db)?.args([
        "--max-steps-per-run".to_owned(),
        MAX_STEPS.to_string(),
        "--max-timeline-entries".to_owned(),
        MAX_TIMELINE.to_string(),
        "--max-payload-bytes".to_owned(),
        MAX_PAYLOAD.to_string(),
    ]))?;
    let mut raw = server.raw()?;

    // 1. Steps through the SDK: loopers next to healthy runs.
    let client = server.client(None)?;
    let worker = Worker::builder(server.client(None)?)
        .queues([QUEUE])
        .concurrency(20)
        .poll_wait(Duration::from_secs(5))
        .shutdown_grace(Duration::from_secs(2))
        .job("loop", |ctx: JobContext<u64>| async move {
            for i in 0..100_000u64 {
                ctx.step
                    .run(&format!("s{i}"), || async move { anyhow::Ok(i) })
                    .await?;
            }
            Err::<u64, _>(anyhow::anyhow!(
                "the step limit never stopped this handler (payload {})",
                ctx.payload
            ))
        })
        .job("healthy", |ctx: JobContext<u64>| async move {
            for i in 0..5u64 {
                ctx.step
                    .run(&format!("s{i}"), || async move { anyhow::Ok(i) })
                    .await?;
            }
            anyhow::Ok(ctx.payload)
        })
        .build()
        .start();
    let start_opts = || {
        StartOptions::new().queue_name(QUEUE).retry_policy(
            RetryPolicy::new()
                .max_attempts(5)
                .initial_interval(Duration::from_millis(50)),
        )
    };
    let mut loop_ids = Vec::new();
    let mut ok_ids = Vec::new();
    for i in 0..loopers.max(healthy) {
        if i < loopers {
            loop_ids.push(client.start("loop", i as u64, start_opts()).await?.id);
        }
        if i < healthy {
            ok_ids.push(client.start("healthy", i as u64, start_opts()).await?.id);
        }
    }
    let (mut loop_failed, mut loop_extra_attempts, mut loop_over_cap, mut lost) = (0, 0, 0, 0);
    for id in &loop_ids {
        let run = wait_final(&mut raw, id).await?;
        let failure = run.failure.clone().unwrap_or_default();
        if run.status == pb::RunStatus::Failed as i32 && failure.r#type == "StepLimitExceeded" {
            loop_failed += 1;
        } else if run.status != pb::RunStatus::Failed as i32 {
            lost += 1;
        }
        loop_extra_attempts += run.attempt.saturating_sub(1);
        if run.steps.len() != MAX_STEPS {
            loop_over_cap += 1;
            report.violation(format!(
                "looping run {id} recorded {} journal entries (cap {MAX_STEPS})",
                run.steps.len()
            ));
        }
    }
    let mut ok_done = 0;
    for id in &ok_ids {
        let run = wait_final(&mut raw, id).await?;
        if run.status == pb::RunStatus::Completed as i32 {
            ok_done += 1;
        } else {
            lost += 1;
        }
    }
    worker.shutdown().await;
    report.figure("tried", loopers + healthy);
    report.figure("looping_runs", loopers);
    report.figure("looping_failed_step_limit", loop_failed);
    report.figure("looping_attempts_beyond_first", loop_extra_attempts);
    report.figure("looping_journals_not_at_cap", loop_over_cap);
    report.figure("healthy_runs", healthy);
    report.figure("healthy_completed", ok_done);
    report.figure("lost", lost);
    report.check(loop_failed == loopers, || {
        format!("{loop_failed}/{loopers} looping runs failed with StepLimitExceeded")
    });
    report.check(loop_extra_attempts == 0, || {
        format!("looping runs were retried {loop_extra_attempts} times after the step limit")
    });
    report.check(ok_done == healthy, || {
        format!("{ok_done}/{healthy} healthy runs completed")
    });

    // 2. Steps through the raw protocol: the exact refusal.
    let (id, token) = raw_task(&mut raw, "raw-steps").await?;
    let mut duplicated = 0;
    for i in 0..MAX_STEPS {
        let out = raw
            .worker
            .complete_step(req(
                step(&id, &token, &format!("s{i}"), b"1".to_vec()),
                T,
                None,
            ))
            .await?
            .into_inner();
        if out.already_recorded {
            duplicated += 1;
        }
    }
    let replay = raw
        .worker
        .complete_step(req(step(&id, &token, "s0", b"1".to_vec()), T, None))
        .await;
    let replay_ok = matches!(&replay, Ok(r) if r.get_ref().already_recorded);
    let over = raw
        .worker
        .complete_step(req(step(&id, &token, "over", b"1".to_vec()), T, None))
        .await;
    let (code, reason, message) = match &over {
        Ok(_) => (Code::Ok, String::new(), String::new()),
        Err(s) => (
            s.code(),
            s.metadata()
                .get("stackshift-error-reason")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            s.message().to_owned(),
        ),
    };
    let run = get(&mut raw, &id).await?;
    report.figure("duplicated", duplicated);
    report.figure("step_limit_code", format!("{code:?}"));
    report.figure("step_limit_reason", reason.clone());
    report.figure("replay_at_cap_accepted", replay_ok);
    report.check(duplicated == 0, || {
        format!("{duplicated} new steps reported as replays")
    });
    report.check(replay_ok, || {
        format!("a replay at the cap was refused: {replay:?}")
    });
    report.check(
        code == Code::ResourceExhausted
            && reason == "STEP_LIMIT"
            && message.contains("--max-steps-per-run"),
        || {
            format!(
                "entry {} answered {code:?} {reason:?} {message:?}",
                MAX_STEPS + 1
            )
        },
    );
    report.check(
        run.status == pb::RunStatus::Failed as i32
            && run
                .failure
                .as_ref()
                .is_some_and(|f| f.r#type == "StepLimitExceeded")
            && run.steps.len() == MAX_STEPS,
        || format!("raw run after the refusal: {run:?}"),
    );

    // 3. Timeline: created + attempt_started + 16 steps + completed > 15.
    let (id, token) = raw_task(&mut raw, "raw-timeline").await?;
    for i in 0..16 {
        raw.worker
            .complete_step(req(
                step(&id, &token, &format!("s{i}"), b"1".to_vec()),
                T,
                None,
            ))
            .await?;
    }
    raw.worker
        .complete_run(req(
            pb::CompleteRunRequest {
                run_id: id.clone(),
                lease_token: token.clone(),
                result: b"1".to_vec(),
            },
            T,
            None,
        ))
        .await?;
    let run = get(&mut raw, &id).await?;
    let kinds = timeline_kinds(&run);
    use pb::TimelineEntryKind as K;
    let markers = kinds.iter().filter(|k| **k == K::TimelineTruncated).count();
    report.figure("timeline_entries", kinds.len());
    report.figure("timeline_markers", markers);
    report.check(
        kinds.len() == MAX_TIMELINE + 2
            && kinds.get(MAX_TIMELINE) == Some(&K::TimelineTruncated)
            && kinds.last() == Some(&K::Completed)
            && markers == 1
            && run.steps.len() == 16,
        || {
            format!(
                "timeline past the cap: {kinds:?}, {} steps",
                run.steps.len()
            )
        },
    );

    // 4. Logs: 1,100 lines, in two requests.
    let (id, token) = raw_task(&mut raw, "raw-logs").await?;
    let lines = |n: usize| {
        (0..n)
            .map(|i| pb::LogEntry {
                level: pb::LogLevel::Info as i32,
                message: format!("line {i}"),
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    let (mut accepted, mut dropped) = (0, 0);
    for n in [600, 500] {
        let out = raw
            .worker
            .append_logs(req(
                pb::AppendLogsRequest {
                    run_id: id.clone(),
                    lease_token: token.clone(),
                    entries: lines(n),
                },
                T,
                None,
            ))
            .await?
            .into_inner();
        accepted += out.accepted;
        dropped += out.dropped;
    }
    let run = get(&mut raw, &id).await?;
    let log_markers = run.logs.iter().filter(|l| l.truncated).count();
    report.figure("log_lines_accepted", accepted);
    report.figure("log_lines_dropped", dropped);
    report.figure("log_markers", log_markers);
    report.check(
        accepted == 1_000 && dropped == 100 && log_markers == 1 && run.logs.len() == 1_001,
        || {
            format!(
                "logs past the cap: {accepted} accepted, {dropped} dropped, {log_markers} \
                 markers, {} stored",
                run.logs.len()
            )
        },
    );

    // 5. Sizes: payload, step output and result over --max-payload-bytes.
    let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD)).into_bytes();
    let payload_code = code_of(
        &raw.jobs
            .start_run(req(
                pb::StartRunRequest {
                    job: "raw-size".into(),
                    queue: "raw".into(),
                    payload: big.clone(),
                    ..Default::default()
                },
                T,
                None,
            ))
            .await,
    );
    let (id, token) = raw_task(&mut raw, "raw-size").await?;
    let output_code = code_of(
        &raw.worker
            .complete_step(req(step(&id, &token, "big", big.clone()), T, None))
            .await,
    );
    let result_code = code_of(
        &raw.worker
            .complete_run(req(
                pb::CompleteRunRequest {
                    run_id: id.clone(),
                    lease_token: token.clone(),
                    result: big,
                },
                T,
                None,
            ))
            .await,
    );
    let run = get(&mut raw, &id).await?;
    report.figure("oversized_payload_code", format!("{payload_code:?}"));
    report.figure("oversized_output_code", format!("{output_code:?}"));
    report.figure("oversized_result_code", format!("{result_code:?}"));
    report.check(
        [payload_code, output_code, result_code]
            .iter()
            .all(|c| *c == Code::ResourceExhausted),
        || format!("oversized values answered {payload_code:?} {output_code:?} {result_code:?}"),
    );
    report.check(
        run.steps.is_empty() && run.status == pb::RunStatus::Running as i32,
        || {
            format!(
                "oversized writes left a trace: {} steps, status {}",
                run.steps.len(),
                run.status
            )
        },
    );
    Ok(())
}
