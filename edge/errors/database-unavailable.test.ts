import { describe, expect, it } from "vitest";
import { isDatabaseUnavailable } from "./database-unavailable.js";
import { toApiError } from "./handle.js";

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe("isDatabaseUnavailable", () => {
  it("recognises a server that is gone or not yet taking connections, through drizzle's wrapping", () => {
    const cases = [
      withCode("connect ECONNREFUSED 127.0.0.1:5432", "ECONNREFUSED"),
      withCode("read ECONNRESET", "ECONNRESET"),
      withCode("terminating connection due to administrator command", "57P01"),
      withCode("the database system is starting up", "57P03"),
      withCode("connection failure", "08006"),
      new Error("Connection terminated unexpectedly"),
    ];
    for (const cause of cases) {
      expect(isDatabaseUnavailable(cause), cause.message).toBe(true);
      expect(isDatabaseUnavailable(new Error("Failed query: select 1", { cause })), cause.message).toBe(true);
      expect(toApiError(new Error("Failed query", { cause })).code).toBe("DB_UNAVAILABLE");
    }
  });

  it("leaves failed queries alone", () => {
    expect(isDatabaseUnavailable(withCode("duplicate key value", "23505"))).toBe(false);
    expect(isDatabaseUnavailable(withCode("syntax error", "42601"))).toBe(false);
    expect(isDatabaseUnavailable(new Error("something else"))).toBe(false);
    expect(isDatabaseUnavailable("not an error")).toBe(false);
    expect(toApiError(new Error("boom")).code).toBe("INTERNAL_SERVER_ERROR");
  });
});
