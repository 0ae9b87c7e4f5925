import { newSandboxId } from "../edge/services/ids.js";
import { type ScriptedAgent, startScriptedAgent } from "../test/helpers/reconcile-scripted-agent.js";

/**
 * The agents of bench/reconcile.ts, in a child process of their own (as real agents run on other
 * machines), so the sweep's timing does not include serving its own RPCs. Driven over IPC:
 * `start` (ids per host) → `{ agents: [{ url, token }] }`; `converge` → every host reports all its
 * sandboxes running; `drift` → each host loses its first 10 sandboxes and gains 5 old orphans;
 * `stop` → exit.
 */

type Command = { type: "start"; ids: string[][] } | { type: "converge" } | { type: "drift" } | { type: "stop" };

const agents: ScriptedAgent[] = [];
let fleetIds: string[][] = [];
const hourAhead = () => new Date(Date.now() + 3_600_000);

function reply(message: unknown): void {
  process.send?.(message);
}

process.on("message", (raw: unknown) => {
  const command = raw as Command;
  void (async () => {
    switch (command.type) {
      case "start":
        fleetIds = command.ids;
        for (let i = 0; i < fleetIds.length; i++) agents.push(await startScriptedAgent());
        reply({ type: "started", agents: agents.map((a) => ({ url: a.url, token: a.token })) });
        return;
      case "converge":
        agents.forEach((agent, h) => {
          agent.sandboxes.clear();
          agent.reaped = [];
          for (const id of fleetIds[h] ?? []) agent.put({ id, endAt: hourAhead() });
        });
        reply({ type: "ok" });
        return;
      case "drift":
        agents.forEach((agent, h) => {
          for (const id of (fleetIds[h] ?? []).slice(0, 10)) agent.sandboxes.delete(id);
          for (let i = 0; i < 5; i++) agent.put({ id: newSandboxId(), createdAt: new Date(Date.now() - 600_000) });
        });
        reply({ type: "ok" });
        return;
      case "stop":
        for (const agent of agents) await agent.stop();
        process.exit(0);
    }
  })();
});
