import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { z } from "zod";
import { type BridgeLauncher, type ContextInfo, KernelContext, KernelError } from "./context.js";
import type { Logger } from "./logger.js";
import { executionLine } from "./results.js";

/**
 * The code-interpreter server: the HTTP protocol the official `@e2b/code-interpreter` SDK speaks to
 * port 49999 of a sandbox (`POST /execute` streaming one JSON object a line; `/contexts`,
 * `/contexts/{id}`, `/contexts/{id}/restart`), over Jupyter kernels (one per context, see context.ts).
 */

/** Languages a context can have; only Python has a kernel in the template (Debian packages no other). */
const LANGUAGES: Record<string, string> = { python: "python", python3: "python" };

/** Upper bound on contexts per sandbox: each is a kernel process of 60–100 MB. */
const MAX_CONTEXTS = 32;
/** Upper bound on a request body (the code of one cell). */
const MAX_BODY_BYTES = 8 * 2 ** 20;

const executeBody = z.object({
  code: z.string(),
  context_id: z.string().min(1).nullish(),
  language: z.string().min(1).nullish(),
  env_vars: z.record(z.string(), z.string()).nullish(),
});

const createContextBody = z.object({
  language: z.string().min(1).nullish(),
  cwd: z.string().min(1).startsWith("/", "an absolute path").nullish(),
});

export interface InterpreterServerOptions {
  launcher: BridgeLauncher;
  logger: Logger;
  /** Working directory of contexts created without one (E2B's is /home/user). */
  defaultCwd: string;
  /**
   * Fetches the sandbox's environment variables from envd (set at create time), presenting the
   * caller's envd access token; undefined means envd refused the token.
   */
  sandboxEnvs: (accessToken: string | undefined) => Promise<Record<string, string> | undefined>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: { code, message, requestId: randomUUID() } }));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, "PAYLOAD_TOO_LARGE", `body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, "BAD_REQUEST", "the body is not JSON");
  }
}

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; ");
    throw new HttpError(400, "BAD_REQUEST", issues);
  }
  return parsed.data;
}

function language(name: string | null | undefined): string {
  const lang = LANGUAGES[(name ?? "python").toLowerCase()];
  if (!lang) {
    throw new HttpError(
      400,
      "BAD_REQUEST",
      `language ${JSON.stringify(name)} is not supported here; this template has a Python kernel only`,
    );
  }
  return lang;
}

/** Holds the contexts of this sandbox and the default one per language. */
export class ContextRegistry {
  private readonly contexts = new Map<string, KernelContext>();
  private readonly defaults = new Map<string, Promise<KernelContext>>();
  /** The sandbox environment last sent to each context's kernel (JSON), to send it only on change. */
  private readonly baseEnvSent = new WeakMap<KernelContext, string>();

  constructor(private readonly opts: InterpreterServerOptions) {}

  /** The default context of a language, started on first use (main.ts starts Python's before ready). */
  defaultContext(lang: string): Promise<KernelContext> {
    let ctx = this.defaults.get(lang);
    if (!ctx) {
      ctx = KernelContext.start(this.opts.launcher, this.opts.logger, { cwd: this.opts.defaultCwd }).then((c) => {
        this.contexts.set(c.id, c);
        return c;
      });
      ctx.catch(() => this.defaults.delete(lang));
      this.defaults.set(lang, ctx);
    }
    return ctx;
  }

  async create(opts: { cwd?: string | null | undefined }): Promise<KernelContext> {
    if (this.contexts.size >= MAX_CONTEXTS) {
      throw new HttpError(429, "TOO_MANY_CONTEXTS", `at most ${MAX_CONTEXTS} contexts per sandbox; remove one first`);
    }
    const ctx = await KernelContext.start(this.opts.launcher, this.opts.logger, {
      cwd: opts.cwd ?? this.opts.defaultCwd,
    });
    this.contexts.set(ctx.id, ctx);
    return ctx;
  }

  get(id: string): KernelContext {
    const ctx = this.contexts.get(id);
    if (!ctx) throw new HttpError(404, "NOT_FOUND", `context ${id} not found`);
    return ctx;
  }

  list(): ContextInfo[] {
    return [...this.contexts.values()].map((c) => c.info());
  }

  async remove(id: string): Promise<void> {
    const ctx = this.get(id);
    this.contexts.delete(id);
    for (const [lang, p] of this.defaults) if ((await p.catch(() => undefined)) === ctx) this.defaults.delete(lang);
    await ctx.close();
  }

  /** The sandbox environment to send with this execution: only when it changed for this kernel. */
  baseEnvFor(ctx: KernelContext, envs: Record<string, string>): Record<string, string> | undefined {
    const json = JSON.stringify(envs);
    if (this.baseEnvSent.get(ctx) === json) return undefined;
    this.baseEnvSent.set(ctx, json);
    return envs;
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.contexts.values()].map((c) => c.close()));
    this.contexts.clear();
    this.defaults.clear();
  }
}

/** Builds the HTTP server (not yet listening). */
export function createInterpreterServer(opts: InterpreterServerOptions): { server: Server; registry: ContextRegistry } {
  const registry = new ContextRegistry(opts);
  const { logger } = opts;

  const execute = async (req: IncomingMessage, res: ServerResponse) => {
    const body = parse(executeBody, await readJson(req));
    if (body.context_id && body.language) {
      throw new HttpError(400, "BAD_REQUEST", "give context_id or language, not both");
    }
    const token = req.headers["x-access-token"];
    const sandboxEnvs = await opts.sandboxEnvs(typeof token === "string" ? token : undefined);
    if (sandboxEnvs === undefined) {
      throw new HttpError(401, "UNAUTHORIZED", "the X-Access-Token header does not match this sandbox's envd token");
    }
    const ctx = body.context_id
      ? registry.get(body.context_id)
      : await registry.defaultContext(language(body.language));
    const aborted = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) aborted.abort();
    });
    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    let kernelMs: number | null = null;
    await ctx.execute(
      body.code,
      body.env_vars ?? {},
      (event) => {
        if (event.event === "done") kernelMs = event.kernel_ms ?? null;
        const line = executionLine(event);
        if (line && !res.destroyed) res.write(`${JSON.stringify(line)}\n`);
      },
      aborted.signal,
      registry.baseEnvFor(ctx, sandboxEnvs),
    );
    // kernel_ms (the kernel's own time, as the bridge saw it) lets a benchmark split the round trip.
    if (!res.destroyed) res.end(`${JSON.stringify({ type: "end_of_execution", kernel_ms: kernelMs })}\n`);
  };

  const route = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://interpreter");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    const method = req.method ?? "GET";
    if (method === "GET" && path === "/health") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("OK");
      return;
    }
    if (method === "POST" && path === "/execute") return execute(req, res);
    if (path === "/contexts") {
      if (method === "GET") return json(res, 200, registry.list());
      if (method === "POST") {
        const body = parse(createContextBody, await readJson(req));
        language(body.language);
        const ctx = await registry.create({ cwd: body.cwd });
        return json(res, 200, ctx.info());
      }
    }
    const match = /^\/contexts\/([^/]+)(\/restart)?$/.exec(path);
    if (match?.[1]) {
      const id = decodeURIComponent(match[1]);
      if (match[2] && method === "POST") {
        await registry.get(id).restart();
        res.writeHead(204).end();
        return;
      }
      if (!match[2] && method === "DELETE") {
        await registry.remove(id);
        res.writeHead(204).end();
        return;
      }
      if (!match[2] && method === "GET") return json(res, 200, registry.get(id).info());
    }
    throw new HttpError(404, "NOT_FOUND", `no route for ${method} ${path}`);
  };

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) return sendError(res, err.status, err.code, err.message);
      if (err instanceof KernelError) return sendError(res, 503, "KERNEL_UNAVAILABLE", err.message);
      logger.error("request failed", { method: req.method, url: req.url, err });
      sendError(res, 500, "INTERNAL", "internal error");
    });
  });
  return { server, registry };
}

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(value));
}
