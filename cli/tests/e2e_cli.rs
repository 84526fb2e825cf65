//! End-to-end: the `stackshift` binary against the real `stackshift-server` binary on a
//! temporary SQLite database. The CLI binary comes from Cargo (`CARGO_BIN_EXE_stackshift`);
//! the server binary is the workspace's `target/<profile>/stackshift-server`, built with
//! `cargo build -p stackshift-server` here if it is missing. Runs get steps from a real
//! worker (the Rust SDK) so `runs get --json` has something to show.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use stackshift::{ClientOptions, JobContext, StackShift, StartOptions, Worker};

const CLI: &str = env!("CARGO_BIN_EXE_stackshift");

fn server_bin() -> PathBuf {
    let dir = PathBuf::from(CLI).parent().unwrap().to_path_buf();
    let bin = dir.join(format!("stackshift-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args([
                "build",
                "-p",
                "stackshift-server",
                "--bin",
                "stackshift-server",
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cargo build -p stackshift-server failed");
    }
    assert!(bin.exists(), "{} not found", bin.display());
    bin
}

struct Server {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let mut child = Command::new(server_bin())
        .args(["--database-url", &db, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("stackshift-server listening on ")
        .unwrap_or_else(|| panic!("unexpected server output: {line:?}"))
        .to_owned();
    Server {
        child,
        endpoint: format!("http://{addr}"),
        _dir: dir,
    }
}

fn cli(endpoint: &str, args: &[&str]) -> Output {
    Command::new(CLI)
        .args(args)
        .env("STACKSHIFT_ENDPOINT", endpoint)
        .env_remove("STACKSHIFT_API_KEY")
        .output()
        .unwrap()
}

/// Runs the CLI with `--json`, asserts success and parses stdout.
fn cli_json(endpoint: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = cli(endpoint, &all);
    assert!(
        out.status.success(),
        "stackshift {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stackshift {all:?} printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn checkout(ctx: JobContext<Value>) -> anyhow::Result<Value> {
    let a: String = ctx
        .step
        .run("reserve", || async { Ok("ok".to_owned()) })
        .await?;
    let b: u32 = ctx.step.run("charge", || async { Ok(42u32) }).await?;
    Ok(serde_json::json!({ "reserve": a, "charge": b }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_runs_queues_state_events_as_json() {
    let server = start_server();
    let ep = server.endpoint.clone();
    let client = StackShift::new(ClientOptions::new(ep.clone())).unwrap();

    // A run completed by a real worker, with two steps.
    let worker = Worker::builder(client.clone())
        .queues(["shop"])
        .job("checkout", checkout)
        .build()
        .start();
    let done = client
        .queue("shop")
        .enqueue(
            "checkout",
            serde_json::json!({"order": 7}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    let run = client
        .wait_for_run(&done.id, Duration::from_secs(60))
        .await
        .unwrap();
    worker.shutdown().await;
    assert!(run.is_final());

    // A queued run nobody serves.
    let queued = client
        .queue("backlog")
        .enqueue("reindex", serde_json::json!({}), StartOptions::default())
        .await
        .unwrap();

    let ep2 = ep.clone();
    let done_id = done.id.clone();
    let queued_id = queued.id.clone();
    tokio::task::spawn_blocking(move || {
        let ep = ep2;
        // runs get: status, result and the steps.
        let got = cli_json(&ep, &["runs", "get", &done_id]);
        assert_eq!(got["status"], "completed");
        assert_eq!(got["result"]["charge"], 42);
        let steps: Vec<&str> = got["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["reserve", "charge"]);
        assert_eq!(got["attempts"].as_array().unwrap().len(), 1);

        // runs list with filters.
        let list = cli_json(&ep, &["runs", "list", "--status", "queued"]);
        let ids: Vec<&str> = list["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [queued_id.as_str()]);
        let list = cli_json(&ep, &["runs", "list", "--job", "checkout"]);
        assert_eq!(list["runs"][0]["id"], done_id.as_str());

        // The table has a header and one line per run.
        let out = cli(&ep, &["runs", "list"]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("ID "), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");

        // runs watch follows the queued run until it is cancelled (from another process).
        let mut watch = Command::new(CLI)
            .args(["runs", "watch", &queued_id, "--json"])
            .env("STACKSHIFT_ENDPOINT", &ep)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(first["status"], "queued");
        let cancelled = cli_json(&ep, &["runs", "cancel", &queued_id, "--reason", "test"]);
        assert_eq!(cancelled["status"], "cancelled");
        let last: Value = serde_json::from_str(&lines.last().unwrap().unwrap()).unwrap();
        assert_eq!(last["status"], "cancelled");
        assert!(watch.wait().unwrap().success());

        // retry puts it back in the queue.
        let retried = cli_json(&ep, &["runs", "retry", &queued_id]);
        assert_eq!(retried["status"], "queued");

        // queues: list, pause, resume, get.
        let qs = cli_json(&ep, &["queues", "list"]);
        let names: Vec<&str> = qs["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"shop") && names.contains(&"backlog"),
            "{names:?}"
        );
        assert_eq!(
            cli_json(&ep, &["queues", "pause", "backlog"])["paused"],
            true
        );
        let q = cli_json(&ep, &["queues", "get", "backlog"]);
        assert_eq!(q["paused"], true);
        assert_eq!(q["stats"]["queued"], 1);
        assert_eq!(
            cli_json(&ep, &["queues", "resume", "backlog"])["paused"],
            false
        );

        // state: set, get, delete; a missing key is exit 1.
        let set = cli_json(
            &ep,
            &["state", "set", "cfg", r#"{"on":true}"#, "--ttl", "1h"],
        );
        assert_eq!(set["key"], "cfg");
        let got = cli_json(&ep, &["state", "get", "cfg"]);
        assert_eq!(got["value"]["on"], true);
        assert!(got["expires_at"].is_string());
        assert_eq!(cli_json(&ep, &["state", "delete", "cfg"])["deleted"], true);
        assert_eq!(cli(&ep, &["state", "get", "cfg"]).status.code(), Some(1));

        // events: publish, list.
        let p = cli_json(
            &ep,
            &[
                "events",
                "publish",
                "order.paid",
                "--payload",
                r#"{"n":1}"#,
                "--correlation-key",
                "o1",
            ],
        );
        assert_eq!(p["duplicate"], false);
        let evs = cli_json(&ep, &["events", "list", "--name", "order.paid"]);
        assert_eq!(evs["events"][0]["correlation_key"], "o1");
        assert_eq!(evs["events"][0]["payload"]["n"], 1);
    })
    .await
    .unwrap();
}

#[test]
fn cli_reports_unreachable_server_bad_key_and_usage_errors() {
    // Nothing listens on port 1.
    let out = cli("http://127.0.0.1:1", &["runs", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach StackShift at http://127.0.0.1:1")
            && err.contains("STACKSHIFT_ENDPOINT"),
        "{err}"
    );

    // A key the server does not know.
    let server = start_server();
    let out = Command::new(CLI)
        .args(["runs", "list"])
        .env("STACKSHIFT_ENDPOINT", &server.endpoint)
        .env(
            "STACKSHIFT_API_KEY",
            "ssk_000000000000000000000000000000000000000000000000",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("STACKSHIFT_API_KEY"), "{err}");

    // Usage errors exit with 2.
    assert_eq!(
        cli(&server.endpoint, &["runs", "frobnicate"]).status.code(),
        Some(2)
    );
    // A not-found run is an error (1), and the message says so.
    let out = cli(
        &server.endpoint,
        &["runs", "get", "0190a000-0000-7000-8000-000000000000"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

/// The HTTP status of `GET path` on the server's listener (the dashboard's JSON API).
fn http_get(endpoint: &str, path: &str, key: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let addr = endpoint.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cli_with_key(endpoint: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(CLI);
    c.args(args).env("STACKSHIFT_ENDPOINT", endpoint);
    match key {
        Some(k) => c.env("STACKSHIFT_API_KEY", k),
        None => c.env_remove("STACKSHIFT_API_KEY"),
    };
    c.output().unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cli_keys_bootstrap_admin_and_dashboard_auth() {
    let server = start_server();
    let ep = server.endpoint.as_str();
    // Open mode: the JSON API and key management work without a key.
    assert_eq!(http_get(ep, "/api/runs", None), 200);
    let admin = json_of(&cli_with_key(
        ep,
        None,
        &[
            "keys",
            "create",
            "--namespace",
            "acme",
            "--name",
            "boot",
            "--admin",
            "--json",
        ],
    ));
    let admin_secret = admin["secret"].as_str().unwrap().to_owned();
    assert!(admin_secret.starts_with("ssk_"));
    assert_eq!(admin["key"]["admin"], true);

    // Key management now needs an admin key (checked without caching).
    let out = cli_with_key(ep, None, &["keys", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STACKSHIFT_API_KEY"));
    let worker = json_of(&cli_with_key(
        ep,
        Some(&admin_secret),
        &[
            "keys",
            "create",
            "--namespace",
            "acme",
            "--name",
            "worker",
            "--json",
        ],
    ));
    let worker_secret = worker["secret"].as_str().unwrap().to_owned();
    let worker_id = worker["key"]["id"].as_str().unwrap().to_owned();
    let listed = json_of(&cli_with_key(
        ep,
        Some(&admin_secret),
        &["keys", "list", "--json"],
    ));
    let names: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["boot", "worker"]);
    // A plain key works for runs but not for key management.
    let out = cli_with_key(ep, Some(&worker_secret), &["keys", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an admin key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&cli_with_key(
        ep,
        Some(&worker_secret),
        &["runs", "list", "--json"],
    ));

    // The dashboard's JSON API requires a key once keys exist (the open-mode answer is
    // cached for up to 5 s); the page itself loads and asks for one.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while http_get(ep, "/api/runs", None) != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "/api/runs stayed open"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(ep, "/api/runs", Some(&worker_secret)), 200);
    assert_eq!(http_get(ep, "/api/runs", Some("ssk_nope")), 401);
    assert_eq!(http_get(ep, "/", None), 200);

    // Revoke: listed as revoked with --all; revoking again is an error.
    json_of(&cli_with_key(
        ep,
        Some(&admin_secret),
        &["keys", "revoke", &worker_id, "--json"],
    ));
    let all = json_of(&cli_with_key(
        ep,
        Some(&admin_secret),
        &["keys", "list", "--all", "--json"],
    ));
    assert!(all["keys"][1]["revoked_at"].is_string());
    let active = json_of(&cli_with_key(
        ep,
        Some(&admin_secret),
        &["keys", "list", "--json"],
    ));
    assert_eq!(active["keys"].as_array().unwrap().len(), 1);
    let out = cli_with_key(ep, Some(&admin_secret), &["keys", "revoke", &worker_id]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn cli_schedules_lifecycle() {
    let server = start_server();
    let ep = server.endpoint.as_str();
    let created = cli_json(
        ep,
        &[
            "schedules",
            "create",
            "tick",
            "--job",
            "tick-job",
            "--every",
            "1s",
            "--payload",
            r#"{"n":1}"#,
            "--catch-up",
            "all",
        ],
    );
    assert_eq!(created["created"], true);
    assert_eq!(created["spec"]["interval_ms"], 1000);
    assert_eq!(created["catch_up"], "all");
    let cron = cli_json(
        ep,
        &[
            "schedules",
            "create",
            "daily",
            "--job",
            "report",
            "--cron",
            "0 9 * * MON-FRI",
            "--time-zone",
            "Europe/Paris",
            "--paused",
        ],
    );
    assert_eq!(cron["spec"]["time_zone"], "Europe/Paris");
    assert_eq!(cron["paused"], true);

    // The interval fires: runs of the job appear.
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let runs = cli_json(ep, &["runs", "list", "--job", "tick-job"]);
        if runs["runs"].as_array().unwrap().len() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no runs: {runs}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = cli_json(ep, &["schedules", "get", "tick"]);
    assert!(!got["recent_run_ids"].as_array().unwrap().is_empty());
    let list = cli_json(ep, &["schedules", "list"]);
    let ids: Vec<&str> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["daily", "tick"]);
    let text = String::from_utf8(cli(ep, &["schedules", "list"]).stdout).unwrap();
    assert!(text.starts_with("ID "), "{text}");
    assert_eq!(
        cli_json(ep, &["schedules", "pause", "tick"])["paused"],
        true
    );
    assert_eq!(
        cli_json(ep, &["schedules", "resume", "tick"])["paused"],
        false
    );
    assert_eq!(
        cli_json(ep, &["schedules", "delete", "tick"])["deleted"],
        "tick"
    );

    // Errors: a deleted schedule, a bad cron, another definition under an existing id.
    let out = cli(ep, &["schedules", "get", "tick"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    let out = cli(
        ep,
        &[
            "schedules",
            "create",
            "bad",
            "--job",
            "j",
            "--cron",
            "99 * * * *",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cron_expression"));
    let out = cli(
        ep,
        &[
            "schedules",
            "create",
            "daily",
            "--job",
            "other",
            "--cron",
            "0 9 * * *",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // Neither --cron nor --every is a usage error.
    assert_eq!(
        cli(ep, &["schedules", "create", "x", "--job", "j"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn cli_triggers_lifecycle() {
    let server = start_server();
    let ep = server.endpoint.as_str();
    let t = cli_json(
        ep,
        &[
            "triggers",
            "create",
            "--event",
            "order.paid",
            "--job",
            "ship",
        ],
    );
    assert_eq!(t["created"], true);
    let id = t["id"].as_str().unwrap().to_owned();
    cli_json(
        ep,
        &[
            "triggers",
            "create",
            "--event",
            "order.paid",
            "--job",
            "vip",
            "--correlation-key",
            "gold",
        ],
    );
    let list = cli_json(ep, &["triggers", "list", "--event", "order.paid"]);
    assert_eq!(list["triggers"].as_array().unwrap().len(), 2);
    // Publishing through the CLI starts the subscribed job.
    let published = cli_json(ep, &["events", "publish", "order.paid", "--id", "evt-1"]);
    assert_eq!(published["started_run_ids"].as_array().unwrap().len(), 1);
    let runs = cli_json(ep, &["runs", "list", "--job", "ship"]);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    let runs = cli_json(ep, &["runs", "list", "--job", "vip"]);
    assert!(runs["runs"].as_array().unwrap().is_empty(), "keyed trigger");
    assert_eq!(
        cli_json(ep, &["triggers", "delete", &id])["deleted"],
        id.as_str()
    );
    let out = cli(ep, &["triggers", "delete", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
