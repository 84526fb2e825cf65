//! Contract checks of child runs: a child wait starts its children with their parent links
//! in the suspend's transaction (once per run and step id), the parent is resumed in the
//! transaction that makes the last child final (with every child's outcome journaled), a
//! wait whose children are all final already is satisfied at once, and cancelling a run
//! cancels its non-final descendants.

use std::sync::Arc;

use crate::engine::event_model::{SuspendOutcome, WaitSpec};
use crate::engine::model::{Failure, LeaseRef, NewRun, ParentLink, RunRecord, RunStatus, StepKind};
use crate::engine::store::Store;

use super::{claim_req, new_run, ns, start};

fn lease(ns: &str, run_id: &str, token: &str) -> LeaseRef {
    LeaseRef {
        namespace: ns.to_owned(),
        run_id: run_id.to_owned(),
        token: token.to_owned(),
    }
}

/// Claims the one deliverable run of `job` and returns it with its token.
async fn claim_one(store: &Arc<dyn Store>, ns: &str, job: &str, now: i64) -> (RunRecord, String) {
    let mut tasks = store
        .claim(claim_req(ns, &["q"], &[job], 1, now))
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "one {job} task expected");
    let t = tasks.remove(0);
    (t.run, t.lease_token)
}

fn children(ns: &str, parent: &str, step: &str, jobs: &[&str], now: i64) -> WaitSpec {
    WaitSpec::Children {
        runs: jobs
            .iter()
            .enumerate()
            .map(|(i, job)| NewRun {
                parent: Some(ParentLink {
                    run_id: parent.to_owned(),
                    step_id: step.to_owned(),
                    index: i as i32,
                }),
                ..new_run(ns, job, "q", now)
            })
            .collect(),
    }
}

fn suspended_children(out: SuspendOutcome) -> Vec<RunRecord> {
    match out {
        SuspendOutcome::Suspended {
            wake_at, children, ..
        } => {
            assert_eq!(wake_at, None, "a child wait has no timeout");
            children.into_iter().map(|(r, _)| r).collect()
        }
        other => panic!("expected suspended, got {other:?}"),
    }
}

pub async fn child_wait_lifecycle(store: &Arc<dyn Store>) {
    let ns = ns("children");
    start(store, new_run(&ns, "parent", "q", 1_000)).await;
    let (parent, token) = claim_one(store, &ns, "parent", 1_000).await;
    let out = store
        .suspend_run(
            lease(&ns, &parent.id, &token),
            "kids".into(),
            children(&ns, &parent.id, "kids", &["a", "b"], 2_000),
            2_000,
        )
        .await
        .unwrap();
    let kids = suspended_children(out);
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0].job, "a");
    assert_eq!(kids[1].job, "b");
    for k in &kids {
        assert_eq!(k.parent_run_id.as_deref(), Some(parent.id.as_str()));
        assert_eq!(k.parent_step_id.as_deref(), Some("kids"));
        assert_eq!(k.status, RunStatus::Queued);
    }
    let p = store.get_run(&ns, &parent.id).await.unwrap().unwrap();
    assert_eq!(p.status, RunStatus::Waiting);
    assert_eq!(p.lease_token, None, "the parent's lease is released");
    let detail = store
        .get_run_detail(&ns, &parent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.wait.unwrap().kind, StepKind::Child);

    // The first child completes: the parent still waits.
    let (a, ta) = claim_one(store, &ns, "a", 3_000).await;
    assert_eq!(a.id, kids[0].id);
    store
        .complete_run(lease(&ns, &a.id, &ta), r#"{"v":1}"#.into(), 3_100)
        .await
        .unwrap();
    let p = store.get_run(&ns, &parent.id).await.unwrap().unwrap();
    assert_eq!(p.status, RunStatus::Waiting);

    // The second fails for good: the parent is queued with both outcomes journaled.
    let (b, tb) = claim_one(store, &ns, "b", 3_200).await;
    let mut failure = Failure::new("no", "E");
    failure.non_retryable = true;
    store
        .fail_run(lease(&ns, &b.id, &tb), failure, 3_300)
        .await
        .unwrap();
    let detail = store
        .get_run_detail(&ns, &parent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.run.status, RunStatus::Queued);
    assert_eq!(detail.run.available_at, 3_300);
    assert!(detail.wait.is_none());
    let entry = detail.steps.iter().find(|s| s.step_id == "kids").unwrap();
    assert_eq!(entry.kind, StepKind::Child);
    assert_eq!(entry.attempt, 1);
    let v: serde_json::Value = serde_json::from_str(entry.output.as_deref().unwrap()).unwrap();
    assert_eq!(v["children"][0]["runId"], a.id.as_str());
    assert_eq!(v["children"][0]["status"], "completed");
    assert_eq!(v["children"][0]["result"]["v"], 1);
    assert_eq!(v["children"][1]["status"], "failed");
    assert_eq!(v["children"][1]["failure"]["message"], "no");

    // The resumed parent continues the same attempt; the same wait answers the journal.
    let (resumed, token2) = claim_one(store, &ns, "parent", 3_400).await;
    assert_eq!(resumed.attempt, 1);
    let again = store
        .suspend_run(
            lease(&ns, &parent.id, &token2),
            "kids".into(),
            children(&ns, &parent.id, "kids", &["a", "b"], 3_500),
            3_500,
        )
        .await
        .unwrap();
    match again {
        SuspendOutcome::Satisfied(e) => assert_eq!(e.output, entry.output),
        other => panic!("expected the recorded entry, got {other:?}"),
    }
    // A second child wait suspends again (its new child is queued).
    let kids2 = suspended_children(
        store
            .suspend_run(
                lease(&ns, &parent.id, &token2),
                "more".into(),
                children(&ns, &parent.id, "more", &["c"], 3_600),
                3_600,
            )
            .await
            .unwrap(),
    );
    // Cancelling the child directly resolves the parent's wait with "cancelled".
    store
        .cancel_run(&ns, &kids2[0].id, Failure::new("stop", "Cancelled"), 3_700)
        .await
        .unwrap();
    let detail = store
        .get_run_detail(&ns, &parent.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.run.status, RunStatus::Queued);
    let entry = detail.steps.iter().find(|s| s.step_id == "more").unwrap();
    let v: serde_json::Value = serde_json::from_str(entry.output.as_deref().unwrap()).unwrap();
    assert_eq!(v["children"][0]["status"], "cancelled");
    assert_eq!(v["children"][0]["failure"]["message"], "stop");
}

pub async fn cancel_cascade(store: &Arc<dyn Store>) {
    let ns = ns("cascade");
    start(store, new_run(&ns, "root", "q", 1_000)).await;
    let (root, token) = claim_one(store, &ns, "root", 1_000).await;
    let mids = suspended_children(
        store
            .suspend_run(
                lease(&ns, &root.id, &token),
                "mid".into(),
                children(&ns, &root.id, "mid", &["mid", "other"], 1_100),
                1_100,
            )
            .await
            .unwrap(),
    );
    // "mid" starts a leaf; "other" completes before the cancel.
    let (mid, mt) = claim_one(store, &ns, "mid", 1_200).await;
    let leaves = suspended_children(
        store
            .suspend_run(
                lease(&ns, &mid.id, &mt),
                "leaf".into(),
                children(&ns, &mid.id, "leaf", &["leaf"], 1_300),
                1_300,
            )
            .await
            .unwrap(),
    );
    let (other, ot) = claim_one(store, &ns, "other", 1_400).await;
    store
        .complete_run(lease(&ns, &other.id, &ot), "1".into(), 1_500)
        .await
        .unwrap();
    let (leaf, _lt) = claim_one(store, &ns, "leaf", 1_600).await;
    assert_eq!(leaf.id, leaves[0].id);

    store
        .cancel_run(&ns, &root.id, Failure::new("stop", "Cancelled"), 2_000)
        .await
        .unwrap();
    let status = |id: String| {
        let store = store.clone();
        let ns = ns.clone();
        async move { store.get_run(&ns, &id).await.unwrap().unwrap() }
    };
    assert_eq!(status(root.id.clone()).await.status, RunStatus::Cancelled);
    let m = status(mids[0].id.clone()).await;
    assert_eq!(m.status, RunStatus::Cancelled);
    assert!(m.failure.unwrap().message.contains(&root.id));
    assert_eq!(
        status(leaf.id.clone()).await.status,
        RunStatus::Cancelled,
        "recursively"
    );
    assert_eq!(
        status(other.id.clone()).await.status,
        RunStatus::Completed,
        "a final child stays as it is"
    );
    // Nothing of the tree is deliverable any more.
    let none = store
        .claim(claim_req(
            &ns,
            &["q"],
            &["root", "mid", "leaf", "other"],
            10,
            3_000,
        ))
        .await
        .unwrap();
    assert!(none.is_empty());
}
