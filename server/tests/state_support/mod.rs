//! Helpers shared by the state store's end-to-end tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use stackshift::{ClientOptions, Error, StackShift};
use stackshift_proto::v1::state_service_client::StateServiceClient;
use stackshift_server::storage::SqlStore;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::support::TestServer;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

pub async fn raw(s: &TestServer) -> StateServiceClient<Channel> {
    StateServiceClient::connect(s.endpoint()).await.unwrap()
}

/// Polls `check` every 50 ms until it holds; panics after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts rows of the server's database directly (to see what the sweeper deleted).
pub async fn count_rows(s: &TestServer, sql: &str) -> i64 {
    let store = SqlStore::connect(&s.db_url).await.unwrap();
    let db = store.connection();
    let n = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    store.close().await;
    n
}

pub fn conflict_reason(e: &Error) -> Option<&str> {
    match e {
        Error::Conflict { reason, .. } => Some(reason.as_str()),
        _ => None,
    }
}
