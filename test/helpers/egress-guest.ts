/**
 * What the egress tests and bench run inside a sandbox: many curl (and raw TCP) attempts at once, each
 * reported on one line, so a case with several expected time-outs costs one time-out, not their sum.
 * Scripts are text; the caller runs them with whatever exec it has (SDK, agent client).
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

/**
 * A bash script running the attempts `parallel` at a time (a gVisor guest of 512 MiB runs out of memory
 * with fifteen curls at once); `connectTimeoutSec` bounds each one's connect.
 */
export function guestScript(attempts: Record<string, GuestAttempt>, connectTimeoutSec = 3, parallel = 5): string {
  const lines = [
    "d=$(mktemp -d)",
    'report() { printf \'%s\\t%s\\t%s\\t%s\\t%s\\n\' "$1" "$2" "$3" "$(head -c 400 "$d/$1.body" 2>/dev/null | tr \'\\n\\t\\r\' \'   \')" "$(head -c 300 "$d/$1.err" 2>/dev/null | tr \'\\n\\t\\r\' \'   \')"; }',
    `c() { label=$1; shift; code=$(curl -sS --connect-timeout ${connectTimeoutSec} --max-time ${connectTimeoutSec + 5} --cacert ${GUEST_CA} -o "$d/$label.body" -w '%{http_code}' "$@" 2>"$d/$label.err"); rc=$?; report "$label" "$rc" "$code"; }`,
    `t() { label=$1; timeout ${connectTimeoutSec + 1} bash -c "exec 3<>/dev/tcp/$2/$3 && head -c 200 <&3" >"$d/$label.body" 2>"$d/$label.err"; rc=$?; report "$label" "$rc" "000"; }`,
  ];
  for (const [i, [label, attempt]] of Object.entries(attempts).entries()) {
    if (!/^[a-zA-Z0-9_-]+$/.test(label)) throw new Error(`bad attempt label ${label}`);
    if (i > 0 && i % parallel === 0) lines.push("wait");
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

/**
 * A shell command that starts, in the background, one python3 process retrying `GET http://host:port/`
 * every 5 ms (a connect bounded to 0.2 s) until an answer starts with a 200, then writing the time (epoch
 * ms) to `outFile`; it writes `outFile`.ready once running. One process for the whole wait, so the
 * figure does not include starting curl over and over (slow under gVisor's ptrace platform).
 */
export function firstSuccessLoop(host: string, port: number, outFile: string): string {
  const program = [
    "import socket, sys, time",
    "host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]",
    "req = ('GET / HTTP/1.1\\r\\nHost: %s\\r\\nConnection: close\\r\\n\\r\\n' % host).encode()",
    "open(out + '.ready', 'w').write('1')",
    "while True:",
    "    try:",
    "        s = socket.create_connection((host, port), timeout=0.2)",
    "        s.settimeout(1)",
    "        s.sendall(req)",
    "        head = s.recv(16)",
    "        s.close()",
    "        if head.startswith(b'HTTP/1.1 200') or head.startswith(b'HTTP/1.0 200'):",
    "            open(out, 'w').write(str(int(time.time() * 1000)))",
    "            break",
    "    except OSError:",
    "        pass",
    "    time.sleep(0.005)",
  ].join("\n");
  return `rm -f ${quote(outFile)} ${quote(`${outFile}.ready`)}; nohup python3 -c ${quote(program)} ${quote(host)} ${port} ${quote(outFile)} >/dev/null 2>&1 &`;
}

export interface UpdateEffect {
  /** From sending the update to its answer. */
  answeredMs: number;
  /** From sending the update to the guest's first success. */
  effectMs: number;
  /** From the update's answer to the guest's first success (negative: through before the answer came). */
  afterAnswerMs: number;
}

/**
 * How long `update` (a policy change that opens http://host:port/) takes to act: a loop in the guest
 * (firstSuccessLoop) is started and seen running and still failing, then the update is sent and the
 * guest's first success is awaited. `run` runs a shell command in the guest and returns its stdout.
 * Guest and host share the clock (namespace, gVisor).
 */
export async function measureUpdateEffect(
  run: (command: string) => Promise<string>,
  host: string,
  port: number,
  update: () => Promise<unknown>,
  timeoutMs = 10_000,
): Promise<UpdateEffect> {
  const out = `/tmp/wrenn-first-ok-${Date.now()}`;
  await run(firstSuccessLoop(host, port, out));
  const deadline = Date.now() + timeoutMs;
  while ((await run(`cat ${out}.ready 2>/dev/null || true`)).trim() === "") {
    if (Date.now() > deadline) throw new Error("the guest's retry loop did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
  // A few tries' worth, to see it failing before the update.
  await new Promise((r) => setTimeout(r, 300));
  if ((await run(`cat ${out} 2>/dev/null || true`)).trim() !== "") {
    throw new Error(`http://${host}:${port}/ answered before the update`);
  }
  const sent = Date.now();
  await update();
  const answered = Date.now();
  for (;;) {
    const first = (await run(`cat ${out} 2>/dev/null || true`)).trim();
    if (first !== "") {
      const at = Number(first);
      return { answeredMs: answered - sent, effectMs: at - sent, afterAnswerMs: at - answered };
    }
    if (Date.now() > answered + timeoutMs) throw new Error(`http://${host}:${port}/ never answered after the update`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
