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

impl From<StorageError> for EngineError {
    fn from(e: StorageError) -> Self {
        match &e {
            StorageError::Db(sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_)) => {
                EngineError::Unavailable(format!("store unavailable: {e}"))
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
