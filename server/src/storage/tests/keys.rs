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
    assert!(!found.admin, "keys are not admin keys unless asked");
    let (mut admin, admin_secret) = generate_key("acme", "ops", 1_000);
    admin.admin = true;
    store.insert_key(admin.clone()).await.unwrap();
    let found_admin = store
        .find_active_key(&hash_key(&admin_secret))
        .await
        .unwrap()
        .unwrap();
    assert!(found_admin.admin, "the admin flag round-trips");
    assert!(store.revoke_key(&admin.id, 1_500).await.unwrap());
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
