//! Group commit. Every write is a closure queued to writer tasks; a writer takes all
//! queued closures (up to [`MAX_BATCH`]), runs each inside its own savepoint of one
//! transaction, commits once, and only then answers each caller. The savepoint is managed
//! by hand (`RELEASE SAVEPOINT w; SAVEPOINT w` in one round trip between two writes)
//! because on SQLite every statement is a round trip to the connection's thread. Concurrent writers thus
//! share one durable commit (one fsync on SQLite with `synchronous=FULL`), and a failing
//! write rolls back its own savepoint without affecting the others in the batch. A commit
//! holding a single write opens no savepoint (that write failing rolls the whole
//! transaction back: the same outcome, one round trip fewer); when it is a step result,
//! completion or start whose batched phase fails, the transaction is rolled back and begun
//! again, and the write runs on its own (see `Savepoint::restart`).
//!
//! Timeline entries of a batch are admitted under the runs' timeline caps and inserted
//! together just before the commit (see `timeline_ops::deferred`), and so are the batch's
//! PostgreSQL notifications (`notify::deferred`: each distinct payload once); a write that
//! rolls back its savepoint drops its entries and notifications. Every batch runs with the
//! writer's history limits in force (`super::limits`; [`Writer::set_history_limits`]).
//! Step results, completions and plain starts are typed jobs applied together (`step_batch`,
//! `complete_batch`, `start_batch`) on both stores.
//!
//! SQLite gets one writer task (SQLite has one writer anyway, and this avoids busy
//! errors); PostgreSQL gets several, so commits overlap.

use std::sync::{Arc, PoisonError, RwLock};

use futures::future::BoxFuture;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, IsolationLevel,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::complete_batch::{self, CompleteWrite};
use super::limits::Limited;
use super::step_batch::{self, StepWrite};
use super::{notify, queue_store, run_ops, start_batch, timeline_ops};
use crate::engine::history::HistoryLimits;
use crate::engine::model::{NewRun, RunRecord, StartOutcome};
use crate::engine::{EngineError, EngineResult};

/// Most writes in one commit.
pub const MAX_BATCH: usize = 512;

type Finish = Box<dyn FnOnce(EngineResult<()>) + Send>;
type Body =
    Box<dyn for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, (bool, Finish)> + Send>;

/// A queued write.
enum Job {
    /// Any write: a closure run in its own savepoint.
    Body(Body),
    /// A step result, recorded with the batch's other step results in one statement
    /// (`step_batch`); the caller learns whether it was recorded before, or that the step
    /// limit refused it (and failed the run).
    Step(StepWrite, oneshot::Sender<EngineResult<Limited<bool>>>),
    /// A run completion, applied with the batch's other completions (`complete_batch`).
    Complete(CompleteWrite, oneshot::Sender<EngineResult<RunRecord>>),
    /// A plain start (see `start_batch` for which starts are plain), inserted with the
    /// batch's other plain starts; on PostgreSQL its wakeup is published in the batch.
    Start(Box<NewRun>, oneshot::Sender<EngineResult<StartOutcome>>),
}

/// Observed batch sizes, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Commits performed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Writes committed.
    pub writes: std::sync::atomic::AtomicU64,
    /// Statements (round trips to the database) the writer ran: the writes' own statements
    /// (counted by the connection's metric callback, see [`count_statement`]) plus the
    /// writer's `BEGIN`, savepoints and `COMMIT` (run unprepared, so counted by hand).
    pub statements: std::sync::atomic::AtomicU64,
    /// Commits by batch size: bucket `i` counts batches of at most `2^i` writes
    /// (cumulative buckets are derived at scrape time; see `BATCH_BUCKETS`).
    pub batches: [std::sync::atomic::AtomicU64; BATCH_BUCKETS],
}

/// Buckets of the batch-size histogram: 1, 2, 4, ..., 512 (= [`MAX_BATCH`]) writes.
pub const BATCH_BUCKETS: usize = 10;

/// Handle used to submit writes.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
    /// History limits in force in every write of this writer (see `super::limits`).
    limits: Arc<RwLock<HistoryLimits>>,
}

/// Counts one statement in `stats` when it runs inside a writer task (install as the
/// connection's metric callback; statements on the read pool are not counted).
pub fn count_statement(stats: &WriterStats) {
    if timeline_ops::in_writer() {
        stats
            .statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Writer {
    /// Spawns `tasks` writer tasks over `db`, counting into `stats`.
    ///
    /// `origin` (PostgreSQL): the store's notification origin; the writer then publishes,
    /// in each batch's transaction, the queue capacity its completions released (see
    /// [`Writer::complete_run`]).
    pub fn spawn(
        db: DatabaseConnection,
        tasks: usize,
        sqlite: bool,
        origin: Option<Arc<str>>,
        stats: Arc<WriterStats>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(16 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        let limits = Arc::new(RwLock::new(HistoryLimits::default()));
        for _ in 0..tasks.max(1) {
            let writes = writer_loop(
                db.clone(),
                rx.clone(),
                stats.clone(),
                sqlite,
                origin.clone(),
                limits.clone(),
            );
            tokio::spawn(super::limits::scope(
                HistoryLimits::default(),
                timeline_ops::deferred(writes),
            ));
        }
        Self { tx, stats, limits }
    }

    /// Sets the history limits the writes of this writer (every handle) enforce from its
    /// next batch on.
    pub fn set_history_limits(&self, limits: HistoryLimits) {
        *self.limits.write().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    /// Commit statistics.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Runs `f` inside the next group commit and returns its result once committed.
    pub async fn run<T, F>(&self, f: F) -> EngineResult<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, EngineResult<T>>
            + Send
            + 'static,
    {
        let (otx, orx) = oneshot::channel::<EngineResult<T>>();
        let job: Body = Box::new(move |txn| {
            Box::pin(async move {
                let out = f(txn).await;
                let ok = out.is_ok();
                let finish: Finish = Box::new(move |commit: EngineResult<()>| {
                    let _ = otx.send(commit.and(out));
                });
                (ok, finish)
            })
        });
        self.submit(Job::Body(job), orx).await
    }

    /// Records a step result in the next group commit (see [`step_batch`]); true when the
    /// step had a result already; a refusal by the step limit (the run failed) otherwise.
    pub async fn record_step(&self, write: StepWrite) -> EngineResult<Limited<bool>> {
        let (otx, orx) = oneshot::channel();
        self.submit(Job::Step(write, otx), orx).await
    }

    /// Completes a run in the next group commit (see [`complete_batch`]). On PostgreSQL the
    /// batch's completions also announce the capacity they released on limited queues:
    /// one `Capacity` notification per queue and batch, in the batch's transaction.
    pub async fn complete_run(&self, write: CompleteWrite) -> EngineResult<RunRecord> {
        let (otx, orx) = oneshot::channel();
        self.submit(Job::Complete(write, otx), orx).await
    }

    /// Starts a plain run in the next group commit (see [`start_batch`]). On PostgreSQL the
    /// batch also publishes the run's wakeup for other replicas, in its transaction.
    pub async fn start_run(&self, new: NewRun) -> EngineResult<StartOutcome> {
        let (otx, orx) = oneshot::channel();
        self.submit(Job::Start(Box::new(new), otx), orx).await
    }

    async fn submit<T>(
        &self,
        job: Job,
        orx: oneshot::Receiver<EngineResult<T>>,
    ) -> EngineResult<T> {
        self.tx
            .send(job)
            .await
            .map_err(|_| EngineError::Unavailable("the store writer has stopped".into()))?;
        orx.await.map_err(|_| {
            EngineError::Unavailable("the write was not committed: the store is unavailable".into())
        })?
    }
}

/// Answers a batched write once the commit's outcome is known.
fn reply_finish<T: Send + 'static>(
    reply: oneshot::Sender<EngineResult<T>>,
    out: EngineResult<T>,
) -> Finish {
    Box::new(move |commit: EngineResult<()>| {
        let _ = reply.send(commit.and(out));
    })
}

async fn writer_loop(
    db: DatabaseConnection,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    stats: Arc<WriterStats>,
    sqlite: bool,
    origin: Option<Arc<str>>,
    limits: Arc<RwLock<HistoryLimits>>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        super::limits::set(*limits.read().unwrap_or_else(PoisonError::into_inner));
        let options = TransactionOptions {
            isolation_level: (!sqlite).then_some(IsolationLevel::ReadCommitted),
            access_mode: (!sqlite).then_some(AccessMode::ReadWrite),
            sqlite_transaction_mode: sqlite.then_some(SqliteTransactionMode::Immediate),
        };
        let mut txn = match db.begin_with_options(options).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "cannot begin a transaction");
                batch.clear(); // callers get `Unavailable`
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut finishers = Vec::with_capacity(batch.len());
        // A commit of one write needs no savepoint: when that write fails, the whole
        // transaction rolls back instead (one round trip fewer per commit at low load); a
        // failed batched phase of a lone step result, completion or start restarts the
        // transaction (see `batched`).
        let single = batch.len() == 1;
        let mut sp = if single {
            Savepoint {
                broken: None,
                statements: 1, // BEGIN
                dirty: false,
                open: false,
                discard: false,
                restart: false,
            }
        } else {
            Savepoint {
                broken: txn.execute_unprepared("SAVEPOINT w").await.err(),
                statements: 2, // BEGIN, SAVEPOINT
                dirty: false,
                open: true,
                discard: false,
                restart: false,
            }
        };
        timeline_ops::rollback_to(Default::default());
        // First the batch's step results, together (see `Savepoint` for `w`).
        let steps: Vec<&StepWrite> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Step(w, _) => Some(w),
                _ => None,
            })
            .collect();
        let recorded = batched(
            &txn,
            &mut sp,
            "step results",
            steps.len(),
            step_batch::record(&txn, &steps),
            |flags: &Vec<bool>| flags.iter().any(|f| *f),
        )
        .await
        .unwrap_or_else(|| vec![false; steps.len()]);
        drop(steps);
        // Then the completions, together, in a savepoint of their own.
        let completions: Vec<&CompleteWrite> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Complete(w, _) => Some(w),
                _ => None,
            })
            .collect();
        let completed = batched(
            &txn,
            &mut sp,
            "completions",
            completions.len(),
            async {
                let runs = complete_batch::apply(&txn, &completions).await?;
                if let Some(origin) = &origin {
                    let released = runs
                        .iter()
                        .flatten()
                        .map(|r| (r.namespace.clone(), r.queue.clone()))
                        .collect();
                    queue_store::publish_released(&txn, origin, released).await?;
                }
                EngineResult::Ok(runs)
            },
            |runs: &Vec<Option<RunRecord>>| runs.iter().any(Option::is_some),
        )
        .await
        .unwrap_or_default();
        drop(completions);
        // Then the plain starts, together, in a savepoint of their own.
        let starts: Vec<&NewRun> = batch
            .iter()
            .filter_map(|j| match j {
                Job::Start(n, _) => Some(&**n),
                _ => None,
            })
            .collect();
        let started = batched(
            &txn,
            &mut sp,
            "starts",
            starts.len(),
            async {
                let runs = start_batch::insert(&txn, &starts).await?;
                if let Some(origin) = &origin {
                    start_batch::publish(&txn, origin, &runs).await?;
                }
                EngineResult::Ok(runs)
            },
            |_: &Vec<RunRecord>| true,
        )
        .await
        .unwrap_or_default();
        drop(starts);
        // A restart happens only in a commit of one write (no `w`), so at most one of the
        // three phases above had work, and the phases after a failed one did nothing.
        if sp.restart {
            match restart(&db, options, txn, &mut sp, &stats).await {
                Some(t) => txn = t,
                None => {
                    batch.clear(); // the caller gets `Unavailable`
                    continue;
                }
            }
        }
        let mut recorded = recorded.into_iter();
        let mut completed = completed.into_iter();
        let mut started = started.into_iter();
        for job in batch.drain(..) {
            if sp.broken.is_some() {
                break; // the remaining callers get `Unavailable`
            }
            let body: Body = match job {
                Job::Step(w, reply) => {
                    if recorded.next().unwrap_or(false) {
                        finishers.push(reply_finish(reply, Ok(Ok(false))));
                        continue;
                    }
                    Box::new(move |txn| {
                        Box::pin(async move {
                            let out = run_ops::complete_step(txn, w.lease, w.step, w.now).await;
                            (out.is_ok(), reply_finish(reply, out))
                        })
                    })
                }
                Job::Complete(w, reply) => {
                    if let Some(run) = completed.next().flatten() {
                        finishers.push(reply_finish(reply, Ok(run)));
                        continue;
                    }
                    let origin = origin.clone();
                    Box::new(move |txn| {
                        Box::pin(async move {
                            let mut out =
                                run_ops::complete_run(txn, w.lease, w.result, w.now).await;
                            if let (Ok(run), Some(origin)) = (&out, origin) {
                                let released = vec![(run.namespace.clone(), run.queue.clone())];
                                if let Err(e) =
                                    queue_store::publish_released(txn, &origin, released).await
                                {
                                    out = Err(e);
                                }
                            }
                            (out.is_ok(), reply_finish(reply, out))
                        })
                    })
                }
                Job::Start(new, reply) => {
                    if let Some(run) = started.next() {
                        finishers.push(reply_finish(reply, Ok(StartOutcome::Created(run))));
                        continue;
                    }
                    let origin = origin.clone();
                    Box::new(move |txn| {
                        Box::pin(async move {
                            let mut out = run_ops::start_run(txn, *new).await;
                            if let (Ok(StartOutcome::Created(run)), Some(origin)) = (&out, origin)
                                && let Err(e) =
                                    start_batch::publish(txn, &origin, std::slice::from_ref(run))
                                        .await
                            {
                                out = Err(e);
                            }
                            (out.is_ok(), reply_finish(reply, out))
                        })
                    })
                }
                Job::Body(body) => body,
            };
            if !sp.fresh(&txn).await {
                break;
            }
            let mark = timeline_ops::mark();
            let (ok, finish) = body(&txn).await;
            finishers.push(finish);
            if ok {
                sp.dirty = true;
            } else if sp.open {
                sp.undo(&txn, mark).await;
            } else {
                // The batch's only write failed: roll the transaction back (below).
                timeline_ops::rollback_to(mark);
                sp.discard = true;
            }
        }
        batch.clear();
        let n = finishers.len() as u64;
        if sp.discard {
            // Nothing to commit; the write answers its own error.
            stats
                .statements
                .fetch_add(sp.statements + 1, std::sync::atomic::Ordering::Relaxed);
            let _ = txn.rollback().await;
            timeline_ops::rollback_to(Default::default());
            for finish in finishers {
                finish(Ok(()));
            }
            continue;
        }
        let mut broken = sp.broken.map(EngineError::from);
        if broken.is_none() {
            // Its statements are counted by the connection's metric callback.
            if let Err(e) = timeline_ops::flush(&txn).await {
                broken = Some(e);
            } else if let Err(e) = notify::flush(&txn).await {
                broken = Some(e);
            }
        }
        timeline_ops::rollback_to(Default::default());
        sp.statements += 1; // COMMIT or ROLLBACK
        stats
            .statements
            .fetch_add(sp.statements, std::sync::atomic::Ordering::Relaxed);
        let result = match broken {
            Some(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
            None => txn.commit().await.map_err(EngineError::from),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, writes = n, "group commit failed");
        } else {
            use std::sync::atomic::Ordering::Relaxed;
            stats.commits.fetch_add(1, Relaxed);
            stats.writes.fetch_add(n, Relaxed);
            let bucket = (64 - n.saturating_sub(1).leading_zeros()) as usize;
            stats.batches[bucket.min(BATCH_BUCKETS - 1)].fetch_add(1, Relaxed);
        }
        for finish in finishers {
            finish(result.clone());
        }
    }
}

/// The writer's savepoint `w` within one group commit: `w` holds the work of earlier
/// writes; the next write that runs statements first releases it and opens a fresh one
/// (one round trip), and a failed write rolls back to `w`, which stays open and empty.
/// A commit of a single write opens no `w`: a failure of that write rolls the whole
/// transaction back; when it is a batched write (step result, completion, start) whose
/// batched phase failed, the transaction is rolled back and begun again (`restart`), and
/// the write then runs on its own, with its precise outcome.
struct Savepoint {
    /// The error that broke the transaction: the remaining writes get `Unavailable`.
    broken: Option<DbErr>,
    /// Round trips the writer itself ran (`BEGIN`, savepoints, `COMMIT`).
    statements: u64,
    /// Whether `w` holds work that must be released before the next write.
    dirty: bool,
    /// Whether `w` was opened (not for a commit of one plain write).
    open: bool,
    /// The commit's only write (run without `w`) failed: roll back instead of committing.
    discard: bool,
    /// The batched phase of the commit's only write (run without `w`) failed and may have
    /// written part of its work: the transaction must be rolled back and begun again.
    restart: bool,
}

impl Savepoint {
    /// Releases `w` and opens a fresh one when it holds work; false when the transaction
    /// is broken.
    async fn fresh(&mut self, txn: &DatabaseTransaction) -> bool {
        if self.broken.is_none() && self.dirty && self.open {
            self.statements += 1;
            self.broken = txn
                .execute_unprepared("RELEASE SAVEPOINT w; SAVEPOINT w")
                .await
                .err();
            self.dirty = false;
        }
        self.broken.is_none()
    }

    /// Undoes the last write: its buffered timeline entries and notifications from `mark`
    /// on, and its statements back to `w`.
    async fn undo(&mut self, txn: &DatabaseTransaction, mark: timeline_ops::Mark) {
        timeline_ops::rollback_to(mark);
        self.statements += 1;
        if let Err(e) = txn.execute_unprepared("ROLLBACK TO SAVEPOINT w").await {
            self.broken = Some(e);
        }
    }
}

/// Runs one batched phase of a group commit (`what`: `n` step results, completions or
/// starts written by `work` in one go) in a fresh savepoint. `None` when it fails (undone;
/// each of its writes then runs on its own, with its precise outcome) or the transaction
/// is broken. `wrote` tells whether the outcome left work in the savepoint.
async fn batched<T, E: std::fmt::Display>(
    txn: &DatabaseTransaction,
    sp: &mut Savepoint,
    what: &'static str,
    n: usize,
    work: impl Future<Output = Result<T, E>>,
    wrote: impl FnOnce(&T) -> bool,
) -> Option<T> {
    if n == 0 || !sp.fresh(txn).await {
        return None;
    }
    let mark = timeline_ops::mark();
    match work.await {
        Ok(out) => {
            sp.dirty = wrote(&out);
            Some(out)
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = n, "batched {what} failed");
            if sp.open {
                sp.undo(txn, mark).await;
            } else {
                // No `w` to roll back to: the whole transaction is restarted.
                timeline_ops::rollback_to(mark);
                sp.restart = true;
            }
            None
        }
    }
}

/// Rolls back `txn`, whose only write's batched phase failed (`Savepoint::restart`), and
/// begins a fresh transaction for that write to run on its own. `None` when it cannot
/// begin (logged, with the commit's statements counted in `stats`; the write's caller
/// then gets `Unavailable`).
async fn restart(
    db: &DatabaseConnection,
    options: TransactionOptions,
    txn: DatabaseTransaction,
    sp: &mut Savepoint,
    stats: &WriterStats,
) -> Option<DatabaseTransaction> {
    sp.restart = false;
    sp.dirty = false;
    sp.statements += 2; // ROLLBACK, BEGIN
    let _ = txn.rollback().await;
    timeline_ops::rollback_to(Default::default());
    match db.begin_with_options(options).await {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "cannot begin a transaction");
            stats
                .statements
                .fetch_add(sp.statements, std::sync::atomic::Ordering::Relaxed);
            None
        }
    }
}
