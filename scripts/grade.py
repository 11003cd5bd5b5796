"""Grades a folder of student notebooks against the exercises' source notebooks.

Usage (through the wrapper, which uses .venv's Python):

    scripts/grade SUBMISSIONS_DIR [--assignment NAME] [--timeout S] [--jobs N] [--out DIR]

Layout of SUBMISSIONS_DIR, one folder per student:

    SUBMISSIONS_DIR/<student>/<notebook>.ipynb
    SUBMISSIONS_DIR/<student>/<assignment>/<notebook>.ipynb      (also accepted, with --assignment)

Folders whose name starts with "." or "_" are not students. Each notebook is matched to a source
notebook (with solutions and hidden tests) in notebooks/exercises/source/<assignment>/, by file
name, or else by the nbgrader cell ids it shares with one.

For each submission the grader builds the notebook it runs from the student's notebook and the
source notebook, matching cells by their nbgrader `grade_id`:

* every read-only cell of the source (autograder test cells, given code) replaces the student's
  version, so the hidden tests are in and edited tests count for nothing; the source's points
  count, not the submission's;
* the student's answer cells are kept as they are;
* a source cell the student deleted is put back where it was (an answer cell as its stub);
* cells the student added are run too, but never graded.

It then runs that notebook in a fresh kernel of its own (nbclient), cell by cell, with a time
limit per cell. A cell over the limit is interrupted (nbclient's interrupt_on_timeout) and
recorded as a timeout; the notebook goes on. If the kernel dies, or does not answer even after
the interrupt, it is started again, the non-test cells before that point are re-run, and the
notebook goes on. A test cell scores its points if it runs without an error; an error, a
timeout or a crash scores 0.

Results go to SUBMISSIONS_DIR (or --out): grades.csv (one row per test cell and a TOTAL row per
submission) and grades.json (the same, with error messages and notes). One line of progress is
printed per submission.

Grading in shards (one machine or pod per shard, such as a Kubernetes Indexed Job):

    scripts/grade SUBMISSIONS_DIR --shard 2/5 --out results/shard-2     # one of five slices
    scripts/grade --merge results/all results/shard-1 ... results/shard-5

A shard grades every notebook of the students it is given: the students, sorted by name, dealt
out in turn (the first to shard 1, the second to shard 2, ...), so each shard needs only the
same SUBMISSIONS_DIR and its number. `--merge` checks that the shards are all there, once, from
one grading (same count, sources and limits), and writes the grades.csv and grades.json that
one unsharded run would have written.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import csv
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO / "notebooks" / "exercises" / "source"

# The kernelspec scripts/setup installed into this Python's environment wins over any other one
# of the same name. Set before jupyter_client is imported.
import jupyter_support  # noqa: E402  (beside this script)

jupyter_support.use_checkouts_kernelspec()
# Graded kernels never download (a `:dep` in a submission only finds crates already in this
# machine's cargo cache): the same result on every run, whatever the network does. The grading
# kernels inherit this process's environment.
os.environ.setdefault("RUST_ASYNC_OFFLINE", "1")

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import DeadKernelError  # noqa: E402
from nbformat import NotebookNode  # noqa: E402

# Run first in each kernel, with the start-up time limit: a Rust kernel's first cell also builds
# what later cells reuse. Other languages: a no-op, just to wait for the kernel.
WARM_UP_CODE = {"rust": "let _grader_warm_up = 0;", "python": "pass"}
MAX_KERNEL_STARTS = 4  # per submission: the first kernel and three restarts
CSV_FIELDS = ["student", "notebook", "test", "status", "error", "points", "max_points"]
REINSERTED_NOTE = "// (put back by scripts/grade: this cell was missing from the submission)\n"


# --------------------------------------------------------------------------------------------
# nbgrader cell metadata


def nbgrader_meta(cell: NotebookNode) -> dict[str, Any]:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def grade_id(cell: NotebookNode) -> str | None:
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) and gid else None


def is_test(cell: NotebookNode) -> bool:
    """An autograder test cell: graded, not an answer, code."""
    meta = nbgrader_meta(cell)
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def is_locked(cell: NotebookNode) -> bool:
    """A cell students must not change: tests and read-only (given) cells."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("locked")) or is_test(cell)


def points_of(cell: NotebookNode) -> float:
    try:
        return float(nbgrader_meta(cell).get("points", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


# --------------------------------------------------------------------------------------------
# Source notebooks


class Clearer:
    """The student version of a source cell, by nbgrader's own preprocessors and the course's
    nbgrader_config.py (its solution stub and delimiters)."""

    def __init__(self, course_dir: Path) -> None:
        from traitlets.config import Config
        from traitlets.config.loader import PyFileConfigLoader

        config = Config()
        if (course_dir / "nbgrader_config.py").is_file():
            config = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
        from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

        # enforce_metadata off: a single cell is cleared out of its notebook.
        self.solutions = ClearSolutions(config=config, enforce_metadata=False)
        self.hidden = ClearHiddenTests(config=config, enforce_metadata=False)

    def student_version(self, cell: NotebookNode, language: str) -> str:
        """The source text students were given for `cell`."""
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "", "display_name": "", "language": language}
        nb.cells = [copy.deepcopy(cell)]
        nb, _ = self.solutions.preprocess(nb, {})
        nb, _ = self.hidden.preprocess(nb, {})
        return nb.cells[0].source


@dataclass
class Source:
    assignment: str
    name: str  # notebook name, without .ipynb
    path: Path
    nb: NotebookNode
    clearer: Clearer

    @property
    def language(self) -> str:
        return self.nb.metadata.get("kernelspec", {}).get("language") or "rust"

    @property
    def kernel_name(self) -> str | None:
        return self.nb.metadata.get("kernelspec", {}).get("name")

    @property
    def ids(self) -> set[str]:
        return {gid for c in self.nb.cells if (gid := grade_id(c))}

    @property
    def tests(self) -> list[NotebookNode]:
        return [c for c in self.nb.cells if is_test(c) and grade_id(c)]

    @property
    def max_points(self) -> float:
        return sum(points_of(c) for c in self.tests)


def load_sources(source_dir: Path, assignment: str | None) -> list[Source]:
    if not source_dir.is_dir():
        raise SystemExit(f"scripts/grade: no source directory {source_dir}")
    dirs = [source_dir / assignment] if assignment else sorted(p for p in source_dir.iterdir() if p.is_dir())
    if assignment and not dirs[0].is_dir():
        known = ", ".join(sorted(p.name for p in source_dir.iterdir() if p.is_dir())) or "none"
        raise SystemExit(f"scripts/grade: no assignment {assignment!r} in {source_dir} (there: {known})")
    clearer = Clearer(source_dir.parent)
    sources = []
    for d in dirs:
        for path in sorted(d.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            sources.append(Source(d.name, path.stem, path, nb, clearer))
    if not sources:
        raise SystemExit(f"scripts/grade: no source notebooks under {dirs[0] if assignment else source_dir}")
    return sources


# --------------------------------------------------------------------------------------------
# Building the notebook to run


@dataclass
class Prepared:
    nb: NotebookNode
    tests: dict[int, NotebookNode]  # cell index in nb -> source test cell
    names: dict[int, str]  # cell index -> grade_id (or "cell N" for the student's own cells)
    reinserted: set[str] = field(default_factory=set)
    edited: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def prepare(source: Source, student: NotebookNode) -> Prepared:
    """The notebook to run: the student's cells, with the source's read-only cells (tests with
    hidden tests, given code) in place of theirs and deleted cells put back."""
    src_by_id = {gid: c for c in source.nb.cells if (gid := grade_id(c))}
    notes: list[str] = []
    edited: set[str] = set()
    seen: set[str] = set()
    cells: list[NotebookNode] = []
    student_cells = list(student.get("cells", []))
    # Of cells sharing a grade_id, the last one counts (as in nbgrader's DeduplicateIds).
    last = {gid: i for i, c in enumerate(student_cells) if (gid := grade_id(c))}
    for index, cell in enumerate(student_cells):
        gid = grade_id(cell)
        src = src_by_id.get(gid) if gid else None
        if src is not None and last[gid] == index:
            seen.add(gid)
            new = copy.deepcopy(src)
            if is_locked(src):
                given = source.clearer.student_version(src, source.language)
                if cell.get("source", "").strip() != given.strip() or cell.cell_type != src.cell_type:
                    edited.add(gid)
                    notes.append(f"{gid}: read-only cell was edited; graded with the original")
                if is_test(src) and points_of(cell) != points_of(src):
                    notes.append(f"{gid}: points changed to {fmt(points_of(cell))}; counted as {fmt(points_of(src))}")
            else:  # an answer: the student's text, in the source's cell type
                new.source = cell.get("source", "")
            cells.append(new)
        else:
            new = copy.deepcopy(cell)
            new.get("metadata", {}).pop("nbgrader", None)  # an unknown or duplicated id: not graded
            if src is not None:
                notes.append(f"{gid}: another cell with this id was run but not graded")
            cells.append(new)

    reinserted: set[str] = set()
    order = [gid for c in source.nb.cells if (gid := grade_id(c))]
    for pos, gid in enumerate(order):
        if gid in seen:
            continue
        src = src_by_id[gid]
        new = copy.deepcopy(src)
        if not is_locked(src):
            new.source = source.clearer.student_version(src, source.language)
        if new.cell_type == "code":
            new.source = REINSERTED_NOTE + new.source
        before = next((g for g in reversed(order[:pos]) if g in seen), None)
        at = 0
        if before is not None:
            at = 1 + next(i for i, c in enumerate(cells) if grade_id(c) == before)
        cells.insert(at, new)
        seen.add(gid)
        reinserted.add(gid)
        notes.append(f"{gid}: missing from the submission; put back")

    used_ids: set[str] = set()
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cid = cell.get("id")
        if not cid or cid in used_ids:
            cell["id"] = uuid.uuid4().hex[:12]
        used_ids.add(cell["id"])

    nb = nbformat.v4.new_notebook()
    nb.metadata = copy.deepcopy(source.nb.metadata)
    nb.cells = cells
    tests = {i: src_by_id[g] for i, c in enumerate(cells) if (g := grade_id(c)) and is_test(src_by_id[g])}
    names = {i: grade_id(c) or f"cell {i + 1}" for i, c in enumerate(cells)}
    return Prepared(nb, tests, names, reinserted, edited, notes)


# --------------------------------------------------------------------------------------------
# Running it


class Stuck(Exception):
    """The kernel did not answer a cell, even after an interrupt."""


class Stopped(Exception):
    """The grader is stopping (Ctrl-C)."""


@dataclass
class CellRun:
    status: str  # passed | failed | timeout | crashed | not-run
    error: str | None = None
    message: str | None = None
    seconds: float = 0.0
    fatal: bool = False  # the kernel must be started again


class Client(NotebookClient):
    """nbclient with a record of timed-out cells and a way out when interrupting does not help."""

    def __init__(self, *args: Any, grace: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.grace = grace
        self.interrupted_at: dict[int, float] = {}
        self.last_reply: dict[str, Any] | None = None
        self.on_cell_executed = self._remember_reply

    def _remember_reply(self, **kwargs: Any) -> None:
        self.last_reply = kwargs.get("execute_reply")

    async def _async_handle_timeout(self, timeout: int, cell: NotebookNode | None = None) -> None | dict[str, Any]:
        key = id(cell)
        first = self.interrupted_at.get(key)
        if first is None:
            self.interrupted_at[key] = time.monotonic()
            # interrupt_on_timeout=True: interrupts the kernel and goes on waiting for its reply.
            return await super()._async_handle_timeout(timeout, cell)
        if time.monotonic() - first > self.grace:
            raise Stuck()
        await asyncio.sleep(0.5)
        return None


def first_line(text: str | None, limit: int = 300) -> str | None:
    if not text:
        return None
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


async def run_cell(client: Client, cell: NotebookNode, index: int | None, hard_limit: float) -> CellRun:
    """Runs one cell: `index` is its place in client.nb, None for a cell that is not part of it
    (the warm-up, a re-run after a crash), which then runs in a scratch notebook."""
    client.last_reply = None
    start = time.monotonic()
    notebook = client.nb
    if index is None:
        client.nb = nbformat.v4.new_notebook(cells=[cell], metadata=notebook.metadata)
    try:
        await asyncio.wait_for(client.async_execute_cell(cell, index or 0, store_history=True), hard_limit)
    except DeadKernelError:
        return CellRun("crashed", "KernelDied", "the kernel died while running this cell",
                       time.monotonic() - start, fatal=True)
    except (Stuck, asyncio.TimeoutError):
        return CellRun("timeout", "Timeout", "no answer from the kernel, even after an interrupt",
                       time.monotonic() - start, fatal=True)
    finally:
        client.nb = notebook
        timed_out = client.interrupted_at.pop(id(cell), None) is not None
    seconds = time.monotonic() - start
    reply = (client.last_reply or {}).get("content", {})
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    ename = reply.get("ename") or (errors[0].get("ename") if errors else None)
    evalue = reply.get("evalue") or (errors[0].get("evalue") if errors else None)
    if timed_out:
        message = f"over the time limit; interrupted ({ename}: {first_line(evalue)})" if ename else "over the time limit; interrupted"
        return CellRun("timeout", "Timeout", message, seconds)
    if reply.get("status") == "ok" and not errors:
        return CellRun("passed", seconds=seconds)
    return CellRun("failed", ename or "Error", first_line(evalue), seconds)


async def execute(prep: Prepared, *, kernel_name: str, language: str, timeout: float,
                  startup_timeout: float, cwd: str, stop: threading.Event) -> tuple[dict[int, CellRun], int]:
    """Runs the code cells of prep.nb in order; returns their results and the number of kernel
    (re)starts."""
    nb = prep.nb
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    results: dict[int, CellRun] = {}
    pos = 0
    starts = 0
    why = "the kernel stopped working"
    while pos < len(code):
        if stop.is_set():
            raise Stopped()
        if starts == MAX_KERNEL_STARTS:
            for i in code[pos:]:
                results[i] = CellRun("not-run", "TooManyCrashes",
                                     f"not run: kernel started {starts} times ({why})")
            break
        starts += 1
        client = Client(
            nb,
            grace=max(10.0, timeout),
            timeout=int(max(1, round(timeout))),
            startup_timeout=int(startup_timeout),
            interrupt_on_timeout=True,
            allow_errors=True,
            kernel_name=kernel_name,
            record_timing=False,
            resources={"metadata": {"path": cwd}},
        )
        hard_limit = 2 * timeout + 30
        try:
            async with client.async_setup_kernel():
                # A kernel's first cell also builds what later cells reuse: it gets a time
                # limit of its own, so that every graded cell has the same one.
                if language in WARM_UP_CODE:
                    warm = nbformat.v4.new_code_cell(WARM_UP_CODE[language])
                    client.timeout = int(startup_timeout)
                    run = await run_cell(client, warm, None, startup_timeout + hard_limit)
                    client.timeout = int(max(1, round(timeout)))
                    if run.fatal or run.status != "passed":
                        why = f"its first cell: {run.error}: {run.message}"
                        continue
                if pos > 0:
                    # A new kernel after a crash: re-run the cells before this point that define
                    # things (given code and answers), not the tests, then go on.
                    for i in code[:pos]:
                        if i in prep.tests or results[i].fatal:
                            continue
                        replay = await run_cell(client, copy.deepcopy(nb.cells[i]), None, hard_limit)
                        if replay.fatal:
                            break
                while pos < len(code):
                    if stop.is_set():
                        raise Stopped()
                    i = code[pos]
                    results[i] = await run_cell(client, nb.cells[i], i, hard_limit)
                    pos += 1
                    if results[i].fatal:
                        why = f"{results[i].error} in {prep.names[i]}"
                        break
        except (Stopped, asyncio.CancelledError):
            raise
        except Exception as exc:  # the kernel did not start, or nbclient gave up on it
            why = f"{type(exc).__name__}: {first_line(str(exc))}"
    return results, starts


# --------------------------------------------------------------------------------------------
# One submission


@dataclass
class Job:
    student: str
    path: Path | None  # None: the student has no such notebook
    source: Source
    problem: str | None = None  # "missing": nothing to run


def fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def zero_tests(source: Source, status: str, error: str, message: str) -> list[dict[str, Any]]:
    return [
        {"test": grade_id(c), "status": status, "error": error, "message": message,
         "points": 0.0, "max_points": points_of(c), "seconds": 0.0, "reinserted": False, "edited": False}
        for c in source.tests
    ]


def quiet_about_nbclient(stop: threading.Event):
    """An asyncio exception handler without the noise of abandoned nbclient tasks: a cell given
    up on (dead kernel, no answer, Ctrl-C) leaves its polling tasks behind."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if stop.is_set() or isinstance(context.get("exception"), DeadKernelError):
            return
        if str(context.get("message", "")).startswith("Task was destroyed but it is pending"):
            return
        loop.default_exception_handler(context)

    return handler


def grade_job(job: Job, args: argparse.Namespace, stop: threading.Event, loops: dict) -> dict[str, Any]:
    src = job.source
    record: dict[str, Any] = {
        "student": job.student,
        "notebook": src.name,
        "assignment": src.assignment,
        "file": str(job.path) if job.path else None,
        "status": "graded",
        "points": 0.0,
        "max_points": src.max_points,
        "seconds": 0.0,
        "kernel_starts": 0,
        "tests": [],
        "other_errors": [],
        "notes": [],
    }
    started = time.monotonic()
    if job.problem == "missing":
        record.update(status="missing", tests=zero_tests(src, "not-run", "Missing", "no such notebook in the submission"))
        return record
    try:
        student = nbformat.read(job.path, as_version=4)
    except Exception as exc:  # not JSON, not a notebook, ...
        record.update(status="unreadable", tests=zero_tests(src, "not-run", "UnreadableNotebook", first_line(str(exc))))
        return record

    prep = prepare(src, student)
    record["notes"] = prep.notes
    kernel = args.kernel or src.kernel_name or "rust-async"
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        # The kernel's working directory: the student's files, then the source's (like nbgrader).
        for base in (job.path.parent, src.path.parent):
            for f in base.iterdir():
                if f.is_file() and f.suffix != ".ipynb":
                    shutil.copy2(f, Path(tmp) / f.name)
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(quiet_about_nbclient(stop))
        task = loop.create_task(execute(prep, kernel_name=kernel, language=src.language, timeout=args.timeout,
                                        startup_timeout=args.startup_timeout, cwd=tmp, stop=stop))
        loops[threading.get_ident()] = (loop, task)
        try:
            results, starts = loop.run_until_complete(task)
        finally:
            loops.pop(threading.get_ident(), None)
            loop.close()
    record["kernel_starts"] = starts

    for i, cell in enumerate(prep.nb.cells):
        run = results.get(i)
        if i in prep.tests:
            src_cell = prep.tests[i]
            gid = grade_id(src_cell)
            run = run or CellRun("not-run", "NotRun", None)
            record["tests"].append({
                "test": gid,
                "status": run.status,
                "error": run.error,
                "message": run.message,
                "points": points_of(src_cell) if run.status == "passed" else 0.0,
                "max_points": points_of(src_cell),
                "seconds": round(run.seconds, 2),
                "reinserted": gid in prep.reinserted,
                "edited": gid in prep.edited,
            })
        elif run is not None and run.status != "passed":
            record["other_errors"].append({"cell": prep.names[i], "status": run.status,
                                           "error": run.error, "message": run.message})
    record["points"] = sum(t["points"] for t in record["tests"])
    record["seconds"] = round(time.monotonic() - started, 1)
    if args.save_executed:
        out = Path(args.save_executed) / job.student / f"{src.name}.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(prep.nb, out)
    return record


# --------------------------------------------------------------------------------------------
# Finding the submissions


def read_ids(path: Path) -> set[str]:
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return set()
    return {gid for c in nb.cells if (gid := grade_id(c))}


def find_jobs(submissions: Path, sources: list[Source], assignment: str | None) -> tuple[list[Job], list[str]]:
    jobs: list[Job] = []
    warnings: list[str] = []
    students = sorted(p for p in submissions.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    matched_assignments: set[str] = set()
    per_student: dict[str, dict[tuple[str, str], Job]] = {}
    for student_dir in students:
        base = student_dir
        if assignment and (student_dir / assignment).is_dir():
            base = student_dir / assignment
        mine: dict[tuple[str, str], Job] = {}
        notebooks = sorted(p for p in base.glob("*.ipynb") if not p.name.startswith("."))
        # Exact names first, so that a renamed copy never wins over the real file.
        notebooks.sort(key=lambda p: not any(s.name == p.stem for s in sources))
        for path in notebooks:
            exact = [s for s in sources if s.name == path.stem]
            source = None
            if len(exact) == 1:
                source = exact[0]
            else:
                ids = read_ids(path)
                candidates = exact or sources
                best = max(candidates, key=lambda s: len(s.ids & ids))
                if ids and best.ids & ids:
                    source = best
            rel = path.relative_to(submissions)
            if source is None:
                warnings.append(f"{rel}: matches no source notebook; not graded")
                continue
            key = (source.assignment, source.name)
            if key in mine:
                warnings.append(f"{rel}: a second submission of {source.name}; not graded")
                continue
            mine[key] = Job(student_dir.name, path, source)
            matched_assignments.add(source.assignment)
        per_student[student_dir.name] = mine
    # A notebook of the assignment that a student did not hand in scores 0.
    known = {assignment} if assignment else (matched_assignments if len(matched_assignments) == 1 else set())
    for student, mine in per_student.items():
        for s in sources:
            if s.assignment in known and (s.assignment, s.name) not in mine:
                mine[(s.assignment, s.name)] = Job(student, None, s, problem="missing")
        jobs.extend(mine[k] for k in sorted(mine))
    return jobs, warnings


# --------------------------------------------------------------------------------------------
# Output


def write_outputs(records: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r["student"], r["assignment"], r["notebook"]))
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in records:
            for t in r["tests"]:
                w.writerow([r["student"], r["notebook"], t["test"], t["status"], t["error"] or "",
                            fmt(t["points"]), fmt(t["max_points"])])
            w.writerow([r["student"], r["notebook"], "TOTAL", r["status"], "",
                        fmt(r["points"]), fmt(r["max_points"])])
    students: dict[str, dict[str, float]] = {}
    for r in records:
        s = students.setdefault(r["student"], {"points": 0.0, "max_points": 0.0})
        s["points"] += r["points"]
        s["max_points"] += r["max_points"]
    with open(out / "grades.json", "w") as f:
        json.dump({**meta, "students": students, "submissions": records}, f, indent=2)
        f.write("\n")


def summary_line(r: dict[str, Any]) -> str:
    head = f"{r['student']}/{r['notebook']}: {fmt(r['points'])}/{fmt(r['max_points'])} points"
    if r["status"] != "graded":
        return f"{head} ({r['status']})"
    bad = [f"{t['test']} {t['status']}" + (f" ({t['error']})" if t["error"] and t["status"] == "failed" else "")
           for t in r["tests"] if t["status"] != "passed"]
    tail = f" in {r['seconds']:.0f} s"
    if r["kernel_starts"] > 1:
        tail += f", kernel restarted {r['kernel_starts'] - 1}x"
    return head + tail + ("; " + ", ".join(bad) if bad else "")


def parse_shard(text: str) -> tuple[int, int]:
    """`i/N` → (i, N), shard i of N counted from 1."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not i/N (such as 2/5)") from None
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"shard {index} of {count} does not exist: i/N needs 1 <= i <= N")
    return index, count


def students_of_shard(students: list[str], shard: tuple[int, int]) -> set[str]:
    """The students shard (i, N) grades: sorted by name, dealt out in turn."""
    index, count = shard
    return {student for position, student in enumerate(sorted(set(students))) if position % count == index - 1}


def merge_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/grade --merge",
        description="Join the results of `scripts/grade --shard i/N` runs into one grades.csv and grades.json.",
    )
    parser.add_argument("out", type=Path, help="where to write the joined grades.csv and grades.json")
    parser.add_argument("shards", type=Path, nargs="+", help="each shard's --out folder (with its grades.json)")
    args = parser.parse_args(argv)
    reports = []
    for folder in args.shards:
        path = folder / "grades.json"
        try:
            reports.append((folder, json.loads(path.read_text())))
        except (OSError, ValueError) as error:
            print(f"scripts/grade --merge: cannot read {path}: {error}", file=sys.stderr)
            return 2
    problems = []
    same = {"source", "assignment", "timeout"}
    first = reports[0][1]
    count = (first.get("shard") or {}).get("count")
    seen: dict[int, Path] = {}
    for folder, report in reports:
        shard = report.get("shard")
        if not shard:
            problems.append(f"{folder}: not a shard's result (it was graded without --shard)")
            continue
        if shard["count"] != count:
            problems.append(f"{folder}: shard {shard['index']}/{shard['count']}, but {args.shards[0]} is of {count}")
        if shard["index"] in seen:
            problems.append(f"{folder}: shard {shard['index']} again (also in {seen[shard['index']]})")
        seen[shard["index"]] = folder
        for key in sorted(same):
            if report.get(key) != first.get(key):
                problems.append(f"{folder}: {key} {report.get(key)!r}, but {args.shards[0]} has {first.get(key)!r}")
    if count and not problems:
        missing = sorted(set(range(1, count + 1)) - set(seen))
        if missing:
            problems.append(f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} missing")
    records = [record for _, report in reports for record in report["submissions"]]
    keys = [(r["student"], r["assignment"], r["notebook"]) for r in records]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    problems += [f"{student}/{notebook} is in more than one shard" for student, _, notebook in twice]
    if problems:
        for problem in problems:
            print(f"scripts/grade --merge: {problem}", file=sys.stderr)
        return 2
    meta = {key: first.get(key) for key in sorted(same)}
    meta["seconds"] = max(report.get("seconds", 0) for _, report in reports)
    meta["shards"] = count
    write_outputs(records, args.out, meta)
    total = sum(r["points"] for r in records)
    print(f"wrote {args.out / 'grades.csv'} and {args.out / 'grades.json'} "
          f"({count} shards, {len(records)} notebook(s), {fmt(total)} points in all)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--merge"]:
        return merge_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="scripts/grade",
        description="Run every student notebook in SUBMISSIONS_DIR/<student>/<notebook>.ipynb in a "
        "fresh kernel, with the source notebook's tests (hidden ones included), and write "
        "grades.csv and grades.json.",
    )
    parser.add_argument("submissions", type=Path, help="folder with one folder per student")
    parser.add_argument("--assignment", help="assignment name (a folder of --source); default: any")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder of assignments with source notebooks (default: notebooks/exercises/source)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per cell (default: 30)")
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds for a kernel to start and run its first cell (default: 180)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks graded at the same time (default: 1)")
    parser.add_argument("--out", type=Path, help="where to write grades.csv and grades.json (default: SUBMISSIONS_DIR)")
    parser.add_argument("--kernel", help="kernelspec name (default: the source notebook's)")
    parser.add_argument("--save-executed", metavar="DIR",
                        help="also write each notebook as it ran to DIR/<student>/<notebook>.ipynb")
    parser.add_argument("--shard", type=parse_shard, metavar="i/N",
                        help="grade only slice i of N (students dealt out in turn); join the slices "
                        "with `scripts/grade --merge OUT SHARD_DIR...`")
    args = parser.parse_args(argv)

    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a directory")
    sources = load_sources(args.source, args.assignment)
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    for name in {args.kernel or s.kernel_name or "rust-async" for s in sources}:
        try:
            KernelSpecManager().get_kernel_spec(name)
        except NoSuchKernel:
            print(f"scripts/grade: no kernelspec {name!r}: run scripts/setup first", file=sys.stderr)
            return 2

    jobs, warnings = find_jobs(args.submissions, sources, args.assignment)
    if args.shard:
        # Dealt over every student folder the grading saw (a student with only warnings too).
        mine = students_of_shard([j.student for j in jobs] + [Path(w).parts[0] for w in warnings], args.shard)
        jobs = [j for j in jobs if j.student in mine]
        warnings = [w for w in warnings if Path(w).parts[0] in mine]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not jobs and args.shard:
        # More shards than students: this one has nothing to do, and says so in its results.
        print(f"shard {args.shard[0]}/{args.shard[1]}: no students in this shard")
    elif not jobs:
        print(f"scripts/grade: no submissions in {args.submissions} "
              "(expected SUBMISSIONS_DIR/<student>/<notebook>.ipynb)", file=sys.stderr)
        return 2
    n_students = len({j.student for j in jobs})
    of_shard = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard else ""
    print(f"grading {len(jobs)} notebook(s) of {n_students} student(s){of_shard}, {args.jobs} at a time, "
          f"{fmt(args.timeout)} s per cell", flush=True)

    stop = threading.Event()
    loops: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Task]] = {}
    records: list[dict[str, Any]] = []
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
    try:
        futures = {pool.submit(grade_job, j, args, stop, loops): j for j in jobs}
        for done, fut in enumerate(as_completed(futures), 1):
            job = futures[fut]
            try:
                record = fut.result()
            except Exception as exc:  # a bug of the grader itself: this submission only
                record = {"student": job.student, "notebook": job.source.name, "assignment": job.source.assignment,
                          "file": str(job.path) if job.path else None, "status": "grader-error",
                          "points": 0.0, "max_points": job.source.max_points, "seconds": 0.0, "kernel_starts": 0,
                          "tests": zero_tests(job.source, "not-run", "GraderError", f"{type(exc).__name__}: {exc}"),
                          "other_errors": [], "notes": []}
            records.append(record)
            print(f"[{done}/{len(jobs)}] {summary_line(record)}", flush=True)
    except KeyboardInterrupt:
        print("scripts/grade: interrupted; stopping the kernels", file=sys.stderr)
        stop.set()
        for loop, task in list(loops.values()):
            loop.call_soon_threadsafe(task.cancel)
        pool.shutdown(wait=True, cancel_futures=True)
        return 130
    pool.shutdown(wait=True)

    out = args.out or args.submissions
    meta = {
        "source": str(args.source),
        "assignment": args.assignment,
        "timeout": args.timeout,
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.shard:
        meta["shard"] = {"index": args.shard[0], "count": args.shard[1]}
    write_outputs(records, out, meta)
    total = sum(r["points"] for r in records)
    print(f"wrote {out / 'grades.csv'} and {out / 'grades.json'} "
          f"({len(records)} notebook(s), {fmt(total)} points in all, {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
