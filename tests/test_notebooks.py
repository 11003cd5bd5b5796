"""The lesson notebooks (notebooks/*.ipynb) run top to bottom in a fresh kernel, and their
outputs show what their text claims.

Each lesson is executed once per module with nbclient, as `jupyter nbconvert --execute` does:
a cell tagged `raises-exception` may fail (it fails on purpose), any other failure fails the
run. The tests then read the outputs: the lessons print machine-checkable lines such as
`sequential_ms=1503`, and cells are found by their nbformat cell `id`.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from conftest import DISPLAY_NAME, KERNEL_NAME, REPO, AnalysisWatch, analysis_processes, execute_notebook, plain

NOTEBOOKS = REPO / "notebooks"
# nbclient's limit for one cell (the first one also builds what later cells reuse).
CELL_TIMEOUT = 120

COROUTINES = "01-coroutines.ipynb"
EVENT_LOOP = "02-event-loop.ipynb"
IO_CONCURRENCY = "03-io-concurrency.ipynb"
AGENTS = "04-agents-over-http.ipynb"
LESSONS = [COROUTINES, EVENT_LOOP, IO_CONCURRENCY, AGENTS]

# Cells that fail on purpose, by notebook: cell id -> the error name the kernel reports.
EXPECTED_ERRORS = {
    COROUTINES: {"await-in-fn": "CompileError", "nested-runtime": "Panic"},
    EVENT_LOOP: {},
    IO_CONCURRENCY: {},
    AGENTS: {},
}

MAX_CELL_LINES = 25


# --------------------------------------------------------------------------------------------
# Running the lessons


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


_executed: dict[str, nbformat.NotebookNode | BaseException] = {}
# Lesson -> the rust-analyzer processes that ran while it ran (none should: cells never need
# rust-analyzer, only Tab and Shift+Tab do, and nbclient sends neither).
_analysis_seen: dict[str, set[int]] = {}


def executed(name: str) -> nbformat.NotebookNode:
    """Lesson `name` after a run in a fresh kernel (once per test session)."""
    if name not in _executed:
        nb = read(name)
        assert not analysis_processes(), "a rust-analyzer process was left running before the lesson"
        try:
            with AnalysisWatch() as watch:
                execute_notebook(nb, NOTEBOOKS, CELL_TIMEOUT)
            _analysis_seen[name] = watch.seen
            _executed[name] = nb
        except BaseException as error:  # remembered, so that later tests do not run it again
            _executed[name] = error
    result = _executed[name]
    if isinstance(result, BaseException):
        pytest.fail(f"{name} did not run top to bottom:\n{plain(str(result))}", pytrace=False)
    return result


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c
    raise AssertionError(f"no cell with id {cell_id!r}")


def stdout(nb: nbformat.NotebookNode, cell_id: str) -> str:
    """Everything cell `cell_id` printed on stdout."""
    return "".join(
        o["text"]
        for o in cell(nb, cell_id)["outputs"]
        if o["output_type"] == "stream" and o["name"] == "stdout"
    )


def result(nb: nbformat.NotebookNode, cell_id: str) -> str:
    """The text/plain value of cell `cell_id`."""
    results = [o for o in cell(nb, cell_id)["outputs"] if o["output_type"] == "execute_result"]
    assert len(results) == 1, cell(nb, cell_id)["outputs"]
    return results[0]["data"]["text/plain"]


def error(nb: nbformat.NotebookNode, cell_id: str) -> dict:
    errors = [o for o in cell(nb, cell_id)["outputs"] if o["output_type"] == "error"]
    assert len(errors) == 1, cell(nb, cell_id)["outputs"]
    return errors[0]


def number(text: str, key: str) -> int:
    """The value of the one `key=123` line in `text`."""
    found = re.findall(rf"^{re.escape(key)}=(\d+)$", text, re.M)
    assert len(found) == 1, f"expected one {key}=... line in {text!r}"
    return int(found[0])


# --------------------------------------------------------------------------------------------
# Every lesson


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_is_a_rust_async_notebook(name):
    nb = read(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"] == {
        "name": KERNEL_NAME,
        "display_name": DISPLAY_NAME,
        "language": "rust",
    }
    assert nb.metadata["language_info"]["name"] == "rust"
    # Stored without outputs: what a student sees is what their own run produces.
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, c.id
    ids = [c.get("id") for c in nb.cells]
    assert len(set(ids)) == len(ids), "cell ids must be unique"


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_cells_are_short_and_explained(name):
    nb = read(name)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for c in nb.cells:
        if c.cell_type == "code":
            assert len(c.source.splitlines()) <= MAX_CELL_LINES, f"cell {c.id} is long"
    # Only the cells listed as failing on purpose carry the tag that lets them fail.
    tagged = {c.id for c in nb.cells if "raises-exception" in c.metadata.get("tags", [])}
    assert tagged == set(EXPECTED_ERRORS[name])


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_top_to_bottom(name):
    nb = executed(name)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code_cells] == list(range(1, len(code_cells) + 1))
    for c in code_cells:
        errors = [o for o in c.outputs if o["output_type"] == "error"]
        if c.id in EXPECTED_ERRORS[name]:
            # The cell really failed, and with the error the lesson explains.
            assert len(errors) == 1, (c.id, c.outputs)
            assert errors[0]["ename"] == EXPECTED_ERRORS[name][c.id], errors[0]
        else:
            assert errors == [], (c.id, errors)
        # Nothing on stderr: no panicking task, no kernel chatter in a lesson.
        stderr = [o["text"] for o in c.outputs if o["output_type"] == "stream" and o["name"] == "stderr"]
        assert stderr == [], (c.id, stderr)


# --------------------------------------------------------------------------------------------
# 01 · Coroutines


@pytest.mark.parametrize("name", LESSONS)
def test_a_lesson_run_without_completion_never_starts_rust_analyzer(name):
    executed(name)
    assert _analysis_seen[name] == set(), f"rust-analyzer ran during {name}: pids {_analysis_seen[name]}"


@pytest.fixture(scope="module")
def coroutines() -> nbformat.NotebookNode:
    return executed(COROUTINES)


def runs(text: str, label: str) -> int:
    found = re.findall(rf"^{re.escape(label)}: runs = (\d+)", text, re.M)
    assert len(found) == 1, f"expected one '{label}: runs = N' line in {text!r}"
    return int(found[0])


def test_calling_an_async_fn_runs_nothing(coroutines):
    out = stdout(coroutines, "call")
    assert "do_something: running" not in out
    assert runs(out, "after the call") == 0
    shown = result(coroutines, "show-future")
    assert shown.startswith("<pending future") and "not started" in shown, shown
    later = stdout(coroutines, "still-not-run")
    assert "do_something: running" not in later
    assert runs(later, "200 ms later") == 0


def test_await_in_a_later_cell_runs_the_future(coroutines):
    out = stdout(coroutines, "await")
    assert out.index("do_something: running") < out.index("after .await")
    assert runs(out, "after .await") == 1
    assert result(coroutines, "await") == '"Done"'
    # A dropped future never ran.
    assert runs(stdout(coroutines, "drop"), "after drop") == 1


def test_await_outside_async_is_a_compile_error_with_a_hint(coroutines):
    failure = error(coroutines, "await-in-fn")
    assert failure["ename"] == "CompileError"
    assert "E0728" in failure["evalue"]
    traceback = plain("\n".join(failure["traceback"]))
    assert "this is not `async`" in traceback
    assert "hint: " in traceback and "async fn" in traceback
    # The fix: an async fn, awaited.
    assert runs(stdout(coroutines, "async-fn"), "after now_async") == 2
    assert result(coroutines, "async-fn") == '"Done"'


def test_cells_run_in_a_runtime_and_programs_use_block_on(coroutines):
    assert stdout(coroutines, "in-runtime").strip() == "inside a runtime here? true"
    out = stdout(coroutines, "program-style")
    assert "on the new thread, inside a runtime? false" in out
    assert 'block_on returned "Done"' in out
    assert re.search(r'^block_on returned "Done"; runs = 3$', out, re.M), out


def test_a_runtime_inside_the_runtime_panics_with_a_hint(coroutines):
    failure = error(coroutines, "nested-runtime")
    assert failure["ename"] == "Panic"
    assert "Cannot start a runtime from within a runtime" in failure["evalue"]
    assert "hint:" in plain("\n".join(failure["traceback"]))


# --------------------------------------------------------------------------------------------
# 02 · The event loop


@pytest.fixture(scope="module")
def event_loop() -> nbformat.NotebookNode:
    return executed(EVENT_LOOP)


def steps(text: str) -> list[str]:
    return [f"{task}{step}" for task, step in re.findall(r"^task ([AB]), step (\d)$", text, re.M)]


def test_tasks_switch_at_await_in_a_deterministic_order(event_loop):
    assert steps(stdout(event_loop, "interleave")) == ["A1", "B1", "A2", "B2", "A3", "B3"]
    # No .await, no switch.
    assert steps(stdout(event_loop, "no-await")) == ["A1", "A2", "A3", "B1", "B2", "B3"]
    # Without `biased;` join! rotates the future it polls first, round after round.
    assert steps(stdout(event_loop, "rotate")) == ["A1", "B1", "B2", "A2", "A3", "B3"]


def test_joined_waits_overlap(event_loop):
    sequential = number(stdout(event_loop, "sequential"), "sequential_ms")
    joined = number(stdout(event_loop, "joined"), "joined_ms")
    assert sequential >= 900, sequential
    assert 300 <= joined < sequential * 2 / 3, (joined, sequential)
    spawned = number(stdout(event_loop, "spawn-timing"), "spawned_ms")
    assert 300 <= spawned < sequential * 2 / 3, (spawned, sequential)


def test_a_spawned_task_starts_without_await_and_crosses_cells(event_loop):
    assert stdout(event_loop, "spawn-started").strip() == "task started without .await: true"
    assert result(event_loop, "spawn-await") == '"task finished"'


SVG = "{http://www.w3.org/2000/svg}"


def figure(nb: nbformat.NotebookNode, cell_id: str):
    """The timeline figure under cell `cell_id`: (row names, bars as (row, thread, start ms,
    end ms) in the order they started, its plain-text line)."""
    import xml.etree.ElementTree as ET

    (data,) = [o["data"] for o in cell(nb, cell_id)["outputs"]
               if o["output_type"] == "display_data" and "image/svg+xml" in o["data"]]
    svg = ET.fromstring(data["image/svg+xml"])
    rows = [t.text for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "end" and t.text not in ("ms", "threads")]
    bars = sorted(((int(r.get("data-row")), r.get("data-thread"), float(r.get("data-start-ms")), float(r.get("data-end-ms")))
                   for r in svg.iter(f"{SVG}rect") if r.get("class") == "poll"), key=lambda bar: bar[2])
    return rows, bars, data["text/plain"]


def test_timelines_show_sequential_joined_and_spawned_waits(event_loop):
    rows, bars, _ = figure(event_loop, "sequential-timeline")
    assert rows == ["the cell"], rows
    # Polled at the start (the runtime may poll once more at once), then once as each sleep ends.
    woken = [start for _, _, start, _ in bars if start > 50]
    assert len(woken) == 3 and len(bars) - len(woken) in (1, 2), bars
    assert all(later - earlier >= 95 for earlier, later in zip(woken, woken[1:])), woken
    rows, bars, _ = figure(event_loop, "joined-timeline")
    assert rows == ["the cell"] and 2 <= len(bars) <= 3, (rows, bars)
    assert bars[-1][2] - bars[0][2] < 150, bars  # the three sleeps waited together
    rows, bars, _ = figure(event_loop, "spawn-timeline")
    assert rows == ["your code", "task 1", "task 2", "task 3"], rows
    assert re.search(r"^rows=4 task_polls=6$", stdout(event_loop, "spawn-timeline"), re.M)


def test_on_one_thread_a_blocking_task_is_one_long_bar_and_spawn_blocking_frees_the_loop(event_loop):
    rows, bars, line = figure(event_loop, "blocking")
    assert rows == ["the cell", "task 1", "task 2"] and "on 1 thread(s)" in line, (rows, line)
    long = [bar for bar in bars if bar[0] in (1, 2) and bar[3] - bar[2] >= 290]
    assert [bar[0] for bar in long] == [1, 2], bars  # one after the other
    for blocked in long:
        inside = [bar for bar in bars if bar is not blocked and bar[2] < blocked[3] - 0.5 and bar[3] > blocked[2] + 0.5]
        assert inside == [], (blocked, inside)
    rows, bars, _ = figure(event_loop, "spawn-blocking")
    assert rows == ["the cell", "spawn_blocking 1", "spawn_blocking 2"], rows
    pool = [bar for bar in bars if bar[0] in (1, 2)]
    assert len(pool) == 2 and all(thread.startswith("blocking") for _, thread, _, _ in pool), pool
    assert pool[1][2] < pool[0][3], "the two blocking calls ran at the same time"
    assert "multi-thread runtime again" in result(event_loop, "multi-thread-again")


def test_a_progress_bar_is_shown_for_background_work(event_loop):
    (data,) = [o["data"] for o in cell(event_loop, "progress")["outputs"] if o["output_type"] == "display_data"]
    assert data["text/plain"].startswith("downloads ["), data
    assert '<progress value="0" max="10"' in data["text/html"], data


def timeline(text: str) -> list[tuple[int, str]]:
    return [(int(t), f"{name} {what}") for t, name, what in re.findall(r"^\s*(\d+) ms  ([AB]) (starts|ends)$", text, re.M)]


def test_a_blocking_call_stalls_a_one_thread_runtime(event_loop):
    assert number(stdout(event_loop, "workers"), "one_thread_workers") == 1
    out = stdout(event_loop, "blocking")
    assert [event for _, event in timeline(out)] == ["A starts", "A ends", "B starts", "B ends"]
    blocking = number(out, "blocking_ms")
    assert blocking >= 600, blocking  # the two 300 ms sleeps one after the other: the sum


@pytest.mark.parametrize("cell_id, key", [("async-sleep", "async_sleep_ms"), ("spawn-blocking", "spawn_blocking_ms")])
def test_async_sleep_and_spawn_blocking_keep_the_loop_free(event_loop, cell_id, key):
    blocking = number(stdout(event_loop, "blocking"), "blocking_ms")
    out = stdout(event_loop, cell_id)
    fixed = number(out, key)
    assert 300 <= fixed < blocking * 2 / 3, (fixed, blocking)  # about the longest wait, not the sum
    events = [event for _, event in timeline(out)]
    assert sorted(events) == ["A ends", "A starts", "B ends", "B starts"], events
    # Both tasks started before either ended: they waited at the same time.
    assert max(events.index("A starts"), events.index("B starts")) < min(
        events.index("A ends"), events.index("B ends")
    ), events


# --------------------------------------------------------------------------------------------
# 03 · I/O concurrency


@pytest.fixture(scope="module")
def io_lesson() -> nbformat.NotebookNode:
    return executed(IO_CONCURRENCY)


def answers(text: str) -> list[str]:
    return re.findall(r'answer to "(question \d)"', text)


def test_the_model_api_answers_a_client(io_lesson):
    assert re.search(r"^model API listening on 127\.0\.0\.1:\d+$", stdout(io_lesson, "server"), re.M)
    out = stdout(io_lesson, "client")
    took = re.search(r'^answer to "hello" after (\d+) ms$', out, re.M)
    assert took and int(took[1]) >= 300, out


def test_concurrent_calls_overlap(io_lesson):
    sequential_out = stdout(io_lesson, "sequential")
    concurrent_out = stdout(io_lesson, "concurrent")
    assert answers(sequential_out) == [f"question {i}" for i in range(1, 6)]
    assert sorted(answers(concurrent_out)) == [f"question {i}" for i in range(1, 6)]
    sequential = number(sequential_out, "sequential_ms")
    concurrent = number(concurrent_out, "concurrent_ms")
    assert sequential >= 1500, sequential
    assert 300 <= concurrent < 0.6 * sequential, (concurrent, sequential)
    # The server spawned cells earlier kept serving: 1 + 5 + 5 requests.
    assert number(stdout(io_lesson, "speedup"), "requests_served") == 11


def test_timeout_and_select(io_lesson):
    out = stdout(io_lesson, "timeout")
    assert re.search(r"^100 ms budget: Err\(Elapsed", out, re.M), out
    assert re.search(r'^1 s budget: Ok\(Ok\("answer to \\"slow\\""\)\)$', out, re.M), out
    out = stdout(io_lesson, "select")
    assert 'winner=fast: answer to "fast model"' in out and "winner=slow" not in out, out
    assert 200 <= number(out, "select_ms") < 600, out


def queue_events(text: str) -> list[tuple[str, int]]:
    return [(what, int(job)) for what, job in re.findall(r"^\s*\d+ ms\s+(sent|received) (\d)$", text, re.M)]


def test_a_bounded_channel_gives_back_pressure(io_lesson):
    bounded = stdout(io_lesson, "bounded")
    events = queue_events(bounded)
    assert sorted(events) == sorted([("sent", j) for j in range(1, 7)] + [("received", j) for j in range(1, 7)])
    # The producer is never more than 2 items ahead: job k is sent only after k - 2 were received.
    for position, (what, job) in enumerate(events):
        if what == "sent":
            received = sum(1 for w, _ in events[:position] if w == "received")
            assert received >= job - 2, (job, events)
    bounded_done = number(bounded, "capacity 2: producer_done_ms")
    assert bounded_done >= 300, bounded_done  # it waited for 3 of the consumer's 100 ms steps
    roomy = stdout(io_lesson, "roomy")
    roomy_events = queue_events(roomy)
    assert roomy_events[:6] == [("sent", j) for j in range(1, 7)], roomy_events  # no waiting
    assert number(roomy, "capacity 10: producer_done_ms") < bounded_done / 2


# --------------------------------------------------------------------------------------------
# 04 · Agents over HTTP (the course crates: axum, reqwest, serde, futures; no `:dep`)


@pytest.fixture(scope="module")
def agents() -> nbformat.NotebookNode:
    return executed(AGENTS)


def test_requests_are_typed_json(agents):
    assert stdout(agents, "json").strip() == '{"model":"mock-1","messages":[{"role":"user","content":"hello"}],"stream":false}'
    assert 'Message { role: "assistant", content: Some("You said: hello")' in stdout(agents, "client")


def test_five_calls_at_once_take_the_time_of_one(agents):
    sequential = number(stdout(agents, "sequential"), "sequential_ms")
    concurrent = number(stdout(agents, "concurrent"), "concurrent_ms")
    assert sequential >= 5 * 300, sequential
    assert concurrent < 2 * 300 and concurrent * 3 < sequential, (sequential, concurrent)


def test_buffer_unordered_caps_the_calls_in_flight(agents):
    text = stdout(agents, "limited")
    assert number(text, "max_in_flight") == 2, text
    took = int(re.search(r"6 replies in (\d+) ms", text).group(1))
    assert 3 * 300 <= took < 6 * 300, text


def test_a_timeout_drops_the_slow_call(agents):
    text = stdout(agents, "timeout")
    match = re.search(r"timed_out=true after (\d+) ms", text)
    assert match and 500 <= int(match.group(1)) < 1500, text


def test_a_429_is_retried_with_backoff_until_it_succeeds(agents):
    text = stdout(agents, "retry")
    assert re.findall(r"attempt (\d): (\d{3})", text) == [("1", "429"), ("2", "429"), ("3", "200")], text
    assert "You said: [busy] are you there?" in text


def test_a_streamed_answer_arrives_word_by_word(agents):
    lines = re.findall(r"^\s*(\d+) ms  (\S+)$", stdout(agents, "stream"), re.M)
    assert [word for _, word in lines] == ["You", "said:", "tell", "me", "about", "async", "Rust"], lines
    times = [int(t) for t, _ in lines]
    assert times == sorted(times) and times[-1] - times[0] >= 5 * 100 - 50, times
    assert number(stdout(agents, "stream"), "words") == 7


def test_the_agent_runs_the_tool_the_model_asks_for(agents):
    text = stdout(agents, "agent")
    assert "tool_call=get_weather(Paris)" in text
    assert "answer=The tool says: sunny and 21 °C in Paris." in text
    assert number(text, "messages") == 4
