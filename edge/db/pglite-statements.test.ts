import { PGlite, protocol, type QueryOptions } from "@electric-sql/pglite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openPreparedStatementPGlite, type PreparedStatementPGlite } from "./pglite-statements.js";

let db: PreparedStatementPGlite;

/** The answer of PGlite's own `query` on the same instance, to compare against. */
const stock = <T>(query: string, params?: unknown[], options?: QueryOptions) =>
  PGlite.prototype.query.call(db, query, params, options) as Promise<{ rows: T[] }>;

beforeAll(async () => {
  db = await openPreparedStatementPGlite("memory://");
  await db.exec(`
    create table things (
      id text primary key,
      n integer not null,
      tags jsonb not null default '{}',
      at timestamptz not null default now(),
      note text
    );
    insert into things (id, n, tags, note) values ('a', 1, '{"k":"v"}', null), ('b', 2, '{}', 'x');
  `);
  // PGlite's first start (its initdb) takes seconds of CPU on a busy machine.
}, 60_000);

afterAll(async () => {
  await db.close();
});

describe("PreparedStatementPGlite", () => {
  it("returns what stock query returns, in array and object row modes", async () => {
    const text = "select id, n, tags, at, note from things where n >= $1 order by id";
    for (const options of [undefined, { rowMode: "array" as const }]) {
      const ours = await db.query(text, [1], options);
      expect(ours).toEqual(await stock(text, [1], options));
      expect(ours.rows).toHaveLength(2);
    }
  });

  it("applies per-call parsers as drizzle passes them", async () => {
    const options = { rowMode: "array" as const, parsers: { 1184: (value: string) => `raw:${value}` } };
    const { rows } = await db.query<unknown[]>("select at from things where id = $1", ["a"], options);
    expect(String(rows[0]?.[0])).toMatch(/^raw:\d{4}-/);
  });

  it("reports affected rows and returning rows of writes", async () => {
    const inserted = await db.query("insert into things (id, n) values ($1, $2) returning id, n", ["c", 3], {
      rowMode: "array",
    });
    expect(inserted.rows).toEqual([["c", 3]]);
    expect(inserted.affectedRows).toBe(1);
    const updated = await db.query("update things set n = n + 1 where n > $1", [0]);
    expect(updated.affectedRows).toBe(3);
    expect(updated.rows).toEqual([]);
  });

  it("passes nulls and serialises objects by parameter type", async () => {
    await db.query("update things set note = $1, tags = $2 where id = $3", [null, { deep: [1, 2] }, "b"]);
    const { rows } = await db.query<{ note: string | null; tags: unknown }>(
      "select note, tags from things where id = $1",
      ["b"],
    );
    expect(rows[0]).toEqual({ note: null, tags: { deep: [1, 2] } });
  });

  it("throws the database error with its SQLSTATE and keeps working afterwards", async () => {
    await expect(db.query("insert into things (id, n) values ($1, $2)", ["a", 1])).rejects.toMatchObject({
      code: "23505",
    });
    await expect(db.query("select $1::int", ["not a number"])).rejects.toMatchObject({ code: "22P02" });
    await expect(db.query("select nope from things")).rejects.toMatchObject({ code: "42703" });
    expect((await db.query("select count(*)::int as n from things")).rows).toEqual([{ n: 3 }]);
  });

  it("prepares again when the table under a cached statement changes", async () => {
    const text = "select * from things where id = $1";
    expect(Object.keys((await db.query<object>(text, ["a"])).rows[0] ?? {})).not.toContain("extra");
    await db.exec("alter table things add column extra integer not null default 7");
    expect((await db.query<{ extra: number }>(text, ["a"])).rows[0]?.extra).toBe(7);
  });

  it("stays correct beyond the statement cache (evicted statements are closed)", async () => {
    for (let i = 0; i < 300; i++) {
      const { rows } = await db.query<{ v: number }>(`select $1::int + ${i} as v`, [1]);
      expect(rows[0]?.v).toBe(i + 1);
    }
    const { rows } = await db.query<{ n: number }>(
      "select count(*)::int as n from pg_prepared_statements where name like 'wrenn_%'",
    );
    expect(rows[0]?.n).toBeLessThanOrEqual(257);
  });

  it("leaves execProtocol working for other callers", async () => {
    await db.query("select n from things where id = $1", ["a"]);
    const { messages } = await db.execProtocol(protocol.serialize.query("select 42"));
    expect(messages.map((m) => m.name)).toContain("dataRow");
  });

  it("does not run inside another caller's transaction", async () => {
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tx = db.transaction(async (t) => {
      await t.query("update things set n = 100 where id = 'a'");
      await held;
      await t.rollback();
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const read = db.query<{ n: number }>("select n from things where id = $1", ["a"]);
    release();
    await tx;
    expect((await read).rows[0]?.n).not.toBe(100);
  });
});
