//! `stackshift-bench`: end-to-end benchmarks of StackShift. Each scenario starts the real
//! `stackshift-server` binary on a fresh database, drives it with Rust SDK clients and
//! workers in this process, prints a readable table and ends with one JSON line of figures.
//!
//! ```sh
//! cargo run --release -p stackshift-bench -- throughput [--backend sqlite|postgres] [--workers N] [--runs N]
//! ```
//! Scenarios and the commands that reproduce the published figures: `docs/performance.md`.

mod harness;
mod scenarios;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use harness::Backend;

/// StackShift benchmarks against the real server binary.
#[derive(Parser, Debug)]
#[command(name = "stackshift-bench", about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    opts: Opts,
}

/// The benchmark scenarios.
#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 3-step runs completed per second, end to end (starts and workers concurrently).
    Throughput,
    /// Pre-enqueued zero-step runs (100k by default) drained, runs per second.
    Burndown,
    /// Start -> handler begins, one run at a time (low load).
    Latency,
    /// Event publish -> waiting run resumes, with 100k runs waiting.
    Resume,
    /// Server RSS and idle CPU with 100k runs waiting.
    Waiting,
    /// Start -> handler begins with 10k vs 1M finished runs in the store.
    History,
    /// Two server replicas on one PostgreSQL: 3-step runs per second and duplicates.
    Replicas,
}

/// Options shared by every scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// The store.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite, global = true)]
    pub backend: Backend,
    /// SDK worker instances (each with its own connection) [default: per scenario].
    #[arg(long, global = true)]
    pub workers: Option<usize>,
    /// Concurrency slots per worker.
    #[arg(long, default_value_t = 100, global = true)]
    pub concurrency: usize,
    /// Runs (or samples, for latency scenarios) [default: per scenario].
    #[arg(long, global = true)]
    pub runs: Option<usize>,
    /// PostgreSQL server on which a fresh database is created per scenario.
    #[arg(long, env = "STACKSHIFT_BENCH_POSTGRES_URL", global = true)]
    pub postgres_url: Option<String>,
    /// The server binary [default: this workspace's, built on demand].
    #[arg(long, env = "STACKSHIFT_BENCH_SERVER_BIN", global = true)]
    pub server_bin: Option<PathBuf>,
    /// Tiny sizes that finish in seconds (CI smoke test; figures are meaningless).
    #[arg(long, global = true)]
    pub smoke: bool,
}

impl Opts {
    /// `--runs`, else the smoke size, else the full size.
    pub fn runs_or(&self, full: usize, smoke: usize) -> usize {
        self.runs.unwrap_or(if self.smoke { smoke } else { full })
    }
}

/// A scenario's figures: table rows and the JSON fields.
pub struct Report {
    scenario: &'static str,
    rows: Vec<(String, String)>,
    json: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// An empty report for `scenario` on `backend`.
    pub fn new(scenario: &'static str, opts: &Opts) -> Self {
        let mut r = Self {
            scenario,
            rows: Vec::new(),
            json: serde_json::Map::new(),
        };
        r.json.insert("scenario".into(), scenario.into());
        let backend = match opts.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        r.json.insert("backend".into(), backend.into());
        r
    }

    /// A figure shown in the table and emitted in the JSON line under `key`.
    pub fn figure(&mut self, key: &str, label: &str, value: f64, unit: &str) {
        let value = harness::round2(value);
        self.rows.push((
            label.to_owned(),
            format!("{value} {unit}").trim().to_owned(),
        ));
        self.json.insert(key.to_owned(), serde_json::json!(value));
    }

    /// Context shown in the table and emitted in the JSON line.
    pub fn info(&mut self, key: &str, label: &str, value: impl Into<serde_json::Value>) {
        let value = value.into();
        let shown = match &value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        self.rows.push((label.to_owned(), shown));
        self.json.insert(key.to_owned(), value);
    }

    fn print(mut self) {
        self.info(
            "load_avg_1m",
            "load average (1 min)",
            harness::load_average(),
        );
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        println!("\n== {} ==", self.scenario);
        for (label, value) in &self.rows {
            println!("  {label:<width$}  {value}");
        }
        println!("{}", serde_json::Value::Object(self.json));
    }
}

/// mimalloc instead of the system allocator: the Rust SDK workers run in this process
/// (docs/performance.md, round 3).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = scenarios::run(cli.scenario, &cli.opts).await?;
    report.print();
    Ok(())
}
