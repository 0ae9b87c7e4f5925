import type { TeamRole } from "../../db/schema/index.js";
import { type ApiKeyScope, defaultKeyScopes } from "../auth/scopes.js";
import type { Principal } from "../context.js";
import { ServiceError } from "../errors.js";

/**
 * What each role may do through the API, as API key scopes (so every route's scope check applies to
 * sessions unchanged): owners and admins everything a team key can do (keys, members, invitations);
 * members use sandboxes and their files but manage nothing.
 */
export const roleScopes: Record<TeamRole, readonly Exclude<ApiKeyScope, "admin">[]> = {
  owner: defaultKeyScopes,
  admin: defaultKeyScopes,
  member: ["sandboxes:read", "sandboxes:write", "sandboxes:exec", "files:read", "files:write"],
};

/**
 * How much say the caller has over a team's members: `owner` for owners, instance admins and admin
 * keys; `admin` for team admins and team keys holding keys:write; otherwise none.
 */
export function managingPower(caller: Principal): "owner" | "admin" | null {
  if (caller.isAdmin) return "owner";
  if (caller.user) return caller.user.role === "member" ? null : caller.user.role;
  return caller.scopes.includes("keys:write") ? "admin" : null;
}

/** Throws FORBIDDEN unless the caller may manage the team's members. */
export function requireManager(caller: Principal): "owner" | "admin" {
  const power = managingPower(caller);
  if (!power) throw new ServiceError("FORBIDDEN", "managing a team's members needs the owner or admin role");
  return power;
}
