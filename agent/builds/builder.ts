import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, readFile, realpath, rename, rm, unlink, utimes, writeFile } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { TEMPLATE_BUILD_METADATA } from "../../lib/template-builds.js";
import { AgentError, failedPrecondition, invalidArgument } from "../errors.js";
import type { Exec } from "../exec.js";
import type { FilesLayout } from "../layout.js";
import type { Logger } from "../logger.js";
import type { SandboxManager } from "../sandboxes/manager.js";
import { mergeLayer } from "./merge.js";
import { BUILD_ID_PATTERN, type BuildRecord, BuildRecords, type LogLevel } from "./records.js";
import { type BuildStep, describeStep, parseSteps, stepKeys, type WireStep } from "./steps.js";
import {
  type ImageManifestLike,
  pruneBuiltVersions,
  readManifest,
  switchVersion,
  versionsDir,
  versionsOf,
} from "./versions.js";

/**
 * Template builds on this host (issue 19): StartTemplateBuild, GetTemplateBuild, DeleteTemplate.
 *
 * A build runs in a sandbox of the template it starts from, on the host's runtime, like any tenant
 * code, with egress only to the build mirrors. Steps run through envd; at the end a files-only snapshot
 * copies the sandbox's writable layer out, which is merged over the base tree (agent/builds/merge.ts)
 * into images/.versions/<template>-<key>, and images/<template> is switched to it atomically (a failed
 * build leaves the previous version current). The cache is keyed by the steps: a build whose every step
 * key is cached takes the layer kept for its last step and starts no sandbox. Runtimes whose snapshots
 * keep memory (VMs) have no files-only snapshot; builds there answer FAILED_PRECONDITION for now.
 */

/** The manifest fields a built template adds to an installed image's. */
export interface BuiltManifest extends ImageManifestLike {
  build: {
    buildId: string;
    fromTemplate: string;
    fromVersion: string;
    stepKeys: string[];
  };
  /** The default user and working directory of the template's sandboxes (USER, WORKDIR). */
  defaultUser: string;
  workdir: string;
  /** Run at each sandbox start (agent/sandboxes/start-command.ts); the create waits for readyCmd. */
  start: { cmd: string; readyCmd: string } | null;
}

export interface StartBuildInput {
  buildId: string;
  template: string;
  fromTemplate: string;
  fromImage: string;
  steps: WireStep[];
  startCmd: string;
  readyCmd: string;
  force: boolean;
  files: Record<string, Uint8Array>;
  vcpus: number;
  memoryMb: number;
  allowOut: string[];
}

export interface BuildView {
  status: BuildRecord["status"];
  entries: BuildRecord["logs"];
  logCount: number;
  errorMessage: string;
  errorStep: number;
  version: string;
  cachedSteps: number[];
  startedAt: number;
  finishedAt: number | undefined;
}

export interface TemplateBuilderDeps {
  layout: FilesLayout;
  exec: Exec;
  logger: Logger;
  manager: Pick<
    SandboxManager,
    "create" | "destroy" | "createSnapshot" | "deleteSnapshot" | "listSnapshots" | "list" | "guest" | "envd"
  >;
  /** Whether the runtime takes files-only snapshots (namespace, gVisor): builds need it. */
  filesOnlySnapshots: boolean;
  mirrors: string[];
  defaults: { vcpus: number; memoryMb: number };
  now?: () => number;
}

/** Marks a build sandbox (its metadata key), so a restarted agent ends it and the edge leaves it alone. */
export const BUILD_METADATA = TEMPLATE_BUILD_METADATA;
const BUILD_SNAPSHOT_PREFIX = "build-";
const TEMPLATE_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** A build step may run this long. */
const STEP_TIMEOUT_SEC = 3600;
/** The build sandbox lives at most this long (a build never runs longer). */
const BUILD_SANDBOX_TIMEOUT_SEC = 6 * 3600;
const SHELL = "/bin/bash";
/** A cached step no build used for this long is removed. */
const CACHE_TTL_MS = 7 * 24 * 3600_000;
const sha256 = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex");

class StepFailed extends Error {
  constructor(
    readonly step: number,
    message: string,
  ) {
    super(message);
  }
}

interface BuildState {
  env: Record<string, string>;
  workdir: string;
  user: string;
}

/** What the cache keeps per step key: the state after it, and the key of the layer of its files ("": the base's). */
interface CacheEntry extends BuildState {
  layerKey: string;
}

export class TemplateBuilder {
  readonly #deps: TemplateBuilderDeps;
  readonly records: BuildRecords;
  readonly #running = new Map<string, Promise<void>>();
  /** Builds per template, one after another. */
  readonly #templateChains = new Map<string, Promise<void>>();

  constructor(deps: TemplateBuilderDeps) {
    this.#deps = deps;
    this.records = new BuildRecords(deps.layout.stateRoot, deps.logger);
  }

  #now(): number {
    return this.#deps.now?.() ?? Date.now();
  }

  /**
   * Reads the records a previous agent left (its running builds end as failed) and removes what those
   * builds left: their sandboxes (recovered by the manager, marked by metadata) and snapshots. Call after
   * the manager's recovery.
   */
  async load(): Promise<void> {
    await this.records.load(this.#now());
    await this.pruneCache().catch((err) => this.#deps.logger.warn("could not prune the build cache", { err }));
    const { manager } = this.#deps;
    for (const s of manager.list().sandboxes) {
      if (s.status !== "stopped" && s.metadata[BUILD_METADATA] !== undefined) {
        await manager
          .destroy(s.id)
          .catch((err) => this.#deps.logger.warn("could not end a left build sandbox", { sandboxId: s.id, err }));
      }
    }
    for (const snap of manager.listSnapshots()) {
      if (snap.snapshotId.startsWith(BUILD_SNAPSHOT_PREFIX))
        await manager.deleteSnapshot(snap.snapshotId).catch(() => undefined);
    }
  }

  /** Validates and starts a build in the background; a known build id returns at once. */
  async start(input: StartBuildInput): Promise<void> {
    if (!BUILD_ID_PATTERN.test(input.buildId)) {
      throw invalidArgument("INVALID_BUILD_ID", "build_id must be 1 to 64 characters of [A-Za-z0-9_-]");
    }
    if (this.records.get(input.buildId)) return;
    if (!TEMPLATE_NAME.test(input.template)) {
      throw invalidArgument("INVALID_TEMPLATE", "template must be 1 to 63 characters of [a-z0-9_-]");
    }
    if ((input.fromTemplate === "") === (input.fromImage === "")) {
      throw invalidArgument("INVALID_BUILD_SOURCE", "give exactly one of from_template and from_image");
    }
    if (input.fromImage !== "") {
      throw failedPrecondition(
        "BUILD_FROM_IMAGE_UNSUPPORTED",
        "this agent builds from templates only (from_image is not supported yet)",
      );
    }
    if (!this.#deps.filesOnlySnapshots) {
      throw failedPrecondition(
        "BUILD_RUNTIME_UNSUPPORTED",
        "template builds need the namespace or gVisor runtime on this host",
      );
    }
    for (const [hash, bytes] of Object.entries(input.files)) {
      if (sha256(bytes) !== hash)
        throw invalidArgument(
          "INVALID_BUILD_FILES",
          `the archive under ${hash.slice(0, 16)}… does not have that sha256`,
        );
    }
    const steps = parseSteps(input.steps, new Set(Object.keys(input.files)));
    const base = await readManifest(this.#deps.layout, input.fromTemplate);
    if (!base)
      throw new AgentError("NOT_FOUND", "TEMPLATE_NOT_FOUND", `template ${input.fromTemplate} is not on this host`);
    const current = (await readManifest(this.#deps.layout, input.template)) as BuiltManifest | undefined;
    if (current && !current.build) {
      throw failedPrecondition(
        "TEMPLATE_INSTALLED",
        `template ${input.template} is an installed image; a build cannot replace it`,
      );
    }
    if (this.records.get(input.buildId)) return;
    const record = await this.records.create(input.buildId, input.template, this.#now());
    const previous = this.#templateChains.get(input.template) ?? Promise.resolve();
    const run = previous
      .then(() => this.#build(record, input, steps, base))
      .catch((err) => this.#deps.logger.error("template build crashed", { buildId: input.buildId, err }));
    this.#templateChains.set(input.template, run);
    this.#running.set(input.buildId, run);
    void run.finally(() => {
      this.#running.delete(input.buildId);
      void this.pruneCache().catch((err) => this.#deps.logger.warn("could not prune the build cache", { err }));
      void this.records.prune(this.#now());
      if (this.#templateChains.get(input.template) === run) this.#templateChains.delete(input.template);
    });
  }

  get(buildId: string, offset: number): BuildView {
    const r = this.records.get(buildId);
    if (!r) throw new AgentError("NOT_FOUND", "BUILD_NOT_FOUND", `build ${buildId} is not known on this host`);
    return {
      status: r.status,
      entries: r.logs.slice(offset),
      logCount: r.logs.length,
      errorMessage: r.errorMessage,
      errorStep: r.errorStep,
      version: r.version,
      cachedSteps: r.cachedSteps,
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
    };
  }

  /** Waits for the builds running now (tests, shutdown). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.#running.values()]);
    await this.records.flush();
  }

  async #build(
    record: BuildRecord,
    input: StartBuildInput,
    steps: BuildStep[],
    base: ImageManifestLike,
  ): Promise<void> {
    const log = (level: LogLevel, message: string) => this.records.log(record, level, message, this.#now());
    const started = performance.now();
    const baseVersion = base.key;
    const keys = stepKeys(`${input.fromTemplate}@${baseVersion}`, steps);
    const lastKey = keys.at(-1) ?? sha256(`wrenn-template-build-empty\0${input.fromTemplate}@${baseVersion}`);
    const versionKey = sha256(`${lastKey}\0${input.startCmd}\0${input.readyCmd}`).slice(0, 16);
    log(
      "info",
      `building ${input.template} from ${input.fromTemplate} (version ${baseVersion}), ${steps.length} steps`,
    );
    let sandboxId: string | undefined;
    let failedStep = -1;
    try {
      // The longest run of steps the cache holds, up to the first forced one.
      const firstForced = input.force ? 0 : steps.findIndex((s) => s.force);
      const usable = firstForced === -1 ? steps.length : firstForced;
      let cached = -1;
      let entry: CacheEntry | undefined;
      for (let i = 0; i < usable; i++) {
        const e = await this.#readEntry(keys[i] as string);
        if (!e) break;
        cached = i;
        entry = e;
      }
      if (usable < steps.length) log("info", `the cache is skipped from step ${usable} on (force)`);
      for (let i = 0; i <= cached; i++) log("info", `CACHED step ${i}: ${describeStep(steps[i] as BuildStep)}`);
      record.cachedSteps = Array.from({ length: cached + 1 }, (_, i) => i);
      const state: BuildState = entry
        ? { env: { ...entry.env }, workdir: entry.workdir, user: entry.user }
        : {
            env: { ...base.env },
            workdir: typeof base.workdir === "string" ? base.workdir : "/home/user",
            user: typeof base.defaultUser === "string" ? base.defaultUser : "user",
          };
      let layerKey = entry?.layerKey ?? "";
      if (cached < steps.length - 1) {
        sandboxId = randomBytes(10).toString("hex");
        log(
          "info",
          `starting the build sandbox ${sandboxId}${layerKey ? ` on the cached files of step ${cached}` : ""}`,
        );
        const createStarted = performance.now();
        await this.#deps.manager.create({
          sandboxId,
          template: input.fromTemplate,
          vcpus: input.vcpus || this.#deps.defaults.vcpus,
          memoryMb: input.memoryMb || this.#deps.defaults.memoryMb,
          timeoutSec: BUILD_SANDBOX_TIMEOUT_SEC,
          timeoutAction: "kill",
          envVars: {},
          metadata: { [BUILD_METADATA]: input.buildId },
          accessToken: randomBytes(24).toString("hex"),
          internetAccess: true,
          // Only the mirrors: an allow list plus "deny everything else" (lib/egress-policy.ts).
          network: {
            allowOut: input.allowOut.length > 0 ? input.allowOut : this.#deps.mirrors,
            denyOut: ["0.0.0.0/0"],
          },
          noWait: false,
          // The base version the keys name (its manifest gives its real tree), never a newer one.
          ...(layerKey ? { layer: { dir: this.#layerDir(layerKey), templateTree: base.rootfsTree } } : {}),
        });
        log("debug", `the build sandbox started in ${Math.round(performance.now() - createStarted)} ms`);
        for (let i = cached + 1; i < steps.length; i++) {
          const step = steps[i] as BuildStep;
          const key = keys[i] as string;
          failedStep = i;
          log("info", `step ${i}: ${describeStep(step)}`);
          let t = performance.now();
          await this.#runStep(sandboxId, i, step, state, input, log);
          const ranMs = performance.now() - t;
          // Steps that may change files leave a layer in the cache; ENV and USER only state.
          let savedMs = 0;
          if (step.type === "RUN" || step.type === "COPY" || step.type === "WORKDIR") {
            t = performance.now();
            await this.#saveLayer(sandboxId, input, base, key, i);
            savedMs = performance.now() - t;
            layerKey = key;
          }
          log("debug", `step ${i} took ${Math.round(ranMs)} ms, its cache entry ${Math.round(savedMs)} ms`);
          await this.#writeEntry(key, { ...state, layerKey });
        }
        failedStep = -1;
        await this.#deps.manager.destroy(sandboxId).catch(() => undefined);
        sandboxId = undefined;
      }
      const layer = layerKey ? this.#layerDir(layerKey) : await this.#emptyLayer();
      const version = await this.#commit(input, base, state, layer, versionKey, keys, log);
      log(
        "info",
        `template ${input.template} is now version ${version} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
      );
      await this.records.finish(record, { status: "ready", version }, this.#now());
    } catch (err) {
      const message =
        err instanceof StepFailed
          ? err.message
          : `${failedStep >= 0 ? `step ${failedStep}: ` : ""}${(err as Error).message}`;
      log("error", `build failed: ${message}`);
      await this.records.finish(
        record,
        { status: "error", errorMessage: message, errorStep: err instanceof StepFailed ? err.step : failedStep },
        this.#now(),
      );
    } finally {
      if (sandboxId) await this.#deps.manager.destroy(sandboxId).catch(() => undefined);
    }
  }

  #layerDir(key: string): string {
    return join(this.#cacheRoot(), "layers", key);
  }

  #cacheRoot(): string {
    return join(this.#deps.layout.stateRoot, "builds", "cache");
  }

  async #emptyLayer(): Promise<string> {
    const dir = join(this.#cacheRoot(), "empty");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  async #readEntry(key: string): Promise<CacheEntry | undefined> {
    try {
      const path = join(this.#cacheRoot(), "steps", `${key}.json`);
      const e = JSON.parse(await readFile(path, "utf8")) as CacheEntry;
      if (e.layerKey && !(await exists(this.#layerDir(e.layerKey)))) return undefined;
      // Used now: the cache keeps what builds use (pruneCache goes by these times).
      const now = new Date(this.#now());
      await utimes(path, now, now).catch(() => undefined);
      if (e.layerKey) await utimes(this.#layerDir(e.layerKey), now, now).catch(() => undefined);
      return e;
    } catch {
      return undefined;
    }
  }

  /**
   * Removes the cache's step entries no build used for CACHE_TTL_MS, and layers no entry names that are
   * as old. Runs after each build and at start; a build that reads an entry refreshes its time first.
   */
  async pruneCache(): Promise<void> {
    const now = this.#now();
    const stepsDir = join(this.#cacheRoot(), "steps");
    const named = new Set<string>();
    for (const name of await readdir(stepsDir).catch(() => [] as string[])) {
      const path = join(stepsDir, name);
      const st = await lstat(path).catch(() => undefined);
      if (!st) continue;
      if (now - st.mtimeMs > CACHE_TTL_MS || !name.endsWith(".json")) {
        await rm(path, { force: true });
        continue;
      }
      const layerKey = await readFile(path, "utf8")
        .then((t) => (JSON.parse(t) as CacheEntry).layerKey)
        .catch(() => "");
      if (layerKey) named.add(layerKey);
    }
    const layersDir = join(this.#cacheRoot(), "layers");
    for (const name of await readdir(layersDir).catch(() => [] as string[])) {
      const st = await lstat(join(layersDir, name)).catch(() => undefined);
      if (st && !named.has(name) && now - st.mtimeMs > CACHE_TTL_MS) {
        await rm(join(layersDir, name), { recursive: true, force: true });
      }
    }
  }

  async #writeEntry(key: string, entry: CacheEntry): Promise<void> {
    const dir = join(this.#cacheRoot(), "steps");
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, `${key}.json.tmp`), JSON.stringify(entry));
    await rename(join(dir, `${key}.json.tmp`), join(dir, `${key}.json`));
  }

  /**
   * Copies the build sandbox's writable layer (everything it changed since the base, owners as guest
   * ids) into the cache under `key`, through a files-only snapshot that lives only for the copy.
   */
  async #saveLayer(sandboxId: string, input: StartBuildInput, base: ImageManifestLike, key: string, step: number) {
    const { manager, layout } = this.#deps;
    await this.#sh(sandboxId, "sync", [], "root");
    const snapshotId = `${BUILD_SNAPSHOT_PREFIX}${sha256(input.buildId).slice(0, 24)}-${step + 1}`;
    const { snapshot } = await manager.createSnapshot(sandboxId, snapshotId);
    try {
      // The layer lies over the tree the sandbox started on; the keys name the version read at the
      // start. A base rebuilt in between (npm run image -- build) would not match: the build fails.
      const treeVersion = await readFile(join(dirname(snapshot.templateTree), "manifest.json"), "utf8")
        .then((t) => (JSON.parse(t) as { key?: string }).key)
        .catch(() => undefined);
      if (treeVersion !== base.key) {
        throw new Error(`template ${input.fromTemplate} changed during the build; start it again`);
      }
      const target = this.#layerDir(key);
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      await rm(target, { recursive: true, force: true });
      await rename(join(layout.savedSnapshotDir(snapshotId), "files"), target);
    } finally {
      await manager.deleteSnapshot(snapshotId).catch(() => undefined);
    }
  }

  async #runStep(
    sandboxId: string,
    index: number,
    step: BuildStep,
    state: BuildState,
    input: StartBuildInput,
    log: (level: LogLevel, message: string) => void,
  ): Promise<void> {
    switch (step.type) {
      case "ENV":
        for (const [k, v] of step.vars) state.env[k] = v;
        return;
      case "USER": {
        const r = await this.#sh(sandboxId, 'id -u -- "$1"', [step.name], "root");
        if (r.exitCode !== 0)
          throw new StepFailed(index, `step ${index}: there is no user ${step.name} in the template`);
        state.user = step.name;
        return;
      }
      case "WORKDIR": {
        const path = posix.resolve(state.workdir, step.path);
        const r = await this.#sh(
          sandboxId,
          '[ -d "$1" ] || { mkdir -p -- "$1" && chown -- "$2": "$1"; }',
          [path, state.user],
          "root",
        );
        if (r.exitCode !== 0) throw new StepFailed(index, `step ${index}: could not make ${path}: ${r.output.trim()}`);
        state.workdir = path;
        return;
      }
      case "RUN": {
        const exitCode = await this.#stream(sandboxId, step.command, step.user ?? state.user, state, log);
        if (exitCode !== 0) throw new StepFailed(index, `step ${index} (RUN) exited with code ${exitCode}`);
        return;
      }
      case "COPY": {
        const archive = input.files[step.filesHash];
        if (!archive) throw new StepFailed(index, `step ${index}: the archive is missing`);
        // Unpacked by tar inside the sandbox, so a hostile archive can only harm the build sandbox.
        const path = `/tmp/.wrenn-copy-${step.filesHash.slice(0, 16)}`;
        await this.#deps.manager.envd(sandboxId).writeFile(path, archive, "root");
        const script = [
          "set -e",
          'archive="$1"; src="$2"; dest="$3"; owner="$4"; mode="$5"; cwd="$6"',
          'case "$dest" in /*) ;; *) dest="$cwd/$dest" ;; esac',
          'tmp=$(mktemp -d); tar -xf "$archive" -C "$tmp" --no-same-owner --no-same-permissions; rm -f "$archive"',
          'chown -R -- "$owner": "$tmp"; if [ -n "$mode" ]; then find "$tmp" -mindepth 1 -exec chmod -- "$mode" {} +; fi',
          // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a template
          'rel="${src#./}"; rel="${rel#/}"; rel="${rel%/}"',
          'if [ -n "$rel" ] && [ "$rel" != "." ] && [ -e "$tmp/$rel" ] && [ ! -d "$tmp/$rel" ]; then',
          '  case "$dest" in */) mkdir -p -- "$dest"; cp -a -- "$tmp/$rel" "$dest" ;; *) if [ -d "$dest" ]; then cp -a -- "$tmp/$rel" "$dest/"; else mkdir -p -- "$(dirname -- "$dest")"; cp -a -- "$tmp/$rel" "$dest"; fi ;; esac',
          "else",
          '  from="$tmp"; if [ -n "$rel" ] && [ "$rel" != "." ] && [ -d "$tmp/$rel" ]; then from="$tmp/$rel"; fi',
          '  if [ ! -d "$dest" ]; then mkdir -p -- "$dest"; chown -- "$owner": "$dest"; fi',
          '  cp -a -- "$from/." "$dest/"',
          "fi",
          'rm -rf -- "$tmp"',
        ].join("\n");
        const mode = step.mode === undefined ? "" : step.mode.toString(8);
        const r = await this.#sh(
          sandboxId,
          script,
          [path, step.src, step.dest, step.user ?? state.user, mode, state.workdir],
          "root",
        );
        if (r.output.trim()) for (const line of r.output.trim().split("\n")) log("info", line);
        if (r.exitCode !== 0) throw new StepFailed(index, `step ${index} (COPY) failed with code ${r.exitCode}`);
        return;
      }
    }
  }

  /** Runs a script with bash -c as `user` and returns its exit code and output (not logged). */
  async #sh(
    sandboxId: string,
    script: string,
    args: string[],
    user: string,
  ): Promise<{ exitCode: number; output: string }> {
    const r = await this.#deps.manager.guest.exec(
      {
        sandboxId,
        cmd: SHELL,
        args: ["-c", script, "wrenn-build", ...args],
        envs: {},
        cwd: "/",
        user,
        timeoutSec: STEP_TIMEOUT_SEC,
      },
      undefined,
      new AbortController().signal,
    );
    return { exitCode: r.exitCode, output: `${r.stdout.toString()}${r.stderr.toString()}` };
  }

  /** Runs a RUN step, each line of its output into the build log as it comes. */
  async #stream(
    sandboxId: string,
    command: string,
    user: string,
    state: BuildState,
    log: (level: LogLevel, message: string) => void,
  ): Promise<number> {
    const pending = { stdout: "", stderr: "" };
    const emit = (kind: "stdout" | "stderr", final: boolean) => {
      const lines = pending[kind].split("\n");
      pending[kind] = final ? "" : (lines.pop() ?? "");
      for (const line of lines) if (!final || line !== "") log(kind === "stdout" ? "info" : "warn", line);
    };
    const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
    let exitCode = -1;
    for await (const e of this.#deps.manager.guest.execStream(
      {
        sandboxId,
        cmd: SHELL,
        args: ["-c", command],
        envs: state.env,
        cwd: state.workdir,
        user,
        timeoutSec: STEP_TIMEOUT_SEC,
      },
      new AbortController().signal,
    )) {
      if (e.kind === "stdout" || e.kind === "stderr") {
        pending[e.kind] += decoders[e.kind].decode(e.data, { stream: true });
        emit(e.kind, false);
      } else if (e.kind === "exited") {
        exitCode = e.exitCode;
        if (e.error) log("warn", e.error);
      }
    }
    emit("stdout", true);
    emit("stderr", true);
    return exitCode;
  }

  /** Merges the layer over the base tree into a new version (or reuses it) and makes it current. */
  async #commit(
    input: StartBuildInput,
    base: ImageManifestLike,
    state: BuildState,
    layer: string,
    versionKey: string,
    keys: string[],
    log: (level: LogLevel, message: string) => void,
  ): Promise<string> {
    const { layout, exec } = this.#deps;
    const versions = versionsDir(layout);
    const versionName = `${input.template}-${versionKey}`;
    const versionDir = join(versions, versionName);
    if (!(await exists(join(versionDir, "manifest.json")))) {
      log("info", "writing the template version");
      const work = join(versions, `.build-${versionName}-${process.pid}`);
      await rm(work, { recursive: true, force: true });
      await mkdir(work, { recursive: true });
      try {
        // The base version the cache key names (its manifest gives its real tree), not what the link says now.
        const baseTree = base.rootfsTree || (await realpath(layout.imageRootfsTree(input.fromTemplate)));
        await mergeLayer(exec, baseTree, layer, join(work, "rootfs"));
        const manifest: BuiltManifest = {
          ...base,
          template: input.template,
          key: versionKey,
          versionDir,
          rootfsTree: join(versionDir, "rootfs"),
          // No ext4 image: builds run on the runtimes that start from the tree (namespace, gVisor).
          rootfsExt4: "",
          ext4SizeBytes: 0,
          env: state.env,
          builtAt: new Date(this.#now()).toISOString(),
          buildSeconds: 0,
          build: { buildId: input.buildId, fromTemplate: input.fromTemplate, fromVersion: base.key, stepKeys: keys },
          defaultUser: state.user,
          workdir: state.workdir,
          start: input.startCmd ? { cmd: input.startCmd, readyCmd: input.readyCmd } : null,
        };
        await writeFile(join(work, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
        await rm(versionDir, { recursive: true, force: true });
        await rename(work, versionDir);
      } catch (err) {
        await rm(work, { recursive: true, force: true });
        throw err;
      }
    } else {
      log("info", `version ${versionKey} is already on this host`);
    }
    await switchVersion(layout, input.template, versionName);
    await pruneBuiltVersions(layout, input.template, versionName).catch((err) =>
      this.#deps.logger.warn("could not prune old template versions", { template: input.template, err }),
    );
    return versionKey;
  }

  /** Removes a built template (its link and versions) once no sandbox uses it. */
  async deleteTemplate(template: string): Promise<void> {
    if (!TEMPLATE_NAME.test(template))
      throw invalidArgument("INVALID_TEMPLATE", "template must be 1 to 63 characters of [a-z0-9_-]");
    const { layout } = this.#deps;
    const manifest = (await readManifest(layout, template)) as BuiltManifest | undefined;
    if (!manifest) throw new AgentError("NOT_FOUND", "TEMPLATE_NOT_FOUND", `template ${template} is not on this host`);
    if (!manifest.build) {
      throw failedPrecondition(
        "TEMPLATE_INSTALLED",
        `template ${template} was installed with the host; only built templates can be deleted`,
      );
    }
    if (this.#templateChains.has(template))
      throw failedPrecondition("TEMPLATE_BUILDING", `template ${template} is being built`);
    const users = this.#deps.manager.list().sandboxes.filter((s) => s.template === template && s.status !== "stopped");
    if (users.length > 0) {
      throw failedPrecondition("TEMPLATE_IN_USE", `${users.length} sandboxes of template ${template} still run`);
    }
    await unlink(layout.imageDir(template));
    for (const entry of await versionsOf(layout, template)) {
      await rm(join(versionsDir(layout), entry), { recursive: true, force: true });
    }
  }
}

const exists = (path: string) =>
  lstat(path).then(
    () => true,
    () => false,
  );
