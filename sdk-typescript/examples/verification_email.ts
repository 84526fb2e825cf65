/**
 * Seed "Send verification email": enqueue `sendVerificationEmail` on the `emails` queue with an
 * idempotency key, enqueue it again with the same key, and check that the second call is a
 * duplicate of the same run and that exactly one email went out.
 *
 * Run against a server at STACKSHIFT_ENDPOINT (default http://127.0.0.1:7447):
 *   cd sdk-typescript && npm run build:dev && node build/examples/verification_email.js
 */
import { StackShift } from "../src/index.js";
import { check, finish, uniqueSuffix } from "./check.js";

const outbox = new Map<string, number>();

/** Stands in for the mail provider's API. */
async function sendMail(to: string, subject: string): Promise<string> {
  outbox.set(to, (outbox.get(to) ?? 0) + 1);
  console.log(`  mail provider: sent ${JSON.stringify(subject)} to ${to}`);
  return `msg_${uniqueSuffix()}`;
}

const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY });

stackshift.job<{ userId: string; email: string }>("sendVerificationEmail", async ({ payload, step }) => {
  const messageId = await step.run("send-verification-email", () => sendMail(payload.email, "Verify your email address"));
  return { messageId };
});

const worker = stackshift.work({ queues: ["emails"], shutdownGrace: "5s" });
try {
  const userId = `user_${uniqueSuffix()}`;
  const email = `${userId}@example.com`;

  // The seed, verbatim apart from the unique user id:
  const first = await stackshift.queue("emails").enqueue(
    "sendVerificationEmail",
    { userId, email },
    { idempotencyKey: `verify:${userId}` },
  );
  const second = await stackshift.queue("emails").enqueue(
    "sendVerificationEmail",
    { userId, email },
    { idempotencyKey: `verify:${userId}` },
  );
  const run = await stackshift.waitForRun(first.id, { timeout: "20s" });
  console.log(`run ${run.id} is ${run.status}; result ${JSON.stringify(run.result)}`);

  check(!first.duplicate, "the first enqueue created a run");
  check(second.duplicate && second.id === first.id, "the second enqueue is a duplicate of the same run");
  check(run.status === "completed", "the run completed");
  check(run.queue === "emails", "the run ran on the emails queue");
  check(outbox.get(email) === 1, "exactly one email was sent");
} finally {
  await worker.shutdown();
}
finish("verification_email");
