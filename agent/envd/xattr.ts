import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Exec } from "./exec.js";
import type { Logger } from "./log.js";

/** File metadata lives in extended attributes named `user.e2b.<key>`, as in E2B's envd. */
export const METADATA_XATTR_PREFIX = "user.e2b.";

/** Reads and writes file metadata. Backed by getfattr/setfattr (Debian package `attr`), so envd needs no native xattr addon. */
export interface MetadataStore {
  /** Metadata of each path that has any; paths without metadata are absent from the map. Symlinks are not followed. */
  read(paths: readonly string[]): Promise<Map<string, Record<string, string>>>;
  /** Sets each key on `path` (other keys are left alone). */
  write(path: string, metadata: Record<string, string>): Promise<void>;
}

/** getfattr prints file names with unprintable bytes and backslashes as three-digit octal escapes. */
function unescapeName(name: string): string {
  if (!name.includes("\\")) return name;
  const bytes: number[] = [];
  const raw = Buffer.from(name, "utf8");
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i] as number;
    if (b === 0x5c && i + 3 < raw.length + 0 && /^[0-7]{3}$/.test(raw.subarray(i + 1, i + 4).toString("latin1"))) {
      bytes.push(Number.parseInt(raw.subarray(i + 1, i + 4).toString("latin1"), 8));
      i += 3;
    } else bytes.push(b);
  }
  return Buffer.from(bytes).toString("utf8");
}

/** Parses `getfattr -d -e base64` output into path → metadata. */
export function parseGetfattrDump(dump: string): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  for (const line of dump.split("\n")) {
    if (line.startsWith("# file: ")) {
      current = {};
      out.set(unescapeName(line.slice("# file: ".length)), current);
      continue;
    }
    const eq = line.indexOf("=");
    if (!current || eq < 0 || !line.startsWith(METADATA_XATTR_PREFIX)) continue;
    const key = line.slice(METADATA_XATTR_PREFIX.length, eq);
    const encoded = line.slice(eq + 1);
    current[key] = encoded.startsWith("0s")
      ? Buffer.from(encoded.slice(2), "base64").toString("utf8")
      : encoded.replace(/^"|"$/g, "");
  }
  for (const [path, md] of out) if (Object.keys(md).length === 0) out.delete(path);
  return out;
}

/**
 * The attr tools to run: the copies build:envd ships in dist/envd/libexec (beside lib/envd.mjs),
 * so a guest image needs no `attr` package, else whatever PATH finds.
 */
function attrTool(name: "getfattr" | "setfattr"): string {
  const bundled = fileURLToPath(new URL(`../libexec/${name}`, import.meta.url));
  return existsSync(bundled) ? bundled : name;
}

/** Creates the getfattr/setfattr-backed {@link MetadataStore}. Missing tools degrade to "no metadata", logged once. */
export function createMetadataStore(exec: Exec, logger: Logger): MetadataStore {
  const getfattr = attrTool("getfattr");
  const setfattr = attrTool("setfattr");
  let missingToolLogged = false;
  const noteMissing = (err: unknown) => {
    if (missingToolLogged) return;
    missingToolLogged = true;
    logger.warn("file metadata unavailable: install the attr package (getfattr/setfattr)", { err });
  };
  return {
    async read(paths) {
      if (paths.length === 0) return new Map();
      try {
        // `--` ends options so a path starting with "-" is not taken for one.
        const res = await exec(getfattr, [
          "-h",
          "-d",
          "-e",
          "base64",
          "-m",
          "^user\\.e2b\\.",
          "--absolute-names",
          "--",
          ...paths,
        ]);
        return parseGetfattrDump(res.stdout);
      } catch (err) {
        noteMissing(err);
        return new Map();
      }
    },
    async write(path, metadata) {
      for (const [key, value] of Object.entries(metadata)) {
        const encoded = `0s${Buffer.from(value, "utf8").toString("base64")}`;
        const res = await exec(setfattr, ["-h", "-n", `${METADATA_XATTR_PREFIX}${key}`, "-v", encoded, "--", path]);
        if (res.exitCode !== 0) throw new Error(`setting metadata "${key}" failed: ${res.stderr.trim()}`);
      }
    },
  };
}
