import type { SandboxStateName } from "../../db/schema/index.js";
import { BadRequestError } from "../errors.js";

/** The two sandbox states E2B's API knows. */
export type E2bState = "running" | "paused";

/**
 * envd version reported to E2B SDKs when the agent did not report one. Wrenn's envd implements the
 * 0.6.13 protocol, and SDK 2.51 unlocks every feature (metadata, watch flags, octet-stream upload)
 * from 0.6.4 on.
 */
export const defaultE2bEnvdVersion = "0.6.13";

/** Our states as E2B shows them; undefined for states E2B treats as gone (stopped, failed, not yet made). */
export function e2bState(state: SandboxStateName): E2bState | undefined {
  switch (state) {
    case "starting":
    case "running":
    case "resuming":
    case "missing":
      return "running";
    case "pausing":
    case "paused":
      return "paused";
    default:
      return undefined;
  }
}

/** Our states behind each E2B state, for list filters. */
export const wrennStatesFor: Record<E2bState, SandboxStateName[]> = {
  running: ["starting", "running", "resuming", "missing"],
  paused: ["pausing", "paused"],
};

/**
 * E2B's `state` query (`running,paused`, form style, or repeated) as our states; empty means both.
 * Unknown values are a clear 400 rather than an empty list.
 */
export function parseE2bStates(values: string[]): SandboxStateName[] {
  const wanted = new Set<E2bState>();
  for (const value of values.flatMap((v) => v.split(","))) {
    const name = value.trim();
    if (name === "") continue;
    if (name !== "running" && name !== "paused") {
      throw new BadRequestError(`invalid state ${JSON.stringify(name)}: expected running or paused`, { state: name });
    }
    wanted.add(name);
  }
  const states = wanted.size === 0 ? (["running", "paused"] as const) : [...wanted];
  return states.flatMap((s) => wrennStatesFor[s]);
}

function decodeComponent(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new BadRequestError("metadata is not valid URL encoding", { metadata: text });
  }
}

/**
 * E2B's `metadata` query: `k=v&k2=v2`, URL-encoded as a whole, with keys and values URL-encoded once
 * more by the SDK (so `a b` arrives as `a%20b` after the query is decoded).
 */
export function parseE2bMetadataQuery(text: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!text) return out;
  for (const [key, value] of new URLSearchParams(text)) out[decodeComponent(key)] = decodeComponent(value);
  return out;
}

/** E2B's names for templates Wrenn ships under its own names. */
const E2B_TEMPLATE_ALIASES: Record<string, string> = {
  // The `e2b` SDK's default template.
  base: "minimal",
  // The `@e2b/code-interpreter` SDK's default template.
  "code-interpreter-v1": "code-interpreter",
};

/**
 * Our template for an E2B `templateID`: `name` or `name:tag` (the tag is dropped: Wrenn templates
 * are not versioned). `base`, the SDK's default template, is Wrenn's `minimal`; `code-interpreter-v1`
 * is `code-interpreter`.
 */
export function wrennTemplate(templateID: string): string {
  const name = templateID.split(":")[0] ?? "";
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) {
    throw new BadRequestError(`invalid templateID ${JSON.stringify(templateID)}`, { templateID: "invalid" });
  }
  return Object.hasOwn(E2B_TEMPLATE_ALIASES, name) ? (E2B_TEMPLATE_ALIASES[name] as string) : name;
}
