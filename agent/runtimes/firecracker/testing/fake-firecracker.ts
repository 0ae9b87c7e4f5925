/**
 * A stand-in `firecracker` executable for tests on machines without KVM: it takes Firecracker's
 * command line, serves the spec-checking double (fake-vmm.ts) on `--api-sock`, and journals every
 * request so a test can assert the exact sequence a driver sent. Run as
 * `node --import tsx fake-firecracker.ts --api-sock <path>` from a wrapper script named `firecracker`.
 *
 * Knobs (environment, set by the wrapper the test writes; this program's only configuration):
 * - FAKE_FC_JOURNAL: file to append one JSON line per request to.
 * - FAKE_FC_FAULT: comma-separated `METHOD /path` list answered with 400 and an injected fault_message.
 * - FAKE_FC_EXIT_ON: `METHOD /path` on which the process dies (exit 3) without answering.
 * - FAKE_FC_NO_SOCKET=1: never create the API socket (a hung start).
 * - FAKE_FC_ROOT: directory paths in requests are relative to (the jail's root under a fake jailer).
 * - FAKE_FC_UID: the uid a jailed Firecracker would run as; files it writes must be that user's.
 */
import { execFile } from "node:child_process";
import { appendFileSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { promisify } from "node:util";
import { FakeVmm } from "./fake-vmm.js";

const execFileAsync = promisify(execFile);

/** Flags Firecracker's binary accepts that take a value (from `firecracker --help`, v1.x). */
const valueFlags = new Set([
  "--api-sock",
  "--id",
  "--start-time-us",
  "--start-time-cpu-us",
  "--parent-cpu-time-us",
  "--config-file",
  "--log-path",
  "--level",
  "--module",
  "--metrics-path",
  "--seccomp-filter",
  "--http-api-max-payload-size",
  "--mmds-size-limit",
]);
const switchFlags = new Set(["--no-api", "--no-seccomp", "--boot-timer", "--show-level", "--show-log-origin"]);

function parseArgs(argv: string[]): Map<string, string> {
  const args = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    if (switchFlags.has(name)) {
      args.set(name, "true");
    } else if (valueFlags.has(name)) {
      const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) fail(`Argument '${name}' needs a value`);
      args.set(name, value);
    } else {
      fail(`Found argument '${arg}' which wasn't expected, or isn't valid in this context.`);
    }
  }
  return args;
}

function fail(message: string): never {
  process.stderr.write(`fake firecracker: ${message}\n`);
  process.exit(1);
}

const env = process.env;
if (process.argv.includes("--version")) {
  process.stdout.write("Firecracker v1.99.0-spec-double\n");
  process.exit(0);
}
const args = parseArgs(process.argv.slice(2));
const root = env.FAKE_FC_ROOT ?? "/";
const socketPath = join(root, args.get("--api-sock") ?? "/run/firecracker.socket");
const faults = new Set((env.FAKE_FC_FAULT ?? "").split(",").filter((s) => s !== ""));
const exitOn = env.FAKE_FC_EXIT_ON;
const journal = env.FAKE_FC_JOURNAL;

function record(entry: Record<string, unknown>): void {
  if (journal !== undefined) appendFileSync(journal, `${JSON.stringify({ pid: process.pid, ...entry })}\n`);
}

record({ event: "start", argv: process.argv.slice(2) });

if (env.FAKE_FC_NO_SOCKET === "1") {
  // A Firecracker that hangs before serving its API: stay alive until killed.
  setInterval(() => {}, 60_000);
} else {
  // Like Firecracker, refuse to start over an existing socket file: the caller must remove stale ones.
  if (existsSync(socketPath)) fail(`Failed to open the API socket at ${socketPath}: Address in use`);

  const vmm = new FakeVmm({
    root,
    // Asked over netlink, which answers for the netns this process is in however it entered it
    // (/sys shows the creator's netns unless remounted, which the jailer's setns does not do).
    tapExists: async (name) => {
      try {
        const { stdout } = await execFileAsync("ip", ["-d", "-o", "link", "show", "dev", name]);
        return stdout.includes("tun type tap");
      } catch {
        return false;
      }
    },
    ...(env.FAKE_FC_UID !== undefined ? { runAsUid: Number(env.FAKE_FC_UID) } : {}),
    onGuestRunning: () => process.stdout.write("[fake guest] running\n"),
  });

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const method = req.method ?? "";
      const path = req.url ?? "";
      const rawBody = Buffer.concat(chunks).toString("utf8");
      const key = `${method} ${path}`;
      if (key === exitOn) {
        record({ event: "exit-on", method, path });
        process.exit(3);
      }
      const handled = faults.has(key)
        ? Promise.resolve({ status: 400, body: { fault_message: `injected fault for ${key}` }, exitAfter: false })
        : vmm.handle(method, path, rawBody);
      handled.then(
        (response) => {
          let body: unknown;
          try {
            body = rawBody === "" ? undefined : JSON.parse(rawBody);
          } catch {
            body = rawBody;
          }
          record({ event: "request", method, path, body, status: response.status, answer: response.body });
          const text = response.body === undefined ? "" : JSON.stringify(response.body);
          res.writeHead(response.status, {
            "Content-Type": "application/json",
            "Content-Length": Buffer.byteLength(text),
          });
          res.end(text, () => {
            if (response.exitAfter) process.exit(1);
          });
        },
        (err: unknown) => {
          record({ event: "crash", method, path, error: String(err) });
          res.writeHead(500).end();
        },
      );
    });
  });
  server.listen(socketPath);
}

process.on("SIGTERM", () => {
  record({ event: "sigterm" });
  process.exit(0);
});
