import type { Server } from "node:net";
import type { Exec } from "../exec.js";

/**
 * IP_TRANSPARENT on a listening TCP socket of this process, for the egress proxy (issue 20).
 *
 * A slot's port-80/443 connections reach the agent with their original destination address (port-only
 * DNAT in the slot, then the fwmark rule's `local 0.0.0.0/0` route in the root netns: AnyIP). The
 * kernel delivers the SYN to a listener on 0.0.0.0, but answers it only from a socket that may send
 * from a non-local address: the SYN-ACK's route lookup (source = the original destination) fails with
 * ENETUNREACH unless the listener is transparent (FLOWI_FLAG_ANYSRC), and the SYN is dropped
 * (TcpExtListenDrops). The local table is the only other way, and it would make every address local
 * for the whole host. Node has no setsockopt, so a short helper takes a duplicate of the listener's
 * descriptor with pidfd_getfd(2) (Linux >= 5.6, CAP_SYS_PTRACE: the agent runs as root) and sets the
 * option on it: the socket is shared, so the listener itself becomes transparent, and connections it
 * accepts later inherit it. Needs python3 on the host (Debian: installed by default).
 */

const SET_TRANSPARENT = `
import ctypes, os, socket, sys
pid, fd = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(pid)
dup = libc.syscall(438, pidfd, fd, 0)
if dup < 0:
    raise OSError(ctypes.get_errno(), "pidfd_getfd")
s = socket.socket(fileno=dup)
if s.type != socket.SOCK_STREAM:
    raise SystemExit("not a TCP socket")
s.setsockopt(socket.SOL_IP, 19, 1)
if s.getsockopt(socket.SOL_IP, 19) != 1:
    raise SystemExit("IP_TRANSPARENT did not stick")
`;

/** The descriptor of a listening server (Node keeps it on the handle on Unix). */
function serverFd(server: Server): number {
  const handle = (server as unknown as { _handle?: { fd?: number } })._handle;
  const fd = handle?.fd;
  if (typeof fd !== "number" || fd < 0) throw new Error("the server is not listening on a socket of its own");
  return fd;
}

/**
 * Makes a listening server transparent (see above). Call after `listen` has completed; throws with the
 * helper's error when the host cannot (no python3, an old kernel).
 */
export async function makeTransparent(server: Server, exec: Exec): Promise<void> {
  const fd = serverFd(server);
  await exec("python3", ["-c", SET_TRANSPARENT, String(process.pid), String(fd)], { timeoutMs: 10_000 });
}
