import {
  messages,
  type ParserOptions,
  PGlite,
  parse,
  protocol,
  type QueryOptions,
  type Results,
} from "@electric-sql/pglite";

/** How many distinct query texts keep a prepared statement; the least recently used one is closed beyond. */
const maxStatements = 256;

/**
 * SQLSTATEs after which a cached statement is dropped and the query is prepared again: the plan no
 * longer matches the table (a migration changed it) or the statement is gone.
 */
const stalePlanCodes = new Set(["0A000", "26000"]);

/** A server-side prepared statement of one query text. */
interface Statement {
  name: string;
  paramTypes: number[];
  /** Result columns; absent for statements that return no rows. */
  columns?: messages.RowDescriptionMessage;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function sqlState(err: unknown): string | undefined {
  return err instanceof messages.DatabaseError ? err.code : undefined;
}

/**
 * PGlite whose `query` keeps a named prepared statement per distinct query text and runs each call
 * as one protocol message (Bind, Execute, Sync). Stock `query` sends Parse, Describe, Bind, Describe,
 * Execute and Sync as six round trips into the WebAssembly Postgres and parses and plans the text
 * every time; on the edge's hot reads (API key, sandbox by id) that was most of a request's cost.
 *
 * Results are the same as stock `query` (rows, fields, affectedRows, rowCount). Locking is the same:
 * a call waits for running transactions and queries. Transactions (`transaction()`) keep PGlite's own
 * path. Queries with a blob (`COPY … '/dev/blob'`) or explicit parameter types fall back to it too.
 */
export class PreparedStatementPGlite extends PGlite {
  readonly #statements = new Map<string, Statement>();
  /** Statements evicted from the cache, closed with the next Parse. */
  #toClose: string[] = [];
  #nextId = 0;

  override async query<T>(query: string, params: unknown[] = [], options?: QueryOptions): Promise<Results<T>> {
    if (options?.blob !== undefined || options?.paramTypes !== undefined) return super.query(query, params, options);
    await this._checkReady();
    return this._runExclusiveTransaction(() =>
      this._runExclusiveQuery(async () => {
        try {
          return await this.#run<T>(query, params, options);
        } catch (err) {
          if (!stalePlanCodes.has(sqlState(err) ?? "")) throw err;
          this.#forget(query);
          return await this.#run<T>(query, params, options);
        }
      }),
    );
  }

  async #run<T>(query: string, params: unknown[], options: QueryOptions | undefined): Promise<Results<T>> {
    const statement = this.#statements.get(query) ?? (await this.#prepare(query));
    // Most recently used last, so eviction takes the oldest.
    this.#statements.delete(query);
    this.#statements.set(query, statement);
    const values = params.map((param, i) => {
      if (param === null || param === undefined) return null;
      const oid = statement.paramTypes[i] ?? 0;
      const serialize = options?.serializers?.[oid] ?? this.serializers[oid];
      return serialize ? serialize(param) : String(param);
    });
    // The raw stream hands us Postgres's reply bytes without PGlite's generic message parser,
    // which cost more than the query itself; `#results` reads the few message types it needs.
    const chunks: Uint8Array[] = [];
    try {
      await this.execProtocolRawStream(
        concat([
          protocol.serialize.bind({ statement: statement.name, values }),
          protocol.serialize.execute({}),
          protocol.serialize.sync(),
        ]),
        {
          onRawData: (bytes) => {
            // A view into the WebAssembly heap, reused by the next call.
            chunks.push(bytes.slice());
          },
        },
      );
    } finally {
      // execProtocolRawStream leaves its callback installed, and execProtocol/execProtocolRaw would
      // then hand their replies to it; an empty execProtocolStream puts PGlite's own output back.
      await this.execProtocolStream(new Uint8Array(0), { syncToFs: false });
    }
    return this.#results<T>(statement, chunks.length === 1 && chunks[0] ? chunks[0] : concat(chunks), options);
  }

  async #prepare(query: string): Promise<Statement> {
    const name = `wrenn_${++this.#nextId}`;
    const closing = this.#toClose.map((old) => protocol.serialize.close({ type: "S", name: old }));
    this.#toClose = [];
    const { messages: replies } = await this.execProtocol(
      concat([
        ...closing,
        protocol.serialize.parse({ name, text: query }),
        protocol.serialize.describe({ type: "S", name }),
        protocol.serialize.sync(),
      ]),
      { syncToFs: false },
    );
    const statement: Statement = { name, paramTypes: parse.parseDescribeStatementResults(replies) };
    for (const reply of replies) if (reply instanceof messages.RowDescriptionMessage) statement.columns = reply;
    if (this.#statements.size >= maxStatements) {
      const oldest = this.#statements.keys().next();
      if (!oldest.done) this.#forget(oldest.value);
    }
    this.#statements.set(query, statement);
    return statement;
  }

  #forget(query: string): void {
    const statement = this.#statements.get(query);
    if (!statement) return;
    this.#statements.delete(query);
    this.#toClose.push(statement.name);
  }

  #results<T>(statement: Statement, reply: Uint8Array, options: QueryOptions | undefined): Results<T> {
    const fields = (statement.columns?.fields ?? []).map((f) => ({ name: f.name, dataTypeID: f.dataTypeID }));
    const parsers = fields.map((f) => parserFor(f.dataTypeID, options?.parsers, this.parsers));
    const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
    const rows: unknown[] = [];
    let command: string | undefined;
    let rowCount: number | undefined;
    let affectedRows = 0;
    let failed = false;
    // Backend messages: one type byte, an int32 length that counts itself, the body.
    for (let at = 0; at + 5 <= reply.length; at += 1 + view.getInt32(at + 1)) {
      const type = reply[at];
      const body = at + 5;
      const end = at + 1 + view.getInt32(at + 1);
      if (type === dataRowType) {
        const count = view.getInt16(body);
        const values: unknown[] = new Array(count);
        for (let i = 0, p = body + 2; i < count; i++) {
          const length = view.getInt32(p);
          p += 4;
          if (length < 0) {
            values[i] = null;
            continue;
          }
          const text = textDecoder.decode(reply.subarray(p, p + length));
          p += length;
          const parser = parsers[i];
          values[i] = parser ? parser(text, fields[i]?.dataTypeID) : text;
        }
        if (options?.rowMode === "array") rows.push(values);
        else rows.push(Object.fromEntries(fields.map((f, i) => [f.name, values[i]])));
      } else if (type === commandCompleteType) {
        // Tags that carry a count end in it ("SELECT 2", "UPDATE 3", "INSERT 0 5").
        const parts = textDecoder.decode(reply.subarray(body, end - 1)).split(" ");
        command = parts[0];
        const count = Number.parseInt(parts[parts.length - 1] ?? "", 10);
        if (!Number.isNaN(count)) rowCount = count;
        if (command && countedCommands.has(command)) affectedRows += count;
      } else if (type === errorResponseType) {
        failed = true;
      }
    }
    if (failed) throw databaseErrorIn(reply);
    const result: Results<T> = { rows: rows as T[], fields, affectedRows };
    if (command !== undefined) result.command = command;
    if (rowCount !== undefined) result.rowCount = rowCount;
    return result;
  }
}

const textDecoder = new TextDecoder();
const dataRowType = 0x44; // 'D'
const commandCompleteType = 0x43; // 'C'
const errorResponseType = 0x45; // 'E'
const countedCommands = new Set(["INSERT", "UPDATE", "DELETE", "COPY", "MERGE"]);

/** The first ErrorResponse of a reply, as PGlite's own DatabaseError (code, detail, constraint, …). */
function databaseErrorIn(reply: Uint8Array): Error {
  let first: messages.DatabaseError | undefined;
  new protocol.Parser().parse(reply, (message) => {
    if (!first && message instanceof messages.DatabaseError) first = message;
  });
  return first ?? new Error("PGlite reported an error it did not describe");
}

/** Text to value, as PGlite calls it (some parsers look at the type id). */
type ValueParser = (value: string, typeId?: number) => unknown;

function parserFor(
  oid: number,
  overrides: ParserOptions | undefined,
  defaults: Record<number, ValueParser>,
): ValueParser | undefined {
  return overrides?.[oid] ?? defaults[oid];
}

/** Opens a PreparedStatementPGlite on `dataDir` (`memory://` for an in-memory database). */
export async function openPreparedStatementPGlite(dataDir: string): Promise<PreparedStatementPGlite> {
  const client = new PreparedStatementPGlite(dataDir);
  await client.waitReady;
  return client;
}
