//! Adapters: one worker process per SDK, built on that SDK, that registers the fixed job
//! catalogue (`conf.script`, `conf.echo`) and answers client commands. The protocol (JSON
//! lines) is documented in `docs/conformance.md`:
//!
//! - environment: `STACKSHIFT_ENDPOINT`, `STACKSHIFT_API_KEY`, `CONFORMANCE_LEDGER`,
//!   `CONFORMANCE_QUEUE`, `CONFORMANCE_CONCURRENCY`, `CONFORMANCE_SHUTDOWN_GRACE_MS`;
//! - stdout: `{"ready":true,"sdk":NAME}` once the worker polls, then one answer per command,
//!   `{"id":N,"ok":VALUE}` or `{"id":N,"error":{"code":STATUS,"type":CLASS,"message":TEXT}}`;
//! - stdin: `{"id":N,"op":OP,...}` commands; `{"op":"shutdown"}` (or end of input) shuts the
//!   worker down gracefully and exits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// The SDKs the runner knows.
pub const SDKS: [&str; 4] = ["rust", "typescript", "python", "go"];

/// How to launch one SDK's adapter.
#[derive(Debug, Clone)]
pub struct AdapterSpec {
    pub sdk: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
}

impl AdapterSpec {
    /// The launch command of `sdk`'s adapter (run [`prepare`] first to build it).
    pub fn for_sdk(sdk: &str, root: &Path) -> anyhow::Result<Self> {
        let (program, args, cwd) = match sdk {
            "rust" => (
                std::env::current_exe()?,
                vec!["rust-adapter".to_owned()],
                root.to_path_buf(),
            ),
            "typescript" => (
                PathBuf::from("node"),
                vec![
                    root.join("sdk-typescript/build/conformance/adapter.js")
                        .display()
                        .to_string(),
                ],
                root.join("sdk-typescript"),
            ),
            "python" => (
                root.join("sdk-python/.venv/bin/python"),
                vec![
                    root.join("sdk-python/conformance/adapter.py")
                        .display()
                        .to_string(),
                ],
                root.join("sdk-python"),
            ),
            "go" => (
                root.join("target/conformance/go-adapter"),
                Vec::new(),
                root.join("sdk-go"),
            ),
            other => anyhow::bail!("unknown SDK {other:?}; expected one of {}", SDKS.join(", ")),
        };
        Ok(Self {
            sdk: sdk.to_owned(),
            program,
            args,
            cwd,
        })
    }
}

/// Builds `sdk`'s adapter with its own toolchain (npm + tsc, pip, go build).
pub async fn prepare(sdk: &str, root: &Path) -> anyhow::Result<()> {
    let run = |program: &str, args: &[&str], cwd: PathBuf| {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(cwd).stdin(Stdio::null());
        let shown = format!("{program} {}", args.join(" "));
        async move {
            eprintln!("conformance: {shown}");
            let status = cmd
                .status()
                .await
                .with_context(|| format!("running {shown}"))?;
            anyhow::ensure!(status.success(), "{shown} failed ({status})");
            anyhow::Ok(())
        }
    };
    match sdk {
        "rust" => {}
        "typescript" => {
            let dir = root.join("sdk-typescript");
            if !dir.join("node_modules/.bin/tsc").exists() {
                run("npm", &["ci", "--no-audit", "--no-fund"], dir.clone()).await?;
            }
            run("node_modules/.bin/tsc", &["-p", "tsconfig.dev.json"], dir).await?;
        }
        "python" => {
            let dir = root.join("sdk-python");
            if !dir.join(".venv/bin/python").exists() {
                run("python3", &["-m", "venv", ".venv"], dir.clone()).await?;
            }
            run(
                ".venv/bin/python",
                &[
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    ".",
                ],
                dir,
            )
            .await?;
        }
        "go" => {
            let out = root.join("target/conformance/go-adapter");
            let out = out.display().to_string();
            run(
                "go",
                &["build", "-o", &out, "./conformance"],
                root.join("sdk-go"),
            )
            .await?;
        }
        other => anyhow::bail!("unknown SDK {other:?}"),
    }
    Ok(())
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running adapter process.
pub struct Adapter {
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    pending: Pending,
    next_id: u64,
    /// The adapter's stderr (SDK logs).
    pub log_path: PathBuf,
}

impl Adapter {
    /// Spawns the adapter and waits (up to 60 s) for its `ready` line.
    pub async fn spawn(
        spec: &AdapterSpec,
        env: &[(String, String)],
        log_path: PathBuf,
    ) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut child = Command::new(&spec.program)
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting the {} adapter ({})",
                    spec.sdk,
                    spec.program.display()
                )
            })?;
        let pid = child.id().context("adapter pid")?;
        let stdout = child.stdout.take().context("adapter stdout")?;
        let stdin = child.stdin.take();
        let pending: Pending = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let reader_pending = Arc::clone(&pending);
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if msg.get("ready").and_then(Value::as_bool) == Some(true) {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                } else if let Some(id) = msg.get("id").and_then(Value::as_u64) {
                    let tx = reader_pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    if let Some(tx) = tx {
                        let _ = tx.send(msg);
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(60), ready_rx).await {
            Ok(Ok(())) => {}
            _ => anyhow::bail!(
                "the {} adapter did not report ready within 60 s (log: {})",
                spec.sdk,
                log_path.display()
            ),
        }
        Ok(Self {
            child,
            pid,
            stdin,
            pending,
            next_id: 0,
            log_path,
        })
    }

    /// Sends one command and waits (up to `timeout`) for its answer.
    pub async fn call(
        &mut self,
        op: &str,
        mut args: serde_json::Map<String, Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        args.insert("id".into(), json!(id));
        args.insert("op".into(), json!(op));
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let stdin = self.stdin.as_mut().context("adapter stdin is closed")?;
        let mut line = serde_json::to_vec(&Value::Object(args))?;
        line.push(b'\n');
        stdin
            .write_all(&line)
            .await
            .context("writing to the adapter")?;
        stdin.flush().await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => anyhow::bail!("the adapter exited before answering {op}"),
            Err(_) => anyhow::bail!("the adapter did not answer {op} within {timeout:?}"),
        }
    }

    /// Sends a POSIX signal (`STOP`, `CONT`, `KILL`) to the adapter process.
    pub async fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -{signal} {} failed", self.pid);
        Ok(())
    }

    /// SIGKILLs the adapter and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Asks for a graceful shutdown (the SDK's own) and waits for the process to exit.
    pub async fn shutdown(mut self, timeout: Duration) -> anyhow::Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"{\"op\":\"shutdown\"}\n").await;
            let _ = stdin.flush().await;
            drop(stdin);
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => anyhow::bail!(
                "the adapter exited with {status} (log: {})",
                self.log_path.display()
            ),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = self.child.kill().await;
                anyhow::bail!("the adapter did not exit within {timeout:?} of a shutdown request")
            }
        }
    }
}
