/**
 * What the escape battery runs as root inside a sandbox. Every probe is harmless even if the defence it
 * tests is missing: it writes back the value already there, mounts read-only without journal replay,
 * signals with signal 0, seizes (never stops) a traced process, loads only a garbage module image, and
 * bounds every bomb by count, size and time. Each prints `key=value` lines for the test to read.
 */

/** Parses `key=value` lines (the last value of a key wins). */
export function parseReport(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

/** bash; $1 = the host's current core_pattern. Writes it back directly and through a freshly mounted proc. */
export const CORE_PATTERN = `
H="$1"
w() { if printf '%s\\n' "$H" 2>/dev/null > "$1"; then echo "$2=ok"; else echo "$2=fail"; fi; } 2>/dev/null
w /proc/sys/kernel/core_pattern direct
mkdir -p /tmp/wrenn-proc /tmp/wrenn-tmpfs
if mount -t proc proc /tmp/wrenn-proc 2>/dev/null; then
  echo mountproc=ok
  w /tmp/wrenn-proc/sys/kernel/core_pattern viaproc
  umount /tmp/wrenn-proc
else
  echo mountproc=fail; echo viaproc=fail
fi
if mount -t tmpfs tmpfs /tmp/wrenn-tmpfs 2>/dev/null; then echo tmpfs=ok; umount /tmp/wrenn-tmpfs; else echo tmpfs=fail; fi
rmdir /tmp/wrenn-proc /tmp/wrenn-tmpfs 2>/dev/null
echo "bootid=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
`;

/**
 * bash; $1 $2 = major and minor of the host disk, $3 = read-only mount options, $4 = the host marker's
 * path. Makes the device node, reads its first block, mounts it read-only and looks for the marker.
 */
export const BLOCK_DEVICE = `
rm -f /tmp/wrenn-blk; mkdir -p /tmp/wrenn-blkmnt
if mknod /tmp/wrenn-blk b "$1" "$2" 2>/dev/null; then echo mknod=ok; else echo mknod=fail; fi
if [ -b /tmp/wrenn-blk ] && head -c 4096 /tmp/wrenn-blk >/dev/null 2>&1; then echo read=ok; else echo read=fail; fi
if [ -b /tmp/wrenn-blk ] && mount -o "$3" /tmp/wrenn-blk /tmp/wrenn-blkmnt 2>/dev/null; then
  echo mount=ok
  if [ -e "/tmp/wrenn-blkmnt$4" ]; then echo marker=seen; else echo marker=absent; fi
  umount /tmp/wrenn-blkmnt
else
  echo mount=fail; echo marker=absent
fi
rm -f /tmp/wrenn-blk; rmdir /tmp/wrenn-blkmnt
`;

/** python; argv = handle type, handle bytes (hex) of a host file. open_by_handle_at relative to "/". */
export const OPEN_BY_HANDLE = `
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
raw = bytes.fromhex(sys.argv[2])
class Handle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]
h = Handle(); h.handle_bytes = len(raw); h.handle_type = int(sys.argv[1])
ctypes.memmove(h.f_handle, raw, len(raw))
mount_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
fd = libc.open_by_handle_at(mount_fd, ctypes.byref(h), os.O_RDONLY)
if fd < 0:
    e = ctypes.get_errno()
    print("open=" + errno.errorcode.get(e, str(e)))
else:
    print("open=ok")
    print("content=" + os.read(fd, 256).hex())
`;

/** python; init_module and finit_module with a garbage image (never a real module). */
export const LOAD_MODULE = `
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
image = b"\\x7fELF" + b"wrenn-garbage-not-a-module" + bytes(64)
def outcome(r):
    if r == 0: return "ok"
    e = ctypes.get_errno()
    return errno.errorcode.get(e, str(e))
print("init=" + outcome(libc.syscall(ctypes.c_long(175), image, ctypes.c_ulong(len(image)), b"")))
path = "/tmp/wrenn-garbage.ko"
with open(path, "wb") as f: f.write(image)
fd = os.open(path, os.O_RDONLY)
print("finit=" + outcome(libc.syscall(ctypes.c_long(313), ctypes.c_int(fd), b"", ctypes.c_int(0))))
os.close(fd); os.unlink(path)
`;

/**
 * python; argv = a host PID. Signal 0, then PTRACE_SEIZE: the same permission check as PTRACE_ATTACH,
 * but the tracee is never stopped, and the tracer's exit detaches it — harmless if it ever succeeds.
 */
export const SIGNAL_AND_TRACE = `
import ctypes, errno, os, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
try:
    os.kill(pid, 0); print("kill=ok")
except OSError as e:
    print("kill=" + errno.errorcode.get(e.errno, str(e.errno)))
PTRACE_SEIZE = 0x4206
r = libc.ptrace(ctypes.c_long(PTRACE_SEIZE), ctypes.c_long(pid), None, None)
e = ctypes.get_errno()
print("ptrace=" + ("ok" if r == 0 else errno.errorcode.get(e, str(e))))
try:
    print("cmdline=" + open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace"))
except OSError:
    print("cmdline=")
`;

/** python; every process the guest can see in /proc, as "pid cmdline" lines. */
export const LIST_PROCESSES = `
import os
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            print(p, open(f"/proc/{p}/cmdline", "rb").read().replace(b"\\0", b" ").decode(errors="replace"))
        except OSError:
            pass
`;

/** bash; argv = triples of (path, value, label): writes each value back and reports ok/fail. */
export const WRITE_BACK = `
while [ $# -ge 3 ]; do
  if printf '%s\\n' "$2" 2>/dev/null > "$1"; then echo "$3=ok"; else echo "$3=fail"; fi
  shift 3
done 2>/dev/null
`;

/** bash; sets the clock to the time it already is: date(1) with nanoseconds, and clock_settime from python. */
export const SET_CLOCK = `
if date -s "@$(date +%s.%N)" >/dev/null 2>&1; then echo date=ok; else echo date=fail; fi
python3 -c '
import errno, time
try:
    time.clock_settime_ns(time.CLOCK_REALTIME, time.time_ns()); print("settime=ok")
except OSError as e:
    print("settime=" + errno.errorcode.get(e.errno, str(e.errno)))
'
`;

/**
 * python; argv = forged source, destination, UDP port, nonce. Sends a UDP datagram with a forged source
 * through a raw socket (IP_HDRINCL) three times, then the same with a normal socket (the control).
 * Reports whether the raw socket opened and, per send, "sent" or the error (EPERM when netfilter dropped
 * it on the way out of this kernel).
 */
export const FORGED_PACKET = `
import errno, socket, struct, sys
src, dst, port, nonce = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def checksum(header):
    total = sum(struct.unpack("!10H", header))
    while total >> 16: total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
payload = f"FORGED-{nonce}".encode()
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
# A packet that netfilter drops on the way out fails its sendto with EPERM: report each send.
try:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    print("rawsocket=ok")
    results = []
    for _ in range(3):
        try:
            raw.sendto(ip + udp, (dst, 0)); results.append("sent")
        except OSError as e:
            results.append(errno.errorcode.get(e.errno, str(e.errno)))
    print("raw=" + ",".join(results))
except OSError as e:
    print("rawsocket=" + errno.errorcode.get(e.errno, str(e.errno)))
try:
    legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3): legit.sendto(f"LEGIT-{nonce}".encode(), (dst, port))
    print("legit=sent")
except OSError as e:
    print("legit=" + errno.errorcode.get(e.errno, str(e.errno)))
`;

/** bash; argv = quadruples of (name, host, port, seconds): a TCP connect to each, bounded, in parallel. */
export const REACH = `
while [ $# -ge 4 ]; do
  (timeout "$4" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && echo "$1=open" || echo "$1=closed") &
  shift 4
done
wait
`;

/** python; forks children that sleep 20 s, up to 3000 or 20 s, reports how far it got, then kills them. */
export const FORK_BOMB = `
import errno, os, signal, time
LIMIT, SECONDS = 3000, 20
children, error, started = [], "none", time.time()
while len(children) < LIMIT and time.time() - started < SECONDS:
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        try:
            time.sleep(SECONDS)
        finally:
            os._exit(0)
    children.append(pid)
print(f"forked={len(children)}", f"error={error}", f"seconds={time.time() - started:.1f}", sep="\\n", flush=True)
for pid in children:
    try: os.kill(pid, signal.SIGKILL)
    except OSError: pass
for pid in children:
    try: os.waitpid(pid, 0)
    except OSError: pass
`;

/** python; allocates and touches 64 MiB chunks, up to 2 GiB or 20 s, reporting after each chunk. */
export const MEMORY_BOMB = `
import time
chunks, started = [], time.time()
try:
    while len(chunks) * 64 < 2048 and time.time() - started < 20:
        block = bytearray(64 << 20)
        block[::4096] = b"x" * len(range(0, len(block), 4096))
        chunks.append(block)
        print(f"mib={len(chunks) * 64}", flush=True)
    print("outcome=survived", flush=True)
except MemoryError:
    print("outcome=memoryerror", flush=True)
`;

/**
 * bash; $1 = bound in bytes. fallocate up to the bound (dd if the filesystem cannot fallocate), 20 s at
 * most, then removes the file.
 */
export const DISK_FILL = `
f=/home/user/wrenn-disk-fill
rm -f "$f"
err=$(timeout 20 fallocate -l "$1" "$f" 2>&1); rc=$?
if printf '%s' "$err" | grep -qi "not supported"; then
  timeout 20 dd if=/dev/zero of="$f" bs=4M count=$(( $1 / 4194304 )) 2>/tmp/wrenn-dd.log; rc=$?
  err=$(tr '\\n' ' ' </tmp/wrenn-dd.log); rm -f /tmp/wrenn-dd.log
  echo method=dd
else
  echo method=fallocate
fi
echo "rc=$rc"
echo "error=$err"
echo "kib=$(du -k "$f" 2>/dev/null | cut -f1)"
rm -f "$f"; sync
`;
