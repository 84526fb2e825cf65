//! `stackshift-reliability`: the reliability and security suite. Each scenario starts the
//! real `stackshift-server` binary on a fresh database, injects faults (kill -9 of the
//! server, SIGSTOP of a worker, expired leases and locks, crashing handlers, hostile
//! callers), prints its figures (tried, lost, duplicated, ...) and fails on any violation.
//!
//! ```sh
//! cargo run -p stackshift-reliability -- [--full] [--scenario NAME]... [--backend sqlite|postgres]
//! ```
//! Without `--full` every scenario runs at its CI size (seconds); `--full` runs the sizes
//! stated in `docs/reliability.md`. Guarantees and how each is tested: `docs/reliability.md`.

mod child;
mod harness;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use harness::Backend;

/// StackShift reliability and security suite against the real server binary.
#[derive(Parser, Debug)]
#[command(name = "stackshift-reliability", about)]
struct Cli {
    #[command(subcommand)]
    child: Option<ChildCommand>,
    #[command(flatten)]
    opts: Opts,
    /// Scenarios to run (repeatable) [default: all].
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<scenarios::Name>,
}

/// Internal: the suite re-runs itself as a separate worker process that it can SIGSTOP or
/// that crashes on purpose.
#[derive(Subcommand, Debug)]
enum ChildCommand {
    /// A worker process used by the paused-worker and poison scenarios.
    #[command(hide = true)]
    ChildWorker(child::ChildArgs),
}

/// Options shared by every scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct Opts {
    /// Full sizes (minutes) instead of the CI sizes (seconds).
    #[arg(long)]
    pub full: bool,
    /// The store.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
    /// PostgreSQL server on which a fresh database is created per scenario.
    #[arg(long, env = "STACKSHIFT_TEST_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// The server binary [default: this workspace's, built on demand].
    #[arg(long, env = "STACKSHIFT_RELIABILITY_SERVER_BIN")]
    pub server_bin: Option<PathBuf>,
    /// The server built with `--features failpoints` for `reaper-race` [default:
    /// target/debug/stackshift-server-failpoints, built on demand].
    #[arg(long, env = "STACKSHIFT_RELIABILITY_FAILPOINT_SERVER_BIN")]
    pub failpoint_server_bin: Option<PathBuf>,
    /// Seed for the random fault schedule [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Opts {
    /// The full size or the CI size.
    pub fn size<T>(&self, full: T, ci: T) -> T {
        if self.full { full } else { ci }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ChildCommand::ChildWorker(args)) = cli.child {
        return match child::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("child worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let names = if cli.scenarios.is_empty() {
        scenarios::Name::all()
    } else {
        cli.scenarios
    };
    let mut failed = Vec::new();
    for name in names {
        let t = std::time::Instant::now();
        let report = match scenarios::run(name, &cli.opts).await {
            Ok(r) => r,
            Err(e) => {
                let mut r = report::Report::new(name.as_str(), &cli.opts);
                r.violation(format!("scenario error: {e:#}"));
                r
            }
        };
        if !report.print(t.elapsed()) {
            failed.push(name.as_str());
        }
    }
    if failed.is_empty() {
        println!("\nreliability suite: all scenarios passed");
        ExitCode::SUCCESS
    } else {
        println!("\nreliability suite: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
