//! End-to-end tests of events and durable waits through the raw protocol (`EventsService`
//! and `WorkerService.SuspendRun`, no SDK), against the real server binary on SQLite and
//! PostgreSQL: the inbox (an early event is not lost, an event from before the run never
//! matches), timeouts, cancellation of a waiting run, duplicate event ids, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::events_service_client::EventsServiceClient;
use support::{Db, TestServer, ms, poll_req, start_req, ts_ms};
use tonic::Code;
use tonic::transport::Channel;

async fn events(s: &TestServer) -> EventsServiceClient<Channel> {
    EventsServiceClient::connect(s.endpoint()).await.unwrap()
}

async fn publish(
    s: &TestServer,
    name: &str,
    key: &str,
    id: &str,
    payload: Value,
) -> pb::PublishEventResponse {
    events(s)
        .await
        .publish_event(pb::PublishEventRequest {
            name: name.into(),
            payload: payload.to_string().into_bytes(),
            id: id.into(),
            correlation_key: key.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn start(s: &TestServer, job: &str) -> pb::Run {
    s.jobs()
        .await
        .start_run(start_req(job, json!({})))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

async fn poll(s: &TestServer, job: &str, wait_ms: u64) -> Option<pb::Task> {
    let mut w = s.worker().await;
    w.poll_task(poll_req(&[job], wait_ms))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .into_iter()
        .next()
}

fn event_wait(name: &str, key: &str, timeout_ms: u64) -> pb::suspend_run_request::Wait {
    pb::suspend_run_request::Wait::Event(pb::EventWait {
        event_name: name.into(),
        correlation_key: key.into(),
        timeout: Some(ms(timeout_ms)),
    })
}

async fn suspend(
    s: &TestServer,
    task: &pb::Task,
    step_id: &str,
    wait: pb::suspend_run_request::Wait,
) -> Result<pb::SuspendRunResponse, tonic::Status> {
    s.worker()
        .await
        .suspend_run(pb::SuspendRunRequest {
            run_id: task.run_id.clone(),
            lease_token: task.lease_token.clone(),
            step_id: step_id.into(),
            wait: Some(wait),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The JSON output of a journal entry (or step).
fn output(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn entry_output(r: &pb::SuspendRunResponse) -> Value {
    assert_eq!(r.outcome, pb::SuspendOutcome::Satisfied as i32, "{r:?}");
    let entry = r.entry.as_ref().unwrap();
    assert_eq!(entry.kind, pb::JournalEntryKind::Event as i32);
    match entry.outcome.as_ref().unwrap() {
        pb::journal_entry::Outcome::Output(o) => output(o),
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// An event published after the run was created but before it reached its wait resumes it
/// (the inbox); one published before the run existed never does. Later events resume the
/// waiting run, which is delivered again as the same attempt, and the events it received
/// appear in its timeline.
async fn early_event_is_received_but_not_one_from_before_the_run(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let before = publish(&s, "order.paid", "ord_1", "", json!({"n": 0})).await;
    assert_eq!(before.resumed_run_count, 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let run = start(&s, "ship").await;
    let task = poll(&s, "ship", 5_000).await.unwrap();
    assert_eq!(task.run_id, run.id);
    assert!(!task.resumed);
    // The webhook lands before the handler reaches its wait.
    let early = publish(&s, "order.paid", "ord_1", "", json!({"n": 1})).await;
    assert_eq!(early.resumed_run_count, 0, "nobody is waiting yet");
    publish(&s, "order.paid", "ord_2", "", json!({"other": true})).await;

    let r = suspend(&s, &task, "paid", event_wait("order.paid", "ord_1", 60_000))
        .await
        .unwrap();
    let got = entry_output(&r);
    assert_eq!(got["timedOut"], false);
    assert_eq!(
        got["event"]["payload"],
        json!({"n": 1}),
        "the early event, not n:0"
    );
    assert_eq!(
        got["event"]["id"],
        early.event.as_ref().unwrap().id.as_str()
    );
    assert_eq!(got["event"]["correlationKey"], "ord_1");

    // n:0 predates the run and n:1 is consumed: the second wait suspends.
    let r = suspend(
        &s,
        &task,
        "paid#2",
        event_wait("order.paid", "ord_1", 60_000),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, pb::SuspendOutcome::Suspended as i32);
    assert!(r.entry.is_none());
    let waiting = s.get_run(&run.id).await;
    assert_eq!(waiting.status, pb::RunStatus::Waiting as i32);
    let wait = waiting.wait.unwrap();
    assert_eq!(wait.step_id, "paid#2");
    assert_eq!(wait.kind, pb::JournalEntryKind::Event as i32);
    assert_eq!(
        (wait.event_name.as_str(), wait.correlation_key.as_str()),
        ("order.paid", "ord_1")
    );
    assert_eq!(ts_ms(&wait.wake_at), ts_ms(&r.wake_at));
    // The lease is released: the old token is refused.
    let hb = s
        .worker()
        .await
        .heartbeat(pb::HeartbeatRequest {
            run_id: run.id.clone(),
            lease_token: task.lease_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(hb.code(), Code::FailedPrecondition);

    let late = publish(&s, "order.paid", "ord_1", "", json!({"n": 2})).await;
    assert_eq!(late.resumed_run_count, 1);
    assert_eq!(late.resumed_run_ids, vec![run.id.clone()]);
    let task2 = poll(&s, "ship", 5_000)
        .await
        .expect("resumed run delivered");
    assert!(task2.resumed);
    assert_eq!(task2.attempt, 1, "a wait does not use up an attempt");
    assert_ne!(task2.lease_token, task.lease_token);
    let journal: Vec<(&str, Value)> = task2
        .journal
        .iter()
        .map(|e| match e.outcome.as_ref().unwrap() {
            pb::journal_entry::Outcome::Output(o) => (e.id.as_str(), output(o)),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(journal.len(), 2);
    assert_eq!(journal[0].0, "paid");
    assert_eq!(journal[1].0, "paid#2");
    assert_eq!(journal[1].1["event"]["payload"], json!({"n": 2}));
    s.worker()
        .await
        .complete_run(pb::CompleteRunRequest {
            run_id: run.id.clone(),
            lease_token: task2.lease_token.clone(),
            result: b"\"shipped\"".to_vec(),
        })
        .await
        .unwrap();
    let done = s.get_run(&run.id).await;
    assert_eq!(done.status, pb::RunStatus::Completed as i32);
    assert_eq!(done.attempts.len(), 1);
    assert!(done.wait.is_none());
    // The timeline: both event waits, with the events they received.
    let kinds: Vec<(String, i32, Value)> = done
        .steps
        .iter()
        .map(|st| (st.id.clone(), st.kind, output(&st.output)))
        .collect();
    assert_eq!(kinds[0].1, pb::JournalEntryKind::Event as i32);
    assert_eq!(
        kinds[0].2["event"]["id"],
        early.event.as_ref().unwrap().id.as_str()
    );
    assert_eq!(
        kinds[1].2["event"]["id"],
        late.event.as_ref().unwrap().id.as_str()
    );
    let waited = &done.steps[1];
    assert!(ts_ms(&waited.completed_at) >= ts_ms(&waited.started_at));

    // A run created after all of these events finds none of them in its inbox.
    let fresh = start(&s, "ship").await;
    let t = poll(&s, "ship", 5_000).await.unwrap();
    assert_eq!(t.run_id, fresh.id);
    let r = suspend(&s, &t, "paid", event_wait("order.paid", "ord_1", 0))
        .await
        .unwrap();
    assert_eq!(entry_output(&r), json!({"timedOut": true}));
}
both_stores!(early_event_is_received_but_not_one_from_before_the_run);

/// A timeout resumes the run with an explicit timed-out result, at (not before) the
/// timeout, woken by the server's timer.
async fn timeout_resumes_with_timed_out_result_at_the_timeout(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let run = start(&s, "remind").await;
    let task = poll(&s, "remind", 5_000).await.unwrap();
    let t0 = Instant::now();
    let r = suspend(&s, &task, "wait", event_wait("never.sent", "", 1_500))
        .await
        .unwrap();
    assert_eq!(r.outcome, pb::SuspendOutcome::Suspended as i32);
    // Whenever the task comes back, it is not before the timeout (t0 is before the server
    // received the wait, so `elapsed` can only overstate the time the run waited).
    let task2 = poll(&s, "remind", 20_000)
        .await
        .expect("resumed at the timeout");
    let elapsed = t0.elapsed();
    assert_eq!(task2.run_id, run.id);
    assert!(task2.resumed);
    let entry = &task2.journal[0];
    assert_eq!(entry.kind, pb::JournalEntryKind::Event as i32);
    let Some(pb::journal_entry::Outcome::Output(o)) = &entry.outcome else {
        panic!("{entry:?}")
    };
    assert_eq!(output(o), json!({"timedOut": true}));
    let d = s.get_run(&run.id).await;
    let step = &d.steps[0];
    let waited = ts_ms(&step.completed_at) - ts_ms(&step.started_at);
    eprintln!("timeout 1500 ms: resolved after {waited} ms (server), delivered after {elapsed:?}");
    assert!(waited >= 1_500, "resolved {waited} ms after the wait began");
    assert!(elapsed >= Duration::from_millis(1_500));
    assert!(elapsed < Duration::from_secs(12), "woken late: {elapsed:?}");
}
both_stores!(timeout_resumes_with_timed_out_result_at_the_timeout);

/// Cancelling a waiting run deletes its wait: a matching event resumes nothing and no
/// task is delivered.
async fn cancel_a_waiting_run(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let run = start(&s, "approve").await;
    let task = poll(&s, "approve", 5_000).await.unwrap();
    suspend(
        &s,
        &task,
        "approval",
        event_wait("approval.given", "doc_9", 600_000),
    )
    .await
    .unwrap();
    let cancelled = s
        .jobs()
        .await
        .cancel_run(pb::CancelRunRequest {
            run_id: run.id.clone(),
            reason: "withdrawn".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(cancelled.status, pb::RunStatus::Cancelled as i32);
    let d = s.get_run(&run.id).await;
    assert!(d.wait.is_none());
    assert_eq!(d.attempts.len(), 1);
    assert!(d.attempts[0].ended_at.is_some());
    let p = publish(&s, "approval.given", "doc_9", "", json!({})).await;
    assert_eq!(p.resumed_run_count, 0);
    assert!(poll(&s, "approve", 1_000).await.is_none());
    assert_eq!(
        s.get_run(&run.id).await.status,
        pb::RunStatus::Cancelled as i32
    );
}
both_stores!(cancel_a_waiting_run);

/// A repeated event id stores nothing and resumes nothing, even for a run that is waiting
/// for exactly that event.
async fn duplicate_event_id_is_ignored(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let run = start(&s, "sync").await;
    let task = poll(&s, "sync", 5_000).await.unwrap();
    suspend(&s, &task, "w", event_wait("crm.updated", "acct_1", 600_000))
        .await
        .unwrap();
    let first = publish(&s, "crm.updated", "acct_1", "evt-1", json!({"v": 1})).await;
    assert!(!first.duplicate);
    assert_eq!(first.resumed_run_count, 1);
    assert_eq!(first.event.as_ref().unwrap().id, "evt-1");
    let task = poll(&s, "sync", 5_000).await.unwrap();
    let r = suspend(
        &s,
        &task,
        "w#2",
        event_wait("crm.updated", "acct_1", 600_000),
    )
    .await
    .unwrap();
    assert_eq!(r.outcome, pb::SuspendOutcome::Suspended as i32);
    // The webhook is delivered again: ignored.
    let again = publish(&s, "crm.updated", "acct_1", "evt-1", json!({"v": 1})).await;
    assert!(again.duplicate);
    assert_eq!(again.resumed_run_count, 0);
    assert!(again.resumed_run_ids.is_empty());
    assert_eq!(again.event, first.event, "the first event stands");
    assert_eq!(
        s.get_run(&run.id).await.status,
        pb::RunStatus::Waiting as i32
    );
    let listed = events(&s)
        .await
        .list_events(pb::ListEventsRequest {
            name: "crm.updated".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events.len(), 1);
    // A new id does resume it.
    let next = publish(&s, "crm.updated", "acct_1", "evt-2", json!({"v": 2})).await;
    assert_eq!(next.resumed_run_count, 1);
}
both_stores!(duplicate_event_id_is_ignored);

/// Bad input gets a clear error and stores nothing: no event is stored, and the run that
/// sent a bad wait is still running under its lease with an empty journal.
async fn bad_input_is_rejected_and_nothing_is_stored(db: Db) {
    let Some(s) = TestServer::start_with(db, &["--max-payload-bytes", "4096"]).await else {
        return;
    };
    let ok = pb::PublishEventRequest {
        name: "payment.confirmed".into(),
        payload: b"{}".to_vec(),
        id: String::new(),
        correlation_key: "pay_1".into(),
    };
    let cases: Vec<(&str, pb::PublishEventRequest, Code, &str)> = vec![
        (
            "empty name",
            pb::PublishEventRequest {
                name: String::new(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "name must not be empty",
        ),
        (
            "name with space",
            pb::PublishEventRequest {
                name: "payment confirmed".into(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "allowed characters",
        ),
        (
            "invalid JSON",
            pb::PublishEventRequest {
                payload: b"{\"amount\":".to_vec(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "payload is not valid JSON",
        ),
        (
            "bad UTF-8",
            pb::PublishEventRequest {
                payload: vec![0xff, 0xfe],
                ..ok.clone()
            },
            Code::InvalidArgument,
            "payload is not UTF-8",
        ),
        (
            "oversized payload",
            pb::PublishEventRequest {
                payload: format!("\"{}\"", "x".repeat(5_000)).into_bytes(),
                ..ok.clone()
            },
            Code::ResourceExhausted,
            "limit is 4096 bytes",
        ),
        (
            "control character in key",
            pb::PublishEventRequest {
                correlation_key: "pay\n1".into(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "correlation_key must not contain control characters",
        ),
        (
            "long key",
            pb::PublishEventRequest {
                correlation_key: "k".repeat(513),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "correlation_key is too long",
        ),
        (
            "long id",
            pb::PublishEventRequest {
                id: "i".repeat(257),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "id is too long",
        ),
    ];
    let mut ev = events(&s).await;
    for (what, req, code, needle) in cases {
        let err = ev.publish_event(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: {:?}",
            err.message()
        );
    }
    for (what, req, needle) in [
        (
            "page size",
            pb::ListEventsRequest {
                page_size: 1_001,
                ..Default::default()
            },
            "page_size",
        ),
        (
            "page token",
            pb::ListEventsRequest {
                page_token: "abc".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            "name filter",
            pb::ListEventsRequest {
                name: "a b".into(),
                ..Default::default()
            },
            "name",
        ),
    ] {
        let err = ev.list_events(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}");
        assert!(
            err.message().contains(needle),
            "{what}: {:?}",
            err.message()
        );
    }

    let run = start(&s, "pay").await;
    let task = poll(&s, "pay", 5_000).await.unwrap();
    use pb::suspend_run_request::Wait;
    let negative = prost_types::Duration {
        seconds: -5,
        nanos: 0,
    };
    let waits: Vec<(&str, Option<Wait>, &str)> = vec![
        (
            "negative timeout",
            Some(Wait::Event(pb::EventWait {
                event_name: "e".into(),
                correlation_key: String::new(),
                timeout: Some(negative),
            })),
            "event.timeout must be a non-negative duration",
        ),
        (
            "missing timeout",
            Some(Wait::Event(pb::EventWait {
                event_name: "e".into(),
                correlation_key: String::new(),
                timeout: None,
            })),
            "event.timeout is required",
        ),
        (
            "too long timeout",
            Some(Wait::Event(pb::EventWait {
                event_name: "e".into(),
                correlation_key: String::new(),
                timeout: Some(ms(366 * 86_400_000)),
            })),
            "event.timeout must be between",
        ),
        (
            "empty event name",
            Some(event_wait("", "", 1_000)),
            "event.event_name must not be empty",
        ),
        (
            "bad key",
            Some(event_wait("e", "a\u{0}b", 1_000)),
            "event.correlation_key",
        ),
        ("no wait", None, "wait is required"),
        (
            "negative sleep",
            Some(Wait::Sleep(pb::SleepWait {
                duration: Some(negative),
                until: None,
            })),
            "sleep.duration must be a non-negative duration",
        ),
        (
            "sleep with both",
            Some(Wait::Sleep(pb::SleepWait {
                duration: Some(ms(1)),
                until: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
            })),
            "exactly one of duration and until",
        ),
        (
            "sleep with neither",
            Some(Wait::Sleep(pb::SleepWait {
                duration: None,
                until: None,
            })),
            "exactly one of duration and until",
        ),
        (
            "sleep too far",
            Some(Wait::Sleep(pb::SleepWait {
                duration: None,
                until: Some(prost_types::Timestamp {
                    seconds: 32_503_680_000,
                    nanos: 0,
                }),
            })),
            "more than",
        ),
    ];
    let mut w = s.worker().await;
    for (what, wait, needle) in waits {
        let err = w
            .suspend_run(pb::SuspendRunRequest {
                run_id: task.run_id.clone(),
                lease_token: task.lease_token.clone(),
                step_id: "w".into(),
                wait,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: {:?}",
            err.message()
        );
    }
    let err = w
        .suspend_run(pb::SuspendRunRequest {
            run_id: task.run_id.clone(),
            lease_token: task.lease_token.clone(),
            step_id: String::new(),
            wait: Some(event_wait("e", "", 1_000)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("step_id must not be empty"));
    let err = w
        .suspend_run(pb::SuspendRunRequest {
            run_id: task.run_id.clone(),
            lease_token: "stale".into(),
            step_id: "w".into(),
            wait: Some(event_wait("e", "", 1_000)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Nothing was stored.
    let listed = ev
        .list_events(pb::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.events.is_empty(), "{:?}", listed.events);
    let d = s.get_run(&run.id).await;
    assert_eq!(d.status, pb::RunStatus::Running as i32);
    assert!(d.steps.is_empty());
    assert!(d.wait.is_none());
    w.heartbeat(pb::HeartbeatRequest {
        run_id: run.id.clone(),
        lease_token: task.lease_token.clone(),
    })
    .await
    .expect("the lease is intact");
}
both_stores!(bad_input_is_rejected_and_nothing_is_stored);

/// Events are per namespace: an event published with one team's key neither resumes
/// another team's waiting run nor shows in its listing; an event needs a key once keys
/// exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_isolated_by_namespace() {
    use support::with_key;
    let mut s = TestServer::start(Db::Sqlite).await.unwrap();
    let key_a = s.create_key("team-a");
    let key_b = s.create_key("team-b");
    s.restart();
    let run = s
        .jobs()
        .await
        .start_run(with_key(start_req("j", json!({})), Some(&key_b)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let task = s
        .worker()
        .await
        .poll_task(with_key(poll_req(&["j"], 5_000), Some(&key_b)))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    let r = s
        .worker()
        .await
        .suspend_run(with_key(
            pb::SuspendRunRequest {
                run_id: task.run_id.clone(),
                lease_token: task.lease_token.clone(),
                step_id: "w".into(),
                wait: Some(event_wait("deploy.done", "svc", 600_000)),
            },
            Some(&key_b),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome, pb::SuspendOutcome::Suspended as i32);
    let req = pb::PublishEventRequest {
        name: "deploy.done".into(),
        payload: b"{}".to_vec(),
        id: "evt-shared-id".into(),
        correlation_key: "svc".into(),
    };
    let mut ev = events(&s).await;
    let err = ev.publish_event(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let a = ev
        .publish_event(with_key(req.clone(), Some(&key_a)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        a.resumed_run_count, 0,
        "team-a's event cannot resume team-b's run"
    );
    let listed = ev
        .list_events(with_key(pb::ListEventsRequest::default(), Some(&key_b)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.events.is_empty(),
        "team-b sees none of team-a's events"
    );
    // The same id in another namespace is not a duplicate.
    let b = ev
        .publish_event(with_key(req, Some(&key_b)))
        .await
        .unwrap()
        .into_inner();
    assert!(!b.duplicate);
    assert_eq!(b.resumed_run_ids, vec![run.id]);
}
