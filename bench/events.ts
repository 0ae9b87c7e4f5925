import { randomBytes } from "node:crypto";
import { loadavg } from "node:os";
import { and, count, eq, gt } from "drizzle-orm";
import { events } from "../edge/db/schema/index.js";
import type { NodeEdge } from "../edge/node.js";
import { recordEvent } from "../edge/services/events/record.js";
import { IMAGES_ROOT, TEMPLATE } from "../test/helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../test/helpers/agent-process.js";
import { newTeamKey, startEdgeForAgent } from "../test/helpers/edge-stack.js";
import { startWebhookReceiver } from "../test/helpers/webhook-receiver.js";
import { type Benchmark, type BenchRow, summarize } from "./stats.js";

/**
 * Events and webhooks (issue 22), on the real stack: a namespace-runtime agent, the Node edge in this
 * process (PGlite in memory), a webhook receiver on loopback.
 * - Events written per second under a create/kill storm (4 clients, each creating and killing
 *   sandboxes back to back): every sandbox writes created, running and killed, each in the
 *   transaction of its state change, with one webhook subscribed (so each event also queues a
 *   delivery). And the writer alone: recordEvent in its own transaction, no agent in the way.
 * - Webhook latency from the event (its createdAt) to the receiver having the body, with the edge's
 *   default delivery interval (WRENN_WEBHOOK_INTERVAL_MS=500): the loop polls, so half the interval
 *   is the expected wait.
 * Each figure is the median of 5 rounds, with the rounds' min–max.
 */

const ROUNDS = 5;
const STORM_SANDBOXES = 16;
const STORM_CLIENTS = 4;
const LATENCY_SANDBOXES = 8;
const RAW_EVENTS = 500;

async function call(edge: NodeEdge, key: string, method: string, path: string, json?: unknown): Promise<Response> {
  return fetch(`${edge.url}${path}`, {
    method,
    headers: { "x-api-key": key, ...(json !== undefined ? { "content-type": "application/json" } : {}) },
    ...(json !== undefined ? { body: JSON.stringify(json) } : {}),
  });
}

async function createAndKill(edge: NodeEdge, key: string): Promise<string> {
  const made = await call(edge, key, "POST", "/v1/sandboxes", { template: TEMPLATE, timeoutSec: 300 });
  if (made.status !== 201) throw new Error(`create: ${made.status} ${await made.text()}`);
  const { id } = (await made.json()) as { id: string };
  const killed = await call(edge, key, "DELETE", `/v1/sandboxes/${id}`);
  if (killed.status !== 204) throw new Error(`kill: ${killed.status} ${await killed.text()}`);
  return id;
}

const range = (xs: number[], digits = 0) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;

export const benchmark: Benchmark = {
  name: "events",
  description: "events written per second under a create/kill storm; webhook delivery latency event → receiver",
  async run() {
    const adminKey = `wrn_bench_admin_${randomBytes(16).toString("hex")}`;
    const receiver = await startWebhookReceiver();
    let agent: AgentProcess | undefined;
    let edge: NodeEdge | undefined;
    try {
      agent = await startAgentProcess({ runtime: "namespace", namespaceOnly: true, rootDir: IMAGES_ROOT });
      edge = await startEdgeForAgent(agent, {
        adminKey,
        env: { WRENN_WEBHOOKS_ALLOW_PRIVATE: "true", WRENN_RECONCILE_INTERVAL_SEC: "0", WRENN_RATE_LIMIT_PER_SEC: "0" },
      });
      const key = await newTeamKey(edge, adminKey, "bench", `bench-events-${randomBytes(3).toString("hex")}`);
      const teamId = ((await (await call(edge, key, "GET", "/v1/teams/me")).json()) as { id: string }).id;
      const hook = await call(edge, key, "POST", "/v1/webhooks", { url: `${receiver.url}/bench` });
      if (hook.status !== 201) throw new Error(`webhook: ${hook.status} ${await hook.text()}`);
      const hookId = ((await hook.json()) as { id: string }).id;
      const db = edge.database.db;
      const lastId = async () =>
        (
          await db
            .select({ id: events.id })
            .from(events)
            .orderBy(events.id)
            .then((rows) => rows.at(-1))
        )?.id ?? 0;
      await createAndKill(edge, key); // warm-up: the image's first overlay, PGlite's plans

      // 1. The storm.
      const stormRates: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const from = await lastId();
        let next = 0;
        const t0 = performance.now();
        await Promise.all(
          Array.from({ length: STORM_CLIENTS }, async () => {
            while (next < STORM_SANDBOXES) {
              next++;
              await createAndKill(edge as NodeEdge, key);
            }
          }),
        );
        const seconds = (performance.now() - t0) / 1000;
        const [written] = await db
          .select({ n: count() })
          .from(events)
          .where(and(eq(events.teamId, teamId), gt(events.id, from)));
        stormRates.push((written?.n ?? 0) / seconds);
      }

      // 2. The writer alone.
      const rawRates: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const t0 = performance.now();
        for (let i = 0; i < RAW_EVENTS; i++) {
          await db.transaction((tx) =>
            recordEvent(tx, { teamId, type: "sandbox.updated", sandboxId: "b".repeat(20), data: { i } }),
          );
        }
        rawRates.push(RAW_EVENTS / ((performance.now() - t0) / 1000));
      }
      // Let the loop send the storm's and the writer's deliveries before latency is measured.
      const quiet = Date.now() + 120_000;
      while (Date.now() < quiet) {
        const pending = await call(edge, key, "GET", `/v1/webhooks/${hookId}/deliveries?status=pending&limit=1`);
        if (((await pending.json()) as { deliveries: unknown[] }).deliveries.length === 0) break;
        await new Promise((r) => setTimeout(r, 500));
      }

      // 3. Latency, event → receiver.
      const p50s: number[] = [];
      const p95s: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const latencies: number[] = [];
        for (let i = 0; i < LATENCY_SANDBOXES; i++) {
          const id = await createAndKill(edge, key);
          const got = await receiver.waitFor(
            (h) => h.path === "/bench" && h.body.includes(id) && h.body.includes('"type":"sandbox.killed"'),
            30_000,
          );
          const arrived = performance.timeOrigin + got.at;
          const event = JSON.parse(got.body) as { createdAt: string };
          latencies.push(arrived - Date.parse(event.createdAt));
        }
        const s = summarize(latencies);
        p50s.push(s.median);
        p95s.push(s.p95);
      }

      const storm = summarize(stormRates);
      const raw = summarize(rawRates);
      const p50 = summarize(p50s);
      const p95 = summarize(p95s);
      const rows: BenchRow[] = [
        {
          name: `events written under a create/kill storm (${STORM_CLIENTS} clients × ${STORM_SANDBOXES} sandboxes; rounds ${range(stormRates, 1)})`,
          unit: "events/s",
          value: storm.median,
          n: ROUNDS,
        },
        {
          name: `recordEvent alone, one transaction each, 1 webhook subscribed (rounds ${range(rawRates)})`,
          unit: "events/s",
          value: raw.median,
          n: ROUNDS,
        },
        {
          name: `webhook latency p50, event → loopback receiver (rounds ${range(p50s)})`,
          unit: "ms",
          value: p50.median,
          n: ROUNDS,
        },
        {
          name: `webhook latency p95, event → loopback receiver (rounds ${range(p95s)})`,
          unit: "ms",
          value: p95.median,
          n: ROUNDS,
        },
      ];
      return {
        title: "Events and webhooks (namespace runtime, PGlite)",
        rows,
        notes: [
          "Each row is the median of 5 rounds; the rounds' min–max is in the name.",
          "The storm's rate is bounded by sandbox creation (the agent's start path), not by the event writes: each sandbox writes 3 events (created, running, killed) in the transactions of its changes.",
          "Latency includes the delivery loop's polling (WRENN_WEBHOOK_INTERVAL_MS=500 by default: about 250 ms expected wait) and the HMAC signing.",
          `Load average when it ran: ${loadavg()
            .map((l) => l.toFixed(2))
            .join(", ")}; the machine was shared with other work.`,
        ],
      };
    } finally {
      await edge?.close().catch(() => {});
      await agent?.stop().catch(() => {});
      await receiver.close();
    }
  },
};
