import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * The key that seals tokens at rest. A configured key wins. Otherwise a single-machine install keeps
 * a generated key next to its PGlite data (`<dataDir>/encryption.key`, mode 0600), so restarts can
 * still open what earlier runs sealed. With an external database a key must be configured, because
 * other edge instances must share it.
 */
export async function resolveEncryptionKey(options: {
  configured: string | undefined;
  dataDir: string | undefined;
}): Promise<{ key: string; generated: boolean }> {
  if (options.configured) return { key: options.configured, generated: false };
  if (!options.dataDir || options.dataDir.startsWith("memory://")) {
    throw new Error(
      "WRENN_ENCRYPTION_KEY is required with DATABASE_URL (64 hex characters, e.g. `openssl rand -hex 32`)",
    );
  }
  const file = join(options.dataDir, "encryption.key");
  try {
    const key = (await readFile(file, "utf8")).trim();
    if (/^[0-9a-fA-F]{64}$/.test(key)) return { key, generated: false };
    throw new Error(`${file} does not hold 64 hex characters; fix or remove it (sealed tokens need the original key)`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await mkdir(options.dataDir, { recursive: true });
  const key = randomBytes(32).toString("hex");
  await writeFile(file, `${key}\n`, { mode: 0o600, flag: "wx" });
  return { key, generated: true };
}
