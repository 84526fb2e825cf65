//! End-to-end tests of the state store against the real server binary, on SQLite and
//! PostgreSQL: expiry and the sweeper, atomic counters under concurrency, compare-and-set,
//! namespace isolation, and input validation. Locks are in `e2e_state_locks.rs`, state
//! calls inside runs in `e2e_state_runs.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod state_support;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use stackshift::{ClientOptions, ListKeysOptions, LockOptions, SetOptions, StackShift};
use stackshift_proto::v1 as pb;
use state_support::{client, conflict_reason, count_rows, eventually, raw};
use support::{Db, TestServer, ms, with_key};
use tonic::Code;

/// An expired key reads as absent at once; the background sweeper then deletes its row.
async fn ttl_expiry_and_sweeper(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let state = client(&s).state();
    state
        .set(
            "webhooks:stripe:evt_123",
            &json!({ "processed": true }),
            SetOptions::default().ttl("700ms"),
        )
        .await
        .unwrap();
    let at = chrono::Utc::now() + chrono::Duration::seconds(3600);
    state
        .set(
            "marker:abs",
            &json!(1),
            SetOptions::default().expires_at(at),
        )
        .await
        .unwrap();
    state
        .set("forever", &json!("x"), SetOptions::default())
        .await
        .unwrap();
    let entry = state
        .get_entry::<Value>("webhooks:stripe:evt_123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.value, json!({ "processed": true }));
    let expires_at = entry.expires_at.unwrap();
    let abs = state
        .get_entry::<Value>("marker:abs")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        abs.expires_at.unwrap().timestamp_millis(),
        at.timestamp_millis()
    );

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(chrono::Utc::now() > expires_at);
    assert_eq!(
        state.get::<Value>("webhooks:stripe:evt_123").await.unwrap(),
        None,
        "expired keys read as absent"
    );
    let listed: Vec<String> = state
        .list("", ListKeysOptions::default())
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| k.key)
        .collect();
    assert_eq!(listed, ["forever", "marker:abs"]);

    // The sweeper, woken by the expiry, deletes the row (no client call needed).
    let sql = "SELECT COUNT(*) FROM state_entries WHERE key = 'webhooks:stripe:evt_123'";
    eventually("the sweeper to delete the expired row", || async {
        count_rows(&s, sql).await == 0
    })
    .await;
    assert_eq!(
        count_rows(&s, "SELECT COUNT(*) FROM state_entries").await,
        2,
        "live keys stay"
    );
}
both_stores!(ttl_expiry_and_sweeper);

/// 1,000 increments from 16 concurrent tasks give exactly 1,000, and every call saw a
/// distinct value.
async fn thousand_concurrent_increments(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let mut tasks = Vec::new();
    for t in 0..16 {
        let state = c.state();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in (t..1_000).step_by(16) {
                seen.push(state.increment("imports:imp_1:processed", 1).await.unwrap());
            }
            seen
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for v in t.await.unwrap() {
            assert!(all.insert(v), "{v} returned twice");
        }
    }
    assert_eq!(all, (1..=1_000).collect::<BTreeSet<i64>>());
    assert_eq!(
        c.state()
            .get::<i64>("imports:imp_1:processed")
            .await
            .unwrap(),
        Some(1_000)
    );
}
both_stores!(thousand_concurrent_increments);

/// Compare-and-set with a stale version fails with FAILED_PRECONDITION (reason
/// VERSION_MISMATCH) and changes nothing.
async fn compare_and_set(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let state = client(&s).state();
    let key = "imports:imp_1:progress";
    let v1 = state
        .set(
            key,
            &json!({ "processed": 0, "total": 500 }),
            SetOptions::default().if_absent(),
        )
        .await
        .unwrap();
    let v2 = state
        .set(
            key,
            &json!({ "processed": 100, "total": 500 }),
            SetOptions::default().expected_version(v1),
        )
        .await
        .unwrap();
    assert!(v2 > v1);
    let stale = state
        .set(
            key,
            &json!({ "processed": 999, "total": 500 }),
            SetOptions::default().expected_version(v1),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale}");
    assert_eq!(conflict_reason(&stale), Some("VERSION_MISMATCH"), "{stale}");
    let again = state
        .set(key, &json!(0), SetOptions::default().if_absent())
        .await
        .unwrap_err();
    assert_eq!(conflict_reason(&again), Some("VERSION_MISMATCH"));
    let now = state.get_entry::<Value>(key).await.unwrap().unwrap();
    assert_eq!(now.value, json!({ "processed": 100, "total": 500 }));
    assert_eq!(now.version, v2, "nothing changed");
    let del = state.delete_at_version(key, v1).await.unwrap_err();
    assert_eq!(conflict_reason(&del), Some("VERSION_MISMATCH"));
    assert!(state.delete_at_version(key, v2).await.unwrap());
    assert!(!state.delete(key).await.unwrap());

    // Over the wire: the code, and the reason in the trailing metadata.
    let mut raw = raw(&s).await;
    raw.set_state(pb::SetStateRequest {
        key: "k".into(),
        value: b"1".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = raw
        .set_state(pb::SetStateRequest {
            key: "k".into(),
            value: b"2".to_vec(),
            expected_version: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.metadata().get("stackshift-error-reason").unwrap(),
        "VERSION_MISMATCH"
    );
    assert!(status.message().contains("version"), "{}", status.message());
    let text = raw
        .increment_state(pb::IncrementStateRequest {
            key: "text".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        text.value, 1,
        "an absent counter starts at 0, `by` defaults to 1"
    );
    raw.set_state(pb::SetStateRequest {
        key: "text".into(),
        value: br#""seven""#.to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = raw
        .increment_state(pb::IncrementStateRequest {
            key: "text".into(),
            by: Some(2),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.metadata().get("stackshift-error-reason").unwrap(),
        "NOT_AN_INTEGER"
    );
}
both_stores!(compare_and_set);
/// Keys, counters and locks of one namespace are invisible to another.
async fn namespace_isolation(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let key_a = s.create_key("team-a");
    let key_b = s.create_key("team-b");
    s.restart();
    let with = |k: &str| {
        StackShift::new(ClientOptions::new(s.endpoint()).api_key(k))
            .unwrap()
            .state()
    };
    let (a, b) = (with(&key_a), with(&key_b));
    a.set("files:f1:rows", &json!(10), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(a.increment("hits", 5).await.unwrap(), 5);
    assert_eq!(b.get::<Value>("files:f1:rows").await.unwrap(), None);
    assert_eq!(b.increment("hits", 1).await.unwrap(), 1, "b's own counter");
    assert_eq!(a.get::<i64>("hits").await.unwrap(), Some(5));
    let keys = |st: stackshift::State| async move {
        st.list("", ListKeysOptions::default())
            .await
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(b.clone()).await, ["hits"]);
    assert_eq!(keys(a.clone()).await, ["files:f1:rows", "hits"]);

    let lock_a = a
        .lock("deploy", LockOptions::new("30s"))
        .await
        .unwrap()
        .unwrap();
    let lock_b = b
        .lock("deploy", LockOptions::new("30s"))
        .await
        .unwrap()
        .expect("b has its own lock of that name");
    // A's token is no good in b's namespace, and b's release leaves a's lock held.
    let mut raw = raw(&s).await;
    let status = raw
        .release_lock(with_key(
            pb::ReleaseLockRequest {
                key: "deploy".into(),
                fencing_token: lock_a.token() + 1_000,
                run: None,
            },
            Some(&key_b),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    lock_b.release().await.unwrap();
    assert!(
        a.lock("deploy", LockOptions::new("1s"))
            .await
            .unwrap()
            .is_none()
    );
    // No key: unauthenticated.
    let status = raw
        .get_state(pb::GetStateRequest {
            key: "hits".into(),
            run: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
both_stores!(namespace_isolation);

/// Bad input answers a clear error naming the field, and stores nothing.
async fn bad_input_is_refused(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut raw = raw(&s).await;
    let set = |key: &str, value: &[u8]| pb::SetStateRequest {
        key: key.to_owned(),
        value: value.to_vec(),
        ..Default::default()
    };
    let big = format!("\"{}\"", "x".repeat(256 * 1024));
    let ttl = |d: prost_types::Duration| pb::SetStateRequest {
        expiration: Some(pb::set_state_request::Expiration::Ttl(d)),
        ..set("k", b"1")
    };
    let cases: Vec<(&str, pb::SetStateRequest, Code, &str)> = vec![
        (
            "invalid json",
            set("k", b"{\"a\":"),
            Code::InvalidArgument,
            "JSON",
        ),
        (
            "not utf-8",
            set("k", &[0xff, 0xfe]),
            Code::InvalidArgument,
            "UTF-8",
        ),
        ("empty value", set("k", b""), Code::InvalidArgument, "value"),
        (
            "oversized value",
            set("k", big.as_bytes()),
            Code::ResourceExhausted,
            "262144",
        ),
        ("empty key", set("", b"1"), Code::InvalidArgument, "key"),
        (
            "over-long key",
            set(&"k".repeat(513), b"1"),
            Code::InvalidArgument,
            "512",
        ),
        (
            "control character",
            set("a\nb", b"1"),
            Code::InvalidArgument,
            "control",
        ),
        ("zero ttl", ttl(ms(0)), Code::InvalidArgument, "zero"),
        (
            "negative ttl",
            ttl(prost_types::Duration {
                seconds: -5,
                nanos: 0,
            }),
            Code::InvalidArgument,
            "ttl",
        ),
        (
            "expiry in the past",
            pb::SetStateRequest {
                expiration: Some(pb::set_state_request::Expiration::ExpiresAt(
                    prost_types::Timestamp {
                        seconds: 1_000,
                        nanos: 0,
                    },
                )),
                ..set("k", b"1")
            },
            Code::InvalidArgument,
            "past",
        ),
        (
            "negative expected version",
            pb::SetStateRequest {
                expected_version: Some(-1),
                ..set("k", b"1")
            },
            Code::InvalidArgument,
            "expected_version",
        ),
        (
            "bad run context",
            pb::SetStateRequest {
                run: Some(pb::RunContext {
                    run_id: "nope".into(),
                    lease_token: "t".into(),
                    call_id: "state:1".into(),
                }),
                ..set("k", b"1")
            },
            Code::InvalidArgument,
            "run",
        ),
        (
            "unknown run",
            pb::SetStateRequest {
                run: Some(pb::RunContext {
                    run_id: uuid::Uuid::now_v7().to_string(),
                    lease_token: "t".into(),
                    call_id: "state:1".into(),
                }),
                ..set("k", b"1")
            },
            Code::NotFound,
            "not found",
        ),
    ];
    for (what, request, code, needle) in cases {
        let status = raw.set_state(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{what}: {:?} should mention {needle:?}",
            status.message()
        );
    }
    let incr = raw
        .increment_state(pb::IncrementStateRequest {
            key: "n".into(),
            ttl: Some(ms(0)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(incr.code(), Code::InvalidArgument);
    for (what, request) in [
        (
            "lock without ttl",
            pb::AcquireLockRequest {
                key: "l".into(),
                ..Default::default()
            },
        ),
        (
            "lock with zero ttl",
            pb::AcquireLockRequest {
                key: "l".into(),
                ttl: Some(ms(0)),
                ..Default::default()
            },
        ),
        (
            "lock ttl over a day",
            pb::AcquireLockRequest {
                key: "l".into(),
                ttl: Some(ms(25 * 3_600_000)),
                ..Default::default()
            },
        ),
        (
            "wait over a minute",
            pb::AcquireLockRequest {
                key: "l".into(),
                ttl: Some(ms(1_000)),
                wait: Some(ms(61_000)),
                ..Default::default()
            },
        ),
        (
            "release_with_run outside a run",
            pb::AcquireLockRequest {
                key: "l".into(),
                ttl: Some(ms(1_000)),
                release_with_run: true,
                ..Default::default()
            },
        ),
    ] {
        let status = raw.acquire_lock(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}");
    }
    let status = raw
        .release_lock(pb::ReleaseLockRequest {
            key: "l".into(),
            fencing_token: 0,
            run: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for request in [
        pb::ListStateKeysRequest {
            page_size: 5_000,
            ..Default::default()
        },
        pb::ListStateKeysRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        },
        pb::ListStateKeysRequest {
            prefix: "a".into(),
            page_token: hex_of("b"),
            ..Default::default()
        },
    ] {
        let status = raw.list_state_keys(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    }

    // Nothing was stored, and no lock was taken.
    let all = raw
        .list_state_keys(pb::ListStateKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(all.keys.is_empty(), "{:?}", all.keys);
    assert_eq!(count_rows(&s, "SELECT COUNT(*) FROM state_locks").await, 0);
    // The limit is configurable.
    drop(s);
    let Some(s) = TestServer::start_with(db, &["--max-state-value-bytes", "2048"]).await else {
        return;
    };
    let state = client(&s).state();
    let e = state
        .set("k", &"x".repeat(3_000), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(
        state
            .set("k", &"x".repeat(1_000), SetOptions::default())
            .await
            .is_ok()
    );
}
both_stores!(bad_input_is_refused);

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}
