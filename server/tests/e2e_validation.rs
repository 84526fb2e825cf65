//! Bad input never panics the server, never stores anything, and gets the right gRPC code
//! with a message a person can act on.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use serde_json::json;
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, ms, poll_req, start_req};
use tonic::Code;

fn dur(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_with_clear_errors() {
    let s = TestServer::start_with(Db::Sqlite, &["--max-payload-bytes", "4096"])
        .await
        .unwrap();
    let mut jobs = s.jobs().await;
    let ok = start_req("job", json!({}));
    let cases: Vec<(&str, pb::StartRunRequest, Code, &str)> = vec![
        (
            "empty job",
            pb::StartRunRequest {
                job: String::new(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "job must not be empty",
        ),
        (
            "long job",
            pb::StartRunRequest {
                job: "j".repeat(129),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "limit is 128",
        ),
        (
            "job with space",
            pb::StartRunRequest {
                job: "send email".into(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "allowed characters",
        ),
        (
            "job with NUL",
            pb::StartRunRequest {
                job: "a\u{0}b".into(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "allowed characters",
        ),
        (
            "bad queue",
            pb::StartRunRequest {
                queue: "q!".into(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "queue",
        ),
        (
            "invalid JSON",
            pb::StartRunRequest {
                payload: b"{not json".to_vec(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "not valid JSON",
        ),
        (
            "bad UTF-8",
            pb::StartRunRequest {
                payload: vec![b'"', 0xff, b'"'],
                ..ok.clone()
            },
            Code::InvalidArgument,
            "not UTF-8",
        ),
        (
            "deep JSON",
            pb::StartRunRequest {
                payload: ("[".repeat(200) + &"]".repeat(200)).into_bytes(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "deeper than 128",
        ),
        (
            "payload over limit",
            pb::StartRunRequest {
                payload: format!("\"{}\"", "x".repeat(5000)).into_bytes(),
                ..ok.clone()
            },
            Code::ResourceExhausted,
            "limit is 4096 bytes",
        ),
        (
            "negative ttl",
            pb::StartRunRequest {
                idempotency_key: "k".into(),
                idempotency_ttl: dur(-1, 0),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "non-negative",
        ),
        (
            "malformed nanos",
            pb::StartRunRequest {
                idempotency_key: "k".into(),
                idempotency_ttl: dur(1, 2_000_000_000),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "nanos",
        ),
        (
            "ttl without key",
            pb::StartRunRequest {
                idempotency_ttl: dur(60, 0),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "idempotency_key is empty",
        ),
        (
            "ttl too long",
            pb::StartRunRequest {
                idempotency_key: "k".into(),
                idempotency_ttl: dur(400 * 86_400, 0),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "idempotency_ttl must be between",
        ),
        (
            "key with control",
            pb::StartRunRequest {
                idempotency_key: "a\nb".into(),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "control characters",
        ),
        (
            "key too long",
            pb::StartRunRequest {
                idempotency_key: "k".repeat(513),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "too long",
        ),
        (
            "lease too short",
            pb::StartRunRequest {
                lease_timeout: dur(0, 5_000_000),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "lease_timeout",
        ),
        (
            "zero attempts",
            pb::StartRunRequest {
                retry_policy: Some(pb::RetryPolicy {
                    max_attempts: -1,
                    ..Default::default()
                }),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "max_attempts",
        ),
        (
            "bad coefficient",
            pb::StartRunRequest {
                retry_policy: Some(pb::RetryPolicy {
                    backoff_coefficient: 0.5,
                    ..Default::default()
                }),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "backoff_coefficient",
        ),
        (
            "NaN coefficient",
            pb::StartRunRequest {
                retry_policy: Some(pb::RetryPolicy {
                    backoff_coefficient: f64::NAN,
                    ..Default::default()
                }),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "backoff_coefficient",
        ),
        (
            "huge duration",
            pb::StartRunRequest {
                retry_policy: Some(pb::RetryPolicy {
                    initial_interval: dur(i64::MAX, 0),
                    ..Default::default()
                }),
                ..ok.clone()
            },
            Code::InvalidArgument,
            "longer than 10 years",
        ),
    ];
    for (what, req, code, needle) in cases {
        let err = jobs.start_run(req).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: message {:?} lacks {needle:?}",
            err.message()
        );
    }

    // Run ids: malformed -> INVALID_ARGUMENT, unknown -> NOT_FOUND.
    let unknown = "0190aaaa-bbbb-7ccc-8ddd-eeeeeeeeeeee";
    for (id, code) in [
        ("", Code::InvalidArgument),
        ("nope", Code::InvalidArgument),
        (unknown, Code::NotFound),
    ] {
        let e = jobs
            .get_run(pb::GetRunRequest {
                run_id: id.into(),
                wait: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "get {id:?}");
        let e = jobs
            .cancel_run(pb::CancelRunRequest {
                run_id: id.into(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "cancel {id:?}");
        let e = jobs
            .retry_run(pb::RetryRunRequest { run_id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "retry {id:?}");
    }
    let e = jobs
        .get_run(pb::GetRunRequest {
            run_id: unknown.into(),
            wait: dur(3600, 0),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "wait over 60 s");
    let e = jobs
        .list_runs(pb::ListRunsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = jobs
        .list_runs(pb::ListRunsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = jobs
        .list_runs(pb::ListRunsRequest {
            status: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Worker calls.
    let mut w = s.worker().await;
    let e = w
        .poll_task(pb::PollTaskRequest {
            jobs: vec![],
            ..poll_req(&[], 10)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no jobs");
    let e = w
        .poll_task(pb::PollTaskRequest {
            worker_id: String::new(),
            ..poll_req(&["j"], 10)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no worker id");
    let e = w
        .poll_task(pb::PollTaskRequest {
            max_tasks: 1000,
            ..poll_req(&["j"], 10)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "max_tasks");
    let e = w
        .poll_task(pb::PollTaskRequest {
            wait: Some(ms(120_000)),
            ..poll_req(&["j"], 10)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "wait over 60 s");
    let e = w
        .heartbeat(pb::HeartbeatRequest {
            run_id: unknown.into(),
            lease_token: "t".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = w
        .complete_run(pb::CompleteRunRequest {
            run_id: unknown.into(),
            lease_token: String::new(),
            result: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "empty lease token");
    let e = w
        .fail_run(pb::FailRunRequest {
            run_id: unknown.into(),
            lease_token: "t".into(),
            failure: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "failure required");

    // Nothing above was stored, and the server still serves.
    let list = jobs
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.runs.is_empty(),
        "bad input stored {} runs",
        list.runs.len()
    );

    // Step results are checked too (size, JSON, id), under a real lease.
    let run = jobs
        .start_run(start_req("job", json!(1)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let task = w
        .poll_task(poll_req(&["job"], 5_000))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    let step = |id: &str, out: Vec<u8>| pb::CompleteStepRequest {
        run_id: run.id.clone(),
        lease_token: task.lease_token.clone(),
        step_id: id.into(),
        outcome: Some(pb::complete_step_request::Outcome::Output(out)),
        started_at: None,
    };
    let e = w
        .complete_step(step("big", vec![b'1'; 5000]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let e = w
        .complete_step(step("bad", b"{".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = w.complete_step(step("", b"1".to_vec())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = w
        .complete_step(pb::CompleteStepRequest {
            outcome: None,
            ..step("x", vec![])
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = w
        .complete_run(pb::CompleteRunRequest {
            run_id: run.id.clone(),
            lease_token: task.lease_token.clone(),
            result: b"nope".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let r = jobs
        .get_run(pb::GetRunRequest {
            run_id: run.id.clone(),
            wait: None,
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert!(r.steps.is_empty());
    assert_eq!(r.status, pb::RunStatus::Running as i32);
    assert!(
        !s.log().contains("panicked"),
        "server log shows a panic:\n{}",
        s.log()
    );
}
