import type { EnvdClient } from "../envd-client.js";

/**
 * What the agent uses of one guest's envd: the handshake (/health, /init), the Connect services
 * (Process, Filesystem) and /files. The manager makes one per running sandbox through an
 * {@link EnvdClientFactory}, so a test can stand in for envd at this protocol boundary.
 */
export type GuestEnvd = Pick<EnvdClient, "waitHealthy" | "init" | "process" | "filesystem" | "writeFile" | "readFile">;

/** Makes the envd client of a guest reached at `address`, sending the sandbox's access token ("" for none). */
export type EnvdClientFactory = (address: string, accessToken: string) => GuestEnvd;
