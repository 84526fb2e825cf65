//! Two server replicas on one PostgreSQL database: wakeups cross replicas (LISTEN/NOTIFY)
//! and `FOR UPDATE SKIP LOCKED` claims never deliver a task twice.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, poll_req, start_req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_postgres() {
    let Some(a) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let b = a.replica();

    // A poll open on B is woken by a start on A: the first start on the queue (which
    // creates it), then a plain start on the now known queue, which A's writer inserts
    // with its batch's other plain starts and whose wakeup it publishes in that commit.
    for job in ["cross", "cross-batched"] {
        let mut wb = b.worker().await;
        let poll = tokio::spawn(async move {
            let t = Instant::now();
            let r = wb
                .poll_task(poll_req(&[job], 20_000))
                .await
                .unwrap()
                .into_inner();
            (r.tasks.len(), t.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.jobs()
            .await
            .start_run(start_req(job, json!(1)))
            .await
            .unwrap();
        let (n, waited) = poll.await.unwrap();
        assert_eq!(n, 1, "{job}");
        assert!(
            waited < Duration::from_secs(3),
            "cross-replica wakeup ({job}) took {waited:?}"
        );
    }

    // 200 runs, started through both replicas, claimed by 8 pollers on both.
    let total = 200;
    for i in 0..total {
        let s = if i % 2 == 0 { &a } else { &b };
        s.jobs()
            .await
            .start_run(start_req("dup", json!(i)))
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for p in 0..8 {
        let mut w = if p % 2 == 0 {
            a.worker().await
        } else {
            b.worker().await
        };
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let mut req = poll_req(&["dup"], 500);
                req.max_tasks = 5;
                let tasks = w.poll_task(req).await.unwrap().into_inner().tasks;
                if tasks.is_empty() {
                    return got;
                }
                for t in tasks {
                    w.complete_run(pb::CompleteRunRequest {
                        run_id: t.run_id.clone(),
                        lease_token: t.lease_token.clone(),
                        result: vec![],
                    })
                    .await
                    .unwrap();
                    got.push(t.run_id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), total, "every run delivered, none twice");
    assert_eq!(distinct.len(), total);
}
