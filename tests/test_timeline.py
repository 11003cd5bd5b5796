"""Timelines (kernel/runtime/src/timeline.rs): a recording of every poll of a cell's code and
of the tasks it spawns, drawn as SVG under the cell. The figures are parsed here and checked
against schedules whose order is known."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conftest import of_type, result_text, run, stream_text, summary

SVG = "{http://www.w3.org/2000/svg}"


def figure(msgs) -> tuple[ET.Element, str]:
    """The one timeline figure among `msgs`: its parsed SVG and its plain-text line."""
    (shown,) = [m for m in of_type(msgs, "display_data") if "image/svg+xml" in m["content"]["data"]]
    data = shown["content"]["data"]
    return ET.fromstring(data["image/svg+xml"]), data["text/plain"]


def polls(svg: ET.Element) -> list[dict]:
    """The bars: row, thread, start and end (ms), in the order they started."""
    bars = [
        {"row": int(r.get("data-row")), "thread": r.get("data-thread"),
         "start": float(r.get("data-start-ms")), "end": float(r.get("data-end-ms"))}
        for r in svg.iter(f"{SVG}rect") if r.get("class") == "poll"
    ]
    return sorted(bars, key=lambda bar: bar["start"])


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


def ok(reply, msgs):
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]


def test_two_tasks_alternating_over_sleeps_give_alternating_bars(kc):
    # Task 1 wakes at 40, 120 and 200 ms; task 2 at 80, 160 and 240: their polls alternate (a
    # stall of the machine under 40 ms cannot swap them).
    reply, msgs = run(kc, """use std::time::Duration;
let woke = tokio::timeline::record(async {
    let first = tokio::spawn(async { tokio::time::sleep(Duration::from_millis(40)).await; for _ in 0..2 { tokio::time::sleep(Duration::from_millis(80)).await; } });
    let second = tokio::spawn(async { for _ in 0..3 { tokio::time::sleep(Duration::from_millis(80)).await; } });
    first.await.unwrap();
    second.await.unwrap();
    "done"
}).await;
woke""", timeout=120)
    ok(reply, msgs)
    assert result_text(msgs) == '"done"'
    svg, line = figure(msgs)
    assert line.startswith("timeline: 3 rows"), line
    bars = polls(svg)
    tasks = [bar["row"] for bar in bars if bar["row"] in (1, 2)]
    # Each task is polled once when spawned (on either worker, in either order), then once
    # at each wake-up.
    assert sorted(tasks) == [1] * 4 + [2] * 4, bars
    woken = tasks.copy()
    woken.remove(1)
    woken.remove(2)
    assert woken == [1, 2, 1, 2, 1, 2], bars
    assert all(bar["end"] >= bar["start"] for bar in bars)
    # The rows' names and where they were spawned, in the cell's own lines.
    labels = texts(svg)
    assert {"your code", "task 1", "task 2"} <= set(labels), labels
    assert "task 1 spawned at line 3" in labels and "task 2 spawned at line 4" in labels, labels
    assert "your code recorded at line 2" in labels, labels
    # Bars have tooltips, and the threads are in the legend.
    assert all(r.find(f"{SVG}title") is not None for r in svg.iter(f"{SVG}rect") if r.get("class") == "poll")
    assert "threads" in labels and any(label.startswith("worker") for label in labels), labels


def test_spawn_blocking_is_a_row_of_its_own_on_a_blocking_thread(kc):
    reply, msgs = run(kc, """tokio::timeline::record(async {
    tokio::task::spawn_blocking(|| std::thread::sleep(std::time::Duration::from_millis(80))).await.unwrap();
}).await;""", timeout=120)
    ok(reply, msgs)
    svg, _ = figure(msgs)
    (blocking,) = [bar for bar in polls(svg) if bar["row"] == 1]
    assert blocking["thread"].startswith("blocking"), blocking
    assert blocking["end"] - blocking["start"] >= 75, blocking
    assert "spawn_blocking 1 started at line 2" in texts(svg)


def test_the_recording_as_data_a_timeline_cell_and_a_cap_on_polls(kc):
    # As data: a student can count and measure.
    reply, msgs = run(kc, """let (value, timeline) = tokio::timeline::recorded(async {
    tokio::spawn(async { tokio::task::yield_now().await; 7 }).await.unwrap()
}).await;
let task_polls = timeline.polls.iter().filter(|poll| poll.row == 1).count();
println!("{value} {task_polls} {} {}", timeline.rows[1].name, timeline.rows[1].spawned_at);""", timeout=120)
    ok(reply, msgs)
    assert stream_text(msgs) == "7 2 task 1 line 2\n", [summary(m) for m in msgs]
    assert not [m for m in of_type(msgs, "display_data") if "image/svg+xml" in m["content"]["data"]]

    # `:timeline` atop a cell records the whole cell; its variables are kept as usual.
    reply, msgs = run(kc, ":timeline\nlet kept = tokio::spawn(async { 40 }).await.unwrap() + 2;", timeout=120)
    ok(reply, msgs)
    svg, line = figure(msgs)
    assert "the cell" in texts(svg) and "task 1" in texts(svg), texts(svg)
    reply, msgs = run(kc, "kept")
    assert result_text(msgs) == "42"
    reply, msgs = run(kc, "let after = 1;")  # the next cell is not recorded
    assert not of_type(msgs, "display_data")

    # Past the cap, polls are counted, not kept, and the figure says so.
    reply, msgs = run(kc, """tokio::timeline::record(async {
    for _ in 0..6000 { tokio::task::yield_now().await; }
}).await;""", timeout=120)
    ok(reply, msgs)
    svg, line = figure(msgs)
    assert len(polls(svg)) == 5000, line
    assert "more polls not kept" in line, line
    assert any("more polls were counted but not drawn" in text for text in texts(svg))


def test_one_recording_at_a_time(kc):
    reply, msgs = run(kc, """tokio::timeline::record(async {
    tokio::timeline::record(async { 1 }).await
}).await""", timeout=120)
    ok(reply, msgs)
    lines = [m["content"]["data"]["text/plain"] for m in of_type(msgs, "display_data")]
    assert lines[0] == "timeline: not recorded: another timeline was recording at the same time (one at a time)", lines
    assert lines[1].startswith("timeline: 1 rows"), lines


# --- `:runtime current_thread`: the notes' one-thread event loop ---------------------------


def test_on_one_thread_a_blocking_task_is_one_long_bar_with_no_other_bar_inside_it(fresh_kernel):
    km, kc = fresh_kernel
    reply, msgs = run(kc, ":runtime current_thread", timeout=120)
    ok(reply, msgs)
    assert "ONE thread" in result_text(msgs), [summary(m) for m in msgs]
    reply, msgs = run(kc, """:timeline
use std::time::Duration;
let ticker = tokio::spawn(async { for _ in 0..20 { tokio::time::sleep(Duration::from_millis(10)).await; } });
let blocker = tokio::spawn(async { tokio::time::sleep(Duration::from_millis(30)).await; std::thread::sleep(Duration::from_millis(150)); });
ticker.await.unwrap();
blocker.await.unwrap();""", timeout=120)
    ok(reply, msgs)
    svg, line = figure(msgs)
    assert "on 1 thread(s)" in line, line  # the cell's thread ran every poll
    bars = polls(svg)
    labels = texts(svg)
    assert labels_of_rows(svg) == ["the cell", "task 1", "task 2"], labels
    blocker_row = 2
    long = [bar for bar in bars if bar["row"] == blocker_row and bar["end"] - bar["start"] >= 140]
    assert len(long) == 1, (bars, labels)
    (long,) = long
    inside = [bar for bar in bars if bar is not long and bar["start"] < long["end"] - 0.5 and bar["end"] > long["start"] + 0.5]
    assert inside == [], f"bars inside the blocking poll: {inside}"
    # The ticker did run before and after it.
    assert any(bar["row"] == 1 and bar["end"] <= long["start"] for bar in bars)
    assert any(bar["row"] == 1 and bar["start"] >= long["end"] for bar in bars)


def labels_of_rows(svg: ET.Element) -> list[str]:
    """The rows' names, in row order (the right-aligned labels left of the bars)."""
    return [t.text for t in svg.iter(f"{SVG}text") if t.get("text-anchor") == "end" and t.text not in ("ms", "threads")]


def test_on_one_thread_tasks_run_between_cells_print_under_their_cell_and_interrupt_keeps_variables(fresh_kernel):
    import time

    from conftest import collect, get_reply, wait_for_iopub

    km, kc = fresh_kernel
    ok(*run(kc, ":runtime current_thread", timeout=120))
    reply, msgs = run(kc, "tokio::runtime::Handle::current().metrics().num_workers()")
    ok(reply, msgs)
    assert result_text(msgs) == "1"
    # Idle progress: a task started in one cell runs while no cell does.
    first = kc.execute("""static TICKS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
let thread_of_cell = format!("{:?}", std::thread::current().id());
tokio::spawn(async {
    for _ in 0..10 { tokio::time::sleep(std::time::Duration::from_millis(20)).await; TICKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst); }
    println!("ticked on {:?}", std::thread::current().name());
});""")
    reply, _ = collect(kc, first, 120)
    assert reply["content"]["status"] == "ok", reply["content"]
    # What the task printed after its cell ended comes under that cell (JupyterLab keeps it),
    # from the loop's own thread, which runs the loop while no cell does.
    (line,) = [m for m in wait_for_iopub(kc, first, lambda m: m["msg_type"] == "stream", 10) if m["msg_type"] == "stream"]
    assert line["content"]["text"] == 'ticked on Some("rust-async-loop")\n', line["content"]
    reply, msgs = run(kc, "TICKS.load(std::sync::atomic::Ordering::SeqCst)")
    assert result_text(msgs) == "10", [summary(m) for m in msgs]
    # Interrupt: the cell is cancelled at its await point, the variables stay.
    running = kc.execute("tokio::time::sleep(std::time::Duration::from_secs(60)).await;")
    time.sleep(1.5)
    km.interrupt_kernel()
    reply = get_reply(kc, running, 30)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "Interrupted", reply["content"]
    reply, msgs = run(kc, "thread_of_cell.len() > 0")
    assert result_text(msgs) == "true", [summary(m) for m in msgs]
    # And back: more than one worker again.
    ok(*run(kc, ":runtime multi_thread 3"))
    reply, msgs = run(kc, "tokio::runtime::Handle::current().metrics().num_workers()")
    assert result_text(msgs) == "3", [summary(m) for m in msgs]
    reply, msgs = run(kc, ":runtime sideways")
    assert reply["content"]["status"] == "error" and "current_thread" in reply["content"]["evalue"], reply["content"]
