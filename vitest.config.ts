import { defineConfig } from "vitest/config";

// Three projects: fast co-located unit tests, integration tests against real processes
// (agent, envd, Postgres, namespaces), and end-to-end tests that boot real VMs. They run one project
// after the other (groupOrder), so real agents and TCG VMs do not compete for the same two cores.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["{edge,agent,cli,sdk,proto,scripts}/**/*.test.ts", "test/unit/**/*.test.ts"],
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
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          sequence: { groupOrder: 2 },
          fileParallelism: false,
        },
      },
    ],
  },
});
