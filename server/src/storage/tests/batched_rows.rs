//! The batched statements with several rows each, called directly (not through the group
//! commit, which may or may not gather several writes): on PostgreSQL they pass their rows
//! as arrays (`pg_rows`), on SQLite as `VALUES` lists; both must write the same rows,
//! NULLs included, and skip the same ones.

use std::sync::Arc;

use sea_orm::TransactionTrait;

use crate::engine::model::{Failure, LeaseRef, NewStep, RunStatus, StepKind};
use crate::engine::obs_model::TimelineKind;
use crate::engine::store::Store;
use crate::storage::complete_batch::{self, CompleteWrite};
use crate::storage::start_batch;
use crate::storage::step_batch::{self, StepWrite};

use super::{SqlStore, claim_req, fresh_postgres_url, new_run, start};

fn lease(ns: &str, run_id: &str, token: &str) -> LeaseRef {
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run_id.to_owned(),
        token: token.to_owned(),
    }
}

async fn many_rows(sql: SqlStore) {
    let ns = "batched-rows";
    let store: Arc<dyn Store> = Arc::new(sql.clone());
    // A start through the store creates the queue; then three starts in one statement,
    // with nullable columns set on some rows and NULL on others.
    let first = start(&store, new_run(ns, "job", "q", 1_000)).await;
    let mut news = Vec::new();
    for i in 0..3i64 {
        let mut n = new_run(ns, "job", "q", 1_001 + i);
        n.payload = format!("{{\"i\":{i}}}");
        n.priority = i32::try_from(i).unwrap();
        if i == 1 {
            n.concurrency_key = Some("k".to_owned());
            n.lease_timeout_ms = Some(45_000);
        }
        news.push(n);
    }
    let txn = sql.connection().begin().await.unwrap();
    let refs: Vec<_> = news.iter().collect();
    let created = start_batch::insert(&txn, &refs).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(created.len(), 3);
    for (n, r) in news.iter().zip(&created) {
        let d = store.get_run_detail(ns, &n.id).await.unwrap().unwrap();
        assert_eq!(d.run.id, r.id);
        assert_eq!(d.run.payload, n.payload);
        assert_eq!(d.run.priority, n.priority);
        assert_eq!(d.run.concurrency_key, n.concurrency_key);
        assert_eq!(d.run.lease_timeout_ms, n.lease_timeout_ms);
        assert_eq!(d.run.status, RunStatus::Queued);
        assert_eq!(d.run.result, None);
        assert_eq!(d.run.retry.backoff_coefficient, 2.0);
        let kinds: Vec<_> = d.timeline.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![TimelineKind::Created]);
        assert_eq!(d.timeline[0].at, n.now);
    }
    // One claim of the four runs: the attempts' update and insert take four rows.
    let tasks = store
        .claim(claim_req(ns, &["q"], &["job"], 4, 2_000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 4);
    let leased = tasks
        .iter()
        .find(|t| t.run.id == news[1].id)
        .expect("run 1 claimed");
    assert_eq!(leased.lease_ms, 45_000, "the run's own lease");
    for t in &tasks {
        let d = store.get_run_detail(ns, &t.run.id).await.unwrap().unwrap();
        assert_eq!(d.run.status, RunStatus::Running);
        assert_eq!(d.run.lease_token.as_deref(), Some(t.lease_token.as_str()));
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].started_at, 2_000);
        assert_eq!(d.attempts[0].ended_at, None);
    }
    // Step results: two for one run (an output and a failure), one with no output and no
    // start time, a duplicate of the first, and one under a stale token.
    let l = |i: usize| lease(ns, &tasks[i].run.id, &tasks[i].lease_token);
    let step = |id: &str, output: Option<&str>, failure: Option<Failure>, started| NewStep {
        step_id: id.to_owned(),
        kind: StepKind::Step,
        output: output.map(str::to_owned),
        failure,
        started_at: started,
    };
    let writes = [
        (l(0), step("a", Some("1"), None, Some(2_100))),
        (
            l(0),
            step("b", None, Some(Failure::new("bad", "E")), Some(2_150)),
        ),
        (l(1), step("a", None, None, None)),
        (l(0), step("a", Some("2"), None, Some(2_100))),
        (
            lease(ns, &tasks[2].run.id, "stale"),
            step("a", Some("3"), None, None),
        ),
        (l(3), step("a", Some("4"), None, Some(2_190))),
    ];
    let writes: Vec<StepWrite> = writes
        .into_iter()
        .map(|(lease, step)| StepWrite {
            lease,
            step,
            now: 2_200,
        })
        .collect();
    let txn = sql.connection().begin().await.unwrap();
    let refs: Vec<_> = writes.iter().collect();
    let inserted = step_batch::record(&txn, &refs).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(inserted, vec![true, true, true, false, false, true]);
    let d = store
        .get_run_detail(ns, &tasks[0].run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.steps.len(), 2);
    let a = d.steps.iter().find(|s| s.step_id == "a").unwrap();
    assert_eq!(
        (a.output.as_deref(), a.started_at, a.completed_at, a.attempt),
        (Some("1"), Some(2_100), 2_200, 1)
    );
    let b = d.steps.iter().find(|s| s.step_id == "b").unwrap();
    assert_eq!(b.output, None);
    assert_eq!(b.failure.as_ref().map(|f| f.message.as_str()), Some("bad"));
    let steps: Vec<_> = d
        .timeline
        .iter()
        .filter(|e| e.step_id.is_some())
        .map(|e| e.step_id.clone())
        .collect();
    assert_eq!(steps, vec![Some("a".to_owned()), Some("b".to_owned())]);
    let d = store
        .get_run_detail(ns, &tasks[1].run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.steps.len(), 1);
    assert_eq!(
        (d.steps[0].output.as_deref(), d.steps[0].started_at),
        (None, None)
    );
    let d = store
        .get_run_detail(ns, &tasks[2].run.id)
        .await
        .unwrap()
        .unwrap();
    assert!(d.steps.is_empty(), "stale token: nothing recorded");
    // Completions: three runs, one stale token.
    let completes: Vec<CompleteWrite> = [(l(0), "\"r0\""), (l(1), "\"r1\""), (l(3), "\"r3\"")]
        .into_iter()
        .chain([(lease(ns, &tasks[2].run.id, "stale"), "\"x\"")])
        .map(|(lease, result)| CompleteWrite {
            lease,
            result: result.to_owned(),
            now: 2_300,
        })
        .collect();
    let txn = sql.connection().begin().await.unwrap();
    let refs: Vec<_> = completes.iter().collect();
    let done = complete_batch::apply(&txn, &refs).await.unwrap();
    txn.commit().await.unwrap();
    let done: Vec<bool> = done.iter().map(Option::is_some).collect();
    assert_eq!(done, vec![true, true, true, false]);
    for (i, result) in [(0, "\"r0\""), (1, "\"r1\""), (3, "\"r3\"")] {
        let d = store
            .get_run_detail(ns, &tasks[i].run.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.run.status, RunStatus::Completed, "run {i}");
        assert_eq!(d.run.result.as_deref(), Some(result));
        assert_eq!(d.run.finished_at, Some(2_300));
        assert_eq!(d.attempts[0].ended_at, Some(2_300));
        let last = d.timeline.last().unwrap();
        assert_eq!((last.kind, last.at), (TimelineKind::Completed, 2_300));
        // Ids follow the order entries were written.
        assert!(d.timeline.windows(2).all(|w| w[0].id < w[1].id));
    }
    let d = store
        .get_run_detail(ns, &tasks[2].run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.run.status, RunStatus::Running);
    assert_eq!(d.attempts[0].ended_at, None);
    assert_ne!(first.id, "");
}

#[tokio::test]
async fn batched_statements_take_many_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("rows.db").display());
    many_rows(SqlStore::connect(&url).await.unwrap()).await;
    if let Some(url) = fresh_postgres_url("rows").await {
        many_rows(SqlStore::connect(&url).await.unwrap()).await;
    }
}
