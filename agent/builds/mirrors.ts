import { EgressPolicyError, parseEgressPolicy } from "../../lib/egress-policy.js";

/**
 * Where build sandboxes may connect when a build names nothing (AGENT_BUILD_MIRRORS): Debian's and
 * npm's mirrors, and PyPI's. Kept apart from the builder so the config imports nothing heavy.
 */
export const DEFAULT_BUILD_MIRRORS = [
  "deb.debian.org",
  "security.debian.org",
  "registry.npmjs.org",
  "pypi.org",
  "files.pythonhosted.org",
];

/** Whether every entry is a valid allow-list entry of an egress policy. */
export function checkedAllowList(list: readonly string[]): boolean {
  try {
    parseEgressPolicy({ allowOut: [...list], denyOut: [] });
    return true;
  } catch (err) {
    if (err instanceof EgressPolicyError) return false;
    throw err;
  }
}
