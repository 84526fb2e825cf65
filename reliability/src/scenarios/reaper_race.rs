//! `reaper-race`: a completion racing the lease reaper, forced with failpoints (a server
//! built with the cargo feature `failpoints`, `target/debug/stackshift-server-failpoints`;
//! see `server/src/failpoint.rs`). Two configurations:
//!
//! - `complete_run.before_store=1500`: `CompleteRun` passes its checks, then pauses 1.5 s
//!   before writing; the 1 s lease expires and the reaper re-queues the run meanwhile.
//! - `expire_leases.after_select=1500`: the reaper selects expired runs, then pauses 1.5 s
//!   before ending their attempts; completions arrive around the expiry instant.
//!
//! Check, per run: if `CompleteRun` answered OK the run is completed with that result and is
//! never delivered again; otherwise it answered FAILED_PRECONDITION and a later attempt
//! completes the run (a later attempt's completion may be rejected too, but only after its
//! own lease deadline: it can queue behind another round's reaper pause). A completed run is never overwritten (re-queued, failed, re-delivered).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rand::Rng;
use stackshift_proto::v1 as pb;

use crate::Opts;
use crate::harness::{Db, Raw, Server, ServerSpec, code_of, dur, req};
use crate::report::Report;

const T: Duration = Duration::from_secs(10);

/// The failpoint server: `--failpoint-server-bin`, else
/// `target/debug/stackshift-server-failpoints`, (re)built when missing or older than
/// `target/debug/stackshift-server`: `cargo build -p stackshift-server --features failpoints`
/// (only the server crate recompiles), copied aside, then the normal server is rebuilt so
/// that `target/debug/stackshift-server` never contains failpoints.
fn failpoint_binary(opts: &Opts, normal: &Path) -> anyhow::Result<PathBuf> {
    if let Some(b) = &opts.failpoint_server_bin {
        return Ok(b.clone());
    }
    let bin = normal.with_file_name("stackshift-server-failpoints");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&bin).is_some() && mtime(&bin) >= mtime(normal) {
        return Ok(bin);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = |features: bool| -> anyhow::Result<()> {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args(["build", "-p", "stackshift-server"]);
        if features {
            cmd.args(["--features", "failpoints"]);
        }
        anyhow::ensure!(
            cmd.status()?.success(),
            "cargo build -p stackshift-server failed"
        );
        Ok(())
    };
    eprintln!("building {} (cargo feature `failpoints`)", bin.display());
    build(true)?;
    std::fs::copy(normal, &bin)?;
    build(false)?;
    // Newer than the normal binary, so it is reused until the server changes.
    let f = std::fs::File::options().append(true).open(&bin)?;
    f.set_modified(std::time::SystemTime::now())?;
    Ok(bin)
}

/// Milliseconds since the Unix epoch now.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The task's lease deadline in milliseconds since the Unix epoch (0 when absent).
fn deadline_ms(t: &pb::Task) -> i64 {
    t.lease_deadline
        .as_ref()
        .map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    accepted: u32,
    rejected: u32,
}

async fn poll(raw: &mut Raw, queue: &str, wait: Duration) -> anyhow::Result<Option<pb::Task>> {
    let p = pb::PollTaskRequest {
        worker_id: format!("race-{queue}"),
        queues: vec![queue.into()],
        jobs: vec![pb::JobSpec {
            name: "race".into(),
            lease_timeout: None,
        }],
        max_tasks: 1,
        wait: Some(dur(wait)),
    };
    Ok(raw
        .worker
        .poll_task(req(p, wait + T, None))
        .await?
        .into_inner()
        .tasks
        .into_iter()
        .next())
}

async fn complete(raw: &mut Raw, task: &pb::Task, result: &str) -> tonic::Code {
    let r = pb::CompleteRunRequest {
        run_id: task.run_id.clone(),
        lease_token: task.lease_token.clone(),
        result: format!("\"{result}\"").into_bytes(),
    };
    code_of(&raw.worker.complete_run(req(r, T, None)).await)
}

/// One run: claim, complete after `delay`, then check the outcome holds.
/// `finish`: whether a second attempt can complete the run (not when every completion is
/// paused past the lease, as with `complete_run.before_store`).
async fn round(
    mut raw: Raw,
    queue: String,
    delay: Duration,
    finish: bool,
) -> anyhow::Result<(bool, Vec<String>)> {
    let mut bad = Vec::new();
    let start = pb::StartRunRequest {
        job: "race".into(),
        payload: b"1".to_vec(),
        queue: queue.clone(),
        lease_timeout: Some(dur(Duration::from_secs(1))),
        retry_policy: Some(pb::RetryPolicy {
            max_attempts: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = raw
        .jobs
        .start_run(req(start, T, None))
        .await?
        .into_inner()
        .run
        .map(|r| r.id)
        .unwrap_or_default();
    let task = poll(&mut raw, &queue, Duration::from_secs(5))
        .await?
        .ok_or_else(|| anyhow::anyhow!("{queue}: no task"))?;
    tokio::time::sleep(delay).await;
    let c1 = complete(&mut raw, &task, "attempt-1").await;
    let accepted = c1 == tonic::Code::Ok;
    let expect: String = if accepted {
        // Completed: the reaper must not re-queue it; nothing is delivered again.
        if let Some(t) = poll(&mut raw, &queue, Duration::from_secs(3)).await? {
            bad.push(format!(
                "{queue}: completed run {id} delivered again (attempt {})",
                t.attempt
            ));
        }
        "attempt-1".to_owned()
    } else {
        if c1 != tonic::Code::FailedPrecondition {
            bad.push(format!("{queue}: racing CompleteRun answered {c1:?}"));
        }
        // Each rejected completion must be followed by a re-delivery as a later attempt.
        // A later attempt's completion may itself lose a race: its 1 s lease can expire
        // while it waits behind another round's reaper pause (1.5 s inside the SQLite
        // writer), which is the same legitimate outcome; the run has 5 attempts.
        let mut last_attempt = task.attempt;
        let mut won = None;
        while won.is_none() {
            let Some(t) = poll(&mut raw, &queue, Duration::from_secs(10)).await? else {
                bad.push(format!(
                    "{queue}: rejected completion of attempt {last_attempt}, but the run was not delivered again"
                ));
                break;
            };
            if t.attempt <= last_attempt {
                bad.push(format!(
                    "{queue}: re-delivered as attempt {} after attempt {last_attempt}",
                    t.attempt
                ));
            }
            last_attempt = t.attempt;
            if !finish {
                // Re-delivered as a new attempt: the run was not completed by attempt 1.
                return Ok((accepted, bad));
            }
            let result = format!("attempt-{}", t.attempt);
            match complete(&mut raw, &t, &result).await {
                tonic::Code::Ok => won = Some(result),
                tonic::Code::FailedPrecondition if t.attempt < 5 => {
                    // Legitimate only once the lease is over (server and client share
                    // the clock): a completion inside a valid lease must be accepted.
                    if now_ms() < deadline_ms(&t) {
                        bad.push(format!(
                            "{queue}: attempt {}'s CompleteRun was rejected inside its lease",
                            t.attempt
                        ));
                        break;
                    }
                }
                c => {
                    bad.push(format!(
                        "{queue}: attempt {}'s CompleteRun answered {c:?}",
                        t.attempt
                    ));
                    break;
                }
            }
        }
        match won {
            Some(result) => result,
            None => return Ok((accepted, bad)),
        }
    };
    let run = raw
        .jobs
        .get_run(req(
            pb::GetRunRequest {
                run_id: id.clone(),
                wait: None,
            },
            T,
            None,
        ))
        .await?
        .into_inner()
        .run
        .ok_or_else(|| anyhow::anyhow!("no run"))?;
    let result = String::from_utf8_lossy(&run.result)
        .trim_matches('"')
        .to_owned();
    if run.status != pb::RunStatus::Completed as i32 || result != expect {
        bad.push(format!("{queue}: run {id} is status {} with result {result:?}, expected completed with {expect:?}", run.status));
    }
    Ok((accepted, bad))
}

pub async fn run(
    opts: &Opts,
    normal: &Path,
    mut rng: rand::rngs::StdRng,
    report: &mut Report,
) -> anyhow::Result<()> {
    let bin = failpoint_binary(opts, normal)?;
    let rounds = opts.size(20usize, 6);
    for (name, fp, delays, finish) in [
        (
            "store_pause",
            "complete_run.before_store=1500",
            (0u64, 100u64),
            false,
        ),
        (
            "reaper_pause",
            "expire_leases.after_select=1500",
            (850, 1150),
            true,
        ),
    ] {
        let db = Db::fresh(opts).await?;
        let mut spec = ServerSpec::new(&bin, &db)?;
        spec.env.push(("STACKSHIFT_FAILPOINTS".into(), fp.into()));
        let server = Server::start(spec)?;
        // The reaper pause holds the SQLite writer for 1.5 s, longer than the 1 s lease,
        // so concurrent rounds would pause each other's later attempts past their leases
        // over and over: those rounds run one after another. The store pause is outside
        // the writer, so its rounds run together.
        let mut tasks = Vec::new();
        let mut done = Vec::new();
        for r in 0..rounds {
            let delay = Duration::from_millis(rng.random_range(delays.0..=delays.1));
            let task = tokio::spawn(round(
                server.raw()?,
                format!("race-{name}-{r}"),
                delay,
                finish,
            ));
            if finish {
                done.push(task.await??);
            } else {
                tasks.push(task);
            }
        }
        for task in tasks {
            done.push(task.await??);
        }
        let mut t = Tally::default();
        for (accepted, bad) in done {
            if accepted {
                t.accepted += 1
            } else {
                t.rejected += 1
            }
            for b in bad {
                report.violation(b);
            }
        }
        report.figure(&format!("{name}_runs"), rounds);
        report.figure(&format!("{name}_completion_won"), t.accepted);
        report.figure(&format!("{name}_reaper_won"), t.rejected);
        let logs = server.logs();
        report.check(logs.contains("failpoint: pausing"), || format!("{name}: the failpoint never fired (is the server built with --features failpoints?)"));
    }
    Ok(())
}
