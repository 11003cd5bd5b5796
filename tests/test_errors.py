"""Errors as Jupyter shows them: compile errors, panics, `?`, a dying process, aborts."""

from __future__ import annotations

import re

from conftest import (
    FIRST_CELL_TIMEOUT,
    collect,
    drain,
    parent_id,
    get_reply,
    of_type,
    plain,
    result_text,
    run,
    notice_text,
    stream_text,
    summary,
    the_error,
    wait_for_iopub,
)


def assert_error_reply(reply, error_msg, ename):
    """The execute_reply and the iopub error agree and name `ename`."""
    content = reply["content"]
    assert content["status"] == "error", content
    assert content["ename"] == ename, content
    assert error_msg["content"]["ename"] == ename
    assert error_msg["content"]["evalue"] == content["evalue"]
    assert isinstance(content["traceback"], list)
    assert error_msg["content"]["traceback"], "the error message has an empty traceback"


def test_compile_error(kc):
    reply, msgs = run(kc, 'let x: u32 = "a";')
    err = the_error(msgs)
    assert_error_reply(reply, err, "CompileError")
    assert not of_type(msgs, "execute_result")
    text = plain(err["content"]["evalue"] + "\n" + "\n".join(err["content"]["traceback"]))
    assert "mismatched types" in text, text
    # The location is given in the cell's own lines, not in the generated crate's.
    assert re.search(r"(?i)line\s*1\b|:1:\d+|^\s*1\s*[|│]", text, re.M), text
    # Compile errors are reported once, in the error message, not echoed on a stream too.
    assert not of_type(msgs, "stream"), [summary(m) for m in msgs]


def test_compile_error_location_is_cell_relative(kc):
    code = "let fine = 1;\n// a comment\nlet bad: u32 = \"a\";"
    reply, msgs = run(kc, code)
    err = the_error(msgs)
    assert_error_reply(reply, err, "CompileError")
    text = plain(err["content"]["evalue"] + "\n" + "\n".join(err["content"]["traceback"]))
    assert re.search(r"(?i)line\s*3\b|:3:\d+|^\s*3\s*[|│]", text, re.M), text
    assert 'let bad: u32 = "a";' in text, text


def test_panic(kc):
    reply, msgs = run(kc, 'panic!("boom")')
    err = the_error(msgs)
    assert_error_reply(reply, err, "Panic")
    assert "boom" in err["content"]["evalue"]
    # The panic is reported once: the default hook's "thread 'main' panicked at" text is not
    # echoed on stderr.
    assert "panicked" not in stream_text(msgs, "stderr")
    assert not of_type(msgs, "execute_result")


def test_a_cell_that_stops_early_says_which_variables_are_gone(kc):
    ok_reply, _ = run(kc, 'let earlier = String::from("e");\nlet mut log = vec![1];')
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    reply, msgs = run(kc, 'log.push(2);\nlet fresh = 5;\nlet moved = earlier;\nlet r: Result<u8, String> = Err("x".into());\nr?;')
    assert reply["content"]["status"] == "error"
    traceback = plain("\n".join(reply["content"]["traceback"]))
    assert "did not finish" in traceback and "gone" in traceback, traceback
    # What the note says: made and moved variables are gone, changed ones are kept.
    reply, msgs = run(kc, "log")
    assert reply["content"]["status"] == "ok" and result_text(msgs) == "[1, 2]", reply["content"]
    for gone in ("fresh", "moved", "earlier"):
        reply, _ = run(kc, gone)
        assert reply["content"]["ename"] == "CompileError", (gone, reply["content"])


def test_a_variable_lost_to_a_redefined_type_is_told_under_the_cell_that_lost_it(kc):
    run(kc, "#[derive(Debug)] struct Spot { x: i32 }")
    reply, _ = run(kc, "let spot = Spot { x: 1 };")
    assert reply["content"]["status"] == "ok", reply["content"]
    # evcxr finds the loss when the next code runs: here, in the same cell.
    reply, msgs = run(kc, "#[derive(Debug)] struct Spot { x: i32, y: i32 }\nlet after = 1;")
    assert reply["content"]["status"] == "ok", reply["content"]
    said = notice_text(msgs)
    assert "`spot` was lost: the type of its value was defined again" in said, said
    assert "redefined" not in said, "evcxr's own line is replaced, not repeated"
    reply, _ = run(kc, "spot")
    assert reply["content"]["ename"] == "CompileError", reply["content"]


def test_a_return_in_the_cells_own_code_is_refused_and_loses_nothing(kc):
    ok_reply, _ = run(kc, 'let precious = String::from("kept");')
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    reply, msgs = run(kc, "let b = 1;\nif precious.len() > 3 { return; }\nprintln!(\"after\");")
    err = the_error(msgs)
    assert_error_reply(reply, err, "CompileError")
    traceback = plain("\n".join(err["content"]["traceback"]))
    assert "cell line 2, column 25" in traceback and "async fn" in traceback, traceback
    # `return` inside what the cell defines is fine, and the next cell finds every variable.
    reply, msgs = run(kc, "fn first_word(s: &str) -> &str { if let Some(i) = s.find(' ') { return &s[..i]; } s }\n"
                          "let task = tokio::spawn(async { return 7; });\n"
                          "(first_word(&precious), task.await.unwrap())")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert result_text(msgs) == '("kept", 7)'


def test_panic_message_is_formatted(kc):
    reply, msgs = run(kc, 'let n = 6 * 7;\npanic!("answer was {}", n);')
    err = the_error(msgs)
    assert_error_reply(reply, err, "Panic")
    assert "answer was 42" in err["content"]["evalue"]


def test_failed_assert_eq(kc):
    reply, msgs = run(kc, "assert_eq!(1, 2);")
    err = the_error(msgs)
    assert_error_reply(reply, err, "Panic")
    evalue = err["content"]["evalue"]
    assert "assertion" in evalue and "left" in evalue and "right" in evalue, evalue


def test_unwrap_none(kc):
    reply, msgs = run(kc, "let o: Option<i32> = None;\no.unwrap();")
    err = the_error(msgs)
    assert_error_reply(reply, err, "Panic")
    assert "called `Option::unwrap()` on a `None` value" in err["content"]["evalue"]


def test_question_mark_error(kc):
    reply, msgs = run(kc, 'let n: i32 = "x".parse()?;\nprintln!("not reached {n}");')
    err = the_error(msgs)
    content = reply["content"]
    assert content["status"] == "error"
    assert "ParseIntError" in content["ename"], content
    assert err["content"]["ename"] == content["ename"]
    assert "invalid digit" in content["evalue"], content
    assert "not reached" not in stream_text(msgs)
    # The cell's only `?` is the one the error came through.
    assert "cell line 1, column 25" in plain("\n".join(content["traceback"])), content["traceback"]


def test_question_mark_on_an_option_gets_a_hint(kc):
    reply, msgs = run(kc, "let maybe: Option<i32> = None;\nlet value = maybe?;")
    assert reply["content"]["ename"] == "CompileError"
    assert "line 2" in reply["content"]["evalue"]
    assert "ok_or" in plain("\n".join(reply["content"]["traceback"]))


def test_a_closure_lives_in_its_cell_and_a_later_use_gets_a_hint(kc):
    """kernel/engine/src/variable_types.rs: a closure's type cannot be written in a later cell,
    so it is not kept: its cell runs (as in a program, a local lives in its scope), and a later
    cell that names it is told why it is gone and how to keep one (box it)."""
    reply, msgs = run(kc, "let add_one = |x: u32| x + 1;\nadd_one(41)")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "42"
    reply, msgs = run(kc, "add_one(1)")
    err = the_error(msgs)
    assert_error_reply(reply, err, "CompileError")
    text = plain("\n".join(err["content"]["traceback"]))
    assert "not kept" in text and "let add_one: Box<dyn Fn(" in text, text
    assert "evcxr" not in text, text
    ok_reply, _ = run(kc, "let add_one: Box<dyn Fn(u32) -> u32> = Box::new(|x| x + 1);")
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    reply, msgs = run(kc, "add_one(41)")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert result_text(msgs) == "42"


def test_futures_bound_in_a_tuple_live_in_their_cell_and_a_later_use_gets_a_hint(kc):
    ok_reply, _ = run(kc, "async fn add(a: i32, b: i32) -> i32 { a + b }")
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    reply, msgs = run(kc, "let (first, second) = (add(1, 2), add(3, 4));\nsecond.await")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "7"
    reply, msgs = run(kc, "first.await")
    err = the_error(msgs)
    text = plain("\n".join(err["content"]["traceback"]))
    assert "tokio::join!" in text and "own `let`" in text and "evcxr" not in text, text
    reply, msgs = run(kc, "let (first, second) = tokio::join!(add(1, 2), add(3, 4));\nfirst + second")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert result_text(msgs) == "10"


def test_an_rc_moved_into_a_task_and_a_kept_guard_get_hints_that_fit(kc):
    reply, msgs = run(kc, "let shared = std::rc::Rc::new(5);\ntokio::spawn(async move { println!(\"{shared}\"); });")
    err = the_error(msgs)
    assert_error_reply(reply, err, "CompileError")
    traceback = plain("\n".join(err["content"]["traceback"]))
    assert "what the task captures" in traceback and "`Arc`" in traceback, traceback
    ok_reply, _ = run(kc, "let counter = std::sync::Mutex::new(5);")
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    reply, msgs = run(kc, "let guard = counter.lock().unwrap();\nprintln!(\"{}\", *guard);")
    err = the_error(msgs)
    assert_error_reply(reply, err, "CompileError")
    traceback = plain("\n".join(err["content"]["traceback"]))
    assert "cell line 1" in traceback and "a guard from `.lock()`" in traceback, traceback


def test_kernel_survives_panic(kc):
    reply, msgs = run(kc, "let kept = 5;")
    assert reply["content"]["status"] == "ok"
    reply, msgs = run(kc, 'panic!("in between")')
    assert reply["content"]["status"] == "error"
    reply, msgs = run(kc, "kept * 2")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "10"


def test_process_exit_restarts(kc):
    reply, msgs = run(kc, 'println!("last words");\nstd::process::exit(3);', timeout=120)
    err = the_error(msgs)
    assert_error_reply(reply, err, "KernelRestarted")
    assert "std::process::exit` (exit status: 3)" in err["content"]["evalue"], err["content"]["evalue"]
    # What the cell printed just before is not lost with the process.
    assert stream_text(msgs, "stdout") == "last words\n", [summary(m) for m in msgs]
    # Nor in the first cell of the new process.
    reply, msgs = run(kc, 'println!("again");\nstd::process::exit(4);', timeout=120)
    assert_error_reply(reply, the_error(msgs), "KernelRestarted")
    assert stream_text(msgs, "stdout") == "again\n", [summary(m) for m in msgs]
    # The next cell runs in the fresh process.
    reply, msgs = run(kc, "let y = 2; y", timeout=120)
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "2"


def test_a_task_that_ends_the_process_while_idle_is_told_at_once_and_blames_no_later_cell(kc):
    ok_reply, _ = run(kc, "let kept = 5;")
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    msg_id = kc.execute(
        "tokio::spawn(async {\n"
        "    tokio::time::sleep(std::time::Duration::from_millis(300)).await;\n"
        "    println!(\"the task says goodbye\");\n"
        "    std::process::exit(3);\n"
        "});"
    )
    assert get_reply(kc, msg_id, 120)["content"]["status"] == "ok"
    # Told under the cell whose output came last (this one), while nothing runs.
    told = wait_for_iopub(kc, msg_id, lambda m: "ended while no cell was running" in notice_text([m]), 20)
    assert "std::process::exit" in notice_text(told), notice_text(told)
    assert "the task says goodbye" in "".join(m["content"].get("text", "") for m in told), told
    # The next cell runs at once in the new process; only the variables are gone.
    reply, msgs = run(kc, "1 + 1", timeout=120)
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert result_text(msgs) == "2"
    reply, _ = run(kc, "kept")
    assert reply["content"]["ename"] == "CompileError", reply["content"]


def test_a_task_that_ends_the_process_while_the_next_cell_compiles_does_not_fail_that_cell(kc):
    ok_reply, _ = run(kc, "let kept = 5;")
    assert ok_reply["content"]["status"] == "ok", ok_reply["content"]
    # Sent back to back: the task ends the process while the second cell compiles (or just
    # before it starts, which is told the same way).
    spawning = kc.execute(
        "tokio::spawn(async {\n"
        "    tokio::time::sleep(std::time::Duration::from_millis(150)).await;\n"
        "    std::process::exit(3);\n"
        "});"
    )
    innocent = kc.execute(
        "#[derive(Debug, Clone, PartialEq, Default)]\n"
        "struct Report { names: Vec<String>, counts: std::collections::BTreeMap<String, u64> }\n"
        "let report = Report::default();\n"
        'println!("innocent {:?}", report == report.clone());'
    )
    assert get_reply(kc, spawning, 120)["content"]["status"] == "ok"
    reply, msgs = collect(kc, innocent, 120)
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert stream_text(msgs, "stdout") == "innocent true\n", [summary(m) for m in msgs]
    told = notice_text(msgs)
    assert "ended while no cell was running" in told and "exit status: 3" in told, told
    # Only the variables are gone, and the hint says why.
    reply, msgs = run(kc, "kept")
    assert reply["content"]["ename"] == "CompileError", reply["content"]


def test_no_tool_chatter(kc):
    reply, msgs = run(kc, "let quiet = 40 + 2;\nquiet")
    assert reply["content"]["status"] == "ok"
    assert result_text(msgs) == "42"
    assert not of_type(msgs, "stream"), [summary(m) for m in msgs]
    reply, msgs = run(kc, 'println!("plain");')
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs, "stdout") == "plain\n"
    assert stream_text(msgs, "stderr") == ""


def test_stop_on_error_aborts_queued_cells(kc):
    # Sent back to back: the 2nd and 3rd are queued while the 1st compiles and panics.
    first = kc.execute('panic!("first fails")', stop_on_error=True)
    second = kc.execute('println!("second ran");')
    third = kc.execute('println!("third ran");')
    r1, msgs1 = collect(kc, first, 60)
    assert r1["content"]["status"] == "error"
    assert r1["content"]["ename"] == "Panic"
    r2 = get_reply(kc, second, 60)
    r3 = get_reply(kc, third, 60)
    assert r2["content"]["status"] == "aborted", r2["content"]
    assert r3["content"]["status"] == "aborted", r3["content"]
    # Aborted cells do not run.
    later = [m for m in drain(kc, 2.0) if parent_id(m) in (second, third)]
    assert not of_type(later, "stream"), [summary(m) for m in later]
    assert not of_type(later, "execute_result"), [summary(m) for m in later]
    assert not of_type(msgs1, "stream"), [summary(m) for m in msgs1]
    # The kernel takes new work afterwards.
    reply, msgs = run(kc, 'println!("after");')
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "after\n"


def test_no_stop_on_error_keeps_queued_cells(kc):
    first = kc.execute('panic!("fails alone")', stop_on_error=False)
    second = kc.execute('println!("second ran");')
    r1, _ = collect(kc, first, 60)
    assert r1["content"]["status"] == "error"
    r2, msgs2 = collect(kc, second, 60)
    assert r2["content"]["status"] == "ok", r2["content"]
    assert stream_text(msgs2) == "second ran\n"


def test_execution_count_and_silent(fresh_kernel):
    _, kc = fresh_kernel

    # A silent cell runs, but publishes no execute_input, no result, and takes no number.
    reply, msgs = run(kc, "let hidden = 5;\nhidden", silent=True, timeout=FIRST_CELL_TIMEOUT)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert not of_type(msgs, "execute_input"), [summary(m) for m in msgs]
    assert not of_type(msgs, "execute_result"), [summary(m) for m in msgs]
    # Nothing from the toolchain leaks into the output of the kernel's first compile.
    assert not of_type(msgs, "stream"), [summary(m) for m in msgs]

    # The first numbered cell is 1: on the reply, execute_input and execute_result.
    reply, msgs = run(kc, "hidden + 1")
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    assert reply["content"]["execution_count"] == 1
    (inp,) = of_type(msgs, "execute_input")
    assert inp["content"]["execution_count"] == 1
    assert inp["content"]["code"] == "hidden + 1"
    (res,) = of_type(msgs, "execute_result")
    assert res["content"]["execution_count"] == 1
    assert res["content"]["data"]["text/plain"] == "6"
    assert not of_type(msgs, "stream"), [summary(m) for m in msgs]

    # busy first, idle last, execute_input before any output.
    states = [m["content"]["execution_state"] for m in of_type(msgs, "status")]
    assert states == ["busy", "idle"]
    assert msgs[0]["msg_type"] == "status" and msgs[-1]["msg_type"] == "status"
    assert msgs[1]["msg_type"] == "execute_input"

    reply, msgs = run(kc, 'println!("two");')
    assert reply["content"]["execution_count"] == 2
    assert of_type(msgs, "execute_input")[0]["content"]["execution_count"] == 2

    # Silent again: the count does not move.
    reply, msgs = run(kc, "let more = 1;", silent=True)
    assert not of_type(msgs, "execute_input")
    # An error takes a number too.
    reply, msgs = run(kc, 'panic!("three")')
    assert reply["content"]["execution_count"] == 3
    reply, msgs = run(kc, "more")
    assert reply["content"]["execution_count"] == 4
    assert result_text(msgs) == "1"


def test_segfault_is_named_and_shows_no_internal_backtrace(kc):
    reply, msgs = run(kc, "unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u8>(), 1); }")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KernelRestarted"
    assert "segmentation fault" in reply["content"]["evalue"]
    assert stream_text(msgs, "stderr") == "", "kernel internals leaked to stderr"
    reply, msgs = run(kc, 'println!("after the crash");')
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "after the crash\n"


def test_a_panic_that_panics_again_while_unwinding_names_the_first(kc):
    reply, msgs = run(kc, "struct PanicsOnDrop;\n"
                          'impl Drop for PanicsOnDrop { fn drop(&mut self) { panic!("in drop"); } }\n'
                          "let _guard = PanicsOnDrop;\n"
                          'panic!("the first panic");')
    assert reply["content"]["ename"] == "KernelRestarted"
    assert "aborted" in reply["content"]["evalue"]
    assert "It panicked first: the first panic" in plain("\n".join(reply["content"]["traceback"]))
    reply, msgs = run(kc, 'println!("after the abort");')
    assert reply["content"]["status"] == "ok"


def test_flood_of_output_arrives_whole_in_order_and_merged(kc):
    reply, msgs = run(kc, 'for i in 0..100000 { println!("line {i}"); }', timeout=120)
    assert reply["content"]["status"] == "ok"
    text = stream_text(msgs)
    lines = text.splitlines()
    assert lines == [f"line {i}" for i in range(100000)]
    stream_messages = [m for m in msgs if m["msg_type"] == "stream"]
    assert len(stream_messages) < 100000 / 10, len(stream_messages)
