"""Shared fixtures: one real local Ray cluster per test session, started the way a user
with several machines starts one (``ray start --head`` on loopback) and joined by the
tests, both in-process (``ray.init(address=...)``) and from the CLI (``--address``)."""

from __future__ import annotations

import os
import shutil
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
    """Start a Ray head on loopback for the session; stop it at the end."""
    port = free_port()
    ray_bin = str(BIN / "ray")
    temp_dir = Path("/tmp") / f"fldray{os.getpid()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            ray_bin, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        check=True, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    yield address
    import ray

    if ray.is_initialized():
        ray.shutdown()
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(temp_dir, ignore_errors=True)


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


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
