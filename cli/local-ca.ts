import { execFile } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The files of `wrenn up`'s local certificate authority and the edge's certificate for a domain. */
export interface LocalTls {
  /** The CA's certificate: what a client must trust. */
  caFile: string;
  certFile: string;
  keyFile: string;
  /** Whether this call made a new CA (print how to trust it) or reused the one already there. */
  newCa: boolean;
}

/** The names the edge's certificate carries for `domain`: the domain, its sandbox hosts, and loopback. */
export function certificateNames(domain: string): string[] {
  return [`DNS:${domain}`, `DNS:*.${domain}`, "DNS:localhost", "IP:127.0.0.1", "IP:::1"];
}

/** Days a leaf certificate has left before it is made again. */
const RENEW_BEFORE_DAYS = 30;

async function readIfPresent(file: string): Promise<string | undefined> {
  return readFile(file, "utf8").catch(() => undefined);
}

/** Whether a PEM certificate names exactly these SANs (in any order) and is valid for a while yet. */
function leafStillFits(pem: string, ca: string, names: string[]): boolean {
  try {
    const cert = new X509Certificate(pem);
    if (!cert.checkIssued(new X509Certificate(ca))) return false;
    const have = (cert.subjectAltName ?? "")
      .split(",")
      .map((n) => n.trim().replace(/^IP Address:/, "IP:"))
      .map((n) => (n === "IP:0:0:0:0:0:0:0:1" ? "IP:::1" : n));
    const sameNames = have.length === names.length && names.every((n) => have.includes(n));
    return sameNames && new Date(cert.validTo).getTime() - Date.now() > RENEW_BEFORE_DAYS * 86_400_000;
  } catch {
    return false;
  }
}

/**
 * Makes (or reuses) a local CA under `dir` and a certificate it signs for `domain` and `*.domain`
 * (P-256 keys, with openssl), so that the edge can serve host-routed sandbox URLs over https without
 * a certificate from a public CA. The CA key stays in `dir` (mode 0700); the leaf is made again when
 * the domain changes or it nears its end.
 */
export async function ensureLocalTls(dir: string, domain: string): Promise<LocalTls> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caFile = join(dir, "ca.pem");
  const caKey = join(dir, "ca.key");
  const certFile = join(dir, "server.pem");
  const keyFile = join(dir, "server.key");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  let ca = await readIfPresent(caFile);
  let newCa = false;
  if (ca === undefined || (await readIfPresent(caKey)) === undefined) {
    await run("openssl", [
      "req",
      "-x509",
      ...ec,
      "-days",
      "3650",
      "-subj",
      `/CN=Wrenn local CA (${hostname()})`,
      "-addext",
      "basicConstraints=critical,CA:TRUE,pathlen:0",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout",
      caKey,
      "-out",
      caFile,
    ]);
    ca = await readFile(caFile, "utf8");
    newCa = true;
  }
  const names = certificateNames(domain);
  const leaf = await readIfPresent(certFile);
  if (newCa || leaf === undefined || !leafStillFits(leaf, ca, names)) {
    const csr = join(dir, "server.csr");
    const ext = join(dir, "server.ext");
    await run("openssl", ["req", ...ec, "-subj", `/CN=${domain}`, "-keyout", keyFile, "-out", csr]);
    await writeFile(
      ext,
      [
        `subjectAltName=${names.join(",")}`,
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth",
        "",
      ].join("\n"),
    );
    await run("openssl", [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      caFile,
      "-CAkey",
      caKey,
      "-set_serial",
      `0x${randomBytes(16).toString("hex")}`,
      // Browsers refuse server certificates valid for more than 398 days.
      "-days",
      "397",
      "-extfile",
      ext,
      "-out",
      certFile,
    ]);
    await rm(csr, { force: true });
    await rm(ext, { force: true });
  }
  return { caFile, certFile, keyFile, newCa };
}
