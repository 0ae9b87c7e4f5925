/**
 * The web terminal, a bundle of its own (terminal.js) that the sandbox page loads when the terminal
 * is opened, so the list pages do not ship xterm.js. It speaks to envd's Process service through the
 * edge's sandbox proxy exactly as `wrenn sandbox shell` does (cli/commands/shell.ts): a
 * server-streaming Start with a PTY, keystrokes as SendInput calls, resizes as Update, routed by the
 * E2B headers (e2b-sandbox-id, e2b-sandbox-port) with envd's access token.
 */
import { create } from "@bufbuild/protobuf";
import { type Client, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import {
  type ProcessSelector,
  ProcessSelectorSchema,
  Process as ProcessService,
} from "../../../proto/gen/envd/process/process_pb.js";

const envdPort = 49983;

export interface TerminalHandle {
  /** The xterm.js terminal (tests read its buffer through it). */
  terminal: Terminal;
  /** Starts a new shell after the last one ended or the connection broke. */
  reconnect(): void;
  dispose(): void;
}

/** Reads envd's access token with the session (E2B's GET /sandboxes/{id} accepts the cookie). */
async function envdToken(sandboxId: string): Promise<string | undefined> {
  const res = await fetch(`/sandboxes/${encodeURIComponent(sandboxId)}`, { credentials: "same-origin" });
  if (!res.ok) throw new Error(`the sandbox's envd token: HTTP ${res.status}`);
  return ((await res.json()) as { envdAccessToken?: string | null }).envdAccessToken ?? undefined;
}

function processClient(sandboxId: string, token: string | undefined): Client<typeof ProcessService> {
  const route: Interceptor = (next) => (req) => {
    req.header.set("e2b-sandbox-id", sandboxId);
    req.header.set("e2b-sandbox-port", String(envdPort));
    if (token) req.header.set("x-access-token", token);
    return next(req);
  };
  // No cookies to the guest: the proxy forwards request headers to envd, and the session cookie
  // must never reach code running in the sandbox.
  const fetchWithoutCookies: typeof fetch = (input, init) => fetch(input, { ...init, credentials: "omit" });
  return createClient(
    ProcessService,
    createConnectTransport({ baseUrl: location.origin, interceptors: [route], fetch: fetchWithoutCookies }),
  );
}

/** Opens a terminal in `host` running a login shell in the sandbox. */
export function mountTerminal(
  host: HTMLElement,
  sandboxId: string,
  onStatus: (status: string) => void,
): TerminalHandle {
  const styles = getComputedStyle(document.documentElement);
  const terminal = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, monospace',
    fontSize: 14,
    theme: {
      background: styles.getPropertyValue("--term-bg").trim() || "#0d1117",
      foreground: styles.getPropertyValue("--term-fg").trim() || "#e6edf3",
    },
  });
  const fit = new FitAddon();
  terminal.loadAddon(fit);
  terminal.open(host);
  fit.fit();

  let abort = new AbortController();
  let selector: ProcessSelector | undefined;
  let client: Client<typeof ProcessService> | undefined;
  let sending: Promise<unknown> = Promise.resolve();
  const encoder = new TextEncoder();

  const send = (data: string) => {
    const target = selector;
    const c = client;
    if (!target || !c) return;
    const signal = abort.signal;
    // Chained so keystrokes (and pastes, which xterm.js delivers through onData too) arrive in order.
    sending = sending
      .then(() =>
        c.sendInput({ process: target, input: { input: { case: "pty", value: encoder.encode(data) } } }, { signal }),
      )
      .catch(() => {});
  };
  const resize = () => {
    fit.fit();
    if (selector && client) {
      void client
        .update(
          { process: selector, pty: { size: { cols: terminal.cols, rows: terminal.rows } } },
          { signal: abort.signal },
        )
        .catch(() => {});
    }
  };
  const dataSub = terminal.onData(send);
  const observer = new ResizeObserver(() => resize());
  observer.observe(host);

  const run = async () => {
    abort.abort();
    abort = new AbortController();
    const signal = abort.signal;
    selector = undefined;
    onStatus("Connecting…");
    try {
      client = processClient(sandboxId, await envdToken(sandboxId));
      const stream = client.start(
        {
          process: { cmd: "/bin/bash", args: ["-i", "-l"], envs: { TERM: "xterm-256color" } },
          pty: { size: { cols: terminal.cols, rows: terminal.rows } },
          stdin: true,
        },
        { signal },
      );
      for await (const message of stream) {
        const event = message.event?.event;
        if (!event) continue;
        if (event.case === "start") {
          selector = create(ProcessSelectorSchema, { selector: { case: "pid", value: event.value.pid } });
          onStatus("Connected");
          terminal.focus();
        } else if (event.case === "data") {
          const out = event.value.output;
          if (out.case === "pty" || out.case === "stdout" || out.case === "stderr") terminal.write(out.value);
        } else if (event.case === "end") {
          onStatus(`The shell ended (exit ${event.value.exitCode}).`);
          selector = undefined;
          return;
        }
      }
      if (!signal.aborted) onStatus("Disconnected.");
    } catch (err) {
      if (signal.aborted) return;
      onStatus(`Disconnected: ${err instanceof ConnectError ? err.rawMessage : (err as Error).message}`);
    }
    selector = undefined;
  };
  void run();
  return {
    terminal,
    reconnect: () => void run(),
    dispose: () => {
      abort.abort();
      observer.disconnect();
      dataSub.dispose();
      terminal.dispose();
    },
  };
}
