"""The segment-anything segmenter with a tiny random SAM built here
(``tests/fixtures/tiny_models.py``), loaded through the same ``_build_sam`` + checkpoint
code as an official checkpoint: in process on the demo photos, and through ``fld run`` on
the session's Ray cluster. Its model types are checked in ``tests/unit``."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from pydantic import ValidationError

from annotators import annotator_class
from annotators.sam_segmenter import crops
from engine.masks import polygon_area
from engine.query import connect
from engine.records import Phrase, Region, Sample, Text
from tests.fixtures.common import DEMO_IMAGES, REPO, demo_sample, run_fld
from tests.fixtures.tiny_models import TINY_SAM_ENCODER, build_tiny_hf_sam, build_tiny_sam


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory) -> str:
    return str(build_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pth"))


def segmenter(**options):
    """A segment-anything segmenter of the tiny checkpoint (``checkpoint=``), or a
    transformers one (``model=``)."""
    if "checkpoint" in options:
        options = {"model_type": "custom", "encoder": TINY_SAM_ENCODER, **options}
    return annotator_class("sam_segmenter")(**options)


def counting(instance) -> tuple[list[int], list[int]]:
    """Wrap the backend's image encoder and mask decoder; returns the images per encoder
    pass and the boxes per decoder call."""
    encoded: list[int] = []
    decoded: list[int] = []
    backend = instance._backend
    embed, masks = backend.embed, backend.masks

    def counting_embed(images):
        encoded.append(len(images))
        return embed(images)

    def counting_masks(embedded, index, boxes, multimask):
        decoded.append(len(boxes))
        return masks(embedded, index, boxes, multimask)

    backend.embed, backend.masks = counting_embed, counting_masks
    return encoded, decoded


def populate(sample: Sample) -> dict[str, object]:
    """Object regions, an OCR line, a dropped region and phrases in every state."""
    w, h = sample.width, sample.height
    person = Region("object", 0.1 * w, 0.2 * h, 0.45 * w, 0.95 * h, "person", 0.9, "t@1")
    thing = Region("object", 0.5 * w + 0.3, 0.3 * h + 0.7, 0.9 * w, 0.7 * h, "bus", 0.8, "t@1")
    ocr = Region("ocr", 10, 10, 60, 30, "STOP", 0.9, "t@1", quad=[10, 10, 60, 10, 60, 30, 10, 30])
    dropped = Region("object", 5, 5, 40, 40, "cup", 0.1, "t@1")
    dropped.drop("low_score")
    sample.regions += [person, thing, ocr, dropped]
    text = Text("brief", "a person next to a bus and a sign", "t@1")
    sample.texts.append(text)

    def phrase(group: int, box, **fields) -> Phrase:
        return Phrase(text, group, f"p{group}", 0, 1, "t@1", box=box, score=0.9, **fields)

    on_person = phrase(0, person.box)  # shares the region's box: segmented once
    own_box = phrase(1, (0.6 * w, 0.05 * h, 0.8 * w, 0.25 * h))
    with_quad = phrase(2, ocr.box, polygon=list(ocr.quad))  # keeps its quad
    unmatched = phrase(3, None)
    unmatched.drop("no_match")
    low = phrase(4, (1.0, 1.0, 50.0, 50.0))
    low.drop("low_box_score")
    sample.phrases += [on_person, own_box, with_quad, unmatched, low]
    return {
        "person": person, "thing": thing, "ocr": ocr, "dropped": dropped,
        "on_person": on_person, "own_box": own_box, "with_quad": with_quad,
        "unmatched": unmatched, "low": low,
    }  # fmt: skip


def inside(polygon: list[float], box: tuple, slack: float = 1.0) -> bool:
    x0, y0, x1, y1 = box
    xs, ys = polygon[0::2], polygon[1::2]
    return (
        min(xs) >= x0 - slack and max(xs) <= x1 + slack
        and min(ys) >= y0 - slack and max(ys) <= y1 + slack
    )  # fmt: skip


def test_config_is_validated_before_any_model_loads(tmp_path, tiny_sam):
    cls = annotator_class("sam_segmenter")
    with pytest.raises(ValidationError, match="checkpoint file not found"):
        cls(checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(ValidationError, match="unknown model_type"):
        cls(checkpoint=tiny_sam, model_type="vit_xl")
    with pytest.raises(ValidationError, match="needs encoder"):
        cls(checkpoint=tiny_sam, model_type="custom")
    with pytest.raises(ValidationError, match="not < depth"):
        cls(
            checkpoint=tiny_sam,
            model_type="custom",
            encoder={"embed_dim": 32, "depth": 1, "num_heads": 2, "global_attn_indexes": [3]},
        )
    with pytest.raises(ValidationError, match="either checkpoint"):
        cls()
    with pytest.raises(ValidationError, match="either checkpoint"):
        cls(checkpoint=tiny_sam, model="facebook/sam-vit-base")
    not_sam = tmp_path / "owl"
    not_sam.mkdir()
    (not_sam / "config.json").write_text(json.dumps({"model_type": "owlv2"}))
    with pytest.raises(ValidationError, match="is a 'owlv2' model"):
        cls(model=str(not_sam))
    wrong = cls(
        checkpoint=tiny_sam,
        model_type="custom",
        encoder={"embed_dim": 64, "depth": 1, "num_heads": 2, "global_attn_indexes": [0]},
    )
    with pytest.raises(ValueError, match="does not fit a SAM"):
        wrong.setup()


@pytest.fixture(scope="module")
def tiny_hf_sam(tmp_path_factory) -> str:
    return str(build_tiny_hf_sam(tmp_path_factory.mktemp("hf-sam")))


def check_polygons(parts: list[dict]) -> None:
    for part in parts:
        for key in ("person", "thing", "on_person", "own_box"):
            polygon = part[key].polygon
            assert len(polygon) >= 6 and len(polygon) % 2 == 0, key
            assert inside(polygon, part[key].box), (key, polygon, part[key].box)
            assert polygon_area(polygon) > 0
        assert part["on_person"].polygon == part["person"].polygon
        assert part["with_quad"].polygon == part["ocr"].quad
        for key in ("ocr", "dropped", "unmatched", "low"):
            assert part[key].polygon in ([], None), key
    assert parts[0]["ocr"].polygon == []


@pytest.mark.parametrize("backend", ["segment_anything", "transformers"])
def test_tiny_sam_fills_polygons_inside_boxes_images_batched(tiny_sam, tiny_hf_sam, backend):
    model = {"checkpoint": tiny_sam} if backend == "segment_anything" else {"model": tiny_hf_sam}
    annotator = segmenter(**model)
    annotator.setup()
    encoded, decoded = counting(annotator)
    samples = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
    parts = [populate(sample) for sample in samples]
    annotator.annotate_samples(samples)
    # Both images in one encoder pass; one batched decoder call per image with its
    # distinct boxes: person (shared with a phrase), the other object region, and the
    # phrase's own box.
    assert encoded == [2] and decoded == [3, 3]
    check_polygons(parts)


def test_segment_anything_polygons_equal_sam_predictors(tiny_sam):
    """The batched path gives the polygons segment-anything's own SamPredictor gives
    for the same boxes, image by image."""
    import numpy as np
    import torch
    from segment_anything import SamPredictor

    annotator = segmenter(checkpoint=tiny_sam, batch_size=2)
    annotator.setup()
    samples = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
    parts = [populate(sample) for sample in samples]
    keys = ("person", "thing", "own_box")
    boxes = [[tuple(map(float, part[key].box)) for key in keys] for part in parts]
    batched = annotator.segment([s.pixels for s in samples], boxes)
    predictor = SamPredictor(annotator.build())
    for sample, image_boxes, polygons in zip(samples, boxes, batched, strict=True):
        predictor.set_image(sample.pixels)
        prompts = predictor.transform.apply_boxes_torch(
            torch.tensor(image_boxes), sample.pixels.shape[:2]
        )
        with torch.inference_mode():
            masks, _, _ = predictor.predict_torch(None, None, prompts, multimask_output=False)
        expected = [
            annotator.box_polygon(crop, box)
            for crop, box in zip(crops(masks[:, 0], image_boxes), image_boxes, strict=True)
        ]
        assert polygons == expected
        assert all(len(polygon) >= 6 for polygon in polygons)
        assert np.all(masks.numpy().any(axis=(1, 2, 3)))


def test_phrases_only_and_multimask(tiny_sam):
    annotator = segmenter(checkpoint=tiny_sam, segment_regions=False, multimask=True, tolerance=4.0)
    annotator.setup()
    _, calls = counting(annotator)
    sample = demo_sample("zidane.jpg")
    part = populate(sample)
    annotator.annotate_samples([sample])
    assert calls == [2]  # the two kept phrase boxes; regions are left alone
    assert part["thing"].polygon == [] and part["person"].polygon == []
    for key in ("on_person", "own_box"):
        assert len(part[key].polygon) >= 6 and inside(part[key].polygon, part[key].box)
    annotator.annotate_samples([Sample("x", "x", sample.pixels, None, 0)])  # nothing to do
    assert calls == [2]


def test_fld_run_with_tiny_sam_on_ray(ray_address, tiny_sam, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(DEMO_IMAGES / name, folder / name)
    config = yaml.safe_load((REPO / "pipelines" / "default_config.yaml").read_text())
    names = [annotator["name"] for annotator in config["annotators"]]
    config["annotators"][names.index("grabcut_segmenter")] = {
        "name": "sam_segmenter",
        "checkpoint": tiny_sam,
        "model_type": "custom",
        "encoder": TINY_SAM_ENCODER,
    }
    config["run"].update({"shard_size": 1, "batch_size": 2, "workers": 1})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    out = tmp_path / "corpus"
    run_fld(
        "run", str(folder), "--out", str(out), "--config", str(path),
        "--address", ray_address, "--quiet",
    )  # fmt: skip
    connection = connect(out)
    grounded, with_polygon = connection.execute(
        "SELECT count(*), count(*) FILTER (len(polygon) >= 6) FROM phrases "
        "WHERE kept AND box IS NOT NULL"
    ).fetchall()[0]
    assert grounded > 0 and with_polygon == grounded
    outside = connection.execute(
        "SELECT count(*) FROM phrases WHERE kept AND box IS NOT NULL AND ("
        "list_min(list_filter(polygon, lambda v, i: i % 2 = 1)) < box.x0 - 1 OR "
        "list_max(list_filter(polygon, lambda v, i: i % 2 = 1)) > box.x1 + 1 OR "
        "list_min(list_filter(polygon, lambda v, i: i % 2 = 0)) < box.y0 - 1 OR "
        "list_max(list_filter(polygon, lambda v, i: i % 2 = 0)) > box.y1 + 1)"
    ).fetchall()[0][0]
    assert outside == 0
    objects, object_polygons = connection.execute(
        "SELECT count(*), count(*) FILTER (len(polygon) >= 6) FROM regions "
        "WHERE kept AND kind = 'object'"
    ).fetchall()[0]
    assert objects > 0 and object_polygons > 0
    run_info = json.loads(next(out.glob("iteration=*/run.json")).read_text())
    assert "sam_segmenter@1" in run_info["annotators"]
    assert "grabcut_segmenter@1" not in run_info["annotators"]
