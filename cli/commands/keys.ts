import { apiKeyScopes } from "../../edge/services/auth/scopes.js";
import { WrennClient } from "../../sdk/admin.js";
import type { ApiKeyScope, CreateApiKeyRequest, UpdateApiKeyRequest } from "../../sdk/types.js";
import { commonOptions, durationSeconds, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { exitCodes } from "../errors.js";
import { printJson, relativeTime, renderTable } from "../output.js";

/** The scopes a key can carry: the API's own list, so the CLI never drifts from it. */
const knownScopes: readonly ApiKeyScope[] = apiKeyScopes;

const keysUsage = `usage: wrenn keys [command] [options]

  list [--all]                                   the team's keys (--all: every team's, admin)
  create [--name N] [--scope S]… [--expires WHEN] [--admin] [--team ID | --new-team NAME]
         [--rate PER_SEC --burst N]              prints the secret once
  update <id> [--name N] [--scope S]… [--expires WHEN | --never-expires]
              [--rate PER_SEC --burst N | --default-rate]
  revoke <id>

  --scope     repeatable or comma-separated: ${knownScopes.join(", ")}
              (default: the calling key's own scopes; a key never grants more than it holds)
  --expires   a duration from now (90s, 15m, 12h, 30d) or an ISO 8601 time (2027-01-31T00:00:00Z)
  --rate      admin only: the key's own rate limit, tokens per second, with --burst (bucket size)`;

/** Parses `--scope` values (repeatable, comma-separated) against the known scopes. */
function scopesFrom(values: string[] | undefined): ApiKeyScope[] | undefined {
  if (!values || values.length === 0) return undefined;
  const scopes = values.flatMap((v) => v.split(",")).map((s) => s.trim());
  const unknown = scopes.filter((s) => !knownScopes.includes(s as ApiKeyScope));
  if (unknown.length > 0) usageError(`unknown scope ${unknown.join(", ")}`, keysUsage);
  return [...new Set(scopes)] as ApiKeyScope[];
}

/** Parses `--expires`: a duration from `now`, or an absolute ISO 8601 time. */
function expiryFrom(value: string | undefined, now: Date): string | undefined {
  if (value === undefined) return undefined;
  if (/^[0-9]+[smhd]?$/.test(value.trim())) {
    const seconds = durationSeconds(value, "--expires") ?? 0;
    return new Date(now.getTime() + seconds * 1000).toISOString();
  }
  const at = Date.parse(value);
  if (Number.isNaN(at)) usageError(`--expires takes a duration (30d) or an ISO 8601 time, got "${value}"`, keysUsage);
  return new Date(at).toISOString();
}

/** Parses `--rate` and `--burst`, which go together. */
function rateFrom(rate: string | undefined, burst: string | undefined): { perSec: number; burst: number } | undefined {
  if (rate === undefined && burst === undefined) return undefined;
  const perSec = Number(rate);
  const size = Number(burst);
  if (rate === undefined || !(perSec > 0))
    usageError("--rate takes a positive number of requests per second", keysUsage);
  if (burst === undefined || !Number.isInteger(size) || size < 1) {
    usageError("--burst takes a whole number of at least 1 (give it with --rate)", keysUsage);
  }
  return { perSec, burst: size };
}

/** `wrenn keys …` */
export async function keysCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const verb = args[0] && !args[0].startsWith("-") ? args[0] : "list";
  const rest = verb === args[0] ? args.slice(1) : args;
  const { values, positionals } = parseCommand(
    rest,
    {
      ...commonOptions,
      all: { type: "boolean", default: false },
      name: { type: "string" },
      admin: { type: "boolean", default: false },
      team: { type: "string" },
      "new-team": { type: "string" },
      scope: { type: "string", multiple: true },
      expires: { type: "string" },
      "never-expires": { type: "boolean", default: false },
      rate: { type: "string" },
      burst: { type: "string" },
      "default-rate": { type: "boolean", default: false },
    },
    keysUsage,
  );
  if (values.help) {
    ctx.output.out(keysUsage);
    return exitCodes.ok;
  }
  const client = new WrennClient(await connection(ctx, values));
  switch (verb) {
    case "list":
    case "ls": {
      const keys = await client.apiKeys.list({ all: values.all });
      if (values.json) printJson(ctx.output, keys);
      else {
        const now = new Date();
        for (const line of renderTable(keys, [
          { header: "id", value: (k) => k.id },
          { header: "name", value: (k) => k.name },
          { header: "prefix", value: (k) => k.prefix },
          { header: "team", value: (k) => k.teamId },
          { header: "scopes", value: (k) => (k.isAdmin ? "admin" : k.scopes.join(",")) },
          { header: "expires", value: (k) => (k.expiresAt ? relativeTime(k.expiresAt, now) : "") },
          { header: "rate", value: (k) => (k.rateLimit ? `${k.rateLimit.perSec}/s, ${k.rateLimit.burst}` : "") },
          { header: "last used", value: (k) => relativeTime(k.lastUsedAt, now) },
          { header: "revoked", value: (k) => (k.revokedAt ? relativeTime(k.revokedAt, now) : "") },
        ]))
          ctx.output.out(line);
      }
      return exitCodes.ok;
    }
    case "create": {
      const request: CreateApiKeyRequest = {};
      if (values.name) request.name = values.name;
      if (values.admin) request.isAdmin = true;
      if (values.team) request.teamId = values.team;
      if (values["new-team"]) request.newTeamName = values["new-team"];
      const scopes = scopesFrom(values.scope);
      if (scopes) request.scopes = scopes;
      const expiresAt = expiryFrom(values.expires, new Date());
      if (expiresAt) request.expiresAt = expiresAt;
      const rateLimit = rateFrom(values.rate, values.burst);
      if (rateLimit) request.rateLimit = rateLimit;
      const key = await client.apiKeys.create(request);
      if (values.json) printJson(ctx.output, key);
      else {
        ctx.output.out(key.secret);
        const expiry = key.expiresAt ? `, expires ${key.expiresAt}` : "";
        ctx.output.err(
          `created ${key.id} (${key.name}) for team ${key.teamId} with ${key.scopes.join(",")}${expiry}; the secret above is not shown again`,
        );
      }
      return exitCodes.ok;
    }
    case "update": {
      const id = positionals[0];
      if (!id) usageError("keys update needs a key id", keysUsage);
      if (values.expires !== undefined && values["never-expires"]) {
        usageError("give --expires or --never-expires, not both", keysUsage);
      }
      if ((values.rate !== undefined || values.burst !== undefined) && values["default-rate"]) {
        usageError("give --rate/--burst or --default-rate, not both", keysUsage);
      }
      const request: UpdateApiKeyRequest = {};
      if (values.name) request.name = values.name;
      const scopes = scopesFrom(values.scope);
      if (scopes) request.scopes = scopes;
      if (values["never-expires"]) request.expiresAt = null;
      const expiresAt = expiryFrom(values.expires, new Date());
      if (expiresAt) request.expiresAt = expiresAt;
      if (values["default-rate"]) request.rateLimit = null;
      const rateLimit = rateFrom(values.rate, values.burst);
      if (rateLimit) request.rateLimit = rateLimit;
      if (Object.keys(request).length === 0) usageError("keys update needs something to change", keysUsage);
      const key = await client.apiKeys.update(id, request);
      if (values.json) printJson(ctx.output, key);
      else
        ctx.output.out(
          `${key.id} updated: ${key.scopes.join(",")}${key.expiresAt ? `, expires ${key.expiresAt}` : ""}`,
        );
      return exitCodes.ok;
    }
    case "revoke": {
      const id = positionals[0];
      if (!id) usageError("keys revoke needs a key id", keysUsage);
      const key = await client.apiKeys.revoke(id);
      if (values.json) printJson(ctx.output, key);
      else ctx.output.out(`${key.id} revoked`);
      return exitCodes.ok;
    }
    default:
      return usageError(`unknown keys command "${verb}"`, keysUsage);
  }
}
