import { WrennClient } from "../../sdk/admin.js";
import type { CreateApiKeyRequest } from "../../sdk/types.js";
import { commonOptions, parseCommand, usageError } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { exitCodes } from "../errors.js";
import { printJson, relativeTime, renderTable } from "../output.js";

const keysUsage = `usage: wrenn keys [command] [options]

  list [--all]                                   the team's keys (--all: every team's, admin)
  create [--name N] [--admin] [--team ID | --new-team NAME]
                                                 prints the secret once
  revoke <id>`;

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
          { header: "admin", value: (k) => (k.isAdmin ? "yes" : "") },
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
      const key = await client.apiKeys.create(request);
      if (values.json) printJson(ctx.output, key);
      else {
        ctx.output.out(key.secret);
        ctx.output.err(`created ${key.id} (${key.name}) for team ${key.teamId}; the secret above is not shown again`);
      }
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
