"""The transformers captioner with tiny random-weight Florence-2 and BLIP models that
``tests/fixtures/hf_tiny.py`` builds offline and saves to a folder: real processors, real
``generate``, loaded by ``from_pretrained`` exactly as a hub snapshot is (one test loads
one through a hub id from a local hub cache). A missing model folder failing validation
is checked in ``tests/unit/test_hf_captioner.py``."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from annotators.hf_captioner import FLORENCE2_TASKS, HFCaptioner  # noqa: E402
from annotators.hf_generation import counted_tokens, decode_text, generate_scored  # noqa: E402
from engine.imaging import decode_image  # noqa: E402
from engine.records import GRANULARITIES, Sample, content_id  # noqa: E402
from tests.fixtures.common import DEMO_IMAGES, REPO  # noqa: E402
from tests.fixtures.hf_tiny import build_tiny_blip, build_tiny_florence2  # noqa: E402

PHOTOS = ("bus.jpg", "zidane.jpg")

# What Florence2Processor turns each task token into (transformers' task table).
FLORENCE2_INSTRUCTIONS = {
    "brief": "What does the image describe?",
    "detailed": "Describe in detail what is shown in the image.",
    "more_detailed": "Describe with a paragraph what is shown in the image.",
}


@pytest.fixture(scope="module")
def florence_folder(tmp_path_factory) -> Path:
    return build_tiny_florence2(tmp_path_factory.mktemp("tiny-florence2"))


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory) -> Path:
    return build_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


def demo_samples() -> list[Sample]:
    samples = []
    for name in PHOTOS:
        data = (DEMO_IMAGES / name).read_bytes()
        decoded = decode_image(data)
        samples.append(
            Sample(
                content_id(data), str(DEMO_IMAGES / name), decoded.pixels, decoded.format, len(data)
            )
        )
    return samples


def record_generate(captioner: HFCaptioner) -> list[dict]:
    """Wrap the loaded model's ``generate`` to record what each call received."""
    calls: list[dict] = []
    generate = captioner._model.generate

    def recording(**kwargs):
        calls.append({key: value for key, value in kwargs.items() if hasattr(value, "shape")})
        return generate(**kwargs)

    captioner._model.generate = recording
    return calls


def check_texts(samples: list[Sample], granularities, source: str) -> None:
    for sample in samples:
        assert Counter(t.granularity for t in sample.texts) == Counter(granularities), sample.uri
        for text in sample.texts:
            assert text.source == source
            assert isinstance(text.text, str) and text.text.strip() == text.text and text.text
            assert 0.0 <= text.score <= 1.0


# --------------------------------------------------------------------------- Florence-2


def test_florence2_writes_three_granularities_encoding_each_image_once(florence_folder):
    captioner = HFCaptioner(model=str(florence_folder), max_new_tokens=8)
    captioner.setup()
    assert type(captioner._model).__name__ == "Florence2ForConditionalGeneration"
    assert type(captioner._processor).__name__ == "Florence2Processor"
    calls = record_generate(captioner)
    encoded = []
    get_image_features = captioner._model.get_image_features
    captioner._model.get_image_features = lambda pixels: (
        encoded.append(pixels.shape[0]) or get_image_features(pixels)
    )
    samples = demo_samples()

    captioner.annotate_samples(samples)

    check_texts(samples, GRANULARITIES, "hf_captioner@1")
    # The vision tower ran once for both images; one batched generate per granularity.
    assert encoded == [len(samples)]
    assert [call["attention_mask"].shape[0] for call in calls] == [len(samples)] * 3
    # The texts and scores are those of Florence-2's own path, where the processor writes
    # each task's instruction and generate encodes the pixels itself.
    captioner._model.generate = calls_generate = type(captioner._model).generate.__get__(
        captioner._model
    )
    assert calls_generate
    images = [Image.fromarray(s.pixels) for s in samples]
    for granularity, task in FLORENCE2_TASKS.items():
        batch = captioner._processor(images=images, text=[task] * 2, return_tensors="pt")
        prompts = captioner._processor.tokenizer.batch_decode(
            batch["input_ids"], skip_special_tokens=True
        )
        assert [p.strip() for p in prompts] == [FLORENCE2_INSTRUCTIONS[granularity]] * 2
        direct = generate_scored(captioner._model, captioner._processor, batch, captioner._decoding)
        written = [next(t for t in s.texts if t.granularity == granularity) for s in samples]
        assert [decode_text(captioner._processor, d) for d in direct] == [t.text for t in written]
        assert [d.score for d in direct] == pytest.approx([t.score for t in written], abs=1e-5)
    # Greedy, so deterministic.
    again = demo_samples()
    captioner.annotate_samples(again)
    assert [(t.text, t.score) for s in again for t in s.texts] == [
        (t.text, t.score) for s in samples for t in s.texts
    ]


def test_florence2_subset_of_granularities_and_source_name(florence_folder):
    captioner = HFCaptioner(
        model=str(florence_folder),
        granularities=["more_detailed"],
        max_new_tokens=4,
        num_beams=2,
        source_name="florence_base",
    )
    captioner.setup()
    samples = demo_samples()
    captioner.annotate_samples(samples)
    check_texts(samples, ["more_detailed"], "florence_base@1")


# --------------------------------------------------------------------------- BLIP


def test_blip_brief_only_without_prompts(blip_folder):
    captioner = HFCaptioner(model=str(blip_folder), max_new_tokens=6)
    captioner.setup()
    assert type(captioner._model).__name__ == "BlipForConditionalGeneration"
    calls = record_generate(captioner)
    samples = demo_samples()
    captioner.annotate_samples(samples)
    check_texts(samples, ["brief"], "hf_captioner@1")
    assert len(calls) == 1 and "input_ids" not in calls[0]  # unprompted


def test_blip_with_prompts_writes_longer_granularities(blip_folder):
    prompts = {"detailed": "a detailed picture of", "more_detailed": "a long description of"}
    captioner = HFCaptioner(model=str(blip_folder), max_new_tokens=6, prompts=prompts)
    captioner.setup()
    calls = record_generate(captioner)
    samples = demo_samples()
    captioner.annotate_samples(samples)
    check_texts(samples, GRANULARITIES, "hf_captioner@1")
    tokenizer = captioner._processor.tokenizer
    assert "input_ids" not in calls[0]
    for call, granularity in zip(calls[1:], ["detailed", "more_detailed"], strict=True):
        sent = tokenizer.batch_decode(call["input_ids"], skip_special_tokens=True)
        assert sent == [prompts[granularity]] * 2
    # the text is the continuation: BLIP's output sequences start with the prompt
    by_granularity = {t.granularity: t.text for t in samples[0].texts}
    assert not by_granularity["detailed"].startswith(prompts["detailed"])


def test_score_counts_tokens_up_to_the_end_token(blip_folder):
    import torch

    captioner = HFCaptioner(model=str(blip_folder))
    captioner.setup()
    tokenizer = captioner._processor.tokenizer
    end, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
    tokens = torch.tensor([[7, 8, end, pad, pad], [7, end, pad, pad, pad], [7, 8, 9, 10, 11]])
    counted = counted_tokens(captioner._model, captioner._processor, tokens)
    assert counted.sum(dim=1).tolist() == [3, 2, 5]


# --------------------------------------------------------------------------- config


def test_other_settings_are_validated(florence_folder):
    HFCaptioner(model="florence-community/Florence-2-base")  # a hub id: checked at setup
    with pytest.raises(ValidationError, match="granularities"):
        HFCaptioner(model=str(florence_folder), granularities=["short"])
    with pytest.raises(ValidationError, match="prompts"):
        HFCaptioner(model=str(florence_folder), prompts={"long": "a"})
    with pytest.raises(ValidationError, match="sampling"):
        HFCaptioner(model=str(florence_folder), generate_kwargs={"do_sample": True})
    with pytest.raises(ValidationError):
        HFCaptioner(model=str(florence_folder), threshold=0.5)


def test_hub_id_loads_from_the_local_hub_cache(blip_folder, tmp_path):
    """A hub id resolves through the hub cache with HF_HUB_OFFLINE=1 (the layout
    ``snapshot_download`` leaves): the same ``from_pretrained`` as for a folder."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--fld-tests--tiny-blip"
    shutil.copytree(blip_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = (
        "import json, sys\n"
        "from tests.integration.test_hf_captioner import demo_samples\n"
        "from annotators.hf_captioner import HFCaptioner\n"
        "c = HFCaptioner(model='fld-tests/tiny-blip', max_new_tokens=4)\n"
        "c.setup()\n"
        "samples = demo_samples()\n"
        "c.annotate_samples(samples)\n"
        "print(json.dumps([[t.granularity, t.source] for s in samples for t in s.texts]))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [["brief", "hf_captioner@1"]] * 2


# --------------------------------------------------------------------------- end to end


def test_engine_run_writes_captions_to_the_texts_table(florence_folder, tmp_path):
    from engine.query import connect
    from pipelines.annotate import annotate_corpus
    from pipelines.config import load_config

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(DEMO_IMAGES / name, photos / name)
    config_file = tmp_path / "captions.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "run": {"executor": "local", "batch_size": 2},
                "annotators": [
                    {"name": "ssd_coco"},
                    {"name": "hf_captioner", "model": str(florence_folder), "max_new_tokens": 8},
                ],
            }
        )
    )
    config = load_config(config_file)
    out = tmp_path / "corpus"
    annotate_corpus(config, str(photos), str(out), show_progress=False)

    rows = (
        connect(out)
        .execute(
            "SELECT i.uri, t.granularity, t.source, t.text, t.score FROM texts t "
            "JOIN images i USING (image_id) ORDER BY i.uri, t.granularity"
        )
        .fetchall()
    )
    by_image: dict[str, list[str]] = {}
    for uri, granularity, source, text, score in rows:
        if source != "hf_captioner@1":
            continue
        assert text and 0.0 <= score <= 1.0
        by_image.setdefault(Path(uri).name, []).append(granularity)
    assert by_image == {name: sorted(GRANULARITIES) for name in PHOTOS}
    errors = connect(out).execute("SELECT stage, message FROM errors").fetchall()
    assert errors == []
