import { invalidArgument } from "../errors.js";

/** Sandbox ids are 20 characters of [a-z0-9], chosen by the edge (as E2B's, so `<port>-<id>.<domain>` parses). */
export const SANDBOX_ID_PATTERN = /^[a-z0-9]{20}$/;

/** Template names become directory names: keep them to a safe, short alphabet. */
export const TEMPLATE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function assertSandboxId(id: string): void {
  if (!SANDBOX_ID_PATTERN.test(id)) {
    throw invalidArgument(
      "INVALID_SANDBOX_ID",
      `sandbox id must be 20 characters of [a-z0-9], got ${JSON.stringify(id.slice(0, 40))}`,
    );
  }
}

export function assertTemplateName(name: string): void {
  if (!TEMPLATE_PATTERN.test(name) || name.includes("..")) {
    throw invalidArgument("INVALID_TEMPLATE", `template name ${JSON.stringify(name.slice(0, 70))} is not valid`);
  }
}
