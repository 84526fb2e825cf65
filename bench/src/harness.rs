//! The bench harness: a fresh database (SQLite file in a temporary directory, or a new
//! PostgreSQL database), the real `stackshift-server` binary as a child process, SDK
//! clients and workers, process statistics from `/proc`, and percentiles.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};
use stackshift::{ClientOptions, StackShift};

use crate::Opts;

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Embedded SQLite (WAL, `synchronous=FULL`).
    Sqlite,
    /// PostgreSQL (`--postgres-url` or `STACKSHIFT_BENCH_POSTGRES_URL`).
    Postgres,
}

/// A fresh, empty database for one scenario.
pub struct Db {
    /// The server's `--database-url`.
    pub url: String,
    /// Holds the SQLite file (and server logs) until the scenario ends.
    pub dir: tempfile::TempDir,
}

impl Db {
    /// Creates a fresh database on the chosen backend.
    pub async fn fresh(opts: &Opts) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = match opts.backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("bench.db").display()),
            Backend::Postgres => fresh_postgres(opts).await?,
        };
        Ok(Self { url, dir })
    }
}

async fn fresh_postgres(opts: &Opts) -> anyhow::Result<String> {
    let Some(base) = opts.postgres_url.clone() else {
        bail!(
            "--backend postgres needs --postgres-url or STACKSHIFT_BENCH_POSTGRES_URL \
             (scripts/pg.sh start prints one)"
        );
    };
    let name = format!("ss_bench_{}", uuid::Uuid::now_v7().simple());
    let admin = Database::connect(base.as_str())
        .await
        .with_context(|| "connecting to the PostgreSQL server")?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let _ = admin.close().await;
    let (prefix, _) = base
        .rsplit_once('/')
        .context("the PostgreSQL URL must end with /DATABASE")?;
    Ok(format!("{prefix}/{name}"))
}

/// The server binary: `--server-bin`, else `target/<profile>/stackshift-server` of this
/// workspace (the profile is the bench's own, so `--release` benches a release server).
/// When that file is missing it is built with `cargo build [--release] -p stackshift-server`;
/// an existing one is used as is (rebuild it after changing the server).
pub fn server_binary(opts: &Opts) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &opts.server_bin {
        return Ok(bin.clone());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("bench crate has no parent directory")?
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

/// A running `stackshift-server` process, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `127.0.0.1:PORT` of its Prometheus `/metrics` listener.
    metrics: String,
}

/// Group-commit counters scraped from a server's `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitStats {
    /// Commits performed.
    pub commits: f64,
    /// Writes committed.
    pub writes: f64,
    /// Statements (database round trips) the writer ran; `None` from a server that does
    /// not export `stackshift_writer_statements_total`.
    pub statements: Option<f64>,
    /// `ReportBatch` calls and the reports they carried; `None` from a server without
    /// `ReportBatch`.
    pub report_batches: Option<(f64, f64)>,
}

impl CommitStats {
    /// The difference `self - before`.
    pub fn since(self, before: CommitStats) -> CommitStats {
        CommitStats {
            commits: self.commits - before.commits,
            writes: self.writes - before.writes,
            statements: self.statements.zip(before.statements).map(|(a, b)| a - b),
            report_batches: self
                .report_batches
                .zip(before.report_batches)
                .map(|((c, i), (bc, bi))| (c - bc, i - bi)),
        }
    }
}

/// A free loopback port (bound, then released, so the server can take it).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    /// Starts the server on a free port over `db_url`; its log goes to `log_dir/server-N.log`.
    pub fn start(bin: &PathBuf, db_url: &str, log_dir: &std::path::Path) -> anyhow::Result<Self> {
        let n = std::fs::read_dir(log_dir)?.count();
        let log = std::fs::File::create(log_dir.join(format!("server-{n}.log")))?;
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--database-url", db_url])
            .args(["--metrics-listen", &metrics])
            .env(
                "RUST_LOG",
                std::env::var("STACKSHIFT_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line.clone());
            // Keep draining so the server never blocks on a full pipe.
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                line.clear();
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("stackshift-server listening on ") else {
            let _ = child.kill();
            bail!(
                "the server did not start ({line:?}); see {}",
                log_dir.display()
            );
        };
        Ok(Self {
            endpoint: format!("http://{addr}"),
            child,
            metrics,
        })
    }

    /// The server's group-commit counters so far (`stackshift_commit_batch_size` count and
    /// sum), read from its `/metrics`.
    pub fn commit_stats(&self) -> anyhow::Result<CommitStats> {
        use std::io::{Read, Write};
        // The metrics listener may come up just after the gRPC one the harness waited for.
        let mut tries = 0;
        let mut s = loop {
            match std::net::TcpStream::connect(&self.metrics) {
                Ok(s) => break s,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e).context("connecting to the server's /metrics"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        let value = |name: &str| -> anyhow::Result<f64> {
            body.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("no {name} in the server's /metrics"))
        };
        Ok(CommitStats {
            commits: value("stackshift_commit_batch_size_count")?,
            writes: value("stackshift_commit_batch_size_sum")?,
            statements: value("stackshift_writer_statements_total").ok(),
            report_batches: value("stackshift_report_batch_calls_total")
                .ok()
                .zip(value("stackshift_report_batch_items_total").ok()),
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new SDK client (its own HTTP/2 connection).
    pub fn client(&self) -> anyhow::Result<StackShift> {
        Ok(StackShift::new(ClientOptions::new(self.endpoint.clone()))?)
    }

    /// Stops the server (SIGKILL; the store is durable by design) and waits for it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size (MiB) and CPU time used so far (seconds) of a process, from `/proc`.
pub fn proc_stats(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux configuration the bench targets.
    Ok((rss_kb / 1024.0, (utime + stime) / 100.0))
}

/// The 1-minute load average, for context next to every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The `p`-th percentile (0-100) of samples in milliseconds (sorted in place).
pub fn percentile(samples: &mut [f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Rounds for display and JSON.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
