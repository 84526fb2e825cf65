//! End-to-end tests of the state store's locks against the real server binary, on SQLite
//! and PostgreSQL: mutual exclusion, fencing tokens across expiry and restarts, stale tokens
//! refused, and waiting for a lock without polling (also across PostgreSQL replicas).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod state_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use stackshift::{LockAttempt, LockOptions};
use stackshift_proto::v1 as pb;
use state_support::{client, conflict_reason, count_rows, eventually, raw};
use support::{Db, TestServer, ms};
use tokio::time::Instant;
use tonic::Code;

/// 8 contenders, 5 rounds each, waiting for the lock: never two holders at once, and
/// tokens strictly increase in grant order.
async fn lock_mutual_exclusion(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let holders = Arc::new(AtomicUsize::new(0));
    let grants: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (state, holders, grants) = (c.state(), holders.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let lock = state
                    .lock(
                        "rebuild-search-index:cus_1",
                        LockOptions::new("10s").wait("30s"),
                    )
                    .await
                    .unwrap()
                    .expect("granted within the wait");
                assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                grants.lock().unwrap().push(lock.token());
                tokio::time::sleep(Duration::from_millis(10)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                lock.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let grants = grants.lock().unwrap().clone();
    assert_eq!(grants.len(), 40);
    assert!(
        grants.windows(2).all(|w| w[0] < w[1]),
        "tokens strictly increase: {grants:?}"
    );
}
both_stores!(lock_mutual_exclusion);

/// Fencing tokens grow strictly per key across expiry, a swept lock row and server
/// restarts; release and extend with a stale token are refused; a held lock survives a
/// restart.
async fn fencing_tokens_across_expiry_and_restart(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let state = client(&s).state();
    let key = "provision:cus_1";
    let grant = |ttl: &'static str| {
        let state = state.clone();
        async move {
            match state.try_lock(key, LockOptions::new(ttl)).await.unwrap() {
                LockAttempt::Acquired(g) => g,
                LockAttempt::Busy { holder_expires_at } => {
                    panic!("busy until {holder_expires_at}")
                }
            }
        }
    };
    let first = grant("300ms").await;
    match state.try_lock(key, LockOptions::new("1s")).await.unwrap() {
        LockAttempt::Busy { holder_expires_at } => {
            assert_eq!(holder_expires_at, first.expires_at());
        }
        LockAttempt::Acquired(_) => panic!("two holders"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut second = grant("30s").await;
    assert!(second.token() > first.token(), "a new token after expiry");
    // The expired first owner can neither extend nor release.
    let mut stale = first.clone();
    let e = stale.extend("1s").await.unwrap_err();
    assert_eq!(conflict_reason(&e), Some("LOCK_NOT_HELD"), "{e}");
    let e = first.release().await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(conflict_reason(&e), Some("LOCK_NOT_HELD"), "{e}");
    second.extend("30s").await.unwrap();

    // A held lock survives a crash of the server.
    s.restart();
    let state = client(&s).state();
    assert!(matches!(
        state.try_lock(key, LockOptions::new("1s")).await.unwrap(),
        LockAttempt::Busy { .. }
    ));
    let second_token = second.token();
    second.release().await.unwrap();

    // Freed: the sweeper deletes the row; tokens still grow after a restart.
    let sql = "SELECT COUNT(*) FROM state_locks WHERE key = 'provision:cus_1'";
    eventually("the sweeper to delete the free lock row", || async {
        count_rows(&s, sql).await == 0
    })
    .await;
    s.restart();
    let state = client(&s).state();
    let third = match state
        .try_lock(key, LockOptions::new("300ms"))
        .await
        .unwrap()
    {
        LockAttempt::Acquired(g) => g,
        LockAttempt::Busy { .. } => panic!("busy"),
    };
    assert!(
        third.token() > second_token,
        "{} > {second_token} across a deleted row and a restart",
        third.token()
    );
    // Expiry across a restart.
    s.restart();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let state = client(&s).state();
    let fourth = match state.try_lock(key, LockOptions::new("1s")).await.unwrap() {
        LockAttempt::Acquired(g) => g,
        LockAttempt::Busy { .. } => panic!("busy"),
    };
    assert!(fourth.token() > third.token());
}
both_stores!(fencing_tokens_across_expiry_and_restart);

/// A waiting acquire is woken by the release (not by the holder's TTL), by the holder's
/// expiry, or gives up when its wait is over, reporting the holder's expiry.
async fn lock_wait_is_woken_not_polled(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let state = client(&s).state();
    let holder = state
        .lock("nightly-report", LockOptions::new("20s"))
        .await
        .unwrap()
        .unwrap();
    let waiter = {
        let state = state.clone();
        tokio::spawn(async move {
            let lock = state
                .lock("nightly-report", LockOptions::new("5s").wait("25s"))
                .await
                .unwrap();
            (Instant::now(), lock)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished());
    let released_at = Instant::now();
    let holder_token = holder.token();
    holder.release().await.unwrap();
    let (granted_at, lock) = waiter.await.unwrap();
    let lock = lock.expect("granted after the release");
    assert!(lock.token() > holder_token);
    let latency = granted_at.duration_since(released_at);
    assert!(
        latency < Duration::from_secs(2),
        "woken by the release: {latency:?}"
    );
    lock.release().await.unwrap();

    // The holder never releases: the waiter gets the lock when its TTL passes.
    let holder = state
        .lock("nightly-report", LockOptions::new("800ms"))
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let lock = state
        .lock("nightly-report", LockOptions::new("5s").wait("20s"))
        .await
        .unwrap()
        .expect("granted after expiry");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "woken at the holder's expiry: {waited:?}"
    );
    assert!(lock.token() > holder.token());

    // A wait shorter than the holder's TTL ends busy, with the holder's expiry.
    let started = Instant::now();
    match state
        .try_lock("nightly-report", LockOptions::new("1s").wait("300ms"))
        .await
        .unwrap()
    {
        LockAttempt::Busy { holder_expires_at } => {
            assert_eq!(holder_expires_at, lock.expires_at());
        }
        LockAttempt::Acquired(_) => panic!("two holders"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}
both_stores!(lock_wait_is_woken_not_polled);

/// Two replicas on one PostgreSQL database: an acquire waiting on one replica is woken by
/// a release on the other, and by the end of a run holding a run-tied lock there
/// (LISTEN/NOTIFY), not by the holder's TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiters_are_woken_across_replicas() {
    let Some(a) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let b = a.replica();
    let (on_a, on_b) = (client(&a).state(), client(&b).state());
    let waiting_on_b = |on_b: stackshift::State| {
        tokio::spawn(async move {
            let lock = on_b
                .lock("shared", LockOptions::new("5s").wait("25s"))
                .await
                .unwrap();
            (Instant::now(), lock)
        })
    };

    let held = on_a
        .lock("shared", LockOptions::new("20s"))
        .await
        .unwrap()
        .unwrap();
    let waiter = waiting_on_b(on_b.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released_at = Instant::now();
    held.release().await.unwrap();
    let (granted_at, lock) = waiter.await.unwrap();
    let lock = lock.expect("granted");
    let latency = granted_at.duration_since(released_at);
    assert!(
        latency < Duration::from_secs(2),
        "release on A woke B: {latency:?}"
    );
    lock.release().await.unwrap();

    // A run on A holds a run-tied lock; completing the run wakes the waiter on B.
    let mut jobs = a.jobs().await;
    let mut worker = a.worker().await;
    jobs.start_run(support::start_req("tied", json!({})))
        .await
        .unwrap();
    let task = worker
        .poll_task(support::poll_req(&["tied"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    let mut raw_a = raw(&a).await;
    let granted = raw_a
        .acquire_lock(pb::AcquireLockRequest {
            key: "shared".into(),
            ttl: Some(ms(20_000)),
            release_with_run: true,
            run: Some(pb::RunContext {
                run_id: task.run_id.clone(),
                lease_token: task.lease_token.clone(),
                call_id: "state:1".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted);
    let waiter = waiting_on_b(on_b.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let completed_at = Instant::now();
    worker
        .complete_run(pb::CompleteRunRequest {
            run_id: task.run_id.clone(),
            lease_token: task.lease_token.clone(),
            result: b"{}".to_vec(),
        })
        .await
        .unwrap();
    let (granted_at, lock) = waiter.await.unwrap();
    let lock = lock.expect("granted once the run completed");
    assert!(lock.token() > granted.fencing_token);
    let latency = granted_at.duration_since(completed_at);
    assert!(
        latency < Duration::from_secs(2),
        "run end on A woke B: {latency:?}"
    );
}
