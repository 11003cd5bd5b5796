"""Grading exercises: scripts/grade on the sample submissions, and an nbgrader round trip.

The sample submissions in fixtures/submissions/ are made from the source notebook
notebooks/exercises/source/coroutines-exercises/ by fixtures/make_submissions.py (which lists
what each sample student did). The tests run real kernels, at most two at a time: about a
minute and a half for scripts/grade on the five samples and one for the nbgrader round trip on
an idle two-core machine.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "submissions"
COURSE = REPO / "notebooks" / "exercises"
ASSIGNMENT = "coroutines-exercises"
VENV_BIN = Path(sys.executable).parent

# Per-cell limit for the samples: far above what a cell needs (1-7 s on a busy machine), low
# enough that the two endless cells cost little.
CELL_TIMEOUT = 12
# The whole of scripts/grade on the five samples, two kernels at a time.
GRADE_TIME_LIMIT = 300

TESTS = ["test_double_later", "test_await_later", "test_both_squares", "test_squares_of",
         "test_produce_consume", "test_within", "test_run_blocking"]
POINTS = dict(zip(TESTS, [1, 1, 2, 2, 2, 2, 2]))

# student -> {test: (status, error)}; every test not listed passed.
OUTCOMES: dict[str, dict[str, tuple[str, str]]] = {
    "correct": {},
    # todo!(): "not yet implemented"; the deleted setup cell (its `use` lines), test cell and
    # answer cell were put back, else these would be compile errors.
    "empty": {t: ("failed", "Panic") for t in TESTS},
    "endless": {
        "test_double_later": ("timeout", "Timeout"),  # pending().await: interrupted at the await
        "test_both_squares": ("timeout", "Timeout"),  # loop {}: the user process is restarted
    },
    "panicking": {
        "test_await_later": ("failed", "Panic"),
        "test_both_squares": ("crashed", "KernelDied"),  # kills the kernel: a new one goes on
        "test_squares_of": ("failed", "Panic"),  # a spawned task panicked: JoinError unwrapped
        "test_produce_consume": ("failed", "KernelRestarted"),  # abort() in the user process
    },
    "wrong": {
        "test_double_later": ("failed", "Panic"),  # only the hidden test checks the wait
        "test_both_squares": ("failed", "Panic"),  # one after the other: 500 ms; its edited test
                                                   # and sped-up slow_square were replaced
        "test_run_blocking": ("failed", "Panic"),  # blocked the runtime: the ticker stalled
    },
}
TOTALS = {"correct": 12, "empty": 0, "endless": 9, "panicking": 5, "wrong": 7}


def expected_table() -> list[list[str]]:
    rows = [["student", "notebook", "test", "status", "error", "points", "max_points"]]
    for student in sorted(OUTCOMES):
        for test in TESTS:
            status, error = OUTCOMES[student].get(test, ("passed", ""))
            points = POINTS[test] if status == "passed" else 0
            rows.append([student, ASSIGNMENT, test, status, error, str(points), str(POINTS[test])])
        rows.append([student, ASSIGNMENT, "TOTAL", "graded", "", str(TOTALS[student]), "12"])
    return rows


def env() -> dict[str, str]:
    return dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def test_expected_table_adds_up():
    for student, total in TOTALS.items():
        assert total == sum(p for t, p in POINTS.items() if t not in OUTCOMES[student]), student
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(OUTCOMES)


def grade(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "grade"), *args], capture_output=True, text=True, env=env(),
                          timeout=GRADE_TIME_LIMIT + 60)
    return proc, time.monotonic() - start


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory) -> tuple[subprocess.CompletedProcess, float, Path]:
    """scripts/grade on the five samples, two kernels at a time: one run for the tests below."""
    out = tmp_path_factory.mktemp("unsharded")
    proc, took = grade(str(FIXTURES), "--timeout", str(CELL_TIMEOUT), "--jobs", "2", "--out", str(out))
    return proc, took, out


def test_grade_sample_submissions(unsharded):
    proc, took, out = unsharded
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert took < GRADE_TIME_LIMIT, f"grading took {took:.0f} s\n{proc.stdout}"

    # One progress line per submission, as each one finishes.
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == len(OUTCOMES), proc.stdout
    assert {line.split("] ")[1].split("/")[0] for line in progress} == set(OUTCOMES)

    with open(out / "grades.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table == expected_table(), "\n" + "\n".join(",".join(r) for r in table)

    report = json.loads((out / "grades.json").read_text())
    subs = {s["student"]: s for s in report["submissions"]}
    assert {s: v["points"] for s, v in report["students"].items()} == TOTALS
    assert all(s["max_points"] == 12 and s["status"] == "graded" for s in subs.values())
    tests = {s: {t["test"]: t for t in v["tests"]} for s, v in subs.items()}

    # Timeouts: both kinds were interrupted, and the kernel said how.
    endless = tests["endless"]
    assert "await point" in endless["test_double_later"]["message"], endless["test_double_later"]
    assert "restarted the user-code process" in endless["test_both_squares"]["message"]
    assert subs["endless"]["kernel_starts"] == 1
    # A dead kernel: a second one finished the notebook.
    assert subs["panicking"]["kernel_starts"] == 2
    assert "three is unlucky" in tests["panicking"]["test_squares_of"]["message"]
    assert tests["empty"]["test_within"]["message"] == "not yet implemented"
    # Deleted cells put back, edited read-only cells and points restored.
    wrong, empty = tests["wrong"], tests["empty"]
    assert {t for t, v in wrong.items() if v["reinserted"]} == {"test_await_later"}
    assert {t for t, v in wrong.items() if v["edited"]} == {"test_both_squares"}
    assert {t for t, v in empty.items() if v["reinserted"]} == {"test_double_later"}
    assert not any(v["edited"] for v in empty.values())
    notes = "\n".join(subs["wrong"]["notes"] + subs["empty"]["notes"])
    for expected in ["setup: missing from the submission", "produce_consume: missing from the submission",
                     "slow_square: read-only cell was edited", "test_both_squares: points changed to 100",
                     "test_within: another cell with this id was run but not graded"]:
        assert expected in notes, notes
    # The hidden test is what failed `wrong`'s first task.
    assert "must wait 10 ms" in wrong["test_double_later"]["message"]
    assert "did not overlap" in wrong["test_both_squares"]["message"]


def test_graded_in_shards_and_merged_equals_graded_at_once(unsharded, tmp_path):
    """Two shards, graded at the same time as two pods would (one kernel each), then merged:
    the same table and the same results per submission as the unsharded run."""
    unsharded_proc, _, unsharded_out = unsharded
    assert unsharded_proc.returncode == 0, unsharded_proc.stdout + unsharded_proc.stderr
    shards = [tmp_path / f"shard-{i}" for i in (1, 2)]
    procs = [subprocess.Popen([str(REPO / "scripts" / "grade"), str(FIXTURES), "--timeout", str(CELL_TIMEOUT),
                               "--shard", f"{i}/2", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env())
             for i, out in zip((1, 2), shards)]
    outputs = [proc.communicate(timeout=GRADE_TIME_LIMIT + 60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    students = [{s["student"] for s in json.loads((out / "grades.json").read_text())["submissions"]} for out in shards]
    # Dealt in turn over the sorted names: correct, empty, endless, panicking, wrong.
    assert students == [{"correct", "endless", "wrong"}, {"empty", "panicking"}], students

    merged = tmp_path / "merged"
    proc, _ = grade("--merge", str(merged), *map(str, shards))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (merged / "grades.csv").read_text() == (unsharded_out / "grades.csv").read_text()

    def outcomes(out: Path) -> dict:
        report = json.loads((out / "grades.json").read_text())
        return {"students": report["students"],
                "submissions": {(r["student"], r["notebook"]): (
                    r["status"], r["points"], r["kernel_starts"], sorted(r["notes"]),
                    [(t["test"], t["status"], t["error"], t["points"], t["reinserted"], t["edited"]) for t in r["tests"]])
                    for r in report["submissions"]}}

    assert outcomes(merged) == outcomes(unsharded_out)

    # A merge refuses an incomplete or doubled set of shards, saying which.
    proc, _ = grade("--merge", str(tmp_path / "partial"), str(shards[0]))
    assert proc.returncode == 2 and "shard(s) 2/2 missing" in proc.stderr, proc.stderr
    proc, _ = grade("--merge", str(tmp_path / "doubled"), str(shards[0]), str(shards[0]), str(shards[1]))
    assert proc.returncode == 2 and "shard 1 again" in proc.stderr, proc.stderr
    proc, _ = grade("--merge", str(tmp_path / "mixed"), str(shards[0]), str(unsharded_out))
    assert proc.returncode == 2 and "graded without --shard" in proc.stderr, proc.stderr


def test_a_shard_without_students_writes_empty_results(tmp_path):
    proc, _ = grade(str(FIXTURES), "--shard", "7/9", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "grades.json").read_text())
    assert report["submissions"] == [] and report["shard"] == {"index": 7, "count": 9}
    proc, _ = grade(str(FIXTURES), "--shard", "3/2", "--out", str(tmp_path))
    assert proc.returncode == 2 and "does not exist" in proc.stderr, proc.stderr


def test_grade_goes_on_after_a_kernel_that_stops_answering(tmp_path):
    """A kernel that answers neither the cell nor the interrupt is replaced, the answers before
    that point are run again in the new one, and grading goes on. (A Python kernel: ours always
    answers an interrupt, at the latest by restarting its user-code process.)"""

    def cell(gid: str, source: str, **flags: object) -> nbformat.NotebookNode:
        c = nbformat.v4.new_code_cell(source)
        c.id = gid
        c.metadata["nbgrader"] = {"grade_id": gid, "schema_version": 3, "grade": False, "solution": False,
                                  "locked": False, "task": False, **flags}
        return c

    answer = dict(solution=True)
    test = dict(grade=True, locked=True, points=1)
    source = nbformat.v4.new_notebook()
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source.cells = [
        cell("f", "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION", **answer),
        cell("test_f", "assert f() == 1", **test),
        cell("g", "def g():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION", **answer),
        cell("test_g", "assert g() == 2", **test),
    ]
    (tmp_path / "source" / "py").mkdir(parents=True)
    nbformat.write(source, tmp_path / "source" / "py" / "py.ipynb")
    student = nbformat.from_dict(json.loads(nbformat.writes(source)))
    student.cells[0].source = "import os, signal\ndef f():\n    os.kill(os.getpid(), signal.SIGSTOP)  # freezes the kernel"
    student.cells[2].source = "def g():\n    return 2"
    (tmp_path / "subs" / "frozen").mkdir(parents=True)
    nbformat.write(student, tmp_path / "subs" / "frozen" / "py.ipynb")

    proc = subprocess.run(
        [str(REPO / "scripts" / "grade"), str(tmp_path / "subs"), "--source", str(tmp_path / "source"),
         "--timeout", "2"],
        capture_output=True, text=True, env=env(), timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "subs" / "grades.csv", newline="") as f:
        assert list(csv.reader(f))[1:] == [
            ["frozen", "py", "test_f", "timeout", "Timeout", "0", "1"],
            ["frozen", "py", "test_g", "passed", "", "1", "1"],
            ["frozen", "py", "TOTAL", "graded", "", "1", "2"],
        ]
    (record,) = json.loads((tmp_path / "subs" / "grades.json").read_text())["submissions"]
    assert record["kernel_starts"] == 2
    assert record["tests"][0]["message"] == "no answer from the kernel, even after an interrupt"


def nbgrader(course: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "nbgrader"), *args], cwd=course, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-5000:]
    return output


def test_nbgrader_round_trip(tmp_path):
    from nbgrader.api import Gradebook

    # Two copies of the course, so that two autogrades (two kernels) run at the same time
    # without sharing a gradebook.
    # nbgrader puts back deleted test cells (OverwriteCells.add_missing_cells), but not other
    # deleted cells: for `empty` the tests fail to compile instead of panicking (0 points all
    # the same). The test of task 2 that `wrong` deleted is put back and passes.
    # `noisy` is `correct` with an answer that floods its output and drops a future unawaited:
    # the kernel's notices about that must not cost points (nbgrader scores stderr text 0).
    groups = {"a": ["correct", "empty"], "b": ["wrong", "noisy"]}
    courses = {}
    for name in groups:
        course = tmp_path / name
        shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns(
            "release", "submitted", "autograded", "feedback", "gradebook.db", ".ipynb_checkpoints"))
        courses[name] = course
    for course in courses.values():
        finish(nbgrader(course, "generate_assignment", ASSIGNMENT), 120)

    # The students' version: stubs instead of solutions, no hidden tests, tests locked.
    release = nbformat.read(courses["a"] / "release" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    text = "\n".join(c.source for c in release.cells if c.cell_type == "code")
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "must wait 10 ms" not in text  # a hidden test
    assert text.count("todo!() // YOUR CODE HERE") == 8
    assert release.cells[3].source == "async fn double_later(x: u64) -> u64 {\n    todo!() // YOUR CODE HERE\n}"
    # The sample students started from exactly this version.
    empty = nbformat.read(FIXTURES / "empty" / f"{ASSIGNMENT}.ipynb", as_version=4)
    assert all(c in release.cells for c in empty.cells)

    for name, students in groups.items():
        for student in students:
            dest = courses[name] / "submitted" / student / ASSIGNMENT
            dest.mkdir(parents=True)
            if student == "noisy":
                nbformat.write(noisy_submission(), dest / f"{ASSIGNMENT}.ipynb")
            else:
                shutil.copy(FIXTURES / student / f"{ASSIGNMENT}.ipynb", dest)
    procs = [nbgrader(course, "autograde", ASSIGNMENT) for course in courses.values()]
    for proc in procs:
        finish(proc, 300)

    for name, students in groups.items():
        with Gradebook(f"sqlite:///{courses[name] / 'gradebook.db'}") as gb:
            for student in students:
                submission = gb.find_submission(ASSIGNMENT, student)
                assert submission.max_score == 12
                # `noisy` passes every test, as `correct` does.
                assert submission.score == TOTALS.get(student, TOTALS["correct"]), student
                # Cell by cell, nbgrader agrees with scripts/grade.
                nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
                scores = {g.name: g.score for g in nb.grades}
                assert scores == {t: (POINTS[t] if t not in OUTCOMES.get(student, {}) else 0) for t in TESTS}, student

    # The students still see the notices: as displays under the cells, not as stderr.
    graded = nbformat.read(courses["b"] / "autograded" / "noisy" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in graded.cells}
    for cell_id, notice in [("test_double_later", "output truncated"), ("double_later", "never runs")]:
        outputs = by_id[cell_id].outputs
        assert not any(o.output_type == "stream" and o.name == "stderr" for o in outputs), (cell_id, outputs)
        notices = [o.data["text/plain"] for o in outputs
                   if o.output_type == "display_data" and 'class="rust-async-notice"' in o.data.get("text/html", "")]
        assert any(notice in text for text in notices), (cell_id, notices)


def noisy_submission() -> nbformat.NotebookNode:
    """The `correct` sample, with an answer that prints more than a cell may (the test cell that
    calls it gets the kernel's truncation notice) and makes a future it never awaits."""
    nb = nbformat.read(FIXTURES / "correct" / f"{ASSIGNMENT}.ipynb", as_version=4)
    (answer,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "double_later"]
    answer.source = (
        "async fn double_later(x: u64) -> u64 {\n"
        "    tokio::time::sleep(Duration::from_millis(10)).await;\n"
        '    println!("{}", "chatter ".repeat(300_000));\n'
        "    2 * x\n"
        "}\n"
        "tokio::time::sleep(Duration::from_millis(1));"
    )
    return nb


def test_grade_the_agents_exercises(tmp_path):
    """The exercises of lesson 4 (notebooks/exercises/source/agents-exercises): an HTTP mock
    API and a client with the course crates. With the solutions, every test passes; with the
    stubs students get, every test fails, and grading goes on."""
    import re

    source = COURSE / "source" / "agents-exercises" / "agents-exercises.ipynb"
    solved = nbformat.read(source, as_version=4)
    stubbed = nbformat.read(source, as_version=4)
    for cell in stubbed.cells:
        cell.source = re.sub(r"// ### BEGIN SOLUTION.*?// ### END SOLUTION", "todo!() // YOUR CODE HERE",
                             cell.source, flags=re.S)
    submissions = tmp_path / "submissions"
    for student, nb in [("solved", solved), ("stubbed", stubbed)]:
        (submissions / student).mkdir(parents=True)
        nbformat.write(nb, submissions / student / "agents-exercises.ipynb")
    out = tmp_path / "grades"
    proc = subprocess.run(
        [str(REPO / "scripts" / "grade"), str(submissions), "--assignment", "agents-exercises",
         "--timeout", "30", "--jobs", "2", "--out", str(out)],
        capture_output=True, text=True, env=env(), timeout=GRADE_TIME_LIMIT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "grades.json").read_text())
    assert {s: v["points"] for s, v in report["students"].items()} == {"solved": 6, "stubbed": 0}, proc.stdout
    stubbed_tests = next(s for s in report["submissions"] if s["student"] == "stubbed")["tests"]
    assert {t["test"]: t["message"] for t in stubbed_tests} == {
        test: "not yet implemented" for test in ["test_ask_all", "test_chat_with_retry", "test_run_agent"]
    }
