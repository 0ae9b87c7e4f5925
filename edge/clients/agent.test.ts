import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { HostAgentService } from "../../proto/gen/hostagent/v1/hostagent_pb.js";
import { ServiceError } from "../services/errors.js";
import {
  AGENT_ERROR_MAP,
  agentErrorToServiceError,
  createAgentConnector,
  createAgentTransport,
  isAgentAnswer,
} from "./agent.js";

describe("AGENT_ERROR_MAP", () => {
  const expected: Array<[Code, string]> = [
    [Code.Canceled, "AGENT_UNAVAILABLE"],
    [Code.Unknown, "AGENT_ERROR"],
    [Code.InvalidArgument, "BAD_REQUEST"],
    [Code.DeadlineExceeded, "AGENT_UNAVAILABLE"],
    [Code.NotFound, "NOT_FOUND"],
    [Code.AlreadyExists, "CONFLICT"],
    [Code.PermissionDenied, "AGENT_ERROR"],
    [Code.ResourceExhausted, "NO_CAPACITY"],
    [Code.FailedPrecondition, "CONFLICT"],
    [Code.Aborted, "CONFLICT"],
    [Code.OutOfRange, "BAD_REQUEST"],
    [Code.Unimplemented, "NOT_IMPLEMENTED"],
    [Code.Internal, "AGENT_ERROR"],
    [Code.Unavailable, "AGENT_UNAVAILABLE"],
    [Code.DataLoss, "AGENT_ERROR"],
    [Code.Unauthenticated, "AGENT_ERROR"],
  ];

  it.each(expected)("maps Connect code %s to %s", (code, apiCode) => {
    expect(AGENT_ERROR_MAP[code]).toBe(apiCode);
    const mapped = agentErrorToServiceError(new ConnectError("detail from agent", code), "do thing");
    expect(mapped).toBeInstanceOf(ServiceError);
    expect(mapped.code).toBe(apiCode);
  });

  it("covers every Connect code", () => {
    const codes = Object.values(Code).filter((v): v is Code => typeof v === "number");
    expect(codes).toHaveLength(16);
    for (const code of codes) expect(AGENT_ERROR_MAP[code], Code[code]).toBeDefined();
  });

  it("passes caller-actionable agent messages on, and hides internal ones", () => {
    expect(agentErrorToServiceError(new ConnectError("template py not found", Code.NotFound), "create").message).toBe(
      "create: template py not found",
    );
    const internal = agentErrorToServiceError(
      new ConnectError("open /var/lib/wrenn/secret: EACCES", Code.Internal),
      "create",
    );
    expect(internal.message).not.toContain("/var/lib");
    expect(internal.cause).toBeInstanceOf(ConnectError);
  });

  it("treats fetch failures as unavailable, other plain errors as agent errors, and keeps ServiceErrors", () => {
    expect(agentErrorToServiceError(new TypeError("fetch failed"), "x").code).toBe("AGENT_UNAVAILABLE");
    expect(isAgentAnswer(new TypeError("fetch failed"))).toBe(false);
    expect(agentErrorToServiceError(new Error("weird"), "x").code).toBe("AGENT_ERROR");
    const original = new ServiceError("CONFLICT", "busy");
    expect(agentErrorToServiceError(original, "x")).toBe(original);
  });

  it("tells definite answers from transport failures", () => {
    expect(isAgentAnswer(new ConnectError("x", Code.NotFound))).toBe(true);
    expect(isAgentAnswer(new ConnectError("x", Code.Unavailable))).toBe(false);
    expect(isAgentAnswer(new ConnectError("x", Code.DeadlineExceeded))).toBe(false);
  });
});

describe("agent transport", () => {
  const host = { id: "host_x", address: "http://agent.test:9000", token: "secret-token" };

  it("sends binary Connect with bearer token, request id, redirect manual and a deadline", async () => {
    const seen: Array<{ url: string; init: RequestInit | undefined }> = [];
    const fakeFetch: typeof fetch = async (input, init) => {
      seen.push({ url: String(input), init });
      return new Response(new Uint8Array(), { status: 200, headers: { "content-type": "application/proto" } });
    };
    const client = createClient(HostAgentService, createAgentTransport(host, "req_abc123456", fakeFetch));
    await client.getHostInfo({}, { timeoutMs: 1234 });
    expect(seen).toHaveLength(1);
    const call = seen[0];
    expect(call?.url).toBe("http://agent.test:9000/hostagent.v1.HostAgentService/GetHostInfo");
    expect(call?.init?.redirect).toBe("manual");
    const headers = new Headers(call?.init?.headers);
    expect(headers.get("authorization")).toBe("Bearer secret-token");
    expect(headers.get("x-request-id")).toBe("req_abc123456");
    expect(headers.get("content-type")).toBe("application/proto");
    expect(headers.get("connect-timeout-ms")).toBe("1234");
  });

  it("maps a refused connection to AGENT_UNAVAILABLE", async () => {
    const refused: typeof fetch = async () => {
      throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:9") });
    };
    const client = createClient(HostAgentService, createAgentTransport(host, "req_abc123456", refused));
    const err = await client.getHostInfo({}).catch((e: unknown) => e);
    expect(agentErrorToServiceError(err, "info").code).toBe("AGENT_UNAVAILABLE");
    expect(isAgentAnswer(err)).toBe(false);
  });

  it("maps an HTTP 503 from the agent to Unavailable", async () => {
    const fakeFetch: typeof fetch = async () => new Response("down", { status: 503 });
    const client = createClient(HostAgentService, createAgentTransport(host, "req_abc123456", fakeFetch));
    const err = await client.getHostInfo({}).catch((e: unknown) => e);
    expect(agentErrorToServiceError(err, "info").code).toBe("AGENT_UNAVAILABLE");
  });

  it("proxies to /proxy/{id}/{port}/… with the host token and a streamed body", async () => {
    let captured: { url: string; init: (RequestInit & { duplex?: string }) | undefined } | undefined;
    const connector = createAgentConnector({
      fetch: async (input, init) => {
        captured = { url: String(input), init };
        return new Response("ok");
      },
    });
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array([1, 2, 3]));
        c.close();
      },
    });
    await connector.proxy({ ...host, address: "http://agent.test:9000/" }, "abc", 49983, "/files?path=%2Fx", {
      method: "POST",
      headers: { "x-access-token": "t" },
      body,
      requestId: "req_abc123456",
    });
    expect(captured?.url).toBe("http://agent.test:9000/proxy/abc/49983/files?path=%2Fx");
    const headers = new Headers(captured?.init?.headers);
    expect(headers.get("authorization")).toBe("Bearer secret-token");
    expect(headers.get("x-access-token")).toBe("t");
    expect(captured?.init?.duplex).toBe("half");
    expect(captured?.init?.redirect).toBe("manual");
  });
});
