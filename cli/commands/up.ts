import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { access, cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Worker } from "node:worker_threads";
import type { Env } from "../../edge/env.js";
import type { NodeEdge } from "../../edge/node.js";
import { parseCommand, usageError } from "../args.js";
import type { CommandContext } from "../context.js";
import { CliError, exitCodes } from "../errors.js";
import { freePort, type LocalAgent, portIsFree, resolveAgentToken, startLocalAgent } from "../local-agent.js";
import type { Output } from "../output.js";
import { packageRoot } from "../paths.js";
import { ensureImage } from "./image.js";

/**
 * The edge's modules, loaded on demand: importing them (hono, zod-openapi, drizzle, PGlite) is a good
 * part of start-up, and it runs while PGlite initialises its data directory in a worker. `up` builds
 * nothing of the edge itself: `startNodeEdge` composes it, and its `services()` serve the host's
 * registration and settling.
 */
async function loadEdge() {
  const [env, logger, node, register, settle, adminKey] = await Promise.all([
    import("../../edge/env.js"),
    import("../../edge/logger.js"),
    import("../../edge/node.js"),
    import("../../edge/services/hosts/register.js"),
    import("../../edge/services/hosts/settle.js"),
    import("./admin-key.js"),
  ]);
  return { env, logger, node, register, settle, adminKey };
}
type EdgeModules = Awaited<ReturnType<typeof loadEdge>>;

/**
 * Runs in a worker thread: PGlite's first open of a directory (its initdb) is seconds of CPU, and so
 * is applying the migrations to a new database. With `migrationsFolder`, it applies them too.
 */
const initdbWorkerSource = `
const { workerData, parentPort } = require("node:worker_threads");
(async () => {
  const { PGlite } = await import(workerData.pglite);
  const db = await PGlite.create(workerData.dataDir);
  try {
    if (workerData.migrationsFolder) {
      const { drizzle } = await import(workerData.drizzle);
      const { migrate } = await import(workerData.migrator);
      await migrate(drizzle({ client: db }), { migrationsFolder: workerData.migrationsFolder });
    }
  } finally {
    await db.close();
  }
})().then(
  () => parentPort.postMessage(""),
  (err) => parentPort.postMessage(String((err && err.stack) || err)),
);
`;

/**
 * Runs PGlite's initdb on `dir` in a worker thread, then the migrations in `migrationsFolder` if
 * given; resolves with an error message, or "" on success.
 */
async function initdbInWorker(dir: string, migrationsFolder?: string): Promise<string> {
  const workerData = {
    pglite: import.meta.resolve("@electric-sql/pglite"),
    drizzle: import.meta.resolve("drizzle-orm/pglite"),
    migrator: import.meta.resolve("drizzle-orm/pglite/migrator"),
    dataDir: dir,
    migrationsFolder,
  };
  const worker = new Worker(initdbWorkerSource, { eval: true, workerData });
  const message = await new Promise<string>((done) => {
    worker.once("message", (m: unknown) => done(String(m)));
    worker.once("error", (err) => done(err.message));
    worker.once("exit", (code) => done(`the worker exited with ${code}`));
  });
  await worker.terminate();
  return message;
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/**
 * The edge's migrations: the folder `openNodeDatabase` applies (edge/node/database.ts), named here
 * so that `up` need not load the edge's database modules before it starts preparing the database.
 */
const migrationsFolder = join(packageRoot, "drizzle");

/** A short digest of the PGlite version and the migration files, naming the template they make. */
async function templateKey(): Promise<string | undefined> {
  const packageJson = new URL("../package.json", import.meta.resolve("@electric-sql/pglite"));
  const version: unknown = JSON.parse(await readFile(packageJson, "utf8")).version;
  if (typeof version !== "string" || !/^[\w.+-]+$/.test(version)) return undefined;
  const hash = createHash("sha256");
  const files = (await readdir(migrationsFolder, { recursive: true })).sort();
  for (const file of files) {
    const text = await readFile(join(migrationsFolder, file)).catch(() => undefined);
    if (text) hash.update(file).update(text);
  }
  return `pglite-${version}-${hash.digest("hex").slice(0, 12)}`;
}

/**
 * A PGlite data directory that has been through initdb and the edge's migrations and nothing else,
 * kept in the cache directory per PGlite version and migration set: both are deterministic (the
 * cluster's random system identifier aside, which nothing here uses), so copying the template gives
 * a new data directory in a fraction of the time of running them in WASM. Built in a private
 * directory and renamed into place, so concurrent `up`s never see half a template. Undefined if it
 * cannot be made.
 */
async function pgliteTemplate(cacheDir: string, output: Output): Promise<string | undefined> {
  const key = await templateKey();
  if (!key) return undefined;
  const template = join(cacheDir, key);
  if (await exists(join(template, "PG_VERSION"))) return template;
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  const building = await mkdtemp(`${template}.partial-`);
  try {
    const failure = await initdbInWorker(building, migrationsFolder);
    if (failure) {
      output.err(`note: preparing the database template failed (${failure.split("\n")[0]}); continuing`);
      return undefined;
    }
    await rename(building, template).catch(async (err: NodeJS.ErrnoException) => {
      // Another `up` finished first; theirs is as good.
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  return template;
}

/**
 * Copies the contents of `from` into `to`: with cp(1), which takes a fifth of the time of Node's
 * `fs.cp` on a thousand small files, else with `fs.cp`.
 */
async function copyDirectory(from: string, to: string): Promise<void> {
  const copied = await new Promise<boolean>((resolve) =>
    execFile("cp", ["-a", "--", `${from}/.`, to], (err) => resolve(err === null)),
  );
  if (!copied) await cp(from, to, { recursive: true, force: true });
}

/**
 * Prepares an empty PGlite data directory off the main thread, so that it overlaps with loading the
 * edge's modules and checking (or building) the image, and the event loop stays free to answer
 * `/health` meanwhile: a copy of the cached template, made by initdb and the migrations in a worker
 * on a machine's first run (and after an upgrade that adds migrations). The edge then only opens it. A failure is only reported: the edge initialises the directory
 * itself.
 */
export async function initialiseDatabase(dataDir: string, cacheDir: string, output: Output): Promise<void> {
  if (await exists(join(dataDir, "PG_VERSION"))) return;
  try {
    const template = await pgliteTemplate(cacheDir, output);
    if (template) {
      await copyDirectory(template, dataDir);
      return;
    }
  } catch (err) {
    output.err(`note: copying the database template failed (${(err as Error).message}); continuing`);
  }
  const failure = await initdbInWorker(dataDir);
  if (failure)
    output.err(`note: preparing the database in the background failed (${failure.split("\n")[0]}); continuing`);
}

export const upUsage = `usage: wrenn up [--keep] [--port N] [--data-dir DIR] [--runtime auto|firecracker|qemu|gvisor|namespace]
                [--reset-admin-key] [--domain D [--tls-cert FILE --tls-key FILE] [--tls-port N]]

  Runs Wrenn on this machine (as root): checks the host (\`wrenn doctor\`'s fast checks), installs
  missing host packages, builds the guest image if missing, starts the API with an embedded database,
  starts one local agent with the safest runtime the host has and registers it. The admin key is
  printed with the ready line; a start that died before showing it is followed by one that revokes it
  and prints a new one. --reset-admin-key revokes the keys \`up\` made and prints a new one (for a
  lost key; needs root on the data directory). Ctrl-C stops everything; sandboxes are destroyed, or
  paused with --keep.
  --domain D serves the API and host-routed sandbox URLs (<port>-<id>.D, what E2B SDKs' getHost()
  gives) over https on --tls-port (3443), with the certificate you give (it must name *.D) or one
  signed by a local CA that \`up\` makes in DATA-DIR/tls (it prints how to trust it). D should
  resolve to this machine: browsers resolve *.localhost to it by themselves (e.g. --domain wrenn.localhost).

Environment: WRENN_PORT (3000), WRENN_HOST (127.0.0.1), WRENN_DATA_DIR (./.wrenn), WRENN_RUNTIME (auto),
WRENN_ADMIN_API_KEY,
AGENT_FILES_ROOTDIR (/var/lib/wrenn), WRENN_AGENT_PORT, WRENN_LOG_LEVEL (warn),
WRENN_CACHE_DIR (~/.cache/wrenn: a new database's template, made on the first run).`;

/** The default template `up` makes sure is built. */
const defaultTemplate = "minimal";

/** What `up` remembers between runs in its data directory, so the agent keeps its address (and its host row). */
interface LocalState {
  agentPort: number;
}

async function readLocalState(file: string): Promise<LocalState | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, "utf8"));
    if (
      typeof parsed === "object" &&
      parsed !== null &&
      "agentPort" in parsed &&
      typeof parsed.agentPort === "number"
    ) {
      return { agentPort: parsed.agentPort };
    }
  } catch {
    // first run, or unreadable: choose again
  }
  return undefined;
}

/** The local agent's port: WRENN_AGENT_PORT, else the one used last time, else 5007 when free, else any free port. */
async function chooseAgentPort(configured: number | undefined, stateFile: string): Promise<number> {
  if (configured !== undefined) return configured;
  const previous = await readLocalState(stateFile);
  if (previous && (await portIsFree(previous.agentPort))) return previous.agentPort;
  const port = (await portIsFree(5007)) ? 5007 : await freePort();
  await writeFile(stateFile, `${JSON.stringify({ agentPort: port } satisfies LocalState)}\n`);
  return port;
}

/** The copy-paste example printed once the stack is up. */
export function quickstartExample(apiUrl: string, apiKey: string, directory = packageRoot): string[] {
  return [
    `Try it (in another terminal, in ${directory}: \`./wrenn\` is this checkout's CLI):`,
    "",
    `  export WRENN_API_URL=${apiUrl} WRENN_API_KEY=${apiKey}`,
    "  id=$(./wrenn sandbox create -q)",
    '  ./wrenn sandbox exec "$id" -- echo hello',
    '  ./wrenn sandbox kill "$id"',
    "",
    "or with curl:",
    "",
    `  curl -s -X POST ${apiUrl}/v1/sandboxes -H "X-API-Key: $WRENN_API_KEY" -H 'content-type: application/json' -d '{}'`,
    `  curl -s -X POST ${apiUrl}/v1/sandboxes/<id>/exec -H "X-API-Key: $WRENN_API_KEY" -H 'content-type: application/json' -d '{"cmd":"echo hello"}'`,
    "",
  ];
}

/** What each isolation class means, in one line, for the banner. */
export const isolationMeaning: Record<string, string> = {
  vm: "each sandbox is a VM with its own kernel",
  gvisor: "a user-space kernel (gVisor) stands between guests and this host's kernel; no KVM needed",
  namespace: "sandboxes share this host's kernel (namespaces only): run trusted code only",
};

/** The banner line that says where the API listens and what that exposes. */
export function listenLine(host: string, port: number): string {
  const loopback = host === "127.0.0.1" || host === "::1" || host === "localhost";
  return loopback
    ? `API listening on ${host}:${port} only (this machine); set WRENN_HOST=0.0.0.0 to serve others, behind TLS`
    : `API listening on ${host.includes(":") ? `[${host}]` : host}:${port} (WRENN_HOST), plain HTTP: put TLS in front of it`;
}

/** A Progress whose running steps redraw one terminal line, or print a heartbeat when not a terminal. */
async function upProgress(ctx: CommandContext, logFile: string) {
  const { Progress } = await import("../../rootfs/progress.js");
  const tty = ctx.env.stdoutIsTty && process.stderr.isTTY === true;
  return new Progress(1, (line) => ctx.output.err(line), {
    logFile,
    retryCommand: "npm start",
    ...(tty ? { redraw: (line: string) => ctx.output.rawErr(`\r\x1b[K${line}`) } : {}),
  });
}

/**
 * `wrenn doctor`'s fast checks, before anything long: a host that cannot work fails in the first
 * second, with the fix, instead of after minutes of apt and image building.
 */
async function preflight(ctx: CommandContext, dataDir: string, port: number): Promise<void> {
  const doctor = await import("./doctor.js");
  const deps = await doctor.defaultDoctorDeps(ctx.env, { dataDir, port });
  const results = await doctor.fastChecks(deps);
  const failed = results.filter((r) => r.status === "fail");
  for (const r of results) if (r.status !== "ok") ctx.output.err(doctor.formatCheck(r));
  if (failed.length > 0) {
    throw new CliError(`this host cannot run Wrenn yet (${failed.map((r) => r.name).join(", ")}; see above)`, {
      exitCode: exitCodes.usage,
      hint: "fix the lines marked FAIL and run the same command again; `./wrenn doctor` runs every check",
    });
  }
  ctx.output.err(`host checks: ${results.length - failed.length} of ${results.length} fine`);
}

/** The options of one `wrenn up`, from its arguments and the environment. */
interface UpOptions {
  keep: boolean;
  port: number;
  dataDir: string;
  runtime: string;
  /** Loopback unless told otherwise: the API speaks plain HTTP. */
  apiHost: string;
  resetAdminKey: boolean;
  /** HTTPS for `--domain`: the sandbox domain, the port, and the certificate given (else a local CA's). */
  tls?: { domain: string; port: number; certFile?: string; keyFile?: string };
}

function parseUpOptions(ctx: CommandContext, args: string[]): UpOptions | "help" {
  const { values, positionals } = parseCommand(
    args,
    {
      keep: { type: "boolean", default: false },
      port: { type: "string" },
      "data-dir": { type: "string" },
      runtime: { type: "string" },
      "reset-admin-key": { type: "boolean", default: false },
      domain: { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-port": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    upUsage,
  );
  if (values.help) return "help";
  if (positionals.length > 0) usageError("up takes no positional arguments", upUsage);
  const { env } = ctx;
  if (!env.isRoot) {
    throw new CliError("wrenn up needs root: sandboxes use network namespaces, cgroups and (with KVM) VMs", {
      exitCode: exitCodes.usage,
      hint: "run it as root, e.g. sudo npm start",
    });
  }
  const port = values.port === undefined ? env.port : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) usageError(`--port takes a port number`, upUsage);
  const runtime = values.runtime ?? env.runtime ?? env.raw.AGENT_RUNTIME ?? "auto";
  if (!["auto", "firecracker", "qemu", "gvisor", "namespace"].includes(runtime)) {
    usageError(`--runtime takes auto, firecracker, qemu, gvisor or namespace, got "${runtime}"`, upUsage);
  }
  const resetAdminKey = values["reset-admin-key"];
  if (resetAdminKey && env.raw.WRENN_ADMIN_API_KEY) {
    usageError("--reset-admin-key makes a new key, but WRENN_ADMIN_API_KEY names one: unset it or rotate it", upUsage);
  }
  const options: UpOptions = {
    keep: values.keep,
    port,
    dataDir: resolve(values["data-dir"] ?? env.dataDir),
    runtime,
    apiHost: env.raw.WRENN_HOST || "127.0.0.1",
    resetAdminKey,
  };
  const tls = parseTlsOptions(values);
  if (tls) options.tls = tls;
  return options;
}

/** `--domain` and its certificate options; the certificate files come as a pair or not at all. */
export function parseTlsOptions(values: {
  domain?: string | undefined;
  "tls-cert"?: string | undefined;
  "tls-key"?: string | undefined;
  "tls-port"?: string | undefined;
}): UpOptions["tls"] {
  const { domain } = values;
  const certFile = values["tls-cert"];
  const keyFile = values["tls-key"];
  if (domain === undefined) {
    if (certFile !== undefined || keyFile !== undefined || values["tls-port"] !== undefined) {
      usageError("--tls-cert, --tls-key and --tls-port go with --domain", upUsage);
    }
    return undefined;
  }
  if (!/^(?=.{1,200}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(domain)) {
    usageError(`--domain takes a domain name such as wrenn.localhost, got "${domain}"`, upUsage);
  }
  if ((certFile === undefined) !== (keyFile === undefined)) {
    usageError("--tls-cert and --tls-key go together (a certificate and its key)", upUsage);
  }
  const port = values["tls-port"] === undefined ? 3443 : Number(values["tls-port"]);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) usageError("--tls-port takes a port number", upUsage);
  return {
    domain: domain.toLowerCase(),
    port,
    ...(certFile !== undefined && keyFile !== undefined
      ? { certFile: resolve(certFile), keyFile: resolve(keyFile) }
      : {}),
  };
}

/**
 * The edge's HTTPS settings for `--domain`: the certificate given, or one from the local CA in the data
 * directory (made on first use; how to trust it is printed then and on every start). Sandbox hosts
 * are `<port>-<id>.<domain>[:<tls port>]`, the form E2B SDKs' getHost() gives.
 */
async function tlsEnv(
  output: Output,
  tls: NonNullable<UpOptions["tls"]>,
  dataDir: string,
): Promise<Record<string, string>> {
  let certFile = tls.certFile;
  let keyFile = tls.keyFile;
  if (certFile === undefined || keyFile === undefined) {
    const { ensureLocalTls } = await import("../local-ca.js");
    const local = await ensureLocalTls(join(dataDir, "tls"), tls.domain).catch((err: Error) => {
      throw new CliError(`could not make the local CA for --domain ${tls.domain}: ${err.message}`, {
        hint: "is openssl installed? or give a certificate with --tls-cert and --tls-key",
      });
    });
    certFile = local.certFile;
    keyFile = local.keyFile;
    output.err(
      `${local.newCa ? "made a local CA" : "local CA"}: ${local.caFile} (signs the certificate for *.${tls.domain})`,
    );
    output.err(
      `  trust it: NODE_EXTRA_CA_CERTS=${local.caFile} for Node (E2B and Wrenn SDKs); for curl and the system: cp ${local.caFile} /usr/local/share/ca-certificates/wrenn-local-ca.crt && update-ca-certificates`,
    );
  }
  return {
    WRENN_TLS_CERT_FILE: certFile,
    WRENN_TLS_KEY_FILE: keyFile,
    WRENN_TLS_PORT: String(tls.port),
    WRENN_SANDBOX_DOMAIN: tls.port === 443 ? tls.domain : `${tls.domain}:${tls.port}`,
  };
}

/** The Node edge `up` runs, once its database is open. */
interface StartedEdge {
  edgeEnv: Env;
  edge: NodeEdge;
}

/**
 * Starts the API at once, on PGlite under the data directory (or DATABASE_URL): /health answers
 * early, and the database's first-run initialisation (`databasePrepared`) hides behind the host
 * packages and the image build. Resolves once the database is open.
 */
async function startEdge(
  ctx: CommandContext,
  options: UpOptions,
  edgeModules: Promise<EdgeModules>,
  databasePrepared: Promise<void> | undefined,
): Promise<StartedEdge> {
  const m = await edgeModules;
  const parsed = m.env.parseEnv({
    ...ctx.env.raw,
    WRENN_PORT: String(options.port),
    WRENN_HOST: options.apiHost,
    WRENN_DATA_DIR: options.dataDir,
    WRENN_LOG_LEVEL: ctx.env.logLevel ?? "warn",
    ...(options.tls ? await tlsEnv(ctx.output, options.tls, options.dataDir) : {}),
  });
  if (!parsed.ok) {
    throw new CliError(
      `invalid environment: ${Object.entries(parsed.errors)
        .map(([k, v]) => `${k}: ${v}`)
        .join("; ")}`,
      { exitCode: exitCodes.usage },
    );
  }
  const logger = m.logger.createConsoleLogger(parsed.env.WRENN_LOG_LEVEL);
  try {
    const edge = await m.node.startNodeEdge(parsed.env, logger, databasePrepared ? { databasePrepared } : {});
    return { edgeEnv: parsed.env, edge };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EADDRINUSE" && options.tls && /WRENN_TLS_PORT/.test(String(err))) {
      throw new CliError(`port ${options.tls.port} (--tls-port) is already in use`, {
        exitCode: exitCodes.usage,
        hint: "stop what uses it or pick another port with --tls-port",
      });
    }
    if ((err as NodeJS.ErrnoException).code === "EADDRINUSE") {
      throw new CliError(`port ${options.port} is already in use`, {
        exitCode: exitCodes.usage,
        hint: "stop what uses it (another `wrenn up`?) or pick another port with WRENN_PORT",
      });
    }
    throw err;
  }
}

/** Installs missing host packages and builds the guest image if missing, reporting build failures with their log. */
async function prepareHost(ctx: CommandContext, logsDir: string, runtime: string): Promise<void> {
  const { ensureHostTools } = await import("../../rootfs/host.js");
  const aptLog = join(logsDir, "host-packages.log");
  await ensureHostTools(await upProgress(ctx, aptLog), { signal: ctx.signal, logFile: aptLog }).catch(
    (err: Error & { hint?: string }) => {
      if (ctx.signal.aborted) throw new CliError("interrupted while installing host packages", { exitCode: 130 });
      // A build error is the user's to act on: its message and hint, the log, and the retry.
      if (err.name !== "BuildError") throw err;
      throw new CliError(err.message, {
        hint: `${err.hint ? `${err.hint}; ` : ""}apt's whole output: ${aptLog}; then retry with: npm start`,
      });
    },
  );
  // Only QEMU boots the microvm kernel, and building it takes ~11 min on 2 idle cores: a first start on
  // gVisor (auto without KVM), namespace or Firecracker does not wait for it.
  const microvmKernel = runtime === "qemu" || ctx.env.raw.WRENN_MICROVM_KERNEL === "build";
  await ensureImage(ctx, defaultTemplate, join(logsDir, "image-build.log"), { microvmKernel });
}

/**
 * Prints the admin key (minted or settled only now that everything is up) and the copy-paste
 * example; a key is marked shown only after it was printed.
 */
async function printAdminKey(
  output: Output,
  m: EdgeModules,
  { edgeEnv, edge }: StartedEdge,
  dataDir: string,
  apiUrl: string,
): Promise<void> {
  if (edgeEnv.WRENN_ADMIN_API_KEY) {
    output.out("Admin API key: the one in WRENN_ADMIN_API_KEY.");
    output.out("");
    for (const line of quickstartExample(apiUrl, "$WRENN_ADMIN_API_KEY")) output.out(line);
    return;
  }
  const outcome = await m.adminKey.settleAdminKey(edge.database.db, dataDir, edge.generatedAdminKey);
  if (outcome.kind !== "new") {
    output.out(
      "Use the admin API key printed on the first start (lost it? `npm start -- --reset-admin-key` prints a new one).",
    );
    output.out("");
    return;
  }
  if (outcome.reset) {
    output.out(`--reset-admin-key: revoked ${outcome.replaced.length} admin key(s) made by wrenn up; the new one:`);
    output.out("");
  } else if (outcome.replaced.length > 0) {
    output.out(
      `A previous start minted an admin key at ${outcome.replaced.map((k) => k.createdAt.toISOString()).join(", ")} and stopped before showing it; it is revoked, and this one replaces it.`,
    );
    output.out("");
  }
  output.out("Admin API key (shown once; store it now):");
  output.out("");
  output.out(`  ${outcome.secret}`);
  output.out("");
  for (const line of quickstartExample(apiUrl, outcome.secret)) output.out(line);
  await m.adminKey.markAdminKeyShown(dataDir, outcome.keyId);
}

/** Resolves with why `up` stops: Ctrl-C / SIGTERM, or the local agent exiting on its own. */
function stopReason(signal: AbortSignal, agent: LocalAgent): Promise<"signal" | "agent"> {
  return Promise.race([
    new Promise<"signal">((resolveSignal) => {
      if (signal.aborted) resolveSignal("signal");
      signal.addEventListener("abort", () => resolveSignal("signal"), { once: true });
    }),
    agent.exited.then(() => "agent" as const),
  ]);
}

/** `wrenn up` */
export async function upCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const options = parseUpOptions(ctx, args);
  if (options === "help") {
    ctx.output.out(upUsage);
    return exitCodes.ok;
  }
  const { env, output } = ctx;
  const { dataDir, port, runtime, apiHost } = options;

  // 0. The fast host checks, before anything that takes long.
  await preflight(ctx, dataDir, port);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const logsDir = join(dataDir, "logs");
  await mkdir(logsDir, { recursive: true, mode: 0o700 });
  const adminKeyModule = await import("./admin-key.js");
  // Before the database can mint a key: so a start that dies before showing it is noticed by the next.
  if (!env.raw.WRENN_ADMIN_API_KEY) await adminKeyModule.markAdminKeyPending(dataDir, options.resetAdminKey);

  // 1. The API starts at once, while host packages and the guest image are checked or built.
  const databasePrepared = env.raw.DATABASE_URL ? undefined : initialiseDatabase(dataDir, env.cacheDir, output);
  const edgeModules = loadEdge();
  output.err(`starting the API on ${apiHost}:${port} (data in ${dataDir})…`);
  const edgeStarting = startEdge(ctx, options, edgeModules, databasePrepared);
  // Handled below; this only keeps an early failure from being reported as unhandled meanwhile.
  edgeStarting.catch(() => {});
  try {
    await prepareHost(ctx, logsDir, runtime);
  } catch (err) {
    const started = await edgeStarting.catch(() => undefined);
    await started?.edge.close();
    throw err;
  }
  // 2. One local agent as a child (it starts while the API finishes starting), registered as a host.
  const agentPort = await chooseAgentPort(env.agentPort, join(dataDir, "local-agent.json"));
  const token = await resolveAgentToken(env);
  const logFile = join(dataDir, "agent.log");
  output.err(`starting the local agent (runtime ${runtime}) on 127.0.0.1:${agentPort}; log: ${logFile}`);
  const agentStarting = startLocalAgent({
    env,
    host: "127.0.0.1",
    port: agentPort,
    token,
    runtime,
    logFile,
    onSpawned: (pid) => output.err(`local agent starting (pid ${pid})…`),
  });
  agentStarting.catch(() => {});
  let started: StartedEdge;
  try {
    started = await edgeStarting;
  } catch (err) {
    await (await agentStarting.catch(() => undefined))?.stop();
    throw err;
  }
  const m = await edgeModules;
  const { edge } = started;
  const services = edge.services("wrenn-up");
  let agent: LocalAgent | undefined;
  let hostId: string | undefined;
  let isolation = "";
  const stopAll = async (keep: boolean) => {
    if (hostId) {
      await m.settle.settleHostSandboxes(services, hostId, {
        keep,
        onSettled: (s) =>
          output.err(s.outcome === "failed" ? `  ${s.sandboxId}: ${s.message}` : `  ${s.outcome} ${s.sandboxId}`),
      });
    }
    await agent?.stop();
    await edge.close();
  };
  try {
    agent = await agentStarting;
    output.err(`local agent ready (pid ${agent.pid})`);
    const { host } = await m.register.registerHost(services, { address: agent.url, token });
    hostId = host.id;
    isolation = host.isolation;
    output.err(
      `registered host ${host.id} (${host.runtime}, ${host.capacity.vcpus} vCPU, ${host.capacity.memoryMb} MiB)`,
    );
    output.err(
      `local agent runtime: ${host.runtime}, isolation ${host.isolation}: ${isolationMeaning[host.isolation] ?? "unknown"}`,
    );
  } catch (err) {
    await stopAll(false).catch(() => {});
    throw err;
  }
  if (ctx.signal.aborted) {
    await stopAll(false);
    return 130;
  }

  // 3. The key and the example, then the ready line.
  const shownHost = apiHost === "0.0.0.0" || apiHost === "::" ? "127.0.0.1" : apiHost;
  const apiUrl = `http://${shownHost.includes(":") ? `[${shownHost}]` : shownHost}:${edge.port}`;
  output.err(listenLine(apiHost, edge.port));
  if (options.tls && edge.tlsPort !== undefined) {
    const domain = edge.tlsPort === 443 ? options.tls.domain : `${options.tls.domain}:${edge.tlsPort}`;
    output.err(
      `HTTPS on port ${edge.tlsPort}: the API and sandbox hosts <port>-<id>.${domain} (point *.${options.tls.domain} at this machine)`,
    );
  }
  if (isolation === "namespace") output.err("warning: namespace runtime: sandboxes share this host's kernel");
  output.out("");
  await printAdminKey(output, m, started, dataDir, apiUrl);
  output.out(`Wrenn is ready at ${apiUrl}`);

  // 4. Run until Ctrl-C / SIGTERM or until the agent dies.
  if ((await stopReason(ctx.signal, agent)) === "agent") {
    output.err(
      `wrenn: the local agent exited (code ${await agent.exited}); stopping. See ${join(dataDir, "agent.log")}`,
    );
    await edge.close();
    return exitCodes.failure;
  }
  output.err(options.keep ? "stopping; pausing sandboxes (--keep)…" : "stopping; destroying sandboxes…");
  await stopAll(options.keep);
  output.err("stopped");
  return exitCodes.ok;
}
