import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addFakeHost, createEdgeHarness, type EdgeHarness } from "../../../test/helpers/edge-app.js";
import { users } from "../../db/schema/index.js";
import { hashPassword, parsePasswordHash } from "./password.js";
import { defaultAccountSettings } from "./settings.js";

// Accounts, sessions, CSRF, roles, invitations and the audit log (issue 21), through the app as a
// browser would use it: cookies in, Set-Cookie out, the CSRF header copied from the readable cookie.
let h: EdgeHarness;

interface Json {
  error?: { code?: string; message?: string };
  [k: string]: unknown;
}

/** A browser: keeps the cookies the edge sets and sends them back; `csrf` copies wrenn_csrf into the header. */
class Browser {
  readonly jar = new Map<string, string>();
  lastSetCookies: string[] = [];
  constructor(readonly ip = "198.51.100.7") {}

  async send(
    method: string,
    path: string,
    options: { json?: unknown; csrf?: boolean; headers?: Record<string, string>; url?: string } = {},
  ): Promise<{ res: Response; body: Json }> {
    const headers: Record<string, string> = { "x-forwarded-for": this.ip, ...options.headers };
    if (this.jar.size > 0) headers.cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join("; ");
    const csrf = this.jar.get("wrenn_csrf");
    if (options.csrf && csrf) headers["x-csrf-token"] = csrf;
    if (options.json !== undefined) headers["content-type"] = "application/json";
    const res = await h.app.request(options.url ?? path, {
      method,
      headers,
      ...(options.json !== undefined ? { body: JSON.stringify(options.json) } : {}),
    });
    this.lastSetCookies = res.headers.getSetCookie();
    for (const line of this.lastSetCookies) {
      const [pair = ""] = line.split(";");
      const at = pair.indexOf("=");
      const name = pair.slice(0, at).trim();
      const value = pair.slice(at + 1).trim();
      if (value === "" || /Max-Age=0/i.test(line)) this.jar.delete(name);
      else this.jar.set(name, value);
    }
    const text = await res.text();
    return { res, body: (text ? JSON.parse(text) : {}) as Json };
  }
}

const password = "correct horse battery staple";

async function signUp(email: string, b = new Browser()): Promise<Browser> {
  const { res, body } = await b.send("POST", "/v1/auth/signup", { json: { email, password } });
  expect(res.status, JSON.stringify(body)).toBe(201);
  return b;
}

let admin: Browser;
let adminTeamId: string;
let adminUserId: string;

beforeAll(async () => {
  h = await createEdgeHarness({
    config: {
      accounts: {
        ...defaultAccountSettings,
        signup: "invite",
        trustProxy: true,
        loginLimitPerEmail: { perSec: 1 / 600, burst: 12 },
        loginLimitPerIp: { perSec: 1 / 600, burst: 15 },
      },
    },
  });
  await addFakeHost(h);
  admin = await signUp("Root@Example.com");
  const me = await admin.send("GET", "/v1/auth/session");
  adminTeamId = me.body.currentTeamId as string;
  adminUserId = (me.body.user as { id: string }).id;
}, 60_000);

afterAll(async () => {
  await h?.close();
});

describe("sign-up and sign-in", () => {
  it("the first user becomes instance admin and owner of the admin key's team; later sign-ups need an invitation", async () => {
    const me = await admin.send("GET", "/v1/auth/session");
    expect(me.res.status).toBe(200);
    expect(me.body).toMatchObject({
      user: { email: "Root@Example.com", isInstanceAdmin: true },
      teams: [{ id: "team_default", role: "owner" }],
      currentTeamId: "team_default",
    });
    // The instance admin keeps the admin API with a session, CSRF header and all.
    expect((await admin.send("GET", "/v1/hosts")).res.status).toBe(200);
    const second = await new Browser().send("POST", "/v1/auth/signup", {
      json: { email: "someone@example.com", password },
    });
    expect(second.res.status).toBe(403);
    // The same email in another case is the same account.
    const again = await new Browser().send("POST", "/v1/auth/signup", {
      json: { email: "root@EXAMPLE.com", password },
    });
    expect(again.res.status).toBe(403);
    const rows = await h.database.db.select().from(users);
    expect(rows.map((r) => r.email)).toEqual(["Root@Example.com"]);
  });

  it("sign-ups count against the client address's bucket, refused ones too (each could cost a hash)", async () => {
    const b = new Browser("198.51.100.90");
    const statuses: number[] = [];
    for (let i = 0; i < 16; i++) {
      statuses.push(
        (await b.send("POST", "/v1/auth/signup", { json: { email: `mass${i}@example.com`, password } })).res.status,
      );
    }
    expect(statuses).toEqual([...Array(15).fill(403), 429]);
  });

  it("refuses passwords outside 10..256 characters", async () => {
    const res = await h.app.request("/v1/auth/accept-invitation", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token: "x".repeat(43), password: "short" }),
    });
    expect(res.status).toBe(400);
  });

  it("login sets an HttpOnly, SameSite=Lax session cookie and a readable CSRF cookie; Secure only over TLS", async () => {
    const b = new Browser();
    const { res, body } = await b.send("POST", "/v1/auth/login", { json: { email: "root@example.com", password } });
    expect(res.status, JSON.stringify(body)).toBe(200);
    const session = b.lastSetCookies.find((c) => c.startsWith("wrenn_session="));
    const csrf = b.lastSetCookies.find((c) => c.startsWith("wrenn_csrf="));
    expect(session).toMatch(/HttpOnly/i);
    expect(session).toMatch(/SameSite=Lax/i);
    expect(session).not.toMatch(/Secure/i);
    expect(csrf).not.toMatch(/HttpOnly/i);
    expect(body.csrfToken).toBe(b.jar.get("wrenn_csrf"));
    // The stored session holds a hash of the token, never the token.
    const stored = await h.database.db.execute(sql`select token_hash from sessions`);
    const hashes = JSON.stringify(stored);
    expect(hashes).not.toContain(b.jar.get("wrenn_session") ?? "missing");

    const tls = new Browser();
    await tls.send("POST", "/v1/auth/login", {
      json: { email: "root@example.com", password },
      url: "https://wrenn.test/v1/auth/login",
    });
    expect(tls.lastSetCookies.find((c) => c.startsWith("wrenn_session="))).toMatch(/Secure/);
    const proxied = new Browser();
    await proxied.send("POST", "/v1/auth/login", {
      json: { email: "root@example.com", password },
      headers: { "x-forwarded-proto": "https" },
    });
    expect(proxied.lastSetCookies.find((c) => c.startsWith("wrenn_session="))).toMatch(/Secure/);
  });

  it("a wrong password and an unknown email get the same answer in the same time class", {
    timeout: 30_000,
  }, async () => {
    const b = new Browser("198.51.100.20");
    const wrong: number[] = [];
    const unknown: number[] = [];
    const answers = new Set<string>();
    for (let i = 0; i < 3; i++) {
      let t = performance.now();
      const a = await b.send("POST", "/v1/auth/login", { json: { email: "root@example.com", password: `nope-${i}` } });
      wrong.push(performance.now() - t);
      t = performance.now();
      const u = await b.send("POST", "/v1/auth/login", { json: { email: `ghost${i}@example.com`, password } });
      unknown.push(performance.now() - t);
      answers.add(JSON.stringify([a.res.status, a.body.error?.code, a.body.error?.message]));
      answers.add(JSON.stringify([u.res.status, u.body.error?.code, u.body.error?.message]));
    }
    expect([...answers]).toEqual([JSON.stringify([401, "UNAUTHORIZED", "the email or the password is wrong"])]);
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[1] ?? 0;
    // Both run one PBKDF2 at 600,000 iterations (hundreds of ms); a lookup alone takes a few ms.
    // A factor of 3 either way tolerates a loaded machine and still fails if one side skips the hash.
    expect(median(unknown)).toBeGreaterThan(median(wrong) / 3);
    expect(median(wrong)).toBeGreaterThan(median(unknown) / 3);
  });

  it("a hash made with a lower work factor still verifies, and is upgraded at sign-in", async () => {
    const weak = await hashPassword(password, 100_000);
    await h.database.db.update(users).set({ passwordHash: weak }).where(eq(users.id, adminUserId));
    const b = new Browser("198.51.100.21");
    const { res } = await b.send("POST", "/v1/auth/login", { json: { email: "root@example.com", password } });
    expect(res.status).toBe(200);
    const [row] = await h.database.db.select().from(users).where(eq(users.id, adminUserId));
    expect(parsePasswordHash(row?.passwordHash ?? "")?.iterations).toBe(600_000);
    expect(row?.passwordHash).toMatch(/^pbkdf2-sha256\$i=600000,c=100000\$/);
  });

  it("per-email and per-address limits answer 429 with Retry-After", { timeout: 60_000 }, async () => {
    const b = new Browser("198.51.100.30");
    const statuses: number[] = [];
    for (let i = 0; i < 13; i++) {
      statuses.push(
        (await b.send("POST", "/v1/auth/login", { json: { email: "victim@example.com", password } })).res.status,
      );
    }
    expect(statuses).toEqual([...Array(12).fill(401), 429]);
    const limited = await b.send("POST", "/v1/auth/login", { json: { email: "victim@example.com", password } });
    expect(limited.res.headers.get("retry-after")).toMatch(/^[0-9]+$/);
    // Another address is limited too: the email's bucket is empty whoever asks.
    const other = new Browser("198.51.100.33");
    expect(
      (await other.send("POST", "/v1/auth/login", { json: { email: "victim@example.com", password } })).res.status,
    ).toBe(429);
    // One address spraying many emails runs out of its own bucket (15).
    const sprayer = new Browser("198.51.100.32");
    const spray: number[] = [];
    for (let i = 0; i < 16; i++) {
      spray.push(
        (await sprayer.send("POST", "/v1/auth/login", { json: { email: `spray${i}@example.com`, password } })).res
          .status,
      );
    }
    expect(spray.slice(0, 15).every((s) => s === 401)).toBe(true);
    expect(spray[15]).toBe(429);
  });
});

describe("CSRF and sessions", () => {
  it("a cookie-authenticated POST without the CSRF header gets 403 and changes nothing; with it, it succeeds", async () => {
    const before = await admin.send("GET", "/v1/api-keys");
    const count = (before.body.apiKeys as unknown[]).length;
    const forged = await admin.send("POST", "/v1/api-keys", { json: { name: "forged" } });
    expect(forged.res.status).toBe(403);
    expect(forged.body.error?.code).toBe("FORBIDDEN");
    const wrong = await admin.send("POST", "/v1/api-keys", {
      json: { name: "forged" },
      headers: { "x-csrf-token": "not-the-token" },
    });
    expect(wrong.res.status).toBe(403);
    expect(((await admin.send("GET", "/v1/api-keys")).body.apiKeys as unknown[]).length).toBe(count);
    const made = await admin.send("POST", "/v1/api-keys", { json: { name: "from the dashboard" }, csrf: true });
    expect(made.res.status, JSON.stringify(made.body)).toBe(201);
    expect(made.body.teamId).toBe(adminTeamId);
    // An API key needs no CSRF token: no browser attaches one on its own.
    const byKey = await h.request("POST", "/v1/api-keys", { key: made.body.secret as string, json: { name: "child" } });
    expect(byKey.status).toBe(201);
  });

  it("logout revokes the session: the cookie stops working", async () => {
    const b = new Browser("198.51.100.40");
    await b.send("POST", "/v1/auth/login", { json: { email: "root@example.com", password } });
    const token = b.jar.get("wrenn_session");
    expect((await b.send("POST", "/v1/auth/logout")).res.status).toBe(403);
    expect((await b.send("POST", "/v1/auth/logout", { csrf: true })).res.status).toBe(204);
    expect(b.jar.has("wrenn_session")).toBe(false);
    const replay = await h.app.request("/v1/sandboxes", { headers: { cookie: `wrenn_session=${token}` } });
    expect(replay.status).toBe(401);
  });
});

describe("teams, roles and invitations", () => {
  let ownerB: Browser;
  let memberB: Browser;
  let memberId: string;
  let otherTeamSandbox: string;

  beforeAll(async () => {
    // The admin invites an owner-to-be of the default team and a member.
    const invite = async (email: string, role: string, by: Browser = admin, team = "me") => {
      const { res, body } = await by.send("POST", `/v1/teams/${team}/invitations`, {
        json: { email, role },
        csrf: true,
      });
      expect(res.status, JSON.stringify(body)).toBe(201);
      return body.token as string;
    };
    const memberToken = await invite("mia@example.com", "member");
    memberB = new Browser("198.51.100.50");
    const accepted = await memberB.send("POST", "/v1/auth/accept-invitation", {
      json: { token: memberToken, password },
    });
    expect(accepted.res.status, JSON.stringify(accepted.body)).toBe(200);
    expect(accepted.body).toMatchObject({ teamId: adminTeamId, role: "member" });
    memberId = accepted.body.userId as string;
    // The link works once.
    const reused = await new Browser().send("POST", "/v1/auth/accept-invitation", {
      json: { token: memberToken, password },
    });
    expect(reused.res.status).toBe(404);

    // A second team, made by an admin key, with a sandbox nobody in the default team may see.
    const other = await h.newTeam("elsewhere");
    const created = await h.request("POST", "/v1/sandboxes", { key: other.key, json: {} });
    otherTeamSandbox = ((await created.json()) as { id: string }).id;
    ownerB = admin;
  }, 60_000);

  it("an invitee gets the invited role; a member cannot create API keys or invite", async () => {
    const me = await memberB.send("GET", "/v1/auth/session");
    expect(me.body).toMatchObject({
      user: { email: "mia@example.com", isInstanceAdmin: false },
      teams: [{ id: adminTeamId, role: "member" }],
    });
    const key = await memberB.send("POST", "/v1/api-keys", { json: { name: "mine" }, csrf: true });
    expect(key.res.status).toBe(403);
    expect(key.body.error?.message).toContain("member");
    const inv = await memberB.send("POST", "/v1/teams/me/invitations", {
      json: { email: "x@example.com", role: "member" },
      csrf: true,
    });
    expect(inv.res.status).toBe(403);
    // A member uses sandboxes.
    const sb = await memberB.send("POST", "/v1/sandboxes", { json: {}, csrf: true });
    expect(sb.res.status, JSON.stringify(sb.body)).toBe(201);
    // …but not the admin API.
    expect((await memberB.send("GET", "/v1/hosts")).res.status).toBe(403);
  });

  it("a member cannot see another team's sandboxes or members (404), nor act in a team they are not in", async () => {
    const other = await h.newTeam("elsewhere-2");
    expect((await memberB.send("GET", `/v1/sandboxes/${otherTeamSandbox}`)).res.status).toBe(404);
    expect((await memberB.send("GET", `/v1/teams/${other.teamId}/members`)).res.status).toBe(404);
    const asOther = await memberB.send("GET", "/v1/sandboxes", { headers: { "x-wrenn-team": other.teamId } });
    expect(asOther.res.status).toBe(404);
    const list = await memberB.send("GET", "/v1/sandboxes");
    expect((list.body.sandboxes as Array<{ id: string }>).map((s) => s.id)).not.toContain(otherTeamSandbox);
    const members = await memberB.send("GET", "/v1/teams/me/members");
    expect(members.res.status).toBe(200);
    expect((members.body.members as Array<{ email: string; role: string }>).map((m) => [m.email, m.role])).toEqual([
      ["Root@Example.com", "owner"],
      ["mia@example.com", "member"],
    ]);
  });

  it("a signed-in user can only accept an invitation for their own email", async () => {
    const { body } = await ownerB.send("POST", "/v1/teams/me/invitations", {
      json: { email: "someone-else@example.com", role: "admin" },
      csrf: true,
    });
    const res = await memberB.send("POST", "/v1/auth/accept-invitation", { json: { token: body.token }, csrf: true });
    expect(res.res.status).toBe(403);
    const noCsrf = await memberB.send("POST", "/v1/auth/accept-invitation", { json: { token: body.token } });
    expect(noCsrf.res.status).toBe(403);
  });

  it("the last owner cannot be removed or demoted; an owner changes roles", async () => {
    const remove = await ownerB.send("DELETE", `/v1/teams/me/members/${adminUserId}`, { csrf: true });
    expect(remove.res.status).toBe(409);
    const demote = await ownerB.send("PATCH", `/v1/teams/me/members/${adminUserId}`, {
      json: { role: "member" },
      csrf: true,
    });
    expect(demote.res.status).toBe(409);
    // A member may not promote themselves.
    const selfPromote = await memberB.send("PATCH", `/v1/teams/me/members/${memberId}`, {
      json: { role: "owner" },
      csrf: true,
    });
    expect(selfPromote.res.status).toBe(403);
    const promote = await ownerB.send("PATCH", `/v1/teams/me/members/${memberId}`, {
      json: { role: "admin" },
      csrf: true,
    });
    expect(promote.res.status, JSON.stringify(promote.body)).toBe(200);
    expect(promote.body.role).toBe("admin");
    // As admin, Mia now makes keys (the role is read on every request).
    const key = await memberB.send("POST", "/v1/api-keys", { json: { name: "mia's" }, csrf: true });
    expect(key.res.status).toBe(201);
    // An admin cannot unmake the owner.
    const coup = await memberB.send("PATCH", `/v1/teams/me/members/${adminUserId}`, {
      json: { role: "member" },
      csrf: true,
    });
    expect(coup.res.status).toBe(403);
  });

  it("the audit log lists sign-in, key creation, invitation and role change with actor and object", async () => {
    const { res, body } = await admin.send("GET", "/v1/audit?limit=200");
    expect(res.status).toBe(200);
    const entries = body.entries as Array<{
      action: string;
      actor: { type: string; id: string | null };
      object: { type: string | null; id: string | null };
      ip: string | null;
      details: Record<string, unknown>;
    }>;
    const find = (action: string, pred: (e: (typeof entries)[number]) => boolean = () => true) =>
      entries.find((e) => e.action === action && pred(e));
    expect(find("user.signup", (e) => e.actor.id === adminUserId)).toBeDefined();
    expect(find("auth.login", (e) => e.actor.id === adminUserId)?.object.type).toBe("session");
    expect(find("auth.login_failed", (e) => e.object.id === adminUserId)?.details.reason).toBe("wrong password");
    expect(find("auth.logout")).toBeDefined();
    const keyCreate = find("api_key.create", (e) => e.details.name === "from the dashboard");
    expect(keyCreate?.actor).toEqual({ type: "user", id: adminUserId });
    expect(keyCreate?.object.id).toMatch(/^key_/);
    expect(keyCreate?.ip).toBe("198.51.100.7");
    const invitation = find("invitation.create", (e) => e.details.email === "mia@example.com");
    expect(invitation?.actor.id).toBe(adminUserId);
    expect(invitation?.object.id).toMatch(/^inv_/);
    expect(find("invitation.accept", (e) => e.actor.id === memberId)).toBeDefined();
    const roleChange = find("member.role_change", (e) => e.object.id === memberId);
    expect(roleChange).toMatchObject({
      actor: { type: "user", id: adminUserId },
      details: { from: "member", to: "admin" },
    });
    expect(find("sandbox.create", (e) => e.actor.id === memberId)).toBeDefined();
    expect(find("host.register")?.actor.type).toBe("api_key");
    // Filters and the cursor.
    const onlyKeys = await admin.send("GET", "/v1/audit?action=api_key.create&limit=1");
    expect((onlyKeys.body.entries as unknown[]).length).toBe(1);
    expect(onlyKeys.body.nextCursor).toEqual(expect.any(String));
    const next = await admin.send("GET", `/v1/audit?action=api_key.create&limit=1&cursor=${onlyKeys.body.nextCursor}`);
    expect((next.body.entries as Array<{ id: string }>)[0]?.id).not.toBe(
      (onlyKeys.body.entries as Array<{ id: string }>)[0]?.id,
    );
    const byActor = await admin.send("GET", `/v1/audit?actor=${memberId}`);
    expect((byActor.body.entries as Array<{ actor: { id: string } }>).every((e) => e.actor.id === memberId)).toBe(true);
    // Another team's log is not there for a team member; the instance admin may ask for it.
    const other = await h.newTeam("audited");
    expect((await memberB.send("GET", `/v1/audit?teamId=${other.teamId}`)).res.status).toBe(404);
    const theirs = await admin.send("GET", `/v1/audit?teamId=${other.teamId}`);
    expect(theirs.res.status).toBe(200);
  });

  it("a member can leave, and then the session acts in no team", async () => {
    const temp = await admin.send("POST", "/v1/teams/me/invitations", {
      json: { email: "leaver@example.com", role: "member" },
      csrf: true,
    });
    const leaver = new Browser("198.51.100.60");
    const joined = await leaver.send("POST", "/v1/auth/accept-invitation", {
      json: { token: temp.body.token, password },
    });
    const leaverId = joined.body.userId as string;
    expect((await leaver.send("DELETE", `/v1/teams/me/members/${leaverId}`, { csrf: true })).res.status).toBe(204);
    expect((await leaver.send("GET", "/v1/sandboxes")).res.status).toBe(403);
    const me = await leaver.send("GET", "/v1/auth/session");
    expect(me.res.status).toBe(200);
    expect(me.body).toMatchObject({ teams: [], currentTeamId: null });
  });
});
