import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { CAPTURE_EDGE_BYTES, CAPTURE_EDGE_BYTES_CROWDED, OutputCapture, StreamCapture } from "./capture.js";
import { JOURNAL_OUTPUT_MAX_BYTES, JOURNAL_PAGE_OUTPUT_CHARS, ProcessJournal } from "./journal.js";

const EDGE = CAPTURE_EDGE_BYTES;

describe("StreamCapture", () => {
  it("keeps the first and last 64 KiB (4 KiB when crowded) and the total, whatever the chunking", () => {
    const data = randomBytes(3 * EDGE + 12_345);
    for (const edge of [EDGE, CAPTURE_EDGE_BYTES_CROWDED]) {
      for (const chunk of [1000, 4096, EDGE - 1, EDGE + 7, 2 * EDGE + 3, data.length]) {
        const capture = new StreamCapture(edge);
        for (let at = 0; at < data.length; at += chunk) capture.push(data.subarray(at, at + chunk));
        expect(capture.total).toBe(data.length);
        expect(capture.head().equals(data.subarray(0, edge))).toBe(true);
        expect(capture.tail().equals(data.subarray(data.length - edge))).toBe(true);
      }
    }
    // Byte by byte, once.
    const bytewise = new StreamCapture();
    for (const b of data) bytewise.push(Uint8Array.of(b));
    expect(bytewise.tail().equals(data.subarray(data.length - EDGE))).toBe(true);
  });

  it("has no tail when everything fits in the head, and a short tail just past it", () => {
    const small = new StreamCapture();
    small.push(Buffer.from("hello\n"));
    expect(small.head().toString()).toBe("hello\n");
    expect(small.tail().length).toBe(0);
    const data = randomBytes(EDGE + 10);
    const just = new StreamCapture();
    just.push(data);
    expect(just.tail().equals(data.subarray(EDGE))).toBe(true);
  });
});

describe("ProcessJournal command records", () => {
  const p = { pid: 9, cmd: "/bin/bash", args: ["-l", "-c", "x".repeat(40_000)], user: "user", tag: "cmd_1" };

  it("records the command, its cwd, times and output edges at its end (a PTY's output as stdout)", () => {
    const journal = new ProcessJournal(() => 5000);
    const output = new OutputCapture();
    output.push("pty", Buffer.from("from the terminal"));
    output.push("stderr", Buffer.from("err"));
    journal.ended(p, {
      exitCode: 1,
      status: "exit status 1",
      error: "exit status 1",
      cwd: "/tmp",
      startedAt: 4000,
      output,
    });
    const [entry] = journal.since(0).events;
    expect(entry?.tag).toBe("cmd_1");
    expect(entry?.command).toMatchObject({ cwd: "/tmp", startedAt: 4000, endedAt: 5000, error: "exit status 1" });
    expect(Buffer.from(entry?.command?.stdoutHead ?? "", "base64").toString()).toBe("from the terminal");
    expect(entry?.command?.stderrBytes).toBe(3);
    // The arguments are kept up to 16 Ki characters in all.
    expect(entry?.command?.argv.join("").length).toBeLessThanOrEqual(16 * 1024);
  });

  it("bounds the output it holds and the output in one page", () => {
    const journal = new ProcessJournal();
    const full = new OutputCapture();
    for (const s of ["stdout", "stderr"] as const) full.push(s, randomBytes(3 * EDGE));
    const records = Math.ceil((JOURNAL_OUTPUT_MAX_BYTES * 2) / (4 * EDGE));
    for (let i = 0; i < records; i++)
      journal.ended({ ...p, pid: i }, { exitCode: 0, status: "exit status 0", output: full });
    expect(journal.outputChars).toBeLessThanOrEqual((JOURNAL_OUTPUT_MAX_BYTES * 4) / 3);
    // The oldest gave up their output; the newest still have it.
    let after = 0;
    let first = true;
    let pages = 0;
    for (;;) {
      const page = journal.since(after);
      if (page.events.length === 0) break;
      pages++;
      const chars = page.events.reduce(
        (n, e) => n + (e.command ? e.command.stdoutHead.length * 2 + e.command.stderrHead.length * 2 : 0),
        0,
      );
      expect(chars).toBeLessThanOrEqual(JOURNAL_PAGE_OUTPUT_CHARS + 4 * EDGE);
      if (first) expect(page.events[0]?.command?.outputDropped).toBe(true);
      first = false;
      after = page.next;
    }
    expect(pages).toBeGreaterThan(1);
  });
});
