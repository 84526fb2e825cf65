//! Connecting, migrating and reading: [`SqlStore`] and its `RunStore`/`KeyStore` impls.

use std::collections::HashSet;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use stackshift_migrations::{Migrator, MigratorTrait};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::EngineResult;
use crate::engine::model::{
    ApiKeyRecord, ClaimRequest, ClaimedTask, ExpiredLeases, FailOutcome, Failure, HeartbeatOutcome,
    LeaseRef, NewRun, NewStep, RunDetail, RunFilter, RunRecord, RunStatus, StartOutcome,
};
use crate::engine::queue_model::ClaimOutcome;
use crate::engine::store::{KeyStore, QueueStore, RunStore, Wakeup};

use super::claim_ops;
use super::complete_batch::CompleteWrite;
use super::convert::{attempt_from_model, run_from_model, step_from_model};
use super::entities::{attempts, runs, steps};
use super::error::StorageError;
use super::limits::LimitHit;
use super::step_batch::StepWrite;
use super::writer::{self, Writer, WriterStats};
use super::{child_ops, handoff_claim, key_ops, notify, queue_ops, run_ops, start_batch, wait_ops};

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file (WAL, `synchronous=FULL`).
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The sea-orm store.
#[derive(Clone)]
pub struct SqlStore {
    pub(super) db: DatabaseConnection,
    pub(super) writer: Writer,
    pub(super) backend: Backend,
    /// Identifies this store's notifications (PostgreSQL), so it ignores its own.
    pub(super) origin: Arc<str>,
    /// Where the next claim starts in its list of queues (round-robin fairness).
    pub(super) rotation: Arc<AtomicUsize>,
    /// `(namespace, queue)` rows known to exist (queues are never deleted), so a start on a
    /// known queue skips the read that creates a missing one. Filled only after a commit.
    pub(super) known_queues: Arc<Mutex<HashSet<(String, String)>>>,
}

/// Normalizes a database URL: a bare path means a SQLite file.
pub fn normalize_url(url: &str) -> Result<(String, Backend), StorageError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((url.to_owned(), Backend::Postgres))
    } else if url.starts_with("sqlite:") {
        Ok((url.to_owned(), Backend::Sqlite))
    } else if url.contains("://") {
        Err(StorageError::Url(format!(
            "unsupported scheme in {:?}: use sqlite://PATH or postgres://...",
            url.split("://").next().unwrap_or_default()
        )))
    } else {
        Ok((format!("sqlite://{url}"), Backend::Sqlite))
    }
}

impl SqlStore {
    /// Connects, applies pending migrations and starts the writer.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let (url, backend) = normalize_url(url)?;
        let mut opts = ConnectOptions::new(url);
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10));
        match backend {
            Backend::Sqlite => {
                opts.max_connections(8).min_connections(1);
                opts.map_sqlx_sqlite_opts(|o| {
                    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                    o.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Full)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                });
            }
            Backend::Postgres => {
                // Each pooled connection prepares and plans its own statements (the first
                // five executions of each with custom plans), so fewer connections plan
                // less: `replicas` measured 0.7-1.0 PostgreSQL CPU-s per 1,000 runs with 8
                // against 1.0-1.3 with 32 (docs/performance.md, round 5). The writers use
                // two; the rest serve reads, which are short.
                opts.max_connections(8).min_connections(2);
                // A fixed statement text would get a cached generic plan after five
                // executions, planned once for the table size of that moment: a seq scan
                // planned on a near-empty `runs` then scans the grown table on every call
                // until the next autoanalyze. Custom plans follow the table; statements
                // stay prepared (no parse/describe per call).
                opts.map_sqlx_postgres_opts(|o| {
                    o.options([("plan_cache_mode", "force_custom_plan")])
                });
            }
        }
        let mut db = Database::connect(opts).await?;
        Migrator::up(&db, None).await?;
        // PostgreSQL: two writers overlap one commit's fsync with the next batch; four
        // split the writes into twice as many commits of half the size (`replicas`
        // measured 3.7 statements per run with two, 4.8 with four; docs/performance.md).
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 2,
        };
        let stats = Arc::new(WriterStats::default());
        let counted = stats.clone();
        db.set_metric_callback(move |_| writer::count_statement(&counted));
        let origin: Arc<str> = uuid::Uuid::now_v7().simple().to_string().into();
        let writer = Writer::spawn(
            db.clone(),
            writers,
            backend == Backend::Sqlite,
            (backend == Backend::Postgres).then(|| origin.clone()),
            stats,
        );
        Ok(Self {
            db,
            writer,
            backend,
            origin,
            rotation: Arc::new(AtomicUsize::new(0)),
            known_queues: Arc::default(),
        })
    }

    /// Runs a write and, on PostgreSQL, publishes the wakeups it implies in the same
    /// transaction (so other replicas hear of it exactly when it commits).
    pub(super) async fn write_notify<T, F, W>(&self, f: F, wakeups: W) -> EngineResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, EngineResult<T>>
            + Send
            + 'static,
        W: Fn(&T) -> Vec<Wakeup> + Send + 'static,
    {
        self.write_released(f, wakeups, |_: &T| Vec::new()).await
    }

    /// Starts a run and, with `claim`, claims for it in the same transaction (see
    /// `QueueStore::start_and_claim`; the `usize` is the claim's queue rotation).
    pub(super) async fn start_with(
        &self,
        new: NewRun,
        claim: Option<(ClaimRequest, usize)>,
    ) -> EngineResult<(StartOutcome, ClaimOutcome)> {
        let key = (new.namespace.clone(), new.queue.clone());
        let known = self
            .known_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key);
        if known && claim.is_none() && new.idempotency.is_none() {
            // A plain start: inserted with the batch's other plain starts (`start_batch`;
            // on PostgreSQL the writer publishes its wakeup, see `start_batch::publish`).
            let out = self.writer.start_run(new).await?;
            return Ok((out, ClaimOutcome::default()));
        }
        let out = self
            .write_notify(
                move |c| {
                    Box::pin(async move {
                        if let Some(run) = run_ops::take_idempotency_key(c, &new).await? {
                            let out = StartOutcome::Duplicate(run);
                            return Ok((out, ClaimOutcome::default()));
                        }
                        let Some((req, rotation)) =
                            claim.filter(|(req, _)| new.available_at <= req.now)
                        else {
                            let run = run_ops::insert_run(c, &new).await?;
                            ensure_queue(c, known, &new).await?;
                            return Ok((StartOutcome::Created(run), ClaimOutcome::default()));
                        };
                        // Handed to a parked poll: inserted already running when nothing
                        // else is claimable for the poll (`handoff_claim::insert_claimed`),
                        // else inserted queued and claimed by the general claim.
                        if let Some((run, task)) =
                            handoff_claim::insert_claimed(c, &new, &req).await?
                        {
                            ensure_queue(c, known, &new).await?;
                            let claim = ClaimOutcome {
                                tasks: vec![task],
                                ..Default::default()
                            };
                            return Ok((StartOutcome::Created(run), claim));
                        }
                        let run = run_ops::insert_run(c, &new).await?;
                        ensure_queue(c, known, &new).await?;
                        let claim =
                            claim_ops::claim_in_savepoint(c, req, rotation, "start").await?;
                        Ok((StartOutcome::Created(run), claim))
                    })
                },
                |(out, _): &(StartOutcome, ClaimOutcome)| match out {
                    StartOutcome::Created(r) => vec![start_batch::wakeup(r)],
                    StartOutcome::Duplicate(_) => vec![],
                },
            )
            .await?;
        if !known && let StartOutcome::Created(_) = &out.0 {
            // Committed: the queue row exists from now on.
            self.known_queues
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key);
        }
        Ok(out)
    }

    /// Sets the per-run history limits this store enforces (defaults: see
    /// [`HistoryLimits`](crate::engine::history::HistoryLimits)). Call before sharing the
    /// store.
    pub fn with_history_limits(self, limits: crate::engine::history::HistoryLimits) -> Self {
        self.writer.set_history_limits(limits);
        self
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The group-commit writer (for statistics).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The underlying connection (tests use it to inspect rows).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Closes the pool after pending writes were answered.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

/// Creates the queue of a started run with the defaults when it is named for the first
/// time (`known`: the queue row exists).
async fn ensure_queue(c: &DatabaseTransaction, known: bool, new: &NewRun) -> EngineResult<()> {
    if known {
        return Ok(());
    }
    queue_ops::ensure(c, &new.namespace, &new.queue, new.now).await
}

fn ready(r: &RunRecord) -> Wakeup {
    Wakeup::Ready {
        namespace: r.namespace.clone(),
        queue: r.queue.clone(),
        job: r.job.clone(),
    }
}

#[async_trait]
impl RunStore for SqlStore {
    fn subscribe(&self) -> Option<UnboundedReceiver<Wakeup>> {
        (self.backend == Backend::Postgres)
            .then(|| notify::spawn_listener(&self.db, self.origin.to_string()))
    }

    async fn start_run(&self, new: NewRun) -> EngineResult<StartOutcome> {
        Ok(self.start_with(new, None).await?.0)
    }

    async fn get_run(&self, namespace: &str, run_id: &str) -> EngineResult<Option<RunRecord>> {
        let row = runs::Entity::find_by_id(run_id.to_owned())
            .filter(runs::Column::Namespace.eq(namespace))
            .one(&self.db)
            .await?;
        Ok(row.map(run_from_model).transpose()?)
    }

    async fn get_run_detail(
        &self,
        namespace: &str,
        run_id: &str,
    ) -> EngineResult<Option<RunDetail>> {
        let Some(run) = self.get_run(namespace, run_id).await? else {
            return Ok(None);
        };
        let attempts = attempts::Entity::find()
            .filter(attempts::Column::RunId.eq(run_id))
            .order_by_asc(attempts::Column::Number)
            .all(&self.db)
            .await?
            .into_iter()
            .map(attempt_from_model)
            .collect::<Result<Vec<_>, _>>()?;
        let steps = steps::Entity::find()
            .filter(steps::Column::RunId.eq(run_id))
            .order_by_asc(steps::Column::CompletedAt)
            .order_by_asc(steps::Column::StepId)
            .all(&self.db)
            .await?
            .into_iter()
            .map(step_from_model)
            .collect::<Result<Vec<_>, _>>()?;
        let wait = if run.status == RunStatus::Waiting {
            wait_ops::get(&self.db, run_id).await?
        } else {
            None
        };
        let timeline = super::timeline_ops::load(&self.db, run_id, 0).await?;
        let logs = super::timeline_ops::load_logs(&self.db, run_id, 0).await?;
        Ok(Some(RunDetail {
            run,
            attempts,
            steps,
            wait,
            timeline,
            logs,
        }))
    }

    async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<RunRecord>> {
        let mut q = runs::Entity::find().filter(runs::Column::Namespace.eq(namespace));
        if let Some(job) = &filter.job {
            q = q.filter(runs::Column::Job.eq(job.as_str()));
        }
        if let Some(queue) = &filter.queue {
            q = q.filter(runs::Column::Queue.eq(queue.as_str()));
        }
        if let Some(status) = filter.status {
            q = q.filter(runs::Column::Status.eq(status.as_str()));
        }
        if let Some(key) = &filter.idempotency_key {
            q = q.filter(runs::Column::IdempotencyKey.eq(key.as_str()));
        }
        // Run ids are UUIDv7 (creation time in their first 48 bits), so a creation-time
        // range is also an id range: bound the id (with 1 s of slack for the instant the id
        // was generated) so the `(namespace, id)` index seeks, and filter exactly on
        // created_at.
        if let Some(after) = filter.created_after {
            q = q
                .filter(runs::Column::Id.gte(uuid7_prefix(after - 1_000)))
                .filter(runs::Column::CreatedAt.gte(after));
        }
        if let Some(before) = filter.created_before {
            q = q
                .filter(runs::Column::Id.lt(uuid7_prefix(before + 1_000)))
                .filter(runs::Column::CreatedAt.lt(before));
        }
        if let Some(cursor) = cursor {
            q = q.filter(runs::Column::Id.lt(cursor));
        }
        Ok(q.order_by_desc(runs::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(run_from_model)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn claim(&self, req: ClaimRequest) -> EngineResult<Vec<ClaimedTask>> {
        Ok(self.claim_queued(req).await?.tasks)
    }

    async fn heartbeat(&self, lease: LeaseRef, now: i64) -> EngineResult<HeartbeatOutcome> {
        self.writer
            .run(move |c| Box::pin(run_ops::heartbeat(c, lease, now)))
            .await
    }

    async fn complete_step(&self, lease: LeaseRef, step: NewStep, now: i64) -> EngineResult<bool> {
        match self
            .writer
            .record_step(StepWrite { lease, step, now })
            .await?
        {
            Ok(replayed) => Ok(replayed),
            Err(hit) => {
                if self.backend == Backend::Postgres {
                    // The failed run released its queue's capacity: tell the other
                    // replicas (the refusal itself is already committed).
                    let released = hit.released();
                    let notified = self
                        .write_released(
                            |_| Box::pin(async { Ok(()) }),
                            |_: &()| vec![],
                            move |_: &()| released.clone(),
                        )
                        .await;
                    if let Err(e) = notified {
                        tracing::warn!(error = %e, "cannot announce the capacity a step-limited run released");
                    }
                }
                Err(LimitHit::into_error(hit))
            }
        }
    }

    async fn complete_run(
        &self,
        lease: LeaseRef,
        result: String,
        now: i64,
    ) -> EngineResult<RunRecord> {
        // Applied with the batch's other completions; on PostgreSQL the writer publishes
        // the capacity they release once per queue and batch (`writer`).
        self.writer
            .complete_run(CompleteWrite { lease, result, now })
            .await
    }

    async fn fail_run(
        &self,
        lease: LeaseRef,
        failure: Failure,
        now: i64,
    ) -> EngineResult<FailOutcome> {
        self.write_released(
            move |c| Box::pin(run_ops::fail_run(c, lease, failure, now)),
            |out: &FailOutcome| {
                out.next_attempt_at
                    .map(Wakeup::TimerAt)
                    .into_iter()
                    .collect()
            },
            |out: &FailOutcome| vec![(out.run.namespace.clone(), out.run.queue.clone())],
        )
        .await
    }

    async fn cancel_run(
        &self,
        namespace: &str,
        run_id: &str,
        reason: Failure,
        now: i64,
    ) -> EngineResult<RunRecord> {
        let (ns, id) = (namespace.to_owned(), run_id.to_owned());
        self.write_released(
            move |c| {
                Box::pin(async move {
                    let (run, _descendants) =
                        child_ops::cancel_tree(c, &ns, &id, reason, now).await?;
                    Ok(run)
                })
            },
            |_: &RunRecord| vec![],
            |r: &RunRecord| vec![(r.namespace.clone(), r.queue.clone())],
        )
        .await
    }

    async fn retry_run(&self, namespace: &str, run_id: &str, now: i64) -> EngineResult<RunRecord> {
        let (ns, id) = (namespace.to_owned(), run_id.to_owned());
        self.write_notify(
            move |c| Box::pin(async move { run_ops::retry_run(c, &ns, &id, now).await }),
            |r: &RunRecord| vec![ready(r)],
        )
        .await
    }

    async fn expire_leases(&self, now: i64, limit: u64) -> EngineResult<ExpiredLeases> {
        // Cheap read first: the common case is "nothing expired", which needs no write.
        let any = runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
            .filter(runs::Column::LeaseExpiresAt.lte(now))
            .limit(1)
            .into_tuple::<String>()
            .one(&self.db)
            .await?;
        if any.is_none() {
            return Ok(ExpiredLeases::default());
        }
        self.write_released(
            move |c| Box::pin(run_ops::expire_leases(c, now, limit)),
            |out: &ExpiredLeases| {
                out.requeued
                    .iter()
                    .map(|(namespace, queue, job)| Wakeup::Ready {
                        namespace: namespace.clone(),
                        queue: queue.clone(),
                        job: job.clone(),
                    })
                    .collect()
            },
            |out: &ExpiredLeases| out.released.clone(),
        )
        .await
    }

    async fn due_runs(
        &self,
        after: i64,
        until: i64,
        limit: u64,
    ) -> EngineResult<Vec<(String, String, String)>> {
        Ok(runs::Entity::find()
            .select_only()
            .column(runs::Column::Namespace)
            .column(runs::Column::Queue)
            .column(runs::Column::Job)
            .filter(runs::Column::Status.eq(RunStatus::Queued.as_str()))
            .filter(runs::Column::AvailableAt.gt(after))
            .filter(runs::Column::AvailableAt.lte(until))
            .order_by_asc(runs::Column::AvailableAt)
            .limit(limit)
            .into_tuple::<(String, String, String)>()
            .all(&self.db)
            .await?)
    }

    async fn next_due(&self, after: i64) -> EngineResult<Option<i64>> {
        let next_ready = runs::Entity::find()
            .select_only()
            .column_as(
                Expr::from(Func::min(Expr::col(runs::Column::AvailableAt))),
                "m",
            )
            .filter(runs::Column::Status.eq(RunStatus::Queued.as_str()))
            .filter(runs::Column::AvailableAt.gt(after))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten();
        let next_lease = runs::Entity::find()
            .select_only()
            .column_as(
                Expr::from(Func::min(Expr::col(runs::Column::LeaseExpiresAt))),
                "m",
            )
            .filter(runs::Column::Status.eq(RunStatus::Running.as_str()))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten();
        let next_wake = wait_ops::next_wake(&self.db).await?;
        Ok([next_ready, next_lease, next_wake]
            .into_iter()
            .flatten()
            .min())
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn insert_key(&self, key: ApiKeyRecord) -> EngineResult<()> {
        self.writer
            .run(move |c| Box::pin(key_ops::insert(c, key)))
            .await
    }

    async fn list_keys(&self) -> EngineResult<Vec<ApiKeyRecord>> {
        key_ops::list(&self.db).await
    }

    async fn revoke_key(&self, id: &str, now: i64) -> EngineResult<bool> {
        let id = id.to_owned();
        self.writer
            .run(move |c| Box::pin(async move { key_ops::revoke(c, &id, now).await }))
            .await
    }

    async fn find_active_key(&self, key_hash: &str) -> EngineResult<Option<ApiKeyRecord>> {
        key_ops::find_active(&self.db, key_hash).await
    }

    async fn count_active_keys(&self) -> EngineResult<u64> {
        key_ops::count_active(&self.db).await
    }
}

/// The first 13 characters of a UUIDv7 string made at `ms` (`xxxxxxxx-xxxx`): every id
/// made at or after `ms` sorts at or above it, every id made before sorts below.
fn uuid7_prefix(ms: i64) -> String {
    let hex = format!("{:012x}", ms.clamp(0, (1 << 48) - 1));
    format!("{}-{}", &hex[..8], &hex[8..])
}
