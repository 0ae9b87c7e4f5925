import { monitorEventLoopDelay } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import { base64SliceBytes, toBase64Yielding } from "../../edge/services/sandboxes/exec.js";

/**
 * Exec output that is not UTF-8 is sent as base64. A guest printing 32 MiB of random bytes used to
 * have the edge build the encoding one character at a time in one synchronous pass (seconds during
 * which no other request was served); the edge now encodes it natively, in slices between which the
 * event loop turns.
 */
describe("non-UTF-8 exec output", () => {
  it("encodes 32 MiB of random bytes without holding the event loop for 100 ms", async () => {
    const bytes = new Uint8Array(32 * 1024 * 1024);
    for (let at = 0; at < bytes.length; at += 65_536) crypto.getRandomValues(bytes.subarray(at, at + 65_536));
    const expected = Buffer.from(bytes.buffer).toString("base64");
    const delay = monitorEventLoopDelay({ resolution: 5 });
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    delay.enable();
    const encoded = await toBase64Yielding(bytes);
    delay.disable();
    clearInterval(ticker);
    expect(encoded === expected).toBe(true);
    expect(bytes.length / base64SliceBytes).toBeGreaterThan(100);
    // Timers ran while it encoded: the loop was not held for the whole pass.
    expect(ticks).toBeGreaterThan(10);
    // The longest wait of the event loop for a turn during the encoding, in milliseconds.
    expect(delay.max / 1e6).toBeLessThan(100);
  });
});
