import { describe, expect, it } from "vitest";
import { requestLogFields } from "./request-context.js";
import { parseTraceparent } from "./tracing-headers.js";

/** The W3C traceparent as envd and the loggers read it (no SDK), and the trace id on log lines. */

describe("traceparent", () => {
  it("parses a well-formed header and refuses what the W3C spec says to ignore", () => {
    expect(parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).toEqual({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      spanId: "00f067aa0ba902b7",
      sampled: true,
    });
    expect(parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")?.sampled).toBe(false);
    // A later version may carry more fields after the flags.
    expect(parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")?.traceId).toBe(
      "4bf92f3577b34da6a3ce929d0e0e4736",
    );
    for (const bad of [
      undefined,
      "",
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","level":"error',
      ["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
    ]) {
      expect(parseTraceparent(bad)).toBeUndefined();
    }
  });

  it("puts the trace id next to the request id on a request's log fields", () => {
    expect(
      requestLogFields({
        "x-request-id": "req_abcdefgh12",
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
      }),
    ).toEqual({ requestId: "req_abcdefgh12", traceId: "4bf92f3577b34da6a3ce929d0e0e4736" });
    expect(requestLogFields({ traceparent: "garbage" })).toEqual({});
  });
});
