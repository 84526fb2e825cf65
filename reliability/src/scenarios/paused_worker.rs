//! `paused-worker`: a separate worker process claims a run (lease 1 s) and is frozen with
//! SIGSTOP; the lease expires, a second attempt claims the run and completes it; the first
//! worker is resumed with SIGCONT and tries every worker write with its stale lease.
//!
//! Checks: every late write answers FAILED_PRECONDITION (0 accepted), and the run keeps the
//! second attempt's steps and result.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use stackshift_proto::v1 as pb;

use crate::Opts;
use crate::harness::{Db, Raw, Server, ServerSpec, dur, proc_state, req, self_exe, signal};
use crate::report::Report;

/// Figures of one round.
#[derive(Default)]
struct Round {
    writes: u64,
    accepted: u64,
    precondition: u64,
    other: Vec<String>,
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let rounds = opts.size(10usize, 3);
    let db = Db::fresh(opts).await?;
    let server = Server::start(ServerSpec::new(bin, &db)?)?;
    let mut tasks = Vec::new();
    for r in 0..rounds {
        let raw = server.raw()?;
        let endpoint = server.endpoint();
        tasks.push(tokio::spawn(async move { round(r, raw, endpoint).await }));
    }
    let mut total = Round::default();
    for t in tasks {
        match t.await? {
            Ok(r) => {
                total.writes += r.writes;
                total.accepted += r.accepted;
                total.precondition += r.precondition;
                total.other.extend(r.other);
            }
            Err(e) => report.violation(format!("{e:#}")),
        }
    }
    report.figure("rounds", rounds);
    report.figure("late_writes_tried", total.writes);
    report.figure("late_writes_accepted", total.accepted);
    report.figure("late_writes_failed_precondition", total.precondition);
    report.figure("late_writes_other_code", total.other.len());
    report.check(total.accepted == 0, || {
        format!("{} late writes were accepted", total.accepted)
    });
    report.check(total.writes == rounds as u64 * 7, || {
        format!(
            "{} late writes reported, expected {}",
            total.writes,
            rounds * 7
        )
    });
    for o in total.other {
        report.violation(format!(
            "late write answered {o}, expected FailedPrecondition"
        ));
    }
    Ok(())
}

async fn round(r: usize, mut raw: Raw, endpoint: String) -> anyhow::Result<Round> {
    let queue = format!("paused-{r}");
    let t = Duration::from_secs(10);
    let mut child = Command::new(self_exe()?)
        .args([
            "child-worker",
            "--endpoint",
            &endpoint,
            "--queue",
            &queue,
            "--job",
            "paused",
        ])
        .args(["--mode", "paused", "--delay-ms", "1500"])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no child stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = raw
        .jobs
        .start_run(req(
            pb::StartRunRequest {
                job: "paused".into(),
                payload: b"1".to_vec(),
                queue: queue.clone(),
                lease_timeout: Some(dur(Duration::from_secs(1))),
                retry_policy: Some(pb::RetryPolicy {
                    max_attempts: 5,
                    ..Default::default()
                }),
                ..Default::default()
            },
            t,
            None,
        ))
        .await?
        .into_inner();
    let run_id = started.run.map(|r| r.id).unwrap_or_default();
    let claimed = tokio::task::spawn_blocking(move || {
        let line = rx.recv_timeout(Duration::from_secs(30));
        (line, rx)
    })
    .await?;
    let (line, rx) = claimed;
    let line = line.map_err(|_| anyhow::anyhow!("round {r}: the child worker claimed nothing"))?;
    signal(pid, "STOP")?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    anyhow::ensure!(
        parts.len() == 3 && parts[0] == "CLAIMED" && parts[1] == run_id,
        "round {r}: unexpected child line {line:?}"
    );
    let old_token = parts[2].to_owned();
    tokio::time::sleep(Duration::from_millis(50)).await;
    anyhow::ensure!(
        proc_state(pid) == Some('T'),
        "round {r}: the child worker is not stopped"
    );

    // Another worker takes the run over once the lease has expired, and completes it.
    let task = loop {
        let resp = raw
            .worker
            .poll_task(req(
                pb::PollTaskRequest {
                    worker_id: format!("rescuer-{r}"),
                    queues: vec![queue.clone()],
                    jobs: vec![pb::JobSpec {
                        name: "paused".into(),
                        lease_timeout: None,
                    }],
                    max_tasks: 1,
                    wait: Some(dur(Duration::from_secs(10))),
                },
                Duration::from_secs(15),
                None,
            ))
            .await?
            .into_inner();
        if let Some(task) = resp.tasks.into_iter().next() {
            break task;
        }
    };
    anyhow::ensure!(
        task.run_id == run_id && task.attempt >= 2 && task.lease_token != old_token,
        "round {r}: second attempt is attempt {} of {}",
        task.attempt,
        task.run_id
    );
    raw.worker
        .complete_step(req(
            pb::CompleteStepRequest {
                run_id: run_id.clone(),
                lease_token: task.lease_token.clone(),
                step_id: "s1".into(),
                outcome: Some(pb::complete_step_request::Outcome::Output(
                    br#""attempt-2""#.to_vec(),
                )),
                started_at: None,
            },
            t,
            None,
        ))
        .await?;
    raw.worker
        .complete_run(req(
            pb::CompleteRunRequest {
                run_id: run_id.clone(),
                lease_token: task.lease_token.clone(),
                result: br#""attempt-2""#.to_vec(),
            },
            t,
            None,
        ))
        .await?;
    signal(pid, "CONT")?;
    let (lines, status) = tokio::task::spawn_blocking(move || {
        let lines: Vec<String> = rx.iter().collect();
        (lines, child.wait())
    })
    .await?;
    anyhow::ensure!(status?.success(), "round {r}: the child worker failed");
    let mut out = Round::default();
    for l in lines.iter().filter(|l| l.starts_with("WRITE ")) {
        out.writes += 1;
        let code = l.rsplit(' ').next().unwrap_or_default();
        match code {
            "OK" => out.accepted += 1,
            "FailedPrecondition" => out.precondition += 1,
            other => out.other.push(format!("{l} (round {r}, {other})")),
        }
    }
    let run = raw
        .jobs
        .get_run(req(
            pb::GetRunRequest {
                run_id: run_id.clone(),
                wait: None,
            },
            t,
            None,
        ))
        .await?
        .into_inner()
        .run
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    anyhow::ensure!(
        run.status == pb::RunStatus::Completed as i32,
        "round {r}: run is {:?}",
        run.status
    );
    anyhow::ensure!(
        run.result == br#""attempt-2""#,
        "round {r}: result {:?}",
        String::from_utf8_lossy(&run.result)
    );
    let steps: Vec<(&str, &[u8])> = run
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.output.as_slice()))
        .collect();
    anyhow::ensure!(
        steps == vec![("s1", &br#""attempt-2""#[..])],
        "round {r}: steps changed: {steps:?}"
    );
    Ok(out)
}
