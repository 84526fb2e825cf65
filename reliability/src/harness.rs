//! The harness: a fresh database (SQLite file in a temporary directory, or a new PostgreSQL
//! database), the real `stackshift-server` binary as a child process that can be killed
//! with SIGKILL and restarted on the same port, API keys created with the server's own
//! `keys create` command, and gRPC clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};
use stackshift::{ClientOptions, StackShift};
use stackshift_proto::v1::events_service_client::EventsServiceClient;
use stackshift_proto::v1::jobs_service_client::JobsServiceClient;
use stackshift_proto::v1::keys_service_client::KeysServiceClient;
use stackshift_proto::v1::queues_service_client::QueuesServiceClient;
use stackshift_proto::v1::state_service_client::StateServiceClient;
use stackshift_proto::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::Opts;

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Embedded SQLite (WAL, `synchronous=FULL`).
    Sqlite,
    /// PostgreSQL (`--postgres-url` or `STACKSHIFT_TEST_POSTGRES_URL`).
    Postgres,
}

/// A fresh, empty database for one scenario.
pub struct Db {
    /// The server's `--database-url`.
    pub url: String,
    /// Holds the SQLite file and the server logs until the scenario ends.
    pub dir: tempfile::TempDir,
}

impl Db {
    /// Creates a fresh database on the chosen backend.
    pub async fn fresh(opts: &Opts) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = match opts.backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("rel.db").display()),
            Backend::Postgres => fresh_postgres(opts).await?,
        };
        Ok(Self { url, dir })
    }

    /// Creates an API key for `namespace` with `stackshift-server keys create` (the CLI
    /// path operators use) and returns `(key id, secret)`.
    pub fn create_key(
        &self,
        bin: &Path,
        namespace: &str,
        admin: bool,
    ) -> anyhow::Result<(String, String)> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "--database-url",
            &self.url,
            "keys",
            "create",
            "--namespace",
            namespace,
        ]);
        if admin {
            cmd.arg("--admin");
        }
        let out = cmd
            .output()
            .context("running stackshift-server keys create")?;
        if !out.status.success() {
            bail!(
                "keys create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let secret = String::from_utf8(out.stdout)?.trim().to_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let id = stderr
            .split_whitespace()
            .find(|w| w.starts_with("key_"))
            .context("keys create printed no key id")?
            .to_owned();
        Ok((id, secret))
    }
}

async fn fresh_postgres(opts: &Opts) -> anyhow::Result<String> {
    let Some(base) = opts.postgres_url.clone() else {
        bail!(
            "--backend postgres needs --postgres-url or STACKSHIFT_TEST_POSTGRES_URL \
             (`bash scripts/pg.sh url` prints one)"
        );
    };
    let name = format!("ss_rel_{}", uuid::Uuid::now_v7().simple());
    let admin = Database::connect(base.as_str())
        .await
        .context("connecting to the PostgreSQL server")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let _ = admin.close().await;
    let (prefix, _) = base
        .rsplit_once('/')
        .context("the PostgreSQL URL must end with /DATABASE")?;
    Ok(format!("{prefix}/{name}"))
}

/// The server binary: `--server-bin`, else `target/debug/stackshift-server` of this
/// workspace (`target/release/...` when the suite itself is a release build), built with
/// `cargo build -p stackshift-server` when missing.
pub fn server_binary(opts: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &opts.server_bin {
        return Ok(bin.clone());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("reliability crate has no parent directory")?
        .to_path_buf();
    let release = !cfg!(debug_assertions);
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let bin = target
        .join(if release { "release" } else { "debug" })
        .join("stackshift-server");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("{} is missing; building it", bin.display());
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args(["build", "-p", "stackshift-server"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo build -p stackshift-server")?;
    if !status.success() || !bin.exists() {
        bail!(
            "cargo build -p stackshift-server did not produce {}",
            bin.display()
        );
    }
    Ok(bin)
}

/// A free TCP port on 127.0.0.1 (the server keeps it across restarts).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// How to start a server: binary, database, port, extra flags and environment.
#[derive(Clone)]
pub struct ServerSpec {
    /// The binary.
    pub bin: PathBuf,
    /// `--database-url`.
    pub db_url: String,
    /// Where `server-N.log` files go.
    pub log_dir: PathBuf,
    /// The fixed port (restarts reuse it so clients reconnect transparently).
    pub port: u16,
    /// Extra flags.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// `RUST_LOG` of the server.
    pub log_level: String,
}

impl ServerSpec {
    /// A spec for `db` on a fresh free port, logging at `warn`.
    pub fn new(bin: &Path, db: &Db) -> anyhow::Result<Self> {
        Ok(Self {
            bin: bin.to_path_buf(),
            db_url: db.url.clone(),
            log_dir: db.dir.path().to_path_buf(),
            port: free_port()?,
            args: Vec::new(),
            env: Vec::new(),
            log_level: std::env::var("STACKSHIFT_RELIABILITY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        })
    }

    /// Adds flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running `stackshift-server` process, killed when dropped.
pub struct Server {
    spec: ServerSpec,
    child: Option<Child>,
    /// Times the process was started.
    pub starts: u32,
}

impl Server {
    /// Starts the server and waits until it listens.
    pub fn start(spec: ServerSpec) -> anyhow::Result<Self> {
        let mut s = Self {
            spec,
            child: None,
            starts: 0,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        // The port may still be held for a moment after a kill: retry binding briefly.
        let mut last = String::new();
        for _ in 0..50 {
            match self.try_spawn() {
                Ok(()) => return Ok(()),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the server did not start: {last}")
    }

    fn try_spawn(&mut self) -> anyhow::Result<()> {
        let n = std::fs::read_dir(&self.spec.log_dir)?.count();
        let log_path = self.spec.log_dir.join(format!("server-{n}.log"));
        let log = std::fs::File::create(&log_path)?;
        let listen = format!("127.0.0.1:{}", self.spec.port);
        let mut child = Command::new(&self.spec.bin)
            .args(["--listen", &listen, "--database-url", &self.spec.db_url])
            .args(&self.spec.args)
            .envs(self.spec.env.iter().cloned())
            .env("RUST_LOG", &self.spec.log_level)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.spec.bin.display()))?;
        let stdout = child.stdout.take().context("no server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line.clone());
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                line.clear();
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        if !line.starts_with("stackshift-server listening on ") {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            bail!("no listening line ({line:?}); log: {tail}");
        }
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.port)
    }

    /// The server's process id (0 when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `kill -9` the server and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and database.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The log files written so far, concatenated.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(&self.spec.log_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("server-") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// An SDK client (own HTTP/2 connection), with an API key when given.
    pub fn client(&self, key: Option<&str>) -> anyhow::Result<StackShift> {
        let mut o = ClientOptions::new(self.endpoint());
        if let Some(k) = key {
            o = o.api_key(k);
        }
        Ok(StackShift::new(o)?)
    }

    /// A raw, lazily connecting channel (own HTTP/2 connection).
    pub fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Endpoint::from_shared(self.endpoint())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy())
    }

    /// Raw clients on a new channel.
    pub fn raw(&self) -> anyhow::Result<Raw> {
        Raw::new(self.channel()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Raw gRPC clients (exact status codes, no SDK retries).
#[derive(Clone)]
pub struct Raw {
    /// `JobsService`.
    pub jobs: JobsServiceClient<Channel>,
    /// `WorkerService`.
    pub worker: WorkerServiceClient<Channel>,
    /// `StateService`.
    pub state: StateServiceClient<Channel>,
    /// `EventsService`.
    pub events: EventsServiceClient<Channel>,
    /// `QueuesService`.
    pub queues: QueuesServiceClient<Channel>,
    /// `KeysService`.
    pub keys: KeysServiceClient<Channel>,
}

impl Raw {
    /// Clients over `channel`.
    pub fn new(channel: Channel) -> anyhow::Result<Self> {
        Ok(Self {
            jobs: JobsServiceClient::new(channel.clone()),
            worker: WorkerServiceClient::new(channel.clone()),
            state: StateServiceClient::new(channel.clone()),
            events: EventsServiceClient::new(channel.clone()),
            queues: QueuesServiceClient::new(channel.clone()),
            keys: KeysServiceClient::new(channel),
        })
    }
}

/// A request with a deadline and, when given, `authorization: Bearer KEY`.
pub fn req<T>(msg: T, timeout: Duration, key: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    if let Some(k) = key
        && let Ok(v) = format!("Bearer {k}").parse()
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// A request with a deadline and a raw `authorization` header value (`None` = no header).
pub fn req_header<T>(msg: T, timeout: Duration, header: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    if let Some(h) = header
        && let Ok(v) = h.parse()
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// The status code of an answer (`Ok` for a response).
pub fn code_of<R>(r: &Result<tonic::Response<R>, tonic::Status>) -> tonic::Code {
    r.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok)
}

/// A protobuf duration.
pub fn dur(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// True for codes that leave the outcome of a write unknown (the request may or may not have
/// been applied): the connection failed or the deadline passed.
pub fn outcome_unknown(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    )
}

/// Sends `SIGSTOP` or `SIGCONT` (`sig` = "STOP" / "CONT") to a process.
pub fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// The scheduler state letter of a process (`T` = stopped), from `/proc`.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// CPU time used so far by a process (seconds), from `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    Ok((utime + stime) / 100.0)
}

/// Resident set size of a process in MiB, from `/proc`.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

/// This executable (to run child workers that can be stopped or crash on their own).
pub fn self_exe() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?)
}
