import type { ExecutionEvent } from "./context.js";

/**
 * MIME types of a Jupyter display bundle and the field the E2B SDK's `Result` reads each from. Types
 * not listed keep their MIME type as the key; the SDK shows them in `Result.extra`.
 */
const FIELD_OF_MIME: Record<string, string> = {
  "text/plain": "text",
  "text/html": "html",
  "text/markdown": "markdown",
  "image/svg+xml": "svg",
  "image/png": "png",
  "image/jpeg": "jpeg",
  "application/pdf": "pdf",
  "text/latex": "latex",
  "application/json": "json",
  "application/javascript": "javascript",
  // Set by interpreter/kernel_startup.py: a matplotlib figure's data, a DataFrame's rows.
  "application/vnd.wrenn.chart+json": "chart",
  "application/vnd.wrenn.data+json": "data",
};

/** A bridge event as the line `POST /execute` streams for it (E2B's shapes), or undefined for none. */
export function executionLine(e: ExecutionEvent): Record<string, unknown> | undefined {
  switch (e.event) {
    case "stream":
      return { type: e.name === "stderr" ? "stderr" : "stdout", text: e.text };
    case "result": {
      const line: Record<string, unknown> = { type: "result" };
      for (const [mime, value] of Object.entries(e.data)) {
        if (value === null || value === undefined) continue;
        line[FIELD_OF_MIME[mime] ?? mime] = value;
      }
      line.is_main_result = e.main;
      return line;
    }
    case "error":
      return { type: "error", name: e.name, value: e.value, traceback: e.traceback.join("\n") };
    case "done":
      return e.execution_count === null
        ? undefined
        : { type: "number_of_executions", execution_count: e.execution_count };
  }
}
