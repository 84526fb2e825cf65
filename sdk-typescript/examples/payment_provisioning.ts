/**
 * Seed "Payment to provisioning workflow": `provisionAfterPayment` verifies the payment,
 * provisions resources, enables the plan and sends a receipt, each in a step. Provisioning
 * times out on the first attempt; the retry replays `verify-payment` from the journal instead
 * of charging the payment provider again.
 *
 * Checks: the run completed on attempt 2, `verify-payment` ran once, every other step once
 * per successful execution, and the result is `{ provisioned: true }`.
 *
 *   cd sdk-typescript && npm run build:dev && node build/examples/payment_provisioning.js
 */
import { StackShift } from "../src/index.js";
import { check, finish, uniqueSuffix } from "./check.js";

const calls = new Map<string, number>();
const count = (what: string) => calls.set(what, (calls.get(what) ?? 0) + 1);

async function verifyPayment(paymentId: string) {
  count("verifyPayment");
  return { id: paymentId, status: "paid", customerEmail: "ada@example.com" };
}
async function provisionCustomerResources(customerId: string) {
  count("provisionCustomerResources");
  if (calls.get("provisionCustomerResources") === 1) throw new Error(`provisioning API timed out for ${customerId} (simulated)`);
  return { workspace: `ws_${customerId}` };
}
async function enablePaidPlan(customerId: string) {
  count("enablePaidPlan");
  return { customerId, plan: "pro" };
}
async function sendReceipt(email: string) {
  count("sendReceipt");
  return { to: email };
}

const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY });

// The seed, verbatim:
stackshift.job<{ paymentId: string; customerId: string }>('provisionAfterPayment', async ({ payload, step }) => {
  const payment = await step.run('verify-payment', () => verifyPayment(payload.paymentId))

  if (payment.status !== "paid") {
    throw new Error('Payment is not complete')
  }

  await step.run('provision-customer-resources', () => provisionCustomerResources(payload.customerId))
  await step.run('enable-plan', () => enablePaidPlan(payload.customerId))
  await step.run('send-receipt', () => sendReceipt(payment.customerEmail))

  return { provisioned: true }
})

const worker = stackshift.work({ queues: ["payments"], shutdownGrace: "5s" });
try {
  const paymentId = `pay_${uniqueSuffix()}`;
  const started = await stackshift.start(
    "provisionAfterPayment",
    { paymentId, customerId: "cus_42" },
    {
      queueName: "payments",
      idempotencyKey: `provision:${paymentId}`,
      idempotencyTtl: "30d",
      retryPolicy: { maxAttempts: 3, initialInterval: "200ms" },
    },
  );
  const run = await stackshift.waitForRun(started.id, { timeout: "20s" });
  console.log(`run ${run.id} is ${run.status} after ${run.attempt} attempt(s); result ${JSON.stringify(run.result)}`);
  for (const step of run.steps) console.log(`  step ${step.id} recorded by attempt ${step.attempt}`);

  check(run.status === "completed", "the run completed");
  check(run.attempt === 2, "it took exactly two attempts");
  check(JSON.stringify(run.result) === JSON.stringify({ provisioned: true }), "the result is { provisioned: true }");
  check(calls.get("verifyPayment") === 1, "verify-payment ran once (replayed on attempt 2)");
  check(calls.get("provisionCustomerResources") === 2, "provisioning ran twice (failed, then succeeded)");
  check(calls.get("enablePaidPlan") === 1 && calls.get("sendReceipt") === 1, "enable-plan and send-receipt ran once");
  check(run.steps.find((s) => s.id === "verify-payment")?.attempt === 1, "verify-payment was recorded by attempt 1");
} finally {
  await worker.shutdown();
}
finish("payment_provisioning");
