//! `secrets`: the server runs at `RUST_LOG=trace` (every crate, SQL included) with its
//! Prometheus listener on; a workload uses a canary API key and a canary string in every
//! place user data goes (payload, step output, result, handler failure, state value, event
//! payload, log-free error paths: an oversized value, a non-JSON payload, a wrong key).
//!
//! Check: 0 occurrences of either canary (as text, hex, or a Rust byte-array dump) in the
//! server's log output, in `/metrics`, and in every error message the server returned.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use stackshift::{JobContext, StartOptions, Worker};
use stackshift_proto::v1 as pb;

use crate::Opts;
use crate::harness::{Db, Server, ServerSpec, free_port, req};
use crate::report::Report;

/// The forms in which a canary could leak.
fn forms(canary: &str) -> Vec<String> {
    let bytes = canary.as_bytes();
    let dump: Vec<String> = bytes.iter().take(12).map(u8::to_string).collect();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    vec![canary.to_owned(), hex, dump.join(", ")]
}

fn count(haystack: &str, canaries: &[String]) -> usize {
    canaries
        .iter()
        .map(|c| haystack.matches(c.as_str()).count())
        .sum()
}

fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let db = Db::fresh(opts).await?;
    let (_, key) = db.create_key(bin, "canary", false)?;
    let payload_canary = format!("CANARY-{}", uuid::Uuid::now_v7().simple());
    let wrong_key = format!("ssk_{}", "c0ffee".repeat(8));
    let metrics_port = free_port()?;
    let mut spec = ServerSpec::new(bin, &db)?.args([
        "--metrics-listen".to_owned(),
        format!("127.0.0.1:{metrics_port}"),
        "--max-payload-bytes".to_owned(),
        "65536".to_owned(),
    ]);
    spec.log_level = "trace".into();
    let server = Server::start(spec)?;
    let client = server.client(Some(&key))?;
    let worker = Worker::builder(server.client(Some(&key))?)
        .queues(["canary"])
        .concurrency(4)
        .poll_wait(Duration::from_secs(2))
        .shutdown_grace(Duration::from_secs(2))
        .job("echo", |ctx: JobContext<String>| async move {
            let p = ctx.payload.clone();
            let out: String = ctx
                .step
                .run("copy", || async move { anyhow::Ok(p) })
                .await?;
            ctx.log.info(format!("handler log line with {out}"));
            Ok(format!("result {out}"))
        })
        .job("fail", |ctx: JobContext<String>| async move {
            Err::<(), _>(stackshift::non_retryable(format!(
                "failing with {}",
                ctx.payload
            )))
        })
        .build()
        .start();
    let o = || StartOptions::new().queue_name("canary");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(client.start("echo", &payload_canary, o()).await?.id);
    }
    ids.push(client.start("fail", &payload_canary, o()).await?.id);
    let mut finals = 0;
    for id in &ids {
        if client
            .wait_for_run(id, Duration::from_secs(60))
            .await?
            .is_final()
        {
            finals += 1;
        }
    }
    worker.shutdown().await;
    client
        .state()
        .set("canary-state", &payload_canary, Default::default())
        .await?;
    client
        .events()
        .publish(stackshift::PublishEvent::new(
            "canary-event",
            &payload_canary,
        ))
        .await?;

    // Error paths: every message the server returns is kept and searched.
    let mut errors = Vec::new();
    let mut raw = server.raw()?;
    let big = format!("\"{}\"", payload_canary.repeat(3000));
    let set = pb::SetStateRequest {
        key: "big".into(),
        value: big.clone().into_bytes(),
        ..Default::default()
    };
    if let Err(s) = raw
        .state
        .set_state(req(set, Duration::from_secs(10), Some(&key)))
        .await
    {
        errors.push(s.message().to_owned());
    }
    let start = pb::StartRunRequest {
        job: "echo".into(),
        payload: big.into_bytes(),
        queue: "canary".into(),
        ..Default::default()
    };
    if let Err(s) = raw
        .jobs
        .start_run(req(start, Duration::from_secs(10), Some(&key)))
        .await
    {
        errors.push(s.message().to_owned());
    }
    let not_json = format!("{{{payload_canary}");
    let start = pb::StartRunRequest {
        job: "echo".into(),
        payload: not_json.into_bytes(),
        queue: "canary".into(),
        ..Default::default()
    };
    if let Err(s) = raw
        .jobs
        .start_run(req(start, Duration::from_secs(10), Some(&key)))
        .await
    {
        errors.push(s.message().to_owned());
    }
    let get = pb::GetStateRequest {
        key: "k".into(),
        run: None,
    };
    if let Err(s) = raw
        .state
        .get_state(req(get, Duration::from_secs(10), Some(&wrong_key)))
        .await
    {
        errors.push(s.message().to_owned());
    }
    let get = pb::GetRunRequest {
        run_id: payload_canary.clone(),
        wait: None,
    };
    if let Err(s) = raw
        .jobs
        .get_run(req(get, Duration::from_secs(10), Some(&key)))
        .await
    {
        errors.push(s.message().to_owned());
    }
    let metrics = http_get(metrics_port, "/metrics")?;
    let logs = server.logs();
    if let Ok(dir) = std::env::var("STACKSHIFT_RELIABILITY_KEEP_LOGS") {
        std::fs::write(Path::new(&dir).join("secrets-server.log"), &logs)?;
    }
    drop(server);

    let key_forms: Vec<String> = [forms(&key), forms(&wrong_key)].concat();
    let payload_forms = forms(&payload_canary);
    let errors_text = errors.join("\n");
    let in_logs = count(&logs, &key_forms) + count(&logs, &payload_forms);
    let in_metrics = count(&metrics, &key_forms) + count(&metrics, &payload_forms);
    let key_in_errors = count(&errors_text, &key_forms);
    // A run id the caller sent is echoed in its own NOT_FOUND message; that is the caller's
    // input, not stored data, so only the other error messages are searched for the payload.
    let payload_in_errors = count(&errors[..errors.len() - 1].join("\n"), &payload_forms);
    report.figure("runs", ids.len());
    report.figure("runs_final", finals);
    report.figure("log_bytes_at_trace", logs.len());
    report.figure("error_messages", errors.len());
    report.figure("canary_in_logs", in_logs);
    report.figure("canary_in_metrics", in_metrics);
    report.figure("canary_key_in_errors", key_in_errors);
    report.figure("canary_payload_in_errors", payload_in_errors);
    report.check(finals == ids.len(), || {
        format!("{finals} of {} runs final", ids.len())
    });
    report.check(errors.len() == 5, || {
        format!("{} of 5 error paths answered an error", errors.len())
    });
    report.check(logs.len() > 10_000, || {
        format!("only {} bytes of trace logs: is tracing on?", logs.len())
    });
    report.check(metrics.contains("stackshift_runs_started_total"), || {
        "no metrics scraped".into()
    });
    for (what, n) in [
        ("logs", in_logs),
        ("metrics", in_metrics),
        ("key in errors", key_in_errors),
        ("payload in errors", payload_in_errors),
    ] {
        report.check(n == 0, || format!("{n} canary occurrences in {what}"));
    }
    if in_logs > 0 {
        for line in logs
            .lines()
            .filter(|l| count(l, &key_forms) + count(l, &payload_forms) > 0)
            .take(5)
        {
            report.violation(format!(
                "log line: {}",
                line.chars().take(300).collect::<String>()
            ));
        }
    }
    Ok(())
}
