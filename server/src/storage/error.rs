//! The storage layer's error type, and its conversion into the engine's.

use crate::engine::EngineError;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database URL is not usable.
    #[error("invalid database url: {0}")]
    Url(String),
}

/// SQLSTATE codes of transient failures: the same request succeeds when retried.
/// PostgreSQL: deadlock detected, serialization failure, lock not available; SQLite: busy,
/// locked (extended codes are reported as numbers).
const TRANSIENT_CODES: &[&str] = &["40P01", "40001", "55P03", "5", "6", "517", "262"];

/// The SQLSTATE (PostgreSQL) or result code (SQLite) of a database error, if any.
fn db_code(e: &sea_orm::DbErr) -> Option<String> {
    use sea_orm::{DbErr, RuntimeErr};
    match e {
        DbErr::Exec(RuntimeErr::SqlxError(se))
        | DbErr::Query(RuntimeErr::SqlxError(se))
        | DbErr::Conn(RuntimeErr::SqlxError(se)) => se
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
        _ => None,
    }
}

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        match &e {
            StorageError::Db(sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)) => {
                EngineError::Unavailable(format!("store unavailable: {e}"))
            }
            // Deadlocks between concurrent group commits (PostgreSQL) and busy databases
            // are transient: clients retry UNAVAILABLE with backoff.
            StorageError::Db(db)
                if db_code(db).is_some_and(|c| TRANSIENT_CODES.contains(&c.as_str())) =>
            {
                EngineError::Unavailable(format!("transient store conflict, retry: {e}"))
            }
            _ => EngineError::Storage(e.to_string()),
        }
    }
}

impl From<sea_orm::DbErr> for EngineError {
    fn from(e: sea_orm::DbErr) -> Self {
        StorageError::Db(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn postgres_deadlocks_are_transient() {
        use sea_orm::{ConnectionTrait, Database, TransactionTrait};
        let Some(url) = super::super::testing::fresh_postgres_url("deadlock").await else {
            return;
        };
        let db = Database::connect(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        db.execute_unprepared("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Two transactions lock the rows in opposite orders: PostgreSQL aborts one.
        let (a, b) = (
            db.begin().await.unwrap_or_else(|e| panic!("{e}")),
            db.begin().await.unwrap_or_else(|e| panic!("{e}")),
        );
        a.execute_unprepared("UPDATE t SET id = id WHERE id = 1")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        b.execute_unprepared("UPDATE t SET id = id WHERE id = 2")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (ra, rb) = tokio::join!(
            a.execute_unprepared("UPDATE t SET id = id WHERE id = 2"),
            b.execute_unprepared("UPDATE t SET id = id WHERE id = 1"),
        );
        let err = ra
            .err()
            .or(rb.err())
            .unwrap_or_else(|| panic!("no deadlock reported"));
        assert!(
            matches!(EngineError::from(err), EngineError::Unavailable(_)),
            "a deadlock must map to UNAVAILABLE"
        );
    }
}
