import { describe, expect, it } from "vitest";
import { JOURNAL_CAPACITY, JOURNAL_PAGE, ProcessJournal } from "./journal.js";

describe("ProcessJournal", () => {
  it("records starts and ends with exit codes and pages after a cursor", () => {
    const journal = new ProcessJournal(() => 1000);
    const p = { pid: 7, cmd: "/bin/bash", args: ["-l", "-c", "exit 3"], user: "user", tag: undefined };
    journal.started(p);
    journal.ended(p, { exitCode: 3, status: "exit status 3" });
    const all = journal.since(0);
    expect(all.events).toEqual([
      { seq: 1, ts: 1000, kind: "start", pid: 7, cmd: "/bin/bash", args: "-l -c exit 3", user: "user" },
      {
        seq: 2,
        ts: 1000,
        kind: "end",
        pid: 7,
        cmd: "/bin/bash",
        args: "-l -c exit 3",
        user: "user",
        exitCode: 3,
        status: "exit status 3",
      },
    ]);
    expect(all.next).toBe(2);
    expect(journal.since(2)).toEqual({ epoch: journal.epoch, events: [], next: 2 });
  });

  it("keeps the newest entries and cuts long arguments", () => {
    const journal = new ProcessJournal();
    for (let i = 0; i < JOURNAL_CAPACITY + 10; i++) {
      journal.started({ pid: i, cmd: "sh", args: ["-c", "x".repeat(2000)], user: "root" });
    }
    const page = journal.since(0);
    expect(page.events).toHaveLength(JOURNAL_PAGE);
    expect(page.events[0]?.seq).toBe(11);
    expect(page.events[0]?.args.length).toBeLessThan(600);
  });
});
