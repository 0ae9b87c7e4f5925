import { realpath, rm } from "node:fs/promises";
import type { FilesLayout } from "../layout.js";
import type { Slot, SlotManager } from "../network/slots.js";
import { isSameProcessAlive } from "../process-identity.js";
import type { Runtime } from "../runtimes/types.js";
import { guestSpec } from "./guest-spec.js";
import type { SandboxRecord } from "./record.js";

export interface TeardownDeps {
  layout: FilesLayout;
  runtime: Runtime;
  slots: Pick<SlotManager, "release" | "describe">;
}

/**
 * Stops a sandbox's guest, frees its slot and removes its directories. Every step runs even if one
 * fails; the failures are thrown together at the end.
 */
export async function teardownSandbox(
  deps: TeardownDeps,
  record: SandboxRecord,
  slot: Slot | undefined,
): Promise<void> {
  const { layout, runtime, slots } = deps;
  const errors: unknown[] = [];
  if (record.runtime === runtime.name) {
    await runtime.stop(guestSpec(layout, record, slot), record.handle).catch((e) => errors.push(e));
  } else if (record.handle && (await isSameProcessAlive(record.handle.pid, record.handle.pidStartTime))) {
    // A guest of another runtime: its process is all this agent can stop.
    process.kill(record.handle.pid, "SIGKILL");
  }
  if (slot) await slots.release(slot).catch((e) => errors.push(e));
  else if (record.slot) {
    // Recovery: the slot was never adopted; release by description so its netns goes.
    await slots
      .release(slots.describe(record.slot.index, record.slot.kind, record.slot.egress))
      .catch((e) => errors.push(e));
  }
  // A sandbox that took a warm guest lives in that guest's directory; sandboxes/<id> links to it.
  const dir = layout.sandboxDir(record.id);
  const real = await realpath(dir).catch(() => dir);
  await rm(dir, { recursive: true, force: true }).catch((e) => errors.push(e));
  if (real !== dir) await rm(real, { recursive: true, force: true }).catch((e) => errors.push(e));
  await rm(layout.snapshotDir(record.id), { recursive: true, force: true }).catch((e) => errors.push(e));
  if (errors.length > 0) throw new AggregateError(errors, `teardown of ${record.id} failed`);
}
