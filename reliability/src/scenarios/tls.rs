//! `tls`: the gRPC listener over TLS and mutual TLS, with certificates generated for the
//! test by the `openssl` command (a private CA, a server certificate for 127.0.0.1, a client
//! certificate, and a rogue CA with its own client certificate).
//!
//! Checks: the Rust SDK starts and completes runs over `https://` trusting the private CA
//! (worker included); plaintext, an untrusted server certificate, a missing client
//! certificate and a client certificate of another CA are all refused; a server given an
//! unreadable certificate file does not start.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stackshift::{ClientOptions, JobContext, RunStatus, StackShift, StartOptions, Worker};

use crate::Opts;
use crate::harness::{Db, Server, ServerSpec};
use crate::report::Report;

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA (`NAME-ca.pem`, `NAME-ca.key`).
fn ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    let (key, pem) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
}

/// A leaf certificate `NAME.pem`/`NAME.key` signed by CA `issuer` with extensions `ext`.
fn leaf(dir: &Path, name: &str, issuer: &str, ext: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{issuer}-ca.pem"),
            "-CAkey",
            &format!("{issuer}-ca.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    )
}

/// Starts a run of `ping` and waits for it (a worker on the same options executes it).
async fn round_trip(opts: ClientOptions) -> anyhow::Result<RunStatus> {
    let client = StackShift::new(opts.clone())?;
    let worker = Worker::builder(StackShift::new(opts)?)
        .queues(["tls"])
        .poll_wait(Duration::from_secs(2))
        .shutdown_grace(Duration::from_secs(1))
        .job(
            "ping",
            |ctx: JobContext<u64>| async move { Ok(ctx.payload + 1) },
        )
        .build()
        .start();
    let r = async {
        let id = tokio::time::timeout(
            Duration::from_secs(10),
            client.start("ping", 1, StartOptions::new().queue_name("tls")),
        )
        .await??
        .id;
        anyhow::Ok(
            client
                .wait_for_run(&id, Duration::from_secs(20))
                .await?
                .status,
        )
    }
    .await;
    worker.shutdown().await;
    r
}

/// Whether one call with these options is refused (within 10 s).
async fn refused(opts: ClientOptions) -> bool {
    let Ok(client) = StackShift::new(opts) else {
        return true;
    };
    !matches!(
        tokio::time::timeout(
            Duration::from_secs(10),
            client.start("ping", 1, StartOptions::new().queue_name("tls"))
        )
        .await,
        Ok(Ok(_))
    )
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let db = Db::fresh(opts).await?;
    let certs = tempfile::tempdir()?;
    let d = certs.path();
    ca(d, "good")?;
    ca(d, "rogue")?;
    leaf(
        d,
        "server",
        "good",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )?;
    leaf(d, "client", "good", "extendedKeyUsage=clientAuth\n")?;
    leaf(d, "intruder", "rogue", "extendedKeyUsage=clientAuth\n")?;
    let read = |f: &str| std::fs::read(d.join(f));
    let (ca_pem, client_pem, client_key) = (
        read("good-ca.pem")?,
        read("client.pem")?,
        read("client.key")?,
    );
    let (rogue_pem, rogue_key) = (read("intruder.pem")?, read("intruder.key")?);
    let path = |f: &str| d.join(f).display().to_string();
    let tls_args = vec![
        "--tls-cert".to_owned(),
        path("server.pem"),
        "--tls-key".to_owned(),
        path("server.key"),
    ];

    // TLS.
    let spec = ServerSpec::new(bin, &db)?.args(tls_args.clone());
    let server = Server::start(spec.clone())?;
    let https = server.endpoint().replace("http://", "https://");
    let trusted = ClientOptions::new(https.clone()).tls_ca_pem(ca_pem.clone());
    let status = round_trip(trusted.clone()).await?;
    report.figure("tls_run", format!("{status:?}"));
    report.check(status == RunStatus::Completed, || {
        format!("run over TLS ended {status:?}")
    });
    let plaintext = refused(ClientOptions::new(server.endpoint())).await;
    let untrusted = refused(ClientOptions::new(https.clone())).await;
    let wrong_ca =
        refused(ClientOptions::new(https.clone()).tls_ca_pem(read("rogue-ca.pem")?)).await;
    report.figure("plaintext_refused", plaintext);
    report.figure("untrusted_server_cert_refused", untrusted);
    report.check(plaintext && untrusted && wrong_ca, || {
        format!(
            "TLS server accepted: plaintext {}, web-PKI-only client {}, wrong CA {}",
            !plaintext, !untrusted, !wrong_ca
        )
    });
    drop(server);

    // Mutual TLS.
    let mut margs = tls_args.clone();
    margs.extend(["--tls-client-ca".to_owned(), path("good-ca.pem")]);
    let mut mspec = spec.clone();
    mspec.args = margs;
    let server = Server::start(mspec)?;
    let status = round_trip(trusted.clone().tls_client_identity(client_pem, client_key)).await?;
    report.figure("mtls_run", format!("{status:?}"));
    report.check(status == RunStatus::Completed, || {
        format!("run over mutual TLS ended {status:?}")
    });
    let no_cert = refused(trusted.clone()).await;
    let rogue = refused(trusted.clone().tls_client_identity(rogue_pem, rogue_key)).await;
    report.figure("mtls_without_client_cert_refused", no_cert);
    report.figure("mtls_client_cert_of_other_ca_refused", rogue);
    report.check(no_cert && rogue, || {
        format!(
            "mTLS server accepted: no client cert {}, rogue client cert {}",
            !no_cert, !rogue
        )
    });
    drop(server);

    // Unreadable certificate: the server refuses to start.
    let mut bad = spec;
    bad.args = vec![
        "--tls-cert".into(),
        path("missing.pem"),
        "--tls-key".into(),
        path("server.key"),
    ];
    let out = Command::new(&bad.bin)
        .args(["--listen", "127.0.0.1:0", "--database-url", &bad.db_url])
        .args(&bad.args)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    report.figure("bad_cert_exit_code", out.status.code().unwrap_or(-1));
    report.check(
        !out.status.success() && stderr.contains("--tls-cert"),
        || {
            format!(
                "server with a missing certificate: {:?} {stderr}",
                out.status
            )
        },
    );
    Ok(())
}
