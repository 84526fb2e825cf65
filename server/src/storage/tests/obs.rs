//! Contract: timeline entries written with each transition, the per-run log cap with its
//! truncation marker, and the `ListRuns` filters added for observability.

use std::sync::Arc;

use crate::engine::EngineError;
use crate::engine::model::{
    Failure, LeaseRef, NewStep, RunFilter, RunStatus, StartOutcome, StepKind,
};
use crate::engine::now_ms;
use crate::engine::obs_model::{LogLevel, MAX_LOG_LINES_PER_RUN, NewLog, TimelineKind};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

fn lease(ns: &str, run_id: &str, token: &str) -> LeaseRef {
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run_id.to_owned(),
        token: token.to_owned(),
    }
}

fn line(msg: &str, at: i64) -> NewLog {
    NewLog {
        level: LogLevel::Info,
        message: msg.to_owned(),
        fields: Some(r#"{"k":1}"#.to_owned()),
        step_id: Some("s".to_owned()),
        at,
    }
}

/// Every transition leaves one timeline entry, in order, with attempts, steps and the
/// retry's due time.
pub async fn timeline_follows_transitions(store: &Arc<dyn Store>) {
    let ns = ns("timeline");
    let run = start(store, new_run(&ns, "job", "q", 1_000)).await;
    let t1 = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 1_100))
        .await
        .unwrap()
        .remove(0);
    let l1 = lease(&ns, &run.id, &t1.lease_token);
    let step = NewStep {
        step_id: "a".into(),
        kind: StepKind::Step,
        output: Some("1".into()),
        failure: None,
        started_at: Some(1_150),
    };
    assert!(
        !store
            .complete_step(l1.clone(), step.clone(), 1_200)
            .await
            .unwrap()
    );
    // A resent step records nothing new, in the journal or the timeline.
    assert!(store.complete_step(l1.clone(), step, 1_250).await.unwrap());
    let out = store
        .fail_run(l1, Failure::new("boom", "Err"), 1_300)
        .await
        .unwrap();
    let retry_at = out.next_attempt_at.unwrap();
    let t2 = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, retry_at))
        .await
        .unwrap()
        .remove(0);
    store
        .complete_run(
            lease(&ns, &run.id, &t2.lease_token),
            "2".into(),
            retry_at + 10,
        )
        .await
        .unwrap();
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    let kinds: Vec<TimelineKind> = d.timeline.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            TimelineKind::Created,
            TimelineKind::AttemptStarted,
            TimelineKind::StepCompleted,
            TimelineKind::RetryScheduled,
            TimelineKind::AttemptStarted,
            TimelineKind::Completed,
        ]
    );
    assert!(
        d.timeline
            .windows(2)
            .all(|w| w[0].id < w[1].id && w[0].at <= w[1].at)
    );
    assert_eq!(d.timeline[1].attempt, 1);
    assert_eq!(d.timeline[2].step_id.as_deref(), Some("a"));
    assert!(
        d.timeline[2]
            .detail
            .as_deref()
            .unwrap()
            .contains("\"duration_ms\":50")
    );
    assert_eq!(d.timeline[3].scheduled_at, Some(retry_at));
    assert!(d.timeline[3].detail.as_deref().unwrap().contains("boom"));
    assert_eq!(d.timeline[4].attempt, 2);
    // Payloads and outputs never reach the timeline.
    assert!(
        d.timeline
            .iter()
            .all(|t| !t.detail.as_deref().unwrap_or("").contains("\"n\":1"))
    );

    // Cancel and retry by request are recorded too.
    let run = start(store, new_run(&ns, "job", "q2", 2_000)).await;
    store
        .cancel_run(&ns, &run.id, Failure::new("stop", "Cancelled"), 2_100)
        .await
        .unwrap();
    store.retry_run(&ns, &run.id, 2_200).await.unwrap();
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    let kinds: Vec<TimelineKind> = d.timeline.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            TimelineKind::Created,
            TimelineKind::Cancelled,
            TimelineKind::Retried
        ]
    );
}

/// At most `MAX_LOG_LINES_PER_RUN` lines, then one marker, then nothing; lease-checked.
pub async fn log_cap_and_marker(store: &Arc<dyn Store>) {
    let ns = ns("logs");
    let run = start(store, new_run(&ns, "job", "q", 1_000)).await;
    let t = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 1_000))
        .await
        .unwrap()
        .remove(0);
    let l = lease(&ns, &run.id, &t.lease_token);
    let stale = lease(&ns, &run.id, "0123456789abcdef0123456789abcdef");
    assert!(matches!(
        store.append_logs(stale, vec![line("x", 1)], 1_001).await,
        Err(EngineError::FailedPrecondition(_))
    ));
    let cap = MAX_LOG_LINES_PER_RUN as usize;
    let first: Vec<NewLog> = (0..cap - 10)
        .map(|i| line(&format!("l{i}"), 1_001))
        .collect();
    let out = store.append_logs(l.clone(), first, 1_001).await.unwrap();
    assert_eq!((out.accepted, out.dropped), (cap - 10, 0));
    let second: Vec<NewLog> = (0..15).map(|i| line(&format!("m{i}"), 1_002)).collect();
    let out = store.append_logs(l.clone(), second, 1_002).await.unwrap();
    assert_eq!((out.accepted, out.dropped), (10, 5));
    let out = store
        .append_logs(l.clone(), vec![line("late", 1_003)], 1_003)
        .await
        .unwrap();
    assert_eq!((out.accepted, out.dropped), (0, 1));
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(d.logs.len(), cap + 1);
    assert!(d.logs[..cap].iter().all(|l| !l.truncated));
    assert!(d.logs[cap].truncated);
    assert_eq!(d.logs[0].message, "l0");
    assert_eq!(d.logs[0].attempt, 1);
    assert_eq!(d.logs[0].fields.as_deref(), Some(r#"{"k":1}"#));
    assert_eq!(d.logs[cap - 1].message, "m9");
    assert!(d.logs.windows(2).all(|w| w[0].id < w[1].id));
    let truncated = d
        .timeline
        .iter()
        .filter(|t| t.kind == TimelineKind::LogsTruncated)
        .count();
    assert_eq!(truncated, 1);

    // The byte cap: three 400 KB lines fit under 1 MiB only twice.
    let run = start(store, new_run(&ns, "job", "q", 2_000)).await;
    let t = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, 2_000))
        .await
        .unwrap()
        .remove(0);
    let big = "x".repeat(400_000);
    let lines = (0..3).map(|_| line(&big, 2_001)).collect();
    let out = store
        .append_logs(lease(&ns, &run.id, &t.lease_token), lines, 2_001)
        .await
        .unwrap();
    assert_eq!((out.accepted, out.dropped), (2, 1));
    let d = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
    assert_eq!(d.logs.len(), 3);
    assert!(d.logs[2].truncated);
}

/// Idempotency-key and creation-time filters (ids are UUIDv7 made at `created_at`).
pub async fn list_filters(store: &Arc<dyn Store>) {
    let ns = ns("listobs");
    let mut ids = Vec::new();
    for i in 0..6 {
        let now = now_ms();
        let mut nr = new_run(&ns, "job", "q", now);
        nr.idempotency = Some((format!("key-{}", i % 3), now + 60_000));
        if i >= 3 {
            // Same keys again: duplicates, not new runs.
            assert!(matches!(
                store.start_run(nr).await.unwrap(),
                StartOutcome::Duplicate(_)
            ));
            continue;
        }
        ids.push((start(store, nr).await, now));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let f = RunFilter {
        idempotency_key: Some("key-1".into()),
        ..RunFilter::default()
    };
    let got = store.list_runs(&ns, &f, None, 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ids[1].0.id);
    let f = RunFilter {
        created_after: Some(ids[1].1),
        ..RunFilter::default()
    };
    let got: Vec<String> = store
        .list_runs(&ns, &f, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(got, [ids[2].0.id.clone(), ids[1].0.id.clone()]);
    let f = RunFilter {
        created_before: Some(ids[1].1),
        status: Some(RunStatus::Queued),
        ..RunFilter::default()
    };
    let got: Vec<String> = store
        .list_runs(&ns, &f, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(got, [ids[0].0.id.clone()]);
}
