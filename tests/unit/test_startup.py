"""Start-up cuts keep results the same: the environment a local Ray is started with is
restored afterwards (checked here without Ray). The shared spaCy pipelines, local Ray
workers and lazy torch imports are in ``tests/integration/test_startup.py``."""

from __future__ import annotations

import os

from engine.executors import environment


def test_environment_is_restored(monkeypatch):
    monkeypatch.setenv("FLD_TEST_KEPT", "before")
    monkeypatch.delenv("FLD_TEST_NEW", raising=False)
    with environment({"FLD_TEST_KEPT": "during", "FLD_TEST_NEW": "1"}):
        assert os.environ["FLD_TEST_KEPT"] == "during" and os.environ["FLD_TEST_NEW"] == "1"
    assert os.environ["FLD_TEST_KEPT"] == "before" and "FLD_TEST_NEW" not in os.environ
