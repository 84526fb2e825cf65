//! The `schedules` table.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "schedules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub namespace: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub job: String,
    pub queue: String,
    pub payload: String,
    pub retry_max_attempts: Option<i32>,
    pub retry_initial_ms: Option<i64>,
    pub retry_coefficient: Option<f64>,
    pub retry_max_ms: Option<i64>,
    pub lease_timeout_ms: Option<i64>,
    pub priority: i32,
    pub cron_expression: Option<String>,
    pub time_zone: Option<String>,
    pub interval_ms: Option<i64>,
    pub catch_up: String,
    pub paused: bool,
    pub next_fire_at: i64,
    pub last_fire_at: Option<i64>,
    pub recent_run_ids: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
