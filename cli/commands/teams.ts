import { WrennClient } from "../../sdk/admin.js";
import type { IsolationClass, TeamInfo, UpdateTeamRequest } from "../../sdk/types.js";
import { commonOptions, durationSeconds, parseCommand, usageError, wholeNumber } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { exitCodes } from "../errors.js";
import { type Output, printJson, renderFields, renderTable } from "../output.js";

const teamsUsage = `usage: wrenn teams [command] [options]

  list                        teams with their usage and limits (admin; a team key sees its own)
  show [id]                   one team's isolation minimum, quotas and usage (default: your own)
  set <id> [options]          change a team's settings (admin):
      --min-isolation vm|gvisor|namespace|none
                              weakest isolation its sandboxes may run on (vm > gvisor > namespace)
      --max-running N         sandboxes running at once
      --max-vcpus N           vCPUs over running sandboxes
      --max-memory MiB        memory over running sandboxes
      --max-paused N          paused sandboxes
      --max-paused-disk MiB   disk held by paused sandboxes' snapshots
      --max-timeout 24h       longest sandbox timeout
      --allow-no-timeout true|false
                              whether timeout 0 (never) is allowed
      --max-keys N            API keys that are not revoked
      --reset NAME            put a limit back to the default (repeatable; e.g. maxVcpus)`;

const isolationClasses = ["vm", "gvisor", "namespace"] as const;

/** `wrenn teams …` */
export async function teamsCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const verb = args[0] && !args[0].startsWith("-") ? args[0] : "list";
  const rest = verb === args[0] ? args.slice(1) : args;
  const { values, positionals } = parseCommand(
    rest,
    {
      ...commonOptions,
      "min-isolation": { type: "string" },
      "max-running": { type: "string" },
      "max-vcpus": { type: "string" },
      "max-memory": { type: "string" },
      "max-paused": { type: "string" },
      "max-paused-disk": { type: "string" },
      "max-timeout": { type: "string" },
      "allow-no-timeout": { type: "string" },
      "max-keys": { type: "string" },
      reset: { type: "string", multiple: true },
    },
    teamsUsage,
  );
  if (values.help) {
    ctx.output.out(teamsUsage);
    return exitCodes.ok;
  }
  const client = new WrennClient(await connection(ctx, values));
  switch (verb) {
    case "list":
    case "ls": {
      const teams = await client.teams.list();
      if (values.json) printJson(ctx.output, teams);
      else {
        for (const line of renderTable(teams, [
          { header: "id", value: (t) => t.id },
          { header: "name", value: (t) => t.name },
          { header: "min isolation", value: (t) => t.minIsolation ?? "any" },
          { header: "running", value: (t) => `${t.usage.runningSandboxes}/${t.quotas.maxRunningSandboxes}` },
          { header: "vcpus", value: (t) => `${t.usage.vcpus}/${t.quotas.maxVcpus}` },
          { header: "memory MiB", value: (t) => `${t.usage.memoryMb}/${t.quotas.maxMemoryMb}` },
          { header: "paused", value: (t) => `${t.usage.pausedSandboxes}/${t.quotas.maxPausedSandboxes}` },
          { header: "keys", value: (t) => `${t.usage.apiKeys}/${t.quotas.maxApiKeys}` },
        ]))
          ctx.output.out(line);
      }
      return exitCodes.ok;
    }
    case "show":
    case "get": {
      const team = await client.teams.get(positionals[0] ?? "me");
      if (values.json) printJson(ctx.output, team);
      else printTeam(ctx.output, team);
      return exitCodes.ok;
    }
    case "set": {
      const id = positionals[0];
      if (!id) usageError("teams set needs a team id", teamsUsage);
      const request = settingsFrom(values);
      if (request.minIsolation === undefined && Object.keys(request.quotas ?? {}).length === 0) {
        usageError("teams set needs at least one setting", teamsUsage);
      }
      const team = await client.teams.update(id, request);
      if (values.json) printJson(ctx.output, team);
      else printTeam(ctx.output, team);
      return exitCodes.ok;
    }
    default:
      return usageError(`unknown teams command "${verb}"`, teamsUsage);
  }
}

type Quotas = NonNullable<UpdateTeamRequest["quotas"]>;

/** The PATCH body from `teams set` options. */
function settingsFrom(values: Record<string, string | boolean | string[] | undefined>): UpdateTeamRequest {
  const text = (name: string) => {
    const v = values[name];
    return typeof v === "string" ? v : undefined;
  };
  const request: UpdateTeamRequest = {};
  const minIsolation = text("min-isolation");
  if (minIsolation !== undefined) {
    if (minIsolation === "none" || minIsolation === "any") request.minIsolation = null;
    else if ((isolationClasses as readonly string[]).includes(minIsolation)) {
      request.minIsolation = minIsolation as IsolationClass;
    } else usageError(`--min-isolation takes vm, gvisor, namespace or none; got "${minIsolation}"`, teamsUsage);
  }
  const quotas: Quotas = {};
  const numbers: Array<[string, keyof Quotas]> = [
    ["max-running", "maxRunningSandboxes"],
    ["max-vcpus", "maxVcpus"],
    ["max-memory", "maxMemoryMb"],
    ["max-paused", "maxPausedSandboxes"],
    ["max-paused-disk", "maxPausedDiskMb"],
    ["max-keys", "maxApiKeys"],
  ];
  for (const [flag, name] of numbers) {
    const n = wholeNumber(text(flag), `--${flag}`);
    if (n !== undefined) Object.assign(quotas, { [name]: n });
  }
  const maxTimeout = durationSeconds(text("max-timeout"), "--max-timeout");
  if (maxTimeout !== undefined) quotas.maxTimeoutSec = maxTimeout;
  const allow = text("allow-no-timeout");
  if (allow !== undefined) {
    if (allow !== "true" && allow !== "false") usageError(`--allow-no-timeout takes true or false`, teamsUsage);
    quotas.allowNoTimeout = allow === "true";
  }
  const resets = values.reset;
  for (const name of Array.isArray(resets) ? resets : []) Object.assign(quotas, { [name]: null });
  if (Object.keys(quotas).length > 0) request.quotas = quotas;
  return request;
}

function printTeam(output: Output, team: TeamInfo): void {
  const limit = (name: keyof TeamInfo["quotas"]) =>
    `${team.quotas[name]}${name in team.quotaOverrides ? "" : " (default)"}`;
  for (const line of renderFields([
    ["id", team.id],
    ["name", team.name],
    ["min isolation", team.minIsolation ?? "any"],
    ["running", `${team.usage.runningSandboxes} of ${limit("maxRunningSandboxes")}`],
    ["vcpus", `${team.usage.vcpus} of ${limit("maxVcpus")}`],
    ["memory MiB", `${team.usage.memoryMb} of ${limit("maxMemoryMb")}`],
    ["paused", `${team.usage.pausedSandboxes} of ${limit("maxPausedSandboxes")}`],
    ["paused disk MiB", `${team.usage.pausedDiskMb} of ${limit("maxPausedDiskMb")}`],
    ["max timeout", `${limit("maxTimeoutSec")} s`],
    ["no timeout", limit("allowNoTimeout")],
    ["api keys", `${team.usage.apiKeys} of ${limit("maxApiKeys")}`],
  ]))
    output.out(line);
}
