import { mkdir, open, readFile, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { BuildError } from "./errors.js";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes an exclusive build lock (a file holding our pid) so two builds never write the same root at
 * once; a lock left by a process that no longer exists is taken over. Returns the release function.
 */
export async function acquireBuildLock(path: string): Promise<() => Promise<void>> {
  await mkdir(dirname(path), { recursive: true });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, "wx");
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return async () => {
        await rm(path, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10);
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && alive(holder)) {
        throw new BuildError(
          `another image build is running (pid ${holder})`,
          "wait for it to finish; its result will be reused",
        );
      }
      await rm(path, { force: true });
    }
  }
  throw new BuildError(`could not take the build lock ${path}`);
}
