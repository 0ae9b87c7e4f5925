import { describe, expect, it } from "vitest";
import { toBase64, toBase64Portable } from "./exec.js";

function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  // getRandomValues fills at most 64 KiB per call.
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(out.subarray(at, at + 65_536));
  return out;
}

describe("toBase64", () => {
  it("matches Buffer's standard padded base64 for every tail length, natively and portably", () => {
    const bytes = randomBytes(1_000);
    for (let length = 0; length <= 300; length++) {
      const slice = bytes.subarray(7, 7 + length);
      const expected = Buffer.from(slice).toString("base64");
      expect(toBase64(slice)).toBe(expected);
      expect(toBase64Portable(slice)).toBe(expected);
    }
    const large = randomBytes(1024 * 1024 + 1);
    expect(toBase64Portable(large)).toBe(Buffer.from(large).toString("base64"));
  });
});
