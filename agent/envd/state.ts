import type { EnvdConfig } from "./config.js";
import { type LinuxUser, lookupUser } from "./users.js";

/** What `/init` sets: the defaults every request and process inherits. */
export class EnvdState {
  /** When set, every route but the open ones needs `X-Access-Token` equal to it. */
  accessToken: string | undefined;
  /** Default user for requests that name none. */
  defaultUser: string | undefined;
  /** Default working directory for processes and empty paths. */
  defaultWorkdir: string | undefined;
  /** Environment variables every new process gets. */
  envVars: Record<string, string> = {};
  /** Timestamp (ms since epoch) of the newest `/init` applied; older ones are ignored. */
  lastInitMs = 0;

  constructor(private readonly config: Pick<EnvdConfig, "defaultUser">) {
    this.defaultUser = config.defaultUser;
  }

  /**
   * The user a request runs as: the named one, else `/init`'s default, else `user` when that
   * account exists, else root. Undefined only when a name was given and no such account exists.
   */
  async resolveUser(name: string | undefined): Promise<LinuxUser | undefined> {
    if (name) return lookupUser(name);
    const fallback = this.defaultUser ?? this.config.defaultUser;
    if (fallback) {
      const user = await lookupUser(fallback);
      if (user) return user;
    }
    return (
      (await lookupUser("user")) ??
      (await lookupUser("root")) ?? { name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/sh" }
    );
  }
}
