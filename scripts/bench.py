"""Benchmark of the rust-async kernel, side by side with evcxr when it is installed.

Usage (through the wrapper, which uses .venv's Python):

    scripts/bench [--quick] [--json FILE] [--no-evcxr] [--evcxr-kernel NAME]

Drives the installed kernel (kernelspec `rust-async`, from scripts/setup) through
jupyter_client, as Jupyter front ends do, and prints one table:

* floor: `rustc` compiling a trivial dylib (median of 5), timed in this run; every time is also
  shown as a multiple of it (memory: as a multiple of that rustc's peak RSS);
* kernel start -> first `.await` cell done (wall time from start_kernel to the cell's reply),
  twice: cold (no spare kernel: `RUST_ASYNC_SPARE=0`, what the first kernel after a while
  costs), and with a warmed-up spare kernel standing by (what every later kernel, restart or
  graded notebook costs; see kernel/server/src/spare.rs);
* the first `let` cell of that cold kernel, sent 3 s after its first cell, and the same in
  another cold kernel 20 s after its first cell (a student reading between cells): a cold
  kernel's first cell runs before rust-analyzer has analysed std and tokio, and the first `let`
  needs that analysis and type inference (seconds of work), which a kernel does while idle
  after its first cell (see kernel/engine/src/analysis.rs);
* a warm await cell (median of >= 10 runs after warm-up);
* a 20-cell lesson notebook under `jupyter nbconvert --to notebook --execute`;
* 10 000 spawned tasks each sleeping 100 ms, in one cell, timed inside the cell, against one
  100 ms sleep timed the same way;
* peak memory of kernel + user process: sum of the RSS of the kernel process and all of its
  descendants (the user-code process, and the compiler while a cell compiles), sampled with
  psutil every 50 ms for the kernel's whole life. A child caught between fork and exec is left
  out: it shares all its parent's pages, and would count the kernel twice.

Every other rust-async measure runs with spares off, so it is not helped by one. Waiting spares
are stopped at the start and at the end.

Targets (rust-async only), printed with PASS/MISS: first async cell <= 3 s (each row); warm await cell
<= 2x the floor (and no slower than evcxr when evcxr is measured); 10 000 tasks <= 1.5x one
sleep. The benchmark only reports: it exits 0 even on MISS, non-zero only when the rust-async
kernel fails (does not start, a cell errors, the kernel dies, nbconvert fails). evcxr's own
failures are reported in its column.

evcxr is measured when `evcxr_jupyter` is on PATH or a kernelspec named `rust` exists
(`--evcxr-kernel NAME` picks another kernelspec); its await cells get
`:dep tokio = { version = "1", features = ["full"] }` first. It is never installed from here.

The machine may be shared: the load average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
VENV_JUPYTER_DATA = Path(sys.prefix) / "share" / "jupyter"
KERNEL_NAME = "rust-async"

# The kernelspec scripts/setup installed into this environment wins over any other
# `rust-async` one (as in tests/ and scripts/run-notebooks). Child processes inherit it.
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    p for p in [str(VENV_JUPYTER_DATA), os.environ.get("JUPYTER_PATH", "")] if p
)

import psutil  # noqa: E402  (after JUPYTER_PATH, like the jupyter imports)
import zmq  # noqa: E402
from jupyter_client import KernelManager  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402

EVCXR_DEP = ':dep tokio = { version = "1", features = ["full"] }'

# Targets
FIRST_CELL_TARGET_S = 3.0
WARM_TARGET_X_FLOOR = 2.0
TASKS_TARGET_X_SLEEP = 1.5

SAMPLE_EVERY_S = 0.05
# The cold measures: this kernel neither claims nor leaves a spare kernel.
NO_SPARE = {"RUST_ASYNC_SPARE": "0"}
FIRST_CELL_TIMEOUT = 300  # a kernel whose runtime library is not prepared builds it first
CELL_TIMEOUT = 120

AWAIT_CELL = "tokio::time::sleep(std::time::Duration::from_millis(1)).await;"
FIRST_LET_CELL = "let first_variable = 5;"
IDLE_BEFORE_FIRST_LET_S = 3.0
READING_BEFORE_FIRST_LET_S = 20.0

N_TASKS = 10_000
TASK_SLEEP_MS = 100
TASKS_CELL = f"""{{
    let start = std::time::Instant::now();
    let mut handles = Vec::with_capacity({N_TASKS});
    for _ in 0..{N_TASKS} {{
        handles.push(tokio::spawn(async {{
            tokio::time::sleep(std::time::Duration::from_millis({TASK_SLEEP_MS})).await;
        }}));
    }}
    for handle in handles {{
        handle.await.unwrap();
    }}
    println!("BENCH_MS {{:.3}}", start.elapsed().as_secs_f64() * 1000.0);
}}"""
ONE_SLEEP_CELL = f"""{{
    let start = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_millis({TASK_SLEEP_MS})).await;
    println!("BENCH_MS {{:.3}}", start.elapsed().as_secs_f64() * 1000.0);
}}"""

# 20 small cells of the kind the lessons have: async fn, .await, spawn, join!, println, channels.
LESSON_CELLS = [
    "use std::time::Duration;",
    'async fn greet(name: &str) -> String {\n    format!("hello, {name}")\n}',
    'greet("world").await',
    'println!("{}", greet("async Rust").await);',
    'tokio::time::sleep(Duration::from_millis(10)).await;\nprintln!("slept 10 ms");',
    "let handle = tokio::spawn(async { 40 + 2 });",
    "handle.await.unwrap()",
    "async fn slow(ms: u64) -> u64 {\n"
    "    tokio::time::sleep(Duration::from_millis(ms)).await;\n"
    "    ms\n"
    "}",
    'let (a, b) = tokio::join!(slow(20), slow(30));\nprintln!("joined {a} and {b}");',
    "let start = std::time::Instant::now();\n"
    "tokio::join!(slow(50), slow(50));\n"
    'println!("two 50 ms sleeps, joined: {} ms", start.elapsed().as_millis());',
    "let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);",
    "tokio::spawn(async move {\n"
    "    for i in 0..3 {\n"
    "        tx.send(i).await.unwrap();\n"
    "    }\n"
    "});",
    'while let Some(v) = rx.recv().await {\n    println!("got {v}");\n}',
    "let handles: Vec<_> = (1..=5).map(|i| tokio::spawn(slow(i * 5))).collect();",
    'for h in handles {\n    println!("task slept {} ms", h.await.unwrap());\n}',
    "tokio::select! {\n"
    '    v = slow(10) => println!("the 10 ms sleep won: {v}"),\n'
    '    v = slow(200) => println!("the 200 ms sleep won: {v}"),\n'
    "}",
    "let late = tokio::time::timeout(Duration::from_millis(10), slow(200)).await;\n"
    'println!("timed out: {}", late.is_err());',
    "let counter = std::sync::Arc::new(tokio::sync::Mutex::new(0));",
    "let mut workers = Vec::new();\n"
    "for _ in 0..10 {\n"
    "    let counter = counter.clone();\n"
    "    workers.push(tokio::spawn(async move { *counter.lock().await += 1; }));\n"
    "}\n"
    "for w in workers {\n"
    "    w.await.unwrap();\n"
    "}\n"
    'println!("counter = {}", *counter.lock().await);',
    'format!("{} cells done", 20)',
]
assert len(LESSON_CELLS) == 20


class KernelFailed(Exception):
    """The kernel did not start, a cell failed, or the kernel died."""


# --------------------------------------------------------------------------------------------
# Memory sampling


class MemorySampler:
    """Samples every 50 ms the summed RSS of a process tree; keeps the peak.

    `roots()` gives the pids whose trees count (re-evaluated at each sample, so a kernel started
    after the sampler, or one launched by nbconvert, is picked up); `include_root` says whether
    the roots themselves count (nbconvert's own Python process should not).
    """

    def __init__(self, roots: Callable[[], list[int]], include_root: bool = True) -> None:
        self._roots = roots
        self._include_root = include_root
        self.peak = 0
        self.peak_breakdown: list[tuple[str, int]] = []  # (process name, RSS) at the peak
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> tuple[int, list[tuple[str, int]]]:
        total = 0
        parts: list[tuple[str, int]] = []
        seen: set[int] = set()
        for pid in self._roots():
            try:
                root = psutil.Process(pid)
                procs = root.children(recursive=True)
                if self._include_root:
                    procs.append(root)
            except psutil.Error:
                continue
            exes: dict[int, str] = {}
            for proc in procs:
                try:
                    exes[proc.pid] = proc.exe()
                except psutil.Error:
                    pass
            for proc in procs:
                if proc.pid in seen:
                    continue
                seen.add(proc.pid)
                try:
                    rss = proc.memory_info().rss
                    name = proc.name()
                    if self._forked_not_execed(proc, name, exes):
                        continue
                except psutil.Error:
                    continue
                total += rss
                parts.append((name, rss))
        return total, parts

    @staticmethod
    def _forked_not_execed(proc: Any, name: str, exes: dict[int, str]) -> bool:
        """A child between fork and exec (the kernel starting cargo, say) still maps all of its
        parent's pages, shared: its RSS would count the parent twice. Such a child has its
        parent's executable but the name of the thread that forked it ("engine", ...), not the
        executable's name as after an exec."""
        exe = exes.get(proc.pid)
        try:
            parent_exe = exes.get(proc.ppid())
        except psutil.Error:
            return False
        return bool(exe) and exe == parent_exe and name != os.path.basename(exe)[:15] \
            and not os.path.basename(exe).startswith(name)

    def _take(self) -> None:
        total, parts = self.sample()
        self.samples += 1
        if total > self.peak:
            self.peak = total
            self.peak_breakdown = sorted(parts, key=lambda p: -p[1])

    def _run(self) -> None:
        while True:
            self._take()
            if self._stop.wait(SAMPLE_EVERY_S):
                self._take()  # one last sample, so a short life is still seen
                return

    def breakdown(self) -> str:
        return ", ".join(f"{name} {rss / 2**20:.0f}" for name, rss in self.peak_breakdown[:6])


# --------------------------------------------------------------------------------------------
# Driving a kernel


@dataclass
class CellResult:
    elapsed: float  # send -> execute_reply, seconds
    status: str
    stdout: str
    error: str


class Kernel:
    """One kernel, started through jupyter_client, its stderr kept in a file."""

    def __init__(self, name: str, log_dir: Path, label: str) -> None:
        self.name = name
        self.label = label
        self.log_path = log_dir / f"{label}-kernel-stderr.log"
        self.km = KernelManager(kernel_name=name)
        self.kc: Any = None
        self._log: Any = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self._log = open(self.log_path, "wb")
        extra = {} if env is None else {"env": {**os.environ, **env}}
        self.km.start_kernel(stderr=self._log, stdout=self._log, **extra)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def pid(self) -> list[int]:
        prov = getattr(self.km, "provisioner", None)
        pid = getattr(prov, "pid", None)
        return [pid] if pid else []

    def execute(self, code: str, timeout: float = CELL_TIMEOUT) -> CellResult:
        kc = self.kc
        msg_id = kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(kc.shell_channel.socket, zmq.POLLIN)
        poller.register(kc.iopub_channel.socket, zmq.POLLIN)
        reply: dict[str, Any] | None = None
        elapsed = 0.0
        idle = False
        stdout: list[str] = []
        errors: list[str] = []
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelFailed(
                    f"{self.label}: no {'reply' if reply is None else 'idle'} within "
                    f"{timeout:.0f} s for cell:\n{code}"
                )
            if not self.km.is_alive():
                raise KernelFailed(f"{self.label}: the kernel died")
            events = dict(poller.poll(min(left, 1.0) * 1000))
            if kc.shell_channel.socket in events:
                msg = kc.get_shell_msg(timeout=0)
                if msg["parent_header"].get("msg_id") == msg_id:
                    elapsed = time.perf_counter() - start
                    reply = msg
            if kc.iopub_channel.socket in events:
                msg = kc.get_iopub_msg(timeout=0)
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream" and content.get("name") == "stdout":
                    stdout.append(content["text"])
                elif kind == "error":
                    errors.append(f"{content.get('ename')}: {content.get('evalue')}")
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True
        content = reply["content"]
        status = content.get("status", "?")
        if status == "error" and not errors:
            errors.append(f"{content.get('ename')}: {content.get('evalue')}")
        return CellResult(elapsed, status, "".join(stdout), "\n".join(errors))

    def stop(self) -> None:
        try:
            if self.kc is not None:
                self.kc.stop_channels()
            if self.km.has_kernel:
                try:
                    self.km.shutdown_kernel(now=not self.km.is_alive())
                except Exception:
                    self.km.shutdown_kernel(now=True)
        finally:
            if self._log is not None:
                self._log.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def ok(kernel: Kernel, result: CellResult, code: str) -> CellResult:
    if result.status != "ok":
        raise KernelFailed(
            f"{kernel.label}: cell failed ({result.status}): {result.error}\ncell:\n{code}"
        )
    return result


def bench_ms(kernel: Kernel, code: str) -> float:
    result = ok(kernel, kernel.execute(code), code)
    m = re.search(r"BENCH_MS ([0-9.]+)", result.stdout)
    if not m:
        raise KernelFailed(f"{kernel.label}: no BENCH_MS line in the output: {result.stdout!r}")
    return float(m.group(1))


# --------------------------------------------------------------------------------------------
# The measurements


@dataclass
class Column:
    """The measurements of one kernel (None: not measured)."""

    label: str
    ready_s: float | None = None
    first_cell_s: float | None = None
    first_cell_spare_s: float | None = None
    first_let_after_idle_s: float | None = None
    first_let_after_reading_s: float | None = None
    warm_s: float | None = None
    warm_runs: list[float] = field(default_factory=list)
    nbconvert_s: float | None = None
    nbconvert_cells_s: list[float] = field(default_factory=list)
    one_sleep_ms: float | None = None
    tasks_ms: float | None = None
    tasks_runs: list[float] = field(default_factory=list)
    one_sleep_runs: list[float] = field(default_factory=list)
    peak_rss: int | None = None
    peak_breakdown: list[tuple[str, int]] = field(default_factory=list)
    nbconvert_peak_rss: int | None = None
    nbconvert_peak_breakdown: list[tuple[str, int]] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def tasks_ratio(self) -> float | None:
        if self.tasks_ms is None or not self.one_sleep_ms:
            return None
        return self.tasks_ms / self.one_sleep_ms


def measure_floor(runs: int, work: Path) -> tuple[float, list[float], int]:
    """rustc compiling a trivial dylib: (median seconds, all runs, peak RSS in bytes)."""
    rustc = shutil.which("rustc")
    if rustc is None:
        raise SystemExit("scripts/bench: rustc is not on PATH")
    d = work / "floor"
    d.mkdir()
    (d / "lib.rs").write_text("pub fn f() {}\n")
    cmd = [rustc, "--crate-type", "dylib", "-C", "prefer-dynamic", "--edition", "2021",
           "-o", "tmp.so", "lib.rs"]
    times: list[float] = []
    peak = 0
    for _ in range(runs):
        (d / "tmp.so").unlink(missing_ok=True)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait4: the child's own rusage (peak RSS of rustc, or of its linker if larger)
        _, status, usage = os.wait4(proc.pid, 0)
        times.append(time.perf_counter() - start)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if proc.returncode != 0:
            raise SystemExit(f"scripts/bench: the floor compile failed:\n{err}")
        peak = max(peak, usage.ru_maxrss * 1024)  # Linux: KiB
    return statistics.median(times), times, peak


def spare_command(*args: str) -> None:
    """`rust-async-kernel spare ...` with the binary of the installed kernelspec."""
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    proc = subprocess.run([spec.argv[0], "spare", *args], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        raise KernelFailed(f"rust-async-kernel spare {' '.join(args)}: {proc.stderr.strip()}")


def measure_first_let_after_reading(column: Column, work: Path, log: Callable[[str], None]) -> None:
    """A cold kernel's first let cell, sent a while after its first cell."""
    kernel = Kernel(KERNEL_NAME, work, f"{column.label}-reading")
    try:
        kernel.start(env=NO_SPARE)
        ok(kernel, kernel.execute(AWAIT_CELL, timeout=FIRST_CELL_TIMEOUT), AWAIT_CELL)
        time.sleep(READING_BEFORE_FIRST_LET_S)
        column.first_let_after_reading_s = ok(kernel, kernel.execute(FIRST_LET_CELL), FIRST_LET_CELL).elapsed
        log(f"{column.label}: first let cell {READING_BEFORE_FIRST_LET_S:g} s after the first cell: "
            f"{column.first_let_after_reading_s:.3f} s")
    finally:
        kernel.stop()


def measure_spare_start(column: Column, work: Path, log: Callable[[str], None]) -> None:
    """Kernel start -> first await cell when a warmed-up spare kernel stands by."""
    spare_command("--stop")
    spare_command()
    spare_command("--wait")
    kernel = Kernel(KERNEL_NAME, work, f"{column.label}-spare")
    try:
        start = time.perf_counter()
        kernel.start()
        ok(kernel, kernel.execute(AWAIT_CELL, timeout=FIRST_CELL_TIMEOUT), AWAIT_CELL)
        column.first_cell_spare_s = time.perf_counter() - start
        log(f"{column.label}: with a spare standing by, first await cell done at "
            f"{column.first_cell_spare_s:.2f} s")
    finally:
        kernel.stop()
        spare_command("--stop")


def measure_cells(
    column: Column, kernel_name: str, work: Path, *, evcxr: bool, warm_runs: int,
    warm_up: int, task_repeats: int, log: Callable[[str], None],
) -> None:
    kernel = Kernel(kernel_name, work, column.label)
    sampler = MemorySampler(kernel.pid)
    try:
        with sampler:
            start = time.perf_counter()
            kernel.start(env=None if evcxr else NO_SPARE)
            column.ready_s = time.perf_counter() - start
            if evcxr:
                ok(kernel, kernel.execute(EVCXR_DEP, timeout=FIRST_CELL_TIMEOUT), EVCXR_DEP)
            ok(kernel, kernel.execute(AWAIT_CELL, timeout=FIRST_CELL_TIMEOUT), AWAIT_CELL)
            column.first_cell_s = time.perf_counter() - start
            log(f"{column.label}: kernel ready in {column.ready_s:.2f} s, "
                f"first await cell done at {column.first_cell_s:.2f} s")
            time.sleep(IDLE_BEFORE_FIRST_LET_S)
            column.first_let_after_idle_s = ok(kernel, kernel.execute(FIRST_LET_CELL), FIRST_LET_CELL).elapsed
            log(f"{column.label}: first let cell after {IDLE_BEFORE_FIRST_LET_S:g} s idle: "
                f"{column.first_let_after_idle_s:.3f} s")

            for _ in range(warm_up):
                ok(kernel, kernel.execute(AWAIT_CELL), AWAIT_CELL)
            for _ in range(warm_runs):
                column.warm_runs.append(ok(kernel, kernel.execute(AWAIT_CELL), AWAIT_CELL).elapsed)
            column.warm_s = statistics.median(column.warm_runs)
            log(f"{column.label}: warm await cell, median of {warm_runs}: {column.warm_s:.3f} s "
                f"(min {min(column.warm_runs):.3f}, max {max(column.warm_runs):.3f})")

            for _ in range(task_repeats):
                column.one_sleep_runs.append(bench_ms(kernel, ONE_SLEEP_CELL))
                column.tasks_runs.append(bench_ms(kernel, TASKS_CELL))
            column.one_sleep_ms = statistics.median(column.one_sleep_runs)
            column.tasks_ms = statistics.median(column.tasks_runs)
            log(f"{column.label}: one {TASK_SLEEP_MS} ms sleep {column.one_sleep_ms:.1f} ms, "
                f"{N_TASKS} tasks {column.tasks_ms:.1f} ms (median of {task_repeats})")
    except KernelFailed as e:
        tail = kernel.log_tail()
        raise KernelFailed(f"{e}\n--- kernel stderr (last lines) ---\n{tail}" if tail else str(e))
    finally:
        kernel.stop()
        column.peak_rss = sampler.peak or None
        column.peak_breakdown = sampler.peak_breakdown
        if sampler.peak:
            log(f"{column.label}: peak RSS {fmt_mib(sampler.peak)} = {sampler.breakdown()} MiB "
                f"({sampler.samples} samples)")
    if "not prepared" in kernel.log_tail(200):
        column.notes.append(
            f"{column.label}: the kernel found its runtime library not prepared and built it "
            "during the first cell (run scripts/setup; someone may be rebuilding it)"
        )


def lesson_notebook(path: Path, *, evcxr: bool, kernel_name: str) -> None:
    cells = ([EVCXR_DEP] if evcxr else []) + LESSON_CELLS
    nb = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"cell-{i:02d}",
             "metadata": {}, "outputs": [], "source": src}
            for i, src in enumerate(cells)
        ],
        "metadata": {
            "kernelspec": {"name": kernel_name, "display_name": kernel_name, "language": "rust"},
            "language_info": {"name": "rust"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb, indent=1))


def measure_nbconvert(column: Column, kernel_name: str, work: Path, *, evcxr: bool,
                      log: Callable[[str], None]) -> None:
    d = work / f"nb-{column.label}"
    d.mkdir()
    nb = d / "lesson.ipynb"
    lesson_notebook(nb, evcxr=evcxr, kernel_name=kernel_name)
    jupyter = VENV / "bin" / "jupyter"
    cmd = [str(jupyter), "nbconvert", "--to", "notebook", "--execute",
           f"--ExecutePreprocessor.kernel_name={kernel_name}",
           "--ExecutePreprocessor.timeout=300", "--ExecutePreprocessor.startup_timeout=120",
           "--output-dir", str(d / "out"), str(nb)]
    start = time.perf_counter()
    env = {**os.environ, **({} if evcxr else NO_SPARE)}
    proc = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    # nbconvert's kernel and its user process: the descendants of nbconvert, not nbconvert
    sampler = MemorySampler(lambda: [proc.pid], include_root=False)
    with sampler:
        out, _ = proc.communicate()
    elapsed = time.perf_counter() - start
    column.nbconvert_peak_rss = sampler.peak or None
    column.nbconvert_peak_breakdown = sampler.peak_breakdown
    if proc.returncode != 0:
        text = out.decode(errors="replace")
        raise KernelFailed(
            f"{column.label}: nbconvert --execute failed (exit {proc.returncode}) after "
            f"{elapsed:.1f} s:\n" + "\n".join(text.splitlines()[-25:])
        )
    executed = json.loads((d / "out" / "lesson.ipynb").read_text())
    ran = [c for c in executed["cells"] if c["cell_type"] == "code"]
    if any(c.get("execution_count") is None for c in ran):
        raise KernelFailed(f"{column.label}: nbconvert left cells unexecuted")
    column.nbconvert_s = elapsed
    # nbclient records when each cell started and got its reply
    cell_s = [cell_seconds(c) for c in ran]
    column.nbconvert_cells_s = [t for t in cell_s if t is not None]
    detail = ""
    if len(column.nbconvert_cells_s) == len(ran) and len(ran) > 1:
        detail = (f" (cells: first {cell_s[0]:.2f} s, others median "
                  f"{statistics.median(cell_s[1:]):.2f} s, max {max(cell_s[1:]):.2f} s)")
    log(f"{column.label}: {len(LESSON_CELLS)}-cell notebook under nbconvert: "
        f"{elapsed:.2f} s{detail}; peak RSS {fmt_mib(sampler.peak or None)} = "
        f"{sampler.breakdown()} MiB")


def cell_seconds(cell: dict[str, Any]) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


# --------------------------------------------------------------------------------------------
# evcxr discovery


def find_evcxr(explicit: str | None, work: Path) -> tuple[str | None, str]:
    """(kernelspec name to use, or None; a sentence saying what was found)."""
    specs = KernelSpecManager().find_kernel_specs()
    if explicit:
        if explicit in specs:
            return explicit, f"evcxr: kernelspec {explicit!r} ({specs[explicit]})"
        return None, f"evcxr: no kernelspec named {explicit!r}; evcxr column skipped"
    if "rust" in specs:
        return "rust", f"evcxr: kernelspec 'rust' ({specs['rust']})"
    binary = shutil.which("evcxr_jupyter")
    if binary:
        # A kernelspec of our own, in a private directory, for this run only.
        spec_dir = work / "jupyter" / "kernels" / "bench-evcxr"
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [binary, "--control_file", "{connection_file}"],
            "display_name": "Rust (evcxr)",
            "language": "rust",
            "interrupt_mode": "message",
        }))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [os.environ["JUPYTER_PATH"], str(work / "jupyter")]
        )
        return "bench-evcxr", f"evcxr: {binary} (through a temporary kernelspec)"
    return None, ("evcxr: not installed (no `evcxr_jupyter` on PATH, no kernelspec named "
                  "'rust'); evcxr column skipped")


# --------------------------------------------------------------------------------------------
# Report


def fmt_s(v: float | None) -> str:
    return "—" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")


def fmt_ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} ms"


def fmt_mib(v: int | None) -> str:
    return "—" if v is None else f"{v / 2**20:.0f} MiB"


def fmt_x(v: float | None, base: float | None) -> str:
    if v is None or not base:
        return ""
    return f"{v / base:.1f}×"


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def table(floor_s: float, floor_rss: int, floor_runs: int, cols: list[Column],
          evcxr_measured: bool, warm_n: int, task_repeats: int) -> tuple[str, dict[str, Any]]:
    ra = cols[0]
    ev = cols[1] if len(cols) > 1 else None
    verdicts: dict[str, Any] = {}

    def verdict(key: str, passed: bool | None, why: str = "") -> str:
        verdicts[key] = {"pass": passed, "why": why} if why else {"pass": passed}
        return "—" if passed is None else ("PASS" if passed else "MISS")

    # targets
    first_pass = None if ra.first_cell_s is None else ra.first_cell_s <= FIRST_CELL_TARGET_S
    spare_pass = (None if ra.first_cell_spare_s is None
                  else ra.first_cell_spare_s <= FIRST_CELL_TARGET_S)
    warm_pass = None
    warm_why = ""
    if ra.warm_s is not None:
        why: list[str] = []
        warm_pass = ra.warm_s <= WARM_TARGET_X_FLOOR * floor_s
        if not warm_pass:
            why.append(f"{fmt_s(ra.warm_s)} > {WARM_TARGET_X_FLOOR:g}× floor "
                       f"({fmt_s(WARM_TARGET_X_FLOOR * floor_s)})")
        if ev is not None and ev.warm_s is not None:
            if ra.warm_s > ev.warm_s:
                warm_pass = False
                why.append(f"slower than evcxr ({fmt_s(ev.warm_s)})")
        elif evcxr_measured:
            why.append("evcxr's warm cell was not measured (evcxr failed)")
        warm_why = "; ".join(why)
    tasks_pass = None if ra.tasks_ratio is None else ra.tasks_ratio <= TASKS_TARGET_X_SLEEP

    warm_target = f"≤ {WARM_TARGET_X_FLOOR:g}× floor ({fmt_s(WARM_TARGET_X_FLOOR * floor_s)})"
    if evcxr_measured:
        warm_target += ", ≤ evcxr"

    rows: list[tuple[str, Callable[[Column], tuple[str, str]], str, str]] = [
        (f"floor: rustc trivial dylib (median of {floor_runs})",
         lambda c: (fmt_s(floor_s), "1.0×"), "", ""),
        ("kernel start → kernel_info reply",
         lambda c: (fmt_s(c.ready_s), fmt_x(c.ready_s, floor_s)), "", ""),
        ("kernel start → first .await cell done (cold)",
         lambda c: (fmt_s(c.first_cell_s), fmt_x(c.first_cell_s, floor_s)),
         f"≤ {FIRST_CELL_TARGET_S:g} s", verdict("first_await_cell", first_pass)),
        ("kernel start → first .await cell done (spare ready)",
         lambda c: (fmt_s(c.first_cell_spare_s), fmt_x(c.first_cell_spare_s, floor_s)),
         f"≤ {FIRST_CELL_TARGET_S:g} s", verdict("first_await_cell_spare", spare_pass)),
        (f"first let cell, {IDLE_BEFORE_FIRST_LET_S:g} s after the first cell (cold kernel)",
         lambda c: (fmt_s(c.first_let_after_idle_s), fmt_x(c.first_let_after_idle_s, floor_s)), "", ""),
        (f"first let cell, {READING_BEFORE_FIRST_LET_S:g} s after the first cell (cold kernel)",
         lambda c: (fmt_s(c.first_let_after_reading_s), fmt_x(c.first_let_after_reading_s, floor_s)), "", ""),
        (f"warm await cell (median of {warm_n})",
         lambda c: (fmt_s(c.warm_s), fmt_x(c.warm_s, floor_s)),
         warm_target, verdict("warm_await_cell", warm_pass, warm_why)),
        (f"{len(LESSON_CELLS)}-cell lesson notebook, nbconvert --execute",
         lambda c: (fmt_s(c.nbconvert_s), fmt_x(c.nbconvert_s, floor_s)), "", ""),
        (f"one {TASK_SLEEP_MS} ms sleep, in-cell (median of {task_repeats})",
         lambda c: (fmt_ms(c.one_sleep_ms),
                    fmt_x(None if c.one_sleep_ms is None else c.one_sleep_ms / 1000, floor_s)),
         "", ""),
        (f"{N_TASKS:,} tasks × {TASK_SLEEP_MS} ms sleep".replace(",", " ")
         + f", in-cell (median of {task_repeats})",
         lambda c: (fmt_ms(c.tasks_ms),
                    fmt_x(None if c.tasks_ms is None else c.tasks_ms / 1000, floor_s)),
         "", ""),
        ("  → tasks ÷ one sleep",
         lambda c: ("—" if c.tasks_ratio is None else f"{c.tasks_ratio:.2f}×", ""),
         f"≤ {TASKS_TARGET_X_SLEEP:g}× one sleep", verdict("tasks_vs_one_sleep", tasks_pass)),
        ("peak RSS kernel + user process (cells)",
         lambda c: (fmt_mib(c.peak_rss), fmt_x(c.peak_rss, floor_rss)), "", ""),
        ("peak RSS kernel + user process (nbconvert)",
         lambda c: (fmt_mib(c.nbconvert_peak_rss), fmt_x(c.nbconvert_peak_rss, floor_rss)),
         "", ""),
    ]

    headers = ["metric", "rust-async", "×floor"]
    if evcxr_measured:
        headers += ["evcxr", "×floor"]
    headers += ["target (rust-async)", "result"]
    body: list[list[str]] = []
    for name, get, target, result in rows:
        line = [name, *get(ra)]
        if evcxr_measured:
            line += list(get(ev)) if ev is not None and ev.error is None else ["error", ""]
        line += [target, result]
        body.append(line)
    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]
    right = {1, 2, 3, 4} if evcxr_measured else {1, 2}

    def render(r: list[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        return "  ".join(cells).rstrip()

    lines = [render(headers), "  ".join("-" * w for w in widths)]
    lines += [render(r) for r in body]
    lines.append(f"(×floor: time ÷ floor time; memory ÷ the floor rustc's peak RSS, "
                 f"{fmt_mib(floor_rss)})")
    if warm_why:
        lines.append(f"warm await cell: {warm_why}")
    if first_pass is False:
        lines.append(f"first .await cell, cold: {fmt_s(ra.first_cell_s)} > {FIRST_CELL_TARGET_S:g} s")
    if spare_pass is False:
        lines.append(f"first .await cell, spare ready: {fmt_s(ra.first_cell_spare_s)} > "
                     f"{FIRST_CELL_TARGET_S:g} s")
    return "\n".join(lines), verdicts


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--no-evcxr", action="store_true", help="do not measure evcxr")
    parser.add_argument("--evcxr-kernel", metavar="NAME",
                        help="kernelspec of evcxr (default: 'rust', or evcxr_jupyter on PATH)")
    args = parser.parse_args()

    floor_runs = 3 if args.quick else 5
    warm_n = 10 if args.quick else 20  # ≥ 10 even with --quick
    warm_up = 1 if args.quick else 2
    task_repeats = 1 if args.quick else 3

    run_start = time.perf_counter()
    load_start = os.getloadavg()
    print(f"scripts/bench{' --quick' if args.quick else ''}: {platform.node()}, "
          f"{platform.machine()}, Python {platform.python_version()}")
    print(f"load average at start: {load()}", flush=True)

    def log(msg: str) -> None:
        print(f"  [{time.perf_counter() - run_start:6.1f} s] {msg}", flush=True)

    specs = KernelSpecManager().find_kernel_specs()
    if KERNEL_NAME not in specs:
        print(f"scripts/bench: no kernelspec {KERNEL_NAME!r}: run scripts/setup first",
              file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rust-async-bench-") as tmp:
        work = Path(tmp)
        if args.no_evcxr:
            evcxr_name, evcxr_what = None, "evcxr: skipped (--no-evcxr)"
        else:
            evcxr_name, evcxr_what = find_evcxr(args.evcxr_kernel, work)
        print(evcxr_what, flush=True)

        floor_s, floor_all, floor_rss = measure_floor(floor_runs, work)
        log(f"floor: rustc trivial dylib, median {floor_s:.3f} s of "
            f"{', '.join(f'{t:.3f}' for t in floor_all)}; peak RSS {fmt_mib(floor_rss)}")

        ra = Column("rust-async")
        cols = [ra]
        failure: str | None = None
        try:
            spare_command("--stop")
            measure_cells(ra, KERNEL_NAME, work, evcxr=False, warm_runs=warm_n, warm_up=warm_up,
                          task_repeats=task_repeats, log=log)
            measure_nbconvert(ra, KERNEL_NAME, work, evcxr=False, log=log)
            measure_first_let_after_reading(ra, work, log)
            measure_spare_start(ra, work, log)
        except KernelFailed as e:
            failure = str(e)
            ra.error = failure

        if evcxr_name is not None and failure is None:
            ev = Column("evcxr")
            cols.append(ev)
            try:
                measure_cells(ev, evcxr_name, work, evcxr=True, warm_runs=warm_n,
                              warm_up=warm_up, task_repeats=task_repeats, log=log)
                measure_nbconvert(ev, evcxr_name, work, evcxr=True, log=log)
            except KernelFailed as e:
                ev.error = str(e)
                log(f"evcxr failed (its column shows what was measured before): {e}")

    evcxr_measured = len(cols) > 1
    if evcxr_measured and cols[1].error is not None:
        # show what was measured before the failure
        cols[1].error = None
        cols[1].notes.append("evcxr: a step failed; '—' marks what was not measured")
    text, verdicts = table(floor_s, floor_rss, floor_runs, cols, evcxr_measured, warm_n,
                           task_repeats)
    print()
    print(text)
    if evcxr_name is None:
        print(evcxr_what)
    for c in cols:
        for note in c.notes:
            print(f"note: {note}")
    load_end = os.getloadavg()
    total = time.perf_counter() - run_start
    print(f"load average at end:   {load()}")
    print(f"whole run: {total:.1f} s (shared machine: the numbers are noisy)")

    if args.json:
        def col_json(c: Column) -> dict[str, Any]:
            return {
                "kernel_ready_s": c.ready_s,
                "first_await_cell_s": c.first_cell_s,
                "first_await_cell_spare_ready_s": c.first_cell_spare_s,
                "first_let_cell_after_idle_s": c.first_let_after_idle_s,
                "first_let_cell_after_reading_s": c.first_let_after_reading_s,
                "warm_await_cell_s": c.warm_s,
                "warm_await_cell_runs_s": c.warm_runs,
                "nbconvert_lesson_notebook_s": c.nbconvert_s,
                "nbconvert_cells_s": c.nbconvert_cells_s,
                "one_sleep_ms": c.one_sleep_ms,
                "one_sleep_runs_ms": c.one_sleep_runs,
                "tasks_ms": c.tasks_ms,
                "tasks_runs_ms": c.tasks_runs,
                "tasks_vs_one_sleep": c.tasks_ratio,
                "peak_rss_mib": None if c.peak_rss is None else c.peak_rss / 2**20,
                "nbconvert_peak_rss_mib":
                    None if c.nbconvert_peak_rss is None else c.nbconvert_peak_rss / 2**20,
                "peak_rss_by_process_mib": [(n, r / 2**20) for n, r in c.peak_breakdown],
                "nbconvert_peak_rss_by_process_mib":
                    [(n, r / 2**20) for n, r in c.nbconvert_peak_breakdown],
                "error": c.error,
                "notes": c.notes,
            }
        result = {
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "load_average_start": list(load_start),
            "load_average_end": list(load_end),
            "whole_run_s": total,
            "floor": {"rustc_dylib_s": floor_s, "runs_s": floor_all,
                      "peak_rss_mib": floor_rss / 2**20},
            "targets": {
                "first_await_cell_s": FIRST_CELL_TARGET_S,
                "warm_await_cell_x_floor": WARM_TARGET_X_FLOOR,
                "tasks_x_one_sleep": TASKS_TARGET_X_SLEEP,
            },
            "verdicts": verdicts,
            "evcxr": evcxr_what,
            "kernels": {c.label: col_json(c) for c in cols},
            "table": text,
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")

    if failure is not None:
        print(f"\nscripts/bench: the rust-async kernel failed:\n{failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
