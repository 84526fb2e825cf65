//! Starts a fresh `stackshift-server` for a conformance run: a temporary SQLite file, or a new
//! database on the PostgreSQL server given with `--postgres`. Two API keys are created first
//! (namespace `conformance`, used by the adapter and the runner, and `other`, used by the
//! namespace-isolation cases), so every call also exercises each SDK's authentication.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Key of namespace `conformance`.
    pub api_key: String,
    /// Key of namespace `other`.
    pub other_api_key: String,
}

impl Server {
    /// Starts `bin` on a fresh database inside `dir` (or on PostgreSQL).
    pub async fn start(
        bin: &Path,
        dir: &Path,
        postgres: Option<&str>,
        max_payload_bytes: usize,
    ) -> anyhow::Result<Self> {
        let database_url = match postgres {
            None => format!("sqlite://{}", dir.join("conformance.db").display()),
            Some(admin) => fresh_postgres_database(admin).await?,
        };
        let api_key = create_key(bin, &database_url, "conformance").await?;
        let other_api_key = create_key(bin, &database_url, "other").await?;
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--database-url", &database_url])
            .args(["--max-payload-bytes", &max_payload_bytes.to_string()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("stackshift-server listening on ") {
                    return anyhow::Ok(addr.trim().to_owned());
                }
            }
            anyhow::bail!(
                "the server exited before listening (log: {})",
                log_path.display()
            )
        })
        .await
        .context("the server did not listen within 30 s")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            endpoint: format!("http://{addr}"),
            api_key,
            other_api_key,
        })
    }

    /// Stops the server (SIGKILL; the database is thrown away anyway).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `stackshift-server keys create --namespace NS` on the database; returns the key.
async fn create_key(bin: &Path, database_url: &str, namespace: &str) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args([
            "--database-url",
            database_url,
            "keys",
            "create",
            "--namespace",
            namespace,
            "--name",
            "conformance",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .await
        .context("running stackshift-server keys create")?;
    if !out.status.success() {
        anyhow::bail!(
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = String::from_utf8(out.stdout)?.trim().to_owned();
    if key.is_empty() {
        anyhow::bail!("keys create printed no key");
    }
    Ok(key)
}

/// Creates a uniquely named database on the PostgreSQL server at `admin` (a URL ending in
/// `/DATABASE` whose role may `CREATE DATABASE`) with `psql`, and returns its URL. (`psql` keeps
/// this crate free of a database driver, so it builds with the same dependency features as the
/// SDK and adds little to CI.)
async fn fresh_postgres_database(admin: &str) -> anyhow::Result<String> {
    let name = format!("ss_conformance_{}", uuid::Uuid::now_v7().simple());
    let out = Command::new("psql")
        .args([
            admin,
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .await
        .context("running psql (PostgreSQL client tools) to create the test database")?;
    anyhow::ensure!(
        out.status.success(),
        "psql CREATE DATABASE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (prefix, _) = admin
        .rsplit_once('/')
        .context("--postgres must end with /DATABASE")?;
    Ok(format!("{prefix}/{name}"))
}
