/**
 * The TypeScript SDK for StackShift durable jobs.
 *
 * ```ts
 * import { StackShift } from '@stackshift-cloud/jobs'
 *
 * const stackshift = new StackShift({ apiKey: process.env.STACKSHIFT_API_KEY! })
 *
 * stackshift.job<{ paymentId: string; customerId: string }>('provisionAfterPayment', async ({ payload, step }) => {
 *   const payment = await step.run('verify-payment', () => verifyPayment(payload.paymentId))
 *   if (payment.status !== 'paid') throw new Error('Payment is not complete')
 *   await step.run('enable-plan', () => enablePaidPlan(payload.customerId))
 *   return { provisioned: true }
 * })
 *
 * const worker = stackshift.work({ queues: ['payments'] })
 * await stackshift.start('provisionAfterPayment', { paymentId: 'pay_1', customerId: 'cus_1' }, {
 *   queueName: 'payments', idempotencyKey: 'provision:pay_1', idempotencyTtl: '30d',
 * })
 * ```
 *
 * Guarantees: code inside a step that has not completed runs at least once; each step's
 * recorded result and the run's result are recorded exactly once. `step.run` resolves only
 * once the server stored the step's result.
 *
 * @module
 */

export { StackShift, Queue, DEFAULT_ENDPOINT, SDK_VERSION } from "./client.js";
export type { StackShiftOptions, StartOptions, ListRunsOptions, JobOptions, JobDefinition } from "./client.js";
export { Step, Occurrences } from "./context.js";
export type { JobContext, Handler, StepOptions } from "./context.js";
export { Worker, DEFAULT_CONCURRENCY, DEFAULT_POLL_WAIT_MS, DEFAULT_SHUTDOWN_GRACE_MS } from "./worker/worker.js";
export type { WorkerOptions } from "./worker/worker.js";
export type { Logger } from "./worker/log.js";
export { parseDuration, toMillis } from "./duration.js";
export type { DurationInput } from "./duration.js";
export { isFinal, FINAL_STATUSES } from "./run.js";
export type {
  Run,
  RunStatus,
  RunPage,
  StartedRun,
  Failure,
  AttemptInfo,
  StepInfo,
  StepKind,
  RetryPolicy,
  TimelineEntry,
  LogEntry,
  LogLevel,
  RunWait,
} from "./run.js";
export { State, Lock } from "./state.js";
export type { StateEntry, StateKey, KeyPage, SetOptions, IncrementOptions, LockOptions, ListKeysOptions } from "./state.js";
export { Schedules } from "./schedules.js";
export type { Schedule, CatchUp, CreateScheduleOptions, CreatedSchedule, SchedulePage } from "./schedules.js";
export { Triggers, TriggerDeclarationError, triggeredEvent } from "./triggers.js";
export type { TriggeredEvent, TriggerDeclaration, TriggerRunOptions, CreateTriggerOptions, EventTrigger, CreatedTrigger, TriggerPage } from "./triggers.js";
export { ChildFailedError, childResult, MAX_CHILDREN } from "./children.js";
export type { ChildRun, ChildOutcome, ChildStatus } from "./children.js";
export type { WaitItem, ItemResult, AnyResult, AllResult, CombinedWaitOptions } from "./waits.js";
export { Events } from "./events.js";
export type { Event, PublishOptions, PublishedEvent, ListEventsOptions, EventPage } from "./events.js";
export type { QueueConfig, ConfigureQueueOptions, QueueInfo, QueueStats, QueuePage, RateLimit } from "./queues.js";
export { RunLogger } from "./worker/runlog.js";
export type { WaitForEventOptions } from "./worker/suspend.js";
export {
  StackShiftError,
  InvalidArgumentError,
  NotFoundError,
  AlreadyExistsError,
  FailedPreconditionError,
  ConflictError,
  UnauthenticatedError,
  PermissionDeniedError,
  ResourceExhaustedError,
  AbortedError,
  UnavailableError,
  DeadlineExceededError,
  CancelledError,
  NonRetryableError,
  StepFailedError,
  AttemptInterruptedError,
  isNonRetryable,
} from "./errors.js";
export type { StatusCode } from "./errors.js";

/** The generated protobuf messages and service descriptors of `stackshift.v1`. */
export * as proto from "./proto.js";
