import { monitorEventLoopDelay } from "node:perf_hooks";
import { describe, expect, it } from "vitest";
import { execResultJson, jsonSliceBytes } from "../../edge/services/sandboxes/exec-json.js";

/**
 * Exec output that is not UTF-8 is sent as base64. A guest printing 32 MiB of random bytes used to
 * have the edge build the encoding one character at a time in one synchronous pass (seconds during
 * which no other request was served); the edge now encodes it natively, straight into the answer's
 * JSON bytes, in slices between which the event loop turns. Text that needs escaping on every line
 * is written the same way.
 */
describe("large exec output", () => {
  const watch = async (build: () => Promise<Uint8Array>) => {
    const delay = monitorEventLoopDelay({ resolution: 5 });
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 1);
    delay.enable();
    const json = await build();
    delay.disable();
    clearInterval(ticker);
    return { json, ticks, maxDelayMs: delay.max / 1e6 };
  };

  it("encodes 2 × 16 MiB of random bytes without holding the event loop for 100 ms", async () => {
    const bytes = new Uint8Array(32 * 1024 * 1024);
    for (let at = 0; at < bytes.length; at += 65_536) crypto.getRandomValues(bytes.subarray(at, at + 65_536));
    const half = bytes.length / 2;
    const { json, ticks, maxDelayMs } = await watch(() =>
      execResultJson({
        stdout: bytes.subarray(0, half),
        stderr: bytes.subarray(half),
        exitCode: 0,
        truncated: false,
        durationMs: 1,
      }),
    );
    const parsed = JSON.parse(Buffer.from(json).toString("latin1")) as { stdout: string; stderr: string };
    expect(parsed.stdout === Buffer.from(bytes.subarray(0, half)).toString("base64")).toBe(true);
    expect(parsed.stderr === Buffer.from(bytes.subarray(half)).toString("base64")).toBe(true);
    expect(bytes.length / jsonSliceBytes).toBeGreaterThan(40);
    // Timers ran while it encoded: the loop was not held for the whole pass.
    expect(ticks).toBeGreaterThan(10);
    // The longest wait of the event loop for a turn during the encoding, in milliseconds.
    expect(maxDelayMs).toBeLessThan(100);
  });

  it("escapes 16 MiB of short lines of text without holding the event loop for 100 ms", async () => {
    const line = new TextEncoder().encode('say "hi"\tto\\all\n');
    const bytes = new Uint8Array(16 * 1024 * 1024);
    for (let at = 0; at + line.length <= bytes.length; at += line.length) bytes.set(line, at);
    bytes.fill(0x61, bytes.length - (bytes.length % line.length));
    const { json, ticks, maxDelayMs } = await watch(() =>
      execResultJson({ stdout: bytes, stderr: new Uint8Array(), exitCode: 0, truncated: false, durationMs: 1 }),
    );
    const parsed = JSON.parse(new TextDecoder().decode(json)) as { stdout: string; encoding: string };
    expect(parsed.encoding).toBe("utf-8");
    expect(parsed.stdout === new TextDecoder().decode(bytes)).toBe(true);
    expect(ticks).toBeGreaterThan(10);
    expect(maxDelayMs).toBeLessThan(100);
  });
});
