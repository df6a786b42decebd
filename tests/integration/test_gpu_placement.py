"""Model steps on GPUs, checked on a Ray cluster started with fake GPUs
(``ray start --head --num-gpus 2``: Ray schedules and assigns GPUs it is told of, and sets
``CUDA_VISIBLE_DEVICES`` for each actor). The ``hold`` step logs, from inside its actor,
the device and the GPU ids it was given (``engine.steps.worker_context``, which also checks
that ``CUDA_VISIBLE_DEVICES`` is what Ray assigned)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine.query import connect
from pipelines.annotate import output_config_hash
from pipelines.config import load_config
from tests.fixtures.common import DEMO_IMAGES, SSD_ONLY, run_fld
from tests.fixtures.ray_cluster import start_head, stop_head
from tests.fixtures.tiny_preset import tiny_preset

PHOTOS = ("bus.jpg", "zidane.jpg", "coffee.jpg", "astronaut.jpg")


@pytest.fixture(scope="module")
def fake_gpu_cluster() -> str:
    temp_dir = Path("/tmp") / f"fldgpu{os.getpid()}"
    head, address = start_head(temp_dir, "--num-cpus=4", "--num-gpus=2")
    yield address
    stop_head(head, temp_dir)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu") / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(DEMO_IMAGES / name, folder / name)
    return folder


def run_with_holds(photos: Path, out: Path, address: str, gpu_step: str, cpu_log: Path):
    annotators = (
        f"annotators=[{gpu_step}, {{name: hold, seconds_per_image: 0.05, log: '{cpu_log}'}}]"
    )
    return run_fld(
        "run", str(photos), "--out", str(out), "--address", address, "--workers", "2",
        "--shard-size", "1", "--quiet", "--set", annotators,
        "--set", "filters.text_complexity.enabled=false", check=False, timeout=600,
    )  # fmt: skip


def batches(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_gpu_replicas_get_distinct_gpus_and_cpu_steps_none(fake_gpu_cluster, photos, tmp_path):
    gpu_log, cpu_log = tmp_path / "gpu.jsonl", tmp_path / "cpu.jsonl"
    gpu_step = (
        f"{{name: hold, seconds_per_image: 0.3, log: '{gpu_log}', replicas: 2, "
        "resources: {num_gpus: 1}}"
    )
    result = run_with_holds(photos, tmp_path / "corpus", fake_gpu_cluster, gpu_step, cpu_log)
    assert result.returncode == 0, result.stderr[-3000:]
    gpu = batches(gpu_log)
    assert sum(b["images"] for b in gpu) == len(PHOTOS)
    ids_by_pid = {b["pid"]: tuple(b["gpu_ids"]) for b in gpu}
    assert all(b["device"] == "cuda:0" for b in gpu)
    assert all(len(ids) == 1 for ids in ids_by_pid.values())
    # Each CPU worker sends its batches to the replicas in turn, so both get some (4 shards,
    # 2 workers); the two replicas hold different GPUs.
    assert len(ids_by_pid) == 2 and len(set(ids_by_pid.values())) == 2, ids_by_pid
    cpu = batches(cpu_log)
    assert cpu and all(b["gpu_ids"] == [] and b["device"] == "cpu" for b in cpu)
    assert not set(ids_by_pid) & {b["pid"] for b in cpu}  # the model pool is its own actors


def test_half_a_gpu_puts_two_replicas_on_one_gpu(fake_gpu_cluster, photos, tmp_path):
    gpu_log, cpu_log = tmp_path / "gpu.jsonl", tmp_path / "cpu.jsonl"
    gpu_step = (
        f"{{name: hold, seconds_per_image: 0.3, log: '{gpu_log}', replicas: 2, "
        "resources: {num_gpus: 0.5}}"
    )
    result = run_with_holds(photos, tmp_path / "corpus", fake_gpu_cluster, gpu_step, cpu_log)
    assert result.returncode == 0, result.stderr[-3000:]
    gpu = batches(gpu_log)
    assert len({b["pid"] for b in gpu}) == 2, "both replicas took batches"
    assert len({tuple(b["gpu_ids"]) for b in gpu}) == 1  # two replicas, one GPU


def test_a_pool_the_cluster_cannot_place_fails_before_any_work(fake_gpu_cluster, photos, tmp_path):
    gpu_step = "{name: hold, resources: {num_gpus: 4}}"
    out = tmp_path / "corpus"
    result = run_with_holds(photos, out, fake_gpu_cluster, gpu_step, tmp_path / "cpu.jsonl")
    assert result.returncode == 2
    assert "annotators.0.resources asks 4.0 GPU per replica" in result.stderr
    assert not list(out.glob("iteration=0/_shards/*.json"))


def test_where_a_model_runs_does_not_change_the_config_hash():
    """A run resumed on other GPUs, or with other replicas, continues its shards."""
    base = load_config(None, ["annotators=[{name: yolo, weights: yolov8n.yaml}]"])
    moved = load_config(
        None,
        [
            "annotators=[{name: yolo, weights: yolov8n.yaml, device: 'cuda:1', replicas: 3, "
            "resources: {num_gpus: 1}}]"
        ],
    )
    assert output_config_hash(base) == output_config_hash(moved)
    changed = load_config(
        None, ["annotators=[{name: yolo, weights: yolov8n.yaml, min_score: 0.5}]"]
    )
    assert output_config_hash(base) != output_config_hash(changed)


def test_the_fld5b_preset_runs_end_to_end_with_tiny_models(fake_gpu_cluster, photos, tmp_path):
    """configs/fld5b-gpu.yaml with its hub ids mapped to tiny local models
    (tests/fixtures/tiny_preset.py) through ``fld run`` on the fake-GPU cluster: Grounding
    DINO, transformers SAM and the Florence-2 region specialist included."""
    out = tmp_path / "corpus"
    result = run_fld(
        "run", str(photos), "--out", str(out), "--config", str(tiny_preset(tmp_path)),
        "--address", fake_gpu_cluster, "--quiet", check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    connection = connect(out)

    def count(query: str) -> int:
        return connection.execute(query).fetchall()[0][0]

    assert count("SELECT count(*) FROM images") == len(PHOTOS)
    assert count("SELECT count(*) FROM errors") == 0
    rows = connection.execute(
        "SELECT r.kind, r.x0, r.y0, r.x1, r.y1, r.quad, i.width, i.height FROM regions r "
        "JOIN images i USING (image_id) WHERE r.source = 'florence2_regions@1'"
    ).fetchall()
    assert {row[0] for row in rows} == {"object", "dense", "ocr"}
    for kind, x0, y0, x1, y1, quad, width, height in rows:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert (quad is not None and len(quad) == 8) == (kind == "ocr")
    granularities = connection.execute(
        "SELECT granularity, count(DISTINCT image_id) FROM texts "
        "WHERE source = 'hf_captioner@1' GROUP BY ALL"
    ).fetchall()
    assert dict(granularities) == dict.fromkeys(("brief", "detailed", "more_detailed"), len(PHOTOS))
    # Grounding DINO grounded the kept texts' phrases; SAM traced the grounded boxes.
    assert count("SELECT count(*) FROM phrases WHERE source = 'hf_grounder@1'") > 0
    grounded = count("SELECT count(*) FROM phrases WHERE kept AND box IS NOT NULL")
    traced = count(
        "SELECT count(*) FROM phrases WHERE kept AND box IS NOT NULL AND len(polygon) >= 6"
    )
    assert grounded > 0 and traced > 0
    run_info = json.loads((out / "iteration=0" / "run.json").read_text())
    models = ["florence2_regions@1", "hf_captioner@1", "hf_grounder@1", "sam_segmenter@1", "yolo@1"]
    assert set(models) <= set(run_info["annotators"])
    # Each model step ran in its own actor holding a share of one (fake) GPU; its
    # parameters are where its config put them (the CPU: these GPUs are fake).
    pools = run_info["executor"]["model_pools"]
    assert sorted(pool["annotator"] for pool in pools) == models
    assert all(len(pool["gpu_ids"]) == 1 and pool["device"] == "cuda:0" for pool in pools)
    assert all(pool["parameters"] == ["cpu float32"] for pool in pools), pools
    assert len({pool["pid"] for pool in pools}) == len(models)


@pytest.fixture(scope="module")
def ssd_corpus(fake_gpu_cluster, photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu-refine") / "corpus"
    result = run_fld(
        "run", str(photos), "--out", str(out), "--address", fake_gpu_cluster, "--quiet",
        *SSD_ONLY, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_ssd_student_trains_in_a_ray_task_holding_a_gpu(fake_gpu_cluster, ssd_corpus, tmp_path):  # fmt: skip
    corpus = tmp_path / "corpus"
    shutil.copytree(ssd_corpus, corpus)
    result = run_fld(
        "refine", str(corpus), "--iterations", "1", "--epochs", "1", "--address",
        fake_gpu_cluster, "--quiet", "--set", "refine.student.ssd.train_num_gpus=1",
        check=False, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((corpus / "models" / "iteration=1" / "student.json").read_text())
    # Ray gave the task one of the cluster's two (fake) GPUs; torch sees no CUDA here, so
    # ``train_device: auto`` trained on the CPU.
    assert len(summary["trained_on"]["ray_gpu_ids"]) == 1
    assert summary["trained_on"]["ray_gpu_ids"][0] in {"0", "1"}
    assert summary["trained_on"]["device"] == "cpu"
    run = json.loads((corpus / "iteration=1" / "run.json").read_text())
    assert run["student"]["sha256"] == summary["sha256"]
    sources = connect(corpus, [1]).execute("SELECT DISTINCT source FROM regions").fetchall()
    assert ("student_ssd_i1@2",) in sources


def test_a_student_asking_more_gpus_than_the_cluster_has_fails_before_training(
    fake_gpu_cluster, ssd_corpus, tmp_path
):
    corpus = tmp_path / "corpus"
    shutil.copytree(ssd_corpus, corpus)
    result = run_fld(
        "refine", str(corpus), "--iterations", "1", "--address", fake_gpu_cluster, "--quiet",
        "--set", "refine.student.ssd.train_num_gpus=3", check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2
    assert "refine.student.ssd.train_num_gpus asks 3.0 GPU" in result.stderr
    assert not (corpus / "models" / "iteration=1").exists()
    assert not (corpus / "iteration=1" / "_COMMITTED").exists()
