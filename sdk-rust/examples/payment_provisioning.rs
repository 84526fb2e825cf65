//! Seed "Payment to provisioning workflow": `provisionAfterPayment` verifies the payment,
//! provisions the customer's resources, enables the paid plan and sends a receipt, each in
//! a step. Provisioning fails transiently on its first call, so the first attempt fails
//! *after* `verify-payment` succeeded; the retry (200 ms later) replays `verify-payment`
//! from the journal instead of calling the payment provider again.
//!
//! Checks: the run completed on attempt 2 with `{"provisioned": true}`, all four steps are
//! recorded, `verify-payment` ran exactly once and provisioning ran twice.
//!
//! Run against a server at `STACKSHIFT_ENDPOINT` (default `http://127.0.0.1:7447`):
//! `cargo run -p stackshift --example payment_provisioning`. Exits with status 1 when the
//! outcome is wrong.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use stackshift::{JobContext, RetryPolicy, RunStatus, StackShift, StartOptions, Worker};

/// The job's payload: `{ paymentId, customerId }`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentConfirmed {
    payment_id: String,
    customer_id: String,
}

/// What the payment provider reports.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payment {
    status: String,
    customer_email: String,
}

/// The job's result.
#[derive(Debug, Serialize)]
struct Provisioned {
    provisioned: bool,
}

/// Call counters of the stand-in services, one per `<service>:<id>`, so that runs left over
/// from earlier executions of this example cannot skew the counts.
static CALLS: LazyLock<Mutex<HashMap<String, Arc<AtomicUsize>>>> = LazyLock::new(Default::default);

fn counter(key: &str) -> Arc<AtomicUsize> {
    let mut calls = CALLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(calls.entry(key.to_owned()).or_default())
}

fn calls(key: &str) -> usize {
    counter(key).load(Ordering::SeqCst)
}

/// Stands in for the payment provider.
async fn verify_payment(payment_id: &str) -> anyhow::Result<Payment> {
    let n = counter(&format!("verify:{payment_id}")).fetch_add(1, Ordering::SeqCst) + 1;
    println!("  payment provider: verify {payment_id} (call #{n})");
    let customer = payment_id.replacen("pay_", "", 1);
    Ok(Payment {
        status: "paid".to_owned(),
        customer_email: format!("billing+{customer}@example.com"),
    })
}

/// Stands in for the infrastructure API; its first call for a customer times out.
async fn provision_customer_resources(customer_id: &str) -> anyhow::Result<serde_json::Value> {
    let n = counter(&format!("provision:{customer_id}")).fetch_add(1, Ordering::SeqCst) + 1;
    println!("  infrastructure: provision {customer_id} (call #{n})");
    if n == 1 {
        anyhow::bail!("infrastructure API timed out (simulated transient failure)");
    }
    Ok(json!({ "cluster": format!("cl_{customer_id}") }))
}

async fn enable_paid_plan(customer_id: &str) -> anyhow::Result<String> {
    counter(&format!("plan:{customer_id}")).fetch_add(1, Ordering::SeqCst);
    println!("  billing: paid plan enabled for {customer_id}");
    Ok("pro".to_owned())
}

async fn send_receipt(email: &str) -> anyhow::Result<()> {
    counter(&format!("receipt:{email}")).fetch_add(1, Ordering::SeqCst);
    println!("  mail provider: receipt sent to {email}");
    Ok(())
}

/// The handler, step for step as in the seed.
async fn provision_after_payment(ctx: JobContext<PaymentConfirmed>) -> anyhow::Result<Provisioned> {
    println!("handler: attempt {} of run {}", ctx.attempt, ctx.run_id);
    let payload = &ctx.payload;
    let payment: Payment = ctx
        .step
        .run("verify-payment", || verify_payment(&payload.payment_id))
        .await?;

    if payment.status != "paid" {
        anyhow::bail!("Payment is not complete");
    }
    // Shown in the run's detail (GetRun logs), tied to this attempt.
    ctx.log
        .with_field("customer_id", &payload.customer_id)
        .info("payment verified; provisioning");

    ctx.step
        .run("provision-customer-resources", || {
            provision_customer_resources(&payload.customer_id)
        })
        .await?;
    ctx.step
        .run("enable-plan", || enable_paid_plan(&payload.customer_id))
        .await?;
    ctx.step
        .run("send-receipt", || send_receipt(&payment.customer_email))
        .await?;

    Ok(Provisioned { provisioned: true })
}

async fn scenario(client: &StackShift, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let suffix = &suffix[suffix.len() - 12..];
    let payload = PaymentConfirmed {
        payment_id: format!("pay_{suffix}"),
        customer_id: format!("cus_{suffix}"),
    };
    let started = client
        .start(
            "provisionAfterPayment",
            &payload,
            StartOptions::default().retry_policy(
                RetryPolicy::new()
                    .max_attempts(3)
                    .initial_interval(Duration::from_millis(200)),
            ),
        )
        .await?;
    println!("started run {}", started.id);

    let run = client
        .wait_for_run(&started.id, Duration::from_secs(12))
        .await?;
    println!(
        "run {} is {} after {} attempt(s); result {}",
        run.id,
        run.status,
        run.attempt,
        run.result.clone().unwrap_or_default()
    );
    for attempt in &run.attempts {
        let how = attempt
            .failure
            .as_ref()
            .map_or_else(|| "ok".to_owned(), |f| format!("failed: {}", f.message));
        println!(
            "  attempt {} on {}: {how}",
            attempt.number, attempt.worker_id
        );
    }
    for step in &run.steps {
        println!("  step {} recorded by attempt {}", step.id, step.attempt);
    }

    support::check(
        failures,
        run.status == RunStatus::Completed,
        "the run completed",
    );
    support::check(failures, run.attempt == 2, "it took exactly two attempts");
    support::check(
        failures,
        run.result == Some(json!({ "provisioned": true })),
        "the result is {\"provisioned\": true}",
    );
    let first_failure = run.attempts.first().and_then(|a| a.failure.as_ref());
    support::check(
        failures,
        first_failure.is_some_and(|f| f.message.contains("timed out") && !f.non_retryable),
        "attempt 1 failed with the transient provisioning error",
    );
    let step_ids: Vec<&str> = run.steps.iter().map(|s| s.id.as_str()).collect();
    support::check(
        failures,
        step_ids
            == [
                "verify-payment",
                "provision-customer-resources",
                "enable-plan",
                "send-receipt",
            ],
        "all four steps are recorded, in order",
    );
    support::check(
        failures,
        run.step("verify-payment").is_some_and(|s| s.attempt == 1),
        "verify-payment was recorded by attempt 1",
    );
    support::check(
        failures,
        calls(&format!("verify:{}", payload.payment_id)) == 1,
        "verify-payment executed exactly once (replayed on the retry)",
    );
    support::check(
        failures,
        calls(&format!("provision:{}", payload.customer_id)) == 2,
        "provisioning executed twice (failed once, then succeeded)",
    );
    support::check(
        failures,
        calls(&format!("plan:{}", payload.customer_id)) == 1,
        "the plan was enabled once",
    );
    let email = format!("billing+{suffix}@example.com");
    support::check(
        failures,
        calls(&format!("receipt:{email}")) == 1,
        "one receipt was sent",
    );
    Ok(())
}

#[tokio::main]
async fn main() {
    support::run_example(
        "payment_provisioning",
        |client| {
            Some(
                Worker::builder(client.clone())
                    .concurrency(4)
                    .shutdown_grace(Duration::from_secs(5))
                    .job("provisionAfterPayment", provision_after_payment)
                    .build()
                    .start(),
            )
        },
        scenario,
    )
    .await;
}
