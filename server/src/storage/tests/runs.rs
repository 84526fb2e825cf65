//! Contract checks of run starts, idempotency, listing, cancel, retry and namespaces.

use std::sync::Arc;

use crate::engine::EngineError;
use crate::engine::model::{Failure, RunFilter, RunStatus, StartOutcome};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

pub async fn start_and_idempotency(store: &Arc<dyn Store>) {
    let ns = ns("idem");
    let now = 1_000_000;
    let mut a = new_run(&ns, "job", "q", now);
    a.idempotency = Some(("key-1".into(), now + 10_000));
    let first = start(store, a.clone()).await;
    assert_eq!(first.status, RunStatus::Queued);
    assert_eq!(first.attempt, 0);
    assert_eq!(first.idempotency_key.as_deref(), Some("key-1"));
    let got = store.get_run(&ns, &first.id).await.unwrap().unwrap();
    assert_eq!(got, first);

    // A duplicate within the TTL returns the first run and creates nothing.
    let mut dup = new_run(&ns, "job", "q", now + 5_000);
    dup.idempotency = Some(("key-1".into(), now + 15_000));
    match store.start_run(dup.clone()).await.unwrap() {
        StartOutcome::Duplicate(r) => assert_eq!(r.id, first.id),
        other => panic!("expected duplicate, got {other:?}"),
    }
    assert!(store.get_run(&ns, &dup.id).await.unwrap().is_none());

    // After the TTL the key is taken over by a new run.
    let mut later = new_run(&ns, "job", "q", now + 10_000);
    later.idempotency = Some(("key-1".into(), now + 20_000));
    let second = start(store, later).await;
    assert_ne!(second.id, first.id);

    // The same key in another namespace is independent.
    let other = self::ns("idem-other");
    let mut b = new_run(&other, "job", "q", now);
    b.idempotency = Some(("key-1".into(), now + 10_000));
    start(store, b).await;
}

pub async fn concurrent_idempotent_starts(store: &Arc<dyn Store>) {
    let ns = ns("race");
    let now = super::super::super::engine::now_ms();
    let mut handles = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        let mut r = new_run(&ns, "job", "q", now);
        r.idempotency = Some(("same".into(), now + 60_000));
        handles.push(tokio::spawn(
            async move { store.start_run(r).await.unwrap() },
        ));
    }
    let mut created = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        match h.await.unwrap() {
            StartOutcome::Created(r) => {
                ids.insert(r.id.clone());
                created.push(r);
            }
            StartOutcome::Duplicate(r) => {
                ids.insert(r.id);
            }
        }
    }
    assert_eq!(created.len(), 1, "exactly one start creates the run");
    assert_eq!(ids.len(), 1, "every duplicate returns the same run");
    let all = store
        .list_runs(&ns, &RunFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
}

pub async fn list_and_filters(store: &Arc<dyn Store>) {
    let ns = ns("list");
    let mut ids = Vec::new();
    for i in 0..7 {
        let job = if i % 2 == 0 { "even" } else { "odd" };
        let queue = if i < 3 { "a" } else { "b" };
        ids.push(start(store, new_run(&ns, job, queue, 1_000 + i)).await.id);
    }
    // Newest first, paginated by cursor, no gaps or duplicates.
    let page1 = store
        .list_runs(&ns, &RunFilter::default(), None, 3)
        .await
        .unwrap();
    let page2 = store
        .list_runs(&ns, &RunFilter::default(), Some(&page1[2].id), 3)
        .await
        .unwrap();
    let page3 = store
        .list_runs(&ns, &RunFilter::default(), Some(&page2[2].id), 3)
        .await
        .unwrap();
    let listed: Vec<String> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|r| r.id.clone())
        .collect();
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(listed, expected);

    let f = RunFilter {
        job: Some("even".into()),
        ..RunFilter::default()
    };
    assert_eq!(store.list_runs(&ns, &f, None, 100).await.unwrap().len(), 4);
    let f = RunFilter {
        queue: Some("a".into()),
        ..RunFilter::default()
    };
    assert_eq!(store.list_runs(&ns, &f, None, 100).await.unwrap().len(), 3);
    store
        .cancel_run(&ns, &ids[0], Failure::new("stop", "Cancelled"), 2_000)
        .await
        .unwrap();
    let f = RunFilter {
        status: Some(RunStatus::Cancelled),
        ..RunFilter::default()
    };
    let cancelled = store.list_runs(&ns, &f, None, 100).await.unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].id, ids[0]);
}

pub async fn cancel_and_retry(store: &Arc<dyn Store>) {
    let ns = ns("cancel");
    let run = start(store, new_run(&ns, "job", "q", 1_000)).await;
    let c = store
        .cancel_run(
            &ns,
            &run.id,
            Failure::new("no longer needed", "Cancelled"),
            2_000,
        )
        .await
        .unwrap();
    assert_eq!(c.status, RunStatus::Cancelled);
    assert_eq!(c.finished_at, Some(2_000));
    // Cancelled runs are not delivered.
    assert!(
        store
            .claim(claim_req(&ns, &["q"], &["job"], 10, 3_000))
            .await
            .unwrap()
            .is_empty()
    );
    // Cancelling again is refused.
    let again = store
        .cancel_run(&ns, &run.id, Failure::new("x", "Cancelled"), 2_500)
        .await;
    assert!(matches!(again, Err(EngineError::FailedPrecondition(_))));
    // Retry queues it with a fresh attempt budget.
    let r = store.retry_run(&ns, &run.id, 4_000).await.unwrap();
    assert_eq!(r.status, RunStatus::Queued);
    assert_eq!(r.max_attempts, 3);
    assert!(r.failure.is_none());
    let tasks = store
        .claim(claim_req(&ns, &["q"], &["job"], 10, 4_000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    // Only failed or cancelled runs can be retried; unknown runs are not found.
    let again = store.retry_run(&ns, &run.id, 5_000).await;
    assert!(matches!(again, Err(EngineError::FailedPrecondition(_))));
    let missing = uuid::Uuid::now_v7().to_string();
    assert!(matches!(
        store.retry_run(&ns, &missing, 5_000).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        store
            .cancel_run(&ns, &missing, Failure::new("x", "Cancelled"), 5_000)
            .await,
        Err(EngineError::NotFound(_))
    ));
}

pub async fn namespace_isolation(store: &Arc<dyn Store>) {
    let a = ns("tenant-a");
    let b = ns("tenant-b");
    let run = start(store, new_run(&a, "job", "q", 1_000)).await;
    assert!(store.get_run(&b, &run.id).await.unwrap().is_none());
    assert!(store.get_run_detail(&b, &run.id).await.unwrap().is_none());
    assert!(matches!(
        store
            .cancel_run(&b, &run.id, Failure::new("x", "Cancelled"), 2_000)
            .await,
        Err(EngineError::NotFound(_))
    ));
    assert!(
        store
            .claim(claim_req(&b, &["q"], &["job"], 10, 2_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_runs(&b, &RunFilter::default(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let tasks = store
        .claim(claim_req(&a, &["q"], &["job"], 10, 2_000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    // A worker of namespace B cannot write to A's run, even with the right token.
    let lease = crate::engine::model::LeaseRef {
        namespace: b.clone(),
        run_id: run.id.clone(),
        token: tasks[0].lease_token.clone(),
    };
    assert!(matches!(
        store.heartbeat(lease, 2_100).await,
        Err(EngineError::NotFound(_))
    ));
}

/// Starts sent together so that one group commit holds them: plain starts (batched into
/// one `INSERT` on SQLite), idempotent ones, one on a new queue, and ones that fail (an id
/// already taken by a committed run, and two starts sharing an id). Each is answered
/// exactly as on its own, and the failing ones take no other start down with them.
pub async fn starts_together(store: &Arc<dyn Store>) {
    use crate::engine::obs_model::TimelineKind;
    let ns = ns("starts-together");
    let now = 5_000_000;
    // Queue `q` is known (committed) before the batch; `fresh` is not.
    let first = start(store, new_run(&ns, "job", "q", now)).await;
    let lone_conflict = {
        let mut r = new_run(&ns, "job", "q", now);
        r.id = first.id.clone();
        store
            .start_run(r)
            .await
            .expect_err("a start reusing a run id fails")
    };
    let mut plain = Vec::new();
    for i in 0..20 {
        let mut r = new_run(&ns, "job", "q", now + i);
        r.priority = i as i32 % 3;
        r.concurrency_key = (i % 2 == 0).then(|| format!("k{i}"));
        r.lease_timeout_ms = (i % 5 == 0).then_some(5_000);
        r.available_at = now + i + (i % 4) * 1_000;
        plain.push(r);
    }
    let mut idem = Vec::new();
    for _ in 0..2 {
        let mut r = new_run(&ns, "job", "q", now);
        r.idempotency = Some(("together".into(), now + 60_000));
        idem.push(r);
    }
    let mut conflict = new_run(&ns, "job", "q", now);
    conflict.id = first.id.clone();
    let twin_a = new_run(&ns, "job", "q", now);
    let mut twin_b = new_run(&ns, "job", "q", now);
    twin_b.id = twin_a.id.clone();
    let fresh = new_run(&ns, "job", "fresh", now);

    let mut all = Vec::new();
    all.extend(plain.iter().cloned());
    all.push(conflict.clone());
    all.extend(idem.iter().cloned());
    all.push(twin_a.clone());
    all.push(fresh.clone());
    all.push(twin_b.clone());
    let answers = futures::future::join_all(all.iter().cloned().map(|r| store.start_run(r))).await;
    let (plain_answers, rest) = answers.split_at(plain.len());
    for (r, answer) in plain.iter().zip(plain_answers) {
        match answer {
            Ok(StartOutcome::Created(run)) => {
                assert_eq!(run.id, r.id);
                assert_eq!(run.status, RunStatus::Queued);
                assert_eq!(run.priority, r.priority);
                assert_eq!(run.concurrency_key, r.concurrency_key);
                assert_eq!(run.lease_timeout_ms, r.lease_timeout_ms);
                assert_eq!(run.available_at, r.available_at);
                let stored = store.get_run(&ns, &r.id).await.unwrap().unwrap();
                assert_eq!(&stored, run, "the answer is the stored row");
            }
            other => panic!("plain start: {other:?}"),
        }
    }
    match &rest[0] {
        Err(e) => assert_eq!(
            std::mem::discriminant(e),
            std::mem::discriminant(&lone_conflict),
            "a conflicting id fails as on its own: {e:?} vs {lone_conflict:?}"
        ),
        Ok(other) => panic!("conflicting id started: {other:?}"),
    }
    let idem_ids: Vec<String> = rest[1..3]
        .iter()
        .map(|a| match a {
            Ok(StartOutcome::Created(r) | StartOutcome::Duplicate(r)) => r.id.clone(),
            Err(e) => panic!("idempotent start: {e:?}"),
        })
        .collect();
    assert_eq!(
        idem_ids[0], idem_ids[1],
        "both idempotent starts name one run"
    );
    let created = rest[1..3]
        .iter()
        .filter(|a| matches!(a, Ok(StartOutcome::Created(_))))
        .count();
    assert_eq!(created, 1, "exactly one idempotent start creates the run");
    assert!(
        matches!(&rest[4], Ok(StartOutcome::Created(r)) if r.queue == "fresh"),
        "start on a new queue: {:?}",
        rest[4]
    );
    let twins = [&rest[3], &rest[5]];
    assert_eq!(
        twins.iter().filter(|a| a.is_ok()).count(),
        1,
        "of two starts sharing an id exactly one is created: {twins:?}"
    );
    for e in twins.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(
            std::mem::discriminant(e),
            std::mem::discriminant(&lone_conflict)
        );
    }

    // What is stored: the first run unchanged, every created run once, each with exactly
    // one `created` timeline entry.
    assert_eq!(store.get_run(&ns, &first.id).await.unwrap().unwrap(), first);
    let listed = store
        .list_runs(&ns, &RunFilter::default(), None, 100)
        .await
        .unwrap();
    // first + 20 plain + 1 idempotent + 1 twin + 1 fresh.
    assert_eq!(listed.len(), 24, "{listed:?}");
    for run in &listed {
        let detail = store.get_run_detail(&ns, &run.id).await.unwrap().unwrap();
        let created = detail
            .timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::Created)
            .count();
        assert_eq!(created, 1, "run {}: {:?}", run.id, detail.timeline);
    }
    assert!(store.get_run(&ns, &fresh.id).await.unwrap().is_some());
}

/// PostgreSQL, two stores on one database (two replicas): plain starts on `a`, sent
/// together so that its writer inserts them in one batch, wake `b`'s polls and timers
/// when they commit: a `Ready` for each job of the immediate runs, a `TimerAt` for each
/// delayed run's due time. A second round holds a start reusing a committed run's id, so
/// the batch it lands in falls back to one start at a time, which publishes the same
/// wakeups (and none for the start that failed).
pub async fn batched_starts_wake_other_replicas(
    a: &crate::storage::SqlStore,
    b: &crate::storage::SqlStore,
) {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use crate::engine::store::Wakeup;

    let store: Arc<dyn Store> = Arc::new(a.clone());
    let ns = ns("starts-wake");
    let now = 7_000_000;
    // Queue `q` is known (committed) on `a` before the batch: its starts are plain.
    let first = start(&store, new_run(&ns, "seed", "q", now)).await;
    let mut rx = super::listening(b).await;
    for (round, conflict) in [("batched", false), ("fallback", true)] {
        let due = |i: i64| now + 60_000 + i + if conflict { 1_000 } else { 0 };
        let mut starts = Vec::new();
        for i in 0..30 {
            let mut r = new_run(&ns, &format!("{round}{}", i % 3), "q", now);
            if i % 10 == 9 {
                r.available_at = due(i); // delayed: a timer wakeup
            }
            starts.push(r);
        }
        if conflict {
            let mut r = new_run(&ns, "never", "q", now);
            r.id = first.id.clone();
            starts.insert(15, r);
        }
        let answers =
            futures::future::join_all(starts.iter().cloned().map(|r| store.start_run(r))).await;
        for (r, answer) in starts.iter().zip(&answers) {
            if r.job == "never" {
                assert!(
                    answer.is_err(),
                    "a start reusing a run id fails: {answer:?}"
                );
            } else {
                assert!(matches!(answer, Ok(StartOutcome::Created(_))), "{answer:?}");
            }
        }
        // Compared by their debug form (`Wakeup` is not `Ord`).
        let mut want: BTreeSet<String> = (0..3)
            .map(|j| Wakeup::Ready {
                namespace: ns.clone(),
                queue: "q".into(),
                job: format!("{round}{j}"),
            })
            .map(|w| format!("{w:?}"))
            .collect();
        want.extend([9, 19, 29].map(|i| format!("{:?}", Wakeup::TimerAt(due(i)))));
        let mut got = BTreeSet::new();
        while let Ok(Some(w)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            match &w {
                Wakeup::Ready { namespace, .. } if *namespace == ns => {
                    got.insert(format!("{w:?}"));
                }
                Wakeup::TimerAt(at) if (now..now + 120_000).contains(at) => {
                    got.insert(format!("{w:?}"));
                }
                _ => {}
            }
        }
        assert_eq!(got, want, "{round}: the other replica hears every start");
    }
}
