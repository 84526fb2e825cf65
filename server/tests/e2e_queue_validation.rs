//! Bad queue input end to end, over raw gRPC against the real server binary, on SQLite and
//! PostgreSQL: zero and negative limits, invalid names, unknown queues (`NOT_FOUND`),
//! `run_at` in the far past or beyond the horizon, bad priorities and concurrency keys.
//! Every refusal is a clear `INVALID_ARGUMENT` or `NOT_FOUND`, and nothing changes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use serde_json::json;
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, ms, start_req, ts_ms};
use tonic::Code;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn on_queue(job: &str, queue: &str) -> pb::StartRunRequest {
    pb::StartRunRequest {
        queue: queue.into(),
        ..start_req(job, json!({}))
    }
}

async fn start(s: &TestServer, req: pb::StartRunRequest) -> pb::Run {
    s.jobs()
        .await
        .start_run(req)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
}

async fn get_queue(s: &TestServer, name: &str) -> pb::Queue {
    s.queues()
        .await
        .get_queue(pb::GetQueueRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap()
}

async fn upsert(s: &TestServer, name: &str, config: pb::QueueConfig) -> pb::Queue {
    s.queues()
        .await
        .upsert_queue(pb::UpsertQueueRequest {
            name: name.into(),
            config: Some(config),
            paused: None,
        })
        .await
        .unwrap()
        .into_inner()
        .queue
        .unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.expect_err("expected an error").code()
}

async fn bad_queue_input_is_rejected_and_changes_nothing(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let mut q = s.queues().await;
    let good = pb::QueueConfig {
        concurrency_limit: Some(5),
        ..Default::default()
    };
    upsert(&s, "configured", good).await;
    let bad_configs: Vec<(&str, pb::QueueConfig)> = vec![
        (
            "zero limit",
            pb::QueueConfig {
                concurrency_limit: Some(0),
                ..Default::default()
            },
        ),
        (
            "negative limit",
            pb::QueueConfig {
                concurrency_limit: Some(-3),
                ..Default::default()
            },
        ),
        (
            "zero key limit",
            pb::QueueConfig {
                key_concurrency_limit: Some(0),
                ..Default::default()
            },
        ),
        (
            "huge limit",
            pb::QueueConfig {
                concurrency_limit: Some(100_001),
                ..Default::default()
            },
        ),
        (
            "zero rate",
            pb::QueueConfig {
                rate_limit: Some(pb::RateLimit {
                    limit: 0,
                    period: Some(ms(1_000)),
                }),
                ..Default::default()
            },
        ),
        (
            "rate without period",
            pb::QueueConfig {
                rate_limit: Some(pb::RateLimit {
                    limit: 5,
                    period: None,
                }),
                ..Default::default()
            },
        ),
        (
            "rate period too short",
            pb::QueueConfig {
                rate_limit: Some(pb::RateLimit {
                    limit: 5,
                    period: Some(ms(10)),
                }),
                ..Default::default()
            },
        ),
        (
            "negative retry attempts",
            pb::QueueConfig {
                retry_policy: Some(pb::RetryPolicy {
                    max_attempts: -1,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "lease too long",
            pb::QueueConfig {
                lease_timeout: Some(ms(7_200_000)),
                ..Default::default()
            },
        ),
    ];
    for (what, config) in bad_configs {
        for name in ["configured", "brand-new"] {
            let err = q
                .upsert_queue(pb::UpsertQueueRequest {
                    name: name.into(),
                    config: Some(config),
                    paused: Some(true),
                })
                .await
                .expect_err(what);
            assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
            assert!(!err.message().is_empty());
        }
    }
    // Nothing changed: the configured queue kept its limit and is not paused; the new one
    // was not created.
    let kept = get_queue(&s, "configured").await;
    assert_eq!(kept.config, Some(good));
    assert!(!kept.paused);
    assert_eq!(
        code(
            q.get_queue(pb::GetQueueRequest {
                name: "brand-new".into()
            })
            .await
        ),
        Code::NotFound
    );

    // Invalid names everywhere.
    for name in ["", "has space", "é", &"x".repeat(129)] {
        let err = q
            .upsert_queue(pb::UpsertQueueRequest {
                name: name.into(),
                config: None,
                paused: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}");
        assert_eq!(
            code(q.get_queue(pb::GetQueueRequest { name: name.into() }).await),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                q.pause_queue(pb::PauseQueueRequest { name: name.into() })
                    .await
            ),
            Code::InvalidArgument
        );
        if !name.is_empty() {
            assert_eq!(
                code(s.jobs().await.start_run(on_queue("job", name)).await),
                Code::InvalidArgument
            );
        }
    }
    // Unknown queues: NOT_FOUND, and nothing is created.
    for r in [
        q.pause_queue(pb::PauseQueueRequest {
            name: "ghost".into(),
        })
        .await
        .map(|_| ()),
        q.resume_queue(pb::ResumeQueueRequest {
            name: "ghost".into(),
        })
        .await
        .map(|_| ()),
        q.get_queue(pb::GetQueueRequest {
            name: "ghost".into(),
        })
        .await
        .map(|_| ()),
    ] {
        let err = r.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("ghost"), "{}", err.message());
    }
    assert_eq!(
        code(
            q.list_queues(pb::ListQueuesRequest {
                page_size: 101,
                page_token: String::new(),
            })
            .await
        ),
        Code::InvalidArgument
    );

    // Bad start options: clear errors, no run and no queue created.
    let now = now_ms();
    let at = |ms: i64| {
        Some(prost_types::Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: 0,
        })
    };
    let day = 24 * 3_600_000;
    let bad_starts: Vec<(&str, pb::StartRunRequest)> = vec![
        (
            "run_at in the far past",
            pb::StartRunRequest {
                run_at: at(now - 2 * day),
                ..on_queue("job", "never")
            },
        ),
        (
            "run_at in seconds instead of milliseconds",
            pb::StartRunRequest {
                run_at: at(now / 1000),
                ..on_queue("job", "never")
            },
        ),
        (
            "run_at beyond the horizon",
            pb::StartRunRequest {
                run_at: at(now + 366 * day),
                ..on_queue("job", "never")
            },
        ),
        (
            "delay beyond the horizon",
            pb::StartRunRequest {
                delay: Some(ms((366 * day) as u64)),
                ..on_queue("job", "never")
            },
        ),
        (
            "delay and run_at",
            pb::StartRunRequest {
                delay: Some(ms(1_000)),
                run_at: at(now + 5_000),
                ..on_queue("job", "never")
            },
        ),
        (
            "priority out of range",
            pb::StartRunRequest {
                priority: 1_001,
                ..on_queue("job", "never")
            },
        ),
        (
            "concurrency key with a control character",
            pb::StartRunRequest {
                concurrency_key: "a\u{7}b".into(),
                ..on_queue("job", "never")
            },
        ),
        (
            "concurrency key too long",
            pb::StartRunRequest {
                concurrency_key: "k".repeat(257),
                ..on_queue("job", "never")
            },
        ),
    ];
    let mut jobs = s.jobs().await;
    for (what, req) in bad_starts {
        let err = jobs.start_run(req).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        eprintln!("{what}: {}", err.message());
    }
    let runs = jobs
        .list_runs(pb::ListRunsRequest {
            queue: "never".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.is_empty());
    assert_eq!(
        code(
            q.get_queue(pb::GetQueueRequest {
                name: "never".into()
            })
            .await
        ),
        Code::NotFound
    );
    // A run_at a little in the past means "now".
    let mut req = on_queue("job", "recent");
    req.run_at = at(now - 60_000);
    let run = start(&s, req).await;
    assert!(ts_ms(&run.next_attempt_at) >= now - 1_000);
}
both_stores!(bad_queue_input_is_rejected_and_changes_nothing);
