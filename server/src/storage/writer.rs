//! Group commit. Every write is a closure queued to writer tasks; a writer takes all
//! queued closures (up to [`MAX_BATCH`]), runs each inside its own savepoint of one
//! transaction, commits once, and only then answers each caller. The savepoint is managed
//! by hand (`RELEASE SAVEPOINT w; SAVEPOINT w` in one round trip between two writes)
//! because on SQLite every statement is a round trip to the connection's thread. Concurrent writers thus
//! share one durable commit (one fsync on SQLite with `synchronous=FULL`), and a failing
//! write rolls back its own savepoint without affecting the others in the batch.
//!
//! SQLite gets one writer task (SQLite has one writer anyway, and this avoids busy
//! errors); PostgreSQL gets several, so commits overlap.

use std::sync::Arc;

use futures::future::BoxFuture;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, IsolationLevel,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::engine::{EngineError, EngineResult};

/// Most writes in one commit.
pub const MAX_BATCH: usize = 512;

type Finish = Box<dyn FnOnce(EngineResult<()>) + Send>;
type Job = Box<dyn for<'c> FnOnce(&'c DatabaseTransaction) -> BoxFuture<'c, (bool, Finish)> + Send>;

/// Observed batch sizes, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Commits performed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Writes committed.
    pub writes: std::sync::atomic::AtomicU64,
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
    /// History limits in force in every write (see `super::limits`).
    limits: crate::engine::history::HistoryLimits,
}

impl Writer {
    /// Spawns `tasks` writer tasks over `db`.
    pub fn spawn(db: DatabaseConnection, tasks: usize, sqlite: bool) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(16 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(WriterStats::default());
        for _ in 0..tasks.max(1) {
            tokio::spawn(writer_loop(db.clone(), rx.clone(), stats.clone(), sqlite));
        }
        Self {
            tx,
            stats,
            limits: Default::default(),
        }
    }

    /// Sets the history limits the writes of this handle (and its later clones) enforce.
    pub fn set_history_limits(&mut self, limits: crate::engine::history::HistoryLimits) {
        self.limits = limits;
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
        let limits = self.limits;
        let job: Job = Box::new(move |txn| {
            Box::pin(async move {
                let out = super::limits::scope(limits, f(txn)).await;
                let ok = out.is_ok();
                let finish: Finish = Box::new(move |commit: EngineResult<()>| {
                    let _ = otx.send(commit.and(out));
                });
                (ok, finish)
            })
        });
        self.tx
            .send(job)
            .await
            .map_err(|_| EngineError::Unavailable("the store writer has stopped".into()))?;
        orx.await.map_err(|_| {
            EngineError::Unavailable("the write was not committed: the store is unavailable".into())
        })?
    }
}

async fn writer_loop(
    db: DatabaseConnection,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    stats: Arc<WriterStats>,
    sqlite: bool,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let options = TransactionOptions {
            isolation_level: (!sqlite).then_some(IsolationLevel::ReadCommitted),
            access_mode: (!sqlite).then_some(AccessMode::ReadWrite),
            sqlite_transaction_mode: sqlite.then_some(SqliteTransactionMode::Immediate),
        };
        let txn = match db.begin_with_options(options).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "cannot begin a transaction");
                batch.clear(); // callers get `Unavailable`
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut finishers = Vec::with_capacity(batch.len());
        let mut broken = txn.execute_unprepared("SAVEPOINT w").await.err();
        let total = batch.len();
        for (i, job) in batch.drain(..).enumerate() {
            if broken.is_some() {
                break; // the remaining callers get `Unavailable`
            }
            let (ok, finish) = job(&txn).await;
            finishers.push(finish);
            // One round trip between writes: keep this write and open the next one's
            // savepoint together. `ROLLBACK TO` keeps the savepoint open for the next write.
            // The last successful write needs nothing: the commit releases it.
            let last = i + 1 == total;
            let end = match (ok, last) {
                (true, true) => continue,
                (true, false) => "RELEASE SAVEPOINT w; SAVEPOINT w",
                (false, _) => "ROLLBACK TO SAVEPOINT w",
            };
            if let Err(e) = txn.execute_unprepared(end).await {
                broken = Some(e);
            }
        }
        batch.clear();
        let n = finishers.len() as u64;
        let result = match broken {
            Some(e) => {
                let _ = txn.rollback().await;
                Err(EngineError::from(e))
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
