/**
 * Payment provisioning that waits for the payment provider's webhook: the job creates an
 * invoice, then waits (durably, without holding a worker slot) for the event
 * `payment.confirmed` correlated by the payment id, then provisions the customer.
 *
 * It runs the two orders the webhook can arrive in:
 * 1. **Before the wait is reached**: the event is published right after the run starts,
 *    before any worker ran the handler. The run's inbox keeps it, and the wait returns it at
 *    once (the race that loses events in systems with live subscriptions only).
 * 2. **After the wait is reached**: the run is `waiting` when the event is published; the
 *    publish resumes exactly that run (and reports it).
 * A third run waits with a short timeout and gets `null` from `step.waitForEvent`.
 *
 * Checks: both runs completed on attempt 1 with the confirmed amount; the early publish resumed
 * no run (nothing was waiting yet) and the late one resumed exactly run 2; an event for another
 * payment id resumed nothing; the webhook delivered twice was stored once; `create-invoice` ran
 * once per run (replayed after the resume); the unpaid run failed with "not confirmed".
 *
 *   cd sdk-typescript && npm run build:dev && node build/examples/payment_confirmation.js
 */
import { NonRetryableError, StackShift, type Run } from "../src/index.js";
import { check, finish, uniqueSuffix } from "./check.js";

interface Order {
  paymentId: string;
  customerId: string;
  /** How long to wait for the payment (ms or '1h'-style). */
  timeout?: number | string;
}
interface PaymentConfirmed {
  paymentId: string;
  amount: number;
}

const invoices = new Map<string, number>();

async function createInvoice(paymentId: string): Promise<string> {
  invoices.set(paymentId, (invoices.get(paymentId) ?? 0) + 1);
  console.log(`  billing: invoice created for ${paymentId}`);
  return `inv_${paymentId}`;
}
async function provisionCustomerResources(customerId: string): Promise<string> {
  console.log(`  infrastructure: provisioned ${customerId}`);
  return `cl_${customerId}`;
}

const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY });

stackshift.job<Order>("provisionAfterPaymentConfirmed", async ({ payload, step, runId, log }) => {
  await step.run("create-invoice", () => createInvoice(payload.paymentId));

  console.log(`handler: run ${runId} waits for payment ${payload.paymentId}`);
  const payment = await step.waitForEvent<PaymentConfirmed>("wait-for-payment", {
    event: "payment.confirmed",
    key: payload.paymentId,
    timeout: payload.timeout ?? "1h",
  });
  if (payment === null) throw new NonRetryableError("the payment was not confirmed in time");
  log.info("payment confirmed", { amount: payment.payload.amount });
  console.log(`handler: payment ${payload.paymentId} confirmed (${payment.payload.amount})`);

  await step.run("provision-customer-resources", () => provisionCustomerResources(payload.customerId));
  return { provisioned: true, amount: payment.payload.amount };
});

const confirmed = (paymentId: string, amount: number) =>
  stackshift.events.publish<PaymentConfirmed>("payment.confirmed", { paymentId, amount }, {
    key: paymentId,
    // The provider's event id: a webhook delivered twice is stored once.
    id: `provider:${paymentId}`,
  });

function report(run: Run): void {
  console.log(`run ${run.id} is ${run.status} after ${run.attempt} attempt(s); result ${JSON.stringify(run.result ?? null)}`);
  for (const s of run.steps) console.log(`  ${s.kind} ${s.id} recorded by attempt ${s.attempt}`);
}

async function waitUntilWaiting(runId: string): Promise<boolean> {
  for (let i = 0; i < 300; i++) {
    const run = await stackshift.getRun(runId);
    if (run.status === "waiting") {
      console.log(`run ${runId} is waiting at ${run.wait?.stepId} for ${run.wait?.eventName} ${run.wait?.correlationKey}`);
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const suffix = uniqueSuffix();
const job = "provisionAfterPaymentConfirmed";
const order = (n: number): Order => ({ paymentId: `pay_${suffix}_${n}`, customerId: `cus_${suffix}_${n}` });

// 1. The webhook arrives before the run reaches its wait (no worker runs it yet).
const early = order(1);
const run1 = await stackshift.start(job, early);
console.log(`started run ${run1.id} (payment ${early.paymentId})`);
const published1 = await confirmed(early.paymentId, 4_200);
console.log(`webhook for ${early.paymentId} published early: resumed ${published1.resumedRunCount} run(s)`);
check(published1.resumedRunCount === 0, "the early event resumed nothing (the run was not waiting yet)");

const worker = stackshift.work({ concurrency: 2, shutdownGrace: "5s" });
try {
  const done1 = await stackshift.waitForRun(run1.id, { timeout: "30s" });
  report(done1);

  // 2. The webhook arrives after the run reached its wait.
  const late = order(2);
  const run2 = await stackshift.start(job, late);
  console.log(`started run ${run2.id} (payment ${late.paymentId})`);
  check(await waitUntilWaiting(run2.id), "run 2 is waiting for its payment");
  const other = await confirmed(`pay_${suffix}_unrelated`, 1);
  check(other.resumedRunCount === 0, "an event for another payment id resumed nothing");
  const published2 = await confirmed(late.paymentId, 9_900);
  console.log(`webhook for ${late.paymentId} published late: resumed ${JSON.stringify(published2.resumedRunIds)}`);
  check(JSON.stringify(published2.resumedRunIds) === JSON.stringify([run2.id]), "the late event resumed exactly run 2");
  const again = await confirmed(late.paymentId, 9_900);
  check(again.duplicate && again.resumedRunCount === 0, "the webhook delivered twice was stored once");
  const done2 = await stackshift.waitForRun(run2.id, { timeout: "30s" });
  report(done2);

  // 3. No webhook: the wait times out and the handler gets null.
  const unpaid = order(3);
  const run3 = await stackshift.start(job, { ...unpaid, timeout: "500ms" });
  const done3 = await stackshift.waitForRun(run3.id, { timeout: "30s" });
  report(done3);
  check(done3.status === "failed" && (done3.failure?.message ?? "").includes("not confirmed"), "the unpaid run failed: the wait timed out");

  for (const [n, run, o, amount] of [
    [1, done1, early, 4_200],
    [2, done2, late, 9_900],
  ] as const) {
    check(
      run.status === "completed" && JSON.stringify(run.result) === JSON.stringify({ provisioned: true, amount }),
      `run ${n} completed with amount ${amount}`,
    );
    check(run.attempt === 1 && run.attempts.length === 1, `run ${n} took one attempt (waiting is not a retry)`);
    check(
      run.steps.some((s) => s.id === "wait-for-payment" && s.kind === "event"),
      `run ${n}'s journal shows the event it received`,
    );
    check(invoices.get(o.paymentId) === 1, `run ${n} created its invoice once`);
    check(
      run.logs.some((l) => l.message === "payment confirmed" && l.fields["amount"] === amount),
      `run ${n}'s logs show the confirmed amount`,
    );
  }
  check(done2.timeline.some((t) => t.kind === "EVENT_MATCHED"), "run 2's timeline shows the matched event");
} finally {
  await worker.shutdown();
}
finish("payment_confirmation");
