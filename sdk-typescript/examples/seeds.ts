/**
 * The TypeScript seeds (the product documentation's snippets), verbatim, so that `tsc` proves
 * the SDK's API accepts them exactly as written. Type-checked by `npm run build:dev` (and
 * therefore by `npm test`); the functions are never called. The runnable versions of the three
 * flows are verification_email.ts, payment_provisioning.ts and file_import.ts.
 */
import { StackShift } from "../src/index.js";

// Stand-ins for the application functions the seeds call.
declare function verifyPayment(id: string): Promise<{ status: string; customerEmail: string }>;
declare function provisionCustomerResources(customerId: string): Promise<void>;
declare function enablePaidPlan(customerId: string): Promise<void>;
declare function sendReceipt(email: string): Promise<void>;
declare function resizeImage(payload: unknown): Promise<{ url: string }>;
declare function downloadFile(fileId: string): Promise<string>;
declare function parseCsv(file: string): Promise<{ batches: string[][]; totalRows: number }>;
declare function importRows(batch: string[]): Promise<void>;
declare function markFileComplete(fileId: string): Promise<void>;
declare const stripe: { paymentIntents: { capture(id: string): Promise<{ id: string }> } };
declare function provisionWorkspace(userId: string): Promise<void>;
declare const paymentIntentId: string;
declare const userId: string;

/** Seed 003: creating the client and starting a job once. */
export async function seed003(): Promise<void> {
  const stackshift = new StackShift({
    apiKey: process.env.STACKSHIFT_API_KEY!,
  })

  await stackshift.start('send-verification-email',
    { userId: 'user_123', email: 'ada@example.com' },
    {
      queueName: 'emails',
      idempotencyKey: 'verify:user_123',
      idempotencyTtl: '30d',
    }
  )
}

/** Seeds 000/002: the three real-world flows. */
export async function seed000(stackshift: StackShift): Promise<void> {
  await stackshift.queue('emails').enqueue(
    'sendVerificationEmail',
    { userId: 'user_123', email: 'ada@example.com' },
    { idempotencyKey: 'verify:user_123' }
  )

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

  // STATE STORE PENDING: the seed destructures `state` too and calls
  // `await state.increment(`files:${payload.fileId}:rows`, batch.length)` in the loop; both
  // return when the state-store branch adds `state` to the handler context.
  stackshift.job<{ fileId: string }>('processUpload', async ({ payload, step }) => {
    const file = await step.run('download-file', () => downloadFile(payload.fileId))
    const parsed = await step.run('parse-file', () => parseCsv(file))

    for (const batch of parsed.batches) {
      await importRows(batch)
    }

    await step.run('mark-complete', () => markFileComplete(payload.fileId))

    return { rows: parsed.totalRows }
  })
}

/** Seed 001: jobs, runs and steps. */
export async function seed001(stackshift: StackShift): Promise<void> {
  stackshift.job('resizeAvatar', async ({ payload }) => {
    return resizeImage(payload)
  })

  await stackshift.start('resizeAvatar', { imageId: 'img_123' }, {
    queueName: 'media',
    idempotencyKey: 'resize:img_123',
  })

  stackshift.job('chargeAndProvision', async ({ step }) => {
    await step.run('charge-card', async () => {
      return stripe.paymentIntents.capture(paymentIntentId)
    })

    await step.run('provision-plan', async () => {
      return provisionWorkspace(userId)
    })
  })
}
