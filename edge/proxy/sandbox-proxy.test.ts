import { describe, expect, it } from "vitest";
import {
  clientResponseHeaders,
  downloadResponseHeaders,
  guestRequestHeaders,
  refusalForAgentBody,
} from "./sandbox-proxy.js";

const guestHeaders = () =>
  new Headers([
    ["content-type", "text/html"],
    ["set-cookie", "a=1"],
    ["content-length", "12"],
    ["etag", '"e"'],
    ["last-modified", "Mon, 07 Dec 2026 00:00:00 GMT"],
    ["x-guest", "1"],
    ["connection", "keep-alive"],
  ]);

describe("guest response headers", () => {
  it("serves downloads as inert attachments with only whitelisted guest headers", () => {
    const out = downloadResponseHeaders(guestHeaders(), "a b'(x).html");
    expect(Object.fromEntries(out)).toEqual({
      "content-type": "application/octet-stream",
      "x-content-type-options": "nosniff",
      "content-security-policy": "sandbox",
      "content-disposition": "attachment; filename*=UTF-8''a%20b%27%28x%29.html",
      "cache-control": "no-store",
      "content-length": "12",
      etag: '"e"',
      "last-modified": "Mon, 07 Dec 2026 00:00:00 GMT",
    });
    expect(downloadResponseHeaders(guestHeaders(), undefined).get("content-disposition")).toBe("attachment");
  });

  it("drops Set-Cookie on header-routed traffic and keeps it on the guest's own origin", () => {
    const headerRouted = clientResponseHeaders(guestHeaders(), { responsePolicy: "no-cookies" });
    expect(headerRouted.get("set-cookie")).toBeNull();
    expect(headerRouted.get("content-type")).toBe("text/html");
    expect(headerRouted.get("connection")).toBeNull();
    const ownOrigin = clientResponseHeaders(guestHeaders(), { responsePolicy: "guest" });
    expect(ownOrigin.get("set-cookie")).toBe("a=1");
  });
});

describe("guest request headers", () => {
  const sent = () => new Headers({ cookie: "wrenn_session=secret; wrenn_csrf=t", "x-app": "1" });

  it("drops Wrenn's cookies on traffic that came to the API's own origin (header-routed, signed download)", () => {
    for (const responsePolicy of ["no-cookies", "download"] as const) {
      const out = guestRequestHeaders(sent(), { responsePolicy });
      expect(out.cookie).toBeUndefined();
      expect(out["x-app"]).toBe("1");
    }
  });

  it("keeps the guest's own cookies on the sandbox's own origin", () => {
    expect(guestRequestHeaders(sent(), { responsePolicy: "guest" }).cookie).toBe("wrenn_session=secret; wrenn_csrf=t");
  });
});

describe("refusalForAgentBody", () => {
  const destination = { sandboxId: "abcdefghij0123456789", port: 8000 };

  it("maps the agent's reasons to the proxy's answers in the error shape", async () => {
    const cases: Array<[string, string]> = [
      ["PORT_NOT_OPEN", "SANDBOX_PORT_NOT_OPEN"],
      ["SANDBOX_NOT_FOUND", "SANDBOX_NOT_FOUND"],
      ["UPSTREAM_ERROR", "SANDBOX_UNREACHABLE"],
      ["SANDBOX_BAD_RESPONSE", "SANDBOX_BAD_RESPONSE"],
    ];
    for (const [reason, code] of cases) {
      const res = refusalForAgentBody(JSON.stringify({ error: { code: reason, message: "m" } }), destination, "req_x");
      expect(res?.status).toBe(502);
      const body = (await res?.json()) as { error: { code: string; requestId: string }; code: number };
      expect(body.error).toMatchObject({ code, requestId: "req_x" });
      expect(body.code).toBe(502);
    }
  });

  it("leaves bodies that are not the agent's alone", () => {
    expect(refusalForAgentBody("not json", destination, "r")).toBeUndefined();
    expect(refusalForAgentBody('{"message":"guest"}', destination, "r")).toBeUndefined();
    expect(refusalForAgentBody('{"error":{"code":"SOMETHING_ELSE"}}', destination, "r")).toBeUndefined();
  });
});
