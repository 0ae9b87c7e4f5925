import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chown, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A real PostgreSQL server started for a test file. */
export interface PostgresServer {
  /** Connection URL with password, e.g. `postgres://postgres:…@127.0.0.1:54321/postgres`. */
  url: string;
  port: number;
  /** Temp directory holding the cluster, socket and log; removed by `stop`. */
  dir: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<major>/bin). */
async function postgresBin(): Promise<string> {
  const majors = (await readdir("/usr/lib/postgresql").catch(() => [] as string[])).filter((d) => /^\d+$/.test(d));
  const newest = majors.sort((a, b) => Number(b) - Number(a))[0];
  if (!newest) throw new Error("PostgreSQL is not installed (apt-get install postgresql)");
  return `/usr/lib/postgresql/${newest}/bin`;
}

async function asPostgres(bin: string, args: string[]): Promise<void> {
  // PostgreSQL refuses to run as root, so the cluster belongs to the `postgres` OS user.
  await run("runuser", ["-u", "postgres", "--", bin, ...args], { timeout: 60_000 });
}

/**
 * Starts a throwaway PostgreSQL cluster from the Debian package, as the `postgres` OS user, listening
 * on a random loopback port with password (SCRAM) authentication. `stop()` shuts it down and removes
 * the directory; call it from afterAll.
 */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = await postgresBin();
  const dir = await mkdtemp(join(tmpdir(), "wrenn-pg-"));
  const password = randomBytes(12).toString("hex");
  const passwordFile = join(dir, "pw");
  const data = join(dir, "data");
  const socketDir = join(dir, "sock");
  let started = false;
  const stop = async () => {
    if (started) await asPostgres(join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
    await run("mkdir", [socketDir]);
    const { stdout } = await run("id", ["-u", "postgres"]);
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    for (const p of [dir, passwordFile, socketDir]) await chown(p, Number(stdout.trim()), Number(gid.trim()));
    await asPostgres(join(bin, "initdb"), [
      "-D",
      data,
      "-U",
      "postgres",
      `--pwfile=${passwordFile}`,
      "--auth-local=trust",
      "--auth-host=scram-sha-256",
      "-E",
      "UTF8",
      "--locale=C.UTF-8",
    ]);
    const port = await freePort();
    await asPostgres(join(bin, "pg_ctl"), [
      "-D",
      data,
      "-l",
      join(dir, "server.log"),
      "-o",
      `-p ${port} -c listen_addresses=127.0.0.1 -k ${socketDir} -c fsync=off -c max_connections=200`,
      "-w",
      "start",
    ]);
    started = true;
    return { url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, port, dir, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
