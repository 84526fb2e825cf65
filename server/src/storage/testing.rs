//! Helpers for tests against real databases: a fresh PostgreSQL database per test (from
//! `STACKSHIFT_TEST_POSTGRES_URL`), and a SQLite file in a temporary directory.

use std::sync::atomic::{AtomicBool, Ordering};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

/// Test databases older than this are dropped by the first [`fresh_postgres_url`] of a process.
const STALE_AFTER_MS: i64 = 60 * 60 * 1000;

/// Environment variable naming the PostgreSQL server used by tests.
pub const POSTGRES_ENV: &str = "STACKSHIFT_TEST_POSTGRES_URL";
/// When set to `1`, tests fail instead of skipping if PostgreSQL is not configured.
pub const REQUIRE_ENV: &str = "STACKSHIFT_REQUIRE_POSTGRES";

/// Creates a new empty database on the test PostgreSQL server and returns its URL, or
/// `None` (after saying so) when no server is configured. Panics when one is required.
pub async fn fresh_postgres_url(label: &str) -> Option<String> {
    let Ok(base) = std::env::var(POSTGRES_ENV) else {
        if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
            panic!("{POSTGRES_ENV} is not set but {REQUIRE_ENV}=1: start one with scripts/pg.sh");
        }
        eprintln!("skipping PostgreSQL variant of {label}: {POSTGRES_ENV} is not set");
        return None;
    };
    let name = format!(
        "ss_{}_{}",
        label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(20)
            .collect::<String>()
            .to_lowercase(),
        uuid::Uuid::now_v7().simple()
    );
    let admin = Database::connect(base.as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_ENV}: {e}"));
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    if !REAPED.swap(true, Ordering::SeqCst) {
        reap_stale_databases(&admin).await;
    }
    let _ = admin.close().await;
    let (prefix, _) = base
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} must end with /DATABASE"));
    Some(format!("{prefix}/{name}"))
}

static REAPED: AtomicBool = AtomicBool::new(false);

/// Drops the test databases (`ss_*`, named with a UUIDv7 by this module, the e2e harness, the
/// conformance runner, the bench and the reliability suite) created more than an hour ago, so
/// that repeated test runs on a developer's PostgreSQL do not accumulate gigabytes of them. A
/// database still in use cannot be dropped and is left alone; errors are ignored (another
/// process may be reaping at the same time).
async fn reap_stale_databases(admin: &DatabaseConnection) {
    let backend = admin.get_database_backend();
    let cutoff = chrono::Utc::now().timestamp_millis() - STALE_AFTER_MS;
    let Ok(rows) = admin
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT datname FROM pg_database WHERE datname LIKE 'ss\\_%' \
             AND datname ~ '_[0-9a-f]{32}$'",
        ))
        .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let created_ms = name
            .get(name.len().saturating_sub(32)..name.len().saturating_sub(20))
            .and_then(|hex| i64::from_str_radix(hex, 16).ok());
        if created_ms.is_some_and(|ms| ms < cutoff) {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await;
        }
    }
}
