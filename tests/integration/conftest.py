"""The integration tier: models, Ray, the CLI end to end."""

from __future__ import annotations

from tests.fixtures.ray_cluster import ray_address, ray_session

__all__ = ["ray_address", "ray_session"]
