import { WrennClient } from "../../sdk/admin.js";
import type { WebhookRequest } from "../../sdk/webhooks.js";
import { commonOptions, parseCommand, usageError, wholeNumber } from "../args.js";
import { type CommandContext, connection } from "../context.js";
import { exitCodes } from "../errors.js";
import { printJson, relativeTime, renderTable } from "../output.js";

const webhooksUsage = `usage: wrenn webhooks [command] [options]

  list                                     the team's webhooks
  create <url> [--event TYPE]… [--description TEXT] [--disabled]
                                           prints the signing secret once
  update <id> [--url URL] [--event TYPE]… [--all-events] [--description TEXT] [--enable | --disable]
  delete <id>
  deliveries <id> [--limit N] [--status pending|succeeded|failed]
                                           the delivery log: status, attempts, codes, durations
  redeliver <id> <deliveryId>              sends a delivery's event again
  callback-secret                          the secret callbacks (callbackUrl) are signed with

  --event   repeatable or comma-separated: sandbox.created, sandbox.killed, … or a prefix like sandbox.*
            (none: every event of the team); see docs/events-and-webhooks.md`;

function eventsFrom(values: string[] | undefined): string[] | undefined {
  if (!values || values.length === 0) return undefined;
  return [...new Set(values.flatMap((v) => v.split(",")).map((s) => s.trim()))].filter((s) => s !== "");
}

/** `wrenn webhooks …` */
export async function webhooksCommand(ctx: CommandContext, args: string[]): Promise<number> {
  const verb = args[0] && !args[0].startsWith("-") ? args[0] : "list";
  const rest = verb === args[0] ? args.slice(1) : args;
  const { values, positionals } = parseCommand(
    rest,
    {
      ...commonOptions,
      event: { type: "string", multiple: true },
      "all-events": { type: "boolean", default: false },
      description: { type: "string" },
      url: { type: "string" },
      disabled: { type: "boolean", default: false },
      enable: { type: "boolean", default: false },
      disable: { type: "boolean", default: false },
      limit: { type: "string" },
      status: { type: "string" },
    },
    webhooksUsage,
  );
  if (values.help) {
    ctx.output.out(webhooksUsage);
    return exitCodes.ok;
  }
  const client = new WrennClient(await connection(ctx, values));
  const now = new Date();
  switch (verb) {
    case "list":
    case "ls": {
      const hooks = await client.webhooks.list();
      if (values.json) printJson(ctx.output, hooks);
      else {
        for (const line of renderTable(hooks, [
          { header: "id", value: (w) => w.id },
          { header: "url", value: (w) => w.url },
          { header: "events", value: (w) => (w.eventTypes.length === 0 ? "all" : w.eventTypes.join(",")) },
          {
            header: "enabled",
            value: (w) => (w.enabled ? "yes" : `no${w.disabledReason ? ` (${w.disabledReason})` : ""}`),
          },
          { header: "failures", value: (w) => String(w.consecutiveFailures) },
          { header: "created", value: (w) => relativeTime(w.createdAt, now) },
        ]))
          ctx.output.out(line);
      }
      return exitCodes.ok;
    }
    case "create": {
      const url = positionals[0];
      if (!url) usageError("webhooks create needs a URL", webhooksUsage);
      const request: WebhookRequest & { url: string } = { url };
      const events = eventsFrom(values.event);
      if (events) request.eventTypes = events;
      if (values.description !== undefined) request.description = values.description;
      if (values.disabled) request.enabled = false;
      const hook = await client.webhooks.create(request);
      if (values.json) printJson(ctx.output, hook);
      else {
        ctx.output.out(hook.secret);
        ctx.output.err(
          `created ${hook.id} → ${hook.url} (${hook.eventTypes.length === 0 ? "every event" : hook.eventTypes.join(", ")}); the signing secret above is not shown again`,
        );
      }
      return exitCodes.ok;
    }
    case "update": {
      const id = positionals[0];
      if (!id) usageError("webhooks update needs a webhook id", webhooksUsage);
      if (values.enable && values.disable) usageError("give --enable or --disable, not both", webhooksUsage);
      const request: WebhookRequest = {};
      if (values.url !== undefined) request.url = values.url;
      const events = eventsFrom(values.event);
      if (events) request.eventTypes = events;
      if (values["all-events"]) request.eventTypes = [];
      if (values.description !== undefined) request.description = values.description;
      if (values.enable) request.enabled = true;
      if (values.disable) request.enabled = false;
      if (Object.keys(request).length === 0) usageError("webhooks update needs something to change", webhooksUsage);
      const hook = await client.webhooks.update(id, request);
      if (values.json) printJson(ctx.output, hook);
      else ctx.output.out(`${hook.id} updated: ${hook.enabled ? "enabled" : "disabled"}, ${hook.url}`);
      return exitCodes.ok;
    }
    case "delete":
    case "rm": {
      const id = positionals[0];
      if (!id) usageError("webhooks delete needs a webhook id", webhooksUsage);
      await client.webhooks.delete(id);
      if (!values.json) ctx.output.out(`${id} deleted`);
      return exitCodes.ok;
    }
    case "deliveries":
    case "log": {
      const id = positionals[0];
      if (!id) usageError("webhooks deliveries needs a webhook id", webhooksUsage);
      const status = values.status;
      if (status !== undefined && !["pending", "succeeded", "failed"].includes(status)) {
        usageError("--status is pending, succeeded or failed", webhooksUsage);
      }
      const limit = wholeNumber(values.limit, "--limit");
      const page = await client.webhooks.deliveries(id, {
        ...(limit !== undefined ? { limit } : {}),
        ...(status ? { status: status as "pending" | "succeeded" | "failed" } : {}),
      });
      if (values.json) printJson(ctx.output, page);
      else {
        for (const line of renderTable(page.deliveries, [
          { header: "id", value: (d) => d.id },
          { header: "event", value: (d) => `${d.eventType} ${d.eventId ?? ""}`.trim() },
          { header: "status", value: (d) => d.status },
          { header: "attempts", value: (d) => String(d.attempts) },
          {
            header: "last",
            value: (d) =>
              d.lastStatusCode !== null ? `HTTP ${d.lastStatusCode}` : (d.lastError ?? (d.attempts === 0 ? "" : "?")),
          },
          { header: "ms", value: (d) => (d.lastDurationMs === null ? "" : String(d.lastDurationMs)) },
          { header: "next", value: (d) => (d.nextAttemptAt ? relativeTime(d.nextAttemptAt, now) : "") },
          { header: "created", value: (d) => relativeTime(d.createdAt, now) },
        ]))
          ctx.output.out(line);
      }
      return exitCodes.ok;
    }
    case "redeliver": {
      const [id, deliveryId] = positionals;
      if (!id || !deliveryId) usageError("webhooks redeliver needs a webhook id and a delivery id", webhooksUsage);
      const delivery = await client.webhooks.redeliver(id, deliveryId);
      if (values.json) printJson(ctx.output, delivery);
      else ctx.output.out(`queued ${delivery.id} (${delivery.eventType})`);
      return exitCodes.ok;
    }
    case "callback-secret": {
      const secret = await client.webhooks.callbackSecret();
      if (values.json) printJson(ctx.output, { secret });
      else ctx.output.out(secret);
      return exitCodes.ok;
    }
    default:
      return usageError(`unknown webhooks command "${verb}"`, webhooksUsage);
  }
}
