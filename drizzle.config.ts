import { defineConfig } from "drizzle-kit";

export default defineConfig({
  dialect: "postgresql",
  schema: "./edge/db/schema/index.ts",
  out: "./drizzle",
  strict: true,
});
