import { sql } from "drizzle-orm";
import type { Database } from "../../edge/db/client.js";

/**
 * Makes every update of a sandbox row fail inside the database (a trigger that raises), as a lost
 * connection or a failed commit would in the middle of a sweep. Returns the function that lifts it;
 * call it in a `finally`.
 */
export async function refuseSandboxUpdates(db: Database): Promise<() => Promise<void>> {
  await db.execute(
    sql.raw(`create or replace function wrenn_test_refuse_update() returns trigger language plpgsql as $$
      begin raise exception 'test: sandbox updates refused'; end $$`),
  );
  await db.execute(
    sql.raw(
      "create trigger wrenn_test_refuse_update before update on sandboxes for each row execute function wrenn_test_refuse_update()",
    ),
  );
  return async () => {
    await db.execute(sql.raw("drop trigger if exists wrenn_test_refuse_update on sandboxes"));
    await db.execute(sql.raw("drop function if exists wrenn_test_refuse_update()"));
  };
}
