//! Payment provisioning that waits for the payment provider's webhook: the job creates an
//! invoice, then waits (durably, without holding a worker slot) for the event
//! `payment.confirmed` correlated by the payment id, then provisions the customer.
//!
//! It runs the two orders the webhook can arrive in:
//! 1. **Before the wait is reached**: the event is published right after the run starts,
//!    before any worker ran the handler. The run's inbox keeps it, and the wait returns it
//!    at once (the race that loses events in systems with live subscriptions only).
//! 2. **After the wait is reached**: the run is `waiting` when the event is published; the
//!    publish resumes exactly that run (and reports it).
//!
//! Checks: both runs completed on attempt 1 with the confirmed amount; the early publish
//! resumed no run (nothing was waiting yet) and the late one resumed exactly run 2; an
//! event for another payment id resumed nothing; the webhook delivered twice was stored
//! once; `create-invoice` ran once per run (replayed after the resume).
//!
//! Run against a server at `STACKSHIFT_ENDPOINT` (default `http://127.0.0.1:7447`):
//! `cargo run -p stackshift --example payment_confirmation`. Exits with status 1 when the
//! outcome is wrong.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use stackshift::{
    JobContext, PublishEvent, RunStatus, StackShift, StartOptions, StepKind, WaitResult, Worker,
    non_retryable,
};

/// The job's payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    payment_id: String,
    customer_id: String,
}

/// The payload of `payment.confirmed`, as the payment provider's webhook sends it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentConfirmed {
    payment_id: String,
    amount: u64,
}

/// The job's result.
#[derive(Debug, Serialize)]
struct Provisioned {
    provisioned: bool,
    amount: u64,
}

/// Call counters of the stand-in services, per `<service>:<id>`.
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

async fn create_invoice(payment_id: &str) -> anyhow::Result<String> {
    counter(&format!("invoice:{payment_id}")).fetch_add(1, Ordering::SeqCst);
    println!("  billing: invoice created for {payment_id}");
    Ok(format!("inv_{payment_id}"))
}

async fn provision_customer_resources(customer_id: &str) -> anyhow::Result<String> {
    counter(&format!("provision:{customer_id}")).fetch_add(1, Ordering::SeqCst);
    println!("  infrastructure: provisioned {customer_id}");
    Ok(format!("cl_{customer_id}"))
}

/// The handler: invoice, wait for the payment, provision.
async fn provision_after_payment(ctx: JobContext<Order>) -> anyhow::Result<Provisioned> {
    let order = &ctx.payload;
    ctx.step
        .run("create-invoice", || create_invoice(&order.payment_id))
        .await?;

    println!(
        "handler: run {} waits for payment {}",
        ctx.run_id, order.payment_id
    );
    let payment: PaymentConfirmed = match ctx
        .step
        .wait_for_event(
            "wait-for-payment",
            "payment.confirmed",
            &order.payment_id,
            "1h",
        )
        .await?
    {
        WaitResult::Received(event) => event.payload_as()?,
        WaitResult::TimedOut => {
            return Err(non_retryable(
                "the payment was not confirmed within an hour",
            ));
        }
    };
    println!(
        "handler: payment {} confirmed ({})",
        order.payment_id, payment.amount
    );

    ctx.step
        .run("provision-customer-resources", || {
            provision_customer_resources(&order.customer_id)
        })
        .await?;
    Ok(Provisioned {
        provisioned: true,
        amount: payment.amount,
    })
}

fn confirmed(payment_id: &str, amount: u64) -> PublishEvent {
    PublishEvent::new(
        "payment.confirmed",
        PaymentConfirmed {
            payment_id: payment_id.to_owned(),
            amount,
        },
    )
    .correlation_key(payment_id)
    // The provider's event id: a webhook delivered twice is stored once.
    .id(format!("provider:{payment_id}"))
}

fn order(suffix: &str, n: u8) -> Order {
    Order {
        payment_id: format!("pay_{suffix}_{n}"),
        customer_id: format!("cus_{suffix}_{n}"),
    }
}

fn start_worker(client: &StackShift) -> stackshift::WorkerHandle {
    Worker::builder(client.clone())
        .concurrency(2)
        .shutdown_grace(Duration::from_secs(5))
        .job("provisionAfterPaymentConfirmed", provision_after_payment)
        .build()
        .start()
}

async fn scenario(client: &StackShift, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let suffix = &suffix[suffix.len() - 10..];
    let job = "provisionAfterPaymentConfirmed";

    // 1. The webhook arrives before the run reaches its wait (no worker runs it yet).
    let early = order(suffix, 1);
    let run1 = client.start(job, &early, StartOptions::default()).await?;
    println!("started run {} (payment {})", run1.id, early.payment_id);
    let published = client
        .events()
        .publish(confirmed(&early.payment_id, 4_200))
        .await?;
    println!(
        "webhook for {} published early: resumed {} run(s)",
        early.payment_id, published.resumed_run_count
    );
    support::check(
        failures,
        published.resumed_run_count == 0,
        "the early event resumed nothing (the run was not waiting yet)",
    );
    let worker = start_worker(client);
    let done1 = client
        .wait_for_run(&run1.id, Duration::from_secs(30))
        .await?;
    report(&done1);

    // 2. The webhook arrives after the run reached its wait.
    let late = order(suffix, 2);
    let run2 = client.start(job, &late, StartOptions::default()).await?;
    println!("started run {} (payment {})", run2.id, late.payment_id);
    let waiting = wait_until_waiting(client, &run2.id).await?;
    support::check(failures, waiting, "run 2 is waiting for its payment");
    let other = client
        .events()
        .publish(confirmed(&format!("pay_{suffix}_unrelated"), 1))
        .await?;
    support::check(
        failures,
        other.resumed_run_count == 0,
        "an event for another payment id resumed nothing",
    );
    let published = client
        .events()
        .publish(confirmed(&late.payment_id, 9_900))
        .await?;
    println!(
        "webhook for {} published late: resumed {:?}",
        late.payment_id, published.resumed_run_ids
    );
    support::check(
        failures,
        published.resumed_run_ids == [run2.id.clone()],
        "the late event resumed exactly run 2",
    );
    let again = client
        .events()
        .publish(confirmed(&late.payment_id, 9_900))
        .await?;
    support::check(
        failures,
        again.duplicate && again.resumed_run_count == 0,
        "the webhook delivered twice was stored once",
    );
    let done2 = client
        .wait_for_run(&run2.id, Duration::from_secs(30))
        .await?;
    report(&done2);
    worker.shutdown().await;

    for (run, o, amount) in [(&done1, &early, 4_200), (&done2, &late, 9_900)] {
        let n = if run.id == done1.id { 1 } else { 2 };
        support::check(
            failures,
            run.status == RunStatus::Completed
                && run.result == Some(json!({ "provisioned": true, "amount": amount })),
            &format!("run {n} completed with amount {amount}"),
        );
        support::check(
            failures,
            run.attempt == 1 && run.attempts.len() == 1,
            &format!("run {n} took one attempt (waiting is not a retry)"),
        );
        support::check(
            failures,
            run.step("wait-for-payment")
                .is_some_and(|s| s.kind == StepKind::Event),
            &format!("run {n}'s timeline shows the event it received"),
        );
        support::check(
            failures,
            calls(&format!("invoice:{}", o.payment_id)) == 1,
            &format!("run {n} created its invoice once"),
        );
    }
    Ok(())
}

/// Waits (up to 30 s) until the run is suspended on its payment wait.
async fn wait_until_waiting(client: &StackShift, run_id: &str) -> anyhow::Result<bool> {
    for _ in 0..300 {
        let run = client.get_run(run_id).await?;
        if run.status == RunStatus::Waiting {
            if let Some(w) = &run.wait {
                println!(
                    "run {run_id} is waiting at {} for {} {}",
                    w.step_id,
                    w.event_name.as_deref().unwrap_or("?"),
                    w.correlation_key.as_deref().unwrap_or("")
                );
            }
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

fn report(run: &stackshift::Run) {
    println!(
        "run {} is {} after {} attempt(s); result {}",
        run.id,
        run.status,
        run.attempt,
        run.result.clone().unwrap_or_default()
    );
    for step in &run.steps {
        println!(
            "  {:?} {} recorded by attempt {}",
            step.kind, step.id, step.attempt
        );
    }
}

#[tokio::main]
async fn main() {
    support::run_example("payment_confirmation", |_| None, scenario).await;
}
