/**
 * The name a connection asks for, read from its first bytes without terminating anything: the TLS
 * ClientHello's server_name extension, or the HTTP/1.x Host header. Pure functions over a buffer that
 * may still be incomplete (a ClientHello split over TCP segments or TLS records): they answer
 * `incomplete` until there is enough to decide.
 */

export type FirstBytes =
  | { kind: "incomplete" }
  | { kind: "tls"; name: string | undefined }
  | { kind: "http"; name: string | undefined }
  /** Neither TLS nor HTTP/1.x (or malformed): the connection is judged by its address. */
  | { kind: "other" };

const HANDSHAKE = 0x16;
const CLIENT_HELLO = 0x01;
const EXT_SERVER_NAME = 0x0000;
/** Largest TLS record payload (2^14) plus the expansion TLS 1.2 allows. */
const MAX_RECORD = 16_384 + 2048;

/** Classifies a connection's first bytes and extracts its name. */
export function parseFirstBytes(buf: Buffer): FirstBytes {
  if (buf.length === 0) return { kind: "incomplete" };
  if (buf[0] === HANDSHAKE) return parseTlsClientHello(buf);
  return parseHttpHost(buf);
}

/** The SNI host name of a ClientHello that may span several TLS records. */
export function parseTlsClientHello(buf: Buffer): FirstBytes {
  // Reassemble the handshake layer from consecutive handshake records.
  const parts: Buffer[] = [];
  let offset = 0;
  let handshakeLength: number | undefined;
  let have = 0;
  while (handshakeLength === undefined || have < handshakeLength + 4) {
    if (buf.length < offset + 5) return { kind: "incomplete" };
    if (buf[offset] !== HANDSHAKE || buf[offset + 1] !== 0x03) return { kind: "other" };
    const recordLength = buf.readUInt16BE(offset + 3);
    if (recordLength === 0 || recordLength > MAX_RECORD) return { kind: "other" };
    if (buf.length < offset + 5 + recordLength) return { kind: "incomplete" };
    parts.push(buf.subarray(offset + 5, offset + 5 + recordLength));
    have += recordLength;
    offset += 5 + recordLength;
    if (handshakeLength === undefined && have >= 4) {
      const head = Buffer.concat(parts);
      if (head[0] !== CLIENT_HELLO) return { kind: "other" };
      handshakeLength = head.readUIntBE(1, 3);
    }
  }
  const hs = Buffer.concat(parts);
  if (hs[0] !== CLIENT_HELLO) return { kind: "other" };
  const name = serverNameOf(hs.subarray(4, 4 + handshakeLength));
  return name === null ? { kind: "other" } : { kind: "tls", name };
}

/** The server_name of a ClientHello body; undefined when it has none, null when malformed. */
function serverNameOf(body: Buffer): string | undefined | null {
  let p = 2 + 32; // client_version, random
  if (body.length < p + 1) return null;
  p += 1 + (body[p] as number); // session_id
  if (body.length < p + 2) return null;
  p += 2 + body.readUInt16BE(p); // cipher_suites
  if (body.length < p + 1) return null;
  p += 1 + (body[p] as number); // compression_methods
  if (body.length === p) return undefined; // no extensions at all
  if (body.length < p + 2) return null;
  const end = p + 2 + body.readUInt16BE(p);
  if (end > body.length) return null;
  p += 2;
  while (p + 4 <= end) {
    const type = body.readUInt16BE(p);
    const length = body.readUInt16BE(p + 2);
    p += 4;
    if (p + length > end) return null;
    if (type === EXT_SERVER_NAME) return hostNameOf(body.subarray(p, p + length));
    p += length;
  }
  return undefined;
}

function hostNameOf(ext: Buffer): string | undefined | null {
  if (ext.length < 2) return null;
  const end = Math.min(ext.length, 2 + ext.readUInt16BE(0));
  let p = 2;
  while (p + 3 <= end) {
    const type = ext[p] as number;
    const length = ext.readUInt16BE(p + 1);
    p += 3;
    if (p + length > end) return null;
    if (type === 0) return normaliseHost(ext.subarray(p, p + length).toString("latin1"));
    p += length;
  }
  return undefined;
}

const HTTP_REQUEST_LINE = /^[A-Z]{3,10} \S+ HTTP\/1\.[01]\r\n/;

/** The Host header (port stripped) of an HTTP/1.x request head. */
export function parseHttpHost(buf: Buffer): FirstBytes {
  const text = buf.toString("latin1");
  const lineEnd = text.indexOf("\r\n");
  if (lineEnd < 0) {
    // Still reading the request line: plausible only if it starts like a method.
    return /^[A-Z]{0,10}( |$)/.test(text) && text.length < 8192 ? { kind: "incomplete" } : { kind: "other" };
  }
  if (!HTTP_REQUEST_LINE.test(text.slice(0, lineEnd + 2))) return { kind: "other" };
  const headEnd = text.indexOf("\r\n\r\n");
  const head = headEnd < 0 ? text : text.slice(0, headEnd);
  for (const line of head.split("\r\n").slice(1)) {
    const m = /^host:[ \t]*(.*?)[ \t]*$/i.exec(line);
    if (m) return { kind: "http", name: normaliseHost(stripPort(m[1] ?? "")) };
  }
  return headEnd < 0 ? { kind: "incomplete" } : { kind: "http", name: undefined };
}

function stripPort(host: string): string {
  if (host.startsWith("[")) return host.slice(0, host.indexOf("]") + 1);
  const colon = host.lastIndexOf(":");
  return colon >= 0 && /^[0-9]*$/.test(host.slice(colon + 1)) ? host.slice(0, colon) : host;
}

/** A host name as rules see it; anything that cannot be one (too long, odd bytes) counts as no name. */
function normaliseHost(host: string): string | undefined {
  const h = host.toLowerCase().replace(/\.$/, "");
  return h === "" || h.length > 253 || !/^[a-z0-9._:[\]-]+$/.test(h) ? undefined : h;
}
