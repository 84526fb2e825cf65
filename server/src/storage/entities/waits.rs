//! The `waits` table: what each `waiting` run is suspended on.
#![allow(missing_docs)]

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "waits")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    pub namespace: String,
    pub step_id: String,
    pub kind: String,
    pub event_name: Option<String>,
    pub correlation_key: Option<String>,
    pub wake_at: Option<i64>,
    pub run_created_at: i64,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
