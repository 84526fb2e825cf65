//! Test harness: starts the real `stackshift-server` binary on a free port over a fresh
//! SQLite file or PostgreSQL database, and builds raw gRPC clients for it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::jobs_service_client::JobsServiceClient;
use stackshift_proto::v1::queues_service_client::QueuesServiceClient;
use stackshift_proto::v1::worker_service_client::WorkerServiceClient;
use stackshift_server::storage::testing::fresh_postgres_url;
use tonic::transport::Channel;

/// Which store a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A running server process, killed on drop.
pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    pub db_url: String,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl TestServer {
    /// Starts a server on a fresh database; `None` when PostgreSQL is not configured.
    pub async fn start(db: Db) -> Option<Self> {
        Self::start_with(db, &[]).await
    }

    /// Like [`TestServer::start`] with extra command-line arguments.
    pub async fn start_with(db: Db, args: &[&str]) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let db_url = match db {
            Db::Sqlite => format!("sqlite://{}", dir.path().join("test.db").display()),
            Db::Postgres => fresh_postgres_url("e2e").await?,
        };
        let mut s = Self {
            child: None,
            addr: "127.0.0.1:0".into(),
            db_url,
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        s.spawn();
        Some(s)
    }

    /// A second server process on the same database (a replica).
    pub fn replica(&self) -> Self {
        let mut s = Self {
            child: None,
            addr: "127.0.0.1:0".into(),
            db_url: self.db_url.clone(),
            dir: tempfile::tempdir().unwrap(),
            args: self.args.clone(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stackshift-server"))
            .arg("--listen")
            .arg(&self.addr)
            .arg("--database-url")
            .arg(&self.db_url)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("STACKSHIFT_TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("stackshift-server listening on ") else {
            let _ = child.kill();
            panic!("server did not start: {line:?}\n{}", self.log());
        };
        self.addr = addr.to_owned();
        self.child = Some(child);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, as `kill -9` does.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        c.wait().unwrap()
    }

    /// Starts the server again on the same address and database.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Runs a `stackshift-server` subcommand against this server's database.
    pub fn subcommand(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_stackshift-server"))
            .arg("--database-url")
            .arg(&self.db_url)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Creates an API key for `namespace` with the CLI and returns it. The running server
    /// notices a new key only within seconds: `restart` before using it at once.
    pub fn create_key(&self, namespace: &str) -> String {
        self.subcommand(&["keys", "create", "--namespace", namespace])
            .trim()
            .to_owned()
    }

    /// A raw `JobsService` client.
    pub async fn jobs(&self) -> JobsServiceClient<Channel> {
        JobsServiceClient::new(self.channel().await)
    }

    /// A raw `WorkerService` client.
    pub async fn worker(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::new(self.channel().await)
    }

    /// A raw `QueuesService` client.
    pub async fn queues(&self) -> QueuesServiceClient<Channel> {
        QueuesServiceClient::new(self.channel().await)
    }

    /// The run `id` (`GetRun` without waiting); panics when it is missing.
    pub async fn get_run(&self, id: &str) -> pb::Run {
        self.jobs()
            .await
            .get_run(pb::GetRunRequest {
                run_id: id.into(),
                wait: None,
            })
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wraps a message in a request carrying an API key.
pub fn with_key<T>(msg: T, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

/// A `StartRunRequest` for `job` with a JSON payload.
pub fn start_req(job: &str, payload: serde_json::Value) -> pb::StartRunRequest {
    pb::StartRunRequest {
        job: job.into(),
        payload: payload.to_string().into_bytes(),
        ..Default::default()
    }
}

/// A `PollTaskRequest` for `jobs` on the default queue.
pub fn poll_req(jobs: &[&str], wait_ms: u64) -> pb::PollTaskRequest {
    pb::PollTaskRequest {
        worker_id: "test-worker".into(),
        queues: vec![],
        jobs: jobs
            .iter()
            .map(|j| pb::JobSpec {
                name: (*j).into(),
                lease_timeout: None,
            })
            .collect(),
        max_tasks: 1,
        wait: Some(ms(wait_ms)),
    }
}

/// A protobuf duration of `ms` milliseconds.
pub fn ms(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Milliseconds of a protobuf timestamp.
pub fn ts_ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// Generates a `_sqlite` and a `_postgres` variant of an async test body taking a `Db`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Db::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Db::Postgres).await;
            }
        }
    };
}

/// The `/metrics` address (`host:port`) the server logged (started with `--metrics-listen`).
pub async fn metrics_addr(s: &TestServer) -> String {
    for _ in 0..100 {
        if let Some(line) = s
            .log()
            .lines()
            .find(|l| l.contains("serving Prometheus metrics"))
        {
            let at = line.find("http://").unwrap();
            let rest = &line[at + 7..];
            return rest[..rest.find("/metrics").unwrap()].to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no metrics listener in the log:\n{}", s.log());
}

/// Scrapes `/metrics` at `addr` into `name{labels}` -> value.
pub async fn scrape_metrics(addr: &str) -> std::collections::HashMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    conn.read_to_string(&mut buf).await.unwrap();
    let (_, body) = buf.split_once("\r\n\r\n").unwrap();
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}
