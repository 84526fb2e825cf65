//! The `runs` table.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub namespace: String,
    pub job: String,
    pub queue: String,
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub result: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub failure: Option<String>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub retry_initial_ms: i64,
    pub retry_coefficient: f64,
    pub retry_max_ms: i64,
    pub lease_timeout_ms: Option<i64>,
    pub effective_lease_ms: Option<i64>,
    pub lease_token: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub worker_id: Option<String>,
    pub available_at: i64,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    pub priority: i32,
    pub concurrency_key: Option<String>,
    pub parent_run_id: Option<String>,
    pub parent_step_id: Option<String>,
    pub parent_index: Option<i32>,
    pub step_count: i64,
    pub timeline_count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
