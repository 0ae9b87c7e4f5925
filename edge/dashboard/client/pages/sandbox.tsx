/** @jsxImportSource hono/jsx/dom */
import { useCallback, useEffect, useRef, useState } from "hono/jsx/dom";
import uPlot from "uplot";
import { call, describe, type Entry, json, type Metric, type Sandbox } from "../api.js";
import { bytes, ErrorLine, when } from "../ui.js";
import { SandboxActions } from "./sandboxes.js";

/** Text files up to this size open in the editor; larger ones only download. */
const editableBytes = 256 * 1024;

/** One sandbox: its info and actions, a CPU/memory chart, and a file browser. */
export function SandboxDetailPage({ id }: { id: string }) {
  const [sandbox, setSandbox] = useState<Sandbox | null>(null);
  const [error, setError] = useState<string | null>(null);
  const base = `/v1/sandboxes/${encodeURIComponent(id)}`;
  const refresh = useCallback(async () => {
    try {
      setSandbox(await json<Sandbox>("GET", base));
    } catch (err) {
      setError(describe(err));
    }
  }, [base]);
  useEffect(() => {
    void refresh();
    const source = new EventSource(`/v1/events/stream`);
    const onEvent = (e: MessageEvent) => {
      try {
        if ((JSON.parse(e.data) as { sandboxId?: string }).sandboxId === id) void refresh();
      } catch {}
    };
    for (const t of [
      "sandbox.running",
      "sandbox.paused",
      "sandbox.resumed",
      "sandbox.killed",
      "sandbox.timed_out",
      "sandbox.errored",
      "sandbox.updated",
    ])
      source.addEventListener(t, onEvent as EventListener);
    return () => source.close();
  }, [refresh, id]);
  if (!sandbox) return error ? <ErrorLine error={error} /> : <p>Loading…</p>;
  return (
    <section>
      <p>
        <a href="/dashboard">← Sandboxes</a>
      </p>
      <h1>
        Sandbox <code>{sandbox.id}</code>
      </h1>
      <ErrorLine error={error} />
      <div class="card">
        <dl class="info">
          <dt>State</dt>
          <dd>
            <span class={`state ${sandbox.state}`} id="sandbox-state">
              {sandbox.state}
            </span>
          </dd>
          <dt>Template</dt>
          <dd>{sandbox.template}</dd>
          <dt>Resources</dt>
          <dd>
            {sandbox.vcpus} vCPU · {sandbox.memoryMb} MiB
          </dd>
          <dt>Runtime</dt>
          <dd>{sandbox.runtime}</dd>
          <dt>Host</dt>
          <dd>{sandbox.hostId ?? "–"}</dd>
          <dt>Created</dt>
          <dd>{when(sandbox.createdAt)}</dd>
          <dt>Timeout</dt>
          <dd>{sandbox.timeoutSec} s</dd>
          {Object.entries(sandbox.metadata).map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd>{v}</dd>
            </>
          ))}
        </dl>
        <SandboxActions
          sandbox={sandbox}
          onDone={(err) => {
            setError(err);
            void refresh();
          }}
        />
      </div>
      {sandbox.state === "running" ? (
        <>
          <MetricsChart base={base} />
          <TerminalPanel id={id} />
          <FileBrowser base={base} />
          <LogsPanel base={base} />
        </>
      ) : null}
    </section>
  );
}

interface LogLine {
  timestamp: string;
  level: string;
  message: string;
}

/** The sandbox's log (envd and its processes, GET …/logs), newest 200 lines, refreshed on demand. */
function LogsPanel({ base }: { base: string }) {
  const [lines, setLines] = useState<LogLine[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    try {
      const res = await json<{ logs: LogLine[] }>("GET", `${base}/logs?limit=200&direction=backward`);
      setLines(res.logs.slice().reverse());
      setError(null);
    } catch (err) {
      setError(describe(err));
    }
  }, [base]);
  useEffect(() => {
    void load();
  }, [load]);
  return (
    <div class="card">
      <h2>Logs</h2>
      <div class="toolbar">
        <button type="button" class="secondary" onClick={() => void load()}>
          Refresh
        </button>
      </div>
      <ErrorLine error={error} />
      <pre class="logs" id="logs" tabindex={0} role="log" aria-label="Sandbox log">
        {(lines ?? []).map((l) => `${l.timestamp} ${l.level.padEnd(5)} ${l.message}\n`).join("") || "No log lines yet."}
      </pre>
    </div>
  );
}

type TerminalModule = typeof import("../terminal.js");

/** The web terminal, loaded on demand (terminal.js carries xterm.js, ~350 KB before compression). */
function TerminalPanel({ id }: { id: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [handle, setHandle] = useState<import("../terminal.js").TerminalHandle | null>(null);
  useEffect(() => () => handle?.dispose(), [handle]);
  const open = async () => {
    setStatus("Loading…");
    try {
      // A URL the bundler leaves alone: the terminal is its own bundle, fetched only when wanted.
      const url = "/dashboard/assets/terminal.js";
      const mod = (await import(url)) as TerminalModule;
      if (!host.current) return;
      const made = mod.mountTerminal(host.current, id, setStatus);
      // The page's terminal, for tests that read its buffer.
      (window as unknown as { wrennTerminal?: unknown }).wrennTerminal = made;
      setHandle(made);
    } catch (err) {
      setStatus(describe(err));
    }
  };
  return (
    <div class="card">
      <h2>Terminal</h2>
      <div class="toolbar">
        {handle ? (
          <button type="button" class="secondary" onClick={() => handle.reconnect()}>
            Reconnect
          </button>
        ) : (
          <button type="button" onClick={() => void open()}>
            Open terminal
          </button>
        )}
        <span role="status" id="terminal-status">
          {status ?? ""}
        </span>
      </div>
      <div ref={host} class={handle ? "terminal" : "terminal closed"} id="terminal" />
    </div>
  );
}

/** CPU % and memory over the last 10 minutes (GET …/metrics), redrawn every 5 s, drawn by uPlot. */
function MetricsChart({ base }: { base: string }) {
  const host = useRef<HTMLDivElement>(null);
  const [count, setCount] = useState(0);
  useEffect(() => {
    let plot: uPlot | undefined;
    let stopped = false;
    const draw = async () => {
      const since = Math.floor(Date.now() / 1000) - 600;
      let metrics: Metric[] = [];
      try {
        metrics = (await json<{ metrics: Metric[] }>("GET", `${base}/metrics?start=${since}`)).metrics;
      } catch {
        return;
      }
      if (stopped || !host.current) return;
      setCount(metrics.length);
      const data: uPlot.AlignedData = [
        metrics.map((m) => m.timestampUnix),
        metrics.map((m) => m.cpuUsedPct),
        metrics.map((m) => m.memUsed / 1048576),
      ];
      const width = Math.max(280, host.current.clientWidth);
      if (!plot) {
        const styles = getComputedStyle(document.documentElement);
        const ink = styles.getPropertyValue("--muted").trim() || "#57606a";
        const rule = styles.getPropertyValue("--border").trim() || "#d0d7de";
        plot = new uPlot(
          {
            width,
            height: 220,
            series: [
              {},
              { label: "CPU %", stroke: "#2f7de1", width: 2 },
              { label: "Memory MiB", stroke: "#d9822b", width: 2, scale: "mem" },
            ],
            // uPlot draws on a canvas, which CSS colours do not reach: the axes take the theme's colours here.
            axes: [
              { stroke: ink, grid: { stroke: rule } },
              { label: "CPU %", stroke: ink, grid: { stroke: rule } },
              { side: 1, scale: "mem", label: "MiB", stroke: ink, grid: { show: false } },
            ],
            // At least a minute wide, so the first few samples do not stretch the axis over years.
            scales: {
              x: { time: true, range: (_u, min, max) => (max - min < 60 ? [max - 60, max] : [min, max]) },
              y: { range: [0, 100] },
            },
          },
          data,
          host.current,
        );
      } else {
        plot.setSize({ width, height: 220 });
        plot.setData(data);
      }
    };
    void draw();
    const timer = setInterval(() => void draw(), 5000);
    return () => {
      stopped = true;
      clearInterval(timer);
      plot?.destroy();
    };
  }, [base]);
  return (
    <div class="card">
      <h2>Metrics</h2>
      <div ref={host} class="chart" id="metrics-chart" role="img" aria-label={`CPU and memory, ${count} samples`} />
    </div>
  );
}

/** Lists a directory, walks into subdirectories, downloads, uploads, and edits small text files. */
function FileBrowser({ base }: { base: string }) {
  const [dir, setDir] = useState("/home/user");
  const [entries, setEntries] = useState<Entry[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [editing, setEditing] = useState<{ path: string; text: string } | null>(null);
  const list = useCallback(
    async (path: string) => {
      setError(null);
      try {
        const res = await json<{ entries: Entry[] }>("POST", `${base}/files/list`, { path });
        setEntries(
          res.entries.sort((a, b) =>
            a.type === b.type ? a.name.localeCompare(b.name) : a.type === "directory" ? -1 : 1,
          ),
        );
        setDir(path);
      } catch (err) {
        setError(describe(err));
      }
    },
    [base],
  );
  useEffect(() => {
    void list(dir);
  }, [list]);

  const read = async (path: string) => (await call("POST", `${base}/files/read`, { path })).blob();
  const download = async (entry: Entry) => {
    try {
      const url = URL.createObjectURL(await read(entry.path));
      const a = document.createElement("a");
      a.href = url;
      a.download = entry.name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      setError(describe(err));
    }
  };
  const write = async (path: string, content: Blob) => {
    const form = new FormData();
    form.append("path", path);
    form.append("file", content, path.split("/").pop() ?? "file");
    await call("POST", `${base}/files/write?path=${encodeURIComponent(path)}`, form);
  };
  const upload = async (files: FileList | null | undefined) => {
    if (!files) return;
    try {
      for (const file of Array.from(files)) await write(`${dir.replace(/\/$/, "")}/${file.name}`, file);
      await list(dir);
    } catch (err) {
      setError(describe(err));
    }
  };
  const edit = async (entry: Entry) => {
    try {
      setEditing({ path: entry.path, text: await (await read(entry.path)).text() });
    } catch (err) {
      setError(describe(err));
    }
  };
  const save = async () => {
    if (!editing) return;
    try {
      await write(editing.path, new Blob([editing.text], { type: "text/plain" }));
      setEditing(null);
      await list(dir);
    } catch (err) {
      setError(describe(err));
    }
  };
  // Files dropped anywhere on the browser's card are uploaded into the open directory.
  const zone = useRef<HTMLDivElement>(null);
  const uploadRef = useRef(upload);
  uploadRef.current = upload;
  useEffect(() => {
    const el = zone.current;
    if (!el) return;
    const over = (e: DragEvent) => e.preventDefault();
    const drop = (e: DragEvent) => {
      e.preventDefault();
      void uploadRef.current(e.dataTransfer?.files);
    };
    el.addEventListener("dragover", over);
    el.addEventListener("drop", drop);
    return () => {
      el.removeEventListener("dragover", over);
      el.removeEventListener("drop", drop);
    };
  }, []);
  const parent = dir === "/" ? null : dir.replace(/\/[^/]*\/?$/, "") || "/";
  return (
    <div class="card files" ref={zone}>
      <h2>Files</h2>
      <form
        class="toolbar"
        onSubmit={(e: Event) => {
          e.preventDefault();
          void list(String(new FormData(e.currentTarget as HTMLFormElement).get("dir") || "/"));
        }}
      >
        <label>
          Directory
          <input name="dir" value={dir} />
        </label>
        <button type="submit">Open</button>
        <label class="upload">
          Upload files
          <input type="file" multiple onChange={(e: Event) => void upload((e.target as HTMLInputElement).files)} />
        </label>
      </form>
      <ErrorLine error={error} />
      {editing ? (
        <div class="editor">
          <label>
            Editing <code>{editing.path}</code>
            <textarea
              rows={14}
              value={editing.text}
              onInput={(e: Event) => setEditing({ path: editing.path, text: (e.target as HTMLTextAreaElement).value })}
            />
          </label>
          <div class="row">
            <button type="button" onClick={save}>
              Save
            </button>
            <button type="button" class="secondary" onClick={() => setEditing(null)}>
              Cancel
            </button>
          </div>
        </div>
      ) : null}
      <div class="table-wrap">
        <table id="files">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Size</th>
              <th scope="col">Modified</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {parent !== null ? (
              <tr>
                <td colspan={4}>
                  <button type="button" class="link" onClick={() => void list(parent)}>
                    ..
                  </button>
                </td>
              </tr>
            ) : null}
            {(entries ?? []).map((entry) => (
              <tr data-name={entry.name}>
                <td>
                  {entry.type === "directory" ? (
                    <button type="button" class="link" onClick={() => void list(entry.path)}>
                      {entry.name}/
                    </button>
                  ) : (
                    entry.name
                  )}
                </td>
                <td>{entry.type === "file" ? bytes(entry.size) : ""}</td>
                <td>{when(entry.modifiedAt)}</td>
                <td>
                  {entry.type === "file" ? (
                    <div class="actions">
                      <button type="button" onClick={() => void download(entry)} aria-label={`Download ${entry.name}`}>
                        Download
                      </button>
                      {entry.size <= editableBytes ? (
                        <button type="button" onClick={() => void edit(entry)} aria-label={`Edit ${entry.name}`}>
                          Edit
                        </button>
                      ) : null}
                    </div>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
