/**
 * One event of a streamed command (`POST /v1/sandboxes/{id}/exec/stream`), as sent to the client, one
 * JSON object per line. The service produces it and the SDK reads it (type-only), so it lives here.
 */
export type ExecStreamEvent =
  | { type: "start"; pid: number }
  | { type: "stdout" | "stderr"; data: string; encoding: "utf-8" | "base64" }
  | { type: "exit"; exitCode: number; error?: string }
  | { type: "error"; code: string; message: string };
