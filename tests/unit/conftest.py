"""The unit tier: no Ray, no model weights, under a minute for the whole tier.

Every test here runs with ``ray.init`` replaced by a function that fails the test (and
``ray.is_initialized`` answering False, so that engine code asks for ``ray.init`` even when
an integration test earlier in the same session has joined a cluster), and a test that
leaves Ray initialised by any other path fails at teardown: a test that needs Ray belongs
in ``tests/integration``. The Ray cluster fixtures (``ray_address``, ``ray_session``) are
not available here either."""

from __future__ import annotations

import pytest


class RayInUnitTier(RuntimeError):
    """What ``ray.init`` raises in the unit tier."""


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    import ray

    initialized = ray.is_initialized
    joined_before = initialized()  # by an integration test of the same session

    def refuse(*args, **kwargs):
        raise RayInUnitTier(
            "a unit test started Ray (ray.init): move it to tests/integration, "
            "or run it with the in-process executor (run.executor=local)"
        )

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    yield
    if not joined_before and initialized():
        ray.shutdown()
        pytest.fail("a unit test left Ray initialised: move it to tests/integration")
