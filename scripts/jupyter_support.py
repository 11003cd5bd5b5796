"""What the end-to-end tests, scripts/bench and scripts/grade share.

- `use_checkouts_kernelspec()`: the kernelspec that scripts/setup installed into this Python's
  environment (`.venv`) wins over any other one of the same name, so that they all drive the
  kernel of this checkout. Call it before importing jupyter_client or nbclient.
- `collect()` and `run()`: send a cell (or any request) and gather its shell reply and the iopub
  messages it caused, up to its `idle` status, as a Jupyter front end sees them.

This module imports nothing of Jupyter's at its top, so importing it first is always safe.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
# The Jupyter data directory of the running Python's environment (`.venv/share/jupyter`).
VENV_JUPYTER_DATA = Path(sys.prefix) / "share" / "jupyter"
KERNEL_NAME = "rust-async"

Msg = dict[str, Any]


def use_checkouts_kernelspec() -> None:
    """Puts this environment's Jupyter data first on JUPYTER_PATH (child processes inherit it)."""
    paths = [str(VENV_JUPYTER_DATA)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))


class KernelDied(RuntimeError):
    """The kernel's process ended while a request waited for its answer."""


def parent_id(msg: Msg) -> str | None:
    return (msg.get("parent_header") or {}).get("msg_id")


def collect(
    kc: Any,
    msg_id: str,
    timeout: float = 60,
    *,
    check: Callable[[Msg], None] | None = None,
    stdin_hook: Callable[[Msg], None] | None = None,
    arrivals: dict[str, float] | None = None,
    alive: Callable[[], bool] | None = None,
) -> tuple[Msg, list[Msg]]:
    """Waits for the shell reply to request `msg_id` of client `kc` and for its iopub `idle`.

    Returns (reply, the request's iopub messages in arrival order, from `busy` to `idle`);
    messages of other requests are dropped. `check` is called with each collected message
    (the tests validate them against the message spec), `stdin_hook` with each stdin-channel
    message of the request (an `input_request`). `arrivals`, when given, gets
    `time.monotonic()` at each collected message's arrival, by its own msg_id: the channels
    are polled together, so that time is when the message came. `alive`, when given, is asked
    once a second; if it says no, `KernelDied` is raised. Raises `TimeoutError` after
    `timeout` seconds.
    """
    import zmq  # after use_checkouts_kernelspec(), like every Jupyter import

    iopub, shell = kc.iopub_channel.socket, kc.shell_channel.socket
    getters = {iopub: kc.get_iopub_msg, shell: kc.get_shell_msg}
    stdin = None
    if stdin_hook is not None:
        stdin = kc.stdin_channel.socket
        getters[stdin] = kc.get_stdin_msg
    deadline = time.monotonic() + timeout
    reply: Msg | None = None
    idle = False
    msgs: list[Msg] = []

    def take(msg: Msg) -> bool:
        """Whether `msg` belongs to the request: then it is checked and its arrival noted."""
        if parent_id(msg) != msg_id:
            return False
        if arrivals is not None:
            arrivals[msg["header"]["msg_id"]] = time.monotonic()
        if check is not None:
            check(msg)
        return True

    while reply is None or not idle:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"request {msg_id}: no {'reply' if reply is None else 'idle status'} within "
                f"{timeout}s; iopub so far: {[summary(m) for m in msgs]}"
            )
        if alive is not None and not alive():
            raise KernelDied(f"the kernel died while request {msg_id} waited for its answer")
        # Only what is still awaited is read: after its `idle`, later iopub messages (a task's
        # late output) stay queued for whoever reads next.
        poller = zmq.Poller()
        for socket, awaited in ((iopub, not idle), (shell, reply is None), (stdin, stdin is not None)):
            if awaited:
                poller.register(socket, zmq.POLLIN)
        for socket, _ in poller.poll(min(left, 1.0) * 1000):
            try:
                msg = getters[socket](timeout=0)
            except queue.Empty:
                continue
            if socket is iopub and take(msg):
                msgs.append(msg)
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            elif socket is shell and take(msg):
                reply = msg
            elif socket is stdin and stdin_hook is not None and take(msg):
                stdin_hook(msg)
    return reply, msgs


def run(
    kc: Any,
    code: str,
    timeout: float = 60,
    *,
    silent: bool = False,
    store_history: bool = True,
    allow_stdin: bool = False,
    stop_on_error: bool = True,
    **collecting: Any,
) -> tuple[Msg, list[Msg]]:
    """Executes `code` and returns (execute_reply, iopub messages of the request); `collecting`
    goes to `collect`."""
    msg_id = kc.execute(code, silent=silent, store_history=store_history, allow_stdin=allow_stdin,
                        stop_on_error=stop_on_error)
    return collect(kc, msg_id, timeout, **collecting)


def summary(msg: Msg) -> str:
    """A one-line description of a message, for failure reports."""
    kind, content = msg["msg_type"], msg["content"]
    if kind == "status":
        return f"status:{content.get('execution_state')}"
    if kind == "stream":
        return f"stream:{content.get('name')}:{content.get('text')!r}"
    if kind == "error":
        return f"error:{content.get('ename')}:{content.get('evalue')!r}"
    if kind in ("execute_result", "display_data"):
        data = content.get("data", {})
        return f"{kind}:{sorted(data)}:{data.get('text/plain')!r}"
    return kind
