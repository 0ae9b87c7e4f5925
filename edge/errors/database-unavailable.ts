/**
 * Whether an error means the database cannot be reached right now (a restart, a failover, a network
 * cut), as opposed to a query that failed. Those become 503 `DB_UNAVAILABLE`: the request may be
 * retried, and the edge recovers by itself once the database answers (node-postgres drops broken
 * clients from its pool and connects anew). Drizzle wraps driver errors, so the cause chain is walked.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; depth < 8 && current instanceof Error; depth++) {
    if (isUnavailableError(current)) return true;
    current = current.cause;
  }
  return false;
}

/** Socket errors of a connection to the database server. */
const socketCodes = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND"]);

/**
 * PostgreSQL SQLSTATEs of a server going away or not yet taking connections: class 08 (connection
 * exception), 57P01–57P03 (admin shutdown, crash shutdown, cannot connect now) and 53300 (too many
 * connections).
 */
function isUnavailableSqlState(code: string): boolean {
  return code.startsWith("08") || code === "57P01" || code === "57P02" || code === "57P03" || code === "53300";
}

/** node-postgres reports a dropped connection only in its message. */
const droppedConnection =
  /^Connection terminated|^Client has encountered a connection error|timeout exceeded when trying to connect/;

function isUnavailableError(err: Error): boolean {
  const code: unknown = (err as Error & { code?: unknown }).code;
  if (typeof code === "string" && (socketCodes.has(code) || isUnavailableSqlState(code))) return true;
  return droppedConnection.test(err.message);
}
