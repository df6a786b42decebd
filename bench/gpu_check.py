"""GPU check: the full ensemble's tiny stand-ins on CUDA in half precision, through
``fld run`` on Ray, and batched against per-image throughput for the grounder and SAM.

Run it on a machine with a GPU (from the repository root, after ``make install``)::

    .venv/bin/python bench/gpu_check.py            # writes bench/results/gpu_check.json

Two parts:

1. ``placement``: ``configs/fld5b-gpu.yaml`` with its hub ids mapped to tiny local models
   (``tests/fixtures/tiny_preset.py``; nothing is downloaded), ``device: auto``, the torch
   steps in ``float16``, through ``fld run`` on a local Ray that sees the GPU. Each model
   pool's replica reports, from inside its actor, the GPU ids Ray gave it and the device
   and dtype of its model's parameters (``run.json``: ``executor.model_pools``). Passes if
   every torch step's parameters are ``cuda:0 float16`` and YOLO's are on ``cuda:0``
   (ultralytics converts YOLO to half precision at its first prediction, after the
   placement is read).
2. ``throughput``: in this process, on the device, the grounder (tiny Grounding DINO) and
   SAM (tiny transformers SAM) over the same images with ``batch_size`` 8 against 1;
   arms alternate which runs first, ``--repeats`` times; the headline is the median
   ratio of images/s (batched / per image).

``--device cpu`` runs the same on the CPU in float32: a smoke run for machines without a
GPU (``tests/integration/test_gpu_check.py``), written only where ``--out`` says, never to
``bench/results``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from results_store import new_run_id, save_result  # noqa: E402

TORCH_STEPS = ("florence2_regions@1", "hf_captioner@1", "hf_grounder@1", "sam_segmenter@1")


def photos(count: int) -> list:
    """``count`` decoded demo photos (cycled), as HxWx3 uint8 arrays."""
    from engine.imaging import decode_image

    files = sorted((REPO / "demo" / "images").glob("*.jpg"))
    return [decode_image(files[i % len(files)].read_bytes()).pixels for i in range(count)]


def check_placement(folder: Path, device: str) -> dict:
    from tests.fixtures.tiny_preset import tiny_preset

    dtype = "float16" if device == "cuda" else "float32"
    config = tiny_preset(folder / "models", device="auto", dtype=dtype, cpus=0.5)
    images = folder / "images"
    images.mkdir()
    for index, pixels in enumerate(photos(4)):
        from PIL import Image

        Image.fromarray(pixels).save(images / f"{index}.png")
    out = folder / "corpus"
    began = time.perf_counter()
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "fld"), "run", str(images), "--out", str(out),
         "--config", str(config), "--quiet"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        return {"passed": False, "error": result.stderr[-3000:]}
    run_info = json.loads((out / "iteration=0" / "run.json").read_text())
    pools = run_info["executor"]["model_pools"]
    want = f"{'cuda:0' if device == 'cuda' else 'cpu'} {dtype}"
    problems = []
    for pool in pools:
        expected = [want] if pool["annotator"] in TORCH_STEPS else None
        if expected and pool["parameters"] != expected:
            problems.append(f"{pool['annotator']}: {pool['parameters']}, expected {expected}")
        if pool["annotator"] == "yolo@1" and not all(
            p.startswith(want.split()[0]) for p in pool["parameters"]
        ):
            problems.append(f"yolo@1: {pool['parameters']}")
        if device == "cuda" and len(pool["gpu_ids"]) != 1:
            problems.append(f"{pool['annotator']}: GPU ids {pool['gpu_ids']}")
    return {
        "passed": not problems and len(pools) == 5,
        "problems": problems,
        "model_pools": pools,
        "fld_run_seconds": round(seconds, 2),
    }


def throughput(step, images: list, repeats: int) -> dict:
    """Images/s of ``step`` at batch size 8 and 1, arms alternating, ``repeats`` times."""
    import torch

    def timed(batch_size: int) -> float:
        step.batch_size = batch_size
        samples = step.prepare(images)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        began = time.perf_counter()
        step.run(samples)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return len(images) / (time.perf_counter() - began)

    timed(8)  # warm-up: kernels, allocator
    runs = []
    for repeat in range(repeats):
        order = (8, 1) if repeat % 2 == 0 else (1, 8)
        rates = {size: timed(size) for size in order}
        runs.append({"batched_images_per_s": rates[8], "per_image_images_per_s": rates[1]})
    ratios = [run["batched_images_per_s"] / run["per_image_images_per_s"] for run in runs]
    return {
        "runs": runs,
        "ratio_batched_over_per_image": round(statistics.median(ratios), 3),
        "spread": [round(min(ratios), 3), round(max(ratios), 3)],
    }


class GrounderArm:
    """The grounder on samples whose phrases are pending (three wordings per image)."""

    def __init__(self, model: str, device: str, dtype: str) -> None:
        from annotators import annotator_class

        self.annotator = annotator_class("hf_grounder")(
            model=model, device=device, dtype=dtype, box_threshold=0.0
        )
        self.annotator.setup()

    @property
    def batch_size(self) -> int:
        return self.annotator.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        object.__setattr__(self.annotator, "batch_size", value)

    def prepare(self, images: list) -> list:
        from engine.records import Phrase, Sample, Text

        samples = []
        for index, pixels in enumerate(images):
            sample = Sample(str(index), str(index), pixels, "png", 0)
            text = Text("brief", "a bus and two people and a tie", "bench@1")
            sample.texts.append(text)
            for group, words in enumerate(("a bus", "two people", "a tie")):
                start = text.text.index(words)
                sample.phrases.append(
                    Phrase(text, group, words, start, start + len(words), "bench@1")
                )
            samples.append(sample)
        return samples

    def run(self, samples: list) -> None:
        self.annotator.annotate_samples(samples)


class SamArm(GrounderArm):
    """SAM on samples with three object regions each."""

    def __init__(self, model: str, device: str, dtype: str) -> None:
        from annotators import annotator_class

        self.annotator = annotator_class("sam_segmenter")(model=model, device=device, dtype=dtype)
        self.annotator.setup()

    def prepare(self, images: list) -> list:
        from engine.records import Region, Sample

        samples = []
        for index, pixels in enumerate(images):
            sample = Sample(str(index), str(index), pixels, "png", 0)
            h, w = pixels.shape[:2]
            for x0, y0, x1, y1 in (
                (0.1, 0.1, 0.5, 0.9),
                (0.5, 0.2, 0.9, 0.6),
                (0.2, 0.6, 0.8, 0.95),
            ):
                sample.regions.append(
                    Region("object", x0 * w, y0 * h, x1 * w, y1 * h, "thing", 0.9, "bench@1")
                )
            samples.append(sample)
        return samples


def check_throughput(folder: Path, device: str, images: int, repeats: int) -> dict:
    from tests.fixtures.tiny_models import build_tiny_grounding_dino, build_tiny_hf_sam

    dtype = "float16" if device == "cuda" else "float32"
    target = "cuda:0" if device == "cuda" else "cpu"
    pixels = photos(images)
    grounder = GrounderArm(str(build_tiny_grounding_dino(folder / "gdino")), target, dtype)
    sam = SamArm(str(build_tiny_hf_sam(folder / "sam")), target, dtype)
    return {
        "images": images,
        "grounder": throughput(grounder, pixels, repeats),
        "sam": throughput(sam, pixels, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--only", choices=["placement", "throughput"], default=None)
    parser.add_argument("--images", type=int, default=32, help="images per throughput arm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run with --device cpu for a smoke run")
    result: dict = {"device": args.device}
    if args.device == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="fld-gpu-check-") as temp:
        folder = Path(temp)
        if args.only in (None, "placement"):
            (folder / "placement").mkdir()
            result["placement"] = check_placement(folder / "placement", args.device)
            print(f"placement: {'passed' if result['placement']['passed'] else 'FAILED'}")
        if args.only in (None, "throughput"):
            (folder / "throughput").mkdir()
            result["throughput"] = check_throughput(
                folder / "throughput", args.device, args.images, args.repeats
            )
            for name in ("grounder", "sam"):
                figures = result["throughput"][name]
                print(
                    f"{name}: batched / per-image images/s = "
                    f"{figures['ratio_batched_over_per_image']} (spread {figures['spread']})"
                )
    if args.device == "cuda":
        print(f"wrote {save_result('gpu_check', result, new_run_id())}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    placement = result.get("placement", {"passed": True})
    return 0 if placement["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
