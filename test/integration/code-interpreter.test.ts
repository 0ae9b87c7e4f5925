import { randomBytes } from "node:crypto";
import { access, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sandbox, TimeoutError } from "@e2b/code-interpreter";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NodeEdge } from "../../edge/node.js";
import { Sandbox as WrennSandbox } from "../../sdk/sandbox.js";
import { IMAGES_ROOT, requireRoot } from "../helpers/agent-fixtures.js";
import { type AgentProcess, startAgentProcess } from "../helpers/agent-process.js";
import { runWrenn } from "../helpers/cli-stack.js";
import { newTeamKey, pointE2bSdkAt, sdkTestLogger, startEdgeForAgent } from "../helpers/edge-stack.js";

/**
 * Acceptance for issue 18: the official `@e2b/code-interpreter` SDK (2.8.0), unchanged, against the
 * real stack — the edge on Node with PGlite and its sandbox proxy, a real host agent (the suite's
 * runtime; egress off) and the `code-interpreter` image, whose guest server (interpreter/) runs
 * Jupyter kernels. `Sandbox.create()` asks for `code-interpreter-v1`, which the edge resolves.
 */

const adminKey = `wrn_ci_admin_${randomBytes(16).toString("hex")}`;
let agent: AgentProcess | undefined;
let edge: NodeEdge | undefined;
let sbx: Sandbox | undefined;
let apiKey = "";
let restoreEnv: (() => void) | undefined;

function sandbox(): Sandbox {
  if (!sbx) throw new Error("sandbox not created");
  return sbx;
}

/** Width and height from a PNG's IHDR chunk, after checking the signature. */
function pngSize(png: Buffer): { width: number; height: number } {
  expect(png.subarray(0, 8).toString("hex")).toBe("89504e470d0a1a0a");
  expect(png.subarray(12, 16).toString("latin1")).toBe("IHDR");
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20) };
}

beforeAll(async () => {
  requireRoot();
  const manifest = join(IMAGES_ROOT, "images", "code-interpreter", "manifest.json");
  await access(manifest).catch(() => {
    throw new Error(`image missing: ${manifest} (build it with \`npm run image -- build code-interpreter\`)`);
  });
  agent = await startAgentProcess({ runtime: "namespace", rootDir: IMAGES_ROOT });
  edge = await startEdgeForAgent(agent, {
    adminKey,
    env: { WRENN_RECONCILE_INTERVAL_SEC: "0" },
    logger: sdkTestLogger(),
  });
  apiKey = await newTeamKey(edge, adminKey, "code-interpreter", `ci-${randomBytes(3).toString("hex")}`);
  restoreEnv = pointE2bSdkAt(edge, apiKey);
  // The SDK's default template, code-interpreter-v1, unchanged.
  sbx = await Sandbox.create({ timeoutMs: 300_000, envs: { FROM_CREATE: "yes" } });
}, 180_000);

afterAll(async () => {
  await sbx?.kill().catch(() => {});
  restoreEnv?.();
  await edge?.close().catch(() => {});
  await agent?.stop().catch(() => {});
}, 120_000);

describe("official @e2b/code-interpreter SDK against Wrenn", () => {
  it("runs x = 1; x + 1 and returns 2 as text, with an execution count", async () => {
    const execution = await sandbox().runCode("x = 1; x + 1");
    expect(execution.error).toBeUndefined();
    expect(execution.text).toBe("2");
    expect(execution.results).toHaveLength(1);
    expect(execution.results[0]?.isMainResult).toBe(true);
    expect(execution.executionCount).toBeGreaterThan(0);
  });

  it("keeps state within a context and not across contexts", async () => {
    await sandbox().runCode("kept = 41");
    expect((await sandbox().runCode("kept + 1")).text).toBe("42");
    const other = await sandbox().createCodeContext({ cwd: "/tmp" });
    expect(other.id).toBeTruthy();
    expect(other.cwd).toBe("/tmp");
    const there = await sandbox().runCode("kept", { context: other });
    expect(there.error?.name).toBe("NameError");
    expect((await sandbox().runCode("import os; os.getcwd()", { context: other })).text).toBe("'/tmp'");
    expect((await sandbox().runCode("import os; os.getcwd()")).text).toBe("'/home/user'");
    const listed = await sandbox().listCodeContexts();
    expect(listed.map((c) => c.id)).toContain(other.id);
    await sandbox().removeCodeContext(other);
    expect((await sandbox().listCodeContexts()).map((c) => c.id)).not.toContain(other.id);
  });

  it("streams print output through onStdout before the execution ends", async () => {
    const seen: number[] = [];
    const started = Date.now();
    const execution = await sandbox().runCode(
      "import time\nfor i in range(5):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.2)\n",
      { onStdout: () => void seen.push(Date.now() - started) },
    );
    const ended = Date.now() - started;
    expect(execution.logs.stdout.join("")).toBe("tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n");
    expect(seen.length).toBeGreaterThanOrEqual(3);
    // The first tick arrives while four more sleeps (0.8 s) are still to come.
    expect(ended - (seen[0] ?? ended)).toBeGreaterThanOrEqual(600);
  });

  it("reports an exception with its name, value and traceback", async () => {
    const execution = await sandbox().runCode("def f():\n    return 1 / 0\nf()\n");
    expect(execution.error?.name).toBe("ZeroDivisionError");
    expect(execution.error?.value).toBe("division by zero");
    expect(execution.error?.traceback).toContain("ZeroDivisionError");
    expect(execution.error?.traceback).toContain("return 1 / 0");
    expect(execution.results).toHaveLength(0);
  });

  it("returns a matplotlib figure as a PNG that decodes, with the chart's data", async () => {
    const execution = await sandbox().runCode(
      [
        "import matplotlib.pyplot as plt",
        "fig, ax = plt.subplots()",
        "ax.plot([1, 2, 3, 4], [1, 4, 9, 16], label='squares')",
        "ax.set_title('Squares')",
        "ax.set_xlabel('n')",
        "ax.set_ylabel('n squared')",
        "plt.show()",
      ].join("\n"),
    );
    expect(execution.error).toBeUndefined();
    const figure = execution.results.find((r) => r.png);
    expect(figure).toBeDefined();
    const png = Buffer.from(figure?.png ?? "", "base64");
    expect(png.length).toBeGreaterThan(5_000);
    const { width, height } = pngSize(png);
    expect(width).toBeGreaterThan(200);
    expect(height).toBeGreaterThan(150);
    const chart = figure?.chart as unknown as {
      type: string;
      title: string;
      x_label: string;
      y_label: string;
      elements: { label: string; points: [number, number][] }[];
    };
    expect(chart.type).toBe("line");
    expect(chart.title).toBe("Squares");
    expect(chart.x_label).toBe("n");
    expect(chart.y_label).toBe("n squared");
    expect(chart.elements[0]?.label).toBe("squares");
    expect(chart.elements[0]?.points).toEqual([
      [1, 1],
      [2, 4],
      [3, 9],
      [4, 16],
    ]);
  });

  it("returns a bar chart's data", async () => {
    const execution = await sandbox().runCode(
      "import matplotlib.pyplot as plt\nplt.bar(['a', 'b', 'c'], [3, 5, 2])\nplt.title('Counts')\nplt.show()\n",
    );
    const chart = execution.results.find((r) => r.chart)?.chart as unknown as {
      type: string;
      title: string;
      elements: { label: string; value: string }[];
    };
    expect(chart.type).toBe("bar");
    expect(chart.title).toBe("Counts");
    expect(chart.elements.map((e) => [e.label, e.value])).toEqual([
      ["a", "3"],
      ["b", "5"],
      ["c", "2"],
    ]);
  });

  it("returns each display MIME type in the field the SDK reads it from", async () => {
    const execution = await sandbox().runCode(
      [
        "from IPython.display import display, Markdown, Latex, JSON, SVG, Javascript",
        "display(Markdown('**bold**'))",
        "display(Latex('$x^2$'))",
        "display(JSON({'a': 1}))",
        'display(SVG(\'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>\'))',
        "display(Javascript('1 + 1'))",
      ].join("\n"),
    );
    expect(execution.error).toBeUndefined();
    const [markdown, latex, json, svg, javascript] = execution.results;
    expect(markdown?.markdown).toBe("**bold**");
    expect(latex?.latex).toBe("$x^2$");
    expect(json?.json).toEqual({ a: 1 });
    expect(svg?.svg).toContain("<svg");
    expect(javascript?.javascript).toBe("1 + 1");
    expect(execution.results.every((r) => !r.isMainResult)).toBe(true);
  });

  it("returns a pandas DataFrame as HTML", async () => {
    const execution = await sandbox().runCode(
      "import pandas as pd\npd.DataFrame({'city': ['Oslo', 'Lima'], 'n': [1, 2]})",
    );
    expect(execution.error).toBeUndefined();
    const html = execution.results[0]?.html ?? "";
    expect(html).toContain("<table");
    expect(html).toContain("Oslo");
    expect(execution.results[0]?.data).toMatchObject({
      columns: ["city", "n"],
      data: [
        ["Oslo", 1],
        ["Lima", 2],
      ],
    });
  });

  it("ends a while True with timeoutMs in a timeout error, and the context still works", async () => {
    const ctx = await sandbox().createCodeContext();
    await sandbox().runCode("state = 'kept'", { context: ctx });
    const started = Date.now();
    await expect(sandbox().runCode("while True:\n    pass\n", { context: ctx, timeoutMs: 2_000 })).rejects.toThrow(
      TimeoutError,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
    // The loop was interrupted (not left spinning): the next cell runs at once, with the state kept.
    const next = await sandbox().runCode("state", { context: ctx, timeoutMs: 15_000 });
    expect(next.text).toBe("'kept'");
  });

  it("restartContext clears the context's state", async () => {
    const ctx = await sandbox().createCodeContext();
    await sandbox().runCode("gone = 1", { context: ctx });
    await sandbox().restartCodeContext(ctx);
    const after = await sandbox().runCode("gone", { context: ctx });
    expect(after.error?.name).toBe("NameError");
    expect((await sandbox().runCode("1 + 1", { context: ctx })).text).toBe("2");
  });

  it("sets envs for one call only, over the sandbox's own variables", async () => {
    const code = "import os; (os.environ.get('PER_CALL'), os.environ.get('FROM_CREATE'))";
    expect((await sandbox().runCode(code, { envs: { PER_CALL: "yes" } })).text).toBe("('yes', 'yes')");
    expect((await sandbox().runCode(code)).text).toBe("(None, 'yes')");
  });

  it("refuses an execution without the sandbox's envd access token", async () => {
    const res = await fetch(`${edge?.url}/execute`, {
      method: "POST",
      headers: { "E2b-Sandbox-Id": sandbox().sandboxId, "E2b-Sandbox-Port": "49999" },
      body: JSON.stringify({ code: "1" }),
    });
    expect(res.status).toBe(401);
  });
});

describe("Wrenn's SDK runCode", () => {
  it("runs code in a sandbox it connected to (fetching the envd token) and streams output", async () => {
    const wrenn = await WrennSandbox.connect(sandbox().sandboxId, { apiUrl: edge?.url, apiKey });
    const out: string[] = [];
    const execution = await wrenn.runCode("print('hi')\n6 * 7", { onStdout: (t) => void out.push(t) });
    expect(out.join("")).toBe("hi\n");
    expect(execution.text).toBe("42");
    const failed = await wrenn.runCode("raise ValueError('bad')");
    expect(failed.error).toMatchObject({ name: "ValueError", value: "bad" });
  });
});

describe("wrenn sandbox run-code", () => {
  it("prints output and text results, saves a figure with its chart data, and exits 1 when the code raised", async () => {
    const dir = await mkdtemp(join(tmpdir(), "wrenn-run-code-"));
    try {
      const env = { ...process.env, WRENN_API_URL: edge?.url ?? "", WRENN_API_KEY: apiKey } as Record<string, string>;
      const id = sandbox().sandboxId;
      const text = await runWrenn(["sandbox", "run-code", id, "--code", "print('out')\n6 * 7"], env);
      expect({ code: text.code, stdout: text.stdout, stderr: text.stderr }).toEqual({
        code: 0,
        stdout: "out\n42\n",
        stderr: "",
      });

      const script = join(dir, "plot.py");
      await writeFile(
        script,
        "import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4], label='l')\nplt.title('T')\nplt.show()\n",
      );
      const out = join(dir, "charts");
      const plot = await runWrenn(["sandbox", "run-code", id, "--file", script, "--out-dir", out], env);
      expect(plot.code, plot.stderr).toBe(0);
      const saved = (await readdir(out)).sort();
      expect(saved).toHaveLength(2);
      const [chartFile, pngFile] = saved;
      expect(chartFile).toMatch(/^result-\d+-1\.chart\.json$/);
      expect(pngFile).toMatch(/^result-\d+-1\.png$/);
      pngSize(await readFile(join(out, pngFile ?? "")));
      const chart = JSON.parse(await readFile(join(out, chartFile ?? ""), "utf8")) as { type: string; title: string };
      expect([chart.type, chart.title]).toEqual(["line", "T"]);
      expect(plot.stderr).toContain(`saved ${join(out, pngFile ?? "")}`);

      const failed = await runWrenn(["sandbox", "run-code", id, "--code", "raise ValueError('bad')"], env);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toMatch(/ValueError: bad/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
