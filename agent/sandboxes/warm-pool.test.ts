import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type AgentConfig, parseAgentConfig } from "../config.js";
import { noopLogger } from "../logger.js";
import type { Slot } from "../network/slots.js";
import type { GuestHandle, GuestSpec, Runtime } from "../runtimes/types.js";
import type { Clock } from "./clock.js";
import type { EnvdClientFactory, GuestEnvd } from "./guest-envd.js";
import { WarmPool, warmTarget } from "./warm-pool.js";

// The pool alone, with doubles only where it meets other programs: the runtime (guests are entries in
// a set), the slot allocator's kernel side (slots are numbers), envd (/health answers at once) and the
// clock (moved by the test, so the demand window passes without waiting for it).

const TEMPLATE = "minimal";
const WINDOW_MS = 60_000;

class FakeClock implements Clock {
  ms = Date.UTC(2026, 0, 1);
  now(): number {
    return this.ms;
  }
}

class FakeRuntime {
  readonly name = "namespace" as const;
  readonly alive = new Set<string>();
  starts = 0;
  #pid = 1;
  retarget = async (_from: GuestSpec, _to: GuestSpec, handle: GuestHandle) => handle;
  async start(spec: GuestSpec): Promise<GuestHandle> {
    this.starts++;
    this.alive.add(spec.sandboxId);
    return { runtime: this.name, pid: this.#pid++, pidStartTime: "t", data: {} };
  }
  async stop(spec: GuestSpec): Promise<void> {
    this.alive.delete(spec.sandboxId);
  }
}

function fakeSlots() {
  let next = 0;
  const held = new Set<number>();
  return {
    held,
    // As the real allocator with the agent's egress off: no slot gets the internet.
    acquire: async (kind: Slot["kind"], _internet: boolean): Promise<Slot> => {
      const index = next++;
      held.add(index);
      return { index, kind, egress: false, slotIp: `10.0.0.${index}` } as unknown as Slot;
    },
    release: async (slot: Slot) => {
      held.delete(slot.index);
    },
  };
}

const envd: EnvdClientFactory = () => ({ waitHealthy: async () => {} }) as unknown as GuestEnvd;

let root: string;
let config: AgentConfig;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "wrenn-warm-"));
  const parsed = parseAgentConfig(
    { AGENT_FILES_ROOTDIR: root, AGENT_EGRESS: "0", AGENT_WARM_REFILL_DELAY_MS: "0" },
    { cpuCount: 2, totalMemoryMb: 4096 },
  );
  if (!parsed.ok) throw new Error(parsed.errors.join("; "));
  config = parsed.config;
  await mkdir(config.layout.imageDir(TEMPLATE), { recursive: true });
  await writeFile(config.layout.imageManifest(TEMPLATE), "{}");
  await mkdir(config.layout.sandboxesDir, { recursive: true });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function pool(opts: { delayMs?: number; headroom?: () => number } = {}) {
  const runtime = new FakeRuntime();
  const slots = fakeSlots();
  const clock = new FakeClock();
  const warm = new WarmPool({
    config: { ...config, warmRefillDelayMs: opts.delayMs ?? 0 },
    logger: noopLogger,
    runtime: runtime as unknown as Runtime,
    slots,
    slotKind: "namespace",
    envdClient: envd,
    clock,
    envdTimeoutMs: 1_000,
    headroom: opts.headroom ?? (() => 100),
    demandWindowMs: WINDOW_MS,
  });
  return { warm, runtime, slots, clock };
}

describe("warmTarget", () => {
  it("follows the creates of the last window, between one guest and the maximum", () => {
    expect(warmTarget({ max: 8, recentCreates: 0, headroom: 100 })).toBe(1);
    expect(warmTarget({ max: 8, recentCreates: 5, headroom: 100 })).toBe(5);
    expect(warmTarget({ max: 8, recentCreates: 50, headroom: 100 })).toBe(8);
  });

  it("never asks for more than the host's memory holds, and nothing when warm guests are off", () => {
    expect(warmTarget({ max: 8, recentCreates: 5, headroom: 3.7 })).toBe(3);
    expect(warmTarget({ max: 8, recentCreates: 5, headroom: 0 })).toBe(0);
    expect(warmTarget({ max: 0, recentCreates: 5, headroom: 100 })).toBe(0);
  });
});

describe("WarmPool", () => {
  it("grows after a burst of creates, hands its guests out, and shrinks to one once the window is quiet", async () => {
    const { warm, runtime, slots, clock } = pool();
    warm.start(4);
    await vi.waitFor(() => expect(warm.size).toBe(1));

    // A burst of three creates: the first takes the one guest, the others find none.
    expect(warm.take(TEMPLATE, false)).toBeDefined();
    expect(warm.take(TEMPLATE, false)).toBeUndefined();
    expect(warm.take(TEMPLATE, false)).toBeUndefined();
    expect(warm.target()).toBe(3);
    await vi.waitFor(() => expect(warm.size).toBe(3));

    // The next burst is served from the pool.
    const taken = [warm.take(TEMPLATE, false), warm.take(TEMPLATE, false)];
    expect(taken.every((g) => g !== undefined)).toBe(true);
    expect(warm.target()).toBe(4);
    await vi.waitFor(() => expect(warm.size).toBe(4));
    expect(runtime.starts).toBe(7);

    // A create of another template neither takes a guest nor counts as demand for this one.
    expect(warm.take("other", false)).toBeUndefined();
    expect(warm.target()).toBe(4);

    // A minute without creates: back to one guest; the others are stopped and their slots released.
    clock.ms += WINDOW_MS + 1;
    expect(warm.target()).toBe(1);
    await warm.trim();
    expect(warm.size).toBe(1);
    // 7 booted, 3 handed out (their guests are the sandboxes' now), 3 stopped by the trim.
    expect(runtime.alive.size).toBe(4);
    expect(slots.held.size).toBe(4);

    await warm.drain();
    expect(warm.size).toBe(0);
    expect(slots.held.size).toBe(3);
  });

  it("boots nothing while creates keep coming, and refills once they pause", async () => {
    const { warm, runtime } = pool({ delayMs: 200 });
    warm.start(4);
    await vi.waitFor(() => expect(warm.size).toBe(1));
    warm.take(TEMPLATE, false);
    warm.take(TEMPLATE, false);
    const startsAfterBurst = runtime.starts;
    // Creates keep arriving every 50 ms: each pushes the refill back.
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 50));
      warm.take(TEMPLATE, false);
    }
    expect(runtime.starts).toBe(startsAfterBurst);
    await vi.waitFor(() => expect(warm.size).toBe(4), { timeout: 2_000 });
    await warm.drain();
  });

  it("boots no guest the host's memory has no room for", async () => {
    let headroom = 0;
    const { warm, runtime } = pool({ headroom: () => headroom });
    warm.start(4);
    await new Promise((r) => setTimeout(r, 50));
    expect(runtime.starts).toBe(0);
    headroom = 2;
    warm.take(TEMPLATE, false);
    warm.take(TEMPLATE, false);
    warm.take(TEMPLATE, false);
    await vi.waitFor(() => expect(warm.size).toBe(2));
    await new Promise((r) => setTimeout(r, 50));
    expect(warm.size).toBe(2);
    await warm.drain();
  });
});
