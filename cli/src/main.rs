//! `stackshift`: the StackShift command-line tool. Runs, events, state, queues and schedules
//! over the gRPC API, as tables for people or JSON (`--json`) for scripts.
//!
//! Exit codes: 0 success, 1 error (server unreachable, bad key, not found, ...), 2 usage
//! error (bad flags or arguments). See `docs/cli.md`.

mod commands;
mod error;
mod keys;
mod render;
mod schedules;
mod table;
mod triggers;
mod watch;

use clap::{Parser, Subcommand};

use error::CliError;

/// Inspect and operate a StackShift server.
#[derive(Parser, Debug)]
#[command(name = "stackshift", version, about)]
pub struct Cli {
    /// Server URL.
    #[arg(
        long,
        env = "STACKSHIFT_ENDPOINT",
        default_value = "http://127.0.0.1:7447",
        global = true
    )]
    pub endpoint: String,
    /// API key (not needed when the server runs without keys on loopback).
    #[arg(
        long,
        env = "STACKSHIFT_API_KEY",
        global = true,
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// Print JSON instead of tables (one JSON document on stdout; `runs watch` prints one
    /// JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Runs: list, inspect, cancel, retry, follow.
    Runs {
        /// The subcommand.
        #[command(subcommand)]
        command: commands::RunsCommand,
    },
    /// Events: publish and list.
    Events {
        /// The subcommand.
        #[command(subcommand)]
        command: commands::EventsCommand,
    },
    /// The state store: get, set, delete keys.
    State {
        /// The subcommand.
        #[command(subcommand)]
        command: commands::StateCommand,
    },
    /// Queues: list, inspect, pause, resume.
    Queues {
        /// The subcommand.
        #[command(subcommand)]
        command: commands::QueuesCommand,
    },
    /// Schedules: create, list, get, pause, resume, delete.
    Schedules {
        /// The subcommand.
        #[command(subcommand)]
        command: schedules::SchedulesCommand,
    },
    /// Event triggers: subscribe jobs to events (create, list, delete).
    Triggers {
        /// The subcommand.
        #[command(subcommand)]
        command: triggers::TriggersCommand,
    },
    /// API keys: create, list, revoke (needs an admin key, or a server in open mode).
    Keys {
        /// The subcommand.
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let endpoint = cli.endpoint.clone();
    if let Err(e) = commands::run(cli).await {
        let e = match e {
            CliError::Sdk(inner) => CliError::from_sdk(&endpoint, inner),
            other => other,
        };
        eprintln!("stackshift: {e}");
        std::process::exit(1);
    }
}
