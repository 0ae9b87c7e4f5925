import { open } from "node:fs/promises";

/** What the builder needs to know about an ELF file: is it one, is it static, which loader, which notes. */
export interface ElfInfo {
  /** ELF type: 2 = executable, 3 = shared object (PIE executables are 3 too). */
  type: number;
  /** The program interpreter (dynamic loader) path, absent for static executables. */
  interpreter: string | undefined;
  /** Note types found in PT_NOTE segments, with their owner name (e.g. { name: "Xen", type: 18 }). */
  notes: { name: string; type: number }[];
}

const PT_INTERP = 3;
const PT_NOTE = 4;

/** Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point QEMU and Firecracker boot through. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** Returns true when the file starts with the ELF magic. */
export async function isElf(path: string): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await fh.read(magic, 0, 4, 0);
    return bytesRead === 4 && magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    await fh.close();
  }
}

/**
 * Reads the program headers of a 64-bit little-endian ELF file (the only kind an x86_64 guest runs).
 * Throws for anything else, so a wrong-architecture binary is refused rather than injected.
 */
export async function readElf(path: string): Promise<ElfInfo> {
  const fh = await open(path, "r");
  try {
    const header = Buffer.alloc(64);
    await fh.read(header, 0, 64, 0);
    if (!header.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])))
      throw new Error(`${path} is not an ELF file`);
    if (header[4] !== 2 || header[5] !== 1) throw new Error(`${path} is not a 64-bit little-endian ELF file`);
    const machine = header.readUInt16LE(18);
    if (machine !== 62) throw new Error(`${path} is not an x86_64 binary (e_machine ${machine})`);
    const type = header.readUInt16LE(16);
    const phoff = Number(header.readBigUInt64LE(32));
    const phentsize = header.readUInt16LE(54);
    const phnum = header.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    await fh.read(table, 0, table.length, phoff);
    let interpreter: string | undefined;
    const notes: ElfInfo["notes"] = [];
    for (let i = 0; i < phnum; i++) {
      const ph = table.subarray(i * phentsize, (i + 1) * phentsize);
      const ptype = ph.readUInt32LE(0);
      const offset = Number(ph.readBigUInt64LE(8));
      const size = Number(ph.readBigUInt64LE(32));
      if (ptype === PT_INTERP) {
        const buf = Buffer.alloc(size);
        await fh.read(buf, 0, size, offset);
        interpreter = buf.toString("utf8").replace(/\0.*$/s, "");
      } else if (ptype === PT_NOTE && size > 0 && size < 1 << 20) {
        const buf = Buffer.alloc(size);
        await fh.read(buf, 0, size, offset);
        notes.push(...parseNotes(buf));
      }
    }
    return { type, interpreter, notes };
  } finally {
    await fh.close();
  }
}

const align4 = (n: number) => (n + 3) & ~3;

function parseNotes(buf: Buffer): ElfInfo["notes"] {
  const out: ElfInfo["notes"] = [];
  let pos = 0;
  while (pos + 12 <= buf.length) {
    const namesz = buf.readUInt32LE(pos);
    const descsz = buf.readUInt32LE(pos + 4);
    const type = buf.readUInt32LE(pos + 8);
    const name = buf.toString("utf8", pos + 12, pos + 12 + Math.max(0, namesz - 1));
    out.push({ name, type });
    pos += 12 + align4(namesz) + align4(descsz);
  }
  return out;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT_NEEDED = 1;
const DT_STRTAB = 5;

/**
 * The shared libraries a 64-bit ELF file names (DT_NEEDED), read from its dynamic section without
 * running anything: the image builder checks that a binary it injects can load in an untrusted image
 * whose own loader it must not run on the host.
 */
export async function neededLibraries(path: string): Promise<string[]> {
  const fh = await open(path, "r");
  try {
    const header = Buffer.alloc(64);
    await fh.read(header, 0, 64, 0);
    if (!header.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])) || header[4] !== 2 || header[5] !== 1)
      throw new Error(`${path} is not a 64-bit little-endian ELF file`);
    const phoff = Number(header.readBigUInt64LE(32));
    const phentsize = header.readUInt16LE(54);
    const phnum = header.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    await fh.read(table, 0, table.length, phoff);
    const loads: { vaddr: number; offset: number; filesz: number }[] = [];
    let dynamic: { offset: number; size: number } | undefined;
    for (let i = 0; i < phnum; i++) {
      const ph = table.subarray(i * phentsize, (i + 1) * phentsize);
      const ptype = ph.readUInt32LE(0);
      const offset = Number(ph.readBigUInt64LE(8));
      const vaddr = Number(ph.readBigUInt64LE(16));
      const filesz = Number(ph.readBigUInt64LE(32));
      if (ptype === PT_LOAD) loads.push({ vaddr, offset, filesz });
      else if (ptype === PT_DYNAMIC && filesz < 1 << 20) dynamic = { offset, size: filesz };
    }
    if (dynamic === undefined) return [];
    const dyn = Buffer.alloc(dynamic.size);
    await fh.read(dyn, 0, dyn.length, dynamic.offset);
    const needed: number[] = [];
    let strtab: number | undefined;
    for (let pos = 0; pos + 16 <= dyn.length; pos += 16) {
      const tag = Number(dyn.readBigInt64LE(pos));
      const val = Number(dyn.readBigUInt64LE(pos + 8));
      if (tag === 0) break;
      if (tag === DT_NEEDED) needed.push(val);
      else if (tag === DT_STRTAB) strtab = val;
    }
    if (strtab === undefined) return [];
    const segment = loads.find((l) => strtab >= l.vaddr && strtab < l.vaddr + l.filesz);
    if (segment === undefined) throw new Error(`${path}: string table outside every loaded segment`);
    const strtabOffset = segment.offset + (strtab - segment.vaddr);
    const names: string[] = [];
    for (const n of needed) {
      const buf = Buffer.alloc(256);
      const { bytesRead } = await fh.read(buf, 0, 256, strtabOffset + n);
      const end = buf.subarray(0, bytesRead).indexOf(0);
      names.push(buf.toString("utf8", 0, end < 0 ? bytesRead : end));
    }
    return names;
  } finally {
    await fh.close();
  }
}
