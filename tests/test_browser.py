"""JupyterLab in a real browser: what a student sees when running a lesson cell by cell.

Debian's chromium, driven by Playwright, opens a notebook in JupyterLab (the pinned one in
.venv, with the kernelspec scripts/setup installed) and runs its cells with Shift+Enter and the
toolbar's stop button, as a student does. nbclient and nbconvert, which the other tests use,
record a cell's output only until the cell's reply; JupyterLab keeps listening, so this is where
a task's late output and the stop button can be seen as a student sees them.

scripts/test installs chromium (Debian's package) when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from conftest import DISPLAY_NAME, KERNEL_NAME

VENV_BIN = Path(sys.prefix) / "bin"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As on this machine's closed network: no background connections Chromium would wait on.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

# Each cell is run by the test in order; the comments say what it shows.
LESSON = [
    # 0: a task that waits for a signal, spawned by this cell
    'let (go, signal) = tokio::sync::oneshot::channel::<()>();\n'
    'let waiter = tokio::spawn(async move {\n'
    '    signal.await.unwrap();\n'
    '    println!("the task of cell 1 woke up");\n'
    '});\n'
    'println!("cell 1 spawned a task");',
    # 1: wakes it; the task's print belongs under cell 1, not here
    'go.send(()).unwrap();\n'
    'waiter.await.unwrap();\n'
    'println!("cell 2 joined the task");',
    # 2: a task that prints after its cell has finished, while the kernel is idle
    'tokio::spawn(async {\n'
    '    tokio::time::sleep(std::time::Duration::from_secs(2)).await;\n'
    '    println!("printed while the kernel was idle");\n'
    '});',
    # 3: a variable the interrupt must not lose
    'let kept = 41;',
    # 4: stopped with the toolbar's stop button
    'tokio::time::sleep(std::time::Duration::from_secs(60)).await;',
    # 5: the variable survived
    'println!("kept + 1 = {}", kept + 1);',
    # 6: a failed assertion is an error under its cell
    'assert_eq!(kept, 40, "kept changed");',
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving an empty folder; yields (folder, the server's URL, its token)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: scripts/test installs Debian's package "
                    "(apt-get install chromium)", pytrace=False)
    root = tmp_path_factory.mktemp("lab")
    port, token = free_port(), secrets.token_hex(16)
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [str(VENV_BIN / "jupyter"), "lab", "--no-browser", "--allow-root", f"--port={port}",
         "--port-retries=0", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
         f"--LabApp.workspaces_dir={root / 'workspaces'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"JupyterLab did not start: see {root / 'jupyterlab.log'}")
                time.sleep(0.5)
        yield root, base, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def browser(lab):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            shut_down_kernels(lab)


def shut_down_kernels(lab) -> None:
    """Ends the notebooks' kernels (JupyterLab keeps them when a page closes), so that the next
    test does not share the two cores with them."""
    _, base, token = lab
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels", headers=headers), timeout=10) as response:
        kernels = json.loads(response.read())
    for kernel in kernels:
        request = urllib.request.Request(f"{base}/api/kernels/{kernel['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(request, timeout=30).close()


def open_notebook(lab, browser, name: str, cells: list[str]) -> Page:
    """Writes a notebook of `cells` for the rust-async kernel and opens it in a new page,
    once its kernel (started by JupyterLab from the notebook's metadata) is idle."""
    root, base, token = lab
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
             "outputs": [], "source": source}
            for i, source in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": KERNEL_NAME, "display_name": DISPLAY_NAME,
                                    "language": "rust"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (root / name).write_text(json.dumps(notebook))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # `reset`: a workspace of its own, not the one an earlier test left with its notebook open
    # (the status bar then speaks of this notebook's kernel only).
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.get_by_text(f"{DISPLAY_NAME} | Idle").wait_for(timeout=120_000)
    return page


@contextlib.contextmanager
def screenshot_on_failure(lab, page: Page, name: str):
    """A failing step leaves a screenshot of the page beside JupyterLab's log."""
    try:
        yield
    except Exception:
        shot = lab[0] / f"{name}-failure.png"
        page.screenshot(path=shot)
        print(f"screenshot of the page at the failure: {shot}")
        raise


def cell(page: Page, index: int) -> Locator:
    return page.locator(".jp-Notebook .jp-CodeCell").nth(index)


def output_text(page: Page, index: int) -> str:
    return cell(page, index).locator(".jp-OutputArea").inner_text()


def shows(page: Page, index: int, text: str, timeout_s: float = 15) -> None:
    """Waits until the output of cell `index` shows `text`."""
    cell(page, index).locator(".jp-OutputArea", has_text=text).wait_for(timeout=timeout_s * 1000)


def run(page: Page, index: int, execution_count: int, timeout_s: float = 120) -> None:
    """Selects cell `index`, presses Shift+Enter, waits for its prompt to show the count."""
    cell(page, index).locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")
    cell(page, index).locator(".jp-InputArea-prompt", has_text=f"[{execution_count}]").wait_for(
        timeout=timeout_s * 1000)


def test_a_lesson_in_jupyterlab_task_output_stop_button_and_errors(lab, browser):
    page = open_notebook(lab, browser, "lesson.ipynb", LESSON)
    with screenshot_on_failure(lab, page, "lesson"):
        run(page, 0, 1)
        shows(page, 0, "cell 1 spawned a task")

        # The task prints while cell 2 runs; JupyterLab shows it under the cell that spawned it.
        run(page, 1, 2)
        shows(page, 0, "the task of cell 1 woke up")
        shows(page, 1, "cell 2 joined the task")
        assert "woke up" not in output_text(page, 1)

        # Cell 3 replies at once; its task prints 2 s later, with nothing running.
        run(page, 2, 3)
        shows(page, 2, "printed while the kernel was idle")
        for other in (0, 1):
            assert "idle" not in output_text(page, other)

        run(page, 3, 4)

        # The stop button cancels the sleeping cell; an `Interrupted` error shows under it.
        cell(page, 4).locator(".jp-InputArea-prompt").click()
        page.keyboard.press("Shift+Enter")
        cell(page, 4).locator(".jp-InputArea-prompt", has_text="[*]").wait_for(timeout=10_000)
        time.sleep(1)  # let the cell reach its `.await`
        page.locator("[data-command='notebook:interrupt-kernel']").click()
        shows(page, 4, "Variables from earlier cells are kept")
        assert output_text(page, 4).startswith("Interrupted")
        cell(page, 4).locator(".jp-InputArea-prompt", has_text="[5]").wait_for(timeout=10_000)

        run(page, 5, 6)
        shows(page, 5, "kept + 1 = 42")

        # A failed assertion is shown as the cell's error (red), with its location.
        run(page, 6, 7)
        error = cell(page, 6).locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        error.filter(has_text="kept changed").wait_for(timeout=10_000)
        text = error.inner_text()
        assert text.startswith("panic") and "cell line 1, column 1" in text, text


# Where the browser test leaves its picture of a timeline (README shows a copy of it:
# notebooks/figures/timeline-lesson-02.png).
TIMELINE_SCREENSHOT = Path(__file__).resolve().parents[1] / "build" / "screenshots" / "timeline-lesson-02.png"


def test_lesson_02_draws_its_timelines_in_jupyterlab(lab, browser):
    """Lesson 02 run as a student runs it (Run All Cells): the timeline of two tasks blocking
    the one-thread loop is drawn under its cell; a screenshot of it is saved."""
    root, base, token = lab
    lesson = Path(__file__).resolve().parents[1] / "notebooks" / "02-event-loop.ipynb"
    shutil.copy(lesson, root / lesson.name)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/lab/tree/{lesson.name}?reset&token={token}")
    page.get_by_text(f"{DISPLAY_NAME} | Idle").wait_for(timeout=120_000)
    with screenshot_on_failure(lab, page, "lesson-02"):
        page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        blocking = page.locator(".jp-Notebook .jp-CodeCell", has_text="blocks the only thread")
        figure = blocking.locator(".jp-OutputArea-output[data-mime-type='image/svg+xml']")
        figure.wait_for(timeout=240_000)
        figure.scroll_into_view_if_needed()
        box = figure.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 100, box
        TIMELINE_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        figure.screenshot(path=str(TIMELINE_SCREENSHOT))
        assert TIMELINE_SCREENSHOT.stat().st_size > 5_000
        # The lesson ran to its end: the progress bar of its last section is shown.
        page.locator(".jp-Notebook .jp-CodeCell", has_text="downloads started").locator("progress").wait_for(
            timeout=120_000)


def offers(page: Page, typed: str, candidate: str) -> None:
    """Types `typed` over the cell being edited and presses Tab until the completer offers
    `candidate`. JupyterLab drops a kernel's completions that take over 1 s (its
    `providerTimeout`), as while a cold kernel still analyses std and tokio; a student presses
    Tab again, and so does this."""
    deadline = time.monotonic() + 90
    while True:
        page.keyboard.press("Control+a")
        page.keyboard.type(typed)
        page.keyboard.press("Tab")
        item = page.locator(".jp-Completer .jp-Completer-item", has_text=candidate)
        try:
            item.wait_for(timeout=3_000)
            break
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise
    page.keyboard.press("Escape")


def test_tab_completion_and_the_shift_tab_tooltip_in_jupyterlab(lab, browser):
    page = open_notebook(lab, browser, "editor.ipynb", ['let greeting = String::from("hi");', ""])
    with screenshot_on_failure(lab, page, "editor"):
        run(page, 0, 1)
        cell(page, 1).locator(".cm-content").click()
        # A path into tokio, then a method of a variable made in an earlier cell.
        offers(page, "tokio::time::sle", "sleep_until")
        offers(page, "greeting.to_upp", "to_uppercase")

        # Shift+Tab shows the docs: those of the kernel's own `tokio::spawn`.
        page.keyboard.press("Control+a")
        page.keyboard.type("tokio::spawn")
        page.keyboard.press("Shift+Tab")
        tooltip = page.locator(".jp-Tooltip", has_text="pub fn spawn")
        tooltip.wait_for(timeout=30_000)
        assert "JoinHandle" in tooltip.inner_text()
