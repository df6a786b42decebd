"""The run configuration: defaults, overrides, errors that name their key, and the CLI
failing fast (exit 2, before Ray starts, nothing written) on a bad config or ``--out``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from filters.confidence import ConfidenceFilter
from filters.fusion import FusionFilter
from filters.geometry import GeometryFilter
from filters.nms import NMSFilter
from filters.phrase_confidence import PhraseConfidenceFilter
from filters.text_complexity import TextComplexityFilter
from pipelines.config import DEFAULT_CONFIG_PATH, ConfigError, EngineConfig, load_config

REPO = Path(__file__).resolve().parent.parent
DEMO_IMAGES = REPO / "demo" / "images"
FAIL_FAST_SECONDS = 2.0


def write_yaml(path: Path, tree) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


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
        FusionFilter,
        TextComplexityFilter,
        PhraseConfidenceFilter,
    ]
    assert filters[2].iou_threshold == 0.5
    assert config.run.executor == "ray"
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


# --- the CLI fails fast -----------------------------------------------------------------


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(DEMO_IMAGES), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    return result, time.monotonic() - start


@pytest.fixture
def yolo_missing_weights(tmp_path) -> Path:
    return write_yaml(
        tmp_path / "yolo.yaml", {"annotators": [{"name": "yolo", "weights": "/nonexistent/w.pt"}]}
    )


CLI_CASES = {
    "unknown_key": (["--set", "bogus=1"], "bogus"),
    "unknown_run_key": (["--set", "run.bogus=1"], "run.bogus"),
    "bad_threshold": (["--set", "filters.nms.iou_threshold=2"], "filters.nms.iou_threshold"),
    "unknown_annotator": (["--set", "annotators.0.name=nope"], "annotators.0.name"),
    "missing_weights": (["--config", "{yolo}"], "annotators.0.weights"),
    "bad_workers_flag": (["--workers", "0"], "run.workers"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_config_exits_2_fast_and_writes_nothing(tmp_path, yolo_missing_weights, case):
    extra, key = CLI_CASES[case]
    extra = [arg.replace("{yolo}", str(yolo_missing_weights)) for arg in extra]
    out = tmp_path / "corpus"
    result, seconds = run_cli("--out", str(out), *extra)
    assert result.returncode == 2, result.stderr
    assert key in result.stderr
    assert result.stderr.startswith("fld run: ")
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.2f} s to reject a bad config"


def test_cli_unwritable_out_exits_2_fast(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    out = blocker / "corpus"
    result, seconds = run_cli("--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "--out" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert blocker.read_text() == "not a folder"
    assert seconds < FAIL_FAST_SECONDS, f"took {seconds:.2f} s to reject --out"


def test_cli_missing_config_file_exits_2(tmp_path):
    out = tmp_path / "corpus"
    result, seconds = run_cli("--out", str(out), "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2, result.stderr
    assert "--config" in result.stderr
    assert not out.exists()
    assert seconds < FAIL_FAST_SECONDS


def test_cli_bad_config_imports_neither_ray_nor_torch(tmp_path):
    """The reason rejection is fast: validation needs no heavy library."""
    out = tmp_path / "corpus"
    code = (
        "import sys\n"
        "from pipelines.cli import main\n"
        f"rc = main(['run', {str(DEMO_IMAGES)!r}, '--out', {str(out)!r}, "
        "'--set', 'filters.nms.iou_threshold=2'])\n"
        "heavy = ('ray', 'torch', 'torchvision', 'cv2', 'rapidocr', 'ultralytics')\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout.strip() == "[]"
    assert not out.exists()
