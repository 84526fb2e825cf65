//! Seed "Send verification email": enqueue `sendVerificationEmail` on the `emails` queue with
//! an idempotency key, enqueue it again with the same key, and check that the second call
//! is flagged as a duplicate of the same run and that exactly one email went out.
//!
//! Run against a server at `STACKSHIFT_ENDPOINT` (default `http://127.0.0.1:7447`):
//! `cargo run -p stackshift --example verification_email`. Exits with status 1 when the
//! outcome is wrong.

mod support;

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
    support::check(
        failures,
        !first.duplicate,
        "the first enqueue is not a duplicate",
    );
    support::check(
        failures,
        second.duplicate,
        "the second enqueue is flagged as a duplicate",
    );
    support::check(
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
    support::check(
        failures,
        run.status == RunStatus::Completed,
        "the run completed",
    );
    support::check(
        failures,
        run.queue == "emails",
        "the run is on the emails queue",
    );
    support::check(
        failures,
        emails_sent_to(&email) == 1,
        "exactly one email was sent",
    );
    support::check(
        failures,
        run.step("send-verification-email").is_some(),
        "the send step was recorded",
    );
    support::check(
        failures,
        run.result
            .as_ref()
            .and_then(|r| r.get("messageId"))
            .is_some(),
        "the result carries the message id",
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    support::run_example(
        "verification_email",
        |client| {
            Some(
                Worker::builder(client.clone())
                    .queues(["emails"])
                    .concurrency(4)
                    .shutdown_grace(Duration::from_secs(5))
                    .job("sendVerificationEmail", send_verification_email)
                    .build()
                    .start(),
            )
        },
        scenario,
    )
    .await;
}
