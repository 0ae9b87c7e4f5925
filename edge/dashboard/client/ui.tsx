/** @jsxImportSource hono/jsx/dom */
import type { Child } from "hono/jsx";
import { json, type SessionInfo } from "./api.js";

const nav = [
  { page: "sandboxes", href: "/dashboard", label: "Sandboxes", admin: false },
  { page: "keys", href: "/dashboard/keys", label: "API keys", admin: true },
  { page: "team", href: "/dashboard/team", label: "Team", admin: false },
  { page: "audit", href: "/dashboard/audit", label: "Audit", admin: true },
  { page: "hosts", href: "/dashboard/hosts", label: "Hosts", admin: true, instance: true },
];

/** The frame of every signed-in page: navigation, who is signed in, sign-out. */
export function Layout(props: {
  session: SessionInfo;
  page: string;
  canAdmin: boolean;
  instanceAdmin: boolean;
  children?: Child;
}) {
  const team = props.session.teams.find((t) => t.id === props.session.currentTeamId);
  const signOut = async () => {
    await json("POST", "/v1/auth/logout").catch(() => {});
    location.assign("/dashboard/sign-in");
  };
  return (
    <div class="frame">
      <header class="top">
        <a class="brand" href="/dashboard">
          Wrenn
        </a>
        <nav aria-label="Main">
          <ul>
            {nav
              .filter((n) => (!n.admin || props.canAdmin) && (!("instance" in n) || props.instanceAdmin))
              .map((n) => (
                <li>
                  <a
                    href={n.href}
                    aria-current={
                      n.page === props.page || (n.page === "sandboxes" && props.page === "sandbox") ? "page" : undefined
                    }
                  >
                    {n.label}
                  </a>
                </li>
              ))}
          </ul>
        </nav>
        <div class="who">
          <span>
            {props.session.user.email}
            {team ? ` · ${team.name} (${team.role})` : ""}
          </span>
          <button type="button" onClick={signOut}>
            Sign out
          </button>
        </div>
      </header>
      <main>{props.children}</main>
    </div>
  );
}

/** An error line, announced to screen readers. */
export function ErrorLine({ error }: { error: string | null }) {
  return error ? (
    <p class="error" role="alert">
      {error}
    </p>
  ) : null;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

export function when(iso: string | null | undefined): string {
  return iso ? new Date(iso).toLocaleString() : "–";
}
