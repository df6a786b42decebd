"""End-to-end runs of the real pipeline with the in-process executor:

- the YOLO annotator doing real ultralytics inference with a tiny random-weight model
  built offline from a model YAML and saved to a ``.pt`` file;
- the three input forms (folder, WebDataset tar, Parquet of bytes or of paths) giving
  the same corpus content, each with the URI form documented in ``engine.sources``.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from engine.query import connect
from engine.records import content_id
from pipelines.annotate import annotate_corpus
from pipelines.config import ConfigError, load_config
from tests.fixtures import imagekit
from tests.fixtures.common import DEMO_IMAGES
from tests.fixtures.corpus_tools import table_rows

LOCAL = ["run.executor=local", "run.shard_size=1"]


def rows(corpus: Path, query: str, parameters: list | None = None) -> list[tuple]:
    return connect(corpus).execute(query, parameters or []).fetchall()


def committed(corpus: Path, iteration: int = 0) -> bool:
    return (corpus / f"iteration={iteration}" / "_COMMITTED").exists()


# --------------------------------------------------------------------------- YOLO


@pytest.fixture(scope="module")
def yolo_model(tmp_path_factory) -> tuple[Path, set[str]]:
    """A YOLOv8n with random weights, built from ultralytics' model YAML (no download) and
    saved as a ``.pt`` that ``YOLO(path)`` reloads; returns the path and its class names."""
    from engine.offline import prepare_ultralytics

    prepare_ultralytics()  # before ultralytics is imported: it would fetch a font
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    path = tmp_path_factory.mktemp("yolo") / "yolov8n_random.pt"
    model.save(path)
    assert path.is_file()
    return path, {str(name) for name in model.names.values()}


def test_yolo_pipeline_writes_object_regions(yolo_model, tmp_path):
    weights, class_names = yolo_model
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("bus.jpg", "zidane.jpg"):
        shutil.copy(DEMO_IMAGES / name, photos / name)
    config_file = tmp_path / "yolo.yaml"
    yolo = {"name": "yolo", "weights": str(weights), "min_score": 0.0, "image_size": 320}
    config_file.write_text(
        yaml.safe_dump(
            {
                "run": {"batch_size": 2},
                "annotators": [yolo, {**yolo, "source_name": "student_i1"}],
                # random weights score far below any useful threshold: keep them all so
                # that geometry and NMS still decide, and kept rows exist to check
                # Two instances of one model: fusing them would hide the rows under test.
                "filters": {"confidence": {"enabled": False}, "fusion": {"enabled": False}},
            }
        )
    )
    config = load_config(config_file, ["run.executor=local"])
    out = tmp_path / "corpus"
    summary = annotate_corpus(config, str(photos), str(out), show_progress=False)

    assert committed(out)
    assert summary.n_inputs == 2 and summary.shards_run == summary.n_shards
    info = json.loads((out / "iteration=0" / "run.json").read_text())
    assert info["annotators"] == ["yolo@1", "student_i1@1"]
    assert rows(out, "SELECT count(*) FROM errors") == [(0,)]
    assert rows(out, "SELECT count(*) FROM images") == [(2,)]

    per_source = dict(
        rows(out, "SELECT source, count(*) FILTER (kept) FROM regions GROUP BY source")
    )
    assert set(per_source) == {"yolo@1", "student_i1@1"}
    assert per_source["yolo@1"] > 0
    # both images got kept detections
    assert rows(
        out, "SELECT count(DISTINCT image_id) FROM regions WHERE kept AND source = 'yolo@1'"
    ) == [(2,)]
    assert rows(out, "SELECT DISTINCT kind FROM regions") == [("object",)]
    labels = {label for (label,) in rows(out, "SELECT DISTINCT label FROM regions")}
    assert labels and labels <= class_names
    outside = rows(
        out,
        "SELECT count(*) FROM regions r JOIN images i USING (image_id) WHERE r.kept AND NOT "
        "(0 <= x0 AND x0 < x1 AND x1 <= i.width AND 0 <= y0 AND y0 < y1 AND y1 <= i.height)",
    )
    assert outside == [(0,)]
    assert rows(out, "SELECT count(*) FROM regions WHERE score < 0 OR score > 1") == [(0,)]
    assert rows(
        out, "SELECT count(*) FROM regions WHERE (NOT kept) <> (drop_reason IS NOT NULL)"
    ) == [(0,)]

    # source_name changes only the source: same weights, same rows otherwise
    def by_source(source: str) -> list[tuple]:
        return rows(
            out,
            "SELECT image_id, label, round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2), "
            "round(score, 5), kept, drop_reason FROM regions WHERE source = ? ORDER BY ALL",
            [source],
        )

    assert by_source("yolo@1") == by_source("student_i1@1")


def yolo_override(weights) -> str:
    """``--set`` replacing the whole annotator list with one YOLO."""
    return f"annotators=[{{name: yolo, weights: {weights}, min_score: 0.0, image_size: 320}}]"


def test_yolo_weights_validation(yolo_model, tmp_path):
    weights, _ = yolo_model
    # a .pt replaces the default ensemble through --set; the path is made absolute
    config = load_config(None, [yolo_override(weights)])
    assert [a.name for a in config.annotators] == ["yolo"]
    assert config.annotators[0].build().weights == str(weights.resolve())

    # a model YAML that ultralytics ships is accepted by name and builds a working model
    config = load_config(None, [yolo_override("yolov8n.yaml")])
    detector = config.annotators[0].build()
    assert detector.weights == "yolov8n.yaml" and detector.source == "yolo@1"
    detector.setup()
    image = imagekit.photo_image(320)
    (regions,) = detector.annotate([np.asarray(image.convert("RGB"))])
    assert regions  # min_score 0: random weights still give boxes (an empty list proves nothing)
    assert all(r.kind == "object" and r.source == "yolo@1" for r in regions)

    named = load_config(None, [yolo_override(weights), "annotators.0.source_name=student_i1"])
    assert named.annotators[0].build().source == "student_i1@1"

    missing = tmp_path / "no_such_weights.pt"
    with pytest.raises(ConfigError, match=r"annotators\.0\.weights") as caught:
        load_config(None, [yolo_override(missing)])
    assert "not found" in str(caught.value)
    with pytest.raises(ConfigError, match=r"annotators\.0\.weights"):
        load_config(None, [yolo_override("no_such_model.yaml")])


# --------------------------------------------------------------------------- input forms

FORM_IMAGES = ("bus.jpg", "sign.png", "chelsea.jpg")


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A WebDataset-style tar: ``key.ext`` image members, each with a ``key.json`` sidecar."""
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            add_member(archive, name, data)
            sidecar = json.dumps({"key": Path(name).stem, "file": name}).encode()
            add_member(archive, f"{Path(name).stem}.json", sidecar)
    return path


@pytest.fixture(scope="module")
def form_inputs(tmp_path_factory) -> dict[str, tuple[Path, dict[str, str]]]:
    """The same three photos as each input form: {form: (input path, {file name: uri})}."""
    root = tmp_path_factory.mktemp("forms").resolve()
    data = {name: (DEMO_IMAGES / name).read_bytes() for name in FORM_IMAGES}
    forms = {}

    folder = root / "folder"
    folder.mkdir()
    for name, payload in data.items():
        (folder / name).write_bytes(payload)
    forms["folder"] = (folder, {name: str(folder / name) for name in data})

    (root / "wds").mkdir()
    tar = write_tar(root / "wds" / "shard-000000.tar", data)
    forms["tar"] = (tar, {name: f"{tar}::{name}" for name in data})

    (root / "bytes").mkdir()
    parquet = root / "bytes" / "images.parquet"
    pq.write_table(
        pa.table(
            {
                "key": pa.array([Path(name).stem for name in data], pa.string()),
                "image": pa.array(list(data.values()), pa.binary()),
            }
        ),
        parquet,
    )
    forms["parquet_bytes"] = (parquet, {name: f"{parquet}::row={i}" for i, name in enumerate(data)})

    paths_dir = root / "paths"
    (paths_dir / "pics").mkdir(parents=True)
    for name, payload in data.items():
        (paths_dir / "pics" / name).write_bytes(payload)
    index = paths_dir / "index.parquet"
    pq.write_table(pa.table({"path": pa.array([f"pics/{n}" for n in data], pa.string())}), index)
    forms["parquet_paths"] = (index, {name: str(paths_dir / "pics" / name) for name in data})
    return forms


@pytest.fixture(scope="module")
def form_corpora(form_inputs, tmp_path_factory) -> dict[str, Path]:
    """Each form annotated by the default ensemble (SSD + RapidOCR) into its own corpus."""
    config = load_config(None, LOCAL)
    root = tmp_path_factory.mktemp("form_corpora")
    corpora = {}
    for form, (input_path, _) in form_inputs.items():
        out = root / form
        summary = annotate_corpus(config, str(input_path), str(out), show_progress=False)
        assert summary.n_inputs == len(FORM_IMAGES), form
        assert committed(out), form
        corpora[form] = out
    return corpora


def image_facts(corpus: Path) -> list[tuple]:
    return rows(corpus, "SELECT image_id, width, height, format, bytes FROM images ORDER BY ALL")


@pytest.mark.parametrize("form", ["folder", "tar", "parquet_bytes", "parquet_paths"])
def test_input_form_uris_and_ids(form, form_inputs, form_corpora):
    _, uris = form_inputs[form]
    expected = {content_id((DEMO_IMAGES / name).read_bytes()): uri for name, uri in uris.items()}
    got = dict(rows(form_corpora[form], "SELECT image_id, uri FROM images"))
    assert got == expected
    assert rows(form_corpora[form], "SELECT count(*) FROM errors") == [(0,)]


@pytest.mark.parametrize("form", ["tar", "parquet_bytes", "parquet_paths"])
def test_input_forms_give_the_same_rows(form, form_corpora):
    reference, other = form_corpora["folder"], form_corpora[form]
    assert image_facts(other) == image_facts(reference)
    regions = table_rows(other, "regions")
    assert regions == table_rows(reference, "regions")
    kinds = {row[3] for row in regions}
    assert {"object", "ocr"} <= kinds, "the ensemble found nothing: nothing was compared"

    kept = (
        "SELECT image_id, kind, label, round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2), "
        "round(score, 3), source FROM regions WHERE kept ORDER BY ALL"
    )
    assert rows(other, kept) == rows(reference, kept)


def test_tar_with_a_corrupt_member(form_corpora, tmp_path):
    good = (DEMO_IMAGES / "chelsea.jpg").read_bytes()
    tar = write_tar(
        tmp_path / "mixed.tar", {"bad.jpg": imagekit.random_bytes(), "chelsea.jpg": good}
    ).resolve()
    out = tmp_path / "corpus"
    summary = annotate_corpus(load_config(None, LOCAL), str(tar), str(out), show_progress=False)
    assert summary.n_inputs == 2
    assert committed(out)
    errors = rows(out, "SELECT uri, stage, error_type FROM errors")
    assert errors == [(f"{tar}::bad.jpg", "decode", "not_an_image")]
    assert rows(out, "SELECT uri FROM images") == [(f"{tar}::chelsea.jpg",)]

    # the good member's rows are those it gets from a folder
    chelsea = content_id(good)
    query = "SELECT * EXCLUDE (iteration) FROM regions WHERE image_id = ? ORDER BY region_id"
    assert strip(rows(out, query, [chelsea])) == strip(
        rows(form_corpora["folder"], query, [chelsea])
    )


def strip(table: list[tuple]) -> list[tuple]:
    return [tuple(round(v, 3) if isinstance(v, float) else v for v in row) for row in table]
