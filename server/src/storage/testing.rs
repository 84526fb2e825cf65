//! Helpers for tests against real databases: a fresh PostgreSQL database per test (from
//! `STACKSHIFT_TEST_POSTGRES_URL`), and a SQLite file in a temporary directory.

use sea_orm::{ConnectionTrait, Database};

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
    let _ = admin.close().await;
    let (prefix, _) = base
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} must end with /DATABASE"));
    Some(format!("{prefix}/{name}"))
}
