"""Benchmark of the rust-async kernel: this checkout beside the kernel as it was before, the
same kernel with a runtime library without its ~150 course crates, and evcxr, all in one run.

Usage (through the wrapper, which uses .venv's Python):

    scripts/bench [--quick] [--json FILE] [--no-evcxr] [--evcxr-kernel NAME]
                  [--before-kernel NAME] [--without-course-crates] [--logs DIR] [--class-size N]

Drives each kernel through jupyter_client and nbclient, as Jupyter front ends do, and prints
ONE table at the end: a row per measure, a column per kernel, each value also as a multiple
of the floor, and the rust-async value divided by the `before` one (column "÷ before").

Columns (each measured in this run, one after the other):

* `rust-async`: kernelspec `rust-async` (this checkout, from scripts/setup);
* `before`: the kernel as it was before rust-analyzer left the kernel process, kernelspec
  `--before-kernel NAME` (default: `rust-async-before` when installed; otherwise the column
  is skipped, with a sentence saying so). Its spares are on by default: its cold rows run
  with `RUST_ASYNC_SPARE=0`, as the new kernel's do;
* `no course crates` (`--without-course-crates`): this checkout's kernel with a PROTOTYPE
  runtime library that links tokio only, as before the course crates (futures, serde,
  serde_json, reqwest, anyhow, thiserror, rand, tokio-stream, bytes, axum: about 150 packages of
  the lock file) joined it: the figures with and without them, side by side. Its source is made
  under target/bench-course-runtime/source (a copy of kernel/runtime without the table of
  course crates; `cargo update --workspace --offline` prunes the lock file), and prepared with
  `rust-async-kernel prepare-runtime` into target/bench-course-runtime/prepared; both are
  reused while their inputs do not change. Its kernels get `RUST_ASYNC_RUNTIME_SOURCE` and
  `RUST_ASYNC_RUNTIME_DIR`; its template is checked to hold no axum;
* `evcxr`: when `evcxr_jupyter` is on PATH or a kernelspec named `rust` exists
  (`--evcxr-kernel NAME` picks another); its cells get
  `:dep tokio = { version = "1", features = ["full"] }` first. Never installed from here.

Rows:

* floor: `rustc` compiling a trivial dylib (median of 5), timed in this run; times are also
  shown as a multiple of it, memory as a multiple of that rustc's peak RSS;
* kernel start -> kernel_info reply; kernel start -> first `.await` cell done, cold (no
  spare); kernel start -> a first cell that uses reqwest and serde_json done (another cold
  kernel; not for `before`, `no course crates` and evcxr, which do not have them); the first `let` cell, sent as soon as that cell replied; in another cold kernel,
  the first `let` cell 20 s after its first cell (a student reading); kernel start -> first
  `.await` cell with a warmed-up spare standing by (`RUST_ASYNC_SPARE=1`; for `before`, its
  default);
* warm `.await` cell and warm cell with a new `let` (a new variable each run), medians of the
  same count (20, `--quick` 10) after warm-up;
* first completion of a cold kernel (`tokio::time::sle` with the cursor at its end, sent after
  the first `let`: it starts rust-analyzer), time to its reply and whether `sleep` is among
  its matches (not yet, normally: rust-analyzer is starting); Tab again every 0.5 s: time
  from the first Tab to a reply that offers `sleep`; then a second completion
  (`std::time::Dur`), time to its reply;
* `:dep regex = "1"` (in cargo's cache, compiled by no kernel yet) in a fresh kernel, then in
  a second fresh kernel, both with a new empty sccache directory of their own
  (`SCCACHE_DIR`): the second finds its crates compiled by the first;
* a 20-cell lesson notebook under `jupyter nbconvert --to notebook --execute`;
* lesson 02 (notebooks/02-event-loop.ipynb) run with nbclient in this process (cell timeout
  120 s, no spare), wall time, and peak memory;
* 10 000 spawned tasks each sleeping 100 ms, in one cell, timed inside the cell, against one
  100 ms sleep timed the same way;
* peak memory by process kind for lesson 02, for the kernel of the cell rows above, and under
  nbconvert. The RSS of every process of the kernel's tree is sampled every 50 ms (psutil),
  each process put in a kind: the kernel process (argv holds the connection file; evcxr:
  `evcxr_jupyter`, with rust-analyzer inside it), the user-code process (the kernel binary
  without arguments; evcxr: its `evcxr_jupyter` child), rust-analyzer (`... analysis DIR`),
  compilers (cargo, rustc, the binary as rustc wrapper, cc/collect2/as and the linkers: ld,
  mold, lld, rust-lld), spare, other. A peak is the peak over time of the sum sampled at
  once ("kernel + user": kernel and user process together; "whole session": every kind),
  never a sum of separate peaks. A
  child caught between fork and exec is left out: it shares its parent's pages;
* a class (rust-async only; `--class-size N`, default 4, 0 leaves it out): N students at
  once, as on one JupyterHub server, each kernel told its pod's limit
  (`RUST_ASYNC_MEMORY_LIMIT=1G`) and spares off: each runs a first `.await` cell, a `let`
  right after it (timed), then lesson 02's code cells. The slowest first `let`, each
  student's peaks (the largest shown), the spares' peak and all the students' kernels
  together.

Targets, printed with PASS/MISS for rust-async (and, marked "no course", for the prototype):
lesson 02 kernel + user process <= 250 MiB, lesson 02 whole session <= 824 MiB; cold first
`.await` cell <= 2 s and the `let` right after it <= 1.5 s; warm cell with a new `let` no
slower than `before` (when measured); the second kernel's `:dep` <= 3 s; the first Tab's
reply <= 1 s (JupyterLab drops a later one) and a Tab offering `sleep` within 10 s of it;
a first cell with reqwest and serde_json <= 2 s; in the class, per student the same memory
targets as lesson 02's, the first `let` <= 1.5 s and no spare; warm `.await` cell <= 2x the floor and no slower than evcxr; 10 000 tasks <= 1.5x
one sleep. The benchmark only reports: it exits 0 even on MISS, non-zero only when the
rust-async kernel itself fails (does not start, a cell errors, the kernel dies, nbconvert or
the lesson fails); the other columns' failures show as "error" in their column.

Waiting spares are stopped at the start and at the end. The machine may be shared: the load
average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import socket
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
KERNEL_NAME = "rust-async"
BEFORE_KERNEL_NAME = "rust-async-before"

# The kernelspec scripts/setup installed into this environment wins over any other
# `rust-async` one (as in tests/ and scripts/run-notebooks). Child processes inherit it.
import jupyter_support  # noqa: E402  (beside this script)

jupyter_support.use_checkouts_kernelspec()

import nbformat  # noqa: E402  (after JUPYTER_PATH, like the jupyter imports)
import psutil  # noqa: E402
from jupyter_client import KernelManager  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

EVCXR_DEP = ':dep tokio = { version = "1", features = ["full"] }'

MIB = 2**20

# Targets
FIRST_CELL_TARGET_S = 2.0
FIRST_LET_TARGET_S = 1.5
FIRST_COMPLETION_TARGET_S = 10.0
FIRST_TAB_REPLY_TARGET_S = 1.0
KERNEL_USER_TARGET_BYTES = 250 * MIB
WHOLE_SESSION_TARGET_BYTES = 824 * MIB
WARM_TARGET_X_FLOOR = 2.0
TASKS_TARGET_X_SLEEP = 1.5

SAMPLE_EVERY_S = 0.05
# The cold measures: this kernel neither claims nor leaves a spare kernel.
NO_SPARE = {"RUST_ASYNC_SPARE": "0"}
WITH_SPARE = {"RUST_ASYNC_SPARE": "1"}
FIRST_CELL_TIMEOUT = 300  # a kernel whose runtime library is not prepared builds it first
CELL_TIMEOUT = 120
COMPLETION_TIMEOUT = 120

AWAIT_CELL = "tokio::time::sleep(std::time::Duration::from_millis(1)).await;"
FIRST_LET_CELL = "let first_variable = 5;"
READING_BEFORE_FIRST_LET_S = 20.0
COMPLETIONS = [("tokio::time::sle", "sleep"), ("std::time::Dur", "Duration")]

LESSON_02 = REPO / "notebooks" / "02-event-loop.ipynb"
LESSON_CELL_TIMEOUT = 120

# The class rows: students at once on one server, each kernel told its pod's memory limit (a
# pod's cgroup would tell it the same: kernel/engine/src/memory_limit.rs), spares off.
CLASS_SIZE = 4
POD_LIMIT = {"RUST_ASYNC_MEMORY_LIMIT": "1G", **NO_SPARE}

# The prototype runtime (--without-course-crates): the real one without its course crates.
RUNTIME_SOURCE = REPO / "kernel" / "runtime"
PROTOTYPE_ROOT = REPO / "target" / "bench-course-runtime"
PROTOTYPE_SOURCE = PROTOTYPE_ROOT / "source"
PROTOTYPE_PREPARED = PROTOTYPE_ROOT / "prepared"
# The runtime library's table of course crates (kernel/runtime/Cargo.toml).
COURSE_TABLE = "[target.'cfg(all())'.dependencies]"

# A first cell with the course crates, in a fresh kernel.
COURSE_CELL = ("let client = reqwest::Client::new();\n"
               "let value: serde_json::Value = serde_json::json!({\"model\": \"mock\", \"n\": 2});\n"
               "value[\"n\"].clone()")
# A crate cargo has in its cache (the kernel's own build uses it) that no kernel compiled.
DEP_CELL = ':dep regex = "1"'
DEP_SECOND_TARGET_S = 3.0

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


class RowFailed(Exception):
    """One measure failed (a completion that never came), the kernel goes on."""


# --------------------------------------------------------------------------------------------
# Memory sampling, by process kind

KINDS = ["kernel", "user", "rust-analyzer", "compilers", "spare", "other"]
COMPILER_NAMES = {
    "cargo", "rustc", "cc", "gcc", "c++", "g++", "clang", "clang++", "cc1", "collect2", "ld",
    "ld.bfd", "ld.gold", "ld.lld", "lld", "rust-lld", "mold", "as", "lto-wrapper", "lto1",
}
KERNEL_BINARY_NAME = "rust-async-kernel"


def process_kind(name: str, argv: list[str], parent_name: str) -> str:
    """The kind of one process of a kernel's tree (see the module docstring)."""
    program = os.path.basename(argv[0]) if argv else name
    if name in COMPILER_NAMES or program in COMPILER_NAMES or program.startswith("ld.") \
            or program.endswith("-lld"):
        return "compilers"
    if program == KERNEL_BINARY_NAME or name == KERNEL_BINARY_NAME[:15]:
        if len(argv) <= 1:
            return "user"
        first = argv[1]
        if first == "analysis":
            return "rust-analyzer"
        if first == "spare":
            return "spare"
        if os.path.basename(first).startswith("rustc"):
            return "compilers"  # the binary as cargo's RUSTC_WRAPPER
        if "--connection-file" in argv or argv[-1].endswith(".json"):
            return "kernel"
        return "other"
    if program.startswith("evcxr") or name.startswith("evcxr"):
        # evcxr_jupyter runs its user code in a child of the same binary
        return "user" if parent_name.startswith("evcxr") else "kernel"
    if program == "rust-analyzer" or name == "rust-analyzer":
        return "rust-analyzer"
    return "other"


@dataclass
class MemoryPeaks:
    """Peaks over time of RSS sums sampled at once (bytes)."""

    whole: int = 0
    kernel_user: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)  # each kind's own sum, its peak
    seen: set[str] = field(default_factory=set)  # kinds that ever had a process
    at_whole_peak: list[tuple[str, str, int]] = field(default_factory=list)  # kind, name, RSS
    samples: int = 0

    def kind(self, kind: str) -> int:
        return self.by_kind.get(kind, 0)

    def breakdown(self) -> str:
        """The processes at the whole session's peak, in MiB."""
        return ", ".join(f"{kind}:{name} {rss / MIB:.0f}"
                         for kind, name, rss in self.at_whole_peak[:8])

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {self.kind(k) / MIB:.0f}" for k in KINDS if k in self.seen)
        return (f"whole {self.whole / MIB:.0f} MiB, kernel + user {self.kernel_user / MIB:.0f} "
                f"MiB; peak by kind: {kinds} MiB; at the whole peak: {self.breakdown()} MiB "
                f"({self.samples} samples)")

    def as_json(self) -> dict[str, Any]:
        return {
            "whole_mib": self.whole / MIB,
            "kernel_user_mib": self.kernel_user / MIB,
            "by_kind_mib": {k: v / MIB for k, v in self.by_kind.items()},
            "kinds_seen": sorted(self.seen),
            "at_whole_peak_mib": [(k, n, r / MIB) for k, n, r in self.at_whole_peak],
            "samples": self.samples,
        }


class MemorySampler:
    """Samples every 50 ms the RSS of every process of a kernel's tree, by kind; keeps peaks.

    `roots()` gives the pids whose trees count (re-evaluated at each sample, so a kernel started
    after the sampler, or one launched by nbconvert or nbclient, is picked up); `include_root`
    says whether the roots themselves count (nbconvert's own Python process should not).
    """

    def __init__(self, roots: Callable[[], list[int]], include_root: bool = True) -> None:
        self._roots = roots
        self._include_root = include_root
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> list[tuple[str, str, int]]:
        """(kind, process name, RSS) of every process counted now."""
        parts: list[tuple[str, str, int]] = []
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
            names: dict[int, str] = {}
            for proc in procs:
                try:
                    exes[proc.pid] = proc.exe()
                    names[proc.pid] = proc.name()
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
                    argv = proc.cmdline()
                    parent_name = names.get(proc.ppid(), "")
                except psutil.Error:
                    continue
                parts.append((process_kind(name, argv, parent_name), name, rss))
        return parts

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
        parts = self.sample()
        peaks = self.peaks
        peaks.samples += 1
        sums: dict[str, int] = {}
        for kind, _, rss in parts:
            sums[kind] = sums.get(kind, 0) + rss
        for kind, total in sums.items():
            peaks.seen.add(kind)
            peaks.by_kind[kind] = max(peaks.by_kind.get(kind, 0), total)
        peaks.kernel_user = max(peaks.kernel_user, sums.get("kernel", 0) + sums.get("user", 0))
        whole = sum(sums.values())
        if whole > peaks.whole:
            peaks.whole = whole
            peaks.at_whole_peak = sorted(parts, key=lambda p: -p[2])

    def _run(self) -> None:
        while True:
            self._take()
            if self._stop.wait(SAMPLE_EVERY_S):
                self._take()  # one last sample, so a short life is still seen
                return


# --------------------------------------------------------------------------------------------
# Driving a kernel


@dataclass
class CellResult:
    elapsed: float  # send -> execute_reply, seconds
    status: str
    stdout: str
    error: str
    result: str = ""  # text/plain of the execute_result


class Kernel:
    """One kernel, started through jupyter_client, its stderr kept in a file."""

    def __init__(self, name: str, log_dir: Path, label: str) -> None:
        self.name = name
        self.label = label
        self.log_path = log_dir / f"{file_name(label)}-kernel-stderr.log"
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
        msg_id = self.kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        start = time.monotonic()
        arrivals: dict[str, float] = {}
        try:
            reply, msgs = jupyter_support.collect(self.kc, msg_id, timeout, arrivals=arrivals,
                                                  alive=self.km.is_alive)
        except jupyter_support.KernelDied:
            raise KernelFailed(f"{self.label}: the kernel died") from None
        except TimeoutError as timeout_error:
            raise KernelFailed(f"{self.label}: {timeout_error}; cell:\n{code}") from None
        elapsed = arrivals[reply["header"]["msg_id"]] - start
        stdout: list[str] = []
        errors: list[str] = []
        result: list[str] = []
        for msg in msgs:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                stdout.append(content["text"])
            elif kind == "execute_result":
                result.append(content.get("data", {}).get("text/plain", ""))
            elif kind == "error":
                errors.append(f"{content.get('ename')}: {content.get('evalue')}")
        content = reply["content"]
        status = content.get("status", "?")
        if status == "error" and not errors:
            errors.append(f"{content.get('ename')}: {content.get('evalue')}")
        return CellResult(elapsed, status, "".join(stdout), "\n".join(errors), "".join(result))

    def complete(self, code: str, timeout: float = COMPLETION_TIMEOUT) -> tuple[float, list[str]]:
        """complete_request with the cursor at the end: (seconds to the reply, matches)."""
        kc = self.kc
        msg_id = kc.complete(code, len(code))
        start = time.perf_counter()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RowFailed(f"no complete_reply within {timeout:.0f} s for {code!r}")
            if not self.km.is_alive():
                raise KernelFailed(f"{self.label}: the kernel died")
            try:
                msg = kc.get_shell_msg(timeout=min(left, 1.0))
            except Exception:  # queue.Empty
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                elapsed = time.perf_counter() - start
                content = msg["content"]
                if content.get("status") != "ok":
                    raise RowFailed(f"complete_reply for {code!r}: status "
                                    f"{content.get('status')}: {content.get('evalue', '')}")
                return elapsed, list(content.get("matches", []))

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
        return file_tail(self.log_path, lines)


def file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")


def file_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
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
# Formatting


def fmt_s(v: float | None) -> str:
    return "—" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")


def fmt_ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} ms"


def fmt_mib(v: float | None) -> str:
    return "—" if v is None else f"{v / MIB:.0f} MiB"


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


# --------------------------------------------------------------------------------------------
# Columns and rows


@dataclass
class Column:
    """One kernel's measurements (a key missing from `values`: not measured)."""

    label: str
    kernel_name: str
    family: str  # "rust-async", "before", "prototype" or "evcxr"
    env: dict[str, str] = field(default_factory=dict)  # for every kernel of this column
    binary: str | None = None  # the rust-async-kernel binary (spare commands)
    values: dict[str, Any] = field(default_factory=dict)  # row key -> value
    failed: set[str] = field(default_factory=set)  # row keys shown as "error"
    details: dict[str, Any] = field(default_factory=dict)  # runs, breakdowns: JSON only
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def evcxr(self) -> bool:
        return self.family == "evcxr"

    def kernel_env(self, extra: dict[str, str]) -> dict[str, str] | None:
        """The environment its kernels get on top of this process's (evcxr: none)."""
        return None if self.evcxr else {**self.env, **extra}

    def set(self, key: str, value: Any) -> None:
        assert key in ROW_KEYS, key
        self.values[key] = value
        self.failed.discard(key)

    def get(self, key: str) -> Any:
        return None if key in self.failed else self.values.get(key)

    def fail(self, key: str, why: str) -> None:
        assert key in ROW_KEYS, key
        self.failed.add(key)
        self.notes.append(f"{self.label}: {why}")

    def record_memory(self, prefix: str, peaks: MemoryPeaks) -> None:
        """The `{prefix}_peak_*` rows that exist, and the whole picture in the JSON."""
        kinds = {"kernel_user": peaks.kernel_user, "compilers": peaks.kind("compilers"),
                 "rust_analyzer": peaks.kind("rust-analyzer"), "whole": peaks.whole}
        for kind, value in kinds.items():
            key = f"{prefix}_peak_{kind}_mib"
            if key in ROW_KEYS and peaks.samples:
                self.set(key, value)
        self.details[f"{prefix}_memory"] = peaks.as_json()


@dataclass
class Report:
    """What the rows' labels, targets and checks need."""

    floor_s: float
    floor_rss: int
    floor_runs: int
    warm_n: int
    task_repeats: int
    columns: list[Column]
    class_size: int = CLASS_SIZE

    def column(self, family: str) -> Column | None:
        return next((c for c in self.columns if c.family == family), None)

    @property
    def label_args(self) -> dict[str, Any]:
        return {"floor_runs": self.floor_runs, "warm_n": self.warm_n,
                "task_repeats": self.task_repeats, "class_size": self.class_size,
                "floor2": fmt_s(WARM_TARGET_X_FLOOR * self.floor_s)}


Check = Callable[[Any, Column, Report], "tuple[bool | None, str]"]


@dataclass(frozen=True)
class Row:
    """One measure: a line of the table and a field of each kernel in the JSON."""

    key: str  # JSON field; its suffix is the unit (_s, _ms, _mib, ...)
    label: str  # formatted with Report.label_args
    unit: str  # "s", "ms", "mib" (stored in bytes), "analysis_mib", "ratio", "bool"
    group: str  # the measure that sets it (a failed measure marks its rows "error")
    target: str = ""  # formatted with Report.label_args
    check: Check | None = None  # rust-async and the prototype only


def at_most(limit: float, show: Callable[[float], str]) -> Check:
    def check(v: Any, c: Column, r: Report) -> tuple[bool | None, str]:
        if v is None:
            return None, ""
        return v <= limit, "" if v <= limit else f"{show(v)} > {show(limit)}"
    return check


def warm_await_check(v: Any, c: Column, r: Report) -> tuple[bool | None, str]:
    if v is None:
        return None, ""
    why = []
    if v > WARM_TARGET_X_FLOOR * r.floor_s:
        why.append(f"{fmt_s(v)} > {WARM_TARGET_X_FLOOR:g}× floor "
                   f"({fmt_s(WARM_TARGET_X_FLOOR * r.floor_s)})")
    ev = r.column("evcxr")
    if ev is not None and ev.get("warm_await_s") is not None and v > ev.get("warm_await_s"):
        why.append(f"slower than evcxr ({fmt_s(ev.get('warm_await_s'))})")
    return not why, "; ".join(why)


def no_slower_than_before(v: Any, c: Column, r: Report) -> tuple[bool | None, str]:
    before = r.column("before")
    b = None if before is None else before.get("warm_let_s")
    if v is None or b is None:
        return None, "" if v is None else "before not measured"
    return v <= b, "" if v <= b else f"{fmt_s(v)} > before's {fmt_s(b)}"


ROWS: list[Row] = [
    Row("floor_s", "floor: rustc trivial dylib (median of {floor_runs})", "s", "floor"),
    Row("kernel_ready_s", "kernel start → kernel_info reply", "s", "cells"),
    Row("first_await_cold_s", "kernel start → first .await cell done (cold, no spare)", "s",
        "cells", f"≤ {FIRST_CELL_TARGET_S:g} s", at_most(FIRST_CELL_TARGET_S, fmt_s)),
    Row("first_let_right_after_s", "first let cell, sent right after that first cell", "s",
        "cells", f"≤ {FIRST_LET_TARGET_S:g} s", at_most(FIRST_LET_TARGET_S, fmt_s)),
    Row("first_course_cell_s", "kernel start → first cell with reqwest + serde_json done",
        "s", "course", f"≤ {FIRST_CELL_TARGET_S:g} s", at_most(FIRST_CELL_TARGET_S, fmt_s)),
    Row("first_let_after_reading_s",
        f"first let cell, {READING_BEFORE_FIRST_LET_S:g} s after the first cell (cold)", "s",
        "reading"),
    Row("first_await_spare_s", "kernel start → first .await cell done (spare ready)", "s",
        "spare"),
    Row("warm_await_s", "warm .await cell (median of {warm_n})", "s", "cells",
        "≤ 2× floor ({floor2}), ≤ evcxr", warm_await_check),
    Row("warm_let_s", "warm cell with a new let (median of {warm_n})", "s", "cells",
        "≤ before", no_slower_than_before),
    Row("first_completion_s", "first Tab (tokio::time::sle), cold kernel: its reply", "s",
        "cells", f"≤ {FIRST_TAB_REPLY_TARGET_S:g} s (JupyterLab waits 1 s)",
        at_most(FIRST_TAB_REPLY_TARGET_S, fmt_s)),
    Row("first_completion_found_sleep", "  → 'sleep' among its matches", "bool", "cells"),
    Row("completion_offers_sleep_s", "  → until a Tab offers 'sleep' (Tab every 0.5 s)",
        "s", "cells", f"≤ {FIRST_COMPLETION_TARGET_S:g} s",
        at_most(FIRST_COMPLETION_TARGET_S, fmt_s)),
    Row("second_completion_s", "second completion (std::time::Dur)", "s", "cells"),
    Row("dep_first_kernel_s", f"{DEP_CELL}, a fresh kernel, empty sccache", "s", "dep"),
    Row("dep_second_kernel_s", f"{DEP_CELL}, a second fresh kernel, same sccache", "s", "dep",
        f"≤ {DEP_SECOND_TARGET_S:g} s", at_most(DEP_SECOND_TARGET_S, fmt_s)),
    Row("nbconvert_lesson_s", f"{len(LESSON_CELLS)}-cell lesson notebook, nbconvert --execute",
        "s", "nbconvert"),
    Row("lesson02_s", "lesson 02 under nbclient (kernel start to shutdown)", "s", "lesson02"),
    Row("lesson02_peak_kernel_user_mib", "  lesson 02 peak: kernel + user process", "mib",
        "lesson02", f"≤ {KERNEL_USER_TARGET_BYTES // MIB} MiB",
        at_most(KERNEL_USER_TARGET_BYTES, fmt_mib)),
    Row("lesson02_peak_compilers_mib", "  lesson 02 peak: compilers", "mib", "lesson02"),
    Row("lesson02_peak_rust_analyzer_mib", "  lesson 02 peak: rust-analyzer process",
        "analysis_mib", "lesson02"),
    Row("lesson02_peak_whole_mib", "  lesson 02 peak: whole session", "mib", "lesson02",
        f"≤ {WHOLE_SESSION_TARGET_BYTES // MIB} MiB",
        at_most(WHOLE_SESSION_TARGET_BYTES, fmt_mib)),
    Row("one_sleep_ms", f"one {TASK_SLEEP_MS} ms sleep, in-cell (median of {{task_repeats}})",
        "ms", "cells"),
    Row("tasks_ms", f"{N_TASKS:,} tasks × {TASK_SLEEP_MS} ms sleep".replace(",", " ")
        + ", in-cell (median of {task_repeats})", "ms", "cells"),
    Row("tasks_vs_one_sleep", "  → tasks ÷ one sleep", "ratio", "cells",
        f"≤ {TASKS_TARGET_X_SLEEP:g}× one sleep",
        at_most(TASKS_TARGET_X_SLEEP, lambda v: f"{v:.2f}×")),
    Row("cells_peak_kernel_user_mib", "cell rows' kernel, peak: kernel + user", "mib",
        "cells"),
    Row("cells_peak_compilers_mib", "  peak: compilers", "mib", "cells"),
    Row("cells_peak_rust_analyzer_mib", "  peak: rust-analyzer process", "analysis_mib",
        "cells"),
    Row("cells_peak_whole_mib", "  peak: whole session", "mib", "cells"),
    Row("nbconvert_peak_kernel_user_mib", "nbconvert peak: kernel + user", "mib", "nbconvert"),
    Row("nbconvert_peak_whole_mib", "nbconvert peak: whole session", "mib", "nbconvert"),
    Row("class_s", "class: {class_size} students at once in 1 GiB pods, spares off: lesson 02, wall",
        "s", "class"),
    Row("class_first_let_s", "  first let right after the first cell, slowest student", "s", "class",
        f"≤ {FIRST_LET_TARGET_S:g} s", at_most(FIRST_LET_TARGET_S, fmt_s)),
    Row("class_peak_kernel_user_mib", "  peak per student: kernel + user (largest)", "mib", "class",
        f"≤ {KERNEL_USER_TARGET_BYTES // MIB} MiB", at_most(KERNEL_USER_TARGET_BYTES, fmt_mib)),
    Row("class_peak_compilers_mib", "  peak per student: compilers (largest)", "mib", "class"),
    Row("class_peak_rust_analyzer_mib", "  peak per student: rust-analyzer process", "analysis_mib",
        "class"),
    Row("class_peak_whole_mib", "  peak per student: whole session (largest)", "mib", "class",
        f"≤ {WHOLE_SESSION_TARGET_BYTES // MIB} MiB", at_most(WHOLE_SESSION_TARGET_BYTES, fmt_mib)),
    Row("class_peak_spare_mib", "  peak of spare kernels, all students", "mib", "class", "0 (off in pods)",
        at_most(0, fmt_mib)),
    Row("class_peak_all_mib", "  peak of all students' kernels together", "mib", "class"),
]
ROW_KEYS = {row.key for row in ROWS}
assert len(ROW_KEYS) == len(ROWS)


# --------------------------------------------------------------------------------------------
# The measurements


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


def spare_command(binary: str, *args: str, env: dict[str, str] | None = None) -> None:
    """`rust-async-kernel spare ...` with the given binary (and environment on top of ours)."""
    proc = subprocess.run([binary, "spare", *args], capture_output=True, text=True,
                          timeout=300, env=None if env is None else {**os.environ, **env})
    if proc.returncode != 0:
        raise KernelFailed(f"rust-async-kernel spare {' '.join(args)}: {proc.stderr.strip()}")


def measure_cells(column: Column, logs: Path, *, warm_runs: int, warm_up: int,
                  task_repeats: int, log: Callable[[str], None]) -> None:
    """One cold kernel: start, first .await cell, a let right after, two completions (they
    start rust-analyzer), warm .await and let cells, the 10 000 tasks; its memory by kind."""
    kernel = Kernel(column.kernel_name, logs, column.label)
    sampler = MemorySampler(kernel.pid)
    try:
        with sampler:
            start = time.perf_counter()
            kernel.start(env=column.kernel_env(NO_SPARE))
            column.set("kernel_ready_s", time.perf_counter() - start)
            if column.evcxr:
                ok(kernel, kernel.execute(EVCXR_DEP, timeout=FIRST_CELL_TIMEOUT), EVCXR_DEP)
            ok(kernel, kernel.execute(AWAIT_CELL, timeout=FIRST_CELL_TIMEOUT), AWAIT_CELL)
            column.set("first_await_cold_s", time.perf_counter() - start)
            first_let = ok(kernel, kernel.execute(FIRST_LET_CELL), FIRST_LET_CELL).elapsed
            column.set("first_let_right_after_s", first_let)
            log(f"{column.label}: kernel ready in {column.get('kernel_ready_s'):.2f} s, first "
                f"await cell done at {column.get('first_await_cold_s'):.2f} s, first let right "
                f"after it {first_let:.3f} s")

            measure_completions(column, kernel, log)

            for _ in range(warm_up):
                ok(kernel, kernel.execute(AWAIT_CELL), AWAIT_CELL)
            runs = [ok(kernel, kernel.execute(AWAIT_CELL), AWAIT_CELL).elapsed
                    for _ in range(warm_runs)]
            column.set("warm_await_s", statistics.median(runs))
            column.details["warm_await_runs_s"] = runs
            log(f"{column.label}: warm await cell, median of {warm_runs}: "
                f"{statistics.median(runs):.3f} s (min {min(runs):.3f}, max {max(runs):.3f})")

            lets = [f"let warm_let_{i} = vec![1u8, 2, 3];" for i in range(warm_up + warm_runs)]
            for code in lets[:warm_up]:
                ok(kernel, kernel.execute(code), code)
            runs = [ok(kernel, kernel.execute(code), code).elapsed for code in lets[warm_up:]]
            column.set("warm_let_s", statistics.median(runs))
            column.details["warm_let_runs_s"] = runs
            log(f"{column.label}: warm cell with a new let, median of {warm_runs}: "
                f"{statistics.median(runs):.3f} s (min {min(runs):.3f}, max {max(runs):.3f})")

            one_sleep = []
            tasks = []
            for _ in range(task_repeats):
                one_sleep.append(bench_ms(kernel, ONE_SLEEP_CELL))
                tasks.append(bench_ms(kernel, TASKS_CELL))
            column.set("one_sleep_ms", statistics.median(one_sleep))
            column.set("tasks_ms", statistics.median(tasks))
            column.set("tasks_vs_one_sleep",
                       statistics.median(tasks) / statistics.median(one_sleep))
            column.details["one_sleep_runs_ms"] = one_sleep
            column.details["tasks_runs_ms"] = tasks
            log(f"{column.label}: one {TASK_SLEEP_MS} ms sleep {statistics.median(one_sleep):.1f} "
                f"ms, {N_TASKS} tasks {statistics.median(tasks):.1f} ms (median of {task_repeats})")

    except KernelFailed as e:
        tail = kernel.log_tail()
        raise KernelFailed(f"{e}\n--- kernel stderr (last lines) ---\n{tail}" if tail else str(e))
    finally:
        kernel.stop()
        column.record_memory("cells", sampler.peaks)
        if sampler.peaks.samples:
            log(f"{column.label}: cells' kernel memory: {sampler.peaks.summary()}")
    if "not prepared" in kernel.log_tail(200):
        column.notes.append(
            f"{column.label}: the kernel found its runtime library not prepared and built it "
            "during the first cell (run scripts/setup; someone may be rebuilding it)"
        )


def offers(matches: list[str], wanted: str) -> bool:
    return any(m == wanted or m.startswith(wanted + "(") for m in matches)


def measure_completions(column: Column, kernel: Kernel, log: Callable[[str], None]) -> None:
    """Tab in a kernel that never completed before; when its matches lack `sleep`, Tab again
    every half second (as a student would) until they have it; then another completion. A
    completion that fails or lacks its match fails its row, not the run."""
    (first_code, first_wanted), (second_code, second_wanted) = COMPLETIONS
    start = time.perf_counter()
    try:
        elapsed, matches = kernel.complete(first_code)
    except RowFailed as e:
        column.fail("first_completion_s", str(e))
        log(f"{column.label}: completion of {first_code!r} failed: {e}")
        return
    hit = offers(matches, first_wanted)
    column.set("first_completion_s", elapsed)
    column.set("first_completion_found_sleep", hit)
    column.details[f"completion {first_code}"] = matches[:30]
    log(f"{column.label}: first completion of {first_code!r}: {elapsed:.3f} s, {len(matches)} "
        f"matches, {first_wanted!r} {'among them' if hit else 'NOT among them'}")
    tries = 1
    while not hit and time.perf_counter() - start < COMPLETION_TIMEOUT:
        time.sleep(0.5)
        try:
            _, matches = kernel.complete(first_code)
        except RowFailed as e:
            column.fail("completion_offers_sleep_s", str(e))
            matches = []
            break
        tries += 1
        hit = offers(matches, first_wanted)
    if not hit and "completion_offers_sleep_s" not in column.failed:
        column.fail("completion_offers_sleep_s", f"no completion of {first_code!r} offered "
                    f"{first_wanted!r} within {COMPLETION_TIMEOUT} s ({tries} tries; the "
                    f"last matches: {matches[:10]})")
    else:
        column.set("completion_offers_sleep_s", time.perf_counter() - start)
    if hit and tries > 1:
        log(f"{column.label}: {first_wanted!r} offered {time.perf_counter() - start:.2f} s after "
            f"the first Tab (try {tries})")
    try:
        elapsed, matches = kernel.complete(second_code)
    except RowFailed as e:
        column.fail("second_completion_s", str(e))
        return
    column.set("second_completion_s", elapsed)
    column.details[f"completion {second_code}"] = matches[:30]
    if not offers(matches, second_wanted):
        column.notes.append(f"{column.label}: the second completion ({second_code!r}) did not "
                            f"offer {second_wanted!r}: {matches[:10]}")
    log(f"{column.label}: second completion of {second_code!r}: {elapsed:.3f} s, "
        f"{len(matches)} matches")


def measure_course_cell(column: Column, logs: Path, log: Callable[[str], None]) -> None:
    """Kernel start -> a first cell with reqwest and serde_json done (no `:dep`)."""
    kernel = Kernel(column.kernel_name, logs, f"{column.label}-course")
    try:
        start = time.perf_counter()
        kernel.start(env=column.kernel_env(NO_SPARE))
        result = ok(kernel, kernel.execute(COURSE_CELL, timeout=FIRST_CELL_TIMEOUT), COURSE_CELL)
        column.set("first_course_cell_s", time.perf_counter() - start)
        log(f"{column.label}: first cell with reqwest and serde_json done at "
            f"{column.get('first_course_cell_s'):.2f} s ({result.result.strip()})")
    finally:
        kernel.stop()


def measure_dep(column: Column, work: Path, logs: Path, log: Callable[[str], None]) -> None:
    """`:dep regex` in two fresh kernels in turn, sharing a new empty sccache directory, with
    an sccache server of their own (a server reads SCCACHE_DIR when it starts: one already
    running would bring its cache)."""
    cache = work / f"sccache-{file_name(column.label)}"
    cache.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"SCCACHE_DIR": str(cache), "SCCACHE_SERVER_PORT": str(port)}
    try:
        for turn, key in enumerate(["dep_first_kernel_s", "dep_second_kernel_s"], start=1):
            kernel = Kernel(column.kernel_name, logs, f"{column.label}-dep{turn}")
            try:
                kernel.start(env=column.kernel_env({**NO_SPARE, **env}))
                ok(kernel, kernel.execute(AWAIT_CELL, timeout=FIRST_CELL_TIMEOUT), AWAIT_CELL)
                result = ok(kernel, kernel.execute(DEP_CELL, timeout=600), DEP_CELL)
                column.set(key, result.elapsed)
                log(f"{column.label}: {DEP_CELL} in fresh kernel {turn}: {result.elapsed:.2f} s")
            finally:
                kernel.stop()
    finally:
        sccache = KernelSpecManager().get_kernel_spec(column.kernel_name).env.get("RUST_ASYNC_SCCACHE")
        if sccache:
            subprocess.run([sccache, "--stop-server"], env={**os.environ, **env}, capture_output=True, timeout=60)


def measure_first_let_after_reading(column: Column, logs: Path,
                                    log: Callable[[str], None]) -> None:
    """A cold kernel's first let cell, sent a while after its first cell."""
    kernel = Kernel(column.kernel_name, logs, f"{column.label}-reading")
    try:
        kernel.start(env=column.kernel_env(NO_SPARE))
        ok(kernel, kernel.execute(AWAIT_CELL, timeout=FIRST_CELL_TIMEOUT), AWAIT_CELL)
        time.sleep(READING_BEFORE_FIRST_LET_S)
        elapsed = ok(kernel, kernel.execute(FIRST_LET_CELL), FIRST_LET_CELL).elapsed
        column.set("first_let_after_reading_s", elapsed)
        log(f"{column.label}: first let cell {READING_BEFORE_FIRST_LET_S:g} s after the first "
            f"cell: {elapsed:.3f} s")
    finally:
        kernel.stop()


def measure_spare_start(column: Column, logs: Path, log: Callable[[str], None]) -> None:
    """Kernel start -> first await cell when a warmed-up spare kernel stands by. The spare is
    started with the column's environment, so that its key matches the kernel's."""
    assert column.binary is not None
    env = column.kernel_env(WITH_SPARE)
    spare_command(column.binary, "--stop")
    spare_command(column.binary, env=env)
    spare_command(column.binary, "--wait", env=env)
    kernel = Kernel(column.kernel_name, logs, f"{column.label}-spare")
    try:
        start = time.perf_counter()
        kernel.start(env=env)
        ok(kernel, kernel.execute(AWAIT_CELL, timeout=FIRST_CELL_TIMEOUT), AWAIT_CELL)
        column.set("first_await_spare_s", time.perf_counter() - start)
        log(f"{column.label}: with a spare standing by, first await cell done at "
            f"{column.get('first_await_spare_s'):.2f} s")
    finally:
        kernel.stop()
        spare_command(column.binary, "--stop")


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


def measure_nbconvert(column: Column, work: Path, log: Callable[[str], None]) -> None:
    d = work / f"nb-{file_name(column.label)}"
    d.mkdir()
    nb = d / "lesson.ipynb"
    lesson_notebook(nb, evcxr=column.evcxr, kernel_name=column.kernel_name)
    jupyter = VENV / "bin" / "jupyter"
    cmd = [str(jupyter), "nbconvert", "--to", "notebook", "--execute",
           f"--ExecutePreprocessor.kernel_name={column.kernel_name}",
           "--ExecutePreprocessor.timeout=300", "--ExecutePreprocessor.startup_timeout=120",
           "--output-dir", str(d / "out"), str(nb)]
    start = time.perf_counter()
    env = {**os.environ, **(column.kernel_env(NO_SPARE) or {})}
    proc = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    # nbconvert's kernel and its user process: the descendants of nbconvert, not nbconvert
    sampler = MemorySampler(lambda: [proc.pid], include_root=False)
    with sampler:
        out, _ = proc.communicate()
    elapsed = time.perf_counter() - start
    column.record_memory("nbconvert", sampler.peaks)
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
    column.set("nbconvert_lesson_s", elapsed)
    # nbclient records when each cell started and got its reply
    cell_s = [cell_seconds(c) for c in ran]
    column.details["nbconvert_cells_s"] = [t for t in cell_s if t is not None]
    detail = ""
    if all(t is not None for t in cell_s) and len(ran) > 1:
        detail = (f" (cells: first {cell_s[0]:.2f} s, others median "
                  f"{statistics.median(cell_s[1:]):.2f} s, max {max(cell_s[1:]):.2f} s)")
    log(f"{column.label}: {len(LESSON_CELLS)}-cell notebook under nbconvert: "
        f"{elapsed:.2f} s{detail}; memory: {sampler.peaks.summary()}")


def cell_seconds(cell: dict[str, Any]) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def measure_lesson(column: Column, logs: Path, log: Callable[[str], None]) -> None:
    """Lesson 02 as it is, run by nbclient in this process on the column's kernelspec (the
    notebook's own kernelspec name is kept), no spare; wall time and memory by kind."""
    nb = nbformat.read(LESSON_02, as_version=4)
    if column.evcxr:
        nb.cells.insert(0, nbformat.v4.new_code_cell(EVCXR_DEP))
    client = NotebookClient(
        nb, kernel_name=column.kernel_name, timeout=LESSON_CELL_TIMEOUT, startup_timeout=120,
        resources={"metadata": {"path": str(LESSON_02.parent)}},
    )

    def roots() -> list[int]:
        pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        return [pid] if pid else []

    log_path = logs / f"{file_name(column.label)}-lesson02-kernel-stderr.log"
    env = {**os.environ, **(column.kernel_env(NO_SPARE) or {})}
    sampler = MemorySampler(roots)
    start = time.perf_counter()
    with open(log_path, "wb") as kernel_log, sampler:
        try:
            client.execute(env=env, stdout=kernel_log, stderr=kernel_log)
        except Exception as e:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
            text = str(e).strip().splitlines()
            tail = file_tail(log_path)
            raise KernelFailed(
                f"{column.label}: lesson 02 under nbclient failed after "
                f"{time.perf_counter() - start:.1f} s: {type(e).__name__}: "
                + "\n".join(text[-20:])
                + (f"\n--- kernel stderr (last lines) ---\n{tail}" if tail else "")
            ) from None
    elapsed = time.perf_counter() - start
    column.set("lesson02_s", elapsed)
    column.record_memory("lesson02", sampler.peaks)
    ran = "ran" if "rust-analyzer" in sampler.peaks.seen else "never ran"
    log(f"{column.label}: lesson 02 under nbclient: {elapsed:.2f} s; rust-analyzer's process "
        f"{ran}; memory: {sampler.peaks.summary()}")


def measure_class(column: Column, logs: Path, log: Callable[[str], None], students: int) -> None:
    """`students` students at once, as on one JupyterHub server: each starts a kernel (told
    its pod's limit, spares off), runs a first `.await` cell, a `let` right after it (timed),
    then lesson 02's code cells in order. Peaks per student (its kernel's tree) and of all of
    them together, sampled as for the other rows."""
    code_cells = [c.source for c in nbformat.read(LESSON_02, as_version=4).cells if c.cell_type == "code"]
    kernels = [Kernel(column.kernel_name, logs, f"{column.label}-class-{i + 1}") for i in range(students)]
    samplers = [MemorySampler(kernel.pid) for kernel in kernels]
    together = MemorySampler(lambda: [pid for kernel in kernels for pid in kernel.pid()])
    first_lets: list[float] = []
    failures: list[str] = []

    def student(kernel: Kernel) -> None:
        try:
            kernel.start(env=column.kernel_env(POD_LIMIT))
            ok(kernel, kernel.execute(AWAIT_CELL, FIRST_CELL_TIMEOUT), AWAIT_CELL)
            first_lets.append(ok(kernel, kernel.execute(FIRST_LET_CELL), FIRST_LET_CELL).elapsed)
            for code in code_cells:
                ok(kernel, kernel.execute(code, LESSON_CELL_TIMEOUT), code)
        except Exception as e:  # KernelFailed, or the kernel did not start
            failures.append(f"{kernel.label}: {e}")

    start = time.perf_counter()
    threads = [threading.Thread(target=student, args=(kernel,)) for kernel in kernels]
    try:
        with together:
            for sampler in samplers:
                sampler.__enter__()
            try:
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            finally:
                for sampler in samplers:
                    sampler.__exit__(None, None, None)
    finally:
        for kernel in kernels:
            kernel.stop()
    elapsed = time.perf_counter() - start
    if failures:
        raise KernelFailed(f"class of {students}: " + "\n".join(failures))
    column.set("class_s", elapsed)
    column.set("class_first_let_s", max(first_lets))
    peaks = [sampler.peaks for sampler in samplers]
    column.set("class_peak_kernel_user_mib", max(p.kernel_user for p in peaks))
    column.set("class_peak_compilers_mib", max(p.kind("compilers") for p in peaks))
    column.set("class_peak_rust_analyzer_mib", max(p.kind("rust-analyzer") for p in peaks))
    column.set("class_peak_whole_mib", max(p.whole for p in peaks))
    column.set("class_peak_spare_mib", together.peaks.kind("spare"))
    column.set("class_peak_all_mib", together.peaks.whole)
    column.details["class_memory"] = {"students": [p.as_json() for p in peaks], "together": together.peaks.as_json(),
                                      "first_lets_s": first_lets}
    log(f"{column.label}: class of {students}: {elapsed:.1f} s; first lets "
        f"{', '.join(f'{t:.2f}' for t in first_lets)} s; all together: {together.peaks.summary()}")


# --------------------------------------------------------------------------------------------
# The other columns: before, the prototype runtime, evcxr


def find_before(explicit: str | None) -> tuple[str | None, str]:
    """(kernelspec name of the kernel as it was before, or None; a sentence)."""
    specs = KernelSpecManager().find_kernel_specs()
    name = explicit or BEFORE_KERNEL_NAME
    if name in specs:
        return name, f"before: kernelspec {name!r} ({specs[name]})"
    how = ("--before-kernel" if explicit else
           f"the default; install the kernel as it was before under that name, or pass "
           f"--before-kernel NAME")
    return None, f"before: no kernelspec named {name!r} ({how}); the before column is skipped"


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


def kernel_binary(name: str) -> str:
    return KernelSpecManager().get_kernel_spec(name).argv[0]


def lock_packages(lock: Path) -> int:
    return lock.read_text().count("[[package]]")


def runtime_files() -> list[Path]:
    """The real runtime crate's files (kernel/runtime), build output left out."""
    return sorted(f for f in RUNTIME_SOURCE.rglob("*")
                  if f.is_file() and "target" not in f.relative_to(RUNTIME_SOURCE).parts)


def prototype_inputs() -> str:
    """What the prototype's source is made from: the real runtime's files."""
    digest = hashlib.sha256()
    for f in runtime_files():
        digest.update(str(f.relative_to(RUNTIME_SOURCE)).encode() + b"\0" + f.read_bytes())
    digest.update(COURSE_TABLE.encode())
    return digest.hexdigest()


def without_course_table(manifest: str) -> tuple[str, list[str]]:
    """`manifest` without its table of course crates, and the names of those crates."""
    kept, removed, in_table = [], [], False
    for line in manifest.splitlines(keepends=True):
        if line.startswith("["):
            in_table = line.strip() == COURSE_TABLE
        if not in_table:
            kept.append(line)
        elif "=" in line and not line.lstrip().startswith("#"):
            removed.append(line.split("=", 1)[0].strip())
    return "".join(kept), removed


def make_prototype_source(log: Callable[[str], None]) -> dict[str, Any]:
    """target/bench-course-runtime/source: kernel/runtime without its course crates. Made
    again only when its inputs changed. Raises RuntimeError with what went wrong."""
    stamp = PROTOTYPE_ROOT / "source-inputs.json"
    inputs = prototype_inputs()
    try:
        made = json.loads(stamp.read_text())
    except (OSError, ValueError):
        made = {}
    if made.get("inputs") == inputs and (PROTOTYPE_SOURCE / "Cargo.lock").is_file():
        log(f"no course crates: source reused ({PROTOTYPE_SOURCE}; lock file "
            f"{made['packages_before']} → {made['packages_after']} packages)")
        return made
    stamp.unlink(missing_ok=True)
    if PROTOTYPE_SOURCE.exists():
        shutil.rmtree(PROTOTYPE_SOURCE)
    shutil.copytree(RUNTIME_SOURCE, PROTOTYPE_SOURCE, ignore=shutil.ignore_patterns("target"))
    manifest = PROTOTYPE_SOURCE / "Cargo.toml"
    text, removed = without_course_table(manifest.read_text())
    if not removed:
        raise RuntimeError(f"no course crates in {RUNTIME_SOURCE / 'Cargo.toml'} ({COURSE_TABLE})")
    manifest.write_text(text)
    before = lock_packages(PROTOTYPE_SOURCE / "Cargo.lock")
    # --workspace --offline: the lock file loses what only the course crates needed; tokio's
    # pins stay as they are.
    proc = subprocess.run(["cargo", "update", "--workspace", "--offline", "--manifest-path", str(manifest)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("cargo update of the prototype runtime failed:\n"
                           + "\n".join(proc.stderr.splitlines()[-15:]))
    after = lock_packages(PROTOTYPE_SOURCE / "Cargo.lock")
    made = {"inputs": inputs, "removed": removed, "packages_before": before, "packages_after": after}
    stamp.write_text(json.dumps(made) + "\n")
    log(f"no course crates: source made in {PROTOTYPE_SOURCE} ({', '.join(removed)} left out); "
        f"its lock file lost {before - after} packages ({before} → {after})")
    return made


def prepare_prototype(binary: str, log: Callable[[str], None]
                      ) -> tuple[dict[str, str] | None, str, dict[str, Any]]:
    """(the prototype column's environment or None, a sentence, details for the JSON)."""
    if b"RUST_ASYNC_RUNTIME_SOURCE" not in Path(binary).read_bytes():
        return None, (f"no course crates: {binary} does not know RUST_ASYNC_RUNTIME_SOURCE; the "
                      "column is skipped"), {}
    PROTOTYPE_ROOT.mkdir(parents=True, exist_ok=True)
    try:
        made = make_prototype_source(log)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return None, f"no course crates: skipped: {e}", {}
    env = {"RUST_ASYNC_RUNTIME_SOURCE": str(PROTOTYPE_SOURCE),
           "RUST_ASYNC_RUNTIME_DIR": str(PROTOTYPE_PREPARED)}
    prepare_log = PROTOTYPE_ROOT / "prepare-runtime.log"
    start = time.perf_counter()
    with open(prepare_log, "wb") as out:
        proc = subprocess.run([binary, "prepare-runtime"], stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, **env}, timeout=3600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        return None, (f"no course crates: `{binary} prepare-runtime` failed (exit "
                      f"{proc.returncode}, {elapsed:.0f} s); the column is skipped; last lines of "
                      f"{prepare_log}:\n{file_tail(prepare_log)}"), {}
    log(f"no course crates: prepare-runtime {elapsed:.1f} s ({file_tail(prepare_log, 1)})")
    if any((PROTOTYPE_PREPARED / "template").rglob("libaxum-*")):
        return None, ("no course crates: the prepared template has axum: the kernel did not build "
                      "RUST_ASYNC_RUNTIME_SOURCE; the column is skipped"), {}
    details = {key: made[key] for key in ["removed", "packages_before", "packages_after"]}
    details["prepare_runtime_s"] = elapsed
    return env, (f"no course crates: prototype runtime in {PROTOTYPE_SOURCE}, "
                 f"{made['packages_before'] - made['packages_after']} packages fewer in its lock "
                 f"file ({made['packages_before']} → {made['packages_after']})"), details


def template_size(prepared: Path) -> int | None:
    template = prepared / "template"
    if not template.is_dir():
        return None
    proc = subprocess.run(["du", "-s", "--block-size=1", str(template)], capture_output=True,
                          text=True)
    try:
        return int(proc.stdout.split()[0])
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# Report: the table and the JSON, both from ROWS


def value_text(row: Row, column: Column) -> str:
    if row.key in column.failed:
        return "error"
    v = column.values.get(row.key)
    if v is None:
        return "—"
    if row.unit == "s":
        return fmt_s(v)
    if row.unit == "ms":
        return fmt_ms(v)
    if row.unit == "mib":
        return fmt_mib(v)
    if row.unit == "analysis_mib":
        if v:
            return fmt_mib(v)
        # before and evcxr run rust-analyzer inside the kernel process (counted there)
        return "— (in kernel)" if column.family in ("before", "evcxr") else "— (never ran)"
    if row.unit == "ratio":
        return f"{v:.2f}×"
    if row.unit == "bool":
        return "yes" if v else "no"
    return str(v)


def numeric(row: Row, column: Column) -> float | None:
    v = column.get(row.key)
    if row.unit in ("s", "ms", "mib", "analysis_mib", "ratio") and isinstance(v, (int, float)) \
            and v:
        return float(v)
    return None


def times_floor(row: Row, column: Column, report: Report) -> str:
    v = numeric(row, column)
    if v is None or row.unit == "ratio":
        return ""
    base = report.floor_rss if row.unit in ("mib", "analysis_mib") else report.floor_s
    if row.unit == "ms":
        v /= 1000
    return f"{v / base:.1f}×" if base else ""


def over_before(row: Row, column: Column, before: Column | None) -> str:
    if before is None:
        return ""
    v, b = numeric(row, column), numeric(row, before)
    return "" if v is None or b is None else f"{v / b:.2f}"


def verdict(row: Row, column: Column, report: Report) -> tuple[bool | None, str]:
    if row.check is None:
        return None, ""
    if row.key in column.failed:
        return False, "this measure failed"
    return row.check(column.get(row.key), column, report)


def judged(report: Report) -> list[Column]:
    """The columns whose targets are printed: rust-async, and the prototype."""
    return [c for c in report.columns if c.family in ("rust-async", "prototype") and not c.error]


def render_table(report: Report) -> tuple[str, dict[str, Any]]:
    before = report.column("before")
    args = report.label_args
    headers = ["measure"]
    for c in report.columns:
        headers += [c.label, "×floor"]
        if c.family == "rust-async" and before is not None:
            headers.append("÷ before")
    headers.append("target")
    judges = judged(report)
    headers += [("no course result" if c.family == "prototype" else "result") for c in judges]

    verdicts: dict[str, dict[str, Any]] = {c.label: {} for c in judges}
    misses: list[str] = []
    body: list[list[str]] = []
    for row in ROWS:
        line = [row.label.format(**args)]
        for c in report.columns:
            line += [value_text(row, c), times_floor(row, c, report)]
            if c.family == "rust-async" and before is not None:
                line.append(over_before(row, c, before))
        line.append(row.target.format(**args))
        for c in judges:
            passed, why = verdict(row, c, report)
            if row.check is not None:
                verdicts[c.label][row.key] = {"pass": passed, **({"why": why} if why else {})}
            line.append("" if row.check is None else
                        "—" if passed is None else ("PASS" if passed else "MISS"))
            if passed is False:
                misses.append(f"MISS {c.label}: {row.label.format(**args).strip()}: {why}")
        body.append(line)

    widths = [max(len(r[i]) for r in [headers, *body]) for i in range(len(headers))]
    n_values = len(headers) - 2 - len(judges)

    def render(r: list[str]) -> str:
        cells = [c.rjust(w) if 1 <= i <= n_values else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        return "  ".join(cells).rstrip()

    lines = [render(headers), "  ".join("-" * w for w in widths)]
    lines += [render(r) for r in body]
    lines.append(f"(×floor: time ÷ the floor's time; memory ÷ the floor rustc's peak RSS, "
                 f"{fmt_mib(report.floor_rss)}"
                 + ("; ÷ before: rust-async ÷ before" if before is not None else "") + ")")
    lines += misses
    return "\n".join(lines), verdicts


def json_value(row: Row, column: Column) -> Any:
    v = column.get(row.key)
    return v / MIB if v is not None and row.unit in ("mib", "analysis_mib") else v


# --------------------------------------------------------------------------------------------


def run_column(column: Column, work: Path, logs: Path, *, warm_n: int, warm_up: int,
               task_repeats: int, class_size: int, log: Callable[[str], None]) -> str | None:
    """Every measure of one column. A failed measure marks its rows "error" and the column
    goes on; for rust-async it ends the run (returned: what failed)."""
    steps: list[tuple[str, Callable[[], None]]] = [
        ("cells", lambda: measure_cells(column, logs, warm_runs=warm_n, warm_up=warm_up,
                                        task_repeats=task_repeats, log=log)),
        ("nbconvert", lambda: measure_nbconvert(column, work, log)),
        ("lesson02", lambda: measure_lesson(column, logs, log)),
    ]
    if column.family == "rust-async":
        steps += [("course", lambda: measure_course_cell(column, logs, log)),
                  ("dep", lambda: measure_dep(column, work, logs, log))]
        if class_size:
            steps.append(("class", lambda: measure_class(column, logs, log, class_size)))
    if column.family == "before":
        steps.append(("dep", lambda: measure_dep(column, work, logs, log)))
    if not column.evcxr:
        steps += [("reading", lambda: measure_first_let_after_reading(column, logs, log)),
                  ("spare", lambda: measure_spare_start(column, logs, log))]
    for group, step in steps:
        try:
            step()
        except KernelFailed as e:
            for row in ROWS:
                if row.group == group and row.key not in column.values:
                    column.failed.add(row.key)
            column.notes.append(f"{column.label}: {group}: {str(e).splitlines()[0]}")
            if column.family == "rust-async":
                column.error = str(e)
                return str(e)
            log(f"{column.label} failed ({group}); its column shows 'error' there:\n{e}")
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--no-evcxr", action="store_true", help="do not measure evcxr")
    parser.add_argument("--evcxr-kernel", metavar="NAME",
                        help="kernelspec of evcxr (default: 'rust', or evcxr_jupyter on PATH)")
    parser.add_argument("--before-kernel", metavar="NAME",
                        help=f"kernelspec of the kernel as it was before (default: "
                             f"{BEFORE_KERNEL_NAME!r} when installed; else no before column)")
    parser.add_argument("--without-course-crates", action="store_true",
                        help="also measure the kernel with a prototype runtime library without "
                             "the course crates (made and prepared under "
                             "target/bench-course-runtime; the first time takes a minute)")
    parser.add_argument("--logs", metavar="DIR",
                        help="keep the kernels' stderr logs in DIR (default: thrown away)")
    parser.add_argument("--class-size", type=int, default=CLASS_SIZE, metavar="N",
                        help=f"students at once in the class rows (default: {CLASS_SIZE}; 0: no class rows)")
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
    binary = kernel_binary(KERNEL_NAME)

    sentences: list[str] = []
    prototype_json: dict[str, Any] = {"measured": False}
    with tempfile.TemporaryDirectory(prefix="rust-async-bench-") as tmp:
        work = Path(tmp)
        logs = Path(args.logs).resolve() if args.logs else work
        logs.mkdir(parents=True, exist_ok=True)

        ra = Column("rust-async", KERNEL_NAME, "rust-async", binary=binary)
        columns = [ra]
        before_name, before_what = find_before(args.before_kernel)
        sentences.append(before_what)
        if before_name is not None:
            columns.append(Column("before", before_name, "before",
                                  binary=kernel_binary(before_name)))
        if args.without_course_crates:
            env, what, details = prepare_prototype(binary, log)
            sentences.append(what)
            prototype_json.update(details, sentence=what, measured=env is not None)
            if env is not None:
                columns.append(Column("no course crates", KERNEL_NAME, "prototype", env=env,
                                      binary=binary))
        else:
            sentences.append("no course crates: not measured (--without-course-crates measures it)")
        if args.no_evcxr:
            evcxr_name, evcxr_what = None, "evcxr: skipped (--no-evcxr)"
        else:
            evcxr_name, evcxr_what = find_evcxr(args.evcxr_kernel, work)
        sentences.append(evcxr_what)
        if evcxr_name is not None:
            columns.append(Column("evcxr", evcxr_name, "evcxr"))
        for sentence in sentences:
            print(sentence, flush=True)

        real_prepared = Path(os.environ.get("RUST_ASYNC_RUNTIME_DIR")
                             or REPO / "target" / "rust-async-runtime")
        sizes = {"real": template_size(real_prepared)}
        if prototype_json["measured"]:
            sizes["no course crates"] = template_size(PROTOTYPE_PREPARED)
        prototype_json["template_bytes"] = sizes
        sizes_line = "prepared runtime template (du): " + ", ".join(
            f"{name} {fmt_mib(size)}" for name, size in sizes.items())
        sentences.append(sizes_line)
        print(sizes_line, flush=True)

        floor_s, floor_all, floor_rss = measure_floor(floor_runs, work)
        log(f"floor: rustc trivial dylib, median {floor_s:.3f} s of "
            f"{', '.join(f'{t:.3f}' for t in floor_all)}; peak RSS {fmt_mib(floor_rss)}")
        for c in columns:
            c.set("floor_s", floor_s)

        binaries = sorted({c.binary for c in columns if c.binary})
        failure: str | None = None
        try:
            for b in binaries:
                spare_command(b, "--stop")
        except KernelFailed as e:
            failure = ra.error = str(e)
        for column in columns:
            if failure is not None:
                if column is not ra:
                    column.error = "not measured: the rust-async kernel failed"
                    column.notes.append(f"{column.label}: {column.error}")
                continue
            failure = run_column(column, work, logs, warm_n=warm_n, warm_up=warm_up,
                                 task_repeats=task_repeats, class_size=args.class_size, log=log)
        for b in binaries:
            try:
                spare_command(b, "--stop")
            except KernelFailed as e:
                log(f"stopping spares: {e}")
        if args.logs:
            sentences.append(f"kernel stderr logs: {logs}")

    report = Report(floor_s, floor_rss, floor_runs, warm_n, task_repeats, columns, args.class_size)
    text, verdicts = render_table(report)
    print()
    print(text)
    for sentence in sentences:
        print(sentence)
    for c in columns:
        for note in c.notes:
            print(f"note: {note}")
    load_end = os.getloadavg()
    total = time.perf_counter() - run_start
    print(f"load average at end:   {load()}")
    print(f"whole run: {total:.1f} s (shared machine: the numbers are noisy)")

    if args.json:
        args_fmt = report.label_args
        result = {
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "load_average_start": list(load_start),
            "load_average_end": list(load_end),
            "whole_run_s": total,
            "floor": {"rustc_dylib_s": floor_s, "runs_s": floor_all,
                      "peak_rss_mib": floor_rss / MIB},
            "rows": [{"key": r.key, "label": r.label.format(**args_fmt).strip(),
                      "target": r.target.format(**args_fmt)} for r in ROWS],
            "verdicts": verdicts,
            "sentences": sentences,
            "prototype": prototype_json,
            "kernels": {
                c.label: {
                    "kernelspec": c.kernel_name,
                    "family": c.family,
                    "env": c.env,
                    **{row.key: json_value(row, c) for row in ROWS},
                    "failed_rows": sorted(c.failed),
                    "details": c.details,
                    "error": c.error,
                    "notes": c.notes,
                }
                for c in columns
            },
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
