/** @jsxImportSource hono/jsx/dom */
import { useCallback, useEffect, useState } from "hono/jsx/dom";
import { describe, json } from "../api.js";
import { ErrorLine, when } from "../ui.js";

interface Host {
  id: string;
  address: string;
  status: string;
  runtime: string;
  isolation: string;
  agentVersion: string;
  consecutiveFailures: number;
  lastSeenAt: string | null;
  lastError: string | null;
  activeSandboxes?: number;
}

/** The instance's hosts (the admin API): runtime, isolation, health, sandboxes; drain and activate. */
export function HostsPage() {
  const [hosts, setHosts] = useState<Host[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    try {
      setHosts((await json<{ hosts: Host[] }>("GET", "/v1/hosts")).hosts);
    } catch (err) {
      setError(describe(err));
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);
  const act = (host: Host, verb: "drain" | "activate") => async () => {
    setError(null);
    try {
      await json("POST", `/v1/hosts/${encodeURIComponent(host.id)}/${verb}`, {});
    } catch (err) {
      setError(describe(err));
    }
    await load();
  };
  return (
    <section>
      <h1>Hosts</h1>
      <ErrorLine error={error} />
      <div class="table-wrap">
        <table id="hosts">
          <thead>
            <tr>
              <th scope="col">Host</th>
              <th scope="col">Status</th>
              <th scope="col">Runtime</th>
              <th scope="col">Isolation</th>
              <th scope="col">Sandboxes</th>
              <th scope="col">Last seen</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(hosts ?? []).map((h) => (
              <tr data-id={h.id}>
                <td>
                  <code>{h.id}</code>
                  <br />
                  <small>{h.address}</small>
                </td>
                <td>
                  <span class={`state ${h.status === "active" ? "running" : "paused"}`}>{h.status}</span>
                  {h.consecutiveFailures > 0 ? <small> · {h.consecutiveFailures} failed checks</small> : null}
                </td>
                <td>{h.runtime}</td>
                <td>{h.isolation}</td>
                <td>{h.activeSandboxes ?? "–"}</td>
                <td>{when(h.lastSeenAt)}</td>
                <td>
                  {h.status === "active" ? (
                    <button type="button" class="secondary" onClick={act(h, "drain")} aria-label={`Drain ${h.id}`}>
                      Drain
                    </button>
                  ) : (
                    <button
                      type="button"
                      class="secondary"
                      onClick={act(h, "activate")}
                      aria-label={`Activate ${h.id}`}
                    >
                      Activate
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
