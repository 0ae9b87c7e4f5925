import { X86_64_SYSCALLS, type X86_64Syscall } from "./syscalls-x86_64.js";

/**
 * The namespace runtime's seccomp filter: a classic BPF program the launcher loads with
 * prctl(PR_SET_SECCOMP) just before exec'ing the sandbox's first process. It is written here, not with
 * libseccomp, because the filter is a fixed list and Node has no maintained binding for it; the
 * assembler below is small and its output is tested by evaluating it (seccomp.test.ts) and by effect
 * (test/integration/namespace-hardening.test.ts).
 *
 * The policy is Docker's default profile turned around: everything is allowed except what lets a
 * process reach past its namespaces or into the shared kernel (mounts, new namespaces, kernel modules,
 * keyrings, BPF, perf, io_uring, clocks, reboot, swap, handles to host files), plus calls newer than
 * this table (ENOSYS, so libc falls back to an older call).
 */

// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
const BPF_LD = 0x00;
const BPF_JMP = 0x05;
const BPF_RET = 0x06;
const BPF_W = 0x00;
const BPF_ABS = 0x20;
const BPF_K = 0x00;
const BPF_JA = 0x00;
const BPF_JEQ = 0x10;
const BPF_JGT = 0x20;
const BPF_JGE = 0x30;
const BPF_JSET = 0x40;

export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
/** EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE (linux/audit.h). */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
/** Set in the syscall number by the x32 ABI, which has its own entry points into the kernel. */
export const X32_SYSCALL_BIT = 0x40000000;

export const EPERM = 1;
export const ENOSYS = 38;

/** Offsets in struct seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64). */
export const SECCOMP_DATA = {
  nr: 0,
  arch: 4,
  /** Low 32 bits of argument i (little-endian). */
  argLow: (i: number) => 16 + 8 * i,
  argHigh: (i: number) => 20 + 8 * i,
} as const;

/** One sock_filter instruction; jt/jf are instruction counts to skip, or labels until assembled. */
export interface Instruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

type Target = number | string;
interface PendingInstruction {
  code: number;
  jt: Target;
  jf: Target;
  k: number | string;
}

/**
 * A tiny assembler for classic BPF: instructions with symbolic jump targets. Conditional jumps reach at
 * most 255 instructions ahead (jt/jf are bytes); assemble() refuses anything else instead of emitting a
 * program that would jump somewhere else.
 */
export class BpfAssembler {
  readonly #code: PendingInstruction[] = [];
  readonly #labels = new Map<string, number>();

  /** Defines `name` as the address of the next instruction. */
  label(name: string): this {
    if (this.#labels.has(name)) throw new Error(`BPF label ${name} defined twice`);
    this.#labels.set(name, this.#code.length);
    return this;
  }

  /** A = the 32-bit word at `offset` of struct seccomp_data. */
  loadWord(offset: number): this {
    this.#code.push({ code: BPF_LD | BPF_W | BPF_ABS, jt: 0, jf: 0, k: offset });
    return this;
  }

  /** if (A == k) goto jt else goto jf; a number target counts instructions to skip (0 = next). */
  jumpIfEqual(k: number, jt: Target, jf: Target = 0): this {
    return this.#jump(BPF_JEQ, k, jt, jf);
  }

  /** if (A > k) goto jt else goto jf. */
  jumpIfGreater(k: number, jt: Target, jf: Target = 0): this {
    return this.#jump(BPF_JGT, k, jt, jf);
  }

  /** if (A >= k) goto jt else goto jf. */
  jumpIfGreaterOrEqual(k: number, jt: Target, jf: Target = 0): this {
    return this.#jump(BPF_JGE, k, jt, jf);
  }

  /** if (A & k) goto jt else goto jf. */
  jumpIfAnySet(k: number, jt: Target, jf: Target = 0): this {
    return this.#jump(BPF_JSET, k, jt, jf);
  }

  /** Unconditional jump (32-bit offset). */
  jump(target: string): this {
    this.#code.push({ code: BPF_JMP | BPF_JA | BPF_K, jt: 0, jf: 0, k: target });
    return this;
  }

  ret(k: number): this {
    this.#code.push({ code: BPF_RET | BPF_K, jt: 0, jf: 0, k: k >>> 0 });
    return this;
  }

  #jump(op: number, k: number, jt: Target, jf: Target): this {
    this.#code.push({ code: BPF_JMP | op | BPF_K, jt, jf, k: k >>> 0 });
    return this;
  }

  /** Resolves labels and checks every jump; the program as instructions. */
  instructions(): Instruction[] {
    if (this.#code.length === 0) throw new Error("empty BPF program");
    if (this.#code.length > 4096) throw new Error(`BPF program of ${this.#code.length} instructions (max 4096)`);
    const last = this.#code[this.#code.length - 1];
    if (last === undefined || last.code !== (BPF_RET | BPF_K)) throw new Error("a BPF program must end with ret");
    const offset = (at: number, target: Target, max: number): number => {
      let skip: number;
      if (typeof target === "number") skip = target;
      else {
        const address = this.#labels.get(target);
        if (address === undefined) throw new Error(`BPF label ${target} is not defined`);
        skip = address - at - 1;
      }
      if (!Number.isInteger(skip) || skip < 0) throw new Error(`BPF jump at ${at} goes backwards (${target})`);
      if (skip > max) throw new Error(`BPF jump at ${at} to ${target} is ${skip} instructions (max ${max})`);
      if (at + 1 + skip >= this.#code.length) throw new Error(`BPF jump at ${at} leaves the program`);
      return skip;
    };
    return this.#code.map((ins, at) => {
      if (ins.code === (BPF_JMP | BPF_JA | BPF_K)) {
        return { code: ins.code, jt: 0, jf: 0, k: offset(at, ins.k, 0xffffffff) };
      }
      const isJump = (ins.code & 0x07) === BPF_JMP;
      return {
        code: ins.code,
        jt: isJump ? offset(at, ins.jt, 255) : 0,
        jf: isJump ? offset(at, ins.jf, 255) : 0,
        k: ins.k as number,
      };
    });
  }

  /** The program as struct sock_filter[] bytes (little-endian, 8 bytes per instruction). */
  assemble(): Buffer {
    const instructions = this.instructions();
    const out = Buffer.alloc(instructions.length * 8);
    instructions.forEach((ins, i) => {
      out.writeUInt16LE(ins.code, i * 8);
      out.writeUInt8(ins.jt, i * 8 + 2);
      out.writeUInt8(ins.jf, i * 8 + 3);
      out.writeUInt32LE(ins.k >>> 0, i * 8 + 4);
    });
    return out;
  }
}

/** CLONE_NEW* flags: creating any namespace from inside a sandbox is refused. */
export const CLONE_NEW_NAMESPACES =
  0x00000080 | // CLONE_NEWTIME
  0x00020000 | // CLONE_NEWNS
  0x02000000 | // CLONE_NEWCGROUP
  0x04000000 | // CLONE_NEWUTS
  0x08000000 | // CLONE_NEWIPC
  0x10000000 | // CLONE_NEWUSER
  0x20000000 | // CLONE_NEWPID
  0x40000000; // CLONE_NEWNET

/**
 * Calls refused with EPERM, whatever their arguments. Why each is here (Docker's default profile
 * refuses the same, most of them unless the container has CAP_SYS_ADMIN or another capability the
 * sandbox never gets):
 */
export const DENIED_SYSCALLS: readonly X86_64Syscall[] = [
  // File systems and mount namespaces: a new proc or sysfs, or a moved mount, could reach host knobs.
  "mount",
  "umount2",
  "pivot_root",
  "fsopen",
  "fsconfig",
  "fsmount",
  "fspick",
  "open_tree",
  "open_tree_attr",
  "move_mount",
  "mount_setattr",
  "statmount",
  "listmount",
  // Namespaces: joining another (setns) or creating one (unshare/clone with CLONE_NEW* below).
  "setns",
  // Handles to files outside the sandbox's root (the "shocker" escape).
  "open_by_handle_at",
  "name_to_handle_at",
  // Kernel code and kernel-wide state.
  "bpf",
  "perf_event_open",
  "kexec_load",
  "kexec_file_load",
  "init_module",
  "finit_module",
  "delete_module",
  "create_module",
  "get_kernel_syms",
  "query_module",
  "lookup_dcookie",
  "iopl",
  "ioperm",
  "syslog",
  "acct",
  "quotactl",
  "quotactl_fd",
  "swapon",
  "swapoff",
  "reboot",
  "vhangup",
  "uselib",
  "nfsservctl",
  "_sysctl",
  "sysfs",
  "afs_syscall",
  "tuxcall",
  "security",
  "fanotify_init",
  // Keyrings are not namespaced: keys would be shared with the host.
  "keyctl",
  "add_key",
  "request_key",
  // Clocks are not namespaced (adjtimex stays: it only reads without CAP_SYS_TIME of the host).
  "settimeofday",
  "clock_settime",
  "clock_adjtime",
  // Large kernel attack surfaces that sandboxed code does not need.
  "userfaultfd",
  "io_uring_setup",
  "io_uring_enter",
  "io_uring_register",
  // Landlock and LSM self-configuration are harmless but unused; refuse what we cannot reason about.
  "lsm_set_self_attr",
];

/** personality(2) values allowed (Docker's list): Linux, 32-bit addresses, and the query value. */
export const ALLOWED_PERSONALITIES = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff] as const;

/** ioctl requests refused: pushing input into a terminal (TIOCSTI) and the console's ioctls (TIOCLINUX). */
export const DENIED_IOCTLS = [0x5412, 0x541c] as const;

function nr(name: X86_64Syscall): number {
  return X86_64_SYSCALLS[name];
}

/** The highest system call number the table knows; anything above gets ENOSYS. */
export const HIGHEST_KNOWN_SYSCALL = Math.max(...Object.values(X86_64_SYSCALLS));

/** Builds the namespace runtime's filter. */
export function namespaceSeccompProgram(): BpfAssembler {
  const errno = (e: number) => SECCOMP_RET_ERRNO | e;
  const bpf = new BpfAssembler();
  // Wrong architecture (a 32-bit entry point, int 0x80 sets AUDIT_ARCH_I386): its numbers mean other
  // calls, so nothing below would apply. The process is killed.
  bpf.loadWord(SECCOMP_DATA.arch).jumpIfEqual(AUDIT_ARCH_X86_64, 1, 0).ret(SECCOMP_RET_KILL_PROCESS);
  bpf.loadWord(SECCOMP_DATA.nr);
  bpf.jumpIfAnySet(X32_SYSCALL_BIT, 0, 1).ret(errno(EPERM));
  bpf.jumpIfGreater(HIGHEST_KNOWN_SYSCALL, 0, 1).ret(errno(ENOSYS));
  // clone3 passes its flags in memory, which a filter cannot read: ENOSYS makes glibc fall back to clone.
  bpf.jumpIfEqual(nr("clone3"), 0, 1).ret(errno(ENOSYS));
  for (const name of new Set(DENIED_SYSCALLS)) bpf.jumpIfEqual(nr(name), 0, 1).ret(errno(EPERM));

  // clone and unshare: allowed unless they ask for a new namespace (flags are in the low word of arg 0).
  for (const name of ["clone", "unshare"] as const) {
    const next = `after-${name}`;
    bpf.jumpIfEqual(nr(name), 0, next);
    bpf.loadWord(SECCOMP_DATA.argLow(0)).jumpIfAnySet(CLONE_NEW_NAMESPACES, 0, 1).ret(errno(EPERM));
    bpf.ret(SECCOMP_RET_ALLOW);
    bpf.label(next);
  }
  // personality: only the values Docker allows (no READ_IMPLIES_EXEC, no ADDR_NO_RANDOMIZE).
  bpf.jumpIfEqual(nr("personality"), 0, "after-personality");
  bpf.loadWord(SECCOMP_DATA.argHigh(0)).jumpIfEqual(0, 1, 0).ret(errno(EPERM));
  bpf.loadWord(SECCOMP_DATA.argLow(0));
  for (const value of ALLOWED_PERSONALITIES) bpf.jumpIfEqual(value, "allow", 0);
  bpf.ret(errno(EPERM));
  bpf.label("after-personality");
  // ioctl: the request is an unsigned int (low word of arg 1).
  bpf.jumpIfEqual(nr("ioctl"), 0, "allow");
  bpf.loadWord(SECCOMP_DATA.argLow(1));
  for (const request of DENIED_IOCTLS) bpf.jumpIfEqual(request, "deny", 0);
  bpf.label("allow").ret(SECCOMP_RET_ALLOW);
  bpf.label("deny").ret(errno(EPERM));
  return bpf;
}

let filterHex: string | undefined;

/** The filter as hex, the form the launcher takes on its command line (built once). */
export function namespaceSeccompFilterHex(): string {
  filterHex ??= namespaceSeccompProgram().assemble().toString("hex");
  return filterHex;
}
