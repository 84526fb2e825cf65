//! Contract checks of API key storage.

use std::sync::Arc;

use crate::engine::auth::{generate_key, hash_key};
use crate::engine::store::Store;

pub async fn key_lifecycle(store: &Arc<dyn Store>) {
    let before = store.count_active_keys().await.unwrap();
    let (rec, secret) = generate_key("acme", "ci", 1_000);
    assert!(secret.starts_with("ssk_"));
    assert_ne!(rec.key_hash, secret, "only the hash is stored");
    store.insert_key(rec.clone()).await.unwrap();
    assert_eq!(store.count_active_keys().await.unwrap(), before + 1);
    let found = store
        .find_active_key(&hash_key(&secret))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.namespace, "acme");
    assert!(
        store
            .find_active_key(&hash_key("ssk_wrong"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.id == rec.id)
    );
    assert!(store.revoke_key(&rec.id, 2_000).await.unwrap());
    assert!(
        !store.revoke_key(&rec.id, 2_001).await.unwrap(),
        "already revoked"
    );
    assert!(
        store
            .find_active_key(&hash_key(&secret))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.count_active_keys().await.unwrap(), before);
}
