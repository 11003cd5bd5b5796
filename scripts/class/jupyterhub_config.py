# JupyterHub on this machine, for trying a class of students on the rust-async kernel
# (scripts/hub starts it; tests/test_hub.py runs a lesson for 8 users through it).
#
# - Every user's server is `jupyterhub-singleuser` from this checkout's .venv, as the OS user
#   running the hub (SimpleLocalProcessSpawner: no OS accounts, no isolation between users,
#   for one machine and trusted users only), each in a home folder of its own under the
#   hub's state directory, with the lesson notebooks copied in.
# - Users log in with one shared password (SharedPasswordAuthenticator); only the names given
#   to scripts/hub may log in.
# - Idle kernels are stopped by each user's server (jupyter-server's kernel culler), idle
#   servers by the hub (jupyterhub-idle-culler): a user's server holds about 150 MiB, and a
#   rust-async kernel up to about 300 MiB more while it compiles a cell (tests/test_hub.py
#   reports both).
# - configurable-http-proxy is the pinned one of scripts/class/package.json, installed by
#   scripts/hub into scripts/class/node_modules.
#
# scripts/hub sets the RUST_ASYNC_HUB_* variables below; this file has no defaults for the
# ones that must agree with what scripts/hub prepared (state directory, users, password).

import os
import shutil
import signal
import sys
from pathlib import Path

c = get_config()  # noqa: F821 (defined by JupyterHub when it loads this file)

# A hub started in the background of a script inherits an ignored SIGINT and would pass it on
# to the processes it starts: the idle culler then ignores the hub's stop request, and each
# stop of the hub waits 30 s (Spawner.interrupt_timeout) before its SIGTERM. Ctrl-C works
# again too.
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"


def setting(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"jupyterhub_config.py: {name} is not set (start the hub with scripts/hub)")
    return value


STATE = Path(setting("RUST_ASYNC_HUB_STATE"))
PORT = int(setting("RUST_ASYNC_HUB_PORT"))
USERS = setting("RUST_ASYNC_HUB_USERS").split(",")
CULL_KERNELS_AFTER = int(setting("RUST_ASYNC_HUB_CULL_KERNELS_AFTER"))
CULL_SERVERS_AFTER = int(setting("RUST_ASYNC_HUB_CULL_SERVERS_AFTER"))

# --- Where it listens: only this machine. The public port is the proxy's; the proxy's API
# and the hub itself take the next two, so that two hubs (or a test's) can run side by side.
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = PORT
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{PORT + 1}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = PORT + 2

# --- Its files, all in the state directory.
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.ConfigurableHTTPProxy.command = [str(REPO / "scripts/class/node_modules/.bin/configurable-http-proxy")]
# When the hub stops, so do the proxy and every user's server (and with them their kernels).
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

# --- Who may log in.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = setting("RUST_ASYNC_HUB_PASSWORD")
c.Authenticator.allowed_users = set(USERS)

# --- Each user's server.
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = str(STATE / "home" / "{username}")
c.Spawner.cmd = [str(VENV / "bin" / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.args = [
    # jupyter-server refuses to run as root without it (as scripts/lab does).
    *(["--allow-root"] if os.geteuid() == 0 else []),
    # A kernel idle this long is shut down, also while a browser tab is still connected to it
    # (a tab left open would otherwise hold its memory for good). Its notebook stays; the
    # next run of a cell asks for a new kernel.
    f"--MappingKernelManager.cull_idle_timeout={CULL_KERNELS_AFTER}",
    f"--MappingKernelManager.cull_interval={max(1, min(300, CULL_KERNELS_AFTER // 4))}",
    "--MappingKernelManager.cull_connected=True",
]
# A user's server inherits only what it needs from the hub's environment (not the proxy's
# token). HOME is the user's own folder, so the toolchain's homes are named explicitly:
# rustup and cargo would look for them under the user's HOME otherwise.
c.Spawner.env_keep = [
    "PATH", "LANG", "LC_ALL", "TMPDIR", "RUSTUP_TOOLCHAIN", "SCCACHE_DIR",
    # The kernel's settings (README, "Kernel CLI"), for every user's kernels at once: e.g.
    # `RUST_ASYNC_MEMORY_LIMIT=1G scripts/hub` makes each kernel behave as in a 1 GiB pod.
    "RUST_ASYNC_MEMORY_LIMIT", "RUST_ASYNC_OFFLINE", "RUST_ASYNC_ANALYSIS_IDLE_SECS",
]
c.Spawner.environment = {
    "RUSTUP_HOME": os.environ.get("RUSTUP_HOME") or str(Path.home() / ".rustup"),
    "CARGO_HOME": os.environ.get("CARGO_HOME") or str(Path.home() / ".cargo"),
    # The kernelspec this checkout installed into .venv wins over any other `rust-async`.
    "JUPYTER_PATH": str(VENV / "share" / "jupyter"),
    # No spare kernels (kernel/server/src/spare.rs): a spare per user would double each
    # user's memory for a faster second kernel.
    "RUST_ASYNC_SPARE": "0",
}
# Eight servers starting at once on two cores take a while.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120


def copy_lessons(spawner) -> None:
    """Puts the lesson notebooks into the user's home at the first start (never over the
    user's own copies)."""
    lessons = Path(spawner.home_dir) / "lessons"
    lessons.mkdir(parents=True, exist_ok=True)
    for notebook in sorted((REPO / "notebooks").glob("*.ipynb")):
        if not (lessons / notebook.name).exists():
            shutil.copyfile(notebook, lessons / notebook.name)


c.Spawner.pre_spawn_hook = copy_lessons

# --- Services: the idle-server culler, and (for scripts and tests) an API token.
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={CULL_SERVERS_AFTER}",
            f"--cull-every={max(1, min(600, CULL_SERVERS_AFTER // 4))}",
        ],
    }
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    }
]
# RUST_ASYNC_HUB_API_TOKEN, when set, is the token of a service `class-admin` that may list
# users, start and stop their servers and make tokens for them through the hub's REST API
# (tests/test_hub.py drives the hub this way).
if api_token := os.environ.get("RUST_ASYNC_HUB_API_TOKEN"):
    c.JupyterHub.services.append({"name": "class-admin", "api_token": api_token})
    c.JupyterHub.load_roles.append(
        {
            "name": "class-admin",
            "scopes": ["admin:users", "admin:servers", "tokens"],
            "services": ["class-admin"],
        }
    )
