//! The `wait_items` table: the items of a waiting run's `wait_for_any` / `wait_for_all`.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "wait_items")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i32,
    pub namespace: String,
    pub kind: String,
    pub event_name: Option<String>,
    pub correlation_key: Option<String>,
    pub wake_at: Option<i64>,
    pub run_created_at: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub output: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
