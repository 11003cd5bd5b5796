"""A class on one machine: `scripts/hub` starts JupyterHub (configurable-http-proxy, one
jupyter-server per user, scripts/class/jupyterhub_config.py) and 8 users run lesson 02 at the
same time through the hub's proxy, each on a rust-async kernel of their own, over the kernel's
websocket as JupyterLab does (the `v1.kernel.websocket.jupyter.org` protocol).

Asserted: every user's cells all succeed, with the outputs the lesson's text promises; an idle
kernel is culled by the users' servers (`cull_idle_timeout`); after the users stop their
servers and the hub is stopped, no process of the hub is left. Reported, not asserted (speed
and memory targets belong to scripts/bench): the wall time, each user's peak memory and the
machine's, in build/hub-report.txt and in pytest's output.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import nbformat
import psutil
import pytest
import requests
import websocket
from jupyter_server.services.kernels.connection.base import (
    deserialize_msg_from_ws_v1,
    serialize_msg_to_ws_v1,
)

from conftest import KERNEL_NAME, REPO, plain

USERS = [f"student{i}" for i in range(1, 9)]
LESSON = REPO / "notebooks" / "02-event-loop.ipynb"
# Short, so that the test sees an idle kernel culled about when the lessons end; long enough
# that a kernel starting slowly among eight is not (busy compiling, a kernel is never culled).
CULL_KERNELS_AFTER = 30
# scripts/hub runs scripts/setup first (quick after scripts/test's own), then the hub starts
# its proxy, database and services.
HUB_START_TIMEOUT = 300
SERVER_START_TIMEOUT = 180
KERNEL_START_TIMEOUT = 240
# One cell while eight kernels compile on two cores.
CELL_TIMEOUT = 300
# After SIGTERM the hub stops the servers (SIGINT, then SIGTERM after 30 s) and the proxy.
HUB_STOP_TIMEOUT = 90
MEMORY_SAMPLE_SECONDS = 0.2
REPORT = REPO / "build" / "hub-report.txt"
WS_PROTOCOL = "v1.kernel.websocket.jupyter.org"

pytestmark = pytest.mark.timeout(900)


# --------------------------------------------------------------------------------------------
# The hub


def free_ports(count: int) -> int:
    """A port P such that P..P+count-1 are all free on 127.0.0.1 (scripts/hub uses P for the
    proxy, P+1 for the proxy's API, P+2 for the hub)."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(30000)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free run of ports on 127.0.0.1")


@dataclass
class Hub:
    process: subprocess.Popen
    url: str
    port: int
    state: Path
    log: Path
    api: requests.Session

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.api.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.api.post(self.url + path, timeout=30, **kwargs)

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_running(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the hub exited ({self.process.returncode}):\n{self.log_tail()}", pytrace=False)


def start_hub(tmp_path: Path) -> Hub:
    port = free_ports(3)
    token = secrets.token_hex(32)
    log = tmp_path / "hub.log"
    env = dict(os.environ, RUST_ASYNC_HUB_API_TOKEN=token, RUST_ASYNC_HUB_PASSWORD=secrets.token_urlsafe(12))
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(REPO / "scripts" / "hub"),
                "--port", str(port),
                "--users", ",".join(USERS),
                "--state", str(tmp_path / "hub"),
                "--cull-kernels-after", str(CULL_KERNELS_AFTER),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    api = requests.Session()
    api.headers["Authorization"] = f"token {token}"
    hub = Hub(process, f"http://127.0.0.1:{port}", port, tmp_path / "hub", log, api)
    deadline = time.monotonic() + HUB_START_TIMEOUT
    while True:
        hub.check_running()
        try:
            if hub.get("/hub/api/").ok:
                return hub
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            stop_hub(hub)
            pytest.fail(f"the hub did not answer within {HUB_START_TIMEOUT} s:\n{hub.log_tail()}", pytrace=False)
        time.sleep(0.5)


def stop_hub(hub: Hub) -> None:
    """SIGTERM, as a service manager stops it; the hub then stops what it started."""
    if hub.process.poll() is None:
        hub.process.send_signal(signal.SIGTERM)
        try:
            hub.process.wait(HUB_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            hub.process.kill()
            hub.process.wait()


# --------------------------------------------------------------------------------------------
# Watching the hub's processes: memory, and what must be gone at the end


def machine_used_bytes() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = lambda name: int(fields[name].split()[0])  # noqa: E731
    return (kib("MemTotal") - kib("MemAvailable")) * 1024


def pss_bytes(pid: int) -> int:
    """The process's proportional set size: its own pages, and its share of the pages it shares
    with other processes (the kernel's binary, jupyter-server's Python, libraries)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class UserMemory:
    """One user's peaks, each over the run: RSS summed over their server's process tree (each
    process counted whole, shared pages too: what a container per user would hold at most),
    its PSS (shared pages split among all who share them: what the user adds on this machine),
    and the RSS of the server alone and of their kernels' trees."""

    rss: int = 0
    pss: int = 0
    server_rss: int = 0
    kernels_rss: int = 0


class ProcessWatch:
    """Samples, every MEMORY_SAMPLE_SECONDS in a thread, the hub's process tree: each user's
    memory (their server, its kernels and their children: the user-code process, rustc), the
    machine's used memory, and every process the hub ever had below it (to check at the end
    that none is left)."""

    def __init__(self, hub_pid: int) -> None:
        self.hub_pid = hub_pid
        self.server_pids: dict[str, int] = {}
        self.users: dict[str, UserMemory] = {}
        self.machine_before = machine_used_bytes()
        self.machine_peak = self.machine_before
        self.seen: dict[tuple[int, float], str] = {}  # (pid, create time) -> command line
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch_server(self, user: str, pid: int) -> None:
        with self._lock:
            self.server_pids[user] = pid

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_SECONDS):
            self.sample()

    def sample(self) -> None:
        self.machine_peak = max(self.machine_peak, machine_used_bytes())
        try:
            tree = psutil.Process(self.hub_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                key = (p.pid, p.create_time())
                if key not in self.seen:
                    self.seen[key] = " ".join(p.cmdline())[:200]
            except psutil.Error:
                pass
        with self._lock:
            servers = dict(self.server_pids)
        for user, pid in servers.items():
            try:
                server = psutil.Process(pid)
                server_rss = server.memory_info().rss
                server_pss = pss_bytes(pid)
                kernels = server.children(recursive=True)
            except (psutil.Error, OSError):
                continue
            kernels_rss = kernels_pss = 0
            for p in kernels:
                try:
                    kernels_rss += p.memory_info().rss
                    kernels_pss += pss_bytes(p.pid)
                except (psutil.Error, OSError):
                    pass
            peak = self.users.setdefault(user, UserMemory())
            peak.rss = max(peak.rss, server_rss + kernels_rss)
            peak.pss = max(peak.pss, server_pss + kernels_pss)
            peak.server_rss = max(peak.server_rss, server_rss)
            peak.kernels_rss = max(peak.kernels_rss, kernels_rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def still_running(self) -> list[str]:
        alive = []
        for (pid, created), cmdline in self.seen.items():
            try:
                if psutil.Process(pid).create_time() == created:
                    alive.append(f"{pid}: {cmdline}")
            except psutil.NoSuchProcess:
                pass
        return alive


def processes_of_hub(hub: Hub) -> list[str]:
    """Processes anywhere on the machine that belong to this hub: started in or naming its
    state directory, or given its API's address (users' servers, their kernels and whatever
    those started inherit JUPYTERHUB_API_URL), or the proxy on its port."""
    marks = [str(hub.state), f"127.0.0.1:{hub.port + 2}", f"--port {hub.port} "]
    found = []
    for p in psutil.process_iter():
        try:
            cmdline = " ".join(p.cmdline()) + " "
            environ = p.environ()
            cwd = p.cwd()
        except psutil.Error:
            continue
        text = " ".join([cmdline, cwd, environ.get("JUPYTERHUB_API_URL", ""), environ.get("RUST_ASYNC_HUB_STATE", "")])
        if any(mark in text for mark in marks):
            found.append(f"{p.pid}: {cmdline[:200]}")
    return found


# --------------------------------------------------------------------------------------------
# A user: their server through the hub, a kernel over its websocket


@dataclass
class CellRun:
    cell_id: str
    status: str
    seconds: float
    stdout: str = ""
    results: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class KernelSocket:
    """A kernel's channels over one websocket, as JupyterLab opens them."""

    def __init__(self, base: str, user: str, token: str, kernel_id: str) -> None:
        self.session = uuid.uuid4().hex
        self.user = user
        url = base.replace("http://", "ws://") + f"/user/{user}/api/kernels/{kernel_id}/channels?session_id={self.session}"
        self.ws = websocket.create_connection(
            url, header=[f"Authorization: token {token}"], subprotocols=[WS_PROTOCOL], timeout=CELL_TIMEOUT
        )
        assert self.ws.subprotocol == WS_PROTOCOL, self.ws.subprotocol

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "session": self.session,
            "username": self.user,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        }
        msg = {"header": header, "parent_header": {}, "metadata": {}, "content": content}
        self.ws.send_binary(serialize_msg_to_ws_v1(msg, channel, pack=lambda part: json.dumps(part).encode()))
        return msg_id

    def receive(self, deadline: float) -> tuple[str, dict[str, Any]]:
        self.ws.settimeout(max(0.1, deadline - time.monotonic()))
        frame = self.ws.recv()
        channel, parts = deserialize_msg_from_ws_v1(frame)
        header, parent, _metadata, content = (json.loads(part) for part in parts[:4])
        return channel, {"header": header, "parent_header": parent, "content": content, "msg_type": header["msg_type"]}

    def request(self, msg_type: str, content: dict[str, Any], timeout: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Sends a shell request; returns its reply and its iopub messages up to `idle`."""
        msg_id = self.send("shell", msg_type, content)
        deadline = time.monotonic() + timeout
        reply, iopub, idle = None, [], False
        while reply is None or not idle:
            channel, msg = self.receive(deadline)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if channel == "shell":
                reply = msg
            elif channel == "iopub":
                iopub.append(msg)
                idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
        return reply, iopub

    def close(self) -> None:
        self.ws.close()


def user_api(hub: Hub, token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    return session


def run_lesson(hub: Hub, user: str, token: str, cells: list[nbformat.NotebookNode]) -> list[CellRun]:
    """What JupyterLab does for a student who opens the lesson and runs all its cells: a new
    kernel, its websocket, then each cell in turn; at the end the kernel is shut down."""
    api = user_api(hub, token)
    base = f"{hub.url}/user/{user}/api"
    response = api.post(f"{base}/kernels", json={"name": KERNEL_NAME}, timeout=60)
    assert response.status_code == 201, (user, response.status_code, response.text)
    kernel_id = response.json()["id"]
    channels = KernelSocket(hub.url, user, token, kernel_id)
    try:
        reply, _ = channels.request("kernel_info_request", {}, KERNEL_START_TIMEOUT)
        assert reply["content"]["status"] == "ok", (user, reply["content"])
        runs = []
        for cell in cells:
            started = time.monotonic()
            content = {"code": cell.source, "silent": False, "store_history": True,
                       "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
            reply, iopub = channels.request("execute_request", content, CELL_TIMEOUT)
            runs.append(CellRun(
                cell_id=cell.get("id", "?"),
                status=reply["content"]["status"],
                seconds=time.monotonic() - started,
                stdout="".join(m["content"]["text"] for m in iopub
                               if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"),
                results=[m["content"]["data"].get("text/plain", "") for m in iopub if m["msg_type"] == "execute_result"],
                errors=[plain(f"{m['content']['ename']}: {m['content']['evalue']}") for m in iopub if m["msg_type"] == "error"],
            ))
    finally:
        channels.close()
        api.delete(f"{base}/kernels/{kernel_id}", timeout=60)
    return runs


def steps(text: str) -> list[str]:
    return [f"{task}{step}" for task, step in re.findall(r"^task ([AB]), step (\d)$", text, re.M)]


def check_lesson_outputs(user: str, runs: list[CellRun]) -> None:
    """Every cell ran without error, and the lines that do not depend on timing are those the
    lesson's text promises (tests/test_notebooks.py checks the same with nbclient)."""
    failed = [(r.cell_id, r.status, r.errors) for r in runs if r.status != "ok" or r.errors]
    assert not failed, f"{user}: cells failed: {failed}"
    by_id = {r.cell_id: r for r in runs}
    assert steps(by_id["interleave"].stdout) == ["A1", "B1", "A2", "B2", "A3", "B3"], (user, by_id["interleave"])
    assert steps(by_id["no-await"].stdout) == ["A1", "A2", "A3", "B1", "B2", "B3"], (user, by_id["no-await"])
    assert by_id["spawn-started"].stdout.strip() == "task started without .await: true", (user, by_id["spawn-started"])
    assert by_id["spawn-await"].results == ['"task finished"'], (user, by_id["spawn-await"])
    assert re.search(r"^one_thread_workers=1$", by_id["workers"].stdout, re.M), (user, by_id["workers"])


# --------------------------------------------------------------------------------------------
# The test


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = start_hub(tmp_path)
    try:
        yield hub
    finally:
        stop_hub(hub)
        # Whatever a failed test left behind (the test itself asserts that nothing is).
        for line in processes_of_hub(hub):
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except OSError:
                pass


def wait_until_ready(hub: Hub, user: str) -> int:
    """Waits for the user's server; returns its process id."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        hub.check_running()
        server = hub.get(f"/hub/api/users/{user}").json().get("servers", {}).get("")
        if server and server.get("ready"):
            return server["state"]["pid"]
        if time.monotonic() > deadline:
            pytest.fail(f"{user}'s server not ready within {SERVER_START_TIMEOUT} s: {server}\n{hub.log_tail()}", pytrace=False)
        time.sleep(0.5)


def kernel_environment(server_pid: int) -> dict[str, str]:
    """The environment of the (first) rust-async kernel the server started, once it runs."""
    deadline = time.monotonic() + KERNEL_START_TIMEOUT
    while time.monotonic() < deadline:
        for p in psutil.Process(server_pid).children():
            try:
                if p.cmdline()[0].endswith("rust-async-kernel"):
                    return p.environ()
            except (psutil.Error, IndexError):
                pass
        time.sleep(0.2)
    raise AssertionError(f"no rust-async-kernel process under server {server_pid}")


def report(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Writes the report to REPORT and shows it in pytest's output, past its capture (the
    report is for the person running scripts/test)."""
    text = "\n".join(lines) + "\n"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{text}(also in {REPORT.relative_to(REPO)})", flush=True)


def mib(n: int) -> str:
    return f"{n / 2**20:7.0f} MiB"


def test_eight_users_run_a_lesson_through_the_hub(hub: Hub, request: pytest.FixtureRequest) -> None:
    started = time.monotonic()
    watch = ProcessWatch(hub.process.pid)
    try:
        users = {u["name"] for u in hub.get("/hub/api/users").json()}
        assert users == set(USERS), users

        # All at once, as a class logging in (a start request returns when the server is up).
        with ThreadPoolExecutor(len(USERS)) as pool:
            for user, response in zip(USERS, pool.map(lambda u: hub.post(f"/hub/api/users/{u}/server"), USERS)):
                assert response.status_code in (201, 202), (user, response.status_code, response.text)
        for user in USERS:
            watch.watch_server(user, wait_until_ready(hub, user))
        servers_ready = time.monotonic()

        # Each user as themselves: a token of their own, as their browser would have.
        tokens = {}
        for user in USERS:
            response = hub.post(f"/hub/api/users/{user}/tokens", json={"note": "tests/test_hub.py", "expires_in": 3600})
            assert response.status_code == 201, (user, response.status_code, response.text)
            tokens[user] = response.json()["token"]
        # A user's token opens only their own server.
        foreign = user_api(hub, tokens[USERS[1]]).get(f"{hub.url}/user/{USERS[0]}/api/kernels", timeout=30, allow_redirects=False)
        assert foreign.status_code in (302, 403), foreign.status_code

        # Kernel culling as the servers run it: on their command lines, and an idle kernel
        # (no cell, no websocket) that the first user's server must stop by itself.
        for user, pid in watch.server_pids.items():
            assert f"--MappingKernelManager.cull_idle_timeout={CULL_KERNELS_AFTER}" in psutil.Process(pid).cmdline(), user
        first = user_api(hub, tokens[USERS[0]])
        kernels_url = f"{hub.url}/user/{USERS[0]}/api/kernels"
        idle_kernel = first.post(kernels_url, json={"name": KERNEL_NAME}, timeout=60).json()["id"]
        idle_since = time.monotonic()
        # Its environment is the one the config gives the users' kernels.
        kernel_env = kernel_environment(watch.server_pids[USERS[0]])
        assert kernel_env.get("RUST_ASYNC_SPARE") == "0", kernel_env
        assert kernel_env.get("HOME") == str(hub.state / "home" / USERS[0]), kernel_env
        assert "CONFIGPROXY_AUTH_TOKEN" not in kernel_env, "the proxy's token reached a user's kernel"

        cells = [c for c in nbformat.read(LESSON, as_version=4).cells if c.cell_type == "code"]
        pool = ThreadPoolExecutor(len(USERS))
        try:
            futures = {user: pool.submit(run_lesson, hub, user, tokens[user], cells) for user in USERS}
            runs = {user: future.result() for user, future in futures.items()}
        finally:
            # After a failure (or pytest-timeout) the other users' cells are not waited for:
            # stopping the hub (the fixture) closes their websockets.
            pool.shutdown(wait=False, cancel_futures=True)
        lessons_done = time.monotonic()
        for user in USERS:
            check_lesson_outputs(user, runs[user])

        # Culled: polled every CULL_KERNELS_AFTER / 4 s once idle that long.
        cull_deadline = idle_since + CULL_KERNELS_AFTER * 1.25 + 60
        while idle_kernel in {k["id"] for k in first.get(kernels_url, timeout=30).json()}:
            assert time.monotonic() < cull_deadline, "the idle kernel was not culled"
            time.sleep(1)
        idle_culled = time.monotonic() - idle_since
        culled = time.monotonic()

        # The users stop their servers (File > Hub Control Panel > Stop My Server).
        for user in USERS:
            response = user_api(hub, tokens[user]).delete(f"{hub.url}/hub/api/users/{user}/server", timeout=60)
            assert response.status_code in (202, 204), (user, response.status_code, response.text)
        for user in USERS:
            deadline = time.monotonic() + HUB_STOP_TIMEOUT
            while hub.get(f"/hub/api/users/{user}").json().get("servers"):
                assert time.monotonic() < deadline, f"{user}'s server did not stop"
                time.sleep(0.5)
        stop_hub(hub)
        assert hub.process.returncode == 0, (hub.process.returncode, hub.log_tail())
        finished = time.monotonic()
    finally:
        watch.stop()

    # Nothing of the hub is left: no process it ever had below it, none of its anywhere else.
    deadline = time.monotonic() + 30
    while (left := watch.still_running() + processes_of_hub(hub)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"still running after the hub stopped: {left}"
    seen = " ".join(watch.seen.values())
    for program in ("configurable-http-proxy", "jupyterhub-singleuser", "rust-async-kernel", "jupyterhub_idle_culler"):
        assert program in seen, f"the watch never saw {program}: {sorted(set(watch.seen.values()))}"

    slowest = max((r for user_runs in runs.values() for r in user_runs), key=lambda r: r.seconds)
    lines = [
        f"tests/test_hub.py: {len(USERS)} users ran {LESSON.name} ({len(cells)} cells) at once through JupyterHub",
        f"  wall time, hub up to hub stopped: {finished - started:.0f} s (servers ready {servers_ready - started:.0f} s, "
        f"lessons {lessons_done - servers_ready:.0f} s, idle kernel culled after {idle_culled:.0f} s, "
        f"users' servers and hub stopped {finished - culled:.0f} s)",
        f"  slowest cell: {slowest.cell_id} {slowest.seconds:.1f} s; "
        f"machine: {os.cpu_count()} cores",
        "  peak memory per user: RSS of the server's tree (server alone + kernels' trees) | PSS of the tree | lesson time",
        *(
            f"    {user:10} {mib(m.rss)} ({mib(m.server_rss).strip()} + {mib(m.kernels_rss).strip()}) | {mib(m.pss)} | "
            f"{sum(r.seconds for r in runs[user]):3.0f} s"
            for user, m in ((user, watch.users.get(user, UserMemory())) for user in USERS)
        ),
        f"    largest    {mib(max(m.rss for m in watch.users.values()))} RSS, {mib(max(m.pss for m in watch.users.values())).strip()} PSS",
        f"  machine peak (MemTotal - MemAvailable) above the {mib(watch.machine_before).strip()} used before the hub "
        f"(hub, proxy, {len(USERS)} users, and anything else running): {mib(watch.machine_peak - watch.machine_before).strip()}",
    ]
    report(request, lines)
