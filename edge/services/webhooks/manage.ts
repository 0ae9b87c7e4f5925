import { and, desc, eq, sql } from "drizzle-orm";
import type { Database } from "../../db/client.js";
import { teamCallbackSecrets, type WebhookRow, webhooks } from "../../db/schema/index.js";
import type { ServiceContext, TeamContext } from "../context.js";
import { BadRequestError, NotFoundError } from "../errors.js";
import { isEventTypePattern } from "../events/types.js";
import { randomString } from "../ids.js";
import { defaultWebhookSettings, type WebhookSettings } from "./settings.js";
import { newWebhookSecret } from "./signature.js";
import { checkWebhookUrl } from "./url-policy.js";

/** A webhook as the API shows it (never its secret, which only creation returns). */
export interface WebhookView {
  id: string;
  url: string;
  description: string;
  eventTypes: string[];
  enabled: boolean;
  /** Made with an admin key: it also receives operator (host) events. */
  operator: boolean;
  consecutiveFailures: number;
  disabledAt: string | null;
  disabledReason: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A new webhook and its signing secret (shown this once). */
export interface CreatedWebhook extends WebhookView {
  secret: string;
}

/** Input of `createWebhook`. */
export interface WebhookInput {
  url: string;
  eventTypes?: string[];
  description?: string;
  enabled?: boolean;
}

/** Webhooks a team may have. */
const maxWebhooksPerTeam = 50;

/** The settings in force (the edge's, or the defaults). */
export function webhookSettingsOf(ctx: ServiceContext): WebhookSettings {
  return ctx.config.webhooks ?? defaultWebhookSettings;
}

/** The view of a `webhooks` row. */
export function toWebhookView(row: WebhookRow): WebhookView {
  return {
    id: row.id,
    url: row.url,
    description: row.description,
    eventTypes: row.eventTypes,
    enabled: row.enabled,
    operator: row.operator,
    consecutiveFailures: row.consecutiveFailures,
    disabledAt: row.disabledAt?.toISOString() ?? null,
    disabledReason: row.disabledReason,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

function checkEventTypes(types: readonly string[]): string[] {
  const unknown = types.filter((t) => !isEventTypePattern(t));
  if (unknown.length > 0) {
    throw new BadRequestError(`unknown event type(s): ${unknown.join(", ")} (see GET /v1/events for the list)`, {
      eventTypes: `unknown: ${unknown.join(", ")}`,
    });
  }
  return [...new Set(types)];
}

function newWebhookId(): string {
  return `wh_${randomString(16, "abcdefghijklmnopqrstuvwxyz0123456789")}`;
}

/** Creates a webhook of the caller's team; its secret is generated and returned once. */
export async function createWebhook(ctx: TeamContext, input: WebhookInput): Promise<CreatedWebhook> {
  const url = checkWebhookUrl(input.url, webhookSettingsOf(ctx));
  const eventTypes = checkEventTypes(input.eventTypes ?? []);
  const [count] = await ctx.db
    .select({ n: sql<number>`count(*)::int` })
    .from(webhooks)
    .where(eq(webhooks.teamId, ctx.principal.teamId));
  if ((count?.n ?? 0) >= maxWebhooksPerTeam) {
    throw new BadRequestError(`a team may have at most ${maxWebhooksPerTeam} webhooks`);
  }
  const secret = newWebhookSecret();
  const now = ctx.now();
  const [row] = await ctx.db
    .insert(webhooks)
    .values({
      id: newWebhookId(),
      teamId: ctx.principal.teamId,
      url,
      description: input.description ?? "",
      eventTypes,
      secretSealed: await ctx.secrets.seal(secret),
      enabled: input.enabled ?? true,
      operator: ctx.principal.isAdmin,
      createdAt: now,
      updatedAt: now,
    })
    .returning();
  if (!row) throw new Error("insert into webhooks returned no row");
  ctx.logger.info("webhook created", { webhookId: row.id });
  return { ...toWebhookView(row), secret };
}

/** The caller's team's webhooks, newest first. */
export async function listWebhooks(ctx: TeamContext): Promise<WebhookView[]> {
  const rows = await ctx.db
    .select()
    .from(webhooks)
    .where(eq(webhooks.teamId, ctx.principal.teamId))
    .orderBy(desc(webhooks.createdAt), desc(webhooks.id));
  return rows.map(toWebhookView);
}

/** A webhook of the caller's team; NOT_FOUND for another team's. */
export async function loadWebhook(ctx: TeamContext, webhookId: string): Promise<WebhookRow> {
  const [row] = await ctx.db
    .select()
    .from(webhooks)
    .where(and(eq(webhooks.id, webhookId), eq(webhooks.teamId, ctx.principal.teamId)))
    .limit(1);
  if (!row) throw new NotFoundError("webhook", webhookId);
  return row;
}

/**
 * Changes a webhook. Enabling one (again) clears its failure count and why it was disabled.
 */
export async function updateWebhook(
  ctx: TeamContext,
  webhookId: string,
  patch: Partial<WebhookInput>,
): Promise<WebhookView> {
  await loadWebhook(ctx, webhookId);
  const set: Partial<typeof webhooks.$inferInsert> = { updatedAt: ctx.now() };
  if (patch.url !== undefined) set.url = checkWebhookUrl(patch.url, webhookSettingsOf(ctx));
  if (patch.eventTypes !== undefined) set.eventTypes = checkEventTypes(patch.eventTypes);
  if (patch.description !== undefined) set.description = patch.description;
  if (patch.enabled !== undefined) {
    set.enabled = patch.enabled;
    if (patch.enabled) Object.assign(set, { consecutiveFailures: 0, disabledAt: null, disabledReason: null });
  }
  const [row] = await ctx.db
    .update(webhooks)
    .set(set)
    .where(and(eq(webhooks.id, webhookId), eq(webhooks.teamId, ctx.principal.teamId)))
    .returning();
  if (!row) throw new NotFoundError("webhook", webhookId);
  return toWebhookView(row);
}

/** Deletes a webhook; its pending deliveries are given up on when the loop reaches them. */
export async function deleteWebhook(ctx: TeamContext, webhookId: string): Promise<void> {
  const deleted = await ctx.db
    .delete(webhooks)
    .where(and(eq(webhooks.id, webhookId), eq(webhooks.teamId, ctx.principal.teamId)))
    .returning({ id: webhooks.id });
  if (deleted.length === 0) throw new NotFoundError("webhook", webhookId);
  ctx.logger.info("webhook deleted", { webhookId });
}

/**
 * The team's callback signing secret (sealed), made on first use. Two callers racing both end with
 * the one row that won.
 */
export async function callbackSecretSealed(db: Database, ctx: ServiceContext, teamId: string): Promise<string> {
  const [existing] = await db.select().from(teamCallbackSecrets).where(eq(teamCallbackSecrets.teamId, teamId));
  if (existing) return existing.secretSealed;
  await db
    .insert(teamCallbackSecrets)
    .values({ teamId, secretSealed: await ctx.secrets.seal(newWebhookSecret()) })
    .onConflictDoNothing();
  const [row] = await db.select().from(teamCallbackSecrets).where(eq(teamCallbackSecrets.teamId, teamId));
  if (!row) throw new Error("team_callback_secrets row vanished");
  return row.secretSealed;
}

/** The secret the team's callbacks (`callbackUrl` deliveries) are signed with. */
export async function getCallbackSecret(ctx: TeamContext): Promise<{ secret: string }> {
  return { secret: await ctx.secrets.open(await callbackSecretSealed(ctx.db, ctx, ctx.principal.teamId)) };
}
