//! The scenarios and what they share: a seeded random source and the kill -9 loop.

mod auth;
mod auth_isolation;
mod clock;
mod counters;
mod crash_soak;
mod fencing;
mod flood;
mod herd;
mod history_limits;
mod hostile;
mod paused_worker;
mod poison;
mod reaper_race;
mod secrets;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

use crate::Opts;
use crate::harness::{Server, server_binary};
use crate::report::Report;

/// The scenarios, in the order `--scenario` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Name {
    /// kill -9 the server repeatedly during thousands of multi-step runs.
    CrashSoak,
    /// SIGSTOP a worker past its lease: every late write is rejected.
    PausedWorker,
    /// A lock holder paused past expiry cannot use its old fencing token.
    LockFencing,
    /// Counter increments under kill -9: acknowledged <= final <= acknowledged + unknown.
    Counters,
    /// Hundreds of idle long-polls: each task to exactly one poller, flat work per enqueue.
    Herd,
    /// Crashing, oversized and undecodable runs stop at their attempts; others keep flowing.
    Poison,
    /// A completion racing the lease reaper (failpoints) never overwrites a completed run.
    ReaperRace,
    /// Missing, invalid and revoked keys; namespace isolation; open polls end on revocation.
    Auth,
    /// A canary key and payload at trace level: 0 occurrences in logs, metrics, errors.
    Secrets,
    /// TLS and mutual TLS on the gRPC listener, with the Rust SDK over https://.
    Tls,
    /// Malformed and extreme input: errors with the right codes, the server stays up.
    Hostile,
    /// One namespace floods past its rate limit; another keeps its latency.
    Flood,
    /// The server's wall clock jumps +1 h and -1 h (libfaketime): no timer fires early or late.
    Clock,
    /// Runs past every per-run history cap (steps, timeline, logs, sizes): codes and markers.
    HistoryLimits,
}

impl Name {
    /// Every scenario.
    pub fn all() -> Vec<Name> {
        vec![
            Name::CrashSoak,
            Name::PausedWorker,
            Name::LockFencing,
            Name::Counters,
            Name::Herd,
            Name::Poison,
            Name::ReaperRace,
            Name::Auth,
            Name::Secrets,
            Name::Tls,
            Name::Hostile,
            Name::Flood,
            Name::Clock,
            Name::HistoryLimits,
        ]
    }

    /// The scenario's name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Name::CrashSoak => "crash-soak",
            Name::PausedWorker => "paused-worker",
            Name::LockFencing => "lock-fencing",
            Name::Counters => "counters",
            Name::Herd => "herd",
            Name::Poison => "poison",
            Name::ReaperRace => "reaper-race",
            Name::Auth => "auth",
            Name::Secrets => "secrets",
            Name::Tls => "tls",
            Name::Hostile => "hostile",
            Name::Flood => "flood",
            Name::Clock => "clock",
            Name::HistoryLimits => "history-limits",
        }
    }
}

/// Runs one scenario.
pub async fn run(name: Name, opts: &Opts) -> anyhow::Result<Report> {
    let bin = server_binary(opts)?;
    let seed = opts.seed.unwrap_or_else(rand::random);
    let mut report = Report::new(name.as_str(), opts);
    report.figure("seed", seed);
    let rng = rand::rngs::StdRng::seed_from_u64(seed);
    match name {
        Name::CrashSoak => crash_soak::run(opts, &bin, rng, &mut report).await?,
        Name::PausedWorker => paused_worker::run(opts, &bin, &mut report).await?,
        Name::LockFencing => fencing::run(opts, &bin, rng, &mut report).await?,
        Name::Counters => counters::run(opts, &bin, rng, &mut report).await?,
        Name::Herd => herd::run(opts, &bin, &mut report).await?,
        Name::Poison => poison::run(opts, &bin, &mut report).await?,
        Name::ReaperRace => reaper_race::run(opts, &bin, rng, &mut report).await?,
        Name::Auth => auth::run(opts, &bin, &mut report).await?,
        Name::Secrets => secrets::run(opts, &bin, &mut report).await?,
        Name::Tls => tls::run(opts, &bin, &mut report).await?,
        Name::Hostile => hostile::run(opts, &bin, &mut report).await?,
        Name::Flood => flood::run(opts, &bin, &mut report).await?,
        Name::Clock => clock::run(opts, &bin, &mut report).await?,
        Name::HistoryLimits => history_limits::run(opts, &bin, &mut report).await?,
    }
    Ok(report)
}

/// The kill schedule: how many kills, the time between them and the outage after each
/// (milliseconds, drawn uniformly).
#[derive(Debug, Clone, Copy)]
pub struct Kills {
    /// SIGKILLs to send.
    pub count: u32,
    /// Time the server runs between kills.
    pub gap_ms: (u64, u64),
    /// Time the server stays down after a kill.
    pub outage_ms: (u64, u64),
}

/// Kills the server with SIGKILL at random moments per `kills`, restarting it on the same
/// port and database each time. Returns the kills done.
pub fn spawn_killer(
    server: Arc<Mutex<Server>>,
    kills: Kills,
    mut rng: rand::rngs::StdRng,
) -> tokio::task::JoinHandle<anyhow::Result<u32>> {
    tokio::spawn(async move {
        for _ in 0..kills.count {
            let gap = rng.random_range(kills.gap_ms.0..=kills.gap_ms.1);
            let outage = rng.random_range(kills.outage_ms.0..=kills.outage_ms.1);
            tokio::time::sleep(Duration::from_millis(gap)).await;
            let mut guard = server.clone().lock_owned().await;
            guard.kill9();
            tokio::time::sleep(Duration::from_millis(outage)).await;
            tokio::task::spawn_blocking(move || guard.restart()).await??;
        }
        Ok(kills.count)
    })
}
