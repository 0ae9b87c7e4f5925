import { z } from "@hono/zod-openapi";
import { teamRoles } from "../../contracts/accounts.js";
import { ErrorBody } from "../../errors/api-error.js";
import { passwordPolicy } from "../../services/accounts/password.js";

/** An email address as accepted at sign-up and sign-in. */
export const Email = z.string().trim().max(254).email().openapi({ example: "ada@example.com" });

/** A new password (the length policy; docs/accounts.md). */
export const NewPassword = z
  .string()
  .openapi({ description: `${passwordPolicy.minLength} to ${passwordPolicy.maxLength} characters` });

/** Body of sign-up and sign-in. */
export const Credentials = z
  .object({ email: Email, password: z.string().min(1).max(4096) })
  .strict()
  .openapi("Credentials");

/** A team role. */
export const TeamRoleSchema = z.enum(teamRoles).openapi("TeamRole", {
  description: "`owner` and `admin` manage keys, members and invitations; `member` uses sandboxes",
});

/** The signed-in user, their teams, and the session's CSRF token. */
export const SessionInfo = z
  .object({
    user: z.object({ id: z.string(), email: z.string(), isInstanceAdmin: z.boolean() }),
    teams: z.array(z.object({ id: z.string(), name: z.string(), role: TeamRoleSchema })),
    currentTeamId: z.string().nullable().openapi({ description: "The team requests act in without X-Wrenn-Team" }),
    csrfToken: z.string().openapi({ description: "Send it back in X-CSRF-Token on every state-changing request" }),
    expiresAt: z.string().openapi({ description: "When the session ends unless used before" }),
  })
  .openapi("SessionInfo");

/** Body of POST /v1/auth/accept-invitation. */
export const AcceptInvitationBody = z
  .object({
    token: z.string().min(20).max(128).openapi({ description: "The token of the invitation link" }),
    password: z.string().min(1).max(4096).optional().openapi({
      description: "Signing up with the invitation: the new account's password (its email is the invitation's)",
    }),
  })
  .strict()
  .openapi("AcceptInvitationRequest");

/** What accepting an invitation gave. */
export const AcceptedInvitation = z
  .object({ teamId: z.string(), role: TeamRoleSchema, userId: z.string() })
  .openapi("AcceptedInvitation");

const errorContent = { "application/json": { schema: ErrorBody } };

/** Extra error answers of the account routes. */
export const accountErrorResponses = {
  409: { description: "An account with this email exists (`CONFLICT`)", content: errorContent },
  429: { description: "Too many sign-in attempts (`RATE_LIMITED`); see Retry-After", content: errorContent },
} as const;
