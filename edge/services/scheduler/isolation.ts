import { IsolationClass } from "../../../proto/gen/hostagent/v1/hostagent_pb.js";
import type { IsolationClassName } from "../../db/schema/index.js";

/** Strength of each isolation class; higher is stronger (vm > gvisor > namespace). */
const strength: Record<IsolationClassName, number> = { vm: 3, gvisor: 2, namespace: 1 };

/** Whether `offered` is `required` or stronger. */
export function meetsIsolation(offered: IsolationClassName, required: IsolationClassName | null | undefined): boolean {
  return !required || strength[offered] >= strength[required];
}

/** The stronger of two requirements (null or undefined means none). */
export function strongerIsolation(
  a: IsolationClassName | null | undefined,
  b: IsolationClassName | null | undefined,
): IsolationClassName | null {
  if (!a) return b ?? null;
  if (!b) return a;
  return strength[a] >= strength[b] ? a : b;
}

/** The class each runtime gives, for agents that report no isolation class of their own. */
const isolationOfRuntime: Record<string, IsolationClassName> = {
  firecracker: "vm",
  qemu: "vm",
  gvisor: "gvisor",
  namespace: "namespace",
};

/**
 * A host's isolation class from GetHostInfo: the class it reports, else the class of its runtime
 * (agents older than the field send UNSPECIFIED), else the weakest, so an unknown host is never
 * trusted with a stronger requirement than it can show.
 */
export function isolationFromAgent(reported: IsolationClass, runtime: string): IsolationClassName {
  switch (reported) {
    case IsolationClass.VM:
      return "vm";
    case IsolationClass.GVISOR:
      return "gvisor";
    case IsolationClass.NAMESPACE:
      return "namespace";
    default:
      return isolationOfRuntime[runtime] ?? "namespace";
  }
}
