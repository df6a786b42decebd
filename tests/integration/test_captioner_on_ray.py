"""The transformers captioner through ``fld run`` on Ray workers, with a tiny local
Florence-2 built offline (random weights, the same loading code a hub id takes)."""

from __future__ import annotations

import shutil

import yaml

from tests.fixtures.common import DEMO_IMAGES, run_fld
from tests.fixtures.corpus_tools import table_rows
from tests.fixtures.hf_tiny import build_tiny_florence2


def test_fld_run_with_tiny_florence2_on_ray(ray_address, tmp_path):
    model_dir = build_tiny_florence2(tmp_path / "tiny-florence2")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(DEMO_IMAGES / name, folder / name)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run": {"shard_size": 1, "batch_size": 2},
                "annotators": [
                    {"name": "ssd_coco"},
                    {"name": "hf_captioner", "model": str(model_dir), "max_new_tokens": 8},
                ],
                "filters": {"text_complexity": {"enabled": False}},
            }
        )
    )
    out = tmp_path / "corpus"
    run_fld(
        "run",
        str(folder),
        "--out",
        str(out),
        "--config",
        str(config),
        "--address",
        ray_address,
        "--quiet",
    )
    texts = table_rows(out, "texts")
    by_image: dict[str, set[str]] = {}
    for row in texts:
        text_id, image_id, _, granularity, text, source, score = row[:7]
        assert source == "hf_captioner@1"
        assert text.strip() and 0.0 <= score <= 1.0
        by_image.setdefault(image_id, set()).add(granularity)
    assert len(by_image) == 2
    assert all(
        granularities == {"brief", "detailed", "more_detailed"}
        for granularities in by_image.values()
    )
