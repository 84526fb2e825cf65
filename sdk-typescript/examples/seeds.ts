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
declare function publishProgress(importId: string, processed: number): Promise<void>;
declare const event: { id: string; type: string };

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

  stackshift.job<{ fileId: string }>('processUpload', async ({ payload, step, state }) => {
    const file = await step.run('download-file', () => downloadFile(payload.fileId))
    const parsed = await step.run('parse-file', () => parseCsv(file))

    for (const batch of parsed.batches) {
      await importRows(batch)
      await state.increment(`files:${payload.fileId}:rows`, batch.length)
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

/** Seed 004: the state store inside a handler (progress, TTL markers, counters) and webhook dedupe. */
export async function seed004(stackshift: StackShift): Promise<void> {
  stackshift.job<{ importId: string }>('importProgress', async ({ payload, state }) => {
    const progressKey = `imports:${payload.importId}:progress`

    await state.set(progressKey, { processed: 100, total: 500 })

    const progress = await state.get<{ processed: number; total: number }>(progressKey)

    if (progress.processed === progress.total) {
      await state.delete(progressKey)
    }

    await state.set('webhooks:stripe:evt_123', { processed: true }, {
      expiresAt: new Date(Date.now() + 7 * 24 * 60 * 60 * 1000),
    })

    const processed = await state.increment(`imports:${payload.importId}:processed`)

    if (processed % 100 === 0) {
      await publishProgress(payload.importId, processed)
    }
  })

  await stackshift.queue('webhooks').enqueue(
    'processStripeWebhook',
    { eventId: event.id, type: event.type },
    { idempotencyKey: `stripe:${event.id}` }
  )
}
