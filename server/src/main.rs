//! `stackshift-server`: runs the StackShift gRPC server, and manages API keys.

use clap::{Parser, Subcommand};
use stackshift_server::engine::auth::generate_key;
use stackshift_server::engine::history::{
    DEFAULT_MAX_STEPS_PER_RUN, DEFAULT_MAX_TIMELINE_ENTRIES, HistoryLimits, MAX_MAX_STEPS_PER_RUN,
    MAX_MAX_TIMELINE_ENTRIES, MIN_MAX_STEPS_PER_RUN, MIN_MAX_TIMELINE_ENTRIES,
};
use stackshift_server::engine::state::DEFAULT_MAX_VALUE_BYTES;
use stackshift_server::engine::store::KeyStore;
use stackshift_server::engine::{EngineConfig, now_ms, validate};
use stackshift_server::server::{ServeConfig, TlsFiles, serve};
use stackshift_server::storage::SqlStore;

/// StackShift durable execution server.
#[derive(Parser, Debug)]
#[command(name = "stackshift-server", version, about)]
struct Cli {
    /// Database: `sqlite://PATH` (a bare path works too) or `postgres://USER:PASS@HOST/DB`.
    #[arg(
        long,
        env = "STACKSHIFT_DATABASE_URL",
        default_value = "sqlite://stackshift.db",
        global = true
    )]
    database_url: String,
    /// Export tracing spans over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317).
    /// Off by default.
    #[arg(long, env = "STACKSHIFT_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "STACKSHIFT_LISTEN", default_value = "127.0.0.1:7447")]
    listen: String,
    /// Serve without API keys on a non-loopback address (never do this in production).
    #[arg(long, env = "STACKSHIFT_INSECURE_ALLOW_OPEN")]
    insecure_allow_open: bool,
    /// Largest payload, result or step output in bytes.
    #[arg(long, env = "STACKSHIFT_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    max_payload_bytes: usize,
    /// Largest state-store value in bytes [default: 262144, or --max-payload-bytes if smaller].
    #[arg(long, env = "STACKSHIFT_MAX_STATE_VALUE_BYTES")]
    max_state_value_bytes: Option<usize>,
    /// Most journal entries (step results, sleeps, waits, state calls, child waits) one run
    /// may record (10 to 1000000); the request for one more is refused with
    /// RESOURCE_EXHAUSTED (reason STEP_LIMIT) and the run fails with StepLimitExceeded.
    #[arg(long, env = "STACKSHIFT_MAX_STEPS_PER_RUN", default_value_t = DEFAULT_MAX_STEPS_PER_RUN)]
    max_steps_per_run: i64,
    /// Most timeline entries kept per run (10 to 1000000); then one truncation marker, and
    /// later entries are dropped except how the run ends.
    #[arg(long, env = "STACKSHIFT_MAX_TIMELINE_ENTRIES", default_value_t = DEFAULT_MAX_TIMELINE_ENTRIES)]
    max_timeline_entries: i64,
    /// Lease timeout in seconds when neither the run nor the job sets one.
    #[arg(long, env = "STACKSHIFT_DEFAULT_LEASE_SECS", default_value_t = 30)]
    default_lease_secs: u32,
    /// Seconds in-flight requests get after SIGINT/SIGTERM before the server exits.
    #[arg(long, env = "STACKSHIFT_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// Seconds events are kept (and deduplicated by id) before they are deleted.
    #[arg(long, env = "STACKSHIFT_EVENT_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    event_retention_secs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464). Off by default.
    #[arg(long, env = "STACKSHIFT_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Serve gRPC over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "STACKSHIFT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "STACKSHIFT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by these PEM authorities (mutual TLS; needs
    /// --tls-cert).
    #[arg(long, env = "STACKSHIFT_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Requests per second allowed per namespace (burst: the same); over it requests answer
    /// RESOURCE_EXHAUSTED with a retry hint. Unset = unlimited.
    #[arg(long, env = "STACKSHIFT_RATE_LIMIT_PER_NAMESPACE")]
    rate_limit_per_namespace: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Create a key for a namespace; the key is printed once and only its hash is stored.
    Create {
        /// Namespace the key grants access to.
        #[arg(long)]
        namespace: String,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
        /// Let the key manage keys over the API (`stackshift keys ...`).
        #[arg(long)]
        admin: bool,
    },
    /// List keys (ids, namespaces, labels; never the keys).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key id (`key_...`).
        id: String,
    },
}

/// mimalloc instead of the system allocator: the server allocates per request and per
/// statement (docs/performance.md, round 3).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    stackshift_server::engine::init_clock();
    let cli = Cli::parse();
    let telemetry = match stackshift_server::telemetry::init(cli.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("stackshift-server: {e:#}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        None | Some(Command::Serve) => run_server(cli.database_url, cli.serve).await,
        Some(Command::Keys { command }) => keys(&cli.database_url, command).await,
    };
    drop(telemetry);
    if let Err(e) = result {
        eprintln!("stackshift-server: {e:#}");
        std::process::exit(1);
    }
}

async fn run_server(database_url: String, args: ServeArgs) -> anyhow::Result<()> {
    if args.max_payload_bytes < 1024 || args.max_payload_bytes > 64 * 1024 * 1024 {
        anyhow::bail!("--max-payload-bytes must be between 1024 and 67108864");
    }
    let max_state_value_bytes = args
        .max_state_value_bytes
        .unwrap_or(DEFAULT_MAX_VALUE_BYTES.min(args.max_payload_bytes));
    if max_state_value_bytes < 1024 || max_state_value_bytes > args.max_payload_bytes {
        anyhow::bail!(
            "--max-state-value-bytes must be between 1024 and --max-payload-bytes ({})",
            args.max_payload_bytes
        );
    }
    if args.rate_limit_per_namespace == Some(0) {
        anyhow::bail!("--rate-limit-per-namespace must be at least 1 (omit it for no limit)");
    }
    if !(MIN_MAX_STEPS_PER_RUN..=MAX_MAX_STEPS_PER_RUN).contains(&args.max_steps_per_run) {
        anyhow::bail!(
            "--max-steps-per-run must be between {MIN_MAX_STEPS_PER_RUN} and {MAX_MAX_STEPS_PER_RUN}"
        );
    }
    if !(MIN_MAX_TIMELINE_ENTRIES..=MAX_MAX_TIMELINE_ENTRIES).contains(&args.max_timeline_entries) {
        anyhow::bail!(
            "--max-timeline-entries must be between {MIN_MAX_TIMELINE_ENTRIES} and \
             {MAX_MAX_TIMELINE_ENTRIES}"
        );
    }
    if !(1..=3600).contains(&args.default_lease_secs) {
        anyhow::bail!("--default-lease-secs must be between 1 and 3600");
    }
    if !(1..=10 * 365 * 24 * 3600).contains(&args.event_retention_secs) {
        anyhow::bail!("--event-retention-secs must be between 1 and 315360000 (10 years)");
    }
    let engine = EngineConfig {
        max_payload_bytes: args.max_payload_bytes,
        default_lease_ms: i64::from(args.default_lease_secs) * 1000,
        max_state_value_bytes,
        event_retention_ms: args.event_retention_secs as i64 * 1000,
        history: HistoryLimits {
            max_steps_per_run: args.max_steps_per_run,
            max_timeline_entries: args.max_timeline_entries,
        },
        ..EngineConfig::default()
    };
    let config = ServeConfig {
        listen: args.listen,
        database_url,
        insecure_allow_open: args.insecure_allow_open,
        engine,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_secs.min(3600)),
        metrics_listen: args.metrics_listen,
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
            cert,
            key,
            client_ca: args.tls_client_ca,
        }),
        rate_limit_per_namespace: args.rate_limit_per_namespace,
    };
    serve(config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn keys(database_url: &str, command: KeysCommand) -> anyhow::Result<()> {
    let store = SqlStore::connect(database_url).await?;
    match command {
        KeysCommand::Create {
            namespace,
            name,
            admin,
        } => {
            validate::name("--namespace", &namespace)?;
            let (mut record, secret) = generate_key(&namespace, &name, now_ms());
            record.admin = admin;
            let id = record.id.clone();
            store.insert_key(record).await?;
            eprintln!("created key {id} for namespace {namespace}; it is shown only once:");
            println!("{secret}");
        }
        KeysCommand::List => {
            println!(
                "{:<18} {:<24} {:<20} {:<6} STATUS",
                "ID", "NAMESPACE", "NAME", "ADMIN"
            );
            for k in store.list_keys().await? {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let admin = if k.admin { "yes" } else { "no" };
                println!(
                    "{:<18} {:<24} {:<20} {admin:<6} {status}",
                    k.id, k.namespace, k.name
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_key(&id, now_ms()).await? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
    }
    Ok(())
}
