import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import type { Logger } from "./log.js";
import { STANDARD_PATH } from "./users.js";

/** A TCP socket in LISTEN state, from /proc/net/tcp{,6}. */
export interface Listener {
  /** "127.0.0.1", "::1", "0.0.0.0", "::" or another address. */
  address: string;
  port: number;
}

const TCP_LISTEN = "0A";

function decodeIpv4(hex: string): string {
  // /proc prints the address as a host-order (little-endian) 32-bit word.
  const bytes = Buffer.from(hex, "hex");
  return [bytes[3], bytes[2], bytes[1], bytes[0]].join(".");
}

function decodeIpv6(hex: string): string {
  const bytes = Buffer.from(hex, "hex");
  const words: string[] = [];
  // Four host-order 32-bit words.
  for (let w = 0; w < 4; w++) {
    const word = bytes.subarray(w * 4, w * 4 + 4).reverse();
    words.push(word.subarray(0, 2).toString("hex"), word.subarray(2, 4).toString("hex"));
  }
  const full = words.map((x) => x.replace(/^0+(?=.)/, "")).join(":");
  if (full === "0:0:0:0:0:0:0:0") return "::";
  if (full === "0:0:0:0:0:0:0:1") return "::1";
  return full;
}

/** Parses /proc/net/tcp or tcp6 text into LISTEN sockets. */
export function parseProcNetTcp(text: string, family: 4 | 6): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4 || cols[3] !== TCP_LISTEN) continue;
    const [addrHex = "", portHex = ""] = (cols[1] ?? "").split(":");
    const address = family === 4 ? decodeIpv4(addrHex) : decodeIpv6(addrHex);
    out.push({ address, port: Number.parseInt(portHex, 16) });
  }
  return out;
}

async function readListeners(): Promise<Listener[]> {
  const read = (p: string) => readFile(p, "utf8").catch(() => "");
  const [v4, v6] = await Promise.all([read("/proc/net/tcp"), read("/proc/net/tcp6")]);
  return [...parseProcNetTcp(v4, 4), ...parseProcNetTcp(v6, 6)];
}

/**
 * Makes services that listen only on the guest's loopback reachable on its network address, so the
 * sandbox proxy can reach them: every scan, each loopback-only listener gets a socat bridge on
 * `address`, and a bridge whose listener went away is stopped.
 */
export class PortForwarder {
  private readonly bridges = new Map<number, ChildProcess>();
  private timer: NodeJS.Timeout | undefined;
  private scanning = false;

  constructor(private readonly opts: { address: string; excludePorts: number[]; intervalMs: number; logger: Logger }) {}

  /** Starts scanning every interval. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.scan(), this.opts.intervalMs);
    this.timer.unref();
    void this.scan();
  }

  /** Ports currently bridged. */
  get forwardedPorts(): number[] {
    return [...this.bridges.keys()].sort((a, b) => a - b);
  }

  /** One scan: start missing bridges, stop stale ones. */
  async scan(): Promise<void> {
    if (this.scanning) return;
    this.scanning = true;
    try {
      const listeners = await readListeners();
      const wanted = new Map<number, "4" | "6">();
      const reachable = new Set<number>();
      for (const l of listeners) {
        // Already reachable from outside: a wildcard bind, or the service itself binds our address (not our bridge).
        const ownBridge = l.address === this.opts.address && this.bridges.has(l.port);
        if (l.address === "0.0.0.0" || l.address === "::" || (l.address === this.opts.address && !ownBridge)) {
          reachable.add(l.port);
        }
      }
      for (const l of listeners) {
        if (this.opts.excludePorts.includes(l.port) || reachable.has(l.port)) continue;
        if (l.address === "127.0.0.1") wanted.set(l.port, "4");
        else if (l.address === "::1" && !wanted.has(l.port)) wanted.set(l.port, "6");
      }
      for (const [port, child] of this.bridges) {
        if (!wanted.has(port)) {
          child.kill("SIGTERM");
          this.bridges.delete(port);
          this.opts.logger.info("stopped port forward", { port });
        }
      }
      for (const [port, family] of wanted) if (!this.bridges.has(port)) this.bridge(port, family);
    } finally {
      this.scanning = false;
    }
  }

  private bridge(port: number, family: "4" | "6"): void {
    const target = family === "4" ? `TCP4:127.0.0.1:${port}` : `TCP6:[::1]:${port}`;
    const listen = this.opts.address.includes(":")
      ? `TCP6-LISTEN:${port},bind=[${this.opts.address}],reuseaddr,fork`
      : `TCP4-LISTEN:${port},bind=${this.opts.address},reuseaddr,fork`;
    // No -d0: socat 1.7.4 (Debian bookworm, the guest image) rejects it and exits at once; its default
    // verbosity already logs only errors, and stdio is ignored.
    const child = spawn("socat", [listen, target], {
      stdio: "ignore",
      env: { PATH: STANDARD_PATH },
    });
    child.on("error", (err) => this.opts.logger.warn("port forward failed", { port, err }));
    child.on("exit", () => {
      if (this.bridges.get(port) === child) this.bridges.delete(port);
    });
    this.bridges.set(port, child);
    this.opts.logger.info("forwarding port", { port, address: this.opts.address });
  }

  /** Stops scanning and every bridge. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const child of this.bridges.values()) child.kill("SIGTERM");
    this.bridges.clear();
  }
}
