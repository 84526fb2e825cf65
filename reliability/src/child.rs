//! The child worker: a separate process the suite can `SIGSTOP` (paused-worker scenario) or
//! that aborts on purpose when it receives a task (poison scenario). It speaks the raw
//! worker protocol and reports on stdout, one line per fact:
//! `CLAIMED <run_id> <lease_token>`, then `WRITE <rpc> <OK|code>` for each late write.

use std::io::Write;
use std::time::Duration;

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::worker_service_client::WorkerServiceClient;

use crate::harness::{dur, req};

/// What the child does with the task it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Waits `--delay-ms` (the suite stops it meanwhile), then tries every worker write
    /// with its now stale lease.
    Paused,
    /// Aborts the process (a handler that crashes its worker).
    Crash,
}

/// Arguments of `child-worker`.
#[derive(clap::Args, Debug)]
pub struct ChildArgs {
    /// Server endpoint.
    #[arg(long)]
    endpoint: String,
    /// Queue to poll.
    #[arg(long)]
    queue: String,
    /// Job to poll for.
    #[arg(long)]
    job: String,
    /// What to do with the task.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Paused mode: how long to wait after claiming before writing.
    #[arg(long, default_value_t = 1500)]
    delay_ms: u64,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the child worker until it has handled one task.
pub async fn run(args: ChildArgs) -> anyhow::Result<()> {
    let mut worker = WorkerServiceClient::connect(args.endpoint.clone()).await?;
    let task = loop {
        let poll = pb::PollTaskRequest {
            worker_id: format!("child-{}", std::process::id()),
            queues: vec![args.queue.clone()],
            jobs: vec![pb::JobSpec {
                name: args.job.clone(),
                lease_timeout: None,
            }],
            max_tasks: 1,
            wait: Some(dur(Duration::from_secs(20))),
        };
        let resp = worker
            .poll_task(req(poll, Duration::from_secs(30), None))
            .await?
            .into_inner();
        if let Some(t) = resp.tasks.into_iter().next() {
            break t;
        }
    };
    say(&format!("CLAIMED {} {}", task.run_id, task.lease_token));
    match args.mode {
        Mode::Crash => std::process::abort(),
        Mode::Paused => {
            tokio::time::sleep(Duration::from_millis(args.delay_ms)).await;
            late_writes(&mut worker, &task).await;
        }
    }
    Ok(())
}

fn outcome<T>(r: Result<tonic::Response<T>, tonic::Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// Every write a worker can make, with the stale lease; each outcome on its own line.
async fn late_writes(worker: &mut WorkerServiceClient<tonic::transport::Channel>, task: &pb::Task) {
    let t = Duration::from_secs(10);
    let (run_id, token) = (task.run_id.clone(), task.lease_token.clone());
    let r = worker
        .heartbeat(req(
            pb::HeartbeatRequest {
                run_id: run_id.clone(),
                lease_token: token.clone(),
            },
            t,
            None,
        ))
        .await;
    say(&format!("WRITE Heartbeat {}", outcome(r)));
    for step in ["s1", "late-step"] {
        let r = worker
            .complete_step(req(
                pb::CompleteStepRequest {
                    run_id: run_id.clone(),
                    lease_token: token.clone(),
                    step_id: step.into(),
                    outcome: Some(pb::complete_step_request::Outcome::Output(
                        br#""from-the-paused-worker""#.to_vec(),
                    )),
                    started_at: None,
                },
                t,
                None,
            ))
            .await;
        say(&format!("WRITE CompleteStep:{step} {}", outcome(r)));
    }
    let r = worker
        .append_logs(req(
            pb::AppendLogsRequest {
                run_id: run_id.clone(),
                lease_token: token.clone(),
                entries: vec![pb::LogEntry {
                    level: pb::LogLevel::Info as i32,
                    message: "late line from the paused worker".into(),
                    ..Default::default()
                }],
            },
            t,
            None,
        ))
        .await;
    say(&format!("WRITE AppendLogs {}", outcome(r)));
    let r = worker
        .suspend_run(req(
            pb::SuspendRunRequest {
                run_id: run_id.clone(),
                lease_token: token.clone(),
                step_id: "late-sleep".into(),
                wait: Some(pb::suspend_run_request::Wait::Sleep(pb::SleepWait {
                    duration: Some(dur(Duration::from_secs(60))),
                    until: None,
                })),
            },
            t,
            None,
        ))
        .await;
    say(&format!("WRITE SuspendRun {}", outcome(r)));
    let r = worker
        .fail_run(req(
            pb::FailRunRequest {
                run_id: run_id.clone(),
                lease_token: token.clone(),
                failure: Some(pb::Failure {
                    message: "late failure from the paused worker".into(),
                    non_retryable: true,
                    ..Default::default()
                }),
            },
            t,
            None,
        ))
        .await;
    say(&format!("WRITE FailRun {}", outcome(r)));
    let r = worker
        .complete_run(req(
            pb::CompleteRunRequest {
                run_id,
                lease_token: token,
                result: br#""from-the-paused-worker""#.to_vec(),
            },
            t,
            None,
        ))
        .await;
    say(&format!("WRITE CompleteRun {}", outcome(r)));
}
