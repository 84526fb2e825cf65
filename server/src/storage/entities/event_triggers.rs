//! The `event_triggers` table.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "event_triggers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub namespace: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub event_name: String,
    pub correlation_key: String,
    pub job: String,
    pub queue: String,
    pub retry_max_attempts: Option<i32>,
    pub retry_initial_ms: Option<i64>,
    pub retry_coefficient: Option<f64>,
    pub retry_max_ms: Option<i64>,
    pub lease_timeout_ms: Option<i64>,
    pub priority: i32,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
