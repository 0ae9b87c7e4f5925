/**
 * What the egress tests and bench run inside a sandbox: many curl (and raw TCP) attempts at once, each
 * reported on one line, so a case with several expected time-outs costs one time-out, not their sum.
 * Pure text in and out; the caller runs the script with whatever exec it has (SDK, agent client).
 */

/** Where the script expects the test CA inside the guest. */
export const GUEST_CA = "/tmp/wrenn-test-ca.pem";

export type GuestAttempt =
  /** curl with these arguments (URL included), trusting the test CA. */
  | { curl: string[] }
  /** A TCP connection (bash /dev/tcp; a name goes through the guest's resolver), reading what the server says. */
  | { tcp: { host: string; port: number } };

export interface GuestResult {
  /** Exit code: curl's (0 ok, 6 no address, 7 refused, 28 time-out, 35/56 TLS or reset) or the TCP attempt's. */
  rc: number;
  /** HTTP status curl saw ("000" when none). */
  code: string;
  /** First bytes of the answer body (or what the TCP server said). */
  body: string;
  /** curl's error text. */
  err: string;
}

function quote(arg: string): string {
  return `'${arg.replaceAll("'", "'\\''")}'`;
}

/** A bash script running every attempt in parallel; `connectTimeoutSec` bounds each one's connect. */
export function guestScript(attempts: Record<string, GuestAttempt>, connectTimeoutSec = 3): string {
  const lines = [
    "d=$(mktemp -d)",
    'report() { printf \'%s\\t%s\\t%s\\t%s\\t%s\\n\' "$1" "$2" "$3" "$(head -c 400 "$d/$1.body" 2>/dev/null | tr \'\\n\\t\\r\' \'   \')" "$(head -c 300 "$d/$1.err" 2>/dev/null | tr \'\\n\\t\\r\' \'   \')"; }',
    `c() { label=$1; shift; code=$(curl -sS --connect-timeout ${connectTimeoutSec} --max-time ${connectTimeoutSec + 5} --cacert ${GUEST_CA} -o "$d/$label.body" -w '%{http_code}' "$@" 2>"$d/$label.err"); rc=$?; report "$label" "$rc" "$code"; }`,
    `t() { label=$1; timeout ${connectTimeoutSec + 1} bash -c "exec 3<>/dev/tcp/$2/$3 && head -c 200 <&3" >"$d/$label.body" 2>"$d/$label.err"; rc=$?; report "$label" "$rc" "000"; }`,
  ];
  for (const [label, attempt] of Object.entries(attempts)) {
    if (!/^[a-zA-Z0-9_-]+$/.test(label)) throw new Error(`bad attempt label ${label}`);
    if ("curl" in attempt) lines.push(`c ${label} ${attempt.curl.map(quote).join(" ")} &`);
    else lines.push(`t ${label} ${quote(attempt.tcp.host)} ${attempt.tcp.port} &`);
  }
  lines.push("wait", 'rm -rf "$d"');
  return `${lines.join("\n")}\n`;
}

/** Parses the script's output into one result per label. */
export function parseGuestResults(stdout: string): Record<string, GuestResult> {
  const results: Record<string, GuestResult> = {};
  for (const line of stdout.split("\n")) {
    const [label, rc, code, body, err] = line.split("\t");
    if (!label || rc === undefined) continue;
    results[label] = { rc: Number(rc), code: code ?? "", body: body ?? "", err: err ?? "" };
  }
  return results;
}

/** Whether an attempt got through: curl exit 0 with a 2xx, or a TCP attempt that read something. */
export function succeeded(result: GuestResult | undefined): boolean {
  if (!result) return false;
  if (result.code === "000") return result.rc === 0 && result.body.length > 0;
  return result.rc === 0 && /^2/.test(result.code);
}
