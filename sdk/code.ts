import { WrennError } from "./errors.js";
import { type ApiClient, segment } from "./http.js";

/**
 * Running code in a `code-interpreter` sandbox: the guest's code-interpreter server on port 49999
 * (a Jupyter kernel per context), reached through the API's sandbox proxy (the `E2b-Sandbox-Id` and
 * `E2b-Sandbox-Port` headers). The same protocol the official `@e2b/code-interpreter` SDK speaks.
 */

/** The guest port of the code-interpreter server. */
export const CODE_INTERPRETER_PORT = 49999;

/** A code context: its own kernel, working directory and language. */
export interface CodeContext {
  id: string;
  language: string;
  cwd: string;
}

/** A chart's data as the server reads it from a matplotlib figure (E2B's chart shape). */
export interface ChartData {
  type: "line" | "scatter" | "bar" | "pie" | "box_and_whisker" | "superchart" | "unknown";
  title: string;
  elements: unknown[];
  [key: string]: unknown;
}

/** One output of an execution: a value (`isMainResult`) or something displayed, in every format it has. */
export interface CodeResult {
  isMainResult: boolean;
  text?: string;
  html?: string;
  markdown?: string;
  svg?: string;
  /** Base64. */
  png?: string;
  /** Base64. */
  jpeg?: string;
  pdf?: string;
  latex?: string;
  json?: unknown;
  javascript?: string;
  /** A DataFrame's first rows: `{ columns, index, data }`. */
  data?: unknown;
  chart?: ChartData;
  /** Other MIME types, by MIME type. */
  extra: Record<string, unknown>;
}

/** An exception raised by the code. */
export interface CodeError {
  name: string;
  value: string;
  traceback: string;
}

/** Everything an execution produced. */
export interface Execution {
  results: CodeResult[];
  logs: { stdout: string[]; stderr: string[] };
  error?: CodeError;
  executionCount?: number;
  /** The main result's text, if there is one. */
  text: string | undefined;
}

/** Options of `runCode`. */
export interface RunCodeOptions {
  /** The context to run in (default: the sandbox's default Python context). */
  context?: CodeContext | string;
  /** Language of the default context to use; only `python` here. Not with `context`. */
  language?: string;
  /** Environment variables for this execution only. */
  envs?: Record<string, string>;
  onStdout?: (text: string) => void | Promise<void>;
  onStderr?: (text: string) => void | Promise<void>;
  onResult?: (result: CodeResult) => void | Promise<void>;
  onError?: (error: CodeError) => void | Promise<void>;
  /** Ends (and interrupts) the execution after this long; default 60 000, 0 for none. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const KNOWN_FIELDS = [
  "text",
  "html",
  "markdown",
  "svg",
  "png",
  "jpeg",
  "pdf",
  "latex",
  "json",
  "javascript",
  "data",
  "chart",
] as const;

function toResult(line: Record<string, unknown>): CodeResult {
  const result: CodeResult = { isMainResult: line.is_main_result === true, extra: {} };
  for (const [key, value] of Object.entries(line)) {
    if (key === "type" || key === "is_main_result") continue;
    if ((KNOWN_FIELDS as readonly string[]).includes(key)) (result as unknown as Record<string, unknown>)[key] = value;
    else result.extra[key] = value;
  }
  return result;
}

/** The sandbox's code interpreter; `sandbox.code`, or `sandbox.runCode()` for the common case. */
export class CodeInterpreter {
  private token: Promise<string | undefined> | undefined;

  constructor(
    private readonly api: ApiClient,
    private readonly sandboxId: string,
    envdAccessToken: string | undefined,
  ) {
    if (envdAccessToken !== undefined) this.token = Promise.resolve(envdAccessToken);
  }

  /**
   * envd's access token, which the server checks on every execution. A handle from `Sandbox.connect`
   * does not have it; the E2B-compatible `GET /sandboxes/{id}` of the same API gives it to the key's team.
   */
  private accessToken(): Promise<string | undefined> {
    this.token ??= this.api
      .json<{ envdAccessToken?: string }>("GET", `/sandboxes/${segment(this.sandboxId)}`)
      .then((d) => d.envdAccessToken)
      .catch(() => undefined);
    return this.token;
  }

  private async call(
    method: string,
    path: string,
    options: { json?: unknown; signal?: AbortSignal; timeoutMs?: number } = {},
  ) {
    const headers: Record<string, string> = {
      "e2b-sandbox-id": this.sandboxId,
      "e2b-sandbox-port": String(CODE_INTERPRETER_PORT),
    };
    const token = await this.accessToken();
    if (token) headers["x-access-token"] = token;
    return this.api.raw(method, path, { ...options, headers });
  }

  /** Runs code and returns everything it produced; output is streamed to the callbacks as it comes. */
  async runCode(code: string, options: RunCodeOptions = {}): Promise<Execution> {
    if (options.context !== undefined && options.language !== undefined) {
      throw new WrennError("BAD_REQUEST", "runCode: give context or language, not both");
    }
    const contextId = typeof options.context === "string" ? options.context : options.context?.id;
    const res = await this.call("POST", "/execute", {
      json: { code, context_id: contextId, language: options.language, env_vars: options.envs },
      timeoutMs: options.timeoutMs ?? 60_000,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const execution: Execution = {
      results: [],
      logs: { stdout: [], stderr: [] },
      get text() {
        return this.results.find((r) => r.isMainResult)?.text;
      },
    };
    if (!res.body) return execution;
    const decoder = new TextDecoder();
    let buffer = "";
    const handle = async (line: string) => {
      if (line.trim() === "") return;
      const msg = JSON.parse(line) as Record<string, unknown>;
      switch (msg.type) {
        case "stdout":
          execution.logs.stdout.push(String(msg.text));
          await options.onStdout?.(String(msg.text));
          break;
        case "stderr":
          execution.logs.stderr.push(String(msg.text));
          await options.onStderr?.(String(msg.text));
          break;
        case "result": {
          const result = toResult(msg);
          execution.results.push(result);
          await options.onResult?.(result);
          break;
        }
        case "error":
          execution.error = { name: String(msg.name), value: String(msg.value), traceback: String(msg.traceback) };
          await options.onError?.(execution.error);
          break;
        case "number_of_executions":
          execution.executionCount = Number(msg.execution_count);
          break;
      }
    };
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
          await handle(buffer.slice(0, nl));
          buffer = buffer.slice(nl + 1);
        }
      }
      await handle(buffer);
    } catch (err) {
      if (
        err instanceof Error &&
        (err.name === "TimeoutError" || err.name === "AbortError") &&
        !options.signal?.aborted
      ) {
        throw new WrennError("TIMEOUT", `runCode: execution timed out after ${options.timeoutMs ?? 60_000} ms`, {
          cause: err,
        });
      }
      throw err;
    }
    return execution;
  }

  /** Creates a context: a new kernel with its own state and working directory. */
  async createContext(options: { cwd?: string; language?: string } = {}): Promise<CodeContext> {
    const res = await this.call("POST", "/contexts", { json: options });
    return (await res.json()) as CodeContext;
  }

  async listContexts(): Promise<CodeContext[]> {
    const res = await this.call("GET", "/contexts");
    return (await res.json()) as CodeContext[];
  }

  /** Restarts a context's kernel: its state is cleared. */
  async restartContext(context: CodeContext | string): Promise<void> {
    const id = typeof context === "string" ? context : context.id;
    const res = await this.call("POST", `/contexts/${segment(id)}/restart`);
    await res.body?.cancel();
  }

  async removeContext(context: CodeContext | string): Promise<void> {
    const id = typeof context === "string" ? context : context.id;
    const res = await this.call("DELETE", `/contexts/${segment(id)}`);
    await res.body?.cancel();
  }
}
