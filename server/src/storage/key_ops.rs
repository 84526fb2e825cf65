//! API key rows: insert, list, revoke, look up by hash.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};

use crate::engine::EngineResult;
use crate::engine::model::ApiKeyRecord;

use super::convert::key_from_model;
use super::entities::api_keys;

/// Inserts a key.
pub async fn insert<C: ConnectionTrait>(c: &C, k: ApiKeyRecord) -> EngineResult<()> {
    api_keys::Entity::insert(api_keys::ActiveModel {
        id: Set(k.id),
        namespace: Set(k.namespace),
        name: Set(k.name),
        key_hash: Set(k.key_hash),
        created_at: Set(k.created_at),
        revoked_at: Set(k.revoked_at),
        admin: Set(k.admin),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Lists all keys, oldest first.
pub async fn list<C: ConnectionTrait>(c: &C) -> EngineResult<Vec<ApiKeyRecord>> {
    Ok(api_keys::Entity::find()
        .order_by_asc(api_keys::Column::CreatedAt)
        .all(c)
        .await?
        .into_iter()
        .map(key_from_model)
        .collect())
}

/// Revokes an active key.
pub async fn revoke<C: ConnectionTrait>(c: &C, id: &str, now: i64) -> EngineResult<bool> {
    let n = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokedAt, Expr::value(now))
        .filter(api_keys::Column::Id.eq(id))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(c)
        .await?
        .rows_affected;
    Ok(n == 1)
}

/// Finds an active key by hash.
pub async fn find_active<C: ConnectionTrait>(
    c: &C,
    hash: &str,
) -> EngineResult<Option<ApiKeyRecord>> {
    Ok(api_keys::Entity::find()
        .filter(api_keys::Column::KeyHash.eq(hash))
        .filter(api_keys::Column::RevokedAt.is_null())
        .one(c)
        .await?
        .map(key_from_model))
}

/// Counts active keys.
pub async fn count_active<C: ConnectionTrait>(c: &C) -> EngineResult<u64> {
    Ok(api_keys::Entity::find()
        .filter(api_keys::Column::RevokedAt.is_null())
        .count(c)
        .await?)
}
