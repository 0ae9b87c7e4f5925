import { parseEnv } from "../edge/env.js";
import { openNodeDatabase } from "../edge/node/database.js";

/**
 * `npm run db:migrate`: applies the committed migrations (drizzle/) to the PostgreSQL server in
 * DATABASE_URL — for the Workers deployment, whose Worker never runs DDL itself. Node edges migrate
 * on start and do not need this.
 */
async function main(): Promise<void> {
  const parsed = parseEnv(process.env);
  if (!parsed.ok) {
    for (const [field, message] of Object.entries(parsed.errors)) console.error(`${field}: ${message}`);
    process.exit(1);
  }
  const url = parsed.env.DATABASE_URL;
  if (!url) {
    console.error(
      "DATABASE_URL is not set: give the direct postgres:// URL of the database (Neon: its connection string)",
    );
    process.exit(1);
  }
  const database = await openNodeDatabase({ databaseUrl: url });
  await database.close();
  console.log(`migrations applied to ${new URL(url).host}`);
}

main().catch((err: unknown) => {
  console.error("db:migrate failed:", err instanceof Error ? err.message : err);
  process.exit(1);
});
