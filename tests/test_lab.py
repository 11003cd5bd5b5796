"""`scripts/lab` serves JupyterLab on notebooks/ with the "Rust (async)" kernel in its launcher."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def test_scripts_lab_serves_the_rust_async_kernel(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    lab = subprocess.Popen(
        [str(ROOT / "scripts" / "lab"), "--no-browser", f"--port={port}", "--port-retries=0",
         f"--ServerApp.token={token}", f"--LabApp.workspaces_dir={tmp_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        specs = None
        while time.monotonic() < deadline and specs is None:
            try:
                specs = json.loads(get(f"{base}/api/kernelspecs", token)[1])
            except OSError:
                time.sleep(0.5)
        assert specs is not None, "JupyterLab did not answer"
        rust = specs["kernelspecs"]["rust-async"]
        assert rust["spec"]["display_name"] == "Rust (async)"
        assert rust["spec"]["language"] == "rust"
        # The launcher card shows our logo.
        status, logo = get(base + rust["resources"]["logo-64x64"], token)
        assert status == 200 and logo.startswith(b"\x89PNG")
        # It serves notebooks/: the lessons are there.
        contents = json.loads(get(f"{base}/api/contents", token)[1])
        names = {item["name"] for item in contents["content"]}
        assert any(name.endswith(".ipynb") for name in names), names
        status, page = get(f"{base}/lab", token)
        assert status == 200 and b"JupyterLab" in page
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        lab.wait(timeout=30)
