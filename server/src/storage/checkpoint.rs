//! WAL checkpoints off the commit path (SQLite).
//!
//! SQLite's automatic checkpoint runs inside the commit that grows the WAL past 1,000
//! pages: that commit copies the WAL into the database file and syncs it before its
//! callers get their answers, a stall of several milliseconds every few hundred commits
//! that shows as the latency tail (`stackshift-bench latency`, `resume`). The store's
//! connections therefore turn it off (`wal_autocheckpoint=0`, see `SqlStore::connect`) and
//! [`spawn`] checkpoints from a pool connection of its own instead: every
//! [`CHECK_EVERY`], when the writer committed since the last checkpoint, one `PASSIVE`
//! checkpoint (it never waits for a reader or the writer). Durability is unchanged: a
//! commit is durable once its WAL frames are synced (`synchronous=FULL`); a checkpoint only
//! moves committed pages into the database file, and the WAL is replayed after a crash.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection};

use super::writer::{Writer, WriterStats};

/// How often the checkpointer looks for new commits.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Starts the checkpointer of `db`; it stops once every handle of `writer` is dropped.
pub(super) fn spawn(db: DatabaseConnection, writer: &Writer, stats: Arc<WriterStats>) {
    let open = writer.watch();
    tokio::spawn(async move {
        let mut checkpointed = stats.commits.load(Ordering::Relaxed);
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if !open() {
                return;
            }
            let commits = stats.commits.load(Ordering::Relaxed);
            if commits == checkpointed {
                continue;
            }
            checkpointed = commits;
            if let Err(e) = db
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying later");
            }
        }
    });
}
