import { describe, expect, it } from "vitest";
import { BodyTooLargeError, readJsonLimited, readTextLimited, readTextPrefix } from "./bounded-read.js";

/** A body that never ends (until cancelled); counts what was pulled from it. */
function endlessResponse(headers: Record<string, string> = {}): { res: Response; pulled: () => number } {
  let pulled = 0;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (cancelled) return;
      pulled += 65_536;
      controller.enqueue(new Uint8Array(65_536).fill(0x41));
    },
    cancel() {
      cancelled = true;
    },
  });
  return { res: new Response(body, { headers }), pulled: () => pulled };
}

describe("bounded reads", () => {
  it("stops an endless body at the limit with BodyTooLargeError", async () => {
    const { res, pulled } = endlessResponse();
    await expect(readTextLimited(res, 100_000)).rejects.toBeInstanceOf(BodyTooLargeError);
    expect(pulled()).toBeLessThanOrEqual(4 * 65_536);
  });

  it("refuses a declared length over the limit without reading", async () => {
    const { res, pulled } = endlessResponse({ "content-length": String(1024 ** 3) });
    await expect(readJsonLimited(res, 1_000)).rejects.toThrow(/larger than 1000 bytes/);
    expect(pulled()).toBeLessThanOrEqual(65_536);
  });

  it("reads bodies within the limit whole", async () => {
    expect(await readJsonLimited(Response.json({ a: 1 }), 100)).toEqual({ a: 1 });
    expect(await readTextLimited(new Response("héllo"), 6)).toBe("héllo");
  });

  it("takes only the start of an endless body as a message", async () => {
    const { res } = endlessResponse();
    expect(await readTextPrefix(res, 10)).toBe("AAAAAAAAAA");
  });
});
