//! `stackshift-conformance`: runs the same conformance cases against every StackShift SDK.
//!
//! ```text
//! cargo run -p stackshift-conformance -- --sdk rust|typescript|python|go [--cases GLOB] [--postgres URL]
//! ```
//!
//! It builds the SDK's adapter, starts a fresh `stackshift-server` (temporary SQLite, or a new
//! database on `--postgres`), then for each case in `conformance-tests/cases/` (sorted by
//! name): starts the adapter on a queue of its own, performs the case's actions through the
//! public gRPC API (and through the SDK's client, via the adapter), and checks the outcome
//! through `GetRun` and the side-effect ledger. It prints one line per case and ends with
//! `N passed, N failed`; the exit status is 1 when a case failed unexpectedly.
//!
//! Known failures: `conformance-tests/known-failing/<sdk>.yaml` may list cases with a reason
//! each; they are reported but not counted as failed. A listed case that passes is an error
//! (remove it from the list). The lists must be empty when an SDK is declared conformant.

mod adapter;
mod case;
mod exec;
mod ledger;
mod rust_adapter;
mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

/// Server limit used by the runner, so that "over the limit" cases stay small.
const MAX_PAYLOAD_BYTES: usize = 65_536;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "stackshift-conformance",
    about = "Run the SDK conformance cases"
)]
struct Cli {
    /// The SDK under test: rust, typescript, python or go. `rust-adapter` runs the Rust
    /// adapter itself (used by the runner).
    #[arg(long, default_value = "rust")]
    sdk: String,
    /// Only cases whose name (`area/behaviour`) matches this glob.
    #[arg(long, default_value = "*")]
    cases: String,
    /// Run on a fresh database of this PostgreSQL server (a URL ending in /DATABASE whose role
    /// may CREATE DATABASE) instead of a temporary SQLite file.
    #[arg(long, env = "STACKSHIFT_CONFORMANCE_POSTGRES")]
    postgres: Option<String>,
    /// The server binary (default: target/debug/stackshift-server, built when missing).
    #[arg(long, env = "STACKSHIFT_SERVER_BIN")]
    server_bin: Option<PathBuf>,
    /// Do not build the adapter (nor a missing server binary) first.
    #[arg(long)]
    no_build: bool,
    /// Keep each case's scratch directory (ledger, logs) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Subcommand form used internally: `rust-adapter`.
    #[arg(hide = true)]
    mode: Option<String>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if cli.mode.as_deref() == Some("rust-adapter") {
        if let Err(e) = rust_adapter::main().await {
            eprintln!("rust adapter: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    match run(cli).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("conformance: {e:#}");
            println!("0 passed, 1 failed");
            std::process::exit(2);
        }
    }
}

/// The repository root (this crate lives in `<root>/conformance-tests`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let root = repo_root();
    anyhow::ensure!(
        adapter::SDKS.contains(&cli.sdk.as_str()),
        "unknown --sdk {:?}; expected one of {}",
        cli.sdk,
        adapter::SDKS.join(", ")
    );
    let cases = case::load_cases(&root.join("conformance-tests/cases"), &cli.cases)?;
    anyhow::ensure!(!cases.is_empty(), "no case matches {:?}", cli.cases);
    let known = case::load_known_failing(&root.join("conformance-tests/known-failing"), &cli.sdk)?;

    let server_bin = match cli.server_bin {
        Some(bin) => bin,
        None => default_server_bin(&root, cli.no_build).await?,
    };
    anyhow::ensure!(
        server_bin.exists(),
        "{} does not exist",
        server_bin.display()
    );
    if !cli.no_build {
        adapter::prepare(&cli.sdk, &root).await?;
    }
    let spec = adapter::AdapterSpec::for_sdk(&cli.sdk, &root)?;

    let scratch = tempfile::Builder::new()
        .prefix("stackshift-conformance-")
        .tempdir()?;
    let server = server::Server::start(
        &server_bin,
        scratch.path(),
        cli.postgres.as_deref(),
        MAX_PAYLOAD_BYTES,
    )
    .await?;
    println!(
        "conformance: sdk {} against {} ({}), {} case(s)",
        cli.sdk,
        server.endpoint,
        if cli.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        cases.len()
    );

    let (mut passed, mut failed, mut known_failed) = (0usize, 0usize, 0usize);
    for (index, named) in cases.iter().enumerate() {
        let dir = scratch
            .path()
            .join(format!("{index:03}-{}", named.name.replace('/', "-")));
        std::fs::create_dir_all(&dir)?;
        let queue = format!(
            "conf-{index:03}-{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        let limit = named
            .case
            .timeout
            .as_deref()
            .map(case::duration)
            .transpose()?
            .unwrap_or(Duration::from_secs(60));
        let started = Instant::now();
        let mut case_run = exec::CaseRun::new(&server, &spec, &named.case, dir.clone(), queue)?;
        let outcome = match tokio::time::timeout(limit, case_run.execute()).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("the case did not finish within {limit:?}")),
        };
        let secs = started.elapsed().as_secs_f64();
        let known_entry = known.iter().find(|k| k.case == named.name);
        match (outcome, known_entry) {
            (Ok(()), None) => {
                passed += 1;
                println!("PASS  {} ({secs:.1}s)", named.name);
            }
            (Ok(()), Some(_)) => {
                failed += 1;
                println!(
                    "FAIL  {} ({secs:.1}s): passes but is listed in known-failing/{}.yaml; remove it",
                    named.name, cli.sdk
                );
            }
            (Err(e), Some(k)) => {
                known_failed += 1;
                println!("KNOWN {} ({secs:.1}s): {} [{e:#}]", named.name, k.reason);
            }
            (Err(e), None) => {
                failed += 1;
                println!("FAIL  {} ({secs:.1}s): {e:#}", named.name);
                println!("      case: {}", named.case.description.trim());
                print_tail(&case_run.adapter_log(), 25);
            }
        }
        if cli.keep {
            println!("      scratch: {}", dir.display());
        }
    }
    server.stop().await;
    if cli.keep || failed > 0 {
        let kept = scratch.keep();
        println!(
            "conformance: kept {} (ledgers, adapter and server logs)",
            kept.display()
        );
    }
    if known_failed > 0 {
        println!(
            "{known_failed} known failing (see conformance-tests/known-failing/{}.yaml)",
            cli.sdk
        );
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

/// `target/debug/stackshift-server`, built with `cargo build -p stackshift-server` only when it
/// does not exist yet. An existing binary is used as is (with a warning when the server's
/// sources are newer): rebuilding it from inside `cargo run -p stackshift-conformance` would
/// resolve features for a different package selection and make the two commands rebuild
/// each other's dependencies every time.
async fn default_server_bin(root: &Path, no_build: bool) -> anyhow::Result<PathBuf> {
    let bin = root.join("target/debug/stackshift-server");
    if !bin.exists() && !no_build {
        eprintln!(
            "conformance: {} is missing; running cargo build -p stackshift-server",
            bin.display()
        );
        let status =
            tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-p", "stackshift-server"])
                .current_dir(root)
                .status()
                .await?;
        anyhow::ensure!(status.success(), "cargo build -p stackshift-server failed");
    } else if let Some(newer) = newer_source(root, &bin) {
        eprintln!(
            "conformance: WARNING: {} is newer than {}; run `cargo build -p stackshift-server` to test the current server",
            newer.display(),
            bin.display()
        );
    }
    Ok(bin)
}

/// A server source file modified after `bin`, if any.
fn newer_source(root: &Path, bin: &Path) -> Option<PathBuf> {
    let built = std::fs::metadata(bin).and_then(|m| m.modified()).ok()?;
    [
        "server/src/**/*.rs",
        "proto/**/*.proto",
        "migrations/src/**/*.rs",
    ]
    .iter()
    .find_map(|pattern| {
        glob::glob(&format!("{}/{pattern}", root.display()))
            .ok()?
            .flatten()
            .find(|path| {
                std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|modified| modified > built)
            })
    })
}

/// Prints the last `n` lines of a log file, indented.
fn print_tail(path: &Path, n: usize) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return;
    }
    println!("      --- last lines of {} ---", path.display());
    for line in &lines[lines.len().saturating_sub(n)..] {
        println!("      | {line}");
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_case_file_parses() {
        let cases = case::load_cases(&repo_root().join("conformance-tests/cases"), "*")
            .expect("cases parse");
        assert!(cases.len() >= 25, "only {} cases", cases.len());
        for sdk in adapter::SDKS {
            let known =
                case::load_known_failing(&repo_root().join("conformance-tests/known-failing"), sdk)
                    .expect("list parses");
            assert!(known.is_empty(), "{sdk} has known-failing cases: {known:?}");
        }
    }

    #[test]
    fn ledger_overlap() {
        let e = |run: &str, phase: &str, t: f64| ledger::Entry {
            run_id: run.into(),
            step: "w".into(),
            attempt: 1,
            phase: phase.into(),
            t,
        };
        let entries = vec![
            e("a", "start", 0.0),
            e("b", "start", 1.0),
            e("a", "end", 2.0),
            e("c", "start", 2.0),
            e("b", "end", 3.0),
            e("c", "end", 4.0),
        ];
        let runs = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            ledger::max_overlap(&entries, &runs, "w").expect("overlap"),
            2
        );
    }
}
