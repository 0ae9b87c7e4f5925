/**
 * Pins envd's wire contract. Wrenn's envd protos are written from E2B's public facts; the official
 * `e2b` SDK embeds its own copy of the schema, so these tests compare our generated descriptors with
 * the ones inside node_modules/e2b field by field, round-trip every message through protobuf binary
 * and JSON, and cross-decode our bytes with the SDK's schema.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import {
  create,
  createFileRegistry,
  type DescEnum,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescService,
  equals,
  fromBinary,
  fromJson,
  type MessageShape,
  ScalarType,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import {
  type DescriptorProto,
  FileDescriptorProtoSchema,
  file_google_protobuf_timestamp,
  TimestampSchema,
} from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  EntryInfoSchema,
  EventType,
  Filesystem,
  FileType,
  file_envd_filesystem_filesystem,
  WatchDirResponseSchema,
} from "../../proto/gen/envd/filesystem/filesystem_pb.js";
import {
  file_envd_process_process,
  Process,
  ProcessEvent_EndEventSchema,
  ProcessEventSchema,
  SendSignalRequestSchema,
  Signal,
  SignalSchema,
  StartRequestSchema,
  StreamInputRequest_DataEventSchema,
} from "../../proto/gen/envd/process/process_pb.js";

const ours: Record<string, DescFile> = {
  process: file_envd_process_process,
  filesystem: file_envd_filesystem_filesystem,
};

/** Loads the schemas the e2b SDK ships (serialized FileDescriptorProtos inside its bundle), keyed by proto package. */
function loadSdkFiles(): Record<string, DescFile> {
  const require = createRequire(import.meta.url);
  const bundle = readFileSync(require.resolve("e2b").replace(/index\.js$/, "index.mjs"), "utf8");
  const out: Record<string, DescFile> = {};
  for (const match of bundle.matchAll(/fileDesc\("([A-Za-z0-9+/=_-]+)"/g)) {
    const proto = fromBinary(FileDescriptorProtoSchema, base64Decode(match[1] ?? ""));
    // The bundled form drops the import list; the schema still refers to google.protobuf.Timestamp.
    if (proto.package === "filesystem") proto.dependency = ["google/protobuf/timestamp.proto"];
    // It also drops json_name, which the SDK's runtime derives from the field name as protoc does.
    for (const message of proto.messageType) restoreJsonNames(message);
    const registry = createFileRegistry(proto, (name) =>
      name === "google/protobuf/timestamp.proto" ? file_google_protobuf_timestamp : undefined,
    );
    const file = registry.getFile(proto.name);
    if (file) out[proto.package] = file;
  }
  return out;
}

function restoreJsonNames(message: DescriptorProto): void {
  for (const field of message.field) {
    if (!field.jsonName) field.jsonName = field.name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  }
  for (const nested of message.nestedType) restoreJsonNames(nested);
}

const sdk = loadSdkFiles();

function allMessages(file: DescFile): DescMessage[] {
  const out: DescMessage[] = [];
  const walk = (m: DescMessage) => {
    out.push(m);
    for (const n of m.nestedMessages) walk(n);
  };
  for (const m of file.messages) walk(m);
  return out;
}

function allEnums(file: DescFile): DescEnum[] {
  return [...file.enums, ...allMessages(file).flatMap((m) => m.nestedEnums)];
}

/** A field's wire identity: everything that changes the bytes or JSON a peer sees. */
function fieldShape(f: DescField) {
  const base = { name: f.name, number: f.number, jsonName: f.jsonName, kind: f.fieldKind, oneof: f.oneof?.name };
  switch (f.fieldKind) {
    case "scalar":
      return { ...base, scalar: ScalarType[f.scalar] };
    case "enum":
      return { ...base, type: f.enum.typeName };
    case "message":
      return { ...base, type: f.message.typeName };
    case "list":
      return { ...base, element: f.listKind === "scalar" ? ScalarType[f.scalar] : (f.message ?? f.enum)?.typeName };
    case "map":
      return { ...base, key: ScalarType[f.mapKey], value: f.mapKind === "scalar" ? ScalarType[f.scalar] : f.mapKind };
  }
}

function serviceShape(s: DescService) {
  return s.methods.map((m) => ({ name: m.name, kind: m.methodKind, in: m.input.typeName, out: m.output.typeName }));
}

describe("envd protos match the schema inside the e2b SDK", () => {
  it("the SDK bundle holds both envd schemas", () => {
    expect(Object.keys(sdk).sort()).toEqual(["filesystem", "process"]);
  });

  for (const pkg of ["process", "filesystem"] as const) {
    it(`${pkg}: same messages with the same fields, numbers, types and oneofs`, () => {
      const theirs = sdk[pkg];
      const mine = ours[pkg];
      if (!theirs || !mine) throw new Error(`missing ${pkg}`);
      const names = (f: DescFile) => allMessages(f).map((m) => m.typeName);
      expect(names(mine).sort()).toEqual(names(theirs).sort());
      for (const theirMsg of allMessages(theirs)) {
        const myMsg = allMessages(mine).find((m) => m.typeName === theirMsg.typeName);
        expect(myMsg, theirMsg.typeName).toBeDefined();
        expect(myMsg?.fields.map(fieldShape), theirMsg.typeName).toEqual(theirMsg.fields.map(fieldShape));
      }
    });

    it(`${pkg}: same enums and values`, () => {
      const shape = (f: DescFile) =>
        allEnums(f)
          .map((e) => ({ name: e.typeName, values: e.values.map((v) => [v.name, v.number]) }))
          .sort((a, b) => a.name.localeCompare(b.name));
      const theirs = sdk[pkg];
      const mine = ours[pkg];
      if (!theirs || !mine) throw new Error(`missing ${pkg}`);
      expect(shape(mine)).toEqual(shape(theirs));
    });

    it(`${pkg}: same service, methods and streaming kinds`, () => {
      const theirs = sdk[pkg]?.services[0];
      const mine = ours[pkg]?.services[0];
      if (!theirs || !mine) throw new Error(`missing ${pkg} service`);
      expect(mine.typeName).toBe(theirs.typeName);
      expect(serviceShape(mine)).toEqual(serviceShape(theirs));
    });
  }
});

describe("wire facts the SDK relies on", () => {
  it("service names are process.Process and filesystem.Filesystem", () => {
    expect(Process.typeName).toBe("process.Process");
    expect(Filesystem.typeName).toBe("filesystem.Filesystem");
    expect(Process.method.start.methodKind).toBe("server_streaming");
    expect(Process.method.connect.methodKind).toBe("server_streaming");
    expect(Process.method.streamInput.methodKind).toBe("client_streaming");
    expect(Filesystem.method.watchDir.methodKind).toBe("server_streaming");
  });

  it("Signal SIGTERM = 15, SIGKILL = 9", () => {
    expect(Signal.UNSPECIFIED).toBe(0);
    expect(Signal.SIGTERM).toBe(15);
    expect(Signal.SIGKILL).toBe(9);
    expect(SignalSchema.values.map((v) => [v.name, v.number])).toEqual([
      ["SIGNAL_UNSPECIFIED", 0],
      ["SIGNAL_SIGTERM", 15],
      ["SIGNAL_SIGKILL", 9],
    ]);
    const req = fromJson(SendSignalRequestSchema, { process: { pid: 42 }, signal: "SIGNAL_SIGKILL" });
    expect(req.signal).toBe(Signal.SIGKILL);
    expect(toJson(SendSignalRequestSchema, req)).toEqual({ process: { pid: 42 }, signal: "SIGNAL_SIGKILL" });
  });

  it("FileType and EventType values", () => {
    expect([FileType.UNSPECIFIED, FileType.FILE, FileType.DIRECTORY, FileType.SYMLINK]).toEqual([0, 1, 2, 3]);
    expect([EventType.UNSPECIFIED, EventType.CREATE, EventType.WRITE, EventType.REMOVE]).toEqual([0, 1, 2, 3]);
    expect([EventType.RENAME, EventType.CHMOD]).toEqual([4, 5]);
  });

  it("ProcessEvent is a oneof start=1, data=2, end=3, keepalive=4", () => {
    const oneof = ProcessEventSchema.oneofs[0];
    expect(oneof?.name).toBe("event");
    expect(oneof?.fields.map((f) => [f.name, f.number])).toEqual([
      ["start", 1],
      ["data", 2],
      ["end", 3],
      ["keepalive", 4],
    ]);
  });

  it("EndEvent exit_code is sint32 (zigzag on the wire) and error is optional", () => {
    const exitCode = ProcessEvent_EndEventSchema.field.exitCode;
    expect(exitCode.fieldKind === "scalar" && exitCode.scalar).toBe(ScalarType.SINT32);
    const bytes = toBinary(ProcessEvent_EndEventSchema, create(ProcessEvent_EndEventSchema, { exitCode: -1 }));
    // field 1, varint; zigzag(-1) = 1
    expect([...bytes]).toEqual([0x08, 0x01]);
    expect(ProcessEvent_EndEventSchema.field.error.proto.proto3Optional).toBe(true);
  });

  it("StreamInput DataEvent carries input as field 2", () => {
    expect(StreamInputRequest_DataEventSchema.field.input.number).toBe(2);
  });

  it("EntryInfo fields and JSON names", () => {
    expect(EntryInfoSchema.fields.map((f) => [f.jsonName, f.number])).toEqual([
      ["name", 1],
      ["type", 2],
      ["path", 3],
      ["size", 4],
      ["mode", 5],
      ["permissions", 6],
      ["owner", 7],
      ["group", 8],
      ["modifiedTime", 9],
      ["symlinkTarget", 10],
      ["metadata", 11],
    ]);
    const entry = create(EntryInfoSchema, {
      name: "a.txt",
      type: FileType.FILE,
      path: "/home/user/a.txt",
      size: 12n,
      mode: 0o644,
      permissions: "-rw-r--r--",
      owner: "user",
      group: "user",
      modifiedTime: { seconds: 1_700_000_000n, nanos: 0 },
      metadata: { k: "v" },
    });
    expect(toJson(EntryInfoSchema, entry)).toEqual({
      name: "a.txt",
      type: "FILE_TYPE_FILE",
      path: "/home/user/a.txt",
      size: "12",
      mode: 420,
      permissions: "-rw-r--r--",
      owner: "user",
      group: "user",
      modifiedTime: "2023-11-14T22:13:20Z",
      metadata: { k: "v" },
    });
  });

  it("StartRequest JSON as the SDK sends it decodes", () => {
    const req = fromJson(StartRequestSchema, {
      process: { cmd: "/bin/bash", args: ["-l", "-c", "echo hi"], envs: { A: "1" }, cwd: "/tmp" },
      pty: { size: { cols: 80, rows: 24 } },
      tag: "t1",
      stdin: false,
    });
    expect(req.process?.args).toEqual(["-l", "-c", "echo hi"]);
    expect(req.pty?.size?.cols).toBe(80);
    expect(req.stdin).toBe(false);
  });

  it("WatchDirResponse oneof start=1, filesystem=2, keepalive=3", () => {
    expect(WatchDirResponseSchema.oneofs[0]?.fields.map((f) => [f.name, f.number])).toEqual([
      ["start", 1],
      ["filesystem", 2],
      ["keepalive", 3],
    ]);
  });
});

/** Builds a message with every field set (the first member of each oneof), nesting to a small depth. */
function sample(desc: DescMessage, depth = 0): MessageShape<DescMessage> {
  if (desc.typeName === TimestampSchema.typeName) return create(TimestampSchema, { seconds: 1_700_000_000n, nanos: 5 });
  const init: Record<string, unknown> = {};
  for (const field of desc.fields) {
    if (field.oneof && field.oneof.fields[0] !== field) continue;
    const value = sampleValue(field, depth);
    if (value === undefined) continue;
    if (field.oneof) init[field.oneof.localName] = { case: field.localName, value };
    else init[field.localName] = value;
  }
  return create(desc, init);
}

function sampleScalar(type: ScalarType): unknown {
  switch (type) {
    case ScalarType.STRING:
      return "sample ✓";
    case ScalarType.BYTES:
      return new Uint8Array([0, 1, 2, 255]);
    case ScalarType.BOOL:
      return true;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return -5_000_000_000n;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return 5_000_000_000n;
    case ScalarType.SINT32:
    case ScalarType.INT32:
    case ScalarType.SFIXED32:
      return -7;
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE:
      return 1.5;
    default:
      return 7;
  }
}

function sampleValue(field: DescField, depth: number): unknown {
  switch (field.fieldKind) {
    case "scalar":
      return sampleScalar(field.scalar);
    case "enum":
      return field.enum.values.at(-1)?.number;
    case "message":
      return depth > 3 ? undefined : sample(field.message, depth + 1);
    case "list":
      if (field.listKind === "scalar") return [sampleScalar(field.scalar)];
      if (field.listKind === "enum") return [field.enum.values.at(-1)?.number];
      return depth > 3 ? [] : [sample(field.message, depth + 1)];
    case "map":
      return field.mapKind === "scalar" ? { key: sampleScalar(field.scalar) } : {};
  }
}

describe("every envd message round-trips in binary and JSON, and the SDK's schema reads our bytes", () => {
  for (const [pkg, file] of Object.entries(ours)) {
    for (const desc of allMessages(file)) {
      if (desc.proto.options?.mapEntry) continue;
      it(desc.typeName, () => {
        const msg = sample(desc);
        const bin = toBinary(desc, msg);
        expect(equals(desc, fromBinary(desc, bin), msg)).toBe(true);
        const json = toJson(desc, msg);
        expect(equals(desc, fromJson(desc, json), msg)).toBe(true);

        const theirs = allMessages(sdk[pkg] as DescFile).find((m) => m.typeName === desc.typeName);
        if (!theirs) throw new Error(`SDK lacks ${desc.typeName}`);
        const decoded = fromBinary(theirs, bin);
        expect(toJson(theirs, decoded)).toEqual(json);
        expect(toBinary(theirs, fromJson(theirs, json))).toEqual(bin);
      });
    }
  }
});
