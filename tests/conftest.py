"""Shared fixtures: one real local Ray cluster per test session, started the way a user
with several machines starts one (``ray start --head`` on loopback) and joined by the
tests, both in-process (``ray.init(address=...)``) and from the CLI (``--address``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.offline import apply_offline_env

REPO = Path(__file__).resolve().parent.parent
DEMO_IMAGES = REPO / "demo" / "images"
BIN = Path(sys.executable).parent

apply_offline_env()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory) -> str:
    """Start a Ray head on loopback for the session (``ray start --head --block`` in its own
    process group) and stop exactly that cluster at the end, not any other on the machine."""
    port = free_port()
    temp_dir = Path("/tmp") / f"fldray{os.getpid()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    head = subprocess.Popen(
        [
            str(BIN / "ray"), "start", "--head", "--block", f"--port={port}",
            "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
            "--disable-usage-stats", f"--temp-dir={temp_dir}",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    up = wait_for(lambda: port_open(port) or head.poll() is not None, timeout=120, interval=0.2)
    if not up or head.poll() is not None:
        raise RuntimeError(f"ray start --head did not come up on {address}")
    time.sleep(2)  # the GCS answers before the raylet has registered the node
    yield address
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def ray_session(ray_address):
    """This test process joined to the session cluster (engine code reuses it)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=ray_address,
            logging_level="WARNING",
            runtime_env={"env_vars": apply_offline_env()},
        )
    return ray_address


def run_fld(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``fld`` command line as a user would."""
    result = subprocess.run(
        [str(BIN / "fld"), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"fld {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
