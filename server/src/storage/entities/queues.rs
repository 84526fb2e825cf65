//! The `queues` table.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "queues")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub namespace: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub concurrency_limit: Option<i32>,
    pub key_concurrency_limit: Option<i32>,
    pub rate_limit: Option<i32>,
    pub rate_period_ms: Option<i64>,
    pub retry_max_attempts: Option<i32>,
    pub retry_initial_ms: Option<i64>,
    pub retry_coefficient: Option<f64>,
    pub retry_max_ms: Option<i64>,
    pub lease_timeout_ms: Option<i64>,
    pub paused: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
