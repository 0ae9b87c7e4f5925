import { and, asc, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database, DatabaseHandle } from "../../edge/db/client.js";
import { sandboxLogs, sandboxMetrics } from "../../edge/db/schema/index.js";
import { openNodeDatabase } from "../../edge/node/database.js";
import {
  applyTelemetryRetention,
  defaultTelemetryRetention,
  ROLLUP_SECONDS,
} from "../../edge/services/telemetry/retention.js";
import { type PostgresServer, startPostgres } from "../helpers/postgres.js";

/**
 * The metrics rollup and the retention of samples and logs (edge/services/telemetry/retention.ts),
 * on PGlite and on a real PostgreSQL server, with an injected clock and rows written directly: raw
 * samples older than 24 h become 1-minute weighted averages, a minute split across two passes
 * averages as if folded at once, rollups and logs older than 7 days go, newer rows stay, and a pass
 * touches at most `batch` rows.
 */

const HOUR = 3_600_000;
const NOW = new Date("2026-06-10T12:00:00.000Z");
let seq = 0;

function sample(
  sandboxId: string,
  ts: Date,
  cpu: number,
  memUsed: number,
  extra: Partial<typeof sandboxMetrics.$inferInsert> = {},
) {
  return {
    sandboxId,
    resolutionSec: 0,
    ts,
    cpuCount: 2,
    cpuUsedPct: cpu,
    memUsed,
    memTotal: 1_000_000,
    memCache: 100,
    diskUsed: 5000,
    diskTotal: 10_000,
    sampleCount: 1,
    ...extra,
  };
}

function logRow(sandboxId: string, ts: Date) {
  return { sandboxId, ts, level: "info", message: "process 1 started: true", fields: {}, epoch: "test", seq: ++seq };
}

const rowsOf = (db: Database, sandboxId: string) =>
  db
    .select()
    .from(sandboxMetrics)
    .where(eq(sandboxMetrics.sandboxId, sandboxId))
    .orderBy(asc(sandboxMetrics.resolutionSec), asc(sandboxMetrics.ts));

for (const backend of ["pglite", "postgres"] as const) {
  describe(`telemetry retention on ${backend}`, () => {
    let pg: PostgresServer | undefined;
    let handle: DatabaseHandle;
    let db: Database;

    beforeAll(async () => {
      if (backend === "postgres") pg = await startPostgres();
      handle = await openNodeDatabase(pg ? { databaseUrl: pg.url } : { pgliteDataDir: "memory://" });
      db = handle.db;
    }, 120_000);

    afterAll(async () => {
      await handle?.close();
      await pg?.stop();
    });

    it("folds raw samples older than 24 h into 1-minute weighted averages and keeps newer ones raw", async () => {
      const id = `rollup${backend}aaaaaaaaaaaa`.slice(0, 20);
      const old = new Date(NOW.getTime() - 25 * HOUR);
      const minute = new Date(Math.floor(old.getTime() / 60_000) * 60_000);
      const at = (sec: number) => new Date(minute.getTime() + sec * 1000);
      await db.insert(sandboxMetrics).values([
        sample(id, at(0), 10, 100),
        sample(id, at(5), 20, 200),
        sample(id, at(10), 60, 600, { memTotal: 2_000_000 }),
        // The next minute: one sample alone.
        sample(id, at(65), 50, 500),
        // Inside the 24 h: stays raw.
        sample(id, new Date(NOW.getTime() - HOUR), 70, 700),
      ]);
      const done = await applyTelemetryRetention(db, NOW);
      expect(done.rolledUp).toBe(4);
      const rows = await rowsOf(db, id);
      expect(rows.map((r) => [r.resolutionSec, r.ts.toISOString(), r.sampleCount])).toEqual([
        [0, new Date(NOW.getTime() - HOUR).toISOString(), 1],
        [ROLLUP_SECONDS, minute.toISOString(), 3],
        [ROLLUP_SECONDS, at(60).toISOString(), 1],
      ]);
      const first = rows[1];
      expect(first?.cpuUsedPct).toBeCloseTo(30, 6);
      expect(first?.memUsed).toBe(300);
      expect(first?.memTotal).toBe(2_000_000);
      expect(first?.diskUsed).toBe(5000);
      // A second pass has nothing left to fold.
      expect((await applyTelemetryRetention(db, NOW)).rolledUp).toBe(0);
    });

    it("merges a minute folded over two passes as if folded at once", async () => {
      const id = `split${backend}bbbbbbbbbbbbbb`.slice(0, 20);
      const minute = new Date(Math.floor((NOW.getTime() - 30 * HOUR) / 60_000) * 60_000);
      const at = (sec: number) => new Date(minute.getTime() + sec * 1000);
      await db.insert(sandboxMetrics).values([sample(id, at(0), 10, 100), sample(id, at(10), 20, 200)]);
      await applyTelemetryRetention(db, NOW);
      // A late pull brings two more samples of the same minute (an agent that was unreachable for a day).
      await db.insert(sandboxMetrics).values([sample(id, at(20), 90, 900), sample(id, at(30), 0, 0)]);
      await applyTelemetryRetention(db, NOW);
      const rows = await rowsOf(db, id);
      expect(rows).toHaveLength(1);
      expect(rows[0]?.sampleCount).toBe(4);
      expect(rows[0]?.cpuUsedPct).toBeCloseTo(30, 6);
      expect(rows[0]?.memUsed).toBe(300);
    });

    it("deletes rollups and logs older than 7 days and keeps the rest", async () => {
      const id = `prune${backend}cccccccccccccc`.slice(0, 20);
      const eightDays = new Date(NOW.getTime() - 8 * 24 * HOUR);
      const sixDays = new Date(NOW.getTime() - 6 * 24 * HOUR);
      await db
        .insert(sandboxMetrics)
        .values([
          sample(id, new Date(Math.floor(eightDays.getTime() / 60_000) * 60_000), 1, 1, { resolutionSec: 60 }),
          sample(id, new Date(Math.floor(sixDays.getTime() / 60_000) * 60_000), 2, 2, { resolutionSec: 60 }),
        ]);
      await db.insert(sandboxLogs).values([logRow(id, eightDays), logRow(id, sixDays), logRow(id, NOW)]);
      const done = await applyTelemetryRetention(db, NOW);
      expect(done.rollupsPruned).toBeGreaterThanOrEqual(1);
      expect(done.logsPruned).toBeGreaterThanOrEqual(1);
      const rows = await rowsOf(db, id);
      expect(rows.map((r) => r.cpuUsedPct)).toEqual([2]);
      const logs = await db
        .select()
        .from(sandboxLogs)
        .where(eq(sandboxLogs.sandboxId, id))
        .orderBy(asc(sandboxLogs.ts));
      expect(logs.map((l) => l.ts.toISOString())).toEqual([sixDays.toISOString(), NOW.toISOString()]);
    });

    it("touches at most `batch` rows per pass; later passes drain the rest", async () => {
      const id = `batch${backend}dddddddddddddd`.slice(0, 20);
      const base = NOW.getTime() - 48 * HOUR;
      await db
        .insert(sandboxMetrics)
        .values(Array.from({ length: 25 }, (_, i) => sample(id, new Date(base + i * 5000), i, i)));
      const retention = { ...defaultTelemetryRetention, batch: 10 };
      const passes: number[] = [];
      for (let i = 0; i < 4; i++) passes.push((await applyTelemetryRetention(db, NOW, retention)).rolledUp);
      expect(passes).toEqual([10, 10, 5, 0]);
      const rows = await rowsOf(db, id);
      expect(rows.every((r) => r.resolutionSec === ROLLUP_SECONDS)).toBe(true);
      expect(rows.reduce((n, r) => n + r.sampleCount, 0)).toBe(25);
      const raw = await db
        .select()
        .from(sandboxMetrics)
        .where(and(eq(sandboxMetrics.sandboxId, id), eq(sandboxMetrics.resolutionSec, 0)));
      expect(raw).toHaveLength(0);
    });
  });
}
