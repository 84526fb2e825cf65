//! Assembles and runs the gRPC server: storage, engine, auth, services, health and
//! reflection, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use stackshift_proto::v1::events_service_server::EventsServiceServer;
use stackshift_proto::v1::jobs_service_server::JobsServiceServer;
use stackshift_proto::v1::keys_service_server::KeysServiceServer;
use stackshift_proto::v1::queues_service_server::QueuesServiceServer;
use stackshift_proto::v1::schedule_service_server::ScheduleServiceServer;
use stackshift_proto::v1::state_service_server::StateServiceServer;
use stackshift_proto::v1::trigger_service_server::TriggerServiceServer;
use stackshift_proto::v1::worker_service_server::WorkerServiceServer;
use tonic::transport::server::TcpIncoming;

use crate::api::{
    ApiState, EventsApi, JobsApi, KeysApi, QueuesApi, SchedulesApi, StateApi, TriggersApi,
    WorkerApi,
};
use crate::engine::auth::Authenticator;
use crate::engine::store::KeyStore;
use crate::engine::{Engine, EngineConfig};
use crate::storage::SqlStore;

/// Server settings (from flags or environment).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: String,
    /// Database URL.
    pub database_url: String,
    /// Serve without API keys on a non-loopback address.
    pub insecure_allow_open: bool,
    /// Engine limits.
    pub engine: EngineConfig,
    /// How long in-flight requests may take after a shutdown signal before the process
    /// exits anyway (idle client connections would otherwise hold it open).
    pub shutdown_grace: std::time::Duration,
    /// Address of the Prometheus `/metrics` listener; `None` = off.
    pub metrics_listen: Option<String>,
    /// TLS for the gRPC listener; `None` = plaintext.
    pub tls: Option<TlsFiles>,
    /// Requests per second allowed per namespace; `None` = unlimited.
    pub rate_limit_per_namespace: Option<u32>,
}

/// PEM files of the gRPC listener's TLS settings.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: std::path::PathBuf,
    /// The server's private key.
    pub key: std::path::PathBuf,
    /// Authorities whose client certificates are required (mutual TLS); `None` = no client
    /// certificates.
    pub client_ca: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// Reads the files into tonic's server TLS settings.
    fn load(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let read = |flag: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", p.display()))
        };
        let identity = Identity::from_pem(
            read("--tls-cert", &self.cert)?,
            read("--tls-key", &self.key)?,
        );
        let mut tls = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?));
        }
        Ok(tls)
    }
}

/// Runs the server until `shutdown` completes.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr: SocketAddr = tokio::net::lookup_host(&config.listen)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--listen {} resolves to no address", config.listen))?;
    // Bad TLS files fail the start, before anything listens.
    let tls = config.tls.as_ref().map(TlsFiles::load).transpose()?;
    let store = SqlStore::connect(&config.database_url)
        .await?
        .with_history_limits(config.engine.history);
    let keys = store.count_active_keys().await?;
    let loopback = addr.ip().is_loopback();
    if keys == 0 {
        if !loopback && !config.insecure_allow_open {
            anyhow::bail!(
                "no API key exists and --listen {addr} is not a loopback address: create a key \
                 with `stackshift-server keys create --namespace <ns>` first, or pass \
                 --insecure-allow-open to serve without authentication"
            );
        }
        tracing::warn!(
            "no API key exists: serving OPEN (no authentication) in namespace `default`; \
             create a key with `stackshift-server keys create --namespace <ns>` to require keys"
        );
    }
    let max_message = (config.engine.max_payload_bytes * 4).max(4 * 1024 * 1024);
    let store: Arc<dyn crate::engine::store::Store> = Arc::new(store);
    let engine = Engine::new(store.clone(), config.engine.clone());
    let background = engine.spawn_background();
    let auth = Arc::new(Authenticator::new(
        store,
        loopback || config.insecure_allow_open,
    ));
    let state = ApiState {
        engine: engine.clone(),
        auth,
        limiter: config
            .rate_limit_per_namespace
            .map(|n| Arc::new(crate::api::rate_limit::RateLimiter::new(n))),
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<JobsServiceServer<JobsApi>>()
        .await;
    health_reporter
        .set_serving::<WorkerServiceServer<WorkerApi>>()
        .await;
    health_reporter
        .set_serving::<QueuesServiceServer<QueuesApi>>()
        .await;
    health_reporter
        .set_serving::<StateServiceServer<StateApi>>()
        .await;
    health_reporter
        .set_serving::<EventsServiceServer<EventsApi>>()
        .await;
    health_reporter
        .set_serving::<KeysServiceServer<KeysApi>>()
        .await;
    health_reporter
        .set_serving::<ScheduleServiceServer<SchedulesApi>>()
        .await;
    health_reporter
        .set_serving::<TriggerServiceServer<TriggersApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(stackshift_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // TCP_NODELAY: without it Nagle's algorithm and delayed ACKs add tens of milliseconds
    // to every small request/response exchange.
    let incoming = TcpIncoming::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?
        .with_nodelay(Some(true));
    let local = incoming.local_addr()?;
    // One line on stdout, for scripts and tests that listen on port 0.
    println!("stackshift-server listening on {local}");
    tracing::info!(%local, database = %redact(&config.database_url), "serving");

    let metrics = match &config.metrics_listen {
        Some(a) => Some(crate::http::start_metrics(a, engine.clone()).await?),
        None => None,
    };
    let engine_for_signal = engine.clone();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: answering open polls, finishing in-flight requests");
        engine_for_signal.shutdown();
        let _ = stopping_tx.send(());
    };
    let grace = config.shutdown_grace;
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    // HTTP/1.1 too, for browsers: the dashboard and its JSON API share this listener
    // (requests are told apart by content type, see `crate::http`).
    let http = crate::http::router(state.clone());
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| anyhow::anyhow!("invalid TLS settings: {e}"))?;
        let mutual = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        tracing::info!(mutual, "serving gRPC over TLS");
    }
    let serving = builder
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        // One span per RPC (method path only: never metadata, keys or payloads).
        .trace_fn(|req| tracing::info_span!("grpc", path = %req.uri().path()))
        .accept_http1(true)
        .layer(crate::http::SplitLayer::new(http))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            JobsServiceServer::new(JobsApi(state.clone())).max_decoding_message_size(max_message),
        )
        .add_service(
            QueuesServiceServer::new(QueuesApi(state.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            EventsServiceServer::new(EventsApi(state.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(
            WorkerServiceServer::new(WorkerApi(state.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(KeysServiceServer::new(KeysApi(state.clone())))
        .add_service(
            ScheduleServiceServer::new(SchedulesApi(state.clone()))
                .max_decoding_message_size(max_message),
        )
        .add_service(TriggerServiceServer::new(TriggersApi(state.clone())))
        .add_service(
            StateServiceServer::new(StateApi(state)).max_decoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        served = serving => served?,
        () = deadline => tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace period; exiting \
             (every acknowledged write is already committed)"
        ),
    }
    background.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Hides the password of a database URL for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}://{user}:***@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
