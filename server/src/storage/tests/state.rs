//! Contract checks of the state store: expiry and the sweeper, versions and
//! compare-and-set, atomic counters, locks and fencing tokens, namespaces, listing, and
//! the journaling of calls made from inside a run. Times are explicit (`now` arguments),
//! so expiry is tested without sleeping; they are based on the real clock so that a sweep
//! in one check never touches the live rows of another.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::engine::EngineError;
use crate::engine::model::{Failure, LeaseRef, NewStep, RunStatus, StepKind};
use crate::engine::now_ms;
use crate::engine::state::{
    ConflictReason, RunCall, StateCall, StateEntry, StateOp, StateOutcome, StateResult,
};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

async fn apply(
    store: &Arc<dyn Store>,
    ns: &str,
    op: StateOp,
    run: Option<&RunCall>,
    now: i64,
) -> StateOutcome {
    store
        .state_apply(
            StateCall {
                namespace: ns.to_owned(),
                op,
                run: run.cloned(),
            },
            now,
        )
        .await
        .unwrap()
}

async fn ok(store: &Arc<dyn Store>, ns: &str, op: StateOp, now: i64) -> StateResult {
    let out = apply(store, ns, op, None, now).await;
    assert!(!out.replayed);
    out.result.unwrap()
}

async fn conflict(store: &Arc<dyn Store>, ns: &str, op: StateOp, now: i64) -> ConflictReason {
    apply(store, ns, op, None, now)
        .await
        .result
        .unwrap_err()
        .reason
}

fn set(key: &str, value: &str, expires_at: Option<i64>, expected: Option<i64>) -> StateOp {
    StateOp::Set {
        key: key.to_owned(),
        value: value.to_owned(),
        expires_at,
        expected_version: expected,
    }
}

fn incr(key: &str, by: i64) -> StateOp {
    StateOp::Increment {
        key: key.to_owned(),
        by,
        expires_at_if_created: None,
    }
}

fn acquire(key: &str, ttl_ms: i64) -> StateOp {
    StateOp::Acquire {
        key: key.to_owned(),
        ttl_ms,
        release_with_run: false,
        journal_busy: true,
    }
}

fn release(key: &str, token: i64) -> StateOp {
    StateOp::Release {
        key: key.to_owned(),
        token,
    }
}

fn version_of(r: &StateResult) -> i64 {
    match r {
        StateResult::Written { version, .. } | StateResult::Counter { version, .. } => *version,
        other => panic!("no version in {other:?}"),
    }
}

fn token_of(r: &StateResult) -> i64 {
    match r {
        StateResult::Granted { token, .. } => *token,
        other => panic!("not granted: {other:?}"),
    }
}

async fn get(store: &Arc<dyn Store>, ns: &str, key: &str, now: i64) -> Option<StateEntry> {
    store.state_get(ns, key, now).await.unwrap()
}

pub async fn ttl_and_sweeper(store: &Arc<dyn Store>) {
    let ns = ns("ttl");
    let t = now_ms();
    ok(
        store,
        &ns,
        set("marker", r#"{"processed":true}"#, Some(t + 100), None),
        t,
    )
    .await;
    ok(store, &ns, set("forever", "1", None, None), t).await;
    assert!(get(store, &ns, "marker", t + 99).await.is_some());
    // Expired: absent at once, although the sweeper has not run (the row is still there,
    // as a read "in the past" shows).
    assert!(get(store, &ns, "marker", t + 100).await.is_none());
    assert!(
        get(store, &ns, "marker", t + 50).await.is_some(),
        "row not swept yet"
    );
    let listed = store.state_list(&ns, "", None, 10, t + 100).await.unwrap();
    let StateResult::Keys { keys, .. } = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(
        keys.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["forever"]
    );
    assert!(store.next_state_expiry().await.unwrap().unwrap() <= t + 100);

    // The sweeper deletes the row; keys without expiry stay.
    assert!(store.sweep_state(t + 100, 500).await.unwrap() >= 1);
    assert!(
        get(store, &ns, "marker", t + 50).await.is_none(),
        "row swept"
    );
    assert!(get(store, &ns, "forever", t + 200).await.is_some());
    // Sweeps are bounded: at most `limit` rows per table per call.
    for i in 0..5 {
        ok(
            store,
            &ns,
            set(&format!("batch:{i}"), "1", Some(t + 150), None),
            t,
        )
        .await;
    }
    let mut swept = Vec::new();
    loop {
        let n = store.sweep_state(t + 200, 2).await.unwrap();
        swept.push(n);
        if n == 0 {
            break;
        }
    }
    assert_eq!(swept, [2, 2, 1, 0]);

    // An increment may give a key it creates a TTL; a live key keeps its expiry.
    let created = ok(
        store,
        &ns,
        StateOp::Increment {
            key: "window".into(),
            by: 1,
            expires_at_if_created: Some(t + 1_000),
        },
        t,
    )
    .await;
    assert!(matches!(
        created,
        StateResult::Counter { value: 1, expires_at: Some(e), .. } if e == t + 1_000
    ));
    let again = ok(
        store,
        &ns,
        StateOp::Increment {
            key: "window".into(),
            by: 1,
            expires_at_if_created: Some(t + 9_000),
        },
        t + 10,
    )
    .await;
    assert!(matches!(
        again,
        StateResult::Counter { value: 2, expires_at: Some(e), .. } if e == t + 1_000
    ));
    // After expiry the counter starts again from zero, with a new TTL.
    let fresh = ok(
        store,
        &ns,
        StateOp::Increment {
            key: "window".into(),
            by: 1,
            expires_at_if_created: Some(t + 5_000),
        },
        t + 1_000,
    )
    .await;
    assert!(matches!(
        fresh,
        StateResult::Counter { value: 1, expires_at: Some(e), .. } if e == t + 5_000
    ));
    assert!(version_of(&fresh) > version_of(&again));
}

pub async fn versions_and_compare_and_set(store: &Arc<dyn Store>) {
    let ns = ns("cas");
    let t = now_ms();
    let v1 = version_of(&ok(store, &ns, set("k", r#"{"n":1}"#, None, Some(0)), t).await);
    let v2 = version_of(&ok(store, &ns, set("k", r#"{"n":2}"#, None, Some(v1)), t).await);
    assert!(v2 > v1, "every write changes the version");
    // A stale version fails and changes nothing.
    assert_eq!(
        conflict(store, &ns, set("k", r#"{"n":3}"#, None, Some(v1)), t).await,
        ConflictReason::VersionMismatch
    );
    assert_eq!(
        conflict(store, &ns, set("k", r#"{"n":3}"#, None, Some(0)), t).await,
        ConflictReason::VersionMismatch,
        "0 means: only if absent"
    );
    let now = get(store, &ns, "k", t).await.unwrap();
    assert_eq!((now.value.as_str(), now.version), (r#"{"n":2}"#, v2));
    // Delete with a stale version fails; with the current one it deletes.
    let del = |expected| StateOp::Delete {
        key: "k".into(),
        expected_version: expected,
    };
    assert_eq!(
        conflict(store, &ns, del(Some(v1)), t).await,
        ConflictReason::VersionMismatch
    );
    assert!(get(store, &ns, "k", t).await.is_some());
    assert_eq!(
        ok(store, &ns, del(Some(v2)), t).await,
        StateResult::Deleted { deleted: true }
    );
    assert_eq!(
        ok(store, &ns, del(None), t).await,
        StateResult::Deleted { deleted: false }
    );
    // A key created again never reuses a version it had (no ABA for compare-and-set).
    let v3 = version_of(&ok(store, &ns, set("k", "3", None, None), t).await);
    assert!(v3 > v2);
    assert_eq!(
        conflict(store, &ns, set("k", "4", None, Some(v1)), t).await,
        ConflictReason::VersionMismatch
    );

    // Counters: JSON integers only, no overflow, negative steps allowed.
    ok(store, &ns, set("text", r#""seven""#, None, None), t).await;
    assert_eq!(
        conflict(store, &ns, incr("text", 1), t).await,
        ConflictReason::NotAnInteger
    );
    ok(store, &ns, set("big", &i64::MAX.to_string(), None, None), t).await;
    assert_eq!(
        conflict(store, &ns, incr("big", 1), t).await,
        ConflictReason::CounterOverflow
    );
    assert!(matches!(
        ok(store, &ns, incr("big", -7), t).await,
        StateResult::Counter { value, .. } if value == i64::MAX - 7
    ));
}

pub async fn concurrent_increments(store: &Arc<dyn Store>) {
    let ns = ns("incr");
    let mut tasks = Vec::new();
    for task in 0..16 {
        let (store, ns) = (store.clone(), ns.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in (task..1_000).step_by(16) {
                match ok(&store, &ns, incr("hits", 1), now_ms()).await {
                    StateResult::Counter { value, .. } => seen.push(value),
                    other => panic!("{other:?}"),
                }
            }
            seen
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for v in t.await.unwrap() {
            assert!(all.insert(v), "value {v} returned twice");
        }
    }
    assert_eq!(all, (1..=1_000).collect::<BTreeSet<i64>>());
    assert_eq!(
        get(store, &ns, "hits", now_ms()).await.unwrap().value,
        "1000"
    );
}

pub async fn locks_and_fencing(store: &Arc<dyn Store>) {
    let ns = ns("lock");
    let t = now_ms();
    let t1 = token_of(&ok(store, &ns, acquire("index", 1_000), t).await);
    assert!(t1 > 0);
    assert_eq!(
        ok(store, &ns, acquire("index", 1_000), t + 10).await,
        StateResult::Busy {
            holder_expires_at: t + 1_000,
            holder_run_id: None
        },
        "mutual exclusion"
    );
    assert_eq!(
        conflict(store, &ns, release("index", t1 + 5), t + 20).await,
        ConflictReason::LockNotHeld
    );
    let extend = |token, ttl_ms| StateOp::Extend {
        key: "index".into(),
        token,
        ttl_ms,
    };
    assert_eq!(
        ok(store, &ns, extend(t1, 1_000), t + 500).await,
        StateResult::Extended {
            expires_at: t + 1_500
        }
    );
    assert!(matches!(
        ok(store, &ns, acquire("index", 1_000), t + 1_499).await,
        StateResult::Busy { .. }
    ));
    // Expired: another owner takes it, with a larger token; the old token is refused.
    let t2 = token_of(&ok(store, &ns, acquire("index", 1_000), t + 1_500).await);
    assert!(t2 > t1);
    assert_eq!(
        conflict(store, &ns, release("index", t1), t + 1_600).await,
        ConflictReason::LockNotHeld
    );
    assert_eq!(
        conflict(store, &ns, extend(t1, 1_000), t + 1_600).await,
        ConflictReason::LockNotHeld
    );
    assert_eq!(
        ok(store, &ns, release("index", t2), t + 1_700).await,
        StateResult::Released
    );
    assert_eq!(
        conflict(store, &ns, release("index", t2), t + 1_701).await,
        ConflictReason::LockNotHeld,
        "a released token no longer holds the lock"
    );
    // A released lock is free at once; its row is swept, and tokens keep growing after.
    let t3 = token_of(&ok(store, &ns, acquire("index", 100), t + 1_702).await);
    assert!(t3 > t2);
    assert!(store.sweep_state(t + 1_802, 500).await.unwrap() >= 1);
    let t4 = token_of(&ok(store, &ns, acquire("index", 100), t + 1_900).await);
    assert!(
        t4 > t3,
        "tokens grow across a deleted lock row: {t4} > {t3}"
    );
    // Other keys have their own lock.
    assert!(matches!(
        ok(store, &ns, acquire("other", 100), t + 1_900).await,
        StateResult::Granted { .. }
    ));
}

pub async fn namespace_isolation(store: &Arc<dyn Store>) {
    let (a, b) = (ns("state-a"), ns("state-b"));
    let t = now_ms();
    ok(store, &a, set("shared", r#""a""#, None, None), t).await;
    ok(store, &a, incr("count", 5), t).await;
    assert!(get(store, &b, "shared", t).await.is_none());
    assert!(matches!(
        ok(store, &b, incr("count", 1), t).await,
        StateResult::Counter { value: 1, .. }
    ));
    let StateResult::Keys { keys, .. } = store.state_list(&b, "", None, 10, t).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(keys.len(), 1, "b sees only its own key");
    let ta = token_of(&ok(store, &a, acquire("lock", 10_000), t).await);
    let tb = token_of(&ok(store, &b, acquire("lock", 10_000), t).await);
    assert!(ta > 0 && tb > 0, "each namespace has its own lock");
    let only_a = token_of(&ok(store, &a, acquire("a-only", 10_000), t).await);
    assert_eq!(
        conflict(store, &b, release("a-only", only_a), t).await,
        ConflictReason::LockNotHeld,
        "a token is only good in its namespace"
    );
    assert!(matches!(
        ok(store, &a, acquire("a-only", 10_000), t).await,
        StateResult::Busy { .. }
    ));
    assert_eq!(
        get(store, &a, "count", t).await.unwrap().value,
        "5",
        "b's increment did not touch a's counter"
    );
}

pub async fn listing(store: &Arc<dyn Store>) {
    let ns = ns("list");
    let t = now_ms();
    for key in [
        "files:1:rows",
        "files:10:rows",
        "files:2:rows",
        "files%:x",
        "files_x",
        "filesé",
        "other",
    ] {
        ok(store, &ns, set(key, "1", None, None), t).await;
    }
    let page = |prefix: &'static str, after: Option<String>, limit| {
        let store = store.clone();
        let ns = ns.clone();
        async move {
            match store
                .state_list(&ns, prefix, after.as_deref(), limit, t)
                .await
                .unwrap()
            {
                StateResult::Keys { keys, next_after } => (
                    keys.into_iter().map(|k| k.key).collect::<Vec<_>>(),
                    next_after,
                ),
                other => panic!("{other:?}"),
            }
        }
    };
    let (keys, next) = page("files:", None, 2).await;
    assert_eq!(
        keys,
        ["files:10:rows", "files:1:rows"],
        "byte order ('0' < ':')"
    );
    let (keys, next) = page("files:", next, 2).await;
    assert_eq!((keys, next), (vec!["files:2:rows".to_owned()], None));
    // LIKE wildcards in a prefix are plain characters.
    assert_eq!(page("files%", None, 10).await.0, ["files%:x"]);
    assert_eq!(page("files_", None, 10).await.0, ["files_x"]);
    assert_eq!(page("files\u{e9}", None, 10).await.0, ["filesé"]);
    assert_eq!(page("", None, 100).await.0.len(), 7);
}

fn lease(ns: &str, run_id: &str, token: &str) -> LeaseRef {
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run_id.to_owned(),
        token: token.to_owned(),
    }
}

fn call(l: &LeaseRef, id: &str) -> RunCall {
    RunCall {
        lease: l.clone(),
        call_id: id.to_owned(),
    }
}

/// Starts and claims a run; returns its lease.
async fn leased_run(store: &Arc<dyn Store>, ns: &str, t: i64) -> LeaseRef {
    let run = start(store, new_run(ns, "job", "q", t)).await;
    let task = store
        .claim(claim_req(ns, &["q"], &["job"], 1, t))
        .await
        .unwrap()
        .remove(0);
    lease(ns, &run.id, &task.lease_token)
}

pub async fn journaled_calls(store: &Arc<dyn Store>) {
    let ns = ns("journal");
    let t = now_ms();
    let l = leased_run(store, &ns, t).await;
    let c1 = call(&l, "state:1");

    // Applied once, then replayed from the journal: the counter moves once.
    let first = apply(store, &ns, incr("rows", 4), Some(&c1), t + 1).await;
    assert!(!first.replayed);
    assert!(matches!(
        first.result,
        Ok(StateResult::Counter { value: 4, .. })
    ));
    let again = apply(store, &ns, incr("rows", 4), Some(&c1), t + 2).await;
    assert!(again.replayed);
    assert_eq!(again.result, first.result);
    assert_eq!(get(store, &ns, "rows", t + 3).await.unwrap().value, "4");
    let second = apply(
        store,
        &ns,
        incr("rows", 4),
        Some(&call(&l, "state:2")),
        t + 4,
    )
    .await;
    assert!(matches!(
        second.result,
        Ok(StateResult::Counter { value: 8, .. })
    ));

    // A different operation under a journaled id is refused (nondeterministic handler).
    let res = store
        .state_apply(
            StateCall {
                namespace: ns.clone(),
                op: set("rows", "0", None, None),
                run: Some(c1.clone()),
            },
            t + 5,
        )
        .await;
    assert!(
        matches!(res, Err(EngineError::InvalidArgument(_))),
        "{res:?}"
    );

    // A stale lease is refused and nothing is applied.
    let stale = RunCall {
        lease: lease(&ns, &l.run_id, "not-the-token"),
        call_id: "state:3".into(),
    };
    let res = store
        .state_apply(
            StateCall {
                namespace: ns.clone(),
                op: incr("rows", 100),
                run: Some(stale),
            },
            t + 6,
        )
        .await;
    assert!(
        matches!(res, Err(EngineError::FailedPrecondition(_))),
        "{res:?}"
    );
    assert_eq!(get(store, &ns, "rows", t + 7).await.unwrap().value, "8");

    // A refusal is journaled too, and replayed as a refusal.
    let cas = set("rows", "0", None, Some(1));
    let c3 = call(&l, "state:3");
    let refused = apply(store, &ns, cas.clone(), Some(&c3), t + 8).await;
    assert_eq!(
        refused.result.as_ref().unwrap_err().reason,
        ConflictReason::VersionMismatch
    );
    let replayed = apply(store, &ns, cas, Some(&c3), t + 9).await;
    assert!(replayed.replayed);
    assert_eq!(replayed.result, refused.result);

    // Reads are journaled: a replay returns the value read the first time.
    let c4 = call(&l, "state:4");
    let read = apply(
        store,
        &ns,
        StateOp::Get { key: "rows".into() },
        Some(&c4),
        t + 10,
    )
    .await;
    ok(store, &ns, incr("rows", 1), t + 11).await;
    let reread = apply(
        store,
        &ns,
        StateOp::Get { key: "rows".into() },
        Some(&c4),
        t + 12,
    )
    .await;
    assert!(reread.replayed);
    assert_eq!(reread.result, read.result);

    // A waiting acquire's intermediate refusals are not journaled; its grant is.
    let holder = token_of(&ok(store, &ns, acquire("res", 50), t + 13).await);
    let c5 = call(&l, "state:5");
    let try_once = StateOp::Acquire {
        key: "res".into(),
        ttl_ms: 60_000,
        release_with_run: true,
        journal_busy: false,
    };
    let busy = apply(store, &ns, try_once.clone(), Some(&c5), t + 14).await;
    assert!(matches!(busy.result, Ok(StateResult::Busy { .. })) && !busy.replayed);
    let granted = apply(store, &ns, try_once.clone(), Some(&c5), t + 64).await;
    assert!(!granted.replayed);
    let run_token = token_of(granted.result.as_ref().unwrap());
    assert!(run_token > holder);
    assert!(
        apply(store, &ns, try_once, Some(&c5), t + 65)
            .await
            .replayed
    );

    // A journal id already used by a step is refused.
    store
        .complete_step(
            l.clone(),
            NewStep {
                step_id: "import".into(),
                kind: StepKind::Step,
                output: Some("1".into()),
                failure: None,
                started_at: None,
            },
            t + 66,
        )
        .await
        .unwrap();
    let res = store
        .state_apply(
            StateCall {
                namespace: ns.clone(),
                op: incr("rows", 1),
                run: Some(call(&l, "import")),
            },
            t + 67,
        )
        .await;
    assert!(
        matches!(res, Err(EngineError::InvalidArgument(_))),
        "{res:?}"
    );

    // The journal holds the state entries with their kind, and the run-tied lock is
    // released when the run completes.
    let detail = store.get_run_detail(&ns, &l.run_id).await.unwrap().unwrap();
    let state_ids: BTreeSet<&str> = detail
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::State)
        .map(|s| s.step_id.as_str())
        .collect();
    assert_eq!(
        state_ids,
        BTreeSet::from(["state:1", "state:2", "state:3", "state:4", "state:5"])
    );
    assert!(matches!(
        ok(store, &ns, acquire("res", 1_000), t + 68).await,
        StateResult::Busy { holder_run_id: Some(ref r), .. } if *r == l.run_id
    ));
    store
        .complete_run(l.clone(), "null".into(), t + 69)
        .await
        .unwrap();
    let next = token_of(&ok(store, &ns, acquire("res", 1_000), t + 70).await);
    assert!(next > run_token);
    // A write after completion is refused by the lease check.
    let late = store
        .state_apply(
            StateCall {
                namespace: ns.clone(),
                op: incr("rows", 1),
                run: Some(call(&l, "state:6")),
            },
            t + 71,
        )
        .await;
    assert!(
        matches!(late, Err(EngineError::FailedPrecondition(_))),
        "{late:?}"
    );
}

pub async fn run_tied_locks_end_with_the_run(store: &Arc<dyn Store>) {
    let ns = ns("tied");
    let t = now_ms();
    let tied = |key: &str| StateOp::Acquire {
        key: key.to_owned(),
        ttl_ms: 60_000,
        release_with_run: true,
        journal_busy: true,
    };
    // Failing for good (non-retryable) releases it.
    let l = leased_run(store, &ns, t).await;
    apply(store, &ns, tied("a"), Some(&call(&l, "state:1")), t + 1).await;
    let mut failure = Failure::new("boom", "E");
    failure.non_retryable = true;
    let out = store.fail_run(l, failure, t + 2).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Failed);
    assert!(matches!(
        ok(store, &ns, acquire("a", 1_000), t + 3).await,
        StateResult::Granted { .. }
    ));
    // A retried failure keeps it (the next attempt replays the grant).
    let l = leased_run(store, &ns, t + 10).await;
    apply(store, &ns, tied("b"), Some(&call(&l, "state:1")), t + 11).await;
    let out = store
        .fail_run(l, Failure::new("transient", "E"), t + 12)
        .await
        .unwrap();
    assert_eq!(out.run.status, RunStatus::Queued);
    assert!(matches!(
        ok(store, &ns, acquire("b", 1_000), t + 13).await,
        StateResult::Busy { .. }
    ));
    // Cancelling releases it.
    let l = leased_run(store, &ns, t + 20).await;
    apply(store, &ns, tied("c"), Some(&call(&l, "state:1")), t + 21).await;
    store
        .cancel_run(&ns, &l.run_id, Failure::new("stop", "Cancelled"), t + 22)
        .await
        .unwrap();
    assert!(matches!(
        ok(store, &ns, acquire("c", 1_000), t + 23).await,
        StateResult::Granted { .. }
    ));
    // Completing releases it (the batched completion finds the runs holding locks).
    let l = leased_run(store, &ns, t + 25).await;
    apply(store, &ns, tied("e"), Some(&call(&l, "state:1")), t + 26).await;
    store.complete_run(l, "null".into(), t + 27).await.unwrap();
    assert!(matches!(
        ok(store, &ns, acquire("e", 1_000), t + 28).await,
        StateResult::Granted { .. }
    ));
    // Untied locks outlive their run.
    let l = leased_run(store, &ns, t + 30).await;
    apply(
        store,
        &ns,
        acquire("d", 60_000),
        Some(&call(&l, "state:1")),
        t + 31,
    )
    .await;
    store.complete_run(l, "null".into(), t + 32).await.unwrap();
    assert!(matches!(
        ok(store, &ns, acquire("d", 1_000), t + 33).await,
        StateResult::Busy {
            holder_run_id: None,
            ..
        }
    ));
}

/// The sweeper's queries use the expiry indexes (no full scans), checked with the query
/// planners themselves over tables holding a few thousand live rows (statistics gathered),
/// inside a transaction as the sweeper runs them.
#[tokio::test]
async fn sweeper_queries_use_the_expiry_indexes() {
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("plan.db").display());
    let sqlite = super::SqlStore::connect(&url).await.unwrap();
    let mut stores = vec![("sqlite", sqlite)];
    if let Some(url) = super::fresh_postgres_url("plan").await {
        stores.push(("postgres", super::SqlStore::connect(&url).await.unwrap()));
    }
    for (name, store) in stores {
        let db = store.connection();
        for sql in [
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
             INSERT INTO state_entries (namespace, key, value, value_size, version, \
             expires_at, created_at, updated_at) SELECT 'ns', 'k' || CAST(i AS TEXT), '1', 1, \
             1, CASE WHEN i % 2 = 0 THEN NULL ELSE 1000000 + i END, 1, 1 FROM n",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
             INSERT INTO state_locks (namespace, key, fence, expires_at, holder_run_id, \
             acquired_at, updated_at) SELECT 'ns', 'k' || CAST(i AS TEXT), i, 1000000 + i, \
             NULL, 1, 1 FROM n",
            "ANALYZE",
        ] {
            db.execute_unprepared(sql).await.unwrap();
        }
        if name == "postgres" {
            // Key order must be byte order whatever the database's default collation.
            let row = db
                .query_one_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT collation_name FROM information_schema.columns \
                     WHERE table_name = 'state_entries' AND column_name = 'key'"
                        .to_owned(),
                ))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "C");
        }
        let txn = db.begin().await.unwrap();
        let backend = txn.get_database_backend();
        let explain = if name == "sqlite" {
            "EXPLAIN QUERY PLAN "
        } else {
            "EXPLAIN "
        };
        for (sql, index) in [
            (
                "SELECT namespace, key FROM state_entries WHERE expires_at IS NOT NULL \
                 AND expires_at <= 5 ORDER BY expires_at LIMIT 500",
                "idx_state_entries_expiry",
            ),
            (
                "SELECT MIN(expires_at) FROM state_entries WHERE expires_at IS NOT NULL",
                "idx_state_entries_expiry",
            ),
            (
                "SELECT namespace, key, fence FROM state_locks WHERE expires_at <= 5 \
                 ORDER BY expires_at LIMIT 500",
                "idx_state_locks_expiry",
            ),
            (
                "SELECT MIN(expires_at) FROM state_locks",
                "idx_state_locks_expiry",
            ),
        ] {
            let rows = txn
                .query_all_raw(Statement::from_string(backend, format!("{explain}{sql}")))
                .await
                .unwrap();
            let plan = rows
                .iter()
                .map(|r| {
                    (0..4)
                        .filter_map(|i| r.try_get_by_index::<String>(i).ok())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n");
            assert!(plan.contains(index), "{name}: {sql}\n{plan}");
        }
    }
}
