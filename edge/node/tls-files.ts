import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";

/** The HTTPS listener's certificate and key, read once at start. */
export interface EdgeTlsFiles {
  cert: string;
  key: string;
  /** The names the certificate is for (its subjectAltName), for the start-up log. */
  names: string[];
}

/**
 * Reads WRENN_TLS_CERT_FILE and WRENN_TLS_KEY_FILE; a missing or unreadable file, or a certificate
 * that does not parse, fails start-up with the variable's name rather than at the first handshake.
 */
export function readEdgeTlsFiles(certFile: string, keyFile: string): EdgeTlsFiles {
  const read = (file: string, variable: string) => {
    try {
      return readFileSync(file, "utf8");
    } catch (err) {
      throw new Error(`${variable}: cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
  };
  const cert = read(certFile, "WRENN_TLS_CERT_FILE");
  const key = read(keyFile, "WRENN_TLS_KEY_FILE");
  let names: string[];
  try {
    const parsed = new X509Certificate(cert);
    names = (parsed.subjectAltName ?? "")
      .split(",")
      .map((n) => n.trim().replace(/^(DNS|IP Address):/, ""))
      .filter(Boolean);
  } catch (err) {
    throw new Error(`WRENN_TLS_CERT_FILE: ${certFile} is not a PEM certificate: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return { cert, key, names };
}
