import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ensureLocalTls } from "./local-ca.js";

describe("wrenn up's local CA", () => {
  const dir = mkdtempSync(join(tmpdir(), "wrenn-local-ca-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("makes a CA and a certificate for the domain and its sandbox hosts, signed by it", async () => {
    const made = await ensureLocalTls(join(dir, "tls"), "wrenn.test");
    expect(made.newCa).toBe(true);
    const ca = new X509Certificate(readFileSync(made.caFile));
    const leaf = new X509Certificate(readFileSync(made.certFile));
    expect(ca.ca).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(ca)).toBe(true);
    expect(leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.checkHost("8000-abc123.wrenn.test")).toBe("*.wrenn.test");
    expect(leaf.checkHost("wrenn.test")).toBe("wrenn.test");
    expect(leaf.checkHost("a.b.wrenn.test")).toBeUndefined();
    expect(leaf.checkHost("other.test")).toBeUndefined();
    expect(leaf.checkIP("127.0.0.1")).toBe("127.0.0.1");
  });

  it("keeps the CA and the certificate on the next start, and makes a new certificate for a new domain", async () => {
    const tls = join(dir, "tls");
    const before = readFileSync(join(tls, "server.pem"), "utf8");
    const again = await ensureLocalTls(tls, "wrenn.test");
    expect(again.newCa).toBe(false);
    expect(readFileSync(again.certFile, "utf8")).toBe(before);
    const moved = await ensureLocalTls(tls, "sandboxes.example.test");
    expect(moved.newCa).toBe(false);
    const leaf = new X509Certificate(readFileSync(moved.certFile));
    expect(leaf.checkHost("8000-x.sandboxes.example.test")).toBe("*.sandboxes.example.test");
    expect(leaf.checkHost("8000-x.wrenn.test")).toBeUndefined();
    expect(leaf.checkIssued(new X509Certificate(readFileSync(moved.caFile)))).toBe(true);
  });
});
