"""Shared fixtures and helpers for the end-to-end tests of the rust-async kernel.

The tests drive the real kernel, installed by scripts/setup into .venv (kernelspec
`rust-async`), through jupyter_client, exactly as Jupyter front ends do. Run them with
`.venv/bin/python -m pytest tests/` (scripts/test does).
"""

from __future__ import annotations

import os
import queue
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from jupyter_client import KernelManager
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_kernel_test.msgspec_v5 import schema_fragments, validate_message

# What the tests share with scripts/bench and scripts/grade (scripts/jupyter_support.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import jupyter_support  # noqa: E402
from jupyter_support import KERNEL_NAME, REPO, VENV_JUPYTER_DATA, parent_id, summary  # noqa: E402,F401

DISPLAY_NAME = "Rust (async)"
# evcxr starts slowly (it builds and loads the first cell's crate): be generous.
STARTUP_TIMEOUT = 120
# The first cell of a kernel also builds what later cells reuse.
FIRST_CELL_TIMEOUT = 180

# Make the kernelspec that scripts/setup installed into this environment win over any other
# `rust-async` kernelspec (a per-user one from `rust-async-kernel install --user`, say): the
# tests must exercise the binary and kernelspec of this checkout. Set before any
# KernelSpecManager exists; child processes (nbconvert) inherit it.
jupyter_support.use_checkouts_kernelspec()

Msg = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Kernel lifecycle


def kernelspec_dir() -> Path:
    return VENV_JUPYTER_DATA / "kernels" / KERNEL_NAME


@pytest.fixture(scope="session", autouse=True)
def _kernelspec_installed() -> None:
    if not (kernelspec_dir() / "kernel.json").is_file():
        pytest.fail(
            f"no kernelspec at {kernelspec_dir()}: run scripts/setup first "
            "(and run the tests with .venv/bin/python)",
            pytrace=False,
        )


def kernel_binary() -> Path:
    """The kernel executable the installed kernelspec starts."""
    import json

    return Path(json.loads((kernelspec_dir() / "kernel.json").read_text())["argv"][0])


@pytest.fixture(scope="session", autouse=True)
def _no_spare_kernels_left_behind() -> Any:
    """Kernels leave a spare kernel behind for the next one (see kernel/server/src/spare.rs);
    the test session stops those it leaves."""
    yield
    import subprocess

    subprocess.run([str(kernel_binary()), "spare", "--stop"], capture_output=True, timeout=30)


def start_kernel(**kwargs: Any) -> tuple[KernelManager, BlockingKernelClient]:
    """A started rust-async kernel and a client whose channels are running and ready."""
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel(**kwargs)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
    except BaseException:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc


def stop_kernel(km: KernelManager, kc: BlockingKernelClient) -> None:
    kc.stop_channels()
    if km.has_kernel:
        try:
            km.shutdown_kernel(now=not km.is_alive())
        except Exception:  # already gone: make sure nothing is left behind
            km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel() -> Any:
    """One kernel for all the tests of a module: (KernelManager, BlockingKernelClient).

    A first cell has run on it, so that the tests' own cells compile at the usual speed.
    """
    km, kc = start_kernel()
    try:
        reply, msgs = run(kc, "let _warm_up = 0;", timeout=FIRST_CELL_TIMEOUT)
        assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    except BaseException:
        stop_kernel(km, kc)
        raise
    yield km, kc
    stop_kernel(km, kc)


@pytest.fixture
def km(kernel: tuple[KernelManager, BlockingKernelClient]) -> KernelManager:
    return kernel[0]


@pytest.fixture
def kc(kernel: tuple[KernelManager, BlockingKernelClient]) -> BlockingKernelClient:
    """The module's kernel client, its channels drained of what earlier tests left."""
    client = kernel[1]
    flush(client)
    return client


@pytest.fixture
def fresh_kernel() -> Any:
    """A kernel of the test's own: (KernelManager, BlockingKernelClient)."""
    km, kc = start_kernel()
    yield km, kc
    stop_kernel(km, kc)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def analysis_processes() -> list[int]:
    """The pids of rust-analyzer processes that kernels started by this test process started
    for completion and inspection (`rust-async-kernel analysis DIR`,
    kernel/engine/src/analysis_process.rs). Kernels of other programs on the machine do not
    count."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].endswith(b"rust-async-kernel") and argv[1] == b"analysis":
            kernel = _parent(int(entry.name))
            if kernel is not None and _parent(kernel) == os.getpid():
                found.append(int(entry.name))
    return found


class AnalysisWatch:
    """Watches, in a background thread, whether any rust-analyzer process runs."""

    def __init__(self) -> None:
        import threading

        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.update(analysis_processes())

    def __enter__(self) -> "AnalysisWatch":
        self.seen.update(analysis_processes())
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------
# Messages


def _get(getter: Callable[..., Msg], timeout: float) -> Msg | None:
    try:
        return getter(timeout=timeout)
    except queue.Empty:
        return None


def flush(kc: BlockingKernelClient, settle: float = 0.1) -> None:
    """Drops every message waiting on the iopub, shell and stdin channels."""
    for getter in (kc.get_iopub_msg, kc.get_shell_msg, kc.get_stdin_msg):
        while _get(getter, settle) is not None:
            pass


def drain(kc: BlockingKernelClient, seconds: float) -> list[Msg]:
    """All iopub messages that arrive within `seconds` (validated)."""
    deadline = time.monotonic() + seconds
    msgs: list[Msg] = []
    while (remaining := deadline - time.monotonic()) > 0:
        msg = _get(kc.get_iopub_msg, min(remaining, 0.1))
        if msg is not None:
            check_msg(msg)
            msgs.append(msg)
    return msgs


def check_msg(msg: Msg) -> None:
    """Validates a message against the v5 message spec (jupyter_kernel_test's schemas).

    Replies with status `aborted` are not covered by those schemas; they are checked by the
    tests that expect them.
    """
    msg_type = msg["header"]["msg_type"]
    # input_request: that schema wants a number for `password`, the spec says boolean.
    if msg_type not in schema_fragments or msg_type == "input_request":
        return
    if msg_type.endswith("_reply") and msg["content"].get("status") not in ("ok", "error"):
        return
    validate_message(msg, msg_type)


def collect(kc: BlockingKernelClient, msg_id: str, timeout: float = 60, **collecting: Any) -> tuple[Msg, list[Msg]]:
    """Waits for the shell reply to request `msg_id` and for its iopub `idle` status
    (`jupyter_support.collect`: `stdin_hook`, `arrivals`), validating every collected message
    against the message spec. Returns (reply, iopub messages of that request in arrival
    order, from `busy` to `idle`)."""
    return jupyter_support.collect(kc, msg_id, timeout, check=check_msg, **collecting)


def run(kc: BlockingKernelClient, code: str, timeout: float = 60, **options: Any) -> tuple[Msg, list[Msg]]:
    """Executes `code` and returns (execute_reply, iopub messages of the request), every
    message validated. `options`: `silent`, `store_history`, `allow_stdin`, `stop_on_error`,
    `stdin_hook`, `arrivals` (`jupyter_support.run`)."""
    return jupyter_support.run(kc, code, timeout, check=check_msg, **options)


def wait_for_iopub(
    kc: BlockingKernelClient, msg_id: str, predicate: Callable[[Msg], bool], timeout: float
) -> list[Msg]:
    """Reads iopub messages of request `msg_id` until one satisfies `predicate`.

    Returns the messages read, that one last. Other requests' messages are dropped.
    """
    deadline = time.monotonic() + timeout
    seen: list[Msg] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"request {msg_id}: awaited iopub message not seen within {timeout}s; "
                f"seen: {[summary(m) for m in seen]}"
            )
        msg = _get(kc.get_iopub_msg, min(remaining, 0.1))
        if msg is None or parent_id(msg) != msg_id:
            continue
        check_msg(msg)
        seen.append(msg)
        if predicate(msg):
            return seen


def get_reply(
    kc: BlockingKernelClient, msg_id: str, timeout: float = 60, channel: str = "shell"
) -> Msg:
    """The reply to request `msg_id` on the shell (or control) channel."""
    getter = kc.get_shell_msg if channel == "shell" else kc.get_control_msg
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no {channel} reply to {msg_id} within {timeout}s")
        msg = _get(getter, min(remaining, 0.1))
        if msg is not None and parent_id(msg) == msg_id:
            check_msg(msg)
            return msg


def complete_when_ready(kc: BlockingKernelClient, code: str, timeout: float = 90) -> Msg:
    """The reply to a completion at the end of `code`, asked again until it offers something,
    as a student presses Tab again: the first Tab of a kernel starts rust-analyzer, and the
    kernel answers with nothing while it analyses std and tokio (seconds; JupyterLab would drop
    a late answer anyway)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = get_reply(kc, kc.complete(code, len(code)), timeout)
        if reply["content"]["matches"] or time.monotonic() > deadline:
            return reply
        time.sleep(0.5)


def inspect_when_ready(kc: BlockingKernelClient, code: str, timeout: float = 90) -> Msg:
    """The reply to an inspection at the end of `code`, asked again while rust-analyzer is
    starting (see `complete_when_ready`)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = get_reply(kc, kc.inspect(code, len(code)), timeout)
        starting = "rust-analyzer is starting" in str(reply["content"].get("data", {}))
        if not starting or time.monotonic() > deadline:
            return reply
        time.sleep(0.5)


def of_type(msgs: list[Msg], msg_type: str) -> list[Msg]:
    return [m for m in msgs if m["msg_type"] == msg_type]


def streams(msgs: list[Msg]) -> list[tuple[str, str]]:
    """The stream outputs as (name, text), consecutive chunks of one stream merged."""
    merged: list[tuple[str, str]] = []
    for m in of_type(msgs, "stream"):
        name, text = m["content"]["name"], m["content"]["text"]
        if merged and merged[-1][0] == name:
            merged[-1] = (name, merged[-1][1] + text)
        else:
            merged.append((name, text))
    return merged


def stream_text(msgs: list[Msg], name: str = "stdout") -> str:
    return "".join(m["content"]["text"] for m in of_type(msgs, "stream") if m["content"]["name"] == name)


def notice_text(msgs: list[Msg]) -> str:
    """The kernel's own notices under a cell (warnings, notes), one per line: they come as
    `display_data` with a plain-text form and an HTML box, never as stderr (graders count
    stderr as a failure)."""
    return "".join(m["content"]["data"]["text/plain"] + "\n" for m in of_type(msgs, "display_data")
                   if 'class="rust-async-notice"' in m["content"]["data"].get("text/html", ""))


def the_error(msgs: list[Msg]) -> Msg:
    """The one `error` message among `msgs` (fails if there is not exactly one)."""
    errors = of_type(msgs, "error")
    assert len(errors) == 1, f"expected exactly one error message, got {[summary(m) for m in msgs]}"
    return errors[0]


def result_text(msgs: list[Msg]) -> str:
    """The text/plain of the one execute_result among `msgs`."""
    results = of_type(msgs, "execute_result")
    assert len(results) == 1, f"expected one execute_result, got {[summary(m) for m in msgs]}"
    return results[0]["content"]["data"]["text/plain"]


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """`text` without ANSI colour escapes."""
    return ANSI.sub("", text)


def rust_str(value: str) -> str:
    """A Rust string literal for `value` (ASCII text)."""
    assert value.isascii(), value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def execute_notebook(nb: Any, path: Path, cell_timeout: float = 120) -> None:
    """Runs `nb` top to bottom with nbclient in a fresh rust-async kernel, in directory `path`,
    as a grader does (raises nbclient's CellExecutionError on an unexpected error)."""
    from nbclient import NotebookClient

    NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=cell_timeout,
        startup_timeout=STARTUP_TIMEOUT,
        resources={"metadata": {"path": str(path)}},
    ).execute()
