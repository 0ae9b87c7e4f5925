import { describe, expect, it } from "vitest";
import { IsolationClass } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { HostRow, IsolationClassName } from "../../db/schema/index.js";
import { ServiceError } from "../errors.js";
import { isolationFromAgent, meetsIsolation, strongerIsolation } from "./isolation.js";
import { hostsMeetingIsolation } from "./pick-host.js";

const host = (id: string, isolation: IsolationClassName) => ({ id, isolation }) as HostRow;

describe("isolation classes", () => {
  it("orders vm > gvisor > namespace", () => {
    expect(meetsIsolation("vm", "vm")).toBe(true);
    expect(meetsIsolation("vm", "namespace")).toBe(true);
    expect(meetsIsolation("gvisor", "gvisor")).toBe(true);
    expect(meetsIsolation("gvisor", "vm")).toBe(false);
    expect(meetsIsolation("namespace", "gvisor")).toBe(false);
    expect(meetsIsolation("namespace", null)).toBe(true);
  });

  it("takes the stronger of the request and the team minimum", () => {
    expect(strongerIsolation("namespace", "gvisor")).toBe("gvisor");
    expect(strongerIsolation("vm", "gvisor")).toBe("vm");
    expect(strongerIsolation(undefined, "gvisor")).toBe("gvisor");
    expect(strongerIsolation("namespace", null)).toBe("namespace");
    expect(strongerIsolation(undefined, null)).toBeNull();
  });

  it("uses the class an agent reports, else its runtime's, else the weakest", () => {
    expect(isolationFromAgent(IsolationClass.GVISOR, "namespace")).toBe("gvisor");
    expect(isolationFromAgent(IsolationClass.UNSPECIFIED, "firecracker")).toBe("vm");
    expect(isolationFromAgent(IsolationClass.UNSPECIFIED, "qemu")).toBe("vm");
    expect(isolationFromAgent(IsolationClass.UNSPECIFIED, "gvisor")).toBe("gvisor");
    expect(isolationFromAgent(IsolationClass.UNSPECIFIED, "unknown")).toBe("namespace");
  });
});

describe("hostsMeetingIsolation", () => {
  const fleet = [host("ns", "namespace"), host("gv", "gvisor"), host("vm", "vm")];

  it("keeps only hosts of the class or stronger", () => {
    expect(hostsMeetingIsolation(fleet, undefined).map((h) => h.id)).toEqual(["ns", "gv", "vm"]);
    expect(hostsMeetingIsolation(fleet, "namespace").map((h) => h.id)).toEqual(["ns", "gv", "vm"]);
    expect(hostsMeetingIsolation(fleet, "gvisor").map((h) => h.id)).toEqual(["gv", "vm"]);
    expect(hostsMeetingIsolation(fleet, "vm").map((h) => h.id)).toEqual(["vm"]);
  });

  it("answers NO_CAPACITY naming the missing class and what is on offer", () => {
    const weak = [host("ns", "namespace"), host("gv", "gvisor")];
    let caught: unknown;
    try {
      hostsMeetingIsolation(weak, "vm");
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ServiceError);
    expect((caught as ServiceError).code).toBe("NO_CAPACITY");
    expect((caught as ServiceError).message).toBe(
      "no host offers isolation 'vm' or stronger (active hosts offer: gvisor, namespace)",
    );
  });
});
