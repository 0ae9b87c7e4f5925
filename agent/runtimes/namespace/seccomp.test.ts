import { describe, expect, it } from "vitest";
import {
  AUDIT_ARCH_X86_64,
  BpfAssembler,
  DENIED_SYSCALLS,
  ENOSYS,
  EPERM,
  type Instruction,
  namespaceSeccompFilterHex,
  namespaceSeccompProgram,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
} from "./seccomp.js";
import { X86_64_SYSCALLS } from "./syscalls-x86_64.js";

/** A system call as the kernel shows it to a filter (struct seccomp_data). */
interface SyscallData {
  nr: number;
  arch?: number;
  args?: bigint[];
}

/**
 * A classic BPF interpreter for the instructions a seccomp filter may use (the kernel's checker allows
 * loads from seccomp_data, jumps and returns here), written from the BPF semantics independently of
 * the assembler so that it checks what the kernel would do with the bytes.
 */
function run(program: Buffer, data: SyscallData): number {
  const mem = Buffer.alloc(64);
  mem.writeUInt32LE(data.nr >>> 0, 0);
  mem.writeUInt32LE((data.arch ?? AUDIT_ARCH_X86_64) >>> 0, 4);
  for (const [i, a] of (data.args ?? []).entries()) mem.writeBigUInt64LE(BigInt.asUintN(64, a), 16 + 8 * i);
  let acc = 0;
  let pc = 0;
  const count = program.length / 8;
  for (let steps = 0; steps < 10_000; steps++) {
    if (pc >= count) throw new Error(`fell off the program at ${pc}`);
    const code = program.readUInt16LE(pc * 8);
    const jt = program.readUInt8(pc * 8 + 2);
    const jf = program.readUInt8(pc * 8 + 3);
    const k = program.readUInt32LE(pc * 8 + 4);
    pc++;
    switch (code) {
      case 0x20: // ld [k]
        if (k % 4 !== 0 || k > 60) throw new Error(`bad load offset ${k}`);
        acc = mem.readUInt32LE(k);
        break;
      case 0x05: // ja
        pc += k;
        break;
      case 0x15: // jeq #k
        pc += acc === k ? jt : jf;
        break;
      case 0x25: // jgt #k
        pc += acc > k ? jt : jf;
        break;
      case 0x35: // jge #k
        pc += acc >= k ? jt : jf;
        break;
      case 0x45: // jset #k
        pc += (acc & k) !== 0 ? jt : jf;
        break;
      case 0x06: // ret #k
        return k;
      default:
        throw new Error(`unexpected opcode 0x${code.toString(16)}`);
    }
  }
  throw new Error("no return within 10000 steps");
}

const filter = Buffer.from(namespaceSeccompFilterHex(), "hex");
const errno = (e: number) => (SECCOMP_RET_ERRNO | e) >>> 0;
const nr = (name: keyof typeof X86_64_SYSCALLS) => X86_64_SYSCALLS[name];

describe("BpfAssembler", () => {
  it("encodes struct sock_filter little-endian and resolves labels to forward offsets", () => {
    const bytes = new BpfAssembler()
      .loadWord(4)
      .jumpIfEqual(0xc000003e, "ok", 0)
      .ret(SECCOMP_RET_KILL_PROCESS)
      .label("ok")
      .ret(SECCOMP_RET_ALLOW)
      .assemble();
    expect(bytes.toString("hex")).toBe(
      [
        "2000" + "00" + "00" + "04000000", // ld [4]
        "1500" + "01" + "00" + "3e0000c0", // jeq #0xc000003e, +1, +0
        "0600" + "00" + "00" + "00000080", // ret KILL_PROCESS
        "0600" + "00" + "00" + "0000ff7f", // ret ALLOW
      ].join(""),
    );
  });

  it("refuses programs the kernel would reject or misread", () => {
    expect(() => new BpfAssembler().assemble()).toThrow(/empty/);
    expect(() => new BpfAssembler().loadWord(0).assemble()).toThrow(/end with ret/);
    expect(() => new BpfAssembler().jumpIfEqual(1, "nowhere").ret(0).assemble()).toThrow(/not defined/);
    expect(() => new BpfAssembler().label("a").label("a")).toThrow(/twice/);
    expect(() => new BpfAssembler().jumpIfEqual(1, 5, 0).ret(0).assemble()).toThrow(/leaves the program/);
    const far = new BpfAssembler().jumpIfEqual(1, "far", 0);
    for (let i = 0; i < 256; i++) far.ret(0);
    far.label("far").ret(0);
    expect(() => far.assemble()).toThrow(/256 instructions \(max 255\)/);
    // An unconditional jump may go further.
    const ja = new BpfAssembler().jump("far");
    for (let i = 0; i < 300; i++) ja.ret(0);
    ja.label("far").ret(1);
    expect(run(ja.assemble(), { nr: 0 })).toBe(1);
  });
});

describe("the namespace runtime's seccomp filter", () => {
  it("fits the kernel's limit and ends every path with a return", () => {
    const instructions: Instruction[] = namespaceSeccompProgram().instructions();
    expect(instructions.length).toBeLessThan(4096);
    expect(filter.length).toBe(instructions.length * 8);
  });

  it("kills a process that enters through another architecture and refuses the x32 ABI", () => {
    expect(run(filter, { nr: nr("read"), arch: 0x40000003 /* AUDIT_ARCH_I386 */ })).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(run(filter, { nr: nr("read") | 0x40000000 })).toBe(errno(EPERM));
    expect(run(filter, { nr: nr("mount") | 0x40000000 })).toBe(errno(EPERM));
  });

  it("allows the calls ordinary programs make", () => {
    for (const name of [
      "read",
      "write",
      "openat",
      "execve",
      "mmap",
      "socket",
      "bind",
      "setuid",
      "setgroups",
      "chown",
      "chroot",
      "ptrace",
      "process_vm_readv",
      "adjtimex",
      "wait4",
      "futex",
      "rseq",
    ] as const) {
      expect(run(filter, { nr: nr(name) }), name).toBe(SECCOMP_RET_ALLOW);
    }
  });

  it("refuses every listed call with EPERM, whatever its arguments", () => {
    for (const name of DENIED_SYSCALLS) {
      expect(run(filter, { nr: nr(name), args: [0n, 0n, 0n] }), name).toBe(errno(EPERM));
      expect(run(filter, { nr: nr(name), args: [0xffffffffn, 1n] }), name).toBe(errno(EPERM));
    }
    for (const name of ["mount", "umount2", "open_by_handle_at", "bpf", "keyctl", "init_module", "setns"] as const) {
      expect(DENIED_SYSCALLS).toContain(name);
    }
  });

  it("lets clone and unshare make threads and processes, but no namespace", () => {
    const CLONE_THREAD_FLAGS = 0x003d0f00n; // what glibc's pthread_create passes
    const SIGCHLD = 17n; // fork()
    expect(run(filter, { nr: nr("clone"), args: [CLONE_THREAD_FLAGS] })).toBe(SECCOMP_RET_ALLOW);
    expect(run(filter, { nr: nr("clone"), args: [SIGCHLD] })).toBe(SECCOMP_RET_ALLOW);
    expect(run(filter, { nr: nr("unshare"), args: [0x200n /* CLONE_FS */] })).toBe(SECCOMP_RET_ALLOW);
    for (const flag of [0x80n, 0x20000n, 0x2000000n, 0x4000000n, 0x8000000n, 0x10000000n, 0x20000000n, 0x40000000n]) {
      expect(run(filter, { nr: nr("clone"), args: [SIGCHLD | flag] })).toBe(errno(EPERM));
      expect(run(filter, { nr: nr("unshare"), args: [flag] })).toBe(errno(EPERM));
    }
    // clone3's flags are in memory: ENOSYS makes glibc fall back to clone, which is checked above.
    expect(run(filter, { nr: nr("clone3") })).toBe(errno(ENOSYS));
  });

  it("allows only Docker's personality values", () => {
    for (const p of [0n, 8n, 0x20000n, 0x20008n, 0xffffffffn]) {
      expect(run(filter, { nr: nr("personality"), args: [p] })).toBe(SECCOMP_RET_ALLOW);
    }
    for (const p of [0x0040000n /* ADDR_NO_RANDOMIZE */, 0x0400000n /* READ_IMPLIES_EXEC */, 0x100000000n]) {
      expect(run(filter, { nr: nr("personality"), args: [p] })).toBe(errno(EPERM));
    }
  });

  it("refuses TIOCSTI and TIOCLINUX but not other ioctls", () => {
    expect(run(filter, { nr: nr("ioctl"), args: [0n, 0x5412n] })).toBe(errno(EPERM));
    expect(run(filter, { nr: nr("ioctl"), args: [0n, 0x541cn] })).toBe(errno(EPERM));
    expect(run(filter, { nr: nr("ioctl"), args: [0n, 0x5413n /* TIOCGWINSZ */] })).toBe(SECCOMP_RET_ALLOW);
  });

  it("answers ENOSYS for calls newer than its table, so libc falls back", () => {
    const highest = Math.max(...Object.values(X86_64_SYSCALLS));
    expect(run(filter, { nr: highest + 1 })).toBe(errno(ENOSYS));
    expect(run(filter, { nr: 1000 })).toBe(errno(ENOSYS));
    expect(run(filter, { nr: nr("open_tree_attr") })).toBe(errno(EPERM));
  });
});
