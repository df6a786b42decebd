"""Shared by every tier: the engine's offline environment (no hub downloads) is set before
any test module is imported. The tiers are

- ``tests/unit``: no Ray, no model weights; the whole tier runs in under a minute
  (``make check``). Its ``conftest.py`` fails any test that starts Ray.
- ``tests/integration``: models, Ray, the CLI end to end.
- ``tests/reliability``: the fault battery (its long variants are marked ``slow``).

Helpers live in ``tests/fixtures``."""

from __future__ import annotations

import os
import tempfile

from engine.offline import apply_offline_env

apply_offline_env()

# Under pytest-xdist (make test: two test processes on a 2-core machine), each process and
# the fld commands it starts compute on one thread, so the two do not fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The trust store of student weights (pipelines/refine.py) lives outside every corpus; the
# suite's students go to one of its own, not the user's ~/.cache.
os.environ.setdefault(
    "FLD_TRUST_STORE", os.path.join(tempfile.mkdtemp(prefix="fld-trust-"), "trusted.json")
)


# The longest integration files first (measured with --durations), so that under xdist
# (make test: files handed out in this order) neither process is left with a long file at
# the end while the other idles. Unit, then reliability, then integration, as before; the
# order within a file, and of every other file, is kept.
LONGEST_FIRST = (
    "tests/integration/test_label_studio.py",
    "tests/integration/test_ssd_student.py",
    "tests/integration/test_refine.py",
    "tests/integration/test_florence2_student.py",
    "tests/integration/test_gpu_placement.py",
    "tests/integration/test_fleet_io.py",
)
TIERS = ("tests/unit/", "tests/reliability/", "tests/integration/")


def pytest_collection_modifyitems(config, items):
    def place(item) -> tuple[int, int]:
        path = item.nodeid.split("::")[0]
        tier = next((n for n, prefix in enumerate(TIERS) if path.startswith(prefix)), len(TIERS))
        first = LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
        return tier, first

    items.sort(key=place)  # stable
