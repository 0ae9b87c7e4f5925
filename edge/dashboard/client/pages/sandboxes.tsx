/** @jsxImportSource hono/jsx/dom */
import { useCallback, useEffect, useState } from "hono/jsx/dom";
import { describe, json, type Sandbox } from "../api.js";
import { ErrorLine, when } from "../ui.js";

const sandboxEvents = [
  "sandbox.created",
  "sandbox.running",
  "sandbox.paused",
  "sandbox.resumed",
  "sandbox.killed",
  "sandbox.timed_out",
  "sandbox.errored",
  "sandbox.updated",
];

/** Runs a lifecycle action on one sandbox; the event stream then refreshes the list. */
export async function sandboxAction(id: string, action: "pause" | "resume" | "kill" | "extend"): Promise<void> {
  const path = `/v1/sandboxes/${encodeURIComponent(id)}`;
  if (action === "kill") await json("DELETE", path);
  else if (action === "extend") await json("POST", `${path}/timeout`, { timeoutSec: 3600 });
  else await json("POST", `${path}/${action}`, {});
}

export function SandboxActions({ sandbox, onDone }: { sandbox: Sandbox; onDone: (error: string | null) => void }) {
  const run = (action: "pause" | "resume" | "kill" | "extend") => async () => {
    try {
      await sandboxAction(sandbox.id, action);
      onDone(null);
    } catch (err) {
      onDone(describe(err));
    }
  };
  const live = sandbox.state === "running" || sandbox.state === "starting";
  return (
    <div class="actions">
      {sandbox.state === "running" ? (
        <button type="button" onClick={run("pause")} aria-label={`Pause ${sandbox.id}`}>
          Pause
        </button>
      ) : null}
      {sandbox.state === "paused" ? (
        <button type="button" onClick={run("resume")} aria-label={`Resume ${sandbox.id}`}>
          Resume
        </button>
      ) : null}
      {live ? (
        <button type="button" onClick={run("extend")} aria-label={`Extend ${sandbox.id} by one hour`}>
          +1 h
        </button>
      ) : null}
      <button type="button" class="danger" onClick={run("kill")} aria-label={`Kill ${sandbox.id}`}>
        Kill
      </button>
    </div>
  );
}

/** The team's sandboxes, refreshed from the event stream (GET /v1/events/stream) without reload. */
export function SandboxesPage() {
  const [sandboxes, setSandboxes] = useState<Sandbox[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [filter, setFilter] = useState("");
  const [live, setLive] = useState(false);
  const refresh = useCallback(async () => {
    try {
      const page = await json<{ sandboxes: Sandbox[] }>("GET", "/v1/sandboxes?limit=1000");
      setSandboxes(page.sandboxes);
    } catch (err) {
      setError(describe(err));
    }
  }, []);
  useEffect(() => {
    void refresh();
    // EventSource reconnects on its own (with Last-Event-ID); on Workers each request is a long poll.
    const source = new EventSource("/v1/events/stream");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onEvent = () => {
      clearTimeout(timer);
      timer = setTimeout(() => void refresh(), 150);
    };
    for (const type of sandboxEvents) source.addEventListener(type, onEvent);
    source.onopen = () => setLive(true);
    // A long poll that ends (Workers) or a dropped stream makes EventSource reconnect on its own
    // (readyState CONNECTING); only a stream it gave up on (CLOSED) is shown as not live.
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) setLive(false);
    };
    return () => {
      clearTimeout(timer);
      source.close();
    };
  }, [refresh]);

  const create = async (e: Event) => {
    e.preventDefault();
    const data = new FormData(e.currentTarget as HTMLFormElement);
    const metadata: Record<string, string> = {};
    for (const pair of String(data.get("metadata") ?? "").split(",")) {
      const [k, v] = pair.split("=");
      if (k?.trim() && v !== undefined) metadata[k.trim()] = v.trim();
    }
    setError(null);
    try {
      await json("POST", "/v1/sandboxes", {
        template: String(data.get("template") || "base"),
        vcpus: Number(data.get("vcpus") || 1),
        memoryMb: Number(data.get("memoryMb") || 512),
        timeoutSec: Number(data.get("timeoutSec") || 300),
        metadata,
      });
      void refresh();
    } catch (err) {
      setError(describe(err));
    }
  };

  const shown = (sandboxes ?? []).filter(
    (s) => !filter || s.id.includes(filter) || s.template.includes(filter) || s.state.includes(filter),
  );
  return (
    <section>
      <h1>Sandboxes</h1>
      <details class="card">
        <summary>New sandbox</summary>
        <form class="grid" onSubmit={create}>
          <label>
            Template
            <input name="template" value="base" required />
          </label>
          <label>
            vCPUs
            <input name="vcpus" type="number" min={1} max={64} value="1" />
          </label>
          <label>
            Memory (MiB)
            <input name="memoryMb" type="number" min={128} step={128} value="512" />
          </label>
          <label>
            Timeout (s)
            <input name="timeoutSec" type="number" min={0} value="300" />
          </label>
          <label>
            Metadata (k=v, …)
            <input name="metadata" />
          </label>
          <button type="submit">Create</button>
        </form>
      </details>
      <div class="toolbar">
        <label>
          Filter
          <input type="search" value={filter} onInput={(e: Event) => setFilter((e.target as HTMLInputElement).value)} />
        </label>
        <span class={live ? "live on" : "live"} role="status">
          {live ? "Live" : "Connecting…"}
        </span>
      </div>
      <ErrorLine error={error} />
      {sandboxes === null ? (
        <p>Loading…</p>
      ) : shown.length === 0 ? (
        <p class="empty">No sandboxes.</p>
      ) : (
        <div class="table-wrap">
          <table id="sandboxes">
            <thead>
              <tr>
                <th scope="col">ID</th>
                <th scope="col">Template</th>
                <th scope="col">State</th>
                <th scope="col">Resources</th>
                <th scope="col">Runtime</th>
                <th scope="col">Created</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {shown.map((s) => (
                <tr data-id={s.id} data-state={s.state}>
                  <td>
                    <a href={`/dashboard/sandboxes/${encodeURIComponent(s.id)}`}>{s.id}</a>
                  </td>
                  <td>{s.template}</td>
                  <td>
                    <span class={`state ${s.state}`}>{s.state}</span>
                  </td>
                  <td>
                    {s.vcpus} vCPU · {s.memoryMb} MiB
                  </td>
                  <td>{s.runtime}</td>
                  <td>{when(s.createdAt)}</td>
                  <td>
                    <SandboxActions
                      sandbox={s}
                      onDone={(err) => {
                        setError(err);
                        void refresh();
                      }}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
