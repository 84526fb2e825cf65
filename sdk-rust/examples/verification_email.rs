//! Seed "Send verification email": enqueue `sendVerificationEmail` on the `emails` queue with
//! an idempotency key, enqueue it again with the same key, and check that the second call
//! is flagged as a duplicate of the same run and that exactly one email went out.
//!
//! Run against a server at `STACKSHIFT_ENDPOINT` (default `http://127.0.0.1:7447`):
//! `cargo run -p stackshift --example verification_email`. Exits with status 1 when the
//! outcome is wrong.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use stackshift::{JobContext, RunStatus, StackShift, StartOptions, Worker};

/// The job's payload, as the TypeScript seed sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignupPayload {
    user_id: String,
    email: String,
}

/// What the job returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EmailSent {
    message_id: String,
}

/// Emails "sent" by the stand-in mail provider, by recipient.
static OUTBOX: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

/// Stands in for the mail provider's API.
async fn send_mail(to: &str, subject: &str) -> anyhow::Result<String> {
    let mut outbox = OUTBOX
        .lock()
        .map_err(|_| anyhow::anyhow!("outbox lock poisoned"))?;
    *outbox.entry(to.to_owned()).or_default() += 1;
    println!("  mail provider: sent {subject:?} to {to}");
    Ok(format!("msg_{}", uuid::Uuid::now_v7().simple()))
}

fn emails_sent_to(to: &str) -> usize {
    OUTBOX
        .lock()
        .map(|outbox| outbox.get(to).copied().unwrap_or(0))
        .unwrap_or(0)
}

/// The handler: send the email inside a step, so a retry never sends it twice.
async fn send_verification_email(ctx: JobContext<SignupPayload>) -> anyhow::Result<EmailSent> {
    let message_id = ctx
        .step
        .run("send-verification-email", || {
            send_mail(&ctx.payload.email, "Verify your email address")
        })
        .await?;
    println!(
        "  handler: verification email for {} sent",
        ctx.payload.user_id
    );
    Ok(EmailSent { message_id })
}

async fn scenario(client: &StackShift, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let user_id = format!("user_{}", &suffix[suffix.len() - 12..]);
    let email = format!("ada+{user_id}@example.com");
    let payload = json!({ "userId": user_id, "email": email });
    let key = format!("verify:{user_id}");

    let first = client
        .queue("emails")
        .enqueue(
            "sendVerificationEmail",
            &payload,
            StartOptions::default().idempotency_key(key.clone()),
        )
        .await?;
    println!("enqueued run {} (duplicate: {})", first.id, first.duplicate);
    let second = client
        .queue("emails")
        .enqueue(
            "sendVerificationEmail",
            &payload,
            StartOptions::default().idempotency_key(key),
        )
        .await?;
    println!(
        "enqueued again: run {} (duplicate: {})",
        second.id, second.duplicate
    );
    check(
        failures,
        !first.duplicate,
        "the first enqueue is not a duplicate",
    );
    check(
        failures,
        second.duplicate,
        "the second enqueue is flagged as a duplicate",
    );
    check(
        failures,
        second.id == first.id,
        "both enqueues return the same run id",
    );

    let run = client
        .wait_for_run(&first.id, Duration::from_secs(10))
        .await?;
    println!(
        "run {} is {} after {} attempt(s); result {}",
        run.id,
        run.status,
        run.attempt,
        run.result.clone().unwrap_or_default()
    );
    check(
        failures,
        run.status == RunStatus::Completed,
        "the run completed",
    );
    check(
        failures,
        run.queue == "emails",
        "the run is on the emails queue",
    );
    check(
        failures,
        emails_sent_to(&email) == 1,
        "exactly one email was sent",
    );
    check(
        failures,
        run.step("send-verification-email").is_some(),
        "the send step was recorded",
    );
    check(
        failures,
        run.result
            .as_ref()
            .and_then(|r| r.get("messageId"))
            .is_some(),
        "the result carries the message id",
    );
    Ok(())
}

fn check(failures: &mut Vec<String>, ok: bool, what: &str) {
    println!("  [{}] {what}", if ok { "ok" } else { "FAILED" });
    if !ok {
        failures.push(what.to_owned());
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,stackshift=info".into()),
        )
        .init();
    let client = match StackShift::from_env() {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot create the client: {e}");
            std::process::exit(1);
        }
    };
    println!("server: {}", client.endpoint());
    let worker = Worker::builder(client.clone())
        .queues(["emails"])
        .concurrency(4)
        .shutdown_grace(Duration::from_secs(5))
        .job("sendVerificationEmail", send_verification_email)
        .build()
        .start();

    let mut failures = Vec::new();
    let outcome = scenario(&client, &mut failures).await;
    worker.shutdown().await;

    if let Err(e) = outcome {
        eprintln!("example failed: {e:#}");
        std::process::exit(1);
    }
    if !failures.is_empty() {
        eprintln!(
            "{} check(s) failed: {}",
            failures.len(),
            failures.join("; ")
        );
        std::process::exit(1);
    }
    println!("verification_email: all checks passed");
}
