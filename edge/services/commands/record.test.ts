import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CommandRecord, CommandRecordSchema } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import { createEdgeHarness, type EdgeHarness } from "../../../test/helpers/edge-app.js";
import { commands, events, webhookDeliveries } from "../../db/schema/index.js";
import { storeCommandRecords } from "./record.js";
import { applyCommandRetention } from "./retention.js";

/**
 * Storing command records on PGlite: a background command's callback is queued exactly once whatever
 * pulls race, a finished row is never overwritten by a replay, guest bytes become storable text, and
 * retention prunes by age.
 */

let h: EdgeHarness;
let teamId = "";

beforeAll(async () => {
  h = await createEdgeHarness();
  teamId = (await h.newTeam("history")).teamId;
}, 60_000);

afterAll(async () => {
  await h?.close();
});

function record(
  sandboxId: string,
  commandId: string,
  fields: Partial<Omit<CommandRecord, "$typeName" | "$unknown">> = {},
): CommandRecord {
  const now = Date.now();
  return create(CommandRecordSchema, {
    seq: 1n,
    sandboxId,
    commandId,
    cmd: "/bin/bash",
    args: ["-l", "-c", "echo hi"],
    user: "user",
    cwd: "/home/user",
    pid: 7,
    startedAt: timestampFromMs(now - 4_000),
    endedAt: timestampFromMs(now),
    exitCode: 0,
    stdoutHead: new TextEncoder().encode("hi\n"),
    stdoutBytes: 3n,
    ...fields,
  });
}

describe("storeCommandRecords", () => {
  it("queues a background command's callback and its command.finished event once, whatever pulls race", async () => {
    const db = h.services().db;
    const sandboxId = "sbxcallbackonce00001";
    await db.insert(commands).values({
      teamId,
      sandboxId,
      commandId: "cmd_once",
      commandLine: "/bin/bash -l -c echo hi",
      cmd: "/bin/bash",
      startedAt: new Date(),
      background: true,
      callbackUrl: "http://127.0.0.1:9/hook",
      callbackState: "pending",
    });
    const teamOf = new Map([[sandboxId, teamId]]);
    // A record that has not ended yet changes nothing about the callback.
    await storeCommandRecords(db, [record(sandboxId, "cmd_once", { endedAt: undefined, exitCode: undefined })], teamOf);
    expect((await db.select().from(commands).where(eq(commands.commandId, "cmd_once")))[0]?.callbackState).toBe(
      "pending",
    );
    await Promise.all([
      storeCommandRecords(db, [record(sandboxId, "cmd_once")], teamOf),
      storeCommandRecords(db, [record(sandboxId, "cmd_once")], teamOf),
      storeCommandRecords(db, [record(sandboxId, "cmd_once")], teamOf),
    ]);
    const callbacks = await db
      .select()
      .from(webhookDeliveries)
      .where(and(eq(webhookDeliveries.teamId, teamId), eq(webhookDeliveries.eventType, "command.finished")));
    expect(callbacks.filter((d) => d.url === "http://127.0.0.1:9/hook")).toHaveLength(1);
    const payload = callbacks[0]?.payload as { data: Record<string, unknown> };
    expect(payload.data).toMatchObject({ commandId: "cmd_once", exitCode: 0, durationMs: 4_000 });
    expect(payload.data.stdout).toEqual({ head: "hi\n", tail: "", bytes: 3 });
    const finished = await db.select().from(events).where(eq(events.sandboxId, sandboxId));
    expect(finished.map((e) => e.type)).toEqual(["command.finished"]);
    const [row] = await db.select().from(commands).where(eq(commands.commandId, "cmd_once"));
    expect(row).toMatchObject({ callbackState: "queued", exitCode: 0, pid: 7, background: true });
  });

  it("never overwrites a finished row, stores guest bytes as text, and drops sandboxes of other hosts", async () => {
    const db = h.services().db;
    const sandboxId = "sbxreplay00000000001";
    const teamOf = new Map([[sandboxId, teamId]]);
    const bytes = Uint8Array.from([0x61, 0x00, 0xff, 0x62]);
    await storeCommandRecords(
      db,
      [
        record(sandboxId, "envd-abc-1", { exitCode: 3, stderrHead: bytes, stderrBytes: 99n }),
        record("sbxelsewhere00000001", "envd-abc-2"),
        record(sandboxId, "../bad id"),
      ],
      teamOf,
    );
    await storeCommandRecords(db, [record(sandboxId, "envd-abc-1", { exitCode: 0 })], teamOf);
    const rows = await db.select().from(commands).where(eq(commands.sandboxId, sandboxId));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ exitCode: 3, stderrHead: "a\uFFFDb", stderrBytes: 99, background: false });
    expect(rows[0]?.callbackState).toBeNull();
    expect(await db.select().from(commands).where(eq(commands.sandboxId, "sbxelsewhere00000001"))).toEqual([]);
  });

  it("prunes commands older than the retention", async () => {
    const db = h.services().db;
    const sandboxId = "sbxretention00000001";
    const day = 86_400_000;
    const now = Date.now();
    const teamOf = new Map([[sandboxId, teamId]]);
    await storeCommandRecords(
      db,
      [
        record(sandboxId, "envd-old-1", {
          startedAt: timestampFromMs(now - 9 * day),
          endedAt: timestampFromMs(now - 8 * day),
        }),
        record(sandboxId, "envd-new-1", {
          startedAt: timestampFromMs(now - 2 * day),
          endedAt: timestampFromMs(now - day),
        }),
      ],
      teamOf,
    );
    expect(await applyCommandRetention(db, new Date(now), 7)).toBeGreaterThanOrEqual(1);
    const left = await db.select().from(commands).where(eq(commands.sandboxId, sandboxId));
    expect(left.map((r) => r.commandId)).toEqual(["envd-new-1"]);
  });
});
