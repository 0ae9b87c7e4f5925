import type { ConnectionOptions } from "./config.js";
import { ApiClient, segment } from "./http.js";
import type {
  ApiKeyInfo,
  CreateApiKeyRequest,
  CreatedApiKeyInfo,
  HostInfo,
  TeamInfo,
  UpdateApiKeyRequest,
  UpdateTeamRequest,
} from "./types.js";
import { Events, Webhooks } from "./webhooks.js";

/**
 * How the edge checks a host agent's TLS certificate beyond the system's CAs (https addresses only,
 * applied by Node edges; a Workers edge refuses a host registered with either).
 */
export interface RegisterHostOptions {
  /** SHA-256 fingerprint of the agent's certificate, hex with or without colons (as `openssl x509 -fingerprint -sha256` prints it). */
  tlsPin?: string;
  /** PEM of the CA the agent's certificate must chain to; its host name is checked against the address. */
  caPem?: string;
}

/** Host agents (every call needs an admin key). */
export class Hosts {
  constructor(private readonly api: ApiClient) {}

  /** Every registered host. */
  async list(): Promise<HostInfo[]> {
    return (await this.api.json<{ hosts: HostInfo[] }>("GET", "/v1/hosts")).hosts;
  }

  /**
   * Registers an agent by its address and bearer token (the edge checks it answers first, through the
   * pin or CA when given, so a wrong pin fails here and nothing is stored).
   */
  async register(address: string, token: string, options: RegisterHostOptions = {}): Promise<HostInfo> {
    const json: { address: string; token: string } & RegisterHostOptions = { address, token };
    if (options.tlsPin !== undefined) json.tlsPin = options.tlsPin;
    if (options.caPem !== undefined) json.caPem = options.caPem;
    return this.api.json<HostInfo>("POST", "/v1/hosts", { json });
  }

  /** Stops placing new sandboxes on a host. */
  async drain(hostId: string): Promise<HostInfo> {
    return this.api.json<HostInfo>("POST", `/v1/hosts/${segment(hostId)}/drain`);
  }

  /** Lets a drained host take new sandboxes again. */
  async activate(hostId: string): Promise<HostInfo> {
    return this.api.json<HostInfo>("POST", `/v1/hosts/${segment(hostId)}/activate`);
  }

  /** Removes a host; `force` also when sandboxes are placed on it. */
  async delete(hostId: string, options: { force?: boolean } = {}): Promise<void> {
    await this.api.empty("DELETE", `/v1/hosts/${segment(hostId)}`, {
      query: { force: options.force ? "true" : undefined },
    });
  }
}

/** API keys. */
export class ApiKeys {
  constructor(private readonly api: ApiClient) {}

  /** Creates a key; its `secret` is in this answer only. */
  async create(request: CreateApiKeyRequest = {}): Promise<CreatedApiKeyInfo> {
    return this.api.json<CreatedApiKeyInfo>("POST", "/v1/api-keys", { json: request });
  }

  /** The team's keys (`all`: every team's, admin only). */
  async list(options: { all?: boolean } = {}): Promise<ApiKeyInfo[]> {
    const res = await this.api.json<{ apiKeys: ApiKeyInfo[] }>("GET", "/v1/api-keys", {
      query: { all: options.all ? "true" : undefined },
    });
    return res.apiKeys;
  }

  /** Revokes a key; it stops working at once. */
  async revoke(keyId: string): Promise<ApiKeyInfo> {
    return this.api.json<ApiKeyInfo>("DELETE", `/v1/api-keys/${segment(keyId)}`);
  }

  /** Changes a key's name, scopes, expiry or (admin) rate limit. */
  async update(keyId: string, request: UpdateApiKeyRequest): Promise<ApiKeyInfo> {
    return this.api.json<ApiKeyInfo>("PATCH", `/v1/api-keys/${segment(keyId)}`, { json: request });
  }
}

/** Teams: isolation minimum, quotas and usage (changes need an admin key). */
export class Teams {
  constructor(private readonly api: ApiClient) {}

  /** Every team (admin); a team key gets its own team only. */
  async list(): Promise<TeamInfo[]> {
    return (await this.api.json<{ teams: TeamInfo[] }>("GET", "/v1/teams")).teams;
  }

  /** One team; `me` (the default) is the caller's own. */
  async get(teamId = "me"): Promise<TeamInfo> {
    return this.api.json<TeamInfo>("GET", `/v1/teams/${segment(teamId)}`);
  }

  /** Sets a team's isolation minimum and quotas (admin); null puts a value back to the default. */
  async update(teamId: string, request: UpdateTeamRequest): Promise<TeamInfo> {
    return this.api.json<TeamInfo>("PATCH", `/v1/teams/${segment(teamId)}`, { json: request });
  }
}

/** The parts of the API that are not about one sandbox: health, hosts, API keys, teams. */
export class WrennClient {
  readonly api: ApiClient;
  readonly hosts: Hosts;
  readonly apiKeys: ApiKeys;
  readonly teams: Teams;
  /** The team's lifecycle events (list and live stream). */
  readonly events: Events;
  /** The team's webhooks and their delivery logs. */
  readonly webhooks: Webhooks;

  constructor(options: ConnectionOptions = {}) {
    this.api = new ApiClient(options);
    this.hosts = new Hosts(this.api);
    this.apiKeys = new ApiKeys(this.api);
    this.events = new Events(this.api);
    this.webhooks = new Webhooks(this.api);
    this.teams = new Teams(this.api);
  }

  /** `GET /health`: answers without a key. */
  async health(): Promise<{ status: "ok"; version: string }> {
    return this.api.json("GET", "/health", { timeoutMs: 5_000 });
  }
}
