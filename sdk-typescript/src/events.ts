/**
 * Events: {@link Events} publishes events (which resume the runs waiting for them) and lists
 * stored events; {@link Event} is an event as stored, as `step.waitForEvent` returns it.
 *
 * ```ts
 * const published = await stackshift.events.publish('payment.confirmed', { amount: 4200 }, {
 *   key: 'pay_123',          // the correlation key the run waits for
 *   id: 'stripe:evt_1N2b3c', // a webhook delivered twice is stored once
 * })
 * console.log(`resumed ${published.resumedRunCount} run(s)`)
 * ```
 *
 * @module
 */

import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { EventsService, Event as PbEvent } from "./gen/stackshift/v1/events_pb.js";
import { decodeJson, encodeJson } from "./json.js";
import type { CallRunner } from "./call.js";

/** A published event as stored by the server. */
export interface Event<T = unknown> {
  /** The event's id (given at publish, or assigned by the server). */
  id: string;
  /** The event's name, e.g. `payment.confirmed`. */
  name: string;
  /** The correlation key; `''` when the event has none. */
  key: string;
  /** The payload (decoded JSON; `null` when published without one). */
  payload: T;
  /** When the server stored the event. */
  publishedAt: Date;
}

/** Options of {@link Events.publish}. */
export interface PublishOptions {
  /** Deduplication id (1-256 characters): a repeated id stores nothing and resumes nothing. */
  id?: string;
  /** Correlation key: the event resumes only waits for the same key. Default: none. */
  key?: string;
}

/** What {@link Events.publish} did. */
export interface PublishedEvent<T = unknown> {
  /** The stored event (for a duplicate: the one stored first under this id). */
  event: Event<T>;
  /** True when the id was already stored: nothing was stored and no run resumed. */
  duplicate: boolean;
  /** How many waiting runs the event resumed (runs that reach their wait later take it from their inbox). */
  resumedRunCount: number;
  /** The ids of the resumed runs, at most 100, oldest wait first. */
  resumedRunIds: string[];
  /** The ids of the runs the event's triggers started (empty for a duplicate). */
  startedRunIds: string[];
}

/** Filters of {@link Events.list}. Results are newest first. */
export interface ListEventsOptions {
  /** Only events with this name. */
  name?: string;
  /** Only events with this correlation key. */
  key?: string;
  /** Only events published at or after this time. */
  publishedAfter?: Date;
  /** Only events published before this time. */
  publishedBefore?: Date;
  /** 1 to 1000 (default 50). */
  pageSize?: number;
  /** `nextPageToken` of the previous page. */
  pageToken?: string;
}

/** One page of {@link Events.list}. */
export interface EventPage {
  events: Event[];
  /** Pass as `pageToken` for the next page; undefined at the end. */
  nextPageToken?: string;
}

/** A wire event as an {@link Event}. */
export function eventFromProto(e: PbEvent): Event {
  return {
    id: e.id,
    name: e.name,
    key: e.correlationKey,
    payload: decodeJson(e.payload, "event payload"),
    publishedAt: e.publishedAt === undefined ? new Date(0) : timestampDate(e.publishedAt),
  };
}

/**
 * The event a wait journaled, or `null` when it timed out. The journal's JSON is
 * `{"timedOut":false,"event":{"id","name","correlationKey","payload","publishedAt":<epoch ms>}}`
 * or `{"timedOut":true}`.
 */
export function eventFromJournal(output: unknown): Event | null {
  if (typeof output !== "object" || output === null) throw new Error("the journaled wait result is not an object");
  const o = output as { timedOut?: unknown; event?: Record<string, unknown> };
  if (o.timedOut === true || o.event === undefined) return null;
  const e = o.event;
  return {
    id: String(e["id"] ?? ""),
    name: String(e["name"] ?? ""),
    key: typeof e["correlationKey"] === "string" ? e["correlationKey"] : "",
    payload: e["payload"] ?? null,
    publishedAt: new Date(typeof e["publishedAt"] === "number" ? e["publishedAt"] : 0),
  };
}

/** Publishes and lists events: `stackshift.events`. */
export class Events {
  /** @internal use `stackshift.events` */
  constructor(
    private readonly client: Client<typeof EventsService>,
    private readonly call: CallRunner,
  ) {}

  /**
   * Publishes the event `name` with `payload` (any JSON value). In the same transaction, every
   * run waiting for it (same name, same key) is resumed, and every matching trigger starts a
   * run (`startedRunIds`); a run that reaches its wait later finds the event in its inbox.
   */
  async publish<T = unknown>(name: string, payload: T, options: PublishOptions = {}): Promise<PublishedEvent<T>> {
    const response = await this.call((opts) =>
      this.client.publishEvent(
        { name, payload: encodeJson(payload, "event payload"), id: options.id ?? "", correlationKey: options.key ?? "" },
        opts,
      ),
    );
    if (response.event === undefined) throw new Error("unexpected response from server: PublishEvent without an event");
    return {
      event: eventFromProto(response.event) as Event<T>,
      duplicate: response.duplicate,
      resumedRunCount: Number(response.resumedRunCount),
      resumedRunIds: [...response.resumedRunIds],
      startedRunIds: [...response.startedRunIds],
    };
  }

  /** One page of stored events, newest first. */
  async list(options: ListEventsOptions = {}): Promise<EventPage> {
    const response = await this.call((opts) =>
      this.client.listEvents(
        {
          name: options.name ?? "",
          correlationKey: options.key ?? "",
          pageSize: options.pageSize ?? 0,
          pageToken: options.pageToken ?? "",
          ...(options.publishedAfter ? { publishedAfter: timestampFromDate(options.publishedAfter) } : {}),
          ...(options.publishedBefore ? { publishedBefore: timestampFromDate(options.publishedBefore) } : {}),
        },
        opts,
      ),
    );
    const page: EventPage = { events: response.events.map(eventFromProto) };
    if (response.nextPageToken !== "") page.nextPageToken = response.nextPageToken;
    return page;
  }
}
