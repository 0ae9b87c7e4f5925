import { createHash } from "node:crypto";
import { invalidArgument } from "../errors.js";

/**
 * A template build's steps in E2B's form (RUN, COPY, ENV, WORKDIR, USER), checked, and the cache key
 * of each: a hash of the base version and every step up to it (COPY's archive by its hash), so a step
 * is reused only when everything before it is the same too.
 */

export type BuildStep =
  | { type: "RUN"; command: string; user: string | undefined; force: boolean }
  | {
      type: "COPY";
      src: string;
      dest: string;
      user: string | undefined;
      mode: number | undefined;
      filesHash: string;
      force: boolean;
    }
  | { type: "ENV"; vars: [string, string][]; force: boolean }
  | { type: "WORKDIR"; path: string; force: boolean }
  | { type: "USER"; name: string; force: boolean };

export interface WireStep {
  type: string;
  args: string[];
  force: boolean;
  filesHash: string;
}

/** Bump when what a step does changes in a way its text does not capture. */
const STEP_FORMAT_VERSION = "1";

const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_STEPS = 256;
const MAX_ARG_CHARS = 64 * 1024;

function checkPath(path: string | undefined, what: string, index: number): string {
  if (path === undefined || path === "" || path.includes("\0") || path.length > 4096) {
    throw invalidArgument("INVALID_BUILD_STEP", `step ${index}: ${what} must be a non-empty path`);
  }
  return path;
}

function checkUser(name: string | undefined, index: number): string | undefined {
  if (name === undefined || name === "") return undefined;
  if (!USER_NAME.test(name))
    throw invalidArgument(
      "INVALID_BUILD_STEP",
      `step ${index}: user ${JSON.stringify(name.slice(0, 40))} is not a user name`,
    );
  return name;
}

/** Checks the wire steps; `files` are the uploaded archives' hashes. Throws INVALID_ARGUMENT. */
export function parseSteps(steps: readonly WireStep[], files: ReadonlySet<string>): BuildStep[] {
  if (steps.length > MAX_STEPS) throw invalidArgument("INVALID_BUILD_STEP", `a build has at most ${MAX_STEPS} steps`);
  return steps.map((s, i) => {
    if (s.args.some((a) => a.length > MAX_ARG_CHARS)) {
      throw invalidArgument("INVALID_BUILD_STEP", `step ${i}: an argument is longer than ${MAX_ARG_CHARS} characters`);
    }
    const force = s.force;
    switch (s.type) {
      case "RUN": {
        const command = s.args[0];
        if (!command) throw invalidArgument("INVALID_BUILD_STEP", `step ${i}: RUN needs a command`);
        return { type: "RUN", command, user: checkUser(s.args[1], i), force };
      }
      case "COPY": {
        if (!SHA256_HEX.test(s.filesHash) || !files.has(s.filesHash)) {
          throw invalidArgument("INVALID_BUILD_STEP", `step ${i}: COPY's files_hash names no uploaded archive`);
        }
        const modeText = s.args[3];
        let mode: number | undefined;
        if (modeText !== undefined && modeText !== "") {
          if (!/^[0-7]{1,4}$/.test(modeText))
            throw invalidArgument("INVALID_BUILD_STEP", `step ${i}: COPY mode must be octal`);
          mode = Number.parseInt(modeText, 8);
        }
        return {
          type: "COPY",
          src: checkPath(s.args[0], "COPY's source", i),
          dest: checkPath(s.args[1], "COPY's destination", i),
          user: checkUser(s.args[2], i),
          mode,
          filesHash: s.filesHash,
          force,
        };
      }
      case "ENV": {
        if (s.args.length === 0 || s.args.length % 2 !== 0) {
          throw invalidArgument("INVALID_BUILD_STEP", `step ${i}: ENV takes pairs of name and value`);
        }
        const vars: [string, string][] = [];
        for (let k = 0; k < s.args.length; k += 2) {
          const name = s.args[k] as string;
          if (!ENV_NAME.test(name))
            throw invalidArgument(
              "INVALID_BUILD_STEP",
              `step ${i}: ${JSON.stringify(name.slice(0, 40))} is not a variable name`,
            );
          vars.push([name, s.args[k + 1] as string]);
        }
        return { type: "ENV", vars, force };
      }
      case "WORKDIR": {
        // A relative path goes on from the working directory before it, as in a Dockerfile.
        return { type: "WORKDIR", path: checkPath(s.args[0], "WORKDIR's path", i), force };
      }
      case "USER": {
        const name = checkUser(s.args[0], i);
        if (name === undefined) throw invalidArgument("INVALID_BUILD_STEP", `step ${i}: USER needs a name`);
        return { type: "USER", name, force };
      }
      default:
        throw invalidArgument(
          "INVALID_BUILD_STEP",
          `step ${i}: unknown step type ${JSON.stringify(s.type.slice(0, 20))}`,
        );
    }
  });
}

/** The cache key of each step: sha256 of the base version and every step up to and including it. */
export function stepKeys(baseVersion: string, steps: readonly BuildStep[]): string[] {
  const hash = createHash("sha256");
  hash.update(`wrenn-template-build ${STEP_FORMAT_VERSION}\0${baseVersion}\0`);
  return steps.map((step) => {
    const { force: _force, ...what } = step;
    hash.update(`${JSON.stringify(what)}\0`);
    return hash.copy().digest("hex");
  });
}

/** One line saying what a step does, for the build log. */
export function describeStep(step: BuildStep): string {
  switch (step.type) {
    case "RUN":
      return `RUN ${step.command}${step.user ? ` (as ${step.user})` : ""}`;
    case "COPY":
      return `COPY ${step.src} ${step.dest}`;
    case "ENV":
      return `ENV ${step.vars.map(([k]) => k).join(" ")}`;
    case "WORKDIR":
      return `WORKDIR ${step.path}`;
    case "USER":
      return `USER ${step.name}`;
  }
}
