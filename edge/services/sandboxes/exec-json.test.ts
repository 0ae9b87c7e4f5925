import { describe, expect, it } from "vitest";
import { base64Into, type ExecOutput, execResultJson, jsonSliceBytes } from "./exec-json.js";

const utf8 = new TextEncoder();

function randomBytes(length: number): Uint8Array {
  const out = new Uint8Array(length);
  // getRandomValues fills at most 64 KiB per call.
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(out.subarray(at, at + 65_536));
  return out;
}

/** What the route answered before issue 23: the object serialised by JSON.stringify. */
function viaStringify(o: ExecOutput): string {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let stdout: string;
  let stderr: string;
  let encoding: "utf-8" | "base64" = "utf-8";
  try {
    stdout = decoder.decode(o.stdout);
    stderr = decoder.decode(o.stderr);
  } catch {
    stdout = Buffer.from(o.stdout).toString("base64");
    stderr = Buffer.from(o.stderr).toString("base64");
    encoding = "base64";
  }
  const result: Record<string, unknown> = {
    stdout,
    stderr,
    exitCode: o.exitCode,
    encoding,
    truncated: o.truncated,
    durationMs: o.durationMs,
  };
  if (o.error) result.error = o.error;
  return JSON.stringify(result);
}

const output = (stdout: Uint8Array, stderr: Uint8Array = new Uint8Array(), extra: Partial<ExecOutput> = {}) => ({
  stdout,
  stderr,
  exitCode: 0,
  truncated: false,
  durationMs: 12,
  ...extra,
});

async function answer(o: ExecOutput): Promise<string> {
  return new TextDecoder().decode(await execResultJson(o));
}

describe("execResultJson", () => {
  it("writes text with the escapes JSON.stringify writes, byte for byte", async () => {
    const every = Array.from({ length: 0x80 }, (_, c) => String.fromCharCode(c)).join("");
    const text = `${every}é 𝄞 \u2028\u2029 "quoted" back\\slash\n${"line\tand\r\n".repeat(3)}`;
    const cases: ExecOutput[] = [
      output(utf8.encode(text), utf8.encode(`err: ${every}`)),
      output(utf8.encode("plain"), new Uint8Array(), { exitCode: 3, error: "killed: SIGKILL", truncated: true }),
      output(new Uint8Array(), new Uint8Array()),
    ];
    for (const o of cases) {
      const json = await answer(o);
      expect(json).toBe(viaStringify(o));
    }
    expect(JSON.parse(await answer(cases[0] as ExecOutput))).toMatchObject({ stdout: text, encoding: "utf-8" });
  });

  it("keeps text whose characters span slices, and escapes past the first slice", async () => {
    // A 4-byte character across the first slice boundary, and control characters after it.
    const prefix = "a".repeat(jsonSliceBytes - 2);
    const text = `${prefix}𝄞${'\u0001"\n'.repeat(1000)}${"x".repeat(jsonSliceBytes)}`;
    const o = output(utf8.encode(text), utf8.encode(text));
    const json = await answer(o);
    expect(json === viaStringify(o)).toBe(true);
    expect((JSON.parse(json) as { stdout: string }).stdout === text).toBe(true);
  });

  it("sends both streams base64 when either is not UTF-8, for every tail length and across slices", async () => {
    const bytes = randomBytes(2 * jsonSliceBytes + 10);
    bytes[0] = 0xff;
    for (const length of [0, 1, 2, 3, 4, 5, 299, jsonSliceBytes - 1, jsonSliceBytes + 1, bytes.length]) {
      const o = output(utf8.encode("fine text"), bytes.subarray(0, Math.max(1, length)));
      const json = await answer(o);
      expect(json === viaStringify(o)).toBe(true);
    }
    const parsed = JSON.parse(await answer(output(bytes, utf8.encode("ok")))) as { stdout: string; stderr: string };
    expect(Buffer.from(parsed.stdout, "base64").equals(Buffer.from(bytes))).toBe(true);
    expect(parsed.stderr).toBe(Buffer.from("ok").toString("base64"));
  });

  it("sends text cut inside a character (truncated output) as base64", async () => {
    const cut = utf8.encode("ab𝄞").subarray(0, 4);
    const json = JSON.parse(await answer(output(cut, new Uint8Array(), { truncated: true }))) as {
      stdout: string;
      encoding: string;
    };
    expect(json.encoding).toBe("base64");
    expect([...Buffer.from(json.stdout, "base64")]).toEqual([...cut]);
  });
});

describe("base64Into", () => {
  it("matches Buffer's standard padded base64 for every tail length", () => {
    const bytes = randomBytes(1_000);
    for (let length = 0; length <= 300; length++) {
      const slice = bytes.subarray(7, 7 + length);
      const out = new Uint8Array(Math.ceil(length / 3) * 4 + 2);
      const end = base64Into(slice, out, 1);
      expect(end).toBe(out.length - 1);
      expect(Buffer.from(out.subarray(1, end)).toString("latin1")).toBe(Buffer.from(slice).toString("base64"));
    }
  });
});
