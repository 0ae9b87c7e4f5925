import { isProcessDatabase } from "../../db/client.js";
import type { TeamContext } from "../context.js";
import { type EventFilter, eventsAfter, latestEventId } from "./list.js";
import { type EventView, parseEventId } from "./view.js";

/** Row ids below the last one sent that a poll looks at again (see `followEvents`). */
const lateWindow = 100;
const pageSize = 200;

/**
 * Whether this edge can hold a stream open and poll behind it: on Node the database outlives the
 * request; on Workers the request's Neon Pool closes when the handler returns, so the stream there
 * is long polling (`waitForEvents`) and the client reconnects with `Last-Event-ID`.
 */
export function canFollowLive(ctx: TeamContext): boolean {
  return isProcessDatabase(ctx.db);
}

/** Where a stream starts: after `Last-Event-ID` (or `?after=`) when given, else after the newest event now. */
export async function streamStart(ctx: TeamContext, filter: EventFilter, lastEventId?: string): Promise<number> {
  if (lastEventId !== undefined && lastEventId !== "") return parseEventId(lastEventId, "Last-Event-ID");
  return latestEventId(ctx, filter);
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });

/**
 * Yields the caller's events after row id `afterId` as they are committed, polling every `pollMs`,
 * until `signal` aborts. Ids are handed out when a row is inserted, not when its transaction commits,
 * so a slower transaction can commit an id below one already sent: each poll looks again at the
 * last `lateWindow` ids and sends what it had not (each event still goes out once per stream).
 */
export async function* followEvents(
  ctx: TeamContext,
  filter: EventFilter,
  afterId: number,
  options: { pollMs: number; signal: AbortSignal },
): AsyncGenerator<EventView> {
  let last = afterId;
  const sent = new Set<number>();
  while (!options.signal.aborted) {
    const floor = Math.max(afterId, last - lateWindow);
    const batch = await eventsAfter(ctx.db, ctx.principal, filter, floor, pageSize);
    for (const event of batch) {
      const id = Number(event.id.slice(4));
      if (sent.has(id)) continue;
      sent.add(id);
      if (id > last) last = id;
      yield event;
    }
    for (const id of sent) if (id <= last - lateWindow) sent.delete(id);
    if (batch.length < pageSize) await sleep(options.pollMs, options.signal);
  }
}

/**
 * Long polling for runtimes that cannot hold a stream (Workers): waits up to `waitMs` for events after
 * `afterId` and returns them (possibly none); the client asks again from the last one.
 */
export async function waitForEvents(
  ctx: TeamContext,
  filter: EventFilter,
  afterId: number,
  options: { waitMs: number; pollMs: number; signal?: AbortSignal },
): Promise<EventView[]> {
  const deadline = Date.now() + options.waitMs;
  for (;;) {
    const batch = await eventsAfter(ctx.db, ctx.principal, filter, afterId, pageSize);
    if (batch.length > 0 || Date.now() >= deadline || options.signal?.aborted) return batch;
    await sleep(Math.min(options.pollMs, Math.max(0, deadline - Date.now())), options.signal);
  }
}
