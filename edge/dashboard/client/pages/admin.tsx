/** @jsxImportSource hono/jsx/dom */
import { useCallback, useEffect, useState } from "hono/jsx/dom";
import { describe, json, type SessionInfo } from "../api.js";
import { ErrorLine, when } from "../ui.js";

interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
  expiresAt: string | null;
}

/** The team's API keys: create (the secret is shown once) and revoke. */
export function ApiKeysPage() {
  const [keys, setKeys] = useState<ApiKey[] | null>(null);
  const [secret, setSecret] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    try {
      setKeys((await json<{ apiKeys: ApiKey[] }>("GET", "/v1/api-keys")).apiKeys);
    } catch (err) {
      setError(describe(err));
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  const create = async (e: Event) => {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const name = String(new FormData(form).get("name") || "Dashboard key");
    setError(null);
    try {
      setSecret((await json<{ secret: string }>("POST", "/v1/api-keys", { name })).secret);
      form.reset();
      await load();
    } catch (err) {
      setError(describe(err));
    }
  };
  const revoke = async (key: ApiKey) => {
    if (!confirm(`Revoke the key "${key.name}"? Programs using it stop working.`)) return;
    try {
      await json("DELETE", `/v1/api-keys/${encodeURIComponent(key.id)}`);
      await load();
    } catch (err) {
      setError(describe(err));
    }
  };
  return (
    <section>
      <h1>API keys</h1>
      <form class="toolbar card" onSubmit={create}>
        <label>
          Name
          <input name="name" required maxlength={200} />
        </label>
        <button type="submit">Create key</button>
      </form>
      {secret ? (
        <div class="card notice" role="status">
          <p>Copy this key now; it is not shown again.</p>
          <code id="new-key">{secret}</code>
          <button type="button" class="secondary" onClick={() => void navigator.clipboard?.writeText(secret)}>
            Copy
          </button>
        </div>
      ) : null}
      <ErrorLine error={error} />
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Prefix</th>
              <th scope="col">Created</th>
              <th scope="col">Last used</th>
              <th scope="col">Status</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(keys ?? []).map((k) => (
              <tr data-name={k.name}>
                <td>{k.name}</td>
                <td>
                  <code>{k.prefix}…</code>
                </td>
                <td>{when(k.createdAt)}</td>
                <td>{when(k.lastUsedAt)}</td>
                <td>{k.revokedAt ? `revoked ${when(k.revokedAt)}` : "active"}</td>
                <td>
                  {k.revokedAt ? null : (
                    <button type="button" class="danger" onClick={() => void revoke(k)} aria-label={`Revoke ${k.name}`}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

interface Member {
  userId: string;
  email: string;
  role: string;
  joinedAt: string;
}

/** The team's members and roles; admins change roles, remove members and invite by link. */
export function TeamPage({ session, canAdmin }: { session: SessionInfo; canAdmin: boolean }) {
  const [members, setMembers] = useState<Member[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [invite, setInvite] = useState<string | null>(null);
  const team = session.currentTeamId ?? "me";
  const base = `/v1/teams/${encodeURIComponent(team)}`;
  const load = useCallback(async () => {
    try {
      setMembers((await json<{ members: Member[] }>("GET", `${base}/members`)).members);
    } catch (err) {
      setError(describe(err));
    }
  }, [base]);
  useEffect(() => {
    void load();
  }, [load]);
  const setRole = async (m: Member, role: string) => {
    setError(null);
    try {
      await json("PATCH", `${base}/members/${encodeURIComponent(m.userId)}`, { role });
    } catch (err) {
      setError(describe(err));
    }
    await load();
  };
  const remove = async (m: Member) => {
    if (!confirm(`Remove ${m.email} from the team?`)) return;
    try {
      await json("DELETE", `${base}/members/${encodeURIComponent(m.userId)}`);
    } catch (err) {
      setError(describe(err));
    }
    await load();
  };
  const sendInvite = async (e: Event) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget as HTMLFormElement);
    try {
      const made = await json<{ acceptPath: string }>("POST", `${base}/invitations`, {
        email: data.get("email"),
        role: data.get("role"),
      });
      setInvite(`${location.origin}${made.acceptPath}`);
    } catch (err) {
      setError(describe(err));
    }
  };
  return (
    <section>
      <h1>Team</h1>
      <ErrorLine error={error} />
      {canAdmin ? (
        <form class="toolbar card" onSubmit={sendInvite}>
          <label>
            Invite by email
            <input name="email" type="email" required />
          </label>
          <label>
            Role
            <select name="role">
              <option value="member">member</option>
              <option value="admin">admin</option>
              <option value="owner">owner</option>
            </select>
          </label>
          <button type="submit">Invite</button>
        </form>
      ) : null}
      {invite ? (
        <div class="card notice" role="status">
          <p>Send this link to the person invited; it works once, for 7 days.</p>
          <code>{invite}</code>
        </div>
      ) : null}
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Email</th>
              <th scope="col">Role</th>
              <th scope="col">Joined</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(members ?? []).map((m) => (
              <tr>
                <td>{m.email}</td>
                <td>
                  {canAdmin ? (
                    <select
                      aria-label={`Role of ${m.email}`}
                      value={m.role}
                      onChange={(e: Event) => void setRole(m, (e.target as HTMLSelectElement).value)}
                    >
                      {["owner", "admin", "member"].map((r) => (
                        <option value={r} selected={r === m.role}>
                          {r}
                        </option>
                      ))}
                    </select>
                  ) : (
                    m.role
                  )}
                </td>
                <td>{when(m.joinedAt)}</td>
                <td>
                  {canAdmin || m.userId === session.user.id ? (
                    <button type="button" class="danger" onClick={() => void remove(m)}>
                      {m.userId === session.user.id ? "Leave" : "Remove"}
                    </button>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}

interface AuditEntry {
  id: string;
  actor: { type: string; id: string | null };
  action: string;
  object: { type: string | null; id: string | null };
  at: string;
  ip: string | null;
}

/** The team's audit log, newest first, by pages of 100. */
export function AuditPage() {
  const [entries, setEntries] = useState<AuditEntry[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [action, setAction] = useState("");
  const load = useCallback(async (after: string | null, filter: string) => {
    const q = new URLSearchParams({ limit: "100" });
    if (after) q.set("cursor", after);
    if (filter) q.set("action", filter);
    try {
      const page = await json<{ entries: AuditEntry[]; nextCursor: string | null }>("GET", `/v1/audit?${q}`);
      setEntries((prev) => (after ? [...prev, ...page.entries] : page.entries));
      setCursor(page.nextCursor);
    } catch (err) {
      setError(describe(err));
    }
  }, []);
  useEffect(() => {
    void load(null, "");
  }, [load]);
  return (
    <section>
      <h1>Audit log</h1>
      <form
        class="toolbar"
        onSubmit={(e: Event) => {
          e.preventDefault();
          void load(null, action);
        }}
      >
        <label>
          Action
          <input
            value={action}
            placeholder="e.g. sandbox.create"
            onInput={(e: Event) => setAction((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit">Filter</button>
      </form>
      <ErrorLine error={error} />
      <div class="table-wrap">
        <table id="audit">
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Object</th>
              <th scope="col">Address</th>
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr>
                <td>{when(e.at)}</td>
                <td>
                  {e.actor.type} {e.actor.id ?? ""}
                </td>
                <td>{e.action}</td>
                <td>
                  {e.object.type ?? ""} {e.object.id ?? ""}
                </td>
                <td>{e.ip ?? ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {cursor ? (
        <button type="button" class="secondary" onClick={() => void load(cursor, action)}>
          Older
        </button>
      ) : null}
    </section>
  );
}
