import { afterEach, describe, expect, it } from "vitest";
import { parseEnvdArgs } from "./config.js";
import { createLogger } from "./log.js";
import { type Envd, startEnvd } from "./server.js";
import { ENVD_VERSION } from "./version.js";

// envd's log lines carry the request id the agent passes on (x-request-id), and only a well-formed one.

let envd: Envd | undefined;
afterEach(async () => {
  await envd?.close();
  envd = undefined;
});

describe("envd's log lines for a request", () => {
  it("carry component envd and the request id the agent passed on", async () => {
    const parsed = parseEnvdArgs(["--debug", "--host", "127.0.0.1", "--port", "0"], ENVD_VERSION);
    if (parsed.kind !== "run") throw new Error(parsed.output);
    const lines: string[] = [];
    envd = await startEnvd(parsed.config, { logger: createLogger({ write: (line) => lines.push(line) }) });
    const init = (requestId: string) =>
      fetch(`http://127.0.0.1:${envd?.address.port}/init`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": requestId },
        body: JSON.stringify({ envVars: {} }),
      });
    expect((await init("req_0123456789abcdef")).status).toBeLessThan(300);
    expect((await init('bad","level":"debug')).status).toBeLessThan(300);
    const initialised = lines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((record) => record.msg === "initialised");
    expect(initialised).toHaveLength(2);
    expect(initialised[0]).toMatchObject({ component: "envd", level: "info", requestId: "req_0123456789abcdef" });
    expect(initialised[1]).not.toHaveProperty("requestId");
    expect(initialised[1]).toMatchObject({ level: "info" });
  });
});
