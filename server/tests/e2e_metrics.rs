//! End-to-end tests of `/metrics` (Prometheus text, scraped and parsed after a workload)
//! and of secrets hygiene: a canary API key and payload never appear in the server log, the
//! metrics, run logs or error messages.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use stackshift::proto as pb;
use stackshift::{ClientOptions, JobContext, RetryPolicy, StackShift, StartOptions, Worker};
use support::{Db, TestServer, metrics_addr, with_key};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` over plain HTTP/1.1; returns (status line, body).
async fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    conn.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Parses the text exposition into `name{labels}` -> value, checking every sample line.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            assert!(
                line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(key.starts_with("stackshift_"), "{line:?}");
        assert!(out.insert(key.to_owned(), v).is_none(), "duplicate {key}");
    }
    out
}

async fn metrics_after_a_workload(db: Db) {
    let Some(s) = TestServer::start_with(db, &["--metrics-listen", "127.0.0.1:0"]).await else {
        return;
    };
    let addr = metrics_addr(&s).await;
    let c = StackShift::new(ClientOptions::new(s.endpoint())).unwrap();
    let worker = Worker::builder(c.clone())
        .job("ok", |ctx: JobContext<u32>| async move {
            ctx.step
                .run("one", || async {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    anyhow::Ok(1)
                })
                .await?;
            ctx.step.run("two", || async { anyhow::Ok(2) }).await?;
            anyhow::Ok(ctx.payload)
        })
        .job("bad", |_ctx: JobContext<u32>| async move {
            anyhow::bail!("always fails");
            #[allow(unreachable_code)]
            anyhow::Ok(())
        })
        .build()
        .start();
    let once = StartOptions::default().retry_policy(RetryPolicy::new().max_attempts(1));
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(c.start("ok", i, StartOptions::default()).await.unwrap().id);
    }
    ids.push(c.start("bad", 0, once).await.unwrap().id);
    // Two runs no worker takes: queue depth.
    for i in 0..2 {
        c.start("idle", i, StartOptions::default().queue_name("parked"))
            .await
            .unwrap();
    }
    for id in &ids {
        c.wait_for_run(id, Duration::from_secs(60)).await.unwrap();
    }
    worker.shutdown().await;

    let (status, body) = http_get(&addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let m = parse(&body);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{body}"));
    let l = |job: &str, queue: &str| {
        format!("{{namespace=\"default\",job=\"{job}\",queue=\"{queue}\"}}")
    };
    assert_eq!(
        get(&format!(
            "stackshift_runs_started_total{}",
            l("ok", "default")
        )),
        3.0
    );
    assert_eq!(
        get(&format!(
            "stackshift_runs_started_total{}",
            l("bad", "default")
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "stackshift_runs_started_total{}",
            l("idle", "parked")
        )),
        2.0
    );
    assert_eq!(
        get(&format!(
            "stackshift_runs_completed_total{}",
            l("ok", "default")
        )),
        3.0
    );
    assert_eq!(
        get(&format!(
            "stackshift_runs_failed_total{}",
            l("bad", "default")
        )),
        1.0
    );
    assert_eq!(
        get(&format!(
            "stackshift_runs_failed_total{}",
            l("ok", "default")
        )),
        0.0
    );
    assert_eq!(
        get(&format!(
            "stackshift_attempts_started_total{}",
            l("ok", "default")
        )),
        3.0
    );
    assert_eq!(
        get("stackshift_queue_depth{namespace=\"default\",queue=\"parked\"}"),
        2.0
    );
    assert_eq!(get("stackshift_step_duration_seconds_count"), 6.0);
    assert_eq!(
        get("stackshift_step_duration_seconds_bucket{le=\"+Inf\"}"),
        6.0
    );
    assert!(get("stackshift_step_duration_seconds_sum") >= 0.045);
    // The 15 ms steps are above the 10 ms bucket.
    assert!(get("stackshift_step_duration_seconds_bucket{le=\"0.01\"}") <= 3.0);
    assert!(get("stackshift_commit_batch_size_count") > 0.0);
    assert!(get("stackshift_commit_batch_size_sum") >= get("stackshift_commit_batch_size_count"));
    // Every commit runs at least BEGIN, a savepoint and COMMIT.
    assert!(
        get("stackshift_writer_statements_total")
            >= 3.0 * get("stackshift_commit_batch_size_count")
    );
    assert_eq!(
        get("stackshift_commit_batch_size_bucket{le=\"+Inf\"}"),
        get("stackshift_commit_batch_size_count")
    );
    // The worker's last poll ends on the server once it sees the cancellation.
    let mut polls = get("stackshift_open_long_polls");
    for _ in 0..300 {
        if polls == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        polls = parse(&http_get(&addr, "/metrics").await.1)["stackshift_open_long_polls"];
    }
    assert_eq!(
        polls, 0.0,
        "a long-poll stayed open after the worker stopped"
    );
    assert_eq!(
        get(
            "stackshift_lease_expirations_total{namespace=\"default\",job=\"ok\",queue=\"default\"}"
        ),
        0.0
    );
    let (status, _) = http_get(&addr, "/nope").await;
    assert!(status.contains("404"), "{status}");
}
both_stores!(metrics_after_a_workload);

/// A canary key and payload go through starts, polls, logs, failures and bad requests;
/// neither ever appears in the server's log, the metrics or an error message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_never_leak() {
    let s = TestServer::start_with(Db::Sqlite, &["--metrics-listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let key = s.create_key("canary");
    let payload_canary = "CANARY-PAYLOAD-4f1d9e";
    let mut jobs = s.jobs().await;
    let mut w = s.worker().await;
    let run = jobs
        .start_run(with_key(
            pb::StartRunRequest {
                job: "secret-job".into(),
                payload: json!({ "card": payload_canary }).to_string().into_bytes(),
                ..Default::default()
            },
            Some(&key),
        ))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let mut poll = support::poll_req(&["secret-job"], 5_000);
    poll.worker_id = "w".into();
    let task = w
        .poll_task(with_key(poll, Some(&key)))
        .await
        .unwrap()
        .into_inner()
        .tasks
        .remove(0);
    w.append_logs(with_key(
        pb::AppendLogsRequest {
            run_id: run.id.clone(),
            lease_token: task.lease_token.clone(),
            entries: vec![pb::LogEntry {
                message: "processing".into(),
                ..Default::default()
            }],
        },
        Some(&key),
    ))
    .await
    .unwrap();
    // Bad requests carrying the canaries: errors must not echo them.
    let mut errors = Vec::new();
    let wrong_key = format!("{key}x");
    errors.push(
        jobs.get_run(with_key(
            pb::GetRunRequest {
                run_id: run.id.clone(),
                wait: None,
            },
            Some(&wrong_key),
        ))
        .await
        .unwrap_err(),
    );
    errors.push(
        jobs.start_run(with_key(
            pb::StartRunRequest {
                job: "secret-job".into(),
                payload: format!("{{\"card\": \"{payload_canary}\"").into_bytes(),
                ..Default::default()
            },
            Some(&key),
        ))
        .await
        .unwrap_err(),
    );
    errors.push(
        w.append_logs(with_key(
            pb::AppendLogsRequest {
                run_id: run.id.clone(),
                lease_token: task.lease_token.clone(),
                entries: vec![pb::LogEntry {
                    fields: format!("[\"{payload_canary}\"]").into_bytes(),
                    ..Default::default()
                }],
            },
            Some(&key),
        ))
        .await
        .unwrap_err(),
    );
    w.fail_run(with_key(
        pb::FailRunRequest {
            run_id: run.id.clone(),
            lease_token: task.lease_token.clone(),
            failure: Some(pb::Failure {
                message: "declined".into(),
                non_retryable: true,
                ..Default::default()
            }),
        },
        Some(&key),
    ))
    .await
    .unwrap();
    let detail = jobs
        .get_run(with_key(
            pb::GetRunRequest {
                run_id: run.id.clone(),
                wait: None,
            },
            Some(&key),
        ))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(detail.status, pb::RunStatus::Failed as i32);
    let (_, metrics) = http_get(&metrics_addr(&s).await, "/metrics").await;
    let secret = key.split('_').next_back().unwrap();
    assert!(secret.len() >= 16, "key format: {key}");
    let log = s.log();
    for (what, text) in [
        ("server log", log.as_str()),
        ("metrics", metrics.as_str()),
        (
            "run logs and timeline",
            &format!("{:?}{:?}", detail.logs, detail.timeline),
        ),
        (
            "errors",
            &errors
                .iter()
                .map(|e| e.message().to_owned())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ] {
        assert!(!text.contains(secret), "the API key leaked into the {what}");
        assert!(
            !text.contains(payload_canary),
            "the payload leaked into the {what}"
        );
    }
}

/// A minimal OTLP trace receiver: forwards the name and attributes of every exported span.
struct Collector(tokio::sync::mpsc::UnboundedSender<(String, String)>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        req: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let attrs = format!("{:?}", span.attributes);
                    let _ = self.0.send((span.name, attrs));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// With `--otlp-endpoint`, the server exports one span per RPC over OTLP/gRPC, naming the
/// method and carrying no payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let endpoint = format!("http://{addr}");
    let s = TestServer::start_with(Db::Sqlite, &["--otlp-endpoint", &endpoint])
        .await
        .unwrap();
    let mut jobs = s.jobs().await;
    jobs.start_run(support::start_req(
        "traced",
        json!({ "card": "CANARY-OTLP-77" }),
    ))
    .await
    .unwrap();
    let want = "/stackshift.v1.JobsService/StartRun";
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some((name, attrs)) = rx.recv().await {
            assert!(
                !attrs.contains("CANARY-OTLP-77"),
                "payload in a span: {attrs}"
            );
            if name == "grpc" && attrs.contains(want) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no span for {want} was exported");
    collector.abort();
}
