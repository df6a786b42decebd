"""``run.executor: auto`` picks the in-process executor only for small runs with no cluster
address and no model pool, and says why."""

from __future__ import annotations

from pipelines.annotate import choose_executor
from pipelines.config import load_config

SMALL = ["annotators=[{name: ssd_coco}]"]


def test_small_inputs_with_no_address_run_in_process():
    kind, why = choose_executor(load_config(None, SMALL), 16)
    assert kind == "local" and "16 inputs, at most run.local_max_images = 16" in why


def test_more_inputs_an_address_or_a_model_pool_run_on_ray():
    assert choose_executor(load_config(None, SMALL), 17)[0] == "ray"
    assert choose_executor(load_config(None, [*SMALL, "run.local_max_images=0"]), 1)[0] == "ray"
    kind, why = choose_executor(load_config(None, [*SMALL, "run.address=127.0.0.1:6379"]), 1)
    assert kind == "ray" and "run.address" in why
    pooled = load_config(None, ["annotators=[{name: ssd_coco, replicas: 2}]"])
    kind, why = choose_executor(pooled, 1)
    assert kind == "ray" and "ssd_coco runs in a model pool" in why


def test_an_explicit_executor_is_kept():
    assert choose_executor(load_config(None, [*SMALL, "run.executor=ray"]), 1) == ("ray", "run.executor: ray")  # fmt: skip
    assert choose_executor(load_config(None, [*SMALL, "run.executor=local"]), 10**6)[0] == "local"
