"""Notebooks run headless, as CI systems and nbgrader do: nbconvert --execute and nbclient."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from conftest import DISPLAY_NAME, KERNEL_NAME, STARTUP_TIMEOUT, execute_notebook, plain


# nbclient's limit for one cell (the first one also builds what later cells reuse).
CELL_TIMEOUT = 120


def make_notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": DISPLAY_NAME, "language": "rust"}
    nb.metadata["language_info"] = {"name": "rust"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    return nb


def jupyter() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter")
    assert found, "no jupyter command"
    return [found]


def nbconvert_execute(path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = path.with_name(path.stem + ".out.ipynb")
    proc = subprocess.run(
        [
            *jupyter(),
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            f"--ExecutePreprocessor.timeout={CELL_TIMEOUT}",
            f"--ExecutePreprocessor.startup_timeout={STARTUP_TIMEOUT}",
            *extra,
            "--output-dir",
            str(path.parent),
            "--output",
            out.stem,
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=path.parent,
    )
    return proc, out


def outputs(nb: nbformat.NotebookNode, index: int) -> list[dict]:
    return nb.cells[index]["outputs"]


def test_nbconvert_clean_notebook(tmp_path):
    path = tmp_path / "clean.ipynb"
    nbformat.write(make_notebook("let x = 20;", 'println!("x = {}", x);', "x * 2 + 2"), path)
    proc, out = nbconvert_execute(path)
    assert proc.returncode == 0, proc.stderr
    nb = nbformat.read(out, as_version=4)
    assert [c["execution_count"] for c in nb.cells] == [1, 2, 3]
    assert outputs(nb, 0) == []
    (stream,) = outputs(nb, 1)
    assert stream["output_type"] == "stream" and stream["name"] == "stdout"
    assert stream["text"] == "x = 20\n"
    (result,) = outputs(nb, 2)
    assert result["output_type"] == "execute_result"
    assert result["data"]["text/plain"] == "42"
    assert result["execution_count"] == 3


PANICKING = (
    "let a = 1;",
    # The message is computed, so that finding "kaboom 42" proves the panic was reported
    # (the source text only says "kaboom {}").
    'panic!("kaboom {}", 6 * 7);',
    'println!("after the panic");',
)


def test_nbconvert_fails_on_panic(tmp_path):
    path = tmp_path / "panics.ipynb"
    nbformat.write(make_notebook(*PANICKING), path)
    proc, out = nbconvert_execute(path)
    assert proc.returncode != 0
    # nbconvert prints the cell's source and the kernel's traceback, which names the panic
    # and its message (the source only says "kaboom {}").
    output = plain(proc.stdout + proc.stderr)
    assert re.search(r"(?i)panic\w*\W[^\n]*kaboom 42", output), output


def test_nbconvert_allow_errors_keeps_the_error(tmp_path):
    path = tmp_path / "panics.ipynb"
    nbformat.write(make_notebook(*PANICKING), path)
    proc, out = nbconvert_execute(path, "--allow-errors")
    assert proc.returncode == 0, proc.stderr
    nb = nbformat.read(out, as_version=4)
    errors = [o for o in outputs(nb, 1) if o["output_type"] == "error"]
    assert len(errors) == 1, outputs(nb, 1)
    assert errors[0]["ename"] == "Panic"
    assert "kaboom 42" in errors[0]["evalue"]
    # The later cell still ran, in the same kernel.
    texts = [o.get("text") for o in outputs(nb, 2)]
    assert texts == ["after the panic\n"], outputs(nb, 2)


def test_nbclient_outputs(tmp_path):
    nb = make_notebook(
        "let v: Vec<i32> = (1..=4).collect();",
        'println!("sum = {}", v.iter().sum::<i32>());',
        r'println!("EVCXR_BEGIN_CONTENT text/html\n<b>hi</b>\nEVCXR_END_CONTENT");',
        "let answer = tokio::spawn(async { 6 * 7 }).await.unwrap();\nanswer",
        'format!("{:?}", v)',
    )
    execute_notebook(nb, tmp_path, CELL_TIMEOUT)
    assert outputs(nb, 0) == []
    assert [(o["output_type"], o.get("text")) for o in outputs(nb, 1)] == [("stream", "sum = 10\n")]
    (display,) = outputs(nb, 2)
    assert display["output_type"] == "display_data"
    assert display["data"]["text/html"] == "<b>hi</b>"
    (answer,) = outputs(nb, 3)
    assert answer["output_type"] == "execute_result"
    assert answer["data"]["text/plain"] == "42"
    (formatted,) = outputs(nb, 4)
    assert formatted["data"]["text/plain"] == '"[1, 2, 3, 4]"'
