"""The integration tier: models, Ray, the CLI end to end."""

from __future__ import annotations

from tests.fixtures.ray_cluster import ray_address, ray_session
from tests.fixtures.s3_server import s3_server

__all__ = ["ray_address", "ray_session", "s3_server"]
