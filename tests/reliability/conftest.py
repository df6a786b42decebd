"""The fault battery: the session's Ray cluster, as in the integration tier."""

from __future__ import annotations

from tests.fixtures.ray_cluster import ray_address, ray_session

__all__ = ["ray_address", "ray_session"]
