#!/usr/bin/python3
"""Wrenn code-interpreter bridge: one Jupyter kernel, driven over stdin/stdout with JSON lines.

The Node server (interpreter/server.ts) starts one bridge per context. The bridge owns one kernel,
started and spoken to with jupyter_client (Debian's python3-jupyter-client: the Jupyter messaging
protocol over ZeroMQ, which has no npm binding that installs without downloading binaries).

Requests (one JSON object per line on stdin):
  {"op": "execute", "id": "...", "code": "...", "env": {...}}   queued; run one after the other
  {"op": "cancel", "id": "..."}    interrupt it if it runs, drop it if it waits
  {"op": "restart"}               queued: a fresh kernel (state cleared), then "restarted"
  {"op": "shutdown"}              stop the kernel and exit
Events (one JSON object per line on stdout):
  {"event": "ready"} once the kernel answers; {"event": "restarted"}
  {"id", "event": "stream", "name": "stdout"|"stderr", "text"}
  {"id", "event": "result", "main": bool, "data": {mime: value}}
  {"id", "event": "error", "name", "value", "traceback": [...]}
  {"id", "event": "done", "execution_count": n|null, "kernel_ms": ms|null}   (ms: request sent to kernel idle)
  {"event": "fatal", "message"} when the kernel cannot be started
"""

import json
import os
import queue
import sys
import threading
import time

from jupyter_client.manager import KernelManager

HERE = os.path.dirname(os.path.abspath(__file__))
STARTUP = os.path.join(HERE, "kernel_startup.py")
# After an interrupt, a cell that is still busy this long later (stuck in C code that ignores
# SIGINT) costs the context its kernel: a restart is the only way to get it back.
INTERRUPT_GRACE_S = 5.0

_out_lock = threading.Lock()


def _finite(value):
    """JSON has no NaN or Infinity (JavaScript's JSON.parse refuses them): they become null."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def emit(obj):
    try:
        line = json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        line = json.dumps(_finite(obj), separators=(",", ":"), default=str)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Bridge:
    def __init__(self, cwd):
        self.cwd = cwd
        # The sandbox's environment variables (from envd), kept across kernel restarts.
        self.base_env = {}
        env = dict(os.environ)
        # The inline backend turns every figure into a display_data message at the end of a cell.
        env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        env.pop("JPY_PARENT_PID", None)
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.setup()
        self.ops = queue.Queue()
        self.running = None
        self.cancelled = set()
        self.interrupted_at = None
        self.lock = threading.Lock()

    def silent(self, code, timeout=30):
        """Runs code without output or history and waits for its reply."""
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reply = self.kc.get_shell_msg(timeout=1)
            except queue.Empty:
                if not self.km.is_alive():
                    raise RuntimeError("kernel died")
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]
        raise RuntimeError("kernel did not answer a setup request")

    def setup(self):
        with open(STARTUP, encoding="utf-8") as f:
            startup = f.read()
        content = self.silent(startup + f"\n_wrenn_setup({json.dumps(self.cwd)})\ndel _wrenn_setup\n")
        if content.get("status") != "ok":
            raise RuntimeError(f"kernel start-up code failed: {content.get('ename')}: {content.get('evalue')}")
        if self.base_env:
            self.silent(f"import os; os.environ.update({json.dumps(self.base_env)})")

    def restart(self):
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=60)
        self.setup()

    # --- reader thread -------------------------------------------------------------------------
    def read_requests(self):
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
            except ValueError:
                continue
            op = req.get("op")
            if op == "cancel":
                with self.lock:
                    if self.running == req.get("id"):
                        if self.interrupted_at is None:
                            self.interrupted_at = time.monotonic()
                            self.km.interrupt_kernel()
                    else:
                        self.cancelled.add(req.get("id"))
            else:
                self.ops.put(req)
        # The server went away: nothing is left to serve.
        self.ops.put({"op": "shutdown"})

    # --- main thread ---------------------------------------------------------------------------
    def serve(self):
        threading.Thread(target=self.read_requests, daemon=True).start()
        emit({"event": "ready"})
        while True:
            req = self.ops.get()
            op = req.get("op")
            if op == "shutdown":
                break
            if op == "restart":
                self.restart()
                emit({"event": "restarted"})
            elif op == "execute":
                rid = req.get("id")
                with self.lock:
                    if rid in self.cancelled:
                        self.cancelled.discard(rid)
                        emit({"id": rid, "event": "done", "execution_count": None})
                        continue
                    self.running = rid
                    self.interrupted_at = None
                try:
                    if req.get("base_env") is not None:
                        self.base_env = {str(k): str(v) for k, v in req["base_env"].items()}
                        self.silent(f"import os; os.environ.update({json.dumps(self.base_env)})")
                    self.execute(rid, req.get("code", ""), req.get("env") or {})
                finally:
                    with self.lock:
                        self.running = None
                        self.interrupted_at = None
        self.km.shutdown_kernel(now=True)

    def execute(self, rid, code, env):
        if env:
            self.silent(f"import _wrenn; _wrenn.set_env({json.dumps(env)})")
        sent = time.monotonic()
        msg_id = self.kc.execute(code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False)
        kernel_ms = None
        count = None
        died = False
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                if not self.km.is_alive():
                    died = True
                    break
                with self.lock:
                    stuck = self.interrupted_at is not None and time.monotonic() - self.interrupted_at > INTERRUPT_GRACE_S
                if stuck:
                    died = True
                    break
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "stream":
                emit({"id": rid, "event": "stream", "name": content.get("name"), "text": content.get("text", "")})
            elif kind in ("execute_result", "display_data"):
                emit({"id": rid, "event": "result", "main": kind == "execute_result", "data": content.get("data", {})})
            elif kind == "error":
                emit(
                    {
                        "id": rid,
                        "event": "error",
                        "name": content.get("ename", ""),
                        "value": content.get("evalue", ""),
                        "traceback": content.get("traceback", []),
                    }
                )
            elif kind == "execute_input":
                count = content.get("execution_count")
            elif kind == "status" and content.get("execution_state") == "idle":
                kernel_ms = round((time.monotonic() - sent) * 1000, 2)
                break
        if died:
            emit(
                {
                    "id": rid,
                    "event": "error",
                    "name": "KernelRestarted",
                    "value": "the kernel died or stopped answering; it was restarted and its state is lost",
                    "traceback": [],
                }
            )
            try:
                self.restart()
            except Exception as err:  # noqa: BLE001 - reported to the server, which ends the context
                emit({"event": "fatal", "message": f"kernel restart failed: {err}"})
                raise
        else:
            # The shell reply follows the idle status; drain it so replies never pile up.
            self.drain_shell(msg_id)
            if env:
                try:
                    self.silent("import _wrenn; _wrenn.restore_env()")
                except RuntimeError:
                    pass
        emit({"id": rid, "event": "done", "execution_count": count, "kernel_ms": kernel_ms})

    def drain_shell(self, msg_id):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                reply = self.kc.get_shell_msg(timeout=0.5)
            except queue.Empty:
                return
            if reply["parent_header"].get("msg_id") == msg_id:
                return


def main():
    cwd = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    try:
        bridge = Bridge(cwd)
    except Exception as err:  # noqa: BLE001 - reported to the server as a line it can show
        emit({"event": "fatal", "message": f"kernel start failed: {type(err).__name__}: {err}"})
        return 1
    bridge.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
