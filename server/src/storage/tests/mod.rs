//! The storage contract suite. [`run_tests`] checks a store against the rules the engine
//! relies on; it runs against a real SQLite file and a real PostgreSQL database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batched_rows;
mod children;
mod combined;
mod events;
mod handoff_claim;
mod history;
mod keys;
mod obs;
mod queues;
mod resume_handoff;
mod runs;
mod schedules;
mod state;
mod triggers;
mod worker;

use std::sync::Arc;

use crate::engine::model::{ClaimRequest, JobSpec, NewRun, RetryPolicy, RunRecord, StartOutcome};
use crate::engine::store::Store;

use super::SqlStore;
use super::testing::fresh_postgres_url;

/// Runs every contract check against `store`.
pub async fn run_tests(store: Arc<dyn Store>) {
    runs::start_and_idempotency(&store).await;
    runs::concurrent_idempotent_starts(&store).await;
    runs::starts_together(&store).await;
    runs::list_and_filters(&store).await;
    runs::cancel_and_retry(&store).await;
    runs::namespace_isolation(&store).await;
    worker::claim_order_and_filters(&store).await;
    worker::start_and_claim(&store).await;
    handoff_claim::same_as_general_claim(&store).await;
    handoff_claim::limits_hold(&store).await;
    handoff_claim::order_with_other_runs(&store).await;
    handoff_claim::never_twice(&store).await;
    handoff_claim::direct_start_falls_back(&store).await;
    worker::lease_rules(&store).await;
    worker::steps_recorded_once(&store).await;
    worker::steps_recorded_together(&store).await;
    worker::completions_together(&store).await;
    worker::failure_and_backoff(&store).await;
    worker::lease_expiry(&store).await;
    worker::timers(&store).await;
    events::inbox_matching(&store).await;
    events::fan_out_and_dedup(&store).await;
    events::wait_timers(&store).await;
    events::cancel_waiting(&store).await;
    events::publish_suspend_race(&store, &store, 40).await;
    events::retention(&store).await;
    resume_handoff::publish_and_claim(&store).await;
    resume_handoff::triggered_runs_are_claimable(&store).await;
    children::child_wait_lifecycle(&store).await;
    children::cancel_cascade(&store).await;
    combined::any_and_all(&store).await;
    keys::key_lifecycle(&store).await;
    queues::config_lifecycle(&store).await;
    queues::starts_create_queues(&store).await;
    queues::priorities_and_fifo(&store).await;
    queues::delayed_runs(&store).await;
    queues::fairness_across_queues(&store).await;
    queues::concurrency_limit(&store).await;
    queues::key_concurrency_limit(&store).await;
    queues::rate_limit(&store).await;
    queues::pause_and_resume(&store).await;
    queues::queue_defaults(&store).await;
    queues::stats(&store).await;
    state::ttl_and_sweeper(&store).await;
    state::versions_and_compare_and_set(&store).await;
    state::concurrent_increments(&store).await;
    state::locks_and_fencing(&store).await;
    state::namespace_isolation(&store).await;
    state::listing(&store).await;
    state::journaled_calls(&store).await;
    state::run_tied_locks_end_with_the_run(&store).await;
    obs::timeline_follows_transitions(&store).await;
    obs::log_cap_and_marker(&store).await;
    obs::list_filters(&store).await;
    schedules::lifecycle(&store).await;
    schedules::firing_is_conditional_and_idempotent(&store).await;
    schedules::concurrent_firings_apply_once(&store).await;
    triggers::lifecycle_and_matching(&store).await;
    triggers::publish_starts_triggered_runs_once(&store).await;
}

pub(super) fn new_run(ns: &str, job: &str, queue: &str, now: i64) -> NewRun {
    NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        namespace: ns.to_owned(),
        job: job.to_owned(),
        queue: queue.to_owned(),
        payload: r#"{"n":1}"#.to_owned(),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_interval_ms: 100,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 1_000,
        },
        lease_timeout_ms: None,
        idempotency: None,
        now,
        available_at: now,
        priority: 0,
        concurrency_key: None,
        parent: None,
    }
}

pub(super) async fn start(store: &Arc<dyn Store>, new: NewRun) -> RunRecord {
    match store.start_run(new).await.unwrap() {
        StartOutcome::Created(r) => r,
        StartOutcome::Duplicate(r) => panic!("unexpected duplicate {}", r.id),
    }
}

pub(super) fn claim_req(
    ns: &str,
    queues: &[&str],
    jobs: &[&str],
    max: usize,
    now: i64,
) -> ClaimRequest {
    ClaimRequest {
        namespace: ns.to_owned(),
        worker_id: "w1".to_owned(),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        jobs: jobs
            .iter()
            .map(|j| JobSpec {
                name: (*j).to_owned(),
                lease_timeout_ms: None,
            })
            .collect(),
        max_tasks: max,
        default_lease_ms: 30_000,
        now,
    }
}

/// A namespace unique to one check, so checks never see each other's rows.
pub(super) fn ns(label: &str) -> String {
    format!(
        "{label}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// `b`'s wakeup listener (PostgreSQL), once it says it is connected (with its resync
/// wakeup), so that every later notification reaches it.
pub(super) async fn listening(
    b: &SqlStore,
) -> tokio::sync::mpsc::UnboundedReceiver<crate::engine::store::Wakeup> {
    use crate::engine::store::RunStore as _;
    let mut rx = b.subscribe().expect("PostgreSQL stores publish wakeups");
    loop {
        let w = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("the listener connects")
            .expect("the listener runs");
        if w == crate::engine::store::Wakeup::TimerAt(0) {
            return rx;
        }
    }
}

#[tokio::test]
async fn sqlite_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("contract.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    run_tests(Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_store_contract() {
    let Some(url) = fresh_postgres_url("contract").await else {
        return;
    };
    let store = SqlStore::connect(&url).await.unwrap();
    run_tests(Arc::new(store)).await;
}

#[tokio::test]
async fn history_limits_contract() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("history.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    history::run(Arc::new(store.with_history_limits(history::LIMITS))).await;
    if let Some(url) = fresh_postgres_url("history").await {
        let store = SqlStore::connect(&url).await.unwrap();
        history::run(Arc::new(store.with_history_limits(history::LIMITS))).await;
    }
}

#[tokio::test]
async fn postgres_completions_announce_capacity() {
    let Some(url) = fresh_postgres_url("capacity").await else {
        return;
    };
    let a = SqlStore::connect(&url).await.unwrap();
    let b = SqlStore::connect(&url).await.unwrap();
    queues::completions_announce_capacity(&a, &b).await;
}

#[tokio::test]
async fn handoff_claim_statements() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("handoff.db").display());
    handoff_claim::statements_per_handoff(Arc::new(SqlStore::connect(&url).await.unwrap())).await;
    if let Some(url) = fresh_postgres_url("handoff").await {
        handoff_claim::statements_per_handoff(Arc::new(SqlStore::connect(&url).await.unwrap()))
            .await;
    }
}

/// Inserts a queue row named `name`, then fails when `fail`.
async fn insert_queue_then(
    c: &sea_orm::DatabaseTransaction,
    ns: String,
    name: &'static str,
    fail: bool,
) -> crate::engine::EngineResult<()> {
    use sea_orm::{ConnectionTrait, Statement};
    let backend = c.get_database_backend();
    let sql = "INSERT INTO queues (namespace, name, paused, created_at, updated_at) \
               VALUES ($1, $2, false, 0, 0)";
    let sql = if backend == sea_orm::DbBackend::Sqlite {
        sql.replace('$', "?")
    } else {
        sql.to_owned()
    };
    c.execute_raw(Statement::from_sql_and_values(
        backend,
        sql,
        [ns.into(), name.into()],
    ))
    .await?;
    if fail {
        return Err(crate::engine::EngineError::invalid("refused after writing"));
    }
    Ok(())
}

/// A commit of one failing write (run without the writer's savepoint) leaves nothing of
/// it, answers its error, and the next write commits.
async fn lone_failed_write_rolls_back(store: &SqlStore) {
    use crate::engine::store::QueueStore;
    let ns = ns("lone-write");
    let n = ns.clone();
    let err = store
        .writer()
        .run(move |c| Box::pin(insert_queue_then(c, n, "gone", true)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused after writing"), "{err}");
    let n = ns.clone();
    store
        .writer()
        .run(move |c| Box::pin(insert_queue_then(c, n, "kept", false)))
        .await
        .unwrap();
    assert!(store.get_queue(&ns, "gone").await.unwrap().is_none());
    assert!(store.get_queue(&ns, "kept").await.unwrap().is_some());
}

#[tokio::test]
async fn lone_failed_write() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lone.db").display());
    lone_failed_write_rolls_back(&SqlStore::connect(&url).await.unwrap()).await;
    if let Some(url) = fresh_postgres_url("lone").await {
        lone_failed_write_rolls_back(&SqlStore::connect(&url).await.unwrap()).await;
    }
}

/// A commit of one completion runs without the writer's savepoint: a lone completion costs
/// `BEGIN`, the runs and attempts updates, the timeline flush and `COMMIT` on SQLite; when
/// its batched phase fails after writing (a trigger refuses the attempts update), the
/// transaction is restarted, the completion answers its error and nothing of it remains;
/// the writer then commits again.
async fn lone_completion_without_savepoint(store: &SqlStore) {
    use super::Backend;
    use crate::engine::model::{LeaseRef, RunStatus};
    use sea_orm::ConnectionTrait;
    use std::sync::atomic::Ordering::Relaxed;
    let dyn_store: Arc<dyn Store> = Arc::new(store.clone());
    let ns = ns("lone-completion");
    let lease_of = |t: &crate::engine::model::ClaimedTask| LeaseRef {
        namespace: ns.clone(),
        run_id: t.run.id.clone(),
        token: t.lease_token.clone(),
    };
    for _ in 0..2 {
        start(&dyn_store, new_run(&ns, "a", "q", 1_000)).await;
    }
    let tasks = dyn_store
        .claim(claim_req(&ns, &["q"], &["a"], 2, 1_000))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2);
    let stats = store.writer().stats();
    let before = stats.statements.load(Relaxed);
    dyn_store
        .complete_run(lease_of(&tasks[0]), "1".into(), 1_100)
        .await
        .unwrap();
    let used = stats.statements.load(Relaxed) - before;
    if store.backend() == Backend::Sqlite {
        assert_eq!(used, 5, "a lone completion: {used} statements");
    }
    let c = store.connection();
    let (create, drop) = match store.backend() {
        Backend::Sqlite => (
            vec![
                "CREATE TRIGGER refuse_end BEFORE UPDATE OF ended_at ON attempts \
                  WHEN NEW.ended_at IS NOT NULL \
                  BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END",
            ],
            "DROP TRIGGER refuse_end",
        ),
        Backend::Postgres => (
            vec![
                "CREATE FUNCTION refuse_end() RETURNS trigger AS $$ BEGIN \
                 RAISE EXCEPTION 'refused by the test trigger'; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse_end BEFORE UPDATE OF ended_at ON attempts FOR EACH ROW \
                 WHEN (NEW.ended_at IS NOT NULL) EXECUTE FUNCTION refuse_end()",
            ],
            "DROP TRIGGER refuse_end ON attempts",
        ),
    };
    for sql in create {
        c.execute_unprepared(sql).await.unwrap();
    }
    let err = dyn_store
        .complete_run(lease_of(&tasks[1]), "2".into(), 1_200)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("refused by the test trigger"),
        "{err}"
    );
    let d = dyn_store
        .get_run_detail(&ns, &tasks[1].run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.run.status, RunStatus::Running, "nothing half-written");
    assert_eq!(d.run.result, None);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].ended_at, None);
    assert_eq!(d.timeline.len(), 2, "created, attempt started");
    c.execute_unprepared(drop).await.unwrap();
    let run = dyn_store
        .complete_run(lease_of(&tasks[1]), "2".into(), 1_300)
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    let d = dyn_store
        .get_run_detail(&ns, &tasks[1].run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.timeline.len(), 3, "created, attempt started, completed");
}

#[tokio::test]
async fn lone_completion() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("lone-c.db").display());
    lone_completion_without_savepoint(&SqlStore::connect(&url).await.unwrap()).await;
    if let Some(url) = fresh_postgres_url("lone-c").await {
        lone_completion_without_savepoint(&SqlStore::connect(&url).await.unwrap()).await;
    }
}

#[tokio::test]
async fn postgres_batched_starts_wake_other_replicas() {
    let Some(url) = fresh_postgres_url("starts-wake").await else {
        return;
    };
    let a = SqlStore::connect(&url).await.unwrap();
    let b = SqlStore::connect(&url).await.unwrap();
    runs::batched_starts_wake_other_replicas(&a, &b).await;
}

#[tokio::test]
async fn waiting_runs_hold_no_queue_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("waiting.db").display());
    queues::waiting_runs_hold_no_capacity(&SqlStore::connect(&url).await.unwrap()).await;
    if let Some(url) = fresh_postgres_url("waiting").await {
        queues::waiting_runs_hold_no_capacity(&SqlStore::connect(&url).await.unwrap()).await;
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_with_full_sync() {
    use sea_orm::{ConnectionTrait, Statement};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pragmas.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    let db = store.connection();
    let q = |sql: &str| Statement::from_string(db.get_database_backend(), sql.to_owned());
    let mode: String = db
        .query_one_raw(q("PRAGMA journal_mode"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i32 = db
        .query_one_raw(q("PRAGMA synchronous"))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(sync, 2, "synchronous must be FULL (2)");
}

#[tokio::test]
async fn migrations_apply_twice_and_roll_back() {
    use stackshift_migrations::{Migrator, MigratorTrait};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mig.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    let db = store.connection();
    Migrator::up(db, None).await.unwrap();
    Migrator::down(db, None).await.unwrap();
    Migrator::up(db, None).await.unwrap();
    assert!(
        Migrator::get_pending_migrations(db)
            .await
            .unwrap()
            .is_empty()
    );
}
