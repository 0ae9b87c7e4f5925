/**
 * Which name each sandbox's resolver answered an address for, until the answer's TTL runs out: the
 * proxy's name for a connection that carries none (a ClientHello without SNI, a request without Host),
 * so an address resolved for an allowed name is judged by that name on ports 80/443 as the kernel's
 * `dns_ok` set judges it on the other ports. A name the connection carries always wins.
 */
export class ResolvedNames {
  readonly #bySandbox = new Map<string, Map<string, { name: string; expiresAt: number }>>();
  readonly #maxPerSandbox: number;
  readonly #now: () => number;

  constructor(options: { maxPerSandbox?: number; now?: () => number } = {}) {
    this.#maxPerSandbox = options.maxPerSandbox ?? 4096;
    this.#now = options.now ?? Date.now;
  }

  remember(sandboxId: string, name: string, addresses: readonly string[], ttlSec: number): void {
    if (addresses.length === 0) return;
    let names = this.#bySandbox.get(sandboxId);
    if (!names) {
      names = new Map();
      this.#bySandbox.set(sandboxId, names);
    }
    const now = this.#now();
    const expiresAt = now + ttlSec * 1000;
    for (const address of addresses) {
      names.delete(address); // re-inserted last: the map's order is the order of last answers
      names.set(address, { name, expiresAt });
    }
    if (names.size > this.#maxPerSandbox) {
      for (const [address, entry] of names) {
        if (names.size <= this.#maxPerSandbox && entry.expiresAt > now) break;
        names.delete(address);
      }
    }
  }

  /** The name this address was last answered for, while that answer is fresh. */
  nameOf(sandboxId: string, address: string): string | undefined {
    const entry = this.#bySandbox.get(sandboxId)?.get(address);
    return entry && entry.expiresAt > this.#now() ? entry.name : undefined;
  }

  /** Drops expired answers and sandboxes with none left. */
  prune(): void {
    const now = this.#now();
    for (const [sandboxId, names] of this.#bySandbox) {
      for (const [address, entry] of names) if (entry.expiresAt <= now) names.delete(address);
      if (names.size === 0) this.#bySandbox.delete(sandboxId);
    }
  }
}
