"""Spare kernels: a kernel started ahead of time serves the next notebook.

Spares are off unless RUST_ASYNC_SPARE=1 (a cold kernel starts in about a second); this module
turns them on for its own tests. A kernel that Jupyter starts first claims a spare (started in the background by an earlier
kernel, or by `rust-async-kernel spare`); the process Jupyter started then only stands for the
spare, which serves the notebook with an engine that is already up. These tests check that the
notebook cannot tell: user code runs in the notebook's directory and environment, shutdown and
restart behave, killing the kernel process ends the spare, and a spare is only claimed by a
kernel of the same configuration. (How much time it saves is for scripts/bench.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    FIRST_CELL_TIMEOUT,
    kernel_binary,
    result_text,
    run,
    start_kernel,
    stop_kernel,
    summary,
)

SPARES = Path(os.environ.get("TMPDIR", "/tmp")) / f"rust-async-spares-{os.getuid()}"


@pytest.fixture(scope="module", autouse=True)
def _spares_on():
    """Spares on for this module's kernels and `spare` commands (they inherit the setting)."""
    before = os.environ.get("RUST_ASYNC_SPARE")
    os.environ["RUST_ASYNC_SPARE"] = "1"
    yield
    spare_command("--stop")
    if before is None:
        del os.environ["RUST_ASYNC_SPARE"]
    else:
        os.environ["RUST_ASYNC_SPARE"] = before


def spare_command(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(kernel_binary()), "spare", *args], capture_output=True, text=True, timeout=timeout)


def waiting_spare_pids() -> set[int]:
    return {int(p.stem.rsplit("-", 1)[1]) for p in SPARES.glob("*.sock")}


@pytest.fixture
def ready_spare() -> int:
    """A warmed-up spare kernel, alone: its pid."""
    spare_command("--stop")
    started = spare_command()
    assert started.returncode == 0, started.stderr
    waited = spare_command("--wait")
    assert waited.returncode == 0, waited.stderr
    pids = waiting_spare_pids()
    assert len(pids) == 1, pids
    return pids.pop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def user_process_pid(kc) -> int:
    reply, msgs = run(kc, "std::process::id()", timeout=FIRST_CELL_TIMEOUT)
    assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
    return int(result_text(msgs))


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if parent_of(int(stat.parent.name)) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return found


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_claimed_spare_runs_user_code_in_the_notebooks_directory_and_environment(ready_spare, tmp_path):
    env = {**os.environ, "LESSON_DATA": "from the notebook's environment"}
    km, kc = start_kernel(cwd=str(tmp_path), env=env)
    try:
        # The spare serves this notebook: user code runs in its engine's process.
        assert parent_of(user_process_pid(kc)) == ready_spare
        assert ready_spare not in waiting_spare_pids()

        reply, msgs = run(kc, 'std::env::current_dir().unwrap().display().to_string()')
        assert result_text(msgs) == f'"{tmp_path}"', [summary(m) for m in msgs]
        reply, msgs = run(kc, 'std::env::var("LESSON_DATA").unwrap()')
        assert result_text(msgs) == '"from the notebook\'s environment"'
        # A relative path is the notebook's.
        (tmp_path / "data.txt").write_text("seven")
        reply, msgs = run(kc, 'tokio::fs::read_to_string("data.txt").await.unwrap()')
        assert result_text(msgs) == '"seven"', [summary(m) for m in msgs]

        # An ordinary kernel otherwise: state across cells, the shared runtime.
        run(kc, "let handle = tokio::spawn(async { 6 * 7 });")
        reply, msgs = run(kc, "handle.await.unwrap()")
        assert result_text(msgs) == "42", [summary(m) for m in msgs]

        # Shutting down ends the spare, and the kernel process exits with its status.
        kc.shutdown()
        assert wait_until(lambda: not km.is_alive(), 15)
        assert km.provisioner.process.poll() == 0  # type: ignore[union-attr]
        assert wait_until(lambda: not alive(ready_spare), 10)
    finally:
        stop_kernel(km, kc)


def test_spares_are_off_unless_asked_for():
    spare_command("--stop")
    env = {name: value for name, value in os.environ.items() if name != "RUST_ASYNC_SPARE"}
    subprocess.run([str(kernel_binary()), "spare"], env=env, check=True, timeout=30)
    km, kc = start_kernel(env=env)
    try:
        user_process_pid(kc)  # the kernel is up: it would have started a spare by now
        time.sleep(2)
        assert waiting_spare_pids() == set()
    finally:
        stop_kernel(km, kc)


def test_spares_are_off_under_a_pods_memory_limit():
    """A student's pod (1 GiB) has no room for a second kernel: RUST_ASYNC_SPARE=1 is
    overruled (kernel/engine/src/memory_limit.rs), by `spare` and by a kernel alike."""
    spare_command("--stop")
    env = {**os.environ, "RUST_ASYNC_MEMORY_LIMIT": "1G"}
    subprocess.run([str(kernel_binary()), "spare"], env=env, check=True, timeout=30)
    km, kc = start_kernel(env=env)
    try:
        user_process_pid(kc)  # the kernel is up: it would have started a spare by now
        time.sleep(2)
        assert waiting_spare_pids() == set()
    finally:
        stop_kernel(km, kc)


def test_a_waiting_spare_exits_soon_after_its_server():
    """A spare serves the notebooks of one server: the process that ran `spare` (scripts/lab,
    which becomes JupyterLab), or the Jupyter server of the kernel that left it. It does not
    wait out its idle time once that server is gone."""
    spare_command("--stop")
    server = subprocess.Popen(["sh", "-c", f"'{kernel_binary()}' spare && exec sleep 600"])
    try:
        assert wait_until(lambda: len(waiting_spare_pids()) == 1, 30)
        (pid,) = waiting_spare_pids()
        assert spare_command("--wait").returncode == 0
        server.kill()
        server.wait(timeout=10)
        # The spare checks every 5 s (kernel/server/src/spare.rs: SERVER_CHECK_INTERVAL).
        assert wait_until(lambda: not alive(pid), 30), "the spare outlived its server"
    finally:
        server.kill()


def test_a_shutdown_request_on_the_shell_channel_ends_a_claimed_spare_as_on_control(ready_spare):
    km, kc = start_kernel()
    try:
        assert parent_of(user_process_pid(kc)) == ready_spare
        kc.shell_channel.send(kc.session.msg("shutdown_request", {"restart": False}))
        assert wait_until(lambda: not km.is_alive(), 15)
        assert km.provisioner.process.poll() == 0  # type: ignore[union-attr]
        assert wait_until(lambda: not alive(ready_spare), 10)
    finally:
        stop_kernel(km, kc)


def test_killing_the_kernel_process_ends_the_spare_serving_it(ready_spare):
    km, kc = start_kernel()
    try:
        user_process = user_process_pid(kc)
        assert parent_of(user_process) == ready_spare
        # What Jupyter does to a kernel that does not shut down: SIGKILL its process group.
        os.killpg(km.provisioner.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        assert wait_until(lambda: not alive(ready_spare), 10), "the spare outlived its kernel"
        assert wait_until(lambda: not alive(user_process), 10), "user code outlived its kernel"
    finally:
        stop_kernel(km, kc)


def test_a_restarted_kernel_gets_its_ports_back_and_runs(ready_spare):
    km, kc = start_kernel()
    try:
        assert parent_of(user_process_pid(kc)) == ready_spare
        km.restart_kernel(now=True)
        kc.wait_for_ready(timeout=120)
        assert wait_until(lambda: not alive(ready_spare), 10)
        reply, msgs = run(kc, "tokio::time::sleep(std::time::Duration::from_millis(5)).await; 7", timeout=FIRST_CELL_TIMEOUT)
        assert reply["content"]["status"] == "ok", [summary(m) for m in msgs]
        assert result_text(msgs) == "7"
    finally:
        stop_kernel(km, kc)


@pytest.mark.parametrize(
    "setting",
    [
        {"RUST_ASYNC_SPARE": "0"},  # spares turned off
        {"RUST_ASYNC_TIMING": "1"},  # a kernel-side setting the spare was not started with
    ],
)
def test_a_spare_is_claimed_only_when_allowed_and_made_for_the_same_configuration(ready_spare, setting):
    km, kc = start_kernel(env={**os.environ, **setting})
    try:
        user_process = user_process_pid(kc)
        assert parent_of(user_process) == km.provisioner.process.pid  # type: ignore[union-attr]
        assert ready_spare in waiting_spare_pids()
    finally:
        stop_kernel(km, kc)


def test_a_waiting_spare_exits_when_idle_too_long():
    spare_command("--stop")
    env = {**os.environ, "RUST_ASYNC_SPARE_IDLE_SECS": "1"}
    subprocess.run([str(kernel_binary()), "spare"], env=env, check=True, timeout=30)
    assert wait_until(lambda: len(waiting_spare_pids()) == 1, 10)
    (pid,) = waiting_spare_pids()
    assert wait_until(lambda: not alive(pid), 120), "the idle spare is still running"
    assert pid not in waiting_spare_pids()


ORPHANING_CLIENT = """
import os, sys, time
from jupyter_client import KernelManager
km = KernelManager(kernel_name="rust-async")
km.start_kernel()
kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=120)
reply = kc.execute_interactive("std::process::id()", timeout=180, output_hook=lambda msg: None)
assert reply["content"]["status"] == "ok", reply
print(km.provisioner.process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("spares", ["off", "on"])
def test_a_kernel_whose_starter_dies_exits_with_its_user_process(spares, tmp_path):
    """jupyter_client names the process that started a kernel in JPY_PARENT_PID; when that
    process dies without shutting the kernel down, the kernel exits, as ipykernel does."""
    env = {**os.environ}
    spare = None
    if spares == "off":
        env["RUST_ASYNC_SPARE"] = "0"
    else:
        spare_command("--stop")
        spare_command()
        assert spare_command("--wait").returncode == 0
        (spare,) = waiting_spare_pids()
    # The kernel's stderr is the client's, a pipe that dies with it (as a terminal or a
    # crashed script's log would): the kernel must exit without anything to write to.
    client = subprocess.Popen([os.sys.executable, "-c", ORPHANING_CLIENT], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    kernel, serving = None, []
    try:
        kernel = int(client.stdout.readline())
        assert alive(kernel)
        # The processes serving the notebook: the kernel's user process, or the claimed spare
        # and its user process (a next spare the launcher started is not one of them).
        serving = children_of(kernel) if spare is None else [spare, *children_of(spare)]
        assert len(serving) == (1 if spare is None else 2), serving
        client.kill()
        client.wait(timeout=10)
        client.stderr.close()
        assert wait_until(lambda: not alive(kernel), 15), "the orphaned kernel is still running"
        for pid in serving:
            assert wait_until(lambda: not alive(pid), 15), f"process {pid} of the kernel is still running"
    finally:
        client.kill()
        for pid in [kernel, *serving]:  # when the test failed: leave nothing running
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
