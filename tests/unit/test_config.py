"""The run configuration: defaults, overrides, errors that name their key. The CLI failing
fast on a bad config or ``--out`` is in ``tests/integration/test_config.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from filters.confidence import ConfidenceFilter
from filters.fusion import FusionFilter
from filters.geometry import GeometryFilter
from filters.human_review import HumanReviewFilter
from filters.nms import NMSFilter
from filters.phrase_confidence import PhraseConfidenceFilter
from filters.text_complexity import TextComplexityFilter
from pipelines.config import DEFAULT_CONFIG_PATH, ConfigError, EngineConfig, load_config
from tests.fixtures.common import write_yaml

# --- load_config ------------------------------------------------------------------------


def test_default_config_validates_and_builds():
    config = load_config()
    assert isinstance(config, EngineConfig)
    assert [spec.name for spec in config.annotators] == [
        "ssd_coco",
        "rapidocr",
        "dense_captioner",
        "region_captioner",
        "phrase_extractor",
        "embedding_grounder",
        "grabcut_segmenter",
    ]
    annotators = [spec.build() for spec in config.annotators]  # builds, loads no model
    assert [type(a).__name__ for a in annotators] == [
        "SSDCocoDetector",
        "RapidOCRReader",
        "DenseRegionCaptioner",
        "RegionCaptioner",
        "PhraseExtractor",
        "EmbeddingGrounder",
        "GrabCutSegmenter",
    ]
    assert all(a.source.endswith(f"@{a.version}") for a in annotators)
    filters = config.filters.build()
    assert [type(f) for f in filters] == [
        GeometryFilter,
        ConfidenceFilter,
        NMSFilter,
        HumanReviewFilter,
        FusionFilter,
        TextComplexityFilter,
        PhraseConfidenceFilter,
    ]
    assert filters[2].iou_threshold == 0.5
    assert config.run.executor == "auto" and config.run.local_max_images == 16
    # the resolved config round-trips through its own validation
    assert EngineConfig.model_validate(config.to_dict()).to_dict() == config.to_dict()


def test_default_path_equals_none():
    assert load_config(DEFAULT_CONFIG_PATH).to_dict() == load_config(None).to_dict()


def test_overrides_by_dotted_key_and_list_index():
    config = load_config(
        None,
        [
            "filters.nms.iou_threshold=0.6",
            "run.workers=4",
            "annotators.0.min_score=0.2",
            "annotators.1.min_score=0.7",
            "run.address=127.0.0.1:6379",
        ],
    )
    assert config.filters.nms.model_extra["iou_threshold"] == 0.6
    assert config.filters.build()[2].iou_threshold == 0.6
    assert config.run.workers == 4
    assert config.annotators[0].arguments == {"min_score": 0.2}
    assert config.annotators[0].build().min_score == 0.2
    assert config.annotators[1].build().min_score == 0.7
    assert config.run.address == "127.0.0.1:6379"


def test_override_values_are_yaml():
    config = load_config(
        None,
        [
            "filters.confidence.per_kind={ocr: 0.7, dense: 0.1}",
            "filters.nms.kinds=[object]",
            "filters.nms.class_agnostic=true",
            "filters.geometry.enabled=false",
            "filters.text_complexity.enabled=false",
            "filters.fusion.enabled=false",
            "filters.phrase_confidence.enabled=false",
            "filters.human_review.enabled=false",
            "input.parquet_column=null",
        ],
    )
    built = config.filters.build()
    assert [type(f) for f in built] == [ConfidenceFilter, NMSFilter]
    confidence, nms = built
    assert confidence.per_kind == {"ocr": 0.7, "dense": 0.1}
    assert nms.kinds == ["object"] and nms.class_agnostic is True
    assert config.input.parquet_column is None


def test_override_replaces_a_whole_list():
    config = load_config(None, ["annotators=[{name: rapidocr, min_score: 0.4}]"])
    assert [spec.name for spec in config.annotators] == ["rapidocr"]


def test_config_file_and_overrides_combine(tmp_path):
    path = write_yaml(
        tmp_path / "c.yaml",
        {"annotators": [{"name": "rapidocr"}], "run": {"shard_size": 5}},
    )
    config = load_config(path, ["run.shard_size=7"])
    assert config.run.shard_size == 7
    assert config.run.batch_size == 8  # unspecified sections keep their defaults
    assert [type(f) for f in config.filters.build()] == [
        GeometryFilter,
        ConfidenceFilter,
        NMSFilter,
        HumanReviewFilter,
        FusionFilter,
        TextComplexityFilter,
        PhraseConfidenceFilter,
    ]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["bogus=1"], "bogus"),
        (["run.bogus=1"], "run.bogus"),
        (["filters.nms.iou_threshold=2"], "filters.nms.iou_threshold"),
        (["filters.confidence.default=1.5"], "filters.confidence.default"),
        (["filters.geometry.max_area_fraction=0"], "filters.geometry.max_area_fraction"),
        (["filters.nms.bogus=1"], "filters.nms.bogus"),
        (["filters.confidence.per_kind={sky: 0.2}"], "filters.confidence"),
        (["filters.unknown_filter.enabled=true"], "filters.unknown_filter"),
        (["run.executor=spark"], "run.executor"),
        (["run.workers=0"], "run.workers"),
        (["annotators.0.name=nope"], "annotators.0.name"),
        (["annotators.0.min_score=3"], "annotators.0.min_score"),
        (["annotators.1.bogus=1"], "annotators.1.bogus"),
        (["annotators=[]"], "annotators"),
        (["annotators.7.min_score=0.2"], "annotators.7.min_score"),
        (["run.workers"], "run.workers"),
    ],
)
def test_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert key in str(caught.value)


def test_unknown_annotator_lists_known_names():
    with pytest.raises(ConfigError, match="annotators.0.name") as caught:
        load_config(None, ["annotators.0.name=nope"])
    assert "ssd_coco" in str(caught.value) and "'nope'" in str(caught.value)


def test_missing_weights_file_names_the_key(tmp_path):
    path = write_yaml(
        tmp_path / "yolo.yaml", {"annotators": [{"name": "yolo", "weights": "/nonexistent/w.pt"}]}
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "annotators.0.weights" in message
    assert "/nonexistent/w.pt" in message


def test_unknown_top_level_key_in_file(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"annotators": [{"name": "rapidocr"}], "filterz": {}})
    with pytest.raises(ConfigError, match=r"filterz: unknown key"):
        load_config(path)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_that_is_not_a_mapping(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_empty_file_requires_annotators(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="annotators"):
        load_config(empty)


@pytest.mark.parametrize(
    ("annotator", "model_type"),
    [
        ({"name": "florence2_regions"}, "owlv2"),
        ({"name": "hf_grounder"}, "bert"),
        ({"name": "sam_segmenter"}, "florence2"),
    ],
)
def test_local_model_folder_of_the_wrong_type_names_the_key(tmp_path, annotator, model_type):
    """A local model folder's config.json is read with the config, before Ray starts or
    a model loads: a folder of another model type fails naming the key."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    path = write_yaml(tmp_path / "c.yaml", {"annotators": [{**annotator, "model": str(folder)}]})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "annotators.0.model" in message
    assert f"is a '{model_type}' model; this annotator takes" in message


PRESET = Path(__file__).resolve().parents[2] / "configs" / "fld5b-gpu.yaml"


def test_the_fld5b_gpu_preset_validates_once_its_yolo_weights_are_set(tmp_path):
    with pytest.raises(ConfigError, match="annotators.0.weights"):
        load_config(PRESET)  # its YOLO path is a placeholder
    weights = tmp_path / "yolo11x.pt"
    weights.write_bytes(b"not loaded: validation only checks the file exists")
    config = load_config(PRESET, [f"annotators.0.weights={weights}"])
    by_name = {spec.name: spec for spec in config.annotators}
    assert list(by_name) == [
        "yolo", "florence2_regions", "rapidocr", "hf_captioner", "phrase_extractor",
        "hf_grounder", "sam_segmenter",
    ]  # fmt: skip
    models = {name: by_name[name].arguments.get("model") for name in by_name}
    assert (
        models["florence2_regions"]
        == models["hf_captioner"]
        == ("florence-community/Florence-2-large")
    )
    assert models["hf_grounder"] == "IDEA-Research/grounding-dino-base"
    assert models["sam_segmenter"] == "facebook/sam-vit-huge"
    gpu_steps = [spec for spec in config.annotators if spec.placement().num_gpus > 0]
    assert {spec.name for spec in gpu_steps} == {
        "yolo",
        "florence2_regions",
        "hf_captioner",
        "hf_grounder",
        "sam_segmenter",
    }
    assert all(spec.pooled for spec in gpu_steps)
    # Sized for one GPU; every torch model in half precision.
    assert sum(spec.placement().num_gpus for spec in gpu_steps) == pytest.approx(1.0)
    assert by_name["yolo"].arguments["half"] is True
    assert all(
        by_name[name].arguments["dtype"] == "float16"
        for name in ("florence2_regions", "hf_captioner", "hf_grounder", "sam_segmenter")
    )
