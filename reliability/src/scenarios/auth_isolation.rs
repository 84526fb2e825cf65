//! `auth`, part 2: namespace isolation. Namespace `beta` probes every kind of object of
//! namespace `alpha`: runs (get, wait, watch, cancel, retry, list, poll, worker writes with
//! alpha's lease token), state (get, list, delete, set), locks (release and extend with
//! alpha's fencing token), events and queues (list, pause), and key management.

use std::time::Duration;

use stackshift_proto::v1 as pb;
use tonic::Code;

use super::auth::{Checks, T};
use crate::harness::{Raw, code_of, dur, req};
use crate::report::Report;

/// Runs the isolation checks with alpha's key `a` and beta's key `b`.
pub(super) async fn run(
    raw: &mut Raw,
    a: &str,
    b: &str,
    report: &mut Report,
    checks: &Checks,
) -> anyhow::Result<()> {
    let before = checks.get();
    let ka = Some(a);
    let kb = Some(b);
    let start = pb::StartRunRequest {
        job: "ja".into(),
        payload: br#""alpha-secret""#.to_vec(),
        queue: "qa".into(),
        ..Default::default()
    };
    let run_a = raw
        .jobs
        .start_run(req(start, T, ka))
        .await?
        .into_inner()
        .run
        .map(|r| r.id)
        .unwrap_or_default();
    let set = pb::SetStateRequest {
        key: "secret-a".into(),
        value: b"1".to_vec(),
        ..Default::default()
    };
    raw.state.set_state(req(set, T, ka)).await?;
    let lock = pb::AcquireLockRequest {
        key: "lock-a".into(),
        ttl: Some(dur(Duration::from_secs(60))),
        ..Default::default()
    };
    let lock_a = raw.state.acquire_lock(req(lock, T, ka)).await?.into_inner();
    let ev = pb::PublishEventRequest {
        name: "ev-a".into(),
        payload: b"1".to_vec(),
        ..Default::default()
    };
    raw.events.publish_event(req(ev, T, ka)).await?;
    let uq = pb::UpsertQueueRequest {
        name: "qa".into(),
        config: None,
        paused: None,
    };
    raw.queues.upsert_queue(req(uq, T, ka)).await?;

    let c = code_of(
        &raw.jobs
            .get_run(req(
                pb::GetRunRequest {
                    run_id: run_a.clone(),
                    wait: None,
                },
                T,
                kb,
            ))
            .await,
    );
    checks.expect(
        report,
        c == Code::NotFound,
        format!("beta GetRun(alpha run) answered {c:?}"),
    );
    let c = code_of(
        &raw.jobs
            .get_run(req(
                pb::GetRunRequest {
                    run_id: run_a.clone(),
                    wait: Some(dur(Duration::from_secs(1))),
                },
                T,
                kb,
            ))
            .await,
    );
    checks.expect(
        report,
        c == Code::NotFound,
        format!("beta GetRun(wait) on alpha run answered {c:?}"),
    );
    let c = match raw
        .jobs
        .watch_run(req(
            pb::WatchRunRequest {
                run_id: run_a.clone(),
            },
            T,
            kb,
        ))
        .await
    {
        Ok(mut s) => s
            .get_mut()
            .message()
            .await
            .map_or_else(|s| s.code(), |_| Code::Ok),
        Err(s) => s.code(),
    };
    checks.expect(
        report,
        c == Code::NotFound,
        format!("beta WatchRun(alpha run) answered {c:?}"),
    );
    let c = code_of(
        &raw.jobs
            .cancel_run(req(
                pb::CancelRunRequest {
                    run_id: run_a.clone(),
                    reason: "x".into(),
                },
                T,
                kb,
            ))
            .await,
    );
    checks.expect(
        report,
        c == Code::NotFound,
        format!("beta CancelRun(alpha run) answered {c:?}"),
    );
    let c = code_of(
        &raw.jobs
            .retry_run(req(
                pb::RetryRunRequest {
                    run_id: run_a.clone(),
                },
                T,
                kb,
            ))
            .await,
    );
    checks.expect(
        report,
        c == Code::NotFound,
        format!("beta RetryRun(alpha run) answered {c:?}"),
    );
    let runs = raw
        .jobs
        .list_runs(req(pb::ListRunsRequest::default(), T, kb))
        .await?
        .into_inner()
        .runs;
    checks.expect(
        report,
        runs.is_empty(),
        format!("beta ListRuns sees {} runs", runs.len()),
    );
    let poll = pb::PollTaskRequest {
        worker_id: "beta-worker".into(),
        queues: vec!["qa".into()],
        jobs: vec![pb::JobSpec {
            name: "ja".into(),
            lease_timeout: None,
        }],
        max_tasks: 10,
        wait: Some(dur(Duration::from_millis(500))),
    };
    let tasks = raw
        .worker
        .poll_task(req(poll.clone(), T, kb))
        .await?
        .into_inner()
        .tasks;
    checks.expect(
        report,
        tasks.is_empty(),
        format!("beta PollTask received {} alpha tasks", tasks.len()),
    );
    // alpha claims its run; beta tries the worker writes with alpha's lease token.
    let mut poll_a = poll.clone();
    poll_a.worker_id = "alpha-worker".into();
    let task = raw
        .worker
        .poll_task(req(poll_a, T, ka))
        .await?
        .into_inner()
        .tasks
        .into_iter()
        .next();
    checks.expect(
        report,
        task.as_ref().is_some_and(|t| t.run_id == run_a),
        "alpha could not claim its run".into(),
    );
    if let Some(task) = &task {
        let hb = pb::HeartbeatRequest {
            run_id: run_a.clone(),
            lease_token: task.lease_token.clone(),
        };
        let c = code_of(&raw.worker.heartbeat(req(hb, T, kb)).await);
        checks.expect(
            report,
            c != Code::Ok,
            format!("beta Heartbeat on alpha's lease answered {c:?}"),
        );
        let cr = pb::CompleteRunRequest {
            run_id: run_a.clone(),
            lease_token: task.lease_token.clone(),
            result: b"\"beta\"".to_vec(),
        };
        let c = code_of(&raw.worker.complete_run(req(cr, T, kb)).await);
        checks.expect(
            report,
            c != Code::Ok,
            format!("beta CompleteRun on alpha's lease answered {c:?}"),
        );
        let cr = pb::CompleteRunRequest {
            run_id: run_a.clone(),
            lease_token: task.lease_token.clone(),
            result: b"\"alpha\"".to_vec(),
        };
        raw.worker.complete_run(req(cr, T, ka)).await?;
        let run = raw
            .jobs
            .get_run(req(
                pb::GetRunRequest {
                    run_id: run_a.clone(),
                    wait: None,
                },
                T,
                ka,
            ))
            .await?
            .into_inner()
            .run;
        let result = run.map(|r| r.result).unwrap_or_default();
        checks.expect(
            report,
            result == b"\"alpha\"",
            format!(
                "alpha's run result is {:?}",
                String::from_utf8_lossy(&result)
            ),
        );
    }
    let entry = raw
        .state
        .get_state(req(
            pb::GetStateRequest {
                key: "secret-a".into(),
                run: None,
            },
            T,
            kb,
        ))
        .await?
        .into_inner()
        .entry;
    checks.expect(
        report,
        entry.is_none(),
        "beta GetState reads alpha's key".into(),
    );
    let keys = raw
        .state
        .list_state_keys(req(pb::ListStateKeysRequest::default(), T, kb))
        .await?
        .into_inner()
        .keys;
    checks.expect(
        report,
        keys.is_empty(),
        format!("beta ListStateKeys sees {} keys", keys.len()),
    );
    let del = raw
        .state
        .delete_state(req(
            pb::DeleteStateRequest {
                key: "secret-a".into(),
                ..Default::default()
            },
            T,
            kb,
        ))
        .await?
        .into_inner();
    checks.expect(
        report,
        !del.deleted,
        "beta DeleteState deleted alpha's key".into(),
    );
    let set = pb::SetStateRequest {
        key: "secret-a".into(),
        value: b"2".to_vec(),
        ..Default::default()
    };
    raw.state.set_state(req(set, T, kb)).await?;
    let entry = raw
        .state
        .get_state(req(
            pb::GetStateRequest {
                key: "secret-a".into(),
                run: None,
            },
            T,
            ka,
        ))
        .await?
        .into_inner()
        .entry;
    let value = entry.map(|e| e.value).unwrap_or_default();
    checks.expect(
        report,
        value == b"1",
        format!(
            "alpha's state changed by beta: {:?}",
            String::from_utf8_lossy(&value)
        ),
    );
    for (what, r) in [
        (
            "ReleaseLock",
            code_of(
                &raw.state
                    .release_lock(req(
                        pb::ReleaseLockRequest {
                            key: "lock-a".into(),
                            fencing_token: lock_a.fencing_token,
                            run: None,
                        },
                        T,
                        kb,
                    ))
                    .await,
            ),
        ),
        (
            "ExtendLock",
            code_of(
                &raw.state
                    .extend_lock(req(
                        pb::ExtendLockRequest {
                            key: "lock-a".into(),
                            fencing_token: lock_a.fencing_token,
                            ttl: Some(dur(T)),
                            run: None,
                        },
                        T,
                        kb,
                    ))
                    .await,
            ),
        ),
    ] {
        checks.expect(
            report,
            r == Code::FailedPrecondition,
            format!("beta {what} of alpha's lock answered {r:?}"),
        );
    }
    let ext = pb::ExtendLockRequest {
        key: "lock-a".into(),
        fencing_token: lock_a.fencing_token,
        ttl: Some(dur(Duration::from_secs(60))),
        run: None,
    };
    let c = code_of(&raw.state.extend_lock(req(ext, T, ka)).await);
    checks.expect(
        report,
        c == Code::Ok,
        format!("alpha lost its lock after beta's attempts ({c:?})"),
    );
    let events = raw
        .events
        .list_events(req(pb::ListEventsRequest::default(), T, kb))
        .await?
        .into_inner()
        .events;
    checks.expect(
        report,
        events.is_empty(),
        format!("beta ListEvents sees {} events", events.len()),
    );
    let queues = raw
        .queues
        .list_queues(req(pb::ListQueuesRequest::default(), T, kb))
        .await?
        .into_inner()
        .queues;
    checks.expect(
        report,
        !queues.iter().any(|q| q.name == "qa"),
        "beta ListQueues sees alpha's queue".into(),
    );
    let _ = raw
        .queues
        .pause_queue(req(pb::PauseQueueRequest { name: "qa".into() }, T, kb))
        .await;
    let qa = raw
        .queues
        .get_queue(req(pb::GetQueueRequest { name: "qa".into() }, T, ka))
        .await?
        .into_inner()
        .queue;
    checks.expect(
        report,
        qa.is_some_and(|q| !q.paused),
        "beta paused alpha's queue".into(),
    );
    let c = code_of(
        &raw.keys
            .list_keys(req(pb::ListKeysRequest::default(), T, kb))
            .await,
    );
    checks.expect(
        report,
        c == Code::PermissionDenied,
        format!("non-admin ListKeys answered {c:?}"),
    );
    report.figure("isolation_checks", checks.get() - before);

    Ok(())
}
