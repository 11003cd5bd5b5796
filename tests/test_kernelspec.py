"""The kernelspec scripts/setup installs, and `rust-async-kernel install` / `uninstall`."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from conftest import DISPLAY_NAME, KERNEL_NAME, kernelspec_dir

LOGOS = {"logo-32x32.png": 32, "logo-64x64.png": 64}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def kernel_exe() -> str:
    return json.loads((kernelspec_dir() / "kernel.json").read_text())["argv"][0]


def check_kernelspec_dir(path: Path, display_name: str) -> dict:
    spec = json.loads((path / "kernel.json").read_text())
    assert spec["argv"][1:] == ["--connection-file", "{connection_file}"]
    exe = Path(spec["argv"][0])
    assert exe.is_absolute() and exe.is_file() and os.access(exe, os.X_OK), exe
    assert exe.name == "rust-async-kernel"
    assert spec["display_name"] == display_name
    assert spec["language"] == "rust"
    assert spec["interrupt_mode"] == "message"
    assert spec["metadata"] == {"debugger": False}
    for name, size in LOGOS.items():
        assert png_size(path / name) == (size, size), name
    svg = (path / "logo-svg.svg").read_text()
    assert "<svg" in svg and "</svg>" in svg
    return spec


def test_installed_kernelspec():
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert Path(spec.resource_dir).resolve() == kernelspec_dir().resolve()
    assert spec.language == "rust"
    assert spec.interrupt_mode == "message"
    check_kernelspec_dir(kernelspec_dir(), DISPLAY_NAME)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [kernel_exe(), *args], capture_output=True, text=True, timeout=60, env=full_env
    )


def test_install_and_uninstall_with_prefix(tmp_path):
    target = tmp_path / "share" / "jupyter" / "kernels" / "t-rust"
    proc = cli("install", "--prefix", str(tmp_path), "--name", "t-rust", "--display-name", "T (async)")
    assert proc.returncode == 0, proc.stderr
    assert str(target) in proc.stdout
    spec = check_kernelspec_dir(target, "T (async)")
    assert Path(spec["argv"][0]).resolve() == Path(kernel_exe()).resolve()
    # jupyter finds it there.
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path / "share" / "jupyter" / "kernels")])
    assert "t-rust" in ksm.find_kernel_specs()

    # Installing again is fine.
    assert cli("install", "--prefix", str(tmp_path), "--name", "t-rust").returncode == 0

    proc = cli("uninstall", "--prefix", str(tmp_path), "--name", "t-rust")
    assert proc.returncode == 0, proc.stderr
    assert not target.exists()
    proc = cli("uninstall", "--prefix", str(tmp_path), "--name", "t-rust")
    assert proc.returncode != 0
    assert "t-rust" in proc.stderr


def test_install_locations(tmp_path):
    data_dir = tmp_path / "data"
    proc = cli("install", "--name", "t-user", env={"JUPYTER_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    check_kernelspec_dir(data_dir / "kernels" / "t-user", DISPLAY_NAME)

    proc = cli("install", "--user", "--name", "t-user2", env={"JUPYTER_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, proc.stderr
    assert (data_dir / "kernels" / "t-user2" / "kernel.json").is_file()

    venv = tmp_path / "venv"
    proc = cli("install", "--sys-prefix", "--name", "t-sys", env={"VIRTUAL_ENV": str(venv)})
    assert proc.returncode == 0, proc.stderr
    assert (venv / "share" / "jupyter" / "kernels" / "t-sys" / "kernel.json").is_file()


def test_install_rejects_bad_arguments(tmp_path):
    proc = cli("install", "--prefix", str(tmp_path), "--bogus")
    assert proc.returncode != 0
    assert "--bogus" in proc.stderr
    proc = cli("install", "--prefix")
    assert proc.returncode != 0
    proc = cli("install", "--user", "--prefix", str(tmp_path))
    assert proc.returncode != 0
    proc = cli("install", "--prefix", str(tmp_path), "--name", "bad/name")
    assert proc.returncode != 0
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    proc = subprocess.run(
        [kernel_exe(), "install", "--sys-prefix"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode != 0
    assert "VIRTUAL_ENV" in proc.stderr
    assert not any(tmp_path.rglob("kernel.json"))
