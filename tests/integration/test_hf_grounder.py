"""The transformers zero-shot grounder with tiny random OWLv2 / OWL-ViT detectors built
here (``tests/fixtures/tiny_models.py``) and loaded with ``from_pretrained(folder)`` as a
hub snapshot is: in process on the demo photos, and through ``fld run`` on Ray workers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from annotators import annotator_class
from engine.query import connect
from engine.records import Phrase, Sample, Text
from tests.fixtures.common import DEMO_IMAGES, REPO, demo_sample, run_fld
from tests.fixtures.hf_tiny import build_tiny_florence2
from tests.fixtures.tiny_models import build_tiny_grounding_dino, build_tiny_owl

SOURCE = "hf_grounder@1"


@pytest.fixture(scope="module")
def tiny_owl(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("owl")
    return {kind: str(build_tiny_owl(folder / kind, kind)) for kind in ("owlv2", "owlvit")}


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory) -> str:
    return str(build_tiny_grounding_dino(tmp_path_factory.mktemp("grounding-dino")))


@pytest.fixture(scope="module")
def tiny_florence2(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("florence2")
    return str(build_tiny_florence2(folder, speak_locations=True))


def grounder(model: str, **options):
    instance = annotator_class("hf_grounder")(model=model, **options)
    instance.setup()
    return instance


def counting(instance) -> list[int]:
    """Record, per detector call, how many text queries (OWL: rows of ``input_ids``)
    it was given."""
    calls: list[int] = []

    def hook(module, args, kwargs):
        calls.append(int(kwargs["input_ids"].shape[0]))

    instance._model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def populate(sample: Sample) -> dict[str, Phrase]:
    """Pending phrases (one wording repeated by a second caption), a blacklisted one and
    one that already has a box."""
    brief = Text("brief", "a bus and two people", "t@1")
    detailed = Text("detailed", "people next to a bus in a picture", "t@1")
    sample.texts += [brief, detailed]

    def phrase(text, group, words, **fields):
        start = text.text.index(words)
        return Phrase(text, group, words, start, start + len(words), "phrase_extractor@1", **fields)

    phrases = {
        "bus": phrase(brief, 0, "a bus", head="bus"),
        "two": phrase(brief, 1, "two people", plural=True, count=2, head="person"),
        "people": phrase(detailed, 2, "people", plural=True, head="person"),
        "bus_again": phrase(detailed, 3, "a bus", head="bus"),
        "picture": phrase(detailed, 4, "a picture", head="picture"),
        "boxed": phrase(brief, 5, "a bus", box=(1.0, 2.0, 30.0, 40.0), score=0.9),
    }
    phrases["picture"].drop("blacklist")
    sample.phrases += list(phrases.values())
    return phrases


def check_rows(sample: Sample, pending: list[Phrase]) -> dict[int, list[Phrase]]:
    by_group: dict[int, list[Phrase]] = {}
    for row in sample.phrases:
        by_group.setdefault(row.group, []).append(row)
    for phrase in pending:
        rows = by_group[phrase.group]
        assert all(row.source == SOURCE for row in rows)
        assert all(0.0 <= row.score <= 1.0 for row in rows)
        if len(rows) == 1 and not rows[0].kept:
            assert rows[0].box is None and rows[0].drop_reason == "no_match"
            continue
        assert all(row.kept and row.box is not None for row in rows)
        for row in rows:
            x0, y0, x1, y1 = row.box
            assert 0 <= x0 < x1 <= sample.width and 0 <= y0 < y1 <= sample.height
            assert row.polygon == [] and row.phrase == phrase.phrase
        limit = 1 if not phrase.plural else (phrase.count or 10)
        assert len(rows) <= limit
    return by_group


def test_config_is_validated(tmp_path):
    cls = annotator_class("hf_grounder")
    with pytest.raises(ValidationError, match="model folder not found"):
        cls(model=str(tmp_path / "missing"))
    with pytest.raises(ValidationError):
        cls(model="google/owlv2-base-patch16-ensemble", box_threshold=1.5)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    # A local folder's model type is checked when the config is read, before any work.
    with pytest.raises(ValidationError, match="is a 'bert' model; this annotator takes"):
        cls(model=str(other))
    (other / "config.json").unlink()
    with pytest.raises(ValidationError, match="no config.json"):
        cls(model=str(other))


@pytest.mark.parametrize("kind", ["owlv2", "owlvit"])
def test_tiny_owl_grounds_every_pending_phrase(tiny_owl, kind):
    annotator = grounder(tiny_owl[kind], box_threshold=0.0, max_boxes=3, batch_size=1)
    calls = counting(annotator)
    samples = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
    parts = [populate(sample) for sample in samples]
    annotator.annotate_samples(samples)
    # batch_size 1: one call per image, with the distinct pending wordings: a bus, two
    # people, people.
    assert calls == [3, 3]
    for sample, part in zip(samples, parts, strict=True):
        check_grounded(sample, part)
    # batch_size 2: both images in one call, each with its own queries; the same rows.
    batched = grounder(tiny_owl[kind], box_threshold=0.0, max_boxes=3, batch_size=2)
    batched_calls = counting(batched)
    again = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
    for sample in again:
        populate(sample)
    batched.annotate_samples(again)
    assert batched_calls == [6]
    for sample, first in zip(again, samples, strict=True):
        assert [(p.phrase, p.box) for p in sample.phrases] == [
            (p.phrase, p.box) for p in first.phrases
        ]
        assert [p.score for p in sample.phrases] == pytest.approx(
            [p.score for p in first.phrases], abs=1e-4
        )


def check_grounded(sample: Sample, part: dict[str, Phrase], same_query_same_box=True) -> None:
    """Threshold 0 and max_boxes 3: every phrase grounds; counts and max_boxes bound the
    plurals; phrases that were not pending are untouched."""
    pending = [part[key] for key in ("bus", "two", "people", "bus_again")]
    by_group = check_rows(sample, pending)
    assert [len(by_group[p.group]) for p in pending] == [1, 2, 3, 1]
    if same_query_same_box:
        assert by_group[0][0].box == by_group[3][0].box  # the same query, the same answer
    assert len({row.box for row in by_group[2]}) == 3
    for key in ("picture", "boxed"):  # not pending: untouched
        assert by_group[part[key].group] == [part[key]]
        assert part[key].source == "phrase_extractor@1"
    assert len(sample.phrases) == 1 + 2 + 3 + 1 + 2


def test_tiny_grounding_dino_scores_each_phrase_by_its_own_tokens(tiny_dino):
    annotator = grounder(tiny_dino, box_threshold=0.0, max_boxes=3, batch_size=2)
    assert type(annotator._model).__name__ == "GroundingDinoForObjectDetection"
    samples = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
    parts = [populate(sample) for sample in samples]
    calls = counting(annotator)
    annotator.annotate_samples(samples)
    assert calls == [2]  # one forward pass, one joined text per image
    for sample, part in zip(samples, parts, strict=True):
        check_grounded(sample, part)
    # A query's column is the best probability over its own tokens: recompute it from
    # the model's logits for one image.
    import torch
    from PIL import Image

    backend = annotator._backend
    text, spans = backend.prompt(["a bus", "two people"])
    assert text == "a bus. two people." and [text[a:b] for a, b in spans] == ["a bus", "two people"]
    pixels = samples[0].pixels
    ((scores, _),) = annotator.detect([pixels], [["a bus", "two people"]])
    inputs = backend.processor(images=[Image.fromarray(pixels)], text=[text], return_tensors="pt")
    with torch.inference_mode():
        probabilities = torch.sigmoid(annotator._model(**inputs).logits[0]).numpy()
    tokens = backend.processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
    assert tokens[1:7] == ["a", "bus", ".", "two", "people", "."]
    expected = np.stack([probabilities[:, [1, 2]].max(1), probabilities[:, [4, 5]].max(1)], 1)
    assert np.allclose(scores, expected, atol=1e-5)


def test_tiny_florence2_grounds_with_caption_to_phrase_grounding(tiny_florence2):
    annotator = grounder(tiny_florence2, box_threshold=0.0, max_boxes=3, max_new_tokens=48)
    samples = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
    parts = [populate(sample) for sample in samples]
    encoded = []
    get_image_features = annotator._model.get_image_features
    annotator._model.get_image_features = lambda pixels: (
        encoded.append(pixels.shape[0]) or get_image_features(pixels)
    )
    annotator.annotate_samples(samples)
    assert encoded == [2]  # both images encoded once for their six prompts
    grounded = 0
    for sample, part in zip(samples, parts, strict=True):
        pending = [part[key] for key in ("bus", "two", "people", "bus_again")]
        by_group = check_rows(sample, pending)
        grounded += sum(1 for p in pending if by_group[p.group][0].box is not None)
    assert grounded  # the random model writes location tokens for some prompts


def test_phrases_without_a_box_are_kept_as_no_match(tiny_owl):
    annotator = grounder(tiny_owl["owlv2"], min_box_side=10_000)
    calls = counting(annotator)
    sample = demo_sample("zidane.jpg")
    part = populate(sample)
    annotator.annotate_samples([sample])
    assert calls == [3]
    pending = [part[key] for key in ("bus", "two", "people", "bus_again")]
    check_rows(sample, pending)
    assert all(p.drop_reason == "no_match" and p.box is None and not p.kept for p in pending)
    annotator.annotate_samples([sample])  # nothing pending any more: no call
    assert calls == [3]


def test_a_failing_image_leaves_the_whole_batch_unchanged(tiny_owl):
    annotator = grounder(tiny_owl["owlvit"], box_threshold=0.0, batch_size=1)
    samples = [demo_sample("bus.jpg"), demo_sample("zidane.jpg")]
    for sample in samples:
        populate(sample)
    before = [list(sample.phrases) for sample in samples]
    detect, seen = annotator.detect, []

    def failing(images, queries):
        seen.append(queries)
        if len(seen) == 2:
            raise RuntimeError("second image fails")
        return detect(images, queries)

    annotator.detect = failing
    with pytest.raises(RuntimeError):
        annotator.annotate_samples(samples)
    assert [sample.phrases for sample in samples] == before
    assert all(p.box is None and p.kept and p.source == "phrase_extractor@1" for p in before[0][:4])


def test_fld_run_with_tiny_owlv2_on_ray(ray_address, tiny_owl, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(DEMO_IMAGES / name, folder / name)
    config = yaml.safe_load((REPO / "pipelines" / "default_config.yaml").read_text())
    names = [annotator["name"] for annotator in config["annotators"]]
    config["annotators"][names.index("embedding_grounder")] = {
        "name": "hf_grounder",
        "model": tiny_owl["owlv2"],
        "box_threshold": 0.0,
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
    rows = connection.execute(
        "SELECT p.image_id, p.box, p.score, i.width, i.height FROM phrases p "
        "JOIN images i USING (image_id) WHERE p.source = ?",
        [SOURCE],
    ).fetchall()
    assert {row[0] for row in rows} == {row[0] for row in connection.execute(
        "SELECT image_id FROM images").fetchall()}  # fmt: skip
    boxes = [row for row in rows if row[1] is not None]
    assert boxes
    for _, box, score, width, height in boxes:
        assert 0 <= box["x0"] < box["x1"] <= width and 0 <= box["y0"] < box["y1"] <= height
        assert 0.0 <= score <= 1.0
    # Each grounded phrase: its boxes (1 to max_boxes, 10 by default), or one row without a
    # box (no_match), never both.
    per_phrase = connection.execute(
        "SELECT phrase_id, count(*) FILTER (box IS NOT NULL), count(*) FILTER (box IS NULL) "
        "FROM phrases WHERE source = ? GROUP BY phrase_id",
        [SOURCE],
    ).fetchall()
    assert any(boxed for _, boxed, _ in per_phrase)
    assert all(
        (1 <= boxed <= 10 and unboxed == 0) or (boxed, unboxed) == (0, 1)
        for _, boxed, unboxed in per_phrase
    ), per_phrase
    run_info = json.loads(next(out.glob("iteration=*/run.json")).read_text())
    assert "hf_grounder@1" in run_info["annotators"]
    assert "embedding_grounder@1" not in run_info["annotators"]
