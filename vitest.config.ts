import { defineConfig } from "vitest/config";

/**
 * Integration files whose sandboxes run on the suite's runtime (test/helpers/agent-process.ts: the
 * namespace runtime, or gVisor under WRENN_TEST_RUNTIME=gvisor): lifecycle, files, PTY, restart
 * recovery, network isolation, the official e2b SDK (through the edge and its proxy) and our SDK. The
 * project "integration-gvisor" runs them again with every such agent on gVisor. Left out, as they test
 * the edge and the CLI rather than the guest: edge-agent, cli-sandbox (their sandbox calls are the
 * ones e2b-sdk and sdk-sandbox make). cli-shell is in: Ctrl-C typed into a PTY must interrupt the
 * foreground program on gVisor too (envd's PTY signal relay, agent/envd/gvisor.ts). egress: the egress
 * policy's kernel rules, resolver and proxy act on a gVisor guest's host sockets the same way.
 * command-history: envd's process journal, and a background command across a pause and resume.
 * template-builds-agent: a build commits a gVisor guest's writable layer, and a start command runs there.
 */
const RUNTIME_SUITE = [
  "agent-lifecycle",
  "agent-recovery",
  "agent-network",
  "e2b-sdk",
  "e2b-lifecycle",
  "e2b-snapshots",
  "sdk-sandbox",
  "cli-shell",
  "egress",
  "egress-flows",
  "snapshots-agent",
  "command-history",
  "template-builds-agent",
].map((name) => `test/integration/${name}.test.ts`);

// Projects: fast co-located unit tests, integration tests against real processes (agent, envd,
// Postgres, namespaces), the escape battery, the runtime suite again on gVisor, and end-to-end tests
// that boot real VMs. They run one project after the other (groupOrder), so real agents, gVisor sandboxes
// and TCG VMs do not compete for the same two cores.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          // Unit tests live next to the code they test.
          include: ["{edge,agent,cli,sdk,proto,scripts,rootfs,interpreter,lib}/**/*.test.ts"],
          testTimeout: 20_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 180_000,
          sequence: { groupOrder: 1 },
          // Integration files start real agents, VMs and databases; on two cores they run one file at a time.
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "security",
          // The escape battery (test/security): real agents per runtime, root in the guest, bombs.
          include: ["test/security/**/*.test.ts"],
          testTimeout: 180_000,
          hookTimeout: 300_000,
          sequence: { groupOrder: 2 },
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "integration-gvisor",
          include: RUNTIME_SUITE,
          env: { WRENN_TEST_RUNTIME: "gvisor" },
          testTimeout: 120_000,
          hookTimeout: 180_000,
          sequence: { groupOrder: 3 },
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          sequence: { groupOrder: 4 },
          fileParallelism: false,
        },
      },
    ],
  },
});
