"""Output streams, rich display output and standard input."""

from __future__ import annotations

import time

import pytest

from conftest import collect, drain, notice_text, of_type, result_text, run, stream_text, streams, summary


def test_print_without_newline(kc):
    reply, msgs = run(kc, 'print!("no newline");')
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs, "stdout") == "no newline"


def test_stdout_stderr_order(kc):
    reply, msgs = run(kc, 'println!("a");\neprintln!("b");\nprintln!("c");')
    assert reply["content"]["status"] == "ok"
    assert streams(msgs) == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n")], [
        summary(m) for m in msgs
    ]


def test_output_before_result(kc):
    reply, msgs = run(kc, 'println!("first");\n6 * 7')
    assert reply["content"]["status"] == "ok"
    kinds = [m["msg_type"] for m in msgs if m["msg_type"] in ("stream", "execute_result")]
    assert kinds == ["stream", "execute_result"], [summary(m) for m in msgs]
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "42"


def test_output_is_streamed_while_the_cell_runs(kc):
    arrivals: dict[str, float] = {}
    reply, msgs = run(
        kc,
        'println!("before");\nstd::thread::sleep(std::time::Duration::from_secs(1));\n'
        'println!("after");',
        arrivals=arrivals,
    )
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "before\nafter\n"
    first = of_type(msgs, "stream")[0]
    assert first["content"]["text"].startswith("before")
    lead = arrivals[reply["header"]["msg_id"]] - arrivals[first["header"]["msg_id"]]
    assert lead > 0.8, f"the first output arrived only {lead:.2f}s before the reply"


def test_a_flood_of_output_is_cut_with_a_note_and_the_cells_error_still_comes(kc):
    # About 4.5 MB of lines: more than a cell may print (2 MiB).
    reply, msgs = run(kc, 'for i in 0..400_000 { println!("line {i}"); }\npanic!("after the flood");', timeout=240)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "Panic", reply["content"]
    printed = stream_text(msgs, "stdout")
    assert printed.startswith("line 0\nline 1\n") and printed.endswith("\n"), printed[-200:]
    assert 1 << 20 < len(printed) <= 2 << 20, len(printed)
    assert "output truncated" in notice_text(msgs) and stream_text(msgs, "stderr") == ""
    # The error comes after all of the cell's text, before the cell is over.
    kinds = [m["msg_type"] for m in msgs]
    assert kinds.index("error") > max(i for i, kind in enumerate(kinds) if kind == "stream"), kinds[-5:]
    # The next cell prints as usual.
    reply, msgs = run(kc, 'println!("after");')
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert stream_text(msgs) == "after\n" and stream_text(msgs, "stderr") == ""


def test_a_flood_of_wide_characters_then_a_question_mark_error_keeps_the_error(kc):
    # Lines of multi-byte characters, so the cut falls inside one; then a `?` error, whose text
    # is printed after the limit and must still be the cell's error.
    reply, msgs = run(
        kc,
        'for i in 0..200_000 { println!("{i} 日本🦀"); }\n'
        'let parsed: u8 = "not a number".parse()?;',
        timeout=240,
    )
    assert reply["content"]["status"] == "error", [summary(m) for m in msgs[-5:]]
    assert reply["content"]["ename"] == "ParseIntError", reply["content"]
    assert "invalid digit" in reply["content"]["evalue"], reply["content"]
    assert "output truncated" in notice_text(msgs)
    assert stream_text(msgs).endswith("日本🦀\n")
    reply, msgs = run(kc, 'println!("still here");')
    assert stream_text(msgs) == "still here\n", [summary(m) for m in msgs]


def test_dbg_shows_the_cells_line_and_returns_its_value(kc):
    reply, msgs = run(kc, "let base = 2;\nlet got = dbg!(base + 1);\ntokio::spawn(async { dbg!(\"in a task\"); }).await.unwrap();\ngot")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert stream_text(msgs, "stderr") == (
        "[cell line 2, column 11] base + 1 = 3\n[cell line 3, column 22] \"in a task\" = \"in a task\"\n"
    ), [summary(m) for m in msgs]
    assert result_text(msgs) == "3"
    reply, msgs = run(kc, "fn twice(v: u8) -> u8 { dbg!(v) * 2 }")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    reply, msgs = run(kc, "twice(4)")
    assert stream_text(msgs, "stderr") == "[dbg in code of an earlier cell] v = 4\n", [summary(m) for m in msgs]
    assert result_text(msgs) == "8"


def test_display_data(kc):
    code = r'println!("EVCXR_BEGIN_CONTENT text/html\n<b>hi</b>\nEVCXR_END_CONTENT");'
    reply, msgs = run(kc, code)
    assert reply["content"]["status"] == "ok"
    (display,) = of_type(msgs, "display_data")
    assert display["content"]["data"]["text/html"] == "<b>hi</b>"
    # The markers are consumed, not shown as text.
    assert "EVCXR_BEGIN_CONTENT" not in stream_text(msgs)
    assert "EVCXR_END_CONTENT" not in stream_text(msgs)


def test_a_display_is_updated_in_place_from_a_task_after_its_cell_ended(kc):
    reply, msgs = run(
        kc,
        'let status = tokio::display::text("waiting");\n'
        "let later = status.clone();\n"
        "tokio::spawn(async move {\n"
        "    tokio::time::sleep(std::time::Duration::from_millis(300)).await;\n"
        '    later.update_bundle(&[("text/html", "<b>done</b>"), ("text/plain", "done")]);\n'
        "});\n"
        "status.id().to_owned()",
    )
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    (shown,) = of_type(msgs, "display_data")
    display_id = shown["content"]["transient"]["display_id"]
    assert shown["content"]["data"] == {"text/plain": "waiting"}
    assert result_text(msgs) == f'"{display_id}"'
    later = [m for m in drain(kc, 3) if m["msg_type"] == "update_display_data"]
    assert [m["content"]["data"] for m in later] == [{"text/html": "<b>done</b>", "text/plain": "done"}], later
    assert later[0]["content"]["transient"]["display_id"] == display_id


def test_svg_png_and_bundles_are_shown_and_a_handle_as_final_value_shows_nothing_more(kc):
    reply, msgs = run(
        kc,
        'tokio::display::svg("<svg xmlns=\'http://www.w3.org/2000/svg\' width=\'4\' height=\'4\'/>");\n'
        "tokio::display::png(&[0x89, b'P', b'N', b'G']);\n"
        'tokio::display::bundle(&[("text/markdown", "**hi**"), ("text/plain", "hi")])',
    )
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    shown = [m["content"]["data"] for m in of_type(msgs, "display_data")]
    assert shown == [
        {"image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"},
        {"image/png": "iVBORw=="},
        {"text/markdown": "**hi**", "text/plain": "hi"},
    ], shown
    assert of_type(msgs, "execute_result") == []


def test_a_progress_bar_moved_by_tasks_after_the_cell_ended(kc):
    reply, msgs = run(
        kc,
        'let bar = tokio::progress::bar("steps", 5);\n'
        "for i in 0..5u64 {\n"
        "    let bar = bar.clone();\n"
        "    tokio::spawn(async move {\n"
        "        tokio::time::sleep(std::time::Duration::from_millis(150 * (i + 1))).await;\n"
        "        bar.inc(1);\n"
        "    });\n"
        "}",
    )
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    (shown,) = of_type(msgs, "display_data")
    assert shown["content"]["data"]["text/plain"].startswith("steps [------------------------------] 0/5 (0%)")
    assert '<progress value="0" max="5"' in shown["content"]["data"]["text/html"]
    updates = [m["content"] for m in drain(kc, 2.5) if m["msg_type"] == "update_display_data"]
    assert {u["transient"]["display_id"] for u in updates} == {shown["content"]["transient"]["display_id"]}
    counts = [int(u["data"]["text/plain"].split("] ")[1].split("/")[0]) for u in updates]
    assert counts == sorted(counts) and counts[-1] == 5, counts
    last = updates[-1]["data"]
    assert "5/5 (100%)" in last["text/plain"] and last["text/plain"].endswith(", done"), last
    assert '<progress value="5" max="5"' in last["text/html"]


def test_a_type_with_evcxr_display_shows_itself_as_a_final_value(kc):
    ok_reply, _ = run(
        kc,
        "struct Gauge(u32);\n"
        "impl Gauge {\n"
        "    fn evcxr_display(&self) {\n"
        '        println!("EVCXR_BEGIN_CONTENT text/html\\n<meter value=\'{}\' max=\'10\'></meter>\\nEVCXR_END_CONTENT", self.0);\n'
        "    }\n"
        "}",
    )
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    reply, msgs = run(kc, "Gauge(7)")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    shown = [m["content"]["data"] for m in msgs if m["msg_type"] in ("display_data", "execute_result")]
    assert shown == [{"text/html": "<meter value='7' max='10'></meter>"}], shown


def test_clear_output(kc):
    reply, msgs = run(kc, 'println!("gone");\ntokio::display::clear_output(false);\nprintln!("kept");')
    assert reply["content"]["status"] == "ok"
    kinds = [summary(m) for m in msgs if m["msg_type"] in ("stream", "clear_output")]
    assert kinds == ["stream:stdout:'gone\\n'", "clear_output", "stream:stdout:'kept\\n'"], kinds
    (clear,) = of_type(msgs, "clear_output")
    assert clear["content"]["wait"] is False


def test_stdin_not_allowed_fails_fast_and_says_why(kc):
    # Without allow_stdin (as nbclient sends) reading stdin must fail at once, not hang, and
    # the kernel explains why in a notice.
    started = time.monotonic()
    reply, msgs = run(
        kc,
        "let mut s = String::new();\nstd::io::stdin().read_line(&mut s)?;\n"
        'println!("got {s:?}");',
        timeout=10,
        allow_stdin=False,
    )
    assert time.monotonic() - started < 10
    assert reply["content"]["status"] == "error", [summary(m) for m in msgs]
    assert "got" not in stream_text(msgs)
    assert "stdin gave no line" in notice_text(msgs)
    # No input was asked for.
    try:
        msg = kc.get_stdin_msg(timeout=0.5)
    except Exception:  # queue.Empty
        msg = None
    assert msg is None, msg
    # The kernel reads its next cell as usual.
    reply, msgs = run(kc, 'println!("still here");')
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "still here\n"


def test_interrupting_a_cell_that_waits_for_input_keeps_the_variables(km, kc):
    reply, _ = run(kc, "let before_input = 7;")
    assert reply["content"]["status"] == "ok"
    msg_id = kc.execute(
        "let mut line = String::new();\nstd::io::stdin().read_line(&mut line).unwrap();", allow_stdin=True
    )
    request = kc.get_stdin_msg(timeout=60)
    assert request["msg_type"] == "input_request"
    # The student presses stop instead of typing: the read fails and the cell ends, as
    # Python's input() raises KeyboardInterrupt; the process is not restarted.
    started = time.monotonic()
    km.interrupt_kernel()
    reply, msgs = collect(kc, msg_id, timeout=15)
    assert reply["content"]["ename"] == "Interrupted", [summary(m) for m in msgs]
    assert "were lost" not in reply["content"]["evalue"], reply["content"]["evalue"]
    assert time.monotonic() - started < 3, "it waited for the grace period: the process was restarted"
    reply, msgs = run(kc, "before_input")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "7"


def test_stdin_input_request(kc):
    requests = []

    def answer(msg):
        assert msg["msg_type"] == "input_request"
        requests.append(msg)
        kc.input("hello rust")

    reply, msgs = run(
        kc,
        "let mut line = String::new();\nstd::io::stdin().read_line(&mut line).unwrap();\n"
        'println!("typed: {}", line.trim_end());',
        allow_stdin=True,
        stdin_hook=answer,
    )
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert len(requests) == 1
    assert isinstance(requests[0]["content"]["prompt"], str)
    assert not requests[0]["content"]["password"]
    assert stream_text(msgs) == "typed: hello rust\n"


def test_a_command_cell_answers_at_once_and_a_mixed_cell_keeps_its_output(kc):
    # evcxr's `:` commands run nothing in the user process: the kernel must not wait for
    # output from it (it once waited 5 s for every `:vars`, `:fmt`, `:help`, ...).
    reply, msgs = run(kc, "let listed_variable = 1;")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    started = time.monotonic()
    reply, msgs = run(kc, ":vars")
    took = time.monotonic() - started
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    shown = stream_text(msgs) + result_text(msgs)
    assert "listed_variable: i32" in shown, [summary(m) for m in msgs]
    assert took < 2.5, f"`:vars` took {took:.1f} s"
    # Code after a command still runs, and the kernel still waits for all it does.
    reply, msgs = run(kc, ':vars\nfor i in 0..3000 { println!("line {i}"); }\npanic!("after the lines");')
    assert reply["content"]["status"] == "error", [summary(m) for m in msgs]
    assert reply["content"]["ename"] == "Panic"
    lines = stream_text(msgs).splitlines()
    assert [line for line in lines if line.startswith("line ")] == [f"line {i}" for i in range(3000)]


@pytest.mark.parametrize("format, value, shown", [
    ("{:#?}", "vec![1, 2]", "[\n    1,\n    2,\n]"),
    ("{:x?}", "vec![10u8, 255]", "[a, ff]"),
    ("{:#X?}", "255u8", "0xFF"),
    ("{:.2?}", "1.23456f64", "1.23"),
    ("{:5?}", "7", "    7"),
    ("value = {{{:?}}}", "7", "value = {7}"),
])
def test_fmt_sets_how_a_final_value_is_shown(kc, format, value, shown):
    try:
        reply, msgs = run(kc, f":fmt {format}")
        assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
        reply, msgs = run(kc, value)
        assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
        assert result_text(msgs) == shown
    finally:
        run(kc, ":fmt")
    reply, msgs = run(kc, value)
    assert result_text(msgs) == value.replace("f64", "").replace("u8", "").replace("vec!", "")


def test_fmt_at_the_top_of_a_cell_applies_to_that_cells_value_alone_shown(kc):
    try:
        reply, msgs = run(kc, ":fmt {:#?}\nvec![(1, 'a')]")
        assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
        assert result_text(msgs) == "[\n    (\n        1,\n        'a',\n    ),\n]"
        # No value: no result, only what the cell printed.
        reply, msgs = run(kc, ':fmt {:?}\nprintln!("printed");')
        assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
        assert not of_type(msgs, "execute_result"), [summary(m) for m in msgs]
        assert stream_text(msgs) == "printed\n"
    finally:
        run(kc, ":fmt")


def test_a_failed_cell_keeps_no_display_command(kc):
    # As evcxr: a cell's `:types` counts only if the cell succeeds.
    reply, _ = run(kc, ':types\npanic!("fails");')
    assert reply["content"]["status"] == "error"
    reply, msgs = run(kc, "5u8")
    assert result_text(msgs) == "5", [summary(m) for m in msgs]
    try:
        reply, msgs = run(kc, ":types\n6u8")
        assert result_text(msgs) == ": u8 = 6", [summary(m) for m in msgs]
    finally:
        run(kc, ":types")
    reply, msgs = run(kc, "7u8")
    assert result_text(msgs) == "7", [summary(m) for m in msgs]


def test_types_shows_the_type_of_a_final_value(kc):
    reply, msgs = run(kc, ":types")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    try:
        reply, msgs = run(kc, "5u8")
        assert result_text(msgs) == ": u8 = 5"
        reply, msgs = run(kc, 'String::from("text")')
        assert result_text(msgs) == ': alloc::string::String = "text"'
    finally:
        run(kc, ":types")
    reply, msgs = run(kc, "5u8")
    assert result_text(msgs) == "5"


@pytest.mark.parametrize("code, expected", [
    ("(0..2000).collect::<Vec<u32>>()", "[" + ", ".join(str(i) for i in range(2000)) + "]"),
    # More than one write of the user process can carry (4 MiB), cut between characters.
    ('"é".repeat(2_500_000)', '"' + "é" * 2_500_000 + '"'),
])
def test_a_long_final_value_is_the_cell_result_whole(kc, code, expected):
    reply, msgs = run(kc, code, timeout=120)
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs][:5]
    assert stream_text(msgs) == ""
    assert result_text(msgs) == expected
