//! API keys and namespaces: keys are required once any exists, each key sees only its own
//! namespace, and open mode is refused off loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use serde_json::json;
use stackshift_proto::v1 as pb;
use support::{Db, TestServer, poll_req, start_req, with_key};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_namespace_isolation() {
    let mut s = TestServer::start(Db::Sqlite).await.unwrap();
    let key_a = s.create_key("team-a");
    let key_b = s
        .subcommand(&["keys", "create", "--namespace", "team-b", "--name", "b"])
        .trim()
        .to_owned();
    assert!(key_a.starts_with("ssk_") && key_b.starts_with("ssk_"));
    let listed = s.subcommand(&["keys", "list"]);
    assert!(listed.contains("team-a") && listed.contains("team-b"));
    assert!(!listed.contains(&key_a), "keys are never listed");
    s.restart(); // picks up the keys at once (the running server notices within 5 s)

    let mut jobs = s.jobs().await;
    let e = jobs.start_run(start_req("j", json!(1))).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "missing key");
    assert!(e.message().contains("missing API key"));
    let e = jobs
        .start_run(with_key(start_req("j", json!(1)), Some("ssk_wrong")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "wrong key");
    let mut bad = tonic::Request::new(start_req("j", json!(1)));
    bad.metadata_mut()
        .insert("authorization", "Basic abc".parse().unwrap());
    assert_eq!(
        jobs.start_run(bad).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut w = s.worker().await;
    assert_eq!(
        w.poll_task(poll_req(&["j"], 10)).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let run = jobs
        .start_run(with_key(
            start_req("j", json!({"secret": "payload"})),
            Some(&key_a),
        ))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    // B cannot read, list, cancel, retry or poll A's run.
    let get = |key: &str| {
        with_key(
            pb::GetRunRequest {
                run_id: run.id.clone(),
                wait: None,
            },
            Some(key),
        )
    };
    assert_eq!(
        jobs.get_run(get(&key_b)).await.unwrap_err().code(),
        Code::NotFound
    );
    let cancel = with_key(
        pb::CancelRunRequest {
            run_id: run.id.clone(),
            reason: String::new(),
        },
        Some(&key_b),
    );
    assert_eq!(
        jobs.cancel_run(cancel).await.unwrap_err().code(),
        Code::NotFound
    );
    let retry = with_key(
        pb::RetryRunRequest {
            run_id: run.id.clone(),
        },
        Some(&key_b),
    );
    assert_eq!(
        jobs.retry_run(retry).await.unwrap_err().code(),
        Code::NotFound
    );
    let list = jobs
        .list_runs(with_key(pb::ListRunsRequest::default(), Some(&key_b)))
        .await
        .unwrap();
    assert!(list.into_inner().runs.is_empty());
    let polled = w
        .poll_task(with_key(poll_req(&["j"], 300), Some(&key_b)))
        .await
        .unwrap();
    assert!(
        polled.into_inner().tasks.is_empty(),
        "B's worker never receives A's run"
    );
    // A sees and receives it.
    assert_eq!(
        jobs.get_run(get(&key_a))
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap()
            .id,
        run.id
    );
    let polled = w
        .poll_task(with_key(poll_req(&["j"], 5_000), Some(&key_a)))
        .await
        .unwrap();
    let task = polled.into_inner().tasks.remove(0);
    // B cannot write to it even with A's lease token.
    let hb = with_key(
        pb::HeartbeatRequest {
            run_id: run.id.clone(),
            lease_token: task.lease_token.clone(),
        },
        Some(&key_b),
    );
    assert_eq!(w.heartbeat(hb).await.unwrap_err().code(), Code::NotFound);

    // Revocation: the key stops working (within the 5 s cache; a restart is immediate).
    let id = s
        .subcommand(&["keys", "list"])
        .lines()
        .find(|l| l.contains("team-b"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    s.subcommand(&["keys", "revoke", &id]);
    s.restart();
    let mut jobs = s.jobs().await;
    let e = jobs
        .list_runs(with_key(pb::ListRunsRequest::default(), Some(&key_b)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Keys and payloads never reach the log.
    let log = s.log();
    assert!(
        !log.contains(&key_a) && !log.contains(&key_b),
        "a key leaked into the log"
    );
    assert!(!log.contains("payload\""), "a payload leaked into the log");
}

#[tokio::test]
async fn open_mode_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stackshift-server"))
        .args(["--listen", "0.0.0.0:0", "--database-url"])
        .arg(format!("sqlite://{}", dir.path().join("x.db").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-allow-open"), "{err}");
}
