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
