//! Contract: per-run history limits on a store configured with low caps
//! ([`LIMITS`]): journal entries past `max_steps_per_run` are refused with
//! `EngineError::StepLimit` and fail the run (`StepLimitExceeded`, non-retryable) in the
//! same commit; replays are never refused; every kind of journal entry counts; two
//! concurrent step results at the limit cannot both pass; the timeline keeps
//! `max_timeline_entries` entries, then one marker, then only how the run ended.

use std::sync::Arc;

use crate::engine::EngineError;
use crate::engine::event_model::{SuspendOutcome, WaitSpec};
use crate::engine::history::{HistoryLimits, STEP_LIMIT_ERROR_TYPE};
use crate::engine::model::{LeaseRef, NewStep, RunStatus, StepKind};
use crate::engine::obs_model::TimelineKind;
use crate::engine::state::{RunCall, StateCall, StateOp};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

/// The caps the store under test enforces.
pub const LIMITS: HistoryLimits = HistoryLimits {
    max_steps_per_run: 10,
    max_timeline_entries: 12,
};

fn step(id: &str) -> NewStep {
    NewStep {
        step_id: id.to_owned(),
        kind: StepKind::Step,
        output: Some("1".into()),
        failure: None,
        started_at: None,
    }
}

async fn leased(store: &Arc<dyn Store>, ns: &str, t: i64) -> LeaseRef {
    let run = start(store, new_run(ns, "job", "q", t)).await;
    let task = store
        .claim(claim_req(ns, &["q"], &["job"], 1, t))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(task.run.id, run.id);
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run.id,
        token: task.lease_token,
    }
}

fn incr(l: &LeaseRef, call_id: &str) -> StateCall {
    StateCall {
        namespace: l.namespace.clone(),
        op: StateOp::Increment {
            key: format!("k-{}", l.run_id),
            by: 1,
            expires_at_if_created: None,
        },
        run: Some(RunCall {
            lease: l.clone(),
            call_id: call_id.to_owned(),
        }),
    }
}

async fn assert_failed_by_limit(store: &Arc<dyn Store>, l: &LeaseRef, journal: usize) {
    let d = store
        .get_run_detail(&l.namespace, &l.run_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.run.status, RunStatus::Failed);
    let f = d.run.failure.clone().unwrap();
    assert_eq!(f.error_type, STEP_LIMIT_ERROR_TYPE);
    assert!(f.non_retryable);
    assert!(f.message.contains("--max-steps-per-run"), "{}", f.message);
    assert_eq!(d.steps.len(), journal, "journal entries of {}", l.run_id);
    assert_eq!(d.attempts.last().unwrap().failure.as_ref(), Some(&f));
}

/// Step results up to the cap pass, replays pass at the cap, the next new one fails the run.
pub async fn step_results_up_to_the_cap(store: &Arc<dyn Store>) {
    let ns = ns("steplimit");
    let t = crate::engine::now_ms();
    let l = leased(store, &ns, t).await;
    for i in 0..LIMITS.max_steps_per_run {
        assert!(
            !store
                .complete_step(l.clone(), step(&format!("s{i}")), t + 1)
                .await
                .unwrap()
        );
    }
    // A replay of a recorded entry is not a new entry: never refused.
    assert!(
        store
            .complete_step(l.clone(), step("s0"), t + 2)
            .await
            .unwrap()
    );
    let res = store.complete_step(l.clone(), step("over"), t + 3).await;
    assert!(matches!(res, Err(EngineError::StepLimit(_))), "{res:?}");
    assert_failed_by_limit(store, &l, LIMITS.max_steps_per_run as usize).await;
    // The run is failed: its lease is gone.
    let res = store.complete_step(l.clone(), step("later"), t + 4).await;
    assert!(
        matches!(res, Err(EngineError::FailedPrecondition(_))),
        "{res:?}"
    );
}

/// State calls, sleeps (resolved at once or pending) and step results all count; the
/// refusal applies to each kind of new entry.
pub async fn every_entry_kind_counts(store: &Arc<dyn Store>) {
    let ns = ns("stepkinds");
    let t = crate::engine::now_ms();
    // 4 steps + 3 state calls + 1 sleep resolved at once = 8.
    let l = leased(store, &ns, t).await;
    for i in 0..4 {
        store
            .complete_step(l.clone(), step(&format!("s{i}")), t + 1)
            .await
            .unwrap();
    }
    for i in 1..=3 {
        let out = store
            .state_apply(incr(&l, &format!("state:{i}")), t + 2)
            .await;
        assert!(!out.unwrap().replayed);
    }
    let out = store
        .suspend_run(l.clone(), "nap".into(), WaitSpec::Sleep { until: t }, t + 3)
        .await
        .unwrap();
    assert!(matches!(out, SuspendOutcome::Satisfied(_)));
    // A pending sleep reserves its entry at once: 9.
    let out = store
        .suspend_run(
            l.clone(),
            "long".into(),
            WaitSpec::Sleep { until: t + 50 },
            t + 4,
        )
        .await
        .unwrap();
    assert!(matches!(out, SuspendOutcome::Suspended { .. }));
    let resumed = store.resolve_due_waits(t + 60, 100).await.unwrap();
    assert!(resumed.iter().any(|r| r.run_id == l.run_id));
    let task = store
        .claim(claim_req(&ns, &["q"], &["job"], 1, t + 61))
        .await
        .unwrap()
        .remove(0);
    let l = LeaseRef {
        token: task.lease_token,
        ..l
    };
    // A replayed state call passes; the 10th entry passes; the 11th (a state call) fails.
    let again = store
        .state_apply(incr(&l, "state:1"), t + 62)
        .await
        .unwrap();
    assert!(again.replayed);
    store
        .complete_step(l.clone(), step("s9"), t + 63)
        .await
        .unwrap();
    let res = store.state_apply(incr(&l, "state:4"), t + 64).await;
    assert!(matches!(res, Err(EngineError::StepLimit(_))), "{res:?}");
    assert_failed_by_limit(store, &l, 10).await;

    // A wait at the cap is refused too.
    let l = leased(store, &ns, t + 100).await;
    for i in 0..LIMITS.max_steps_per_run {
        store
            .complete_step(l.clone(), step(&format!("s{i}")), t + 101)
            .await
            .unwrap();
    }
    let res = store
        .suspend_run(
            l.clone(),
            "nap".into(),
            WaitSpec::Sleep { until: t },
            t + 102,
        )
        .await;
    assert!(matches!(res, Err(EngineError::StepLimit(_))), "{res:?}");
    assert_failed_by_limit(store, &l, 10).await;
}

/// Concurrent new step results one short of the cap: exactly one is recorded.
pub async fn concurrent_steps_at_the_cap(store: &Arc<dyn Store>) {
    let ns = ns("steprace");
    let t = crate::engine::now_ms();
    let l = leased(store, &ns, t).await;
    for i in 0..LIMITS.max_steps_per_run - 1 {
        store
            .complete_step(l.clone(), step(&format!("s{i}")), t + 1)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (store, l) = (store.clone(), l.clone());
        tasks.push(tokio::spawn(async move {
            store
                .complete_step(l, step(&format!("race{i}")), t + 2)
                .await
        }));
    }
    let (mut recorded, mut limited) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(false) => recorded += 1,
            Err(EngineError::StepLimit(_)) => limited += 1,
            // Later ones find the run failed already.
            Err(EngineError::FailedPrecondition(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(recorded, 1);
    assert_eq!(limited, 1);
    assert_failed_by_limit(store, &l, LIMITS.max_steps_per_run as usize).await;
}

/// The timeline keeps the cap, then one marker, then only how the run ended.
pub async fn timeline_cap_and_marker(store: &Arc<dyn Store>) {
    let ns = ns("tlcap");
    let t = crate::engine::now_ms();
    // created + attempt_started + 5 steps = 7 entries; the cap is 12.
    let mut l = leased(store, &ns, t).await;
    for i in 0..5 {
        store
            .complete_step(l.clone(), step(&format!("s{i}")), t + 1)
            .await
            .unwrap();
    }
    // Each sleep adds `waiting`, `timer_fired` and `attempt_resumed`: 10, 13 (the 13th
    // becomes the marker), then 16 (all dropped).
    for i in 0..3 {
        let out = store
            .suspend_run(
                l.clone(),
                format!("nap{i}"),
                WaitSpec::Sleep { until: t + 5 },
                t + 2,
            )
            .await
            .unwrap();
        assert!(matches!(out, SuspendOutcome::Suspended { .. }));
        store.resolve_due_waits(t + 10, 100).await.unwrap();
        let task = store
            .claim(claim_req(&ns, &["q"], &["job"], 1, t + 11))
            .await
            .unwrap()
            .remove(0);
        l.token = task.lease_token;
    }
    let d = store.get_run_detail(&ns, &l.run_id).await.unwrap().unwrap();
    let kinds: Vec<TimelineKind> = d.timeline.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.len(), 13, "{kinds:?}");
    assert_eq!(kinds[12], TimelineKind::TimelineTruncated, "{kinds:?}");
    let marker = d.timeline[12].detail.clone().unwrap();
    assert!(marker.contains("\"max_timeline_entries\":12"), "{marker}");
    // The run keeps working, and how it ends is still recorded.
    store
        .complete_run(l.clone(), "1".into(), t + 20)
        .await
        .unwrap();
    let d = store.get_run_detail(&ns, &l.run_id).await.unwrap().unwrap();
    let kinds: Vec<TimelineKind> = d.timeline.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.len(), 14, "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == TimelineKind::TimelineTruncated)
            .count(),
        1
    );
    assert_eq!(kinds[13], TimelineKind::Completed);
    assert_eq!(d.run.status, RunStatus::Completed);
}

/// Many concurrent step results of one run (one group commit when the writer batches
/// them): the step cap holds, and the timeline entries counted together keep the cap, then
/// one marker, then how the run ended.
pub async fn both_caps_within_one_batch(store: &Arc<dyn Store>) {
    let ns = ns("onebatch");
    let t = crate::engine::now_ms();
    // created + attempt_started = 2 entries.
    let l = leased(store, &ns, t).await;
    let mut tasks = Vec::new();
    for i in 0..LIMITS.max_steps_per_run + 4 {
        let (store, l) = (store.clone(), l.clone());
        tasks.push(tokio::spawn(async move {
            store.complete_step(l, step(&format!("b{i}")), t + 1).await
        }));
    }
    let (mut recorded, mut limited) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(false) => recorded += 1,
            Err(EngineError::StepLimit(_)) => limited += 1,
            Err(EngineError::FailedPrecondition(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(recorded, LIMITS.max_steps_per_run);
    assert_eq!(limited, 1);
    assert_failed_by_limit(store, &l, LIMITS.max_steps_per_run as usize).await;
    let d = store.get_run_detail(&ns, &l.run_id).await.unwrap().unwrap();
    let kinds: Vec<TimelineKind> = d.timeline.iter().map(|e| e.kind).collect();
    // 2 + 10 step entries = the cap of 12; then the marker and how the run ended.
    assert_eq!(kinds.len(), 14, "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == TimelineKind::StepCompleted)
            .count(),
        10,
        "{kinds:?}"
    );
    assert_eq!(kinds[12], TimelineKind::TimelineTruncated, "{kinds:?}");
    assert_eq!(kinds[13], TimelineKind::Failed, "{kinds:?}");
}

/// Runs the history checks against a store configured with [`LIMITS`].
pub async fn run(store: Arc<dyn Store>) {
    step_results_up_to_the_cap(&store).await;
    every_entry_kind_counts(&store).await;
    concurrent_steps_at_the_cap(&store).await;
    timeline_cap_and_marker(&store).await;
    both_caps_within_one_batch(&store).await;
}
