/** Roles a user holds in a team (docs/accounts.md has the table of what each may do). */
export const teamRoles = ["owner", "admin", "member"] as const;
/** One of the team roles. */
export type TeamRole = (typeof teamRoles)[number];

/** Who acted, in the audit log: a signed-in user, an API key, nobody known (a failed sign-in), or the edge. */
export const auditActorTypes = ["user", "api_key", "anonymous", "system"] as const;
/** One of the audit actor types. */
export type AuditActorType = (typeof auditActorTypes)[number];
