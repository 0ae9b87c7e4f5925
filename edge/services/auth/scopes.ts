/**
 * What an API key may do. Each route needs exactly one scope (declared next to the route and shown
 * in the OpenAPI document); `admin` holds every scope and is the only one that reaches hosts, other
 * teams and admin keys.
 */
export const apiKeyScopes = [
  "sandboxes:read",
  "sandboxes:write",
  "sandboxes:exec",
  "files:read",
  "files:write",
  "keys:read",
  "keys:write",
  "admin",
] as const;
/** One of the API key scopes. */
export type ApiKeyScope = (typeof apiKeyScopes)[number];

/** What each scope allows, for the OpenAPI document and the CLI's help. */
export const scopeDescriptions: Record<ApiKeyScope, string> = {
  "sandboxes:read": "list and read sandboxes, their metrics, and the team's quotas and usage",
  "sandboxes:write":
    "create, delete, pause, resume, connect and time out sandboxes (create and connect return the sandbox's envd token)",
  "sandboxes:exec": "run commands in sandboxes through the API",
  "files:read": "list and read files in sandboxes through the API",
  "files:write": "write, create and remove files in sandboxes through the API",
  "keys:read": "list the team's API keys",
  "keys:write": "create, change and revoke the team's non-admin keys (never beyond the caller's own scopes)",
  admin: "everything: hosts, every team, admin keys and per-key rate limits",
};

/**
 * The scopes a key without an explicit list gets: everything but `admin`. It is also the database
 * default, so keys made before scopes existed keep the powers they had.
 */
export const defaultKeyScopes: readonly Exclude<ApiKeyScope, "admin">[] = apiKeyScopes.filter(
  (s): s is Exclude<ApiKeyScope, "admin"> => s !== "admin",
);

/** Whether a key holding `held` (admin or not) may use a route that needs `needed`. */
export function hasScope(held: { isAdmin: boolean; scopes: readonly string[] }, needed: ApiKeyScope): boolean {
  return held.isAdmin || held.scopes.includes(needed);
}
