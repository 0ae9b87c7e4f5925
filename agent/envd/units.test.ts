/** Unit tests for envd's pure parts: signatures, paths, ranges, /proc parsing, xattr dumps, output backpressure. */
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getSignature } from "e2b";
import { afterAll, describe, expect, it } from "vitest";
import { basicAuthUsername, checkFileSigning, fileSignature, isOpenRoute } from "./auth.js";
import { createClockStepper } from "./clock.js";
import { parseEnvdArgs } from "./config.js";
import { permissionString } from "./entry.js";
import type { Exec } from "./exec.js";
import { parseProcNetTcp } from "./forwarder.js";
import { parseRange, wantsGzip } from "./http/files.js";
import { silentLogger } from "./log.js";
import { endEventFor } from "./process/manager.js";
import { HIGH_WATER_BYTES, OutputFanout } from "./process/output.js";
import { lookupUser, PathError, resolveUserPath } from "./users.js";
import { parseGetfattrDump } from "./xattr.js";

describe("file signatures", () => {
  it("match the SDK's getSignature byte for byte, with and without expiry", async () => {
    const sdk = await getSignature({
      path: "/home/user/a b.txt",
      operation: "read",
      user: "user",
      envdAccessToken: "tok",
    });
    expect(fileSignature("/home/user/a b.txt", "read", "user", "tok")).toBe(sdk.signature);
    const withExp = await getSignature({
      path: "x",
      operation: "write",
      user: undefined,
      expirationInSeconds: 30,
      envdAccessToken: "tok",
    });
    expect(fileSignature("x", "write", "", "tok", withExp.expiration ?? 0)).toBe(withExp.signature);
    const raw = createHash("sha256").update("p:read::t").digest("base64").replace(/=+$/, "");
    expect(fileSignature("p", "read", "", "t")).toBe(`v1_${raw}`);
  });

  it("apply E2B's rules and messages", () => {
    const base = {
      token: "t",
      headerToken: undefined,
      signature: undefined,
      signatureExpiration: undefined,
      username: undefined,
      path: "/f",
      operation: "read" as const,
      nowUnix: 1_000,
    };
    expect(checkFileSigning({ ...base, token: undefined })).toBeUndefined();
    expect(checkFileSigning(base)).toBe("missing signature query parameter");
    expect(checkFileSigning({ ...base, headerToken: "t" })).toBeUndefined();
    expect(checkFileSigning({ ...base, headerToken: "x" })).toBe("access token present in header but does not match");
    expect(checkFileSigning({ ...base, signature: "v1_nope" })).toBe("invalid signature");
    expect(checkFileSigning({ ...base, signature: fileSignature("/f", "read", "", "t") })).toBeUndefined();
    expect(checkFileSigning({ ...base, signature: fileSignature("/f", "write", "", "t") })).toBe("invalid signature");
    const expired = fileSignature("/f", "read", "", "t", 999);
    expect(checkFileSigning({ ...base, signature: expired, signatureExpiration: "999" })).toBe(
      "signature is already expired",
    );
    const valid = fileSignature("/f", "read", "", "t", 1_001);
    expect(checkFileSigning({ ...base, signature: valid, signatureExpiration: "1001" })).toBeUndefined();
    expect(checkFileSigning({ ...base, signature: valid, signatureExpiration: "abc" })).toBe("invalid signature");
  });

  it("open routes are exactly E2B's", () => {
    expect(
      ["GET /health", "GET /files", "POST /files", "POST /init"].every((r) =>
        isOpenRoute(...(r.split(" ") as [string, string])),
      ),
    ).toBe(true);
    expect(isOpenRoute("GET", "/envs")).toBe(false);
    expect(isOpenRoute("POST", "/process.Process/Start")).toBe(false);
  });

  it("reads the Basic-auth username", () => {
    expect(basicAuthUsername(`Basic ${Buffer.from("user:").toString("base64")}`)).toBe("user");
    expect(basicAuthUsername(`basic ${Buffer.from("root").toString("base64")}`)).toBe("root");
    expect(basicAuthUsername("Bearer x")).toBeUndefined();
    expect(basicAuthUsername(undefined)).toBeUndefined();
  });
});

describe("paths and users", () => {
  const user = { name: "user", uid: 1000, gid: 1000, home: "/home/user", shell: "/bin/bash" };
  it("resolves relative paths, ~ and empty paths as E2B's envd does", () => {
    expect(resolveUserPath("a/b.txt", user)).toBe("/home/user/a/b.txt");
    expect(resolveUserPath("~", user)).toBe("/home/user");
    expect(resolveUserPath("~/x/../y", user)).toBe("/home/user/y");
    expect(resolveUserPath("/etc/../tmp", user)).toBe("/tmp");
    expect(resolveUserPath("", user, "/work")).toBe("/work");
    expect(resolveUserPath("", user)).toBe("/home/user");
    expect(() => resolveUserPath("~root/x", user)).toThrow(PathError);
  });

  const dir = mkdtempSync(join(tmpdir(), "wrenn-envd-unit-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  it("looks users up in a passwd file", async () => {
    writeFileSync(join(dir, "passwd"), "root:x:0:0:root:/root:/bin/bash\nuser:x:1001:1002::/home/user:/bin/bash\n");
    writeFileSync(join(dir, "group"), "");
    const db = { passwd: join(dir, "passwd"), group: join(dir, "group") };
    expect(await lookupUser("user", db)).toEqual({
      name: "user",
      uid: 1001,
      gid: 1002,
      home: "/home/user",
      shell: "/bin/bash",
    });
    expect(await lookupUser("nobody-here", db)).toBeUndefined();
    expect(await lookupUser("", db)).toBeUndefined();
  });
});

describe("HTTP helpers", () => {
  it("parses single byte ranges", () => {
    expect(parseRange(undefined, 10)).toBeUndefined();
    expect(parseRange("bytes=2-5", 10)).toEqual({ start: 2, end: 5 });
    expect(parseRange("bytes=7-", 10)).toEqual({ start: 7, end: 9 });
    expect(parseRange("bytes=-3", 10)).toEqual({ start: 7, end: 9 });
    expect(parseRange("bytes=5-100", 10)).toEqual({ start: 5, end: 9 });
    expect(parseRange("bytes=10-", 10)).toBe("unsatisfiable");
    expect(parseRange("bytes=0-1,4-5", 10)).toBeUndefined();
  });

  it("gzips only on an explicit gzip-only request", () => {
    expect(wantsGzip("gzip")).toBe(true);
    expect(wantsGzip("gzip, identity")).toBe(true);
    expect(wantsGzip("gzip, deflate, br")).toBe(false);
    expect(wantsGzip("gzip;q=0")).toBe(false);
    expect(wantsGzip(undefined)).toBe(false);
  });

  it("parses the command line and refuses bad values", () => {
    const ok = parseEnvdArgs(["--port", "1234", "--debug"], "0.6.13");
    expect(ok.kind === "run" && ok.config).toMatchObject({ port: 1234, debug: true, host: "0.0.0.0" });
    expect(parseEnvdArgs(["-version"], "0.6.13")).toEqual({ kind: "exit", output: "0.6.13", code: 0 });
    const bad = parseEnvdArgs(["--port", "99999"], "0.6.13");
    expect(bad.kind === "exit" && bad.code).toBe(2);
    const unknown = parseEnvdArgs(["--nope"], "0.6.13");
    expect(unknown.kind === "exit" && unknown.code).toBe(2);
  });
});

describe("process end events read like Go's ProcessState", () => {
  it("exit codes and signals", () => {
    expect(endEventFor(0, null)).toEqual({
      kind: "end",
      exitCode: 0,
      exited: true,
      status: "exit status 0",
      error: undefined,
    });
    expect(endEventFor(3, null)).toMatchObject({ exitCode: 3, status: "exit status 3", error: "exit status 3" });
    expect(endEventFor(null, "SIGKILL")).toMatchObject({ exitCode: -1, exited: false, status: "signal: killed" });
    expect(endEventFor(0, 15)).toMatchObject({ exitCode: -1, status: "signal: terminated" });
  });
});

describe("parsers", () => {
  it("reads loopback listeners from /proc/net/tcp and tcp6", () => {
    const v4 = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1
   1: 00000000:C383 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1
   2: 0100007F:1F90 0100007F:D4A2 01 00000000:00000000 00:00000000 00000000  1000        0 3 1`;
    expect(parseProcNetTcp(v4, 4)).toEqual([
      { address: "127.0.0.1", port: 8080 },
      { address: "0.0.0.0", port: 50051 },
    ]);
    const v6 = `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000`;
    expect(parseProcNetTcp(v6, 6)).toEqual([
      { address: "::1", port: 3000 },
      { address: "::", port: 80 },
    ]);
  });

  it("reads getfattr dumps, including escaped names and base64 values", () => {
    const dump = [
      "# file: /tmp/a b",
      `user.e2b.author=0s${Buffer.from("wrenn ✓").toString("base64")}`,
      "",
      "# file: /tmp/new\\012line",
      'user.e2b.k="v"',
      "",
      "# file: /tmp/other",
      "user.other=0sAA==",
      "",
    ].join("\n");
    const md = parseGetfattrDump(dump);
    expect(md.get("/tmp/a b")).toEqual({ author: "wrenn ✓" });
    expect(md.get("/tmp/new\nline")).toEqual({ k: "v" });
    expect(md.has("/tmp/other")).toBe(false);
  });

  it("formats permissions like ls -l", () => {
    const fake = (mode: number, kind: "file" | "dir") =>
      ({
        mode,
        isDirectory: () => kind === "dir",
        isSymbolicLink: () => false,
        isCharacterDevice: () => false,
        isBlockDevice: () => false,
        isFIFO: () => false,
        isSocket: () => false,
      }) as unknown as import("node:fs").Stats;
    expect(permissionString(fake(0o100644, "file"))).toBe("-rw-r--r--");
    expect(permissionString(fake(0o041777, "dir"))).toBe("drwxrwxrwt");
    expect(permissionString(fake(0o104755, "file"))).toBe("-rwsr-xr-x");
  });
});

describe("output fan-out", () => {
  it("pauses the source for a slow reader and resumes when it drains, delivering everything in order", async () => {
    const calls: string[] = [];
    const fanout = new OutputFanout({ pause: () => calls.push("pause"), resume: () => calls.push("resume") });
    const slow = fanout.subscribe();
    const fast = fanout.subscribe();
    const chunk = new Uint8Array(1024 * 1024);
    const total = Math.ceil(HIGH_WATER_BYTES / chunk.byteLength) + 2;
    const fastSeen: number[] = [];
    const drainFast = (async () => {
      for (;;) {
        const e = await fast.next(1_000);
        if (e === "closed" || e === "idle") return;
        if (e.kind === "end") return;
        fastSeen.push(e.data.byteLength);
      }
    })();
    for (let i = 0; i < total; i++) {
      fanout.publish({ kind: "data", stream: "stdout", data: chunk });
      await Promise.resolve();
    }
    expect(calls).toEqual(["pause"]);
    let got = 0;
    for (let i = 0; i < total; i++) {
      const e = await slow.next(1_000);
      if (typeof e === "string" || e.kind !== "data") throw new Error(`unexpected ${JSON.stringify(e)}`);
      got += e.data.byteLength;
    }
    expect(calls).toEqual(["pause", "resume"]);
    expect(got).toBe(total * chunk.byteLength);
    fanout.publish({ kind: "end", exitCode: 0, exited: true, status: "exit status 0" });
    expect(await slow.next(1_000)).toMatchObject({ kind: "end" });
    await drainFast;
    expect(fastSeen.length).toBe(total);
  });

  it("a reader that detaches no longer holds the source back", () => {
    const calls: string[] = [];
    const fanout = new OutputFanout({ pause: () => calls.push("pause"), resume: () => calls.push("resume") });
    const sub = fanout.subscribe();
    fanout.publish({ kind: "data", stream: "stdout", data: new Uint8Array(HIGH_WATER_BYTES + 1) });
    expect(calls).toEqual(["pause"]);
    sub.close();
    expect(calls).toEqual(["pause", "resume"]);
    expect(fanout.size).toBe(0);
  });

  it("a late subscriber of an ended process gets the end", async () => {
    const fanout = new OutputFanout({ pause: () => {}, resume: () => {} });
    fanout.publish({ kind: "end", exitCode: 1, exited: true, status: "exit status 1" });
    expect(await fanout.subscribe().next(100)).toMatchObject({ kind: "end", exitCode: 1 });
  });
});

describe("clock stepping from /init", () => {
  const calls: string[][] = [];
  const fakeExec: Exec = async (file, args) => {
    calls.push([file, ...args]);
    return { stdout: "", stderr: "", exitCode: 0 };
  };
  it("never touches the clock in debug mode", async () => {
    const clock = createClockStepper({ debug: true, exec: fakeExec, logger: silentLogger });
    expect(await clock.stepForwardTo(Date.now() + 3_600_000)).toBe(false);
    expect(calls).toEqual([]);
  });

  it.skipIf(existsSync("/dev/ptp0"))(
    "in a guest without a PHC, steps forward only when behind by a second or more",
    async () => {
      const clock = createClockStepper({ debug: false, exec: fakeExec, logger: silentLogger });
      expect(await clock.stepForwardTo(Date.now() - 60_000)).toBe(false);
      expect(await clock.stepForwardTo(Date.now() + 200)).toBe(false);
      expect(calls).toEqual([]);
      const target = Date.now() + 120_000;
      expect(await clock.stepForwardTo(target)).toBe(true);
      expect(calls).toEqual([["date", "-u", "-s", `@${(target / 1000).toFixed(3)}`]]);
    },
  );
});

describe("output published before the first reader attaches", () => {
  it("is kept for the first reader (a fast command may finish before Start subscribes)", async () => {
    const fanout = new OutputFanout({ pause: () => {}, resume: () => {} });
    fanout.publish({ kind: "data", stream: "stdout", data: new TextEncoder().encode("early\n") });
    fanout.publish({ kind: "end", exitCode: 0, exited: true, status: "exit status 0" });
    const sub = fanout.subscribe();
    const first = await sub.next(100);
    expect(typeof first !== "string" && first.kind === "data" && new TextDecoder().decode(first.data)).toBe("early\n");
    expect(await sub.next(100)).toMatchObject({ kind: "end" });
    // A later reader sees only the end.
    expect(await fanout.subscribe().next(100)).toMatchObject({ kind: "end" });
  });
});
